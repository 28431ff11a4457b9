//! The tar-breakout corpus through every whiteout format (the naive format is
//! also compared with Go in `compare_go.rs`), plus mutated tars: whatever the
//! input, nothing outside the root may change (checked by `rust_unpack`), and
//! nothing panics.

mod common;

use common::{Entry, rust_unpack, tar};
use storage_archive::{UnpackOptions, WhiteoutFormat};

fn corpus() -> Vec<Vec<Entry>> {
    let long = format!("{}/{}", "a".repeat(200), "b".repeat(200));
    vec![
        vec![
            Entry::file("../escape", b"1"),
            Entry::file("a/b/../../../x", b"2"),
            Entry::file("/abs/file", b"3"),
        ],
        vec![
            Entry::symlink("lnk", "/etc"),
            Entry::file("lnk/passwd", b"pwned"),
        ],
        vec![
            Entry::symlink("lnk", "/etc"),
            Entry::dir("etc/"),
            Entry::file("lnk/passwd", b"inside"),
        ],
        vec![
            Entry::symlink("lnk", "../../.."),
            Entry::file("lnk/x", b"x"),
        ],
        vec![
            Entry::symlink("lnk", "../../../etc"),
            Entry::file("lnk/passwd", b"x"),
        ],
        vec![
            Entry::symlink("lnk", "../../../etc/passwd"),
            Entry::file("lnk", b"replaced"),
        ],
        vec![
            Entry::symlink("lnk", "/etc/passwd"),
            Entry::hardlink("h", "lnk"),
        ],
        vec![Entry::hardlink("h", "../../etc/passwd")],
        vec![Entry::hardlink("h", "/etc/passwd")],
        vec![
            Entry::symlink("up", ".."),
            Entry::hardlink("h", "up/etc/passwd"),
        ],
        vec![
            Entry::symlink("s", "/tmp"),
            Entry::dir("/s/"),
            Entry::file("s/f", b"f"),
        ],
        vec![
            Entry::dir("d/"),
            Entry::symlink("/d", "../.."),
            Entry::file("/d/x", b"through"),
        ],
        vec![
            Entry::symlink("p", "/proc/self/root"),
            Entry::file("p/etc/passwd", b"x"),
        ],
        vec![
            Entry::symlink("p", "/proc/self/cwd"),
            Entry::file("p/x", b"x"),
        ],
        vec![Entry::chardev("null", 1, 3), Entry::file("null2", b"x")],
        vec![
            Entry::file(&long, b"long"),
            Entry::symlink("longlink", &"../".repeat(300)),
        ],
        vec![Entry::file("a", b"1"), Entry::file("./a", b"2")],
        vec![
            Entry::symlink("w", "../../.."),
            Entry::file("w/.wh.etc", b""),
            Entry::file(".wh.w", b""),
        ],
        vec![
            Entry::symlink("o", "../.."),
            Entry::file("o/.wh..wh..opq", b""),
        ],
        vec![
            Entry::file(".wh..wh.plnk/1", b"s"),
            Entry::hardlink("../../x", ".wh..wh.plnk/1"),
        ],
        vec![Entry::file("..", b"dotdot"), Entry::file("../..", b"x")],
    ]
}

fn formats() -> Vec<UnpackOptions> {
    vec![
        UnpackOptions {
            whiteout: WhiteoutFormat::Apply,
            ..Default::default()
        },
        UnpackOptions {
            whiteout: WhiteoutFormat::Overlay {
                opaque_xattr: "trusted.overlay.opaque",
            },
            ..Default::default()
        },
        UnpackOptions {
            whiteout: WhiteoutFormat::Aufs,
            ..Default::default()
        },
        UnpackOptions {
            whiteout: WhiteoutFormat::Apply,
            force_mask: Some(0o700),
            ..Default::default()
        },
    ]
}

#[test]
fn corpus_never_escapes_in_any_format() {
    for (i, entries) in corpus().iter().enumerate() {
        for opts in formats() {
            // `rust_unpack` asserts that nothing outside the root changed.
            let result = rust_unpack(&[tar(entries)], &opts);
            if let Ok(tree) = &result {
                for (path, desc) in tree {
                    assert!(
                        !desc.contains("decoy"),
                        "case {i}: {path} reads the decoy outside the root"
                    );
                }
            }
        }
    }
}

/// A tiny deterministic generator (no dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn mutated_tars_never_panic_or_escape() {
    let mut rng = Lcg(42);
    let corpus = corpus();
    for round in 0..200 {
        let entries = &corpus[round % corpus.len()];
        let mut bytes = tar(entries);
        let flips = 1 + rng.next() % 8;
        for _ in 0..flips {
            let at = (rng.next() as usize) % bytes.len();
            bytes[at] = rng.next() as u8;
        }
        if round % 3 == 0 {
            let cut = (rng.next() as usize) % bytes.len();
            bytes.truncate(cut);
        }
        let opts = &formats()[round % 4];
        let _ = rust_unpack(&[bytes], opts);
    }
}
