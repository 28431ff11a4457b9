//! The extractor against Go's: each tar (or chain of tars) is imported with Go's
//! `containers-storage --storage-driver vfs import-layer` and extracted with
//! `unpack` (naive/`UnpackLayer` semantics) into a fresh root; the resulting
//! trees (types, modes, owners, times, xattrs, contents, link targets) must be
//! identical, or both must fail. Every extraction also asserts that nothing
//! outside the root changed (tar-breakout corpus).

mod common;

use common::{Entry, MTIME, apply, go_import, have_go, require, rust_unpack, tar};
use storage_archive::UnpackOptions;
use storage_types::IdMap;

/// Expected outcome for ours.
enum Want<'a> {
    /// Success; the listed paths must have these descriptions (substring match).
    Ok(&'a [(&'a str, Option<&'a str>)]),
    /// Failure with this message (substring).
    Err(&'a str),
}

fn check(
    name: &str,
    layers: &[Vec<Entry>],
    opts: &UnpackOptions,
    go_opts: &[&str],
    want: Want<'_>,
) {
    let tars: Vec<Vec<u8>> = layers.iter().map(|l| tar(l)).collect();
    let ours = rust_unpack(&tars, opts);
    match (&want, &ours) {
        (Want::Ok(paths), Ok(tree)) => {
            for (p, desc) in *paths {
                match desc {
                    Some(d) => {
                        let got = tree
                            .get(*p)
                            .unwrap_or_else(|| panic!("{name}: {p} missing in {tree:#?}"));
                        assert!(
                            got.contains(d),
                            "{name}: {p}: {got:?} does not contain {d:?}"
                        );
                    }
                    None => assert!(
                        !tree.contains_key(*p),
                        "{name}: {p} should not exist: {tree:#?}"
                    ),
                }
            }
        }
        (Want::Err(msg), Err(e)) => assert!(e.contains(msg), "{name}: error {e:?} lacks {msg:?}"),
        (_, other) => panic!("{name}: unexpected result {other:#?}"),
    }
    if !require(have_go(), "Go's containers-storage (run as root)") {
        return;
    }
    let go = go_import(&tars, go_opts);
    match (&ours, &go) {
        (Ok(a), Ok(b)) => {
            let mut a = a.clone();
            let mut b = b.clone();
            // The roots were created differently (tempdir vs vfs) unless the tar set them.
            if layers
                .iter()
                .all(|l| l.iter().all(|e| e.name != b"./" && e.name != b"."))
            {
                a.remove(".");
                b.remove(".");
            }
            assert_eq!(a, b, "{name}: ours (left) and Go's (right) trees differ");
        }
        (Err(e), Err(g)) => {
            eprintln!("{name}: both failed: ours {e:?}; Go {g:?}");
        }
        _ => panic!("{name}: ours {ours:#?} but Go {go:#?}"),
    }
}

#[test]
fn basic_types_modes_owners_times() {
    let l = vec![
        Entry::dir("./").mode(0o750).owner(5, 6).mtime(MTIME + 1),
        Entry::dir("a/").mode(0o711).mtime(MTIME + 2),
        Entry::file("a/f", b"hello").mode(0o640).owner(1, 2),
        Entry::file("a/suid", b"x").mode(0o4755),
        Entry::dir("a/sticky/").mode(0o1777),
        Entry::symlink("a/l", "f").owner(3, 4),
        Entry::symlink("a/abs", "/nonexistent/target"),
        Entry::hardlink("a/h", "a/f").mode(0o640).owner(1, 2),
        Entry::fifo("a/fifo").mode(0o600),
        Entry::chardev("a/null", 1, 3),
        Entry::file("implied/parent/file", b"p"),
        Entry::file("a/zero", b"").mode(0),
    ];
    check(
        "basic",
        &[l],
        &apply(),
        &[],
        Want::Ok(&[
            (".", Some("dir mode=750 uid=5 gid=6 mtime=NOW atime=0")),
            ("a", Some("dir mode=711 uid=0 gid=0 mtime=1000000002")),
            (
                "a/f",
                Some("file nlink=2 mode=640 uid=1 gid=2 mtime=1000000000 atime=1000000000"),
            ),
            ("a/suid", Some("mode=4755")),
            ("a/sticky", Some("mode=1777")),
            ("a/l", Some("symlink -> f uid=3 gid=4 mtime=1000000000")),
            ("a/abs", Some("symlink -> /nonexistent/target")),
            ("a/fifo", Some("fifo mode=600")),
            ("a/null", Some("char 1:3 mode=666")),
            ("implied", Some("dir mode=755")),
            ("implied/parent/file", Some("file nlink=1 mode=644")),
            ("a/zero", Some("mode=0 ")),
        ]),
    );
}

#[test]
fn dotdot_and_absolute_names_are_clamped() {
    let l = vec![
        Entry::file("../escape", b"1"),
        Entry::file("a/b/../../../x", b"2"),
        Entry::file("/abs/file", b"3"),
        Entry::file("../../../../../../../deep", b"4"),
    ];
    check(
        "dotdot",
        &[l],
        &apply(),
        &[],
        Want::Ok(&[
            ("escape", Some("data=\"1\"")),
            ("x", Some("data=\"2\"")),
            ("abs/file", Some("data=\"3\"")),
            ("deep", Some("data=\"4\"")),
        ]),
    );
}

#[test]
fn absolute_symlink_escape_cannot_reach_the_host() {
    let l = vec![
        Entry::symlink("lnk", "/etc"),
        Entry::file("lnk/passwd", b"pwned"),
    ];
    check(
        "abs-symlink",
        &[l],
        &apply(),
        &[],
        Want::Err("open /lnk/passwd: no such file or directory"),
    );
    let l = vec![
        Entry::symlink("lnk", "/etc"),
        Entry::dir("etc/"),
        Entry::file("lnk/passwd", b"inside"),
    ];
    check(
        "abs-symlink-inside",
        &[l],
        &apply(),
        &[],
        Want::Ok(&[
            ("etc/passwd", Some("data=\"inside\"")),
            ("lnk", Some("symlink -> /etc")),
        ]),
    );
}

#[test]
fn relative_symlink_escape_is_clamped() {
    let l = vec![
        Entry::symlink("lnk", "../../.."),
        Entry::file("lnk/x", b"x"),
    ];
    check(
        "rel-symlink",
        &[l],
        &apply(),
        &[],
        Want::Ok(&[
            ("x", Some("data=\"x\"")),
            ("lnk", Some("symlink -> ../../..")),
        ]),
    );
    let l = vec![
        Entry::dir("d/"),
        Entry::symlink("d/up", "../../../etc"),
        Entry::file("d/up/passwd", b"y"),
    ];
    check(
        "rel-symlink-etc",
        &[l],
        &apply(),
        &[],
        Want::Err("no such file or directory"),
    );
}

#[test]
fn hardlink_escapes() {
    let l = vec![Entry::hardlink("h", "../../etc/passwd")];
    check(
        "hardlink-rel",
        &[l],
        &apply(),
        &[],
        Want::Err("no such file or directory"),
    );
    let l = vec![Entry::hardlink("h", "/etc/passwd")];
    check(
        "hardlink-abs",
        &[l],
        &apply(),
        &[],
        Want::Err("no such file or directory"),
    );
    let l = vec![
        Entry::dir("etc/"),
        Entry::file("etc/passwd", b"layer").mode(0o600),
        Entry::hardlink("h1", "../../etc/passwd").mode(0o600),
        Entry::hardlink("h2", "/etc/passwd").mode(0o600),
    ];
    check(
        "hardlink-inside",
        &[l],
        &apply(),
        &[],
        Want::Ok(&[
            ("h1", Some("nlink=3 mode=600")),
            ("h2", Some("data=\"layer\"")),
        ]),
    );
    // A hard link through a symlinked directory stays inside too.
    let l = vec![
        Entry::symlink("s", "/"),
        Entry::file("t", b"t"),
        Entry::hardlink("h", "s/t"),
    ];
    check(
        "hardlink-via-symlink",
        &[l],
        &apply(),
        &[],
        Want::Ok(&[("h", Some("nlink=2"))]),
    );
}

#[test]
fn symlink_replaced_by_directory_and_directory_by_symlink() {
    let l = vec![
        Entry::symlink("s", "/tmp"),
        Entry::dir("/s/"),
        Entry::file("s/f", b"in-dir"),
    ];
    check(
        "symlink-then-dir",
        &[l],
        &apply(),
        &[],
        Want::Ok(&[("s", Some("dir ")), ("s/f", Some("data=\"in-dir\""))]),
    );
    let l = vec![
        Entry::dir("d/"),
        Entry::file("d/f", b"old"),
        Entry::symlink("/d", ".."),
        Entry::file("/d/x", b"through"),
    ];
    check(
        "dir-then-symlink",
        &[l],
        &apply(),
        &[],
        Want::Ok(&[
            ("d", Some("symlink -> ..")),
            ("x", Some("data=\"through\"")),
            ("d/f", None),
        ]),
    );
    // A file replaced by a directory and a directory by a file.
    let l = vec![
        Entry::file("p", b"file"),
        Entry::dir("/p/"),
        Entry::file("p/c", b"c"),
        Entry::dir("q/"),
        Entry::file("q/c", b"c"),
        Entry::file("/q", b"now-a-file"),
    ];
    check(
        "replacements",
        &[l],
        &apply(),
        &[],
        Want::Ok(&[
            ("p/c", Some("data=\"c\"")),
            ("q", Some("data=\"now-a-file\"")),
        ]),
    );
}

#[test]
fn devices_long_names_and_global_headers() {
    if !require(common::is_root(), "root (mknod)") {
        return;
    }
    let long_dir = "d".repeat(120);
    let long = format!("{long_dir}/{}", "f".repeat(150));
    let target = "t".repeat(200);
    let mut g = Entry::file("pax_global_header", b"").typeflag(b'g');
    g.data.clear();
    let l = vec![
        g,
        Entry::chardev("null", 1, 3),
        {
            let mut e = Entry::chardev("loop", 7, 0);
            e.typeflag = b'4';
            e.mode = 0o660;
            e
        },
        Entry::file(&long, b"long"),
        Entry::symlink("longlink", &target),
    ];
    check(
        "devices-long",
        &[l],
        &apply(),
        &[],
        Want::Ok(&[
            ("null", Some("char 1:3")),
            ("loop", Some("block 7:0 mode=660")),
            (long.as_str(), Some("data=\"long\"")),
            ("longlink", Some("symlink -> ttt")),
        ]),
    );
}

#[test]
fn duplicate_entries_are_rejected() {
    let l = vec![Entry::file("a", b"1"), Entry::file("./a", b"2")];
    check(
        "dup",
        &[l],
        &apply(),
        &[],
        Want::Err("duplicates of file paths not supported"),
    );
}

#[test]
fn unhandled_types() {
    let l = vec![Entry::file("c", b"x").typeflag(b'7')];
    check(
        "type7",
        &[l],
        &apply(),
        &[],
        Want::Err("unhandled tar header type 55"),
    );
}

#[test]
fn whiteouts_and_opaque_directories() {
    let l1 = vec![
        Entry::dir("a/"),
        Entry::file("a/x", b"x"),
        Entry::file("a/y", b"y"),
        Entry::dir("b/"),
        Entry::file("b/z", b"z"),
        Entry::dir("b/sub/"),
        Entry::file("b/sub/deep", b"d"),
        Entry::file("gone", b"g"),
        Entry::dir("gonedir/"),
        Entry::file("gonedir/f", b"f"),
    ];
    let l2 = vec![
        Entry::file(".wh.gone", b""),
        Entry::file(".wh.gonedir", b""),
        Entry::file("a/.wh.x", b""),
        Entry::dir("b/"),
        Entry::file("b/.wh..wh..opq", b""),
        Entry::file("b/new", b"n"),
        Entry::file(".wh.never-existed", b""),
    ];
    check(
        "whiteouts",
        &[l1, l2],
        &apply(),
        &[],
        Want::Ok(&[
            ("gone", None),
            ("gonedir", None),
            ("a/x", None),
            ("a/y", Some("data=\"y\"")),
            ("b/z", None),
            ("b/sub", None),
            ("b/new", Some("data=\"n\"")),
            ("b/.wh..wh..opq", None),
            (".wh.gone", None),
        ]),
    );
}

#[test]
fn opaque_keeps_what_this_tar_created() {
    let l1 = vec![
        Entry::dir("d/"),
        Entry::file("d/old", b"o"),
        Entry::dir("d/keep/"),
        Entry::file("d/keep/old2", b"o"),
    ];
    let l2 = vec![
        Entry::dir("d/"),
        Entry::dir("d/keep/"),
        Entry::file("d/keep/new", b"n"),
        Entry::file("d/.wh..wh..opq", b""),
        Entry::file("d/c", b"c"),
    ];
    check(
        "opaque-order",
        &[l1, l2],
        &apply(),
        &[],
        Want::Ok(&[
            ("d/old", None),
            ("d/keep/old2", None),
            ("d/keep/new", Some("data=\"n\"")),
            ("d/c", Some("data=\"c\"")),
        ]),
    );
    // Root-level opaque marker.
    let l1 = vec![Entry::file("top", b"t"), Entry::dir("dd/")];
    let l2 = vec![Entry::file(".wh..wh..opq", b""), Entry::file("fresh", b"f")];
    check(
        "opaque-root",
        &[l1, l2],
        &apply(),
        &[],
        Want::Ok(&[("top", None), ("dd", None), ("fresh", Some("data=\"f\""))]),
    );
}

#[test]
fn a_layer_can_delete_what_it_added() {
    let l = vec![
        Entry::file("foo", b"f"),
        Entry::file(".wh.foo", b""),
        Entry::file("bar", b"b"),
    ];
    check(
        "self-delete",
        &[l],
        &apply(),
        &[],
        Want::Ok(&[("foo", None), ("bar", Some("data=\"b\""))]),
    );
}

#[test]
fn aufs_plnk_hardlinks_are_materialised() {
    let l = vec![
        Entry::dir(".wh..wh.plnk/"),
        Entry::file(".wh..wh.plnk/123", b"shared")
            .mode(0o751)
            .owner(7, 8),
        Entry::dir(".wh..wh.orph/"),
        Entry::dir("bin/"),
        Entry::hardlink("bin/a", ".wh..wh.plnk/123"),
        Entry::hardlink("bin/b", "./.wh..wh.plnk/123"),
    ];
    check(
        "plnk",
        &[l],
        &apply(),
        &[],
        Want::Ok(&[
            ("bin/a", Some("file nlink=1 mode=751 uid=7 gid=8")),
            ("bin/b", Some("data=\"shared\"")),
            (".wh..wh.orph", None),
        ]),
    );
    let l = vec![Entry::hardlink("x", ".wh..wh.plnk/missing")];
    check(
        "plnk-missing",
        &[l],
        &apply(),
        &[],
        Want::Err("invalid aufs hardlink"),
    );
    // An absolute link name is not recognised as a plnk link: a plain (failing) hard link.
    let l = vec![
        Entry::file(".wh..wh.plnk/1", b"s"),
        Entry::hardlink("y", "/.wh..wh.plnk/1"),
    ];
    check(
        "plnk-absolute",
        &[l],
        &apply(),
        &[],
        Want::Err("link /.wh..wh.plnk/1 /y: no such file or directory"),
    );
}

#[test]
fn hardlink_chmod_quirk() {
    let l = vec![
        Entry::dir("bin/"),
        Entry::file("bin/sh", b"#!").mode(0o755),
        Entry::hardlink("bin/sh2", "bin/sh")
            .mode(0o644)
            .mtime(MTIME + 50),
        Entry::symlink("lnk", "bin/sh"),
        Entry::hardlink("lnk2", "lnk").mode(0o600),
    ];
    check(
        "hardlink-chmod",
        &[l],
        &apply(),
        &[],
        Want::Ok(&[
            ("bin/sh", Some("mode=644 uid=0 gid=0 mtime=1000000050")),
            ("bin/sh2", Some("mode=644")),
            ("lnk2", Some("symlink -> bin/sh")),
        ]),
    );
}

#[test]
fn times_atime_and_clamping() {
    let l = vec![
        Entry::dir("d/").mtime(MTIME + 7),
        Entry::file("d/later", b"x").mtime(MTIME + 9),
        Entry::file("d/pax", b"x")
            .pax("atime", b"1100000000.5")
            .pax("mtime", b"1000000000.25"),
        Entry::file("d/old-atime", b"x").pax("atime", b"900000000"),
        Entry::file("neg", b"x").pax("mtime", b"-100"),
        Entry::dir("e/").pax("atime", b"1200000000"),
    ];
    check(
        "times",
        &[l],
        &apply(),
        &[],
        Want::Ok(&[
            ("d", Some("mtime=1000000007 atime=0")),
            ("d/later", Some("mtime=1000000009 atime=1000000009")),
            ("d/pax", Some("mtime=1000000000 atime=1100000000")),
            ("d/old-atime", Some("mtime=1000000000 atime=1000000000")),
            ("neg", Some("mtime=0 atime=0")),
            ("e", Some("atime=1200000000")),
        ]),
    );
}

#[test]
fn xattrs_from_pax() {
    let l = vec![
        Entry::file("f", b"x")
            .pax("SCHILY.xattr.user.foo", b"bar")
            .pax("SCHILY.xattr.trusted.t", b"1"),
        Entry::dir("d/").pax("SCHILY.xattr.user.dir", b"yes"),
        Entry::file("sel", b"x").pax(
            "SCHILY.xattr.security.selinux",
            b"system_u:object_r:foo_t:s0",
        ),
    ];
    let want: &[(&str, Option<&str>)] = if common::is_root() {
        &[
            ("f", Some("xattrs=[trusted.t=1,user.foo=bar]")),
            ("d", Some("xattrs=[user.dir=yes]")),
            ("sel", Some("xattrs=[]")),
        ]
    } else {
        &[("d", Some("xattrs=[user.dir=yes]"))]
    };
    check("xattrs", &[l], &apply(), &[], Want::Ok(want));
}

#[test]
fn owners_are_mapped_and_unmapped_ids_fail() {
    if !require(common::is_root(), "root (chown)") {
        return;
    }
    let maps = vec![IdMap::new(0, 100_000, 65536)];
    let opts = UnpackOptions {
        uid_map: maps.clone(),
        gid_map: maps,
        ..apply()
    };
    let go = ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];
    let l = vec![
        Entry::dir("d/").owner(0, 0),
        Entry::file("d/f", b"x").owner(1000, 50),
        Entry::symlink("d/l", "f").owner(2, 3),
    ];
    check(
        "mapped",
        &[l],
        &opts,
        &go,
        Want::Ok(&[
            ("d", Some("uid=100000 gid=100000")),
            ("d/f", Some("uid=101000 gid=100050")),
            ("d/l", Some("uid=100002 gid=100003")),
        ]),
    );
    let l = vec![Entry::file("f", b"x").owner(70000, 0)];
    check(
        "unmapped",
        &[l],
        &opts,
        &go,
        Want::Err("container ID 70000 cannot be mapped to a host ID"),
    );
    let l = vec![Entry::file("f", b"x").owner(0, 99999)];
    check(
        "unmapped-gid",
        &[l],
        &opts,
        &go,
        Want::Err("container ID 99999 cannot be mapped to a host ID"),
    );
    // Whiteouts are not remapped (UnpackLayer).
    let l = vec![Entry::file(".wh.x", b"").owner(70000, 0)];
    check(
        "unmapped-whiteout",
        &[l],
        &opts,
        &go,
        Want::Ok(&[(".wh.x", None)]),
    );
}

/// A real tree archived by GNU tar (GNU format, long names, symlinks, hard
/// links, directories with odd modes) must extract exactly like Go's.
#[test]
fn gnu_tar_of_a_real_tree_matches_go() {
    if !require(common::is_root(), "root") {
        return;
    }
    let src = tempfile::tempdir().expect("tmp");
    let base = src.path().join("tree");
    std::fs::create_dir(&base).expect("mkdir");
    let copied = std::process::Command::new("cp")
        .args(["-a", "/usr/share/zoneinfo", "/etc/ssl"])
        .arg(&base)
        .status()
        .expect("cp");
    assert!(copied.success());
    let long = base.join("x".repeat(120)).join("y".repeat(120));
    std::fs::create_dir_all(&long).expect("mkdir long");
    std::fs::write(long.join("z".repeat(150)), b"long").expect("write");
    std::fs::hard_link(long.join("z".repeat(150)), base.join("hl")).expect("link");
    std::os::unix::fs::symlink("/etc/ssl/certs/../../passwd", base.join("abs")).expect("symlink");
    let out = std::process::Command::new("tar")
        .args(["--numeric-owner", "--format=gnu", "-C"])
        .arg(&base)
        .args(["-cf", "-", "."])
        .output()
        .expect("tar");
    assert!(out.status.success());
    let tars = vec![out.stdout];
    let ours = rust_unpack(&tars, &apply()).expect("unpack");
    assert!(ours.contains_key("zoneinfo/UTC") || ours.contains_key("zoneinfo"));
    assert!(ours["hl"].contains("nlink=2"));
    if require(have_go(), "Go's containers-storage") {
        let go = go_import(&tars, &[]).expect("Go import");
        assert_eq!(ours, go, "ours (left) vs Go (right)");
    }
}
