//! Embeds the man pages' hand-written prose (`docs/<page>.<section>.md`) into the library, so
//! that `storage_cli::man` renders every page without reading files at run time.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let docs = Path::new(&manifest).join("docs");
    println!("cargo:rerun-if-changed=docs");
    let mut pages: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(&docs).expect("crates/storage-cli/docs is readable") {
        let path = entry.expect("a directory entry").path();
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // `<page>.1.md`, `<page>.5.md`; README.md and other files are not pages.
        let Some(page) = file.strip_suffix(".md") else {
            continue;
        };
        if page
            .rsplit_once('.')
            .is_none_or(|(_, s)| s.parse::<u8>().is_err())
        {
            continue;
        }
        pages.push((page.to_string(), path.to_string_lossy().into_owned()));
    }
    pages.sort();
    let mut code = String::from("/// The prose of the man pages: (`page.section`, Markdown).\n");
    code.push_str("pub(crate) static PROSE: &[(&str, &str)] = &[\n");
    for (page, path) in pages {
        let _ = writeln!(code, "    ({page:?}, include_str!({path:?})),");
    }
    code.push_str("];\n");
    std::fs::write(Path::new(&out_dir).join("prose.rs"), code).expect("OUT_DIR is writable");
}
