//! `unpack` with the overlay whiteout format (Go's `Unpack` + overlay converter)
//! and with the AUFS format (whiteouts stored verbatim), compared with Go's
//! overlay driver (`import-layer` then the layer's `diff/`), and ForceMask.

mod common;

use std::collections::BTreeMap;

use common::{Entry, go_import_with, have_go, is_root, require, rust_unpack, tar};
use storage_archive::{UnpackOptions, WhiteoutFormat};
use storage_types::IdMap;

fn overlay() -> UnpackOptions {
    UnpackOptions {
        whiteout: WhiteoutFormat::Overlay {
            opaque_xattr: "trusted.overlay.opaque",
        },
        ..Default::default()
    }
}

fn get<'a>(tree: &'a BTreeMap<String, String>, p: &str) -> &'a str {
    tree.get(p)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("{p} missing in {tree:#?}"))
}

/// Ours vs Go's overlay driver (root only; the root entry's metadata is not
/// compared: Go's diff/ is created by the driver).
fn compare_with_go(name: &str, entries: &[Entry], ours: &Result<BTreeMap<String, String>, String>) {
    if !require(have_go(), "Go's containers-storage (run as root)") {
        return;
    }
    let go = go_import_with("overlay", &[tar(entries)], &[]);
    match (ours, &go) {
        (Ok(a), Ok(b)) => {
            // Go's overlay driver walks diff/ after extracting (directory.Size), which
            // bumps directory atimes (relatime); directory atimes are not compared.
            let norm = |t: &BTreeMap<String, String>| -> BTreeMap<String, String> {
                t.iter()
                    .filter(|(k, _)| k.as_str() != ".")
                    .map(|(k, v)| {
                        let v = if v.starts_with("dir ") {
                            v.split(' ')
                                .filter(|w| !w.starts_with("atime="))
                                .collect::<Vec<_>>()
                                .join(" ")
                        } else {
                            v.clone()
                        };
                        (k.clone(), v)
                    })
                    .collect()
            };
            let (a, b) = (norm(a), norm(b));
            assert_eq!(a, b, "{name}: ours (left) vs Go overlay (right)");
        }
        (Err(_), Err(_)) => {}
        _ => panic!("{name}: ours {ours:#?}, Go {go:#?}"),
    }
}

#[test]
fn overlay_whiteouts_become_char_devices_and_opaque_xattrs() {
    if !require(is_root(), "root (mknod, trusted.* xattrs)") {
        return;
    }
    let entries = vec![
        Entry::dir("./").mode(0o700).owner(9, 9),
        Entry::dir("d/").mode(0o750).owner(1, 1),
        Entry::file("d/.wh..wh..opq", b""),
        Entry::file("d/keep", b"k"),
        Entry::file(".wh.foo", b"").owner(4, 5),
        Entry::file("implied/dir/.wh.x", b""),
        Entry::file("f", b"x"),
        Entry::file("f/.wh.under-a-file", b""),
    ];
    let ours = rust_unpack(&[tar(&entries)], &overlay());
    let tree = ours.as_ref().expect("unpack");
    assert!(
        get(tree, "foo").starts_with("char 0:0 mode=0 uid=4 gid=5"),
        "{tree:#?}"
    );
    assert!(get(tree, "d").contains("xattrs=[trusted.overlay.opaque=y]"));
    assert!(get(tree, "d").contains("mode=750 uid=1 gid=1"));
    assert!(get(tree, "implied/dir/x").starts_with("char 0:0"));
    assert!(get(tree, "implied").starts_with("dir mode=755 uid=0 gid=0"));
    assert!(!tree.contains_key(".wh.foo") && !tree.contains_key("d/.wh..wh..opq"));
    // The root entry is skipped: the root keeps its mode (0755 from the test setup).
    assert!(
        get(tree, ".").starts_with("dir mode=755 uid=0 gid=0"),
        "{}",
        get(tree, ".")
    );
    compare_with_go("overlay-whiteouts", &entries, &ours);
}

#[test]
fn overlay_whiteout_of_a_path_from_the_same_tar_fails_with_eexist() {
    if !require(is_root(), "root (mknod)") {
        return;
    }
    let entries = vec![Entry::file("foo", b"f"), Entry::file(".wh.foo", b"")];
    let ours = rust_unpack(&[tar(&entries)], &overlay());
    assert_eq!(ours.as_ref().expect_err("must fail"), "file exists");
    compare_with_go("overlay-eexist", &entries, &ours);
}

#[test]
fn overlay_implied_parents_are_owned_by_the_mapped_root() {
    if !require(is_root(), "root (chown)") {
        return;
    }
    let maps = vec![IdMap::new(0, 200_000, 65536)];
    let opts = UnpackOptions {
        uid_map: maps.clone(),
        gid_map: maps,
        ..overlay()
    };
    let entries = vec![
        Entry::file("a/b/c", b"c").owner(1, 1),
        Entry::file("a/.wh.z", b"").owner(3, 3),
    ];
    let tree = rust_unpack(&[tar(&entries)], &opts).expect("unpack");
    assert!(get(&tree, "a").starts_with("dir mode=755 uid=200000 gid=200000"));
    assert!(get(&tree, "a/b").starts_with("dir mode=755 uid=200000 gid=200000"));
    assert!(get(&tree, "a/b/c").contains("uid=200001 gid=200001"));
    assert!(get(&tree, "a/z").starts_with("char 0:0 mode=0 uid=200003 gid=200003"));
    // Unpack maps whiteout owners too: an unmappable one fails.
    let entries = vec![Entry::file(".wh.z", b"").owner(70000, 0)];
    let err = rust_unpack(&[tar(&entries)], &opts).expect_err("unmappable");
    assert_eq!(err, "container ID 70000 cannot be mapped to a host ID");
}

#[test]
fn aufs_format_stores_whiteouts_verbatim() {
    let opts = UnpackOptions {
        whiteout: WhiteoutFormat::Aufs,
        ..Default::default()
    };
    let entries = vec![
        Entry::dir("./").mode(0o700),
        Entry::dir("d/"),
        Entry::file("d/.wh..wh..opq", b""),
        Entry::file(".wh.foo", b""),
        Entry::file(".wh..wh.plnk/1", b"x"),
    ];
    let tree = rust_unpack(&[tar(&entries)], &opts).expect("unpack");
    assert!(get(&tree, "d/.wh..wh..opq").starts_with("file "));
    assert!(get(&tree, ".wh.foo").starts_with("file "));
    assert!(get(&tree, ".wh..wh.plnk/1").contains("data=\"x\""));
    assert!(get(&tree, "d").contains("xattrs=[]"));
    assert!(get(&tree, ".").starts_with("dir mode=755"));
}

#[test]
fn force_mask_records_the_real_metadata_in_an_xattr() {
    let opts = UnpackOptions {
        force_mask: Some(0o700),
        ..overlay()
    };
    let mut entries = vec![
        Entry::dir("d/").mode(0o755).owner(1, 2),
        Entry::file("d/f", b"x").mode(0o4644).owner(3, 4),
        Entry::symlink("d/l", "f"),
        Entry::fifo("p").mode(0o600),
    ];
    if is_root() {
        entries.push(Entry::chardev("null", 1, 3));
    }
    let tree = rust_unpack(&[tar(&entries)], &opts).expect("unpack");
    assert!(get(&tree, "d").contains("mode=700"));
    assert!(get(&tree, "d").contains("user.containers.override_stat=1:2:0755:dir"));
    assert!(get(&tree, "d/f").contains("user.containers.override_stat=3:4:4644:file"));
    assert!(get(&tree, "d/f").starts_with("file nlink=1 mode=700"));
    assert!(get(&tree, "d/l").starts_with("symlink -> f"));
    assert!(
        get(&tree, "p").starts_with("file nlink=1 mode=700"),
        "fifo became a file"
    );
    assert!(get(&tree, "p").contains("override_stat=0:0:0600:pipe"));
    if is_root() {
        assert!(get(&tree, "null").contains("override_stat=0:0:0666:char-1-3"));
        // No chown with ForceMask in Unpack.
        assert!(get(&tree, "d/f").contains("uid=0 gid=0"));
    }
    // The root gets the default value without a root entry…
    assert!(get(&tree, ".").contains("override_stat=0:0:0755:dir"));
    // …and the root entry's values with one.
    let entries = vec![Entry::dir("./").mode(0o750).owner(5, 6)];
    let tree = rust_unpack(&[tar(&entries)], &opts).expect("unpack");
    assert!(
        get(&tree, ".").contains("override_stat=5:6:0750:dir"),
        "{}",
        get(&tree, ".")
    );
}

#[test]
fn devices_are_skipped_in_a_user_namespace() {
    let opts = UnpackOptions {
        in_user_ns: true,
        ..Default::default()
    };
    let mut block = Entry::chardev("blk", 7, 0);
    block.typeflag = b'4';
    let entries = vec![
        Entry::chardev("null", 1, 3),
        block,
        Entry::fifo("p"),
        Entry::file("f", b"x"),
    ];
    let tree = rust_unpack(&[tar(&entries)], &opts).expect("unpack");
    assert!(!tree.contains_key("null") && !tree.contains_key("blk"));
    assert!(get(&tree, "p").starts_with("fifo"));
    assert!(get(&tree, "f").starts_with("file"));
}

#[test]
fn chown_failures_can_be_ignored() {
    // Exercised for real only without CAP_CHOWN; as root, chown succeeds either way.
    let opts = UnpackOptions {
        ignore_chown_errors: true,
        ..Default::default()
    };
    let entries = vec![Entry::file("f", b"x").owner(4242, 4343)];
    let tree = rust_unpack(&[tar(&entries)], &opts).expect("unpack");
    if is_root() {
        assert!(get(&tree, "f").contains("uid=4242 gid=4343"));
    } else {
        assert!(get(&tree, "f").starts_with("file"));
        let strict = rust_unpack(&[tar(&entries)], &UnpackOptions::default()).expect_err("EPERM");
        assert!(
            strict.starts_with("failed to Lchown \"/f\" for UID 4242, GID 4343"),
            "{strict}"
        );
    }
}

#[test]
fn returns_the_sum_of_header_sizes_in_every_format() {
    // Sizes count every header, whiteouts and skipped entries included
    // (the whiteout "file" has content here, as some tools write).
    let entries = vec![
        Entry::dir("d/"),
        Entry::file("d/a", &[1u8; 1000]),
        Entry::file("d/.wh.b", b"xyz"),
        Entry::file(".wh..wh.plnk/9", b"12345"),
        Entry::symlink("l", "d/a"),
    ];
    let bytes = tar(&entries);
    for whiteout in [
        WhiteoutFormat::Apply,
        WhiteoutFormat::Overlay {
            opaque_xattr: "user.overlay.opaque",
        },
        WhiteoutFormat::Aufs,
    ] {
        let tmp = tempfile::tempdir().expect("tmp");
        let opts = UnpackOptions {
            whiteout,
            ..Default::default()
        };
        let n = storage_archive::unpack(&mut &bytes[..], tmp.path(), &opts);
        if matches!(whiteout, WhiteoutFormat::Overlay { .. }) && !is_root() {
            continue; // mknod of the whiteout needs privileges
        }
        assert_eq!(n.expect("unpack"), 1008, "{whiteout:?}");
    }
}
