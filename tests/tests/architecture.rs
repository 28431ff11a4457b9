//! The rules of ARCHITECTURE.md, checked against the code: the dependency table and levels
//! against every crate's `Cargo.toml`, every crate on the map, `unsafe` only in `sys`
//! modules, documented APIs, and a `storage-types` that touches no files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn architecture() -> String {
    std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md")
}

/// The crates under `crates/` (directory name = package name).
fn crates() -> BTreeSet<String> {
    std::fs::read_dir(root().join("crates"))
        .expect("read crates/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn is_ours(name: &str) -> bool {
    name.starts_with("storage-") || name == "containers-storage"
}

/// The `deps` block of ARCHITECTURE.md: crate → allowed dependencies.
fn allowed() -> BTreeMap<String, BTreeSet<String>> {
    let doc = architecture();
    let start = doc.find("```deps\n").expect("a ```deps block") + "```deps\n".len();
    let end = start + doc[start..].find("```").expect("end of the deps block");
    doc[start..end]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, deps) = l
                .split_once("->")
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let deps = deps
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect();
            (name.trim().to_owned(), deps)
        })
        .collect()
}

/// The levels of the diagram: crate → level (the number starting its group of lines).
fn levels() -> BTreeMap<String, u32> {
    let doc = architecture();
    let start = doc.find("```\n").expect("the diagram") + 4;
    let end = start + doc[start..].find("```").expect("end of the diagram");
    let mut level = None;
    let mut out = BTreeMap::new();
    for line in doc[start..end].lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        let name = match first.parse::<u32>() {
            Ok(n) => {
                level = Some(n);
                words.next()
            }
            Err(_) => Some(first),
        };
        if let (Some(name), Some(level)) = (name, level)
            && is_ours(name)
            && line.starts_with(|c: char| c.is_ascii_digit() || c == ' ')
            && !line
                .trim_start()
                .starts_with(|c: char| !c.is_ascii_alphanumeric())
        {
            out.entry(name.to_owned()).or_insert(level);
        }
    }
    out
}

/// Our crates named in a `[dependencies]`-like table of a manifest.
fn ours_in(manifest: &toml::Table, table: &str) -> BTreeSet<String> {
    manifest
        .get(table)
        .and_then(|t| t.as_table())
        .map(|t| t.keys().filter(|k| is_ours(k)).cloned().collect())
        .unwrap_or_default()
}

fn manifest(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).expect("read Cargo.toml");
    text.parse().expect("parse Cargo.toml")
}

#[test]
fn dependencies_follow_the_table_and_point_down() {
    let allowed = allowed();
    let levels = levels();
    let mut problems = Vec::new();
    for (krate, deps) in &allowed {
        let level = levels.get(krate).copied();
        if level.is_none() && krate != "storage-testsupport" && krate != "xtask" {
            problems.push(format!("{krate} has no level in the diagram"));
        }
        for d in deps {
            if d == "storage-testsupport" {
                problems.push(format!("{krate} may not depend on storage-testsupport"));
            }
            match (level, levels.get(d)) {
                (Some(l), Some(dl)) if *dl >= l => problems.push(format!(
                    "{krate} (level {l}) -> {d} (level {dl}) does not point down"
                )),
                _ => {}
            }
        }
    }
    let manifests: Vec<(String, PathBuf)> = crates()
        .into_iter()
        .map(|c| {
            let p = root().join("crates").join(&c).join("Cargo.toml");
            (c, p)
        })
        .chain([
            ("storage-tests".to_owned(), root().join("tests/Cargo.toml")),
            ("xtask".to_owned(), root().join("xtask/Cargo.toml")),
        ])
        .collect();
    for (krate, path) in &manifests {
        let m = manifest(path);
        let deps = ours_in(&m, "dependencies");
        let dev = ours_in(&m, "dev-dependencies");
        let build = ours_in(&m, "build-dependencies");
        let may: BTreeSet<String> = match allowed.get(krate) {
            Some(a) => a.clone(),
            // The test package sits above every crate (tests across crates may reach any
            // of them, as a library user would); xtask uses none of our crates.
            None if krate == "storage-tests" => crates().into_iter().collect(),
            None => BTreeSet::new(),
        };
        for d in deps.union(&build) {
            if !may.contains(d) {
                problems.push(format!(
                    "{krate} depends on {d}, which ARCHITECTURE.md does not allow"
                ));
            }
        }
        for d in &dev {
            if !may.contains(d) && d != "storage-testsupport" {
                problems.push(format!(
                    "{krate}'s tests depend on {d}, which ARCHITECTURE.md does not allow"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_crate_is_on_the_map() {
    let doc = architecture();
    let allowed = allowed();
    let crates = crates();
    for c in &crates {
        assert!(
            doc.contains(&format!("**`crates/{c}`**")),
            "ARCHITECTURE.md has no paragraph for crates/{c}"
        );
        assert!(
            allowed.contains_key(c),
            "the dependency table has no line for {c}"
        );
    }
    for (c, deps) in &allowed {
        assert!(
            crates.contains(c) || c == "xtask",
            "the dependency table names {c}, which is not a crate"
        );
        for d in deps {
            assert!(
                crates.contains(d),
                "{c}'s line names {d}, which is not a crate"
            );
        }
    }
}

/// The Rust files under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source directories of every crate (`src/` of each crate, xtask and the test package).
fn source_dirs() -> Vec<PathBuf> {
    crates()
        .into_iter()
        .map(|c| root().join("crates").join(c).join("src"))
        .chain([root().join("xtask/src"), root().join("tests/src")])
        .collect()
}

/// The code of a line: what comes before a `//` comment (strings holding `//` are rare
/// enough in the lines this looks at).
fn code(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

fn uses_unsafe(line: &str) -> bool {
    let c = code(line);
    c.contains("unsafe {") || c.contains("unsafe fn") || c.contains("unsafe impl")
}

#[test]
fn unsafe_only_in_sys_modules() {
    let mut problems = Vec::new();
    for dir in source_dirs() {
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for f in &files {
            let in_sys = f.file_name().is_some_and(|n| n == "sys.rs")
                || f.components().any(|c| c.as_os_str() == "sys");
            let text = std::fs::read_to_string(f).expect("read source");
            if !in_sys {
                for (i, line) in text.lines().enumerate() {
                    if uses_unsafe(line) {
                        problems.push(format!(
                            "{}:{}: unsafe outside a sys module",
                            f.display(),
                            i + 1
                        ));
                    }
                }
            }
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if code(line).contains("#[allow(unsafe_code)]")
                    && lines.get(i + 1).map(|l| l.trim()) != Some("mod sys;")
                {
                    problems.push(format!(
                        "{}:{}: allow(unsafe_code) not on `mod sys;`",
                        f.display(),
                        i + 1
                    ));
                }
            }
        }
        for root_file in ["lib.rs", "main.rs"] {
            let p = dir.join(root_file);
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            if !(text.contains("#![forbid(unsafe_code)]") || text.contains("#![deny(unsafe_code)]"))
            {
                problems.push(format!(
                    "{}: neither forbid(unsafe_code) nor deny(unsafe_code)",
                    p.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn library_apis_are_documented() {
    for c in crates() {
        let lib = root().join("crates").join(&c).join("src/lib.rs");
        let Ok(text) = std::fs::read_to_string(&lib) else {
            continue;
        };
        assert!(
            text.contains("#![deny(missing_docs)]"),
            "{c}: no #![deny(missing_docs)]"
        );
    }
}

#[test]
fn storage_types_touches_no_files() {
    let mut files = Vec::new();
    rust_files(&root().join("crates/storage-types/src"), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read source");
        // The code before the unit tests.
        let body = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in body.lines().enumerate() {
            let c = code(line);
            assert!(
                !(c.contains("std::fs") || c.contains("File::open") || c.contains("File::create")),
                "{}:{}: storage-types must not touch the file system",
                f.display(),
                i + 1
            );
        }
    }
}

/// The `*.md` names in `text` (a name made of word characters, `-` and `.`).
fn md_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices(".md") {
        let after = text[i + 3..].chars().next();
        if after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        // Names may hold dots (`containers-storage-diff.1.md`); a leading dot is not part of
        // the name (`<command>.1.md` names a pattern, not a file).
        let start = text[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .map_or(0, |k| k + 1);
        let name = &text[start..i + 3];
        if name.len() > 3 && !name.starts_with('.') {
            out.insert(name.to_owned());
        }
    }
    out
}

#[test]
fn docs_refer_to_nothing_outside_the_repository() {
    // Markdown files of the repository (any directory), and what the code writes.
    let mut present: BTreeSet<String> = ["latest.md".to_owned(), "summary.md".to_owned()].into();
    let mut texts = Vec::new();
    let mut stack = vec![root()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    stack.push(p);
                }
            } else if name.ends_with(".md") {
                present.insert(name);
                texts.push(p);
            } else if name.ends_with(".rs") || name.ends_with(".toml") || name.ends_with(".sh") {
                texts.push(p);
            }
        }
    }
    let mut problems = Vec::new();
    for f in &texts {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        if f.ends_with("tests/architecture.rs") {
            continue;
        }
        for name in md_names(&text) {
            if !present.contains(&name) {
                problems.push(format!(
                    "{}: names {name}, which is not in the repository",
                    f.display()
                ));
            }
        }
        if let Some(line) = text.lines().position(|l| l.contains('\u{a7}')) {
            problems.push(format!(
                "{}:{}: a section number of an outside document",
                f.display(),
                line + 1
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The checks above must be able to fail: they see what they are meant to see.
#[test]
fn the_checks_see_their_targets() {
    assert!(uses_unsafe("    let r = unsafe { libc::sync() };"));
    assert!(!uses_unsafe("    // SAFETY: the unsafe { } block below"));
    assert!(!uses_unsafe("#![deny(unsafe_code)]"));
    let levels = levels();
    assert_eq!(levels.get("storage-cli"), Some(&8));
    assert_eq!(levels.get("storage-types"), Some(&0));
    assert_eq!(levels.get("storage-config"), Some(&5));
    assert_eq!(levels.get("storage-lock"), Some(&1));
    assert!(allowed()["storage-layers"].contains("storage-drivers"));
    assert_eq!(
        md_names("see store.md and ARCHITECTURE.md, not x.mdx, nor <page>.1.md but a-b.1.md"),
        [
            "ARCHITECTURE.md".to_owned(),
            "a-b.1.md".to_owned(),
            "store.md".to_owned()
        ]
        .into()
    );
}
