//! `unpack_sized`: the tree size counted while extracting equals a walk of the
//! extracted tree (Go's `directory.Size`), and is not claimed when it cannot be
//! known without one.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{Entry, is_root, require, tar};
use storage_archive::{UnpackOptions, WhiteoutFormat, unpack_sized};

/// Go's `directory.Size`, written independently of the code under test: the apparent
/// sizes of every non-directory under `root`, each inode once.
fn walk_size(root: &Path) -> i64 {
    fn walk(dir: &Path, seen: &mut HashSet<u64>, total: &mut i64) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("entry");
            let md = std::fs::symlink_metadata(e.path()).expect("lstat");
            if !seen.insert(md.ino()) {
                continue;
            }
            if md.is_dir() {
                walk(&e.path(), seen, total);
            } else {
                *total += md.size() as i64;
            }
        }
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    walk(root, &mut seen, &mut total);
    total
}

fn opts(whiteout: WhiteoutFormat) -> UnpackOptions {
    UnpackOptions {
        whiteout,
        ..Default::default()
    }
}

fn overlay() -> WhiteoutFormat {
    WhiteoutFormat::Overlay {
        opaque_xattr: if is_root() {
            "trusted.overlay.opaque"
        } else {
            "user.overlay.opaque"
        },
    }
}

/// Files of several sizes (one spans several copy buffers), symlinks, hard links,
/// directories, whiteouts and an opaque directory.
fn mixed(privileged: bool) -> Vec<Entry> {
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let mut v = vec![
        Entry::dir("d"),
        Entry::file("d/empty", b""),
        Entry::file("d/small", b"hello"),
        Entry::file("d/big", &big),
        Entry::symlink("d/link", "small"),
        Entry::symlink("abs", "/d/some/longer/target/name"),
        Entry::hardlink("d/hard", "d/big"),
        Entry::hardlink("hard2", "d/small"),
        Entry::dir("o"),
        Entry::file("o/.wh..wh..opq", b""),
        Entry::file("o/kept", &[7u8; 4097]),
        // Parents that the tar does not list.
        Entry::file("x/y/z", &[1u8; 10]),
        Entry::fifo("x/fifo"),
    ];
    if privileged {
        v.push(Entry::file("d/.wh.gone", b""));
        v.push(Entry::chardev("x/null", 1, 3));
    }
    v
}

#[test]
fn counted_size_equals_a_walk_of_the_tree() {
    let privileged = is_root();
    if !privileged {
        // Whiteouts (overlay: 0/0 device nodes) and device entries need root; the
        // rest is still checked.
        require(false, "root (device nodes in the tree-size test)");
    }
    let bytes = tar(&mixed(privileged));
    for whiteout in [overlay(), WhiteoutFormat::Aufs] {
        let tmp = tempfile::tempdir().expect("tmp");
        let u = unpack_sized(&mut &bytes[..], tmp.path(), &opts(whiteout)).expect("unpack");
        let walked = walk_size(tmp.path());
        assert!(walked > 3 * 1024 * 1024, "{whiteout:?}: {walked}");
        assert_eq!(u.tree_size, Some(walked), "{whiteout:?}");
        assert_eq!(
            u.header_size,
            mixed(privileged)
                .iter()
                .map(|e| e.data.len() as i64)
                .sum::<i64>(),
            "{whiteout:?}"
        );
    }
}

#[test]
fn force_mask_turns_specials_into_files_and_still_counts_them() {
    let entries = vec![
        Entry::file("a", b"abc"),
        Entry::fifo("f"),
        Entry::symlink("s", "a"),
        Entry::dir("d"),
        Entry::file("d/b", &[0u8; 100]),
    ];
    let bytes = tar(&entries);
    let tmp = tempfile::tempdir().expect("tmp");
    let o = UnpackOptions {
        force_mask: Some(0o700),
        ..opts(WhiteoutFormat::Aufs)
    };
    match unpack_sized(&mut &bytes[..], tmp.path(), &o) {
        Ok(u) => assert_eq!(u.tree_size, Some(walk_size(tmp.path()))),
        // The override xattr lives in the user namespace; some file systems lack it.
        Err(e) => assert!(e.to_string().contains("lsetxattr"), "{e}"),
    }
}

#[test]
fn an_entry_replacing_another_leaves_the_size_to_a_walk() {
    // `l/f` reaches `d/f` through the symlink `l`: a different name in the tar, the
    // same path on disk, so the file is replaced and its old size is gone.
    let entries = vec![
        Entry::dir("d"),
        Entry::file("d/f", &[1u8; 1000]),
        Entry::symlink("l", "d"),
        Entry::file("l/f", &[2u8; 10]),
    ];
    let bytes = tar(&entries);
    let tmp = tempfile::tempdir().expect("tmp");
    let u = unpack_sized(&mut &bytes[..], tmp.path(), &opts(WhiteoutFormat::Aufs)).expect("unpack");
    assert_eq!(u.tree_size, None);
    assert_eq!(walk_size(tmp.path()), 10 + 1);
}

#[test]
fn a_root_that_had_content_leaves_the_size_to_a_walk() {
    let bytes = tar(&[Entry::file("new", b"12345")]);
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("old"), b"already here").expect("write");
    let u = unpack_sized(&mut &bytes[..], tmp.path(), &opts(WhiteoutFormat::Aufs)).expect("unpack");
    assert_eq!(u.tree_size, None);
    assert_eq!(u.header_size, 5);
}

#[test]
fn the_apply_format_leaves_the_size_to_a_walk() {
    // UnpackLayer deletes on whiteouts and uses a scratch directory in the root.
    let bytes = tar(&[Entry::file("a", b"12345"), Entry::file(".wh.b", b"")]);
    let tmp = tempfile::tempdir().expect("tmp");
    let u =
        unpack_sized(&mut &bytes[..], tmp.path(), &opts(WhiteoutFormat::Apply)).expect("unpack");
    assert_eq!(u.tree_size, None);
    assert_eq!(u.header_size, 5);
}
