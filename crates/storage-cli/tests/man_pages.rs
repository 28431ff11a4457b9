//! The man pages against the tables they are generated from: each command's page lists
//! exactly the flags the parser registers for it, the program's page lists every command and
//! global option, the prose names no option that does not exist, every prose file belongs to
//! a page, `containers-storage.conf(5)` documents exactly the keys the configuration parser
//! knows and every environment variable it reads, and `man` renders every page without a
//! warning.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use storage_cli::commands::COMMANDS;
use storage_cli::flags::FlagSpec;
use storage_cli::man::{
    CONF_PAGE, PROGRAM, Page, command_page, command_page_name, listed_options, page_sections,
    pages, plain_text, prose_files,
};

fn shown(specs: &[FlagSpec]) -> BTreeSet<String> {
    specs
        .iter()
        .filter(|s| s.is_listed())
        .flat_map(|s| s.shown_names())
        .collect()
}

fn section<'a>(sections: &'a [(String, String)], title: &str) -> &'a str {
    sections
        .iter()
        .find(|(t, _)| t == title)
        .map(|(_, b)| b.as_str())
        .unwrap_or_else(|| panic!("no {title} section"))
}

/// The `--long-option` words of a text.
fn long_options(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("--") {
        let start = i + pos;
        let mut end = start + 2;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'-') {
            end += 1;
        }
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        if before_ok && end > start + 2 && bytes[start + 2].is_ascii_alphabetic() {
            out.insert(text[start..end].trim_end_matches('-').to_string());
        }
        i = end.max(start + 2);
    }
    out
}

#[test]
fn each_command_page_lists_exactly_its_flags() {
    let globals = shown(&storage_cli::command_global_flags());
    for cmd in COMMANDS {
        let page = command_page(cmd);
        assert_eq!(page.name, command_page_name(cmd));
        let sections = page_sections(&page.roff);
        let listed: BTreeSet<String> = listed_options(section(&sections, "OPTIONS"))
            .into_iter()
            .collect();
        assert_eq!(listed, shown(cmd.flags), "{}: OPTIONS", cmd.names[0]);
        let synopsis = plain_text(section(&sections, "SYNOPSIS"));
        for name in cmd.names {
            assert!(synopsis.contains(name), "{}: {name}", cmd.names[0]);
        }
        let name = plain_text(section(&sections, "NAME"));
        assert!(name.contains(cmd.description), "{}: NAME", cmd.names[0]);
        // The prose names only options the command accepts.
        let mut allowed = shown(cmd.flags);
        allowed.extend(globals.iter().cloned());
        let mentioned = long_options(&plain_text(&page.roff));
        let unknown: Vec<&String> = mentioned
            .iter()
            .filter(|o| !allowed.contains(*o) && *o != "--help")
            .collect();
        assert!(unknown.is_empty(), "{}: {unknown:?}", cmd.names[0]);
    }
}

#[test]
fn the_program_page_lists_every_command_and_global_option() {
    let page = pages().into_iter().find(|p| p.name == PROGRAM).unwrap();
    let sections = page_sections(&page.roff);
    let listed: BTreeSet<String> = listed_options(section(&sections, "GLOBAL OPTIONS"))
        .into_iter()
        .collect();
    assert_eq!(listed, shown(&storage_cli::global_flags()));
    // COMMANDS: the first word after each .TP.
    let commands = section(&sections, "COMMANDS");
    let lines: Vec<&str> = commands.lines().collect();
    let listed: Vec<String> = lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .map(|w| {
            plain_text(w[1])
                .split(' ')
                .next()
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    let table: Vec<String> = COMMANDS.iter().map(|c| c.names[0].to_string()).collect();
    assert_eq!(listed, table);
    let see_also = plain_text(section(&sections, "SEE ALSO"));
    for cmd in COMMANDS {
        assert!(see_also.contains(&format!("{}(1)", command_page_name(cmd))));
    }
    assert!(see_also.contains(&format!("{CONF_PAGE}(5)")));
    // Any option the prose mentions exists somewhere.
    let mut allowed = shown(&storage_cli::global_flags());
    for cmd in COMMANDS {
        allowed.extend(shown(cmd.flags));
    }
    let unknown: Vec<String> = long_options(&plain_text(&page.roff))
        .into_iter()
        .filter(|o| !allowed.contains(o))
        .collect();
    assert!(unknown.is_empty(), "{unknown:?}");
}

#[test]
fn every_prose_file_belongs_to_a_page() {
    let names: BTreeSet<String> = pages().iter().map(Page::file_name).collect();
    assert_eq!(names.len(), COMMANDS.len() + 2);
    for file in prose_files() {
        assert!(names.contains(file), "docs/{file}.md has no page");
    }
    // Prose was found at all (the build script embeds it).
    assert!(prose_files().any(|f| f == "containers-storage.conf.5"));
}

/// The dotted keys `containers-storage.conf(5)` documents in its FORMAT section: each
/// `### [table]` is the key `table`, each definition-list term under it `table.term`.
fn documented_keys(roff: &str) -> BTreeSet<String> {
    let sections = page_sections(roff);
    let format = section(&sections, "FORMAT");
    let lines: Vec<&str> = format.lines().collect();
    let mut table = String::new();
    let mut out = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(title) = line.strip_prefix(".SS ") {
            let title = plain_text(title);
            let t = title.trim().trim_start_matches('[').trim_end_matches(']');
            table = t.to_string();
            out.insert(table.clone());
        } else if *line == ".TP" {
            let head = plain_text(lines[i + 1]);
            let key = head.split([' ', '=']).next().unwrap().trim().to_string();
            assert!(!table.is_empty(), "key {key} outside a table");
            out.insert(format!("{table}.{key}"));
        }
    }
    out
}

#[test]
fn the_conf_page_documents_exactly_the_known_keys() {
    let page = pages().into_iter().find(|p| p.name == CONF_PAGE).unwrap();
    assert_eq!(page.section, 5);
    let documented = documented_keys(&page.roff);
    let known = containers_storage::config::KNOWN_KEYS;
    for key in known.iter().filter(|k| !k.ends_with(".*")) {
        assert!(documented.contains(*key), "{key} is not documented");
    }
    for key in &documented {
        let wildcard = known.iter().any(|k| {
            k.strip_suffix('*')
                .is_some_and(|prefix| key.starts_with(prefix))
        });
        assert!(
            known.contains(&key.as_str()) || wildcard,
            "{key} is documented but the parser does not know it"
        );
    }
}

#[test]
fn the_conf_page_names_every_environment_variable_the_parser_reads() {
    let page = pages().into_iter().find(|p| p.name == CONF_PAGE).unwrap();
    let sections = page_sections(&page.roff);
    let env = plain_text(section(&sections, "ENVIRONMENT"));
    // Every ALL_CAPS string literal of the configuration crate is a variable it reads.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../storage-config/src");
    let mut vars = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for literal in text.split('"').skip(1).step_by(2) {
            if literal.len() >= 3 && literal.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                vars.insert(literal.to_string());
            }
        }
    }
    assert!(vars.contains("STORAGE_OPTS") && vars.contains("XDG_RUNTIME_DIR"));
    for var in &vars {
        assert!(env.contains(var.as_str()), "{var} is not in ENVIRONMENT");
    }
}

fn man_available() -> bool {
    if Path::new("/usr/bin/man").exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("man (man-db) is required in CI");
    }
    eprintln!("SKIPPING: man is not installed");
    false
}

#[test]
fn man_renders_every_page_without_warnings() {
    if !man_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for page in pages() {
        let path = tmp.path().join(page.file_name());
        std::fs::write(&path, &page.roff).unwrap();
        let out = Command::new("man")
            .args(["--warnings=all", "-l", "-P", "cat"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", page.file_name());
        assert!(stderr.is_empty(), "{}: {stderr}", page.file_name());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&page.name), "{}", page.file_name());
        // What the reader sees has every option, written as it is typed.
        let words: BTreeSet<&str> = text.split([' ', '\n', ',']).collect();
        if let Some(cmd) = COMMANDS.iter().find(|c| command_page_name(c) == page.name) {
            for name in shown(cmd.flags) {
                assert!(
                    words.contains(name.as_str()),
                    "{}: {name} not rendered\n{text}",
                    page.file_name()
                );
            }
        }
    }
}
