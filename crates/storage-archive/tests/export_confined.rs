//! The exporters (`tar_dir`, `export_changes`) read a layer's entries without following a
//! symbolic link: a change whose path crosses a link to a host directory is skipped (Go
//! would follow it and archive the host's file), and links are archived as links.

use std::path::Path;

use storage_archive::changes::{Change, ChangeKind};
use storage_archive::export::{export_changes, tar_dir};

const SECRET: &[u8] = b"HOST-ONLY-CONTENT-7c1f0e5a";

/// A host directory with a secret file, and a layer whose `lnk` points at it and whose
/// `x` points at the file itself.
fn setup(tmp: &Path) -> std::path::PathBuf {
    let host = tmp.join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("secret"), SECRET.repeat(10)).unwrap();
    let layer = tmp.join("layer");
    std::fs::create_dir_all(layer.join("d")).unwrap();
    std::fs::write(layer.join("d/own"), b"layer file").unwrap();
    std::os::unix::fs::symlink(&host, layer.join("lnk")).unwrap();
    std::os::unix::fs::symlink(host.join("secret"), layer.join("x")).unwrap();
    layer
}

/// `(name, typeflag)` of every entry.
fn entries(tar: &[u8]) -> Vec<(String, u8)> {
    let mut r = storage_tarsplit::TarReader::new(tar);
    let mut out = Vec::new();
    while let Some(h) = r.next_header().unwrap() {
        out.push((String::from_utf8_lossy(&h.name).into_owned(), h.typeflag));
    }
    out
}

fn leaks(tar: &[u8]) -> bool {
    tar.windows(SECRET.len()).any(|w| w == SECRET)
}

#[test]
fn export_changes_does_not_follow_a_symlinked_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = setup(tmp.path());
    let change = |p: &str| Change {
        path: p.into(),
        kind: ChangeKind::Add,
    };
    let changes = [change("/d/own"), change("/lnk/secret"), change("/x")];
    let mut out = Vec::new();
    export_changes(&layer, &changes, &[], &[], &mut out).unwrap();
    assert!(!leaks(&out), "the host file was archived");
    let got = entries(&out);
    assert_eq!(
        got,
        vec![("d/own".to_string(), b'0'), ("x".to_string(), b'2'),],
        "the entry behind the link is skipped, the link itself archived as a link"
    );
}

#[test]
fn tar_dir_archives_links_as_links() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = setup(tmp.path());
    let mut out = Vec::new();
    tar_dir(&layer, &[], &[], &mut out).unwrap();
    assert!(!leaks(&out), "the host file was archived");
    let got = entries(&out);
    assert_eq!(
        got,
        vec![
            ("d/".to_string(), b'5'),
            ("d/own".to_string(), b'0'),
            ("lnk".to_string(), b'2'),
            ("x".to_string(), b'2'),
        ]
    );
}
