//! Byte-exact comparison with Go's tar-split, as written by Go's `containers-storage`
//! (`import-layer` into a scratch vfs store).
mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::{Fmt, H, TarBuilder, ci, prng_bytes};
use sha2::{Digest as _, Sha256};
use storage_tarsplit::{DirFileGetter, Disassembler, Entries, EntryKind, reassemble};

const GO_BIN: &str = "/usr/bin/containers-storage";

/// Whether the Go peer is usable; fails under CI=true when it is not.
fn go_available() -> bool {
    let ok = Path::new(GO_BIN).exists() && storage_testsupport::is_root();
    if !ok {
        let why = format!("{GO_BIN} missing or not running as root");
        if ci() {
            panic!("CI=true: Go comparison peer unavailable: {why}");
        }
        eprintln!("SKIPPING Go tar-split comparison: {why}");
    }
    ok
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Imports `tar` with Go; returns (layer id, gunzipped tar-split JSON).
fn go_import(store: &Path, tar_path: &Path) -> (String, Vec<u8>) {
    let out_stdout = storage_testsupport::stdout_of(
        Command::new(GO_BIN)
            .arg("--graph")
            .arg(store.join("G"))
            .arg("--run")
            .arg(store.join("R"))
            .args(["--storage-driver", "vfs", "import-layer", "-f"])
            .arg(tar_path),
    );
    let id = String::from_utf8_lossy(&out_stdout).trim().to_owned();
    let gz = std::fs::read(
        store
            .join("G/vfs-layers")
            .join(format!("{id}.tar-split.gz")),
    )
    .unwrap();
    let mut json = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut json)
        .unwrap();
    (id, json)
}

fn ours(tar: &[u8]) -> Vec<u8> {
    let mut d = Disassembler::new(tar, Vec::new());
    std::io::copy(&mut d, &mut std::io::sink()).unwrap();
    d.finish().unwrap()
}

/// Lines up to the end-of-archive segment must be identical; the segments after it
/// (trailing data, whose chunking depends on Go's read sizes, plus tar-split 0.11's
/// trailing empty segment) must carry the same bytes.
fn compare(label: &str, go: &[u8], rs: &[u8]) {
    let go_lines: Vec<&[u8]> = go.split_inclusive(|&b| b == b'\n').collect();
    let rs_lines: Vec<&[u8]> = rs.split_inclusive(|&b| b == b'\n').collect();
    let go_entries: Vec<_> = Entries::from_json(go).collect::<Result<_, _>>().unwrap();
    let rs_entries: Vec<_> = Entries::from_json(rs).collect::<Result<_, _>>().unwrap();
    let last_file =
        |es: &[storage_tarsplit::Entry]| es.iter().rposition(|e| e.kind == EntryKind::File);
    // The end segment is the first segment after the last file entry.
    let go_head = last_file(&go_entries)
        .map_or(0, |i| i + 2)
        .min(go_lines.len());
    let rs_head = last_file(&rs_entries)
        .map_or(0, |i| i + 2)
        .min(rs_lines.len());
    assert_eq!(go_head, rs_head, "{label}: entry count differs");
    for (i, (g, r)) in go_lines[..go_head]
        .iter()
        .zip(&rs_lines[..rs_head])
        .enumerate()
    {
        assert_eq!(
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(r),
            "{label}: line {i} differs"
        );
    }
    let tail = |es: &[storage_tarsplit::Entry], from: usize| -> Vec<u8> {
        es[from..]
            .iter()
            .flat_map(|e| e.payload.clone().unwrap_or_default())
            .collect()
    };
    assert_eq!(
        sha(&tail(&go_entries, go_head)),
        sha(&tail(&rs_entries, rs_head)),
        "{label}: trailing bytes differ"
    );
    // Go 1.43 (tar-split 0.11) ends with exactly one empty segment; we do not.
    let go_last = go_entries.last().unwrap();
    assert_eq!(
        (go_last.kind, go_last.payload.as_deref()),
        (EntryKind::Segment, Some(&b""[..])),
        "{label}"
    );
    assert!(
        rs_entries
            .last()
            .is_none_or(|e| e.payload.as_deref() != Some(&b""[..])),
        "{label}"
    );
}

fn check(label: &str, tar: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let tar_path = dir.path().join("layer.tar");
    std::fs::write(&tar_path, tar).unwrap();
    let (id, go_json) = go_import(dir.path(), &tar_path);
    let rs_json = ours(tar);
    compare(label, &go_json, &rs_json);
    // The comparison is able to fail: one changed byte in a line is caught.
    let mutated =
        String::from_utf8_lossy(&rs_json).replacen("\"position\":1}", "\"position\":1 }", 1);
    let caught = std::panic::catch_unwind(|| compare(label, &go_json, mutated.as_bytes()));
    assert!(caught.is_err(), "{label}: a mutated line went unnoticed");
    let layer = dir.path().join("G/vfs/dir").join(&id);
    // Go's file reassembles against Go's layer directory…
    let go_gz = std::fs::read(
        dir.path()
            .join("G/vfs-layers")
            .join(format!("{id}.tar-split.gz")),
    )
    .unwrap();
    let mut out = Vec::new();
    reassemble(&go_gz[..], &mut DirFileGetter::new(&layer), &mut out)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(sha(&out), sha(tar), "{label}: reassembly of Go's tar-split");
    // …and so does ours.
    let mut ours_gz = storage_tarsplit::gzip_writer(Vec::new());
    std::io::Write::write_all(&mut ours_gz, &rs_json).unwrap();
    let ours_gz = ours_gz.finish().unwrap();
    let mut out = Vec::new();
    reassemble(&ours_gz[..], &mut DirFileGetter::new(&layer), &mut out).unwrap();
    assert_eq!(sha(&out), sha(tar), "{label}: reassembly of our tar-split");
}

fn system_tar(format: &str) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().ok()?;
    let src = dir.path().join("src");
    // USTAR cannot store names longer than prefix (155) + name (100).
    let (dx, fy) = if format == "ustar" {
        (60, 90)
    } else {
        (120, 130)
    };
    std::fs::create_dir_all(src.join("etc/deep").join("x".repeat(dx))).ok()?;
    std::fs::write(src.join("etc/hello.txt"), "hello\n").ok()?;
    std::fs::write(
        src.join("etc/deep")
            .join("x".repeat(dx))
            .join("y".repeat(fy)),
        prng_bytes(3, 70_000),
    )
    .ok()?;
    std::fs::write(src.join("empty"), "").ok()?;
    std::fs::write(src.join("big"), prng_bytes(4, 1 << 20)).ok()?;
    std::os::unix::fs::symlink("etc/hello.txt", src.join("sl")).ok()?;
    std::fs::hard_link(src.join("etc/hello.txt"), src.join("hl")).ok()?;
    std::fs::write(src.join("<html>&amp;"), "x").ok()?;
    let out = dir.path().join("t.tar");
    let st = Command::new("tar")
        .arg(format!("--format={format}"))
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&out)
        .arg(".")
        .status()
        .ok()?;
    if !st.success() {
        return None;
    }
    std::fs::read(out).ok()
}

#[test]
fn byte_exact_with_go_tar_split() {
    if !go_available() {
        return;
    }
    // Hand-built archives.
    let long: Vec<u8> = (0..290)
        .map(|i| if i % 70 == 69 { b'/' } else { b'L' })
        .collect();
    let mut b = TarBuilder::new();
    b.pax(b'g', &[(b"comment", b"global header")], None, b"");
    b.dir(b"d/");
    for (i, size) in [0usize, 1, 511, 512, 513, (1 << 20) + 1]
        .into_iter()
        .enumerate()
    {
        b.file(
            format!("d/f{i}").as_bytes(),
            &prng_bytes(i as u64 + 10, size),
        );
    }
    let mut dirs = Vec::new();
    for (i, c) in long.iter().enumerate() {
        if *c == b'/' {
            dirs.push(long[..i + 1].to_vec());
        }
    }
    for d in &dirs {
        b.gnu_long(
            b'L',
            d,
            &H::new(&d[..d.len().min(100)], b'5', 0).fmt(Fmt::Gnu),
            b"",
        );
    }
    b.gnu_long(
        b'L',
        &long,
        &H::new(b"short", b'0', 4).fmt(Fmt::Gnu),
        b"long",
    );
    b.gnu_long(b'K', &long, &H::new(b"hl", b'1', 0).fmt(Fmt::Gnu), b"");
    b.entry(&H::new(b"sym", b'2', 0).link(b"/etc/passwd"), b"");
    b.entry(&H::new(b"fifo", b'6', 0), b"");
    b.entry(&H::new(b"\xff\xfe-non-utf8", b'0', 2), b"nu");
    b.entry(&H::new("a<b>&c\u{2028}".as_bytes(), b'0', 1), b"h");
    b.pax(
        b'x',
        &[
            (b"path", b"pax-named-\xc3\xa9-file"),
            (b"SCHILY.xattr.user.k", b"v"),
            (b"mtime", b"1700000000.25"),
        ],
        Some(&H::new(b"ignored", b'0', 3)),
        b"pax",
    );
    b.entry(&H::new(b"noslash", 0, 0), b"");
    b.end().record_pad(10240);
    let built = b.bytes();
    check("hand-built", &built);

    let mut junk = built.clone();
    junk.extend_from_slice(&prng_bytes(99, 2 * 1024 * 1024 + 17));
    check("trailing junk", &junk);

    let mut b = TarBuilder::new();
    b.file(b"only", b"one");
    check("no end marker", &b.bytes());
    b.raw(&[0; 512]);
    check("one zero block", &b.bytes());

    // Archives from GNU tar, if installed.
    for format in ["gnu", "pax", "ustar", "oldgnu"] {
        match system_tar(format) {
            Some(t) => check(&format!("tar --format={format}"), &t),
            None => eprintln!("system tar unavailable for --format={format}; skipped that case"),
        }
    }
}

#[test]
fn duplicates_fail_like_go() {
    if !go_available() {
        return;
    }
    for (a, b) in [(&b"f"[..], &b"./f"[..]), (b"d/", b"d/")] {
        let mut t = TarBuilder::new();
        t.file(a, b"").file(b, b"").end();
        let tar = t.bytes();
        let dir = tempfile::tempdir().unwrap();
        let tar_path = dir.path().join("dup.tar");
        std::fs::write(&tar_path, &tar).unwrap();
        let out = Command::new(GO_BIN)
            .arg("--graph")
            .arg(dir.path().join("G"))
            .arg("--run")
            .arg(dir.path().join("R"))
            .args(["--storage-driver", "vfs", "import-layer", "-f"])
            .arg(&tar_path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let go_err = String::from_utf8_lossy(&out.stderr);
        let mut d = Disassembler::new(&tar[..], Vec::new());
        let ours = std::io::copy(&mut d, &mut std::io::sink())
            .unwrap_err()
            .to_string();
        assert!(
            go_err.contains(&ours),
            "Go said {go_err:?}, we said {ours:?}"
        );
    }
}
