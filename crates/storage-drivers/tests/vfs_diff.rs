//! Naive diff side of vfs: changes, diff sizes, exported tar bytes (against Go's CLI),
//! apply_diff, diff_getter, update_layer_id_map.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use storage_archive::changes::{Change, ChangeKind, changes_dirs, changes_size};
use storage_archive::export::{export_changes, tar_dir};
use storage_drivers::{ApplyDiffOpts, CreateOpts, MountOpts};
use storage_types::IdMap;

fn mknod(path: &Path, ft: rustix::fs::FileType, mode: u32, dev: u64) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        ft,
        rustix::fs::Mode::from_raw_mode(mode),
        dev,
    )
    .expect("mknod");
}

/// A tree exercising every header rule of the exporter.
fn populate_base(b: &Path, root: bool) {
    std::fs::create_dir_all(b.join("etc/deep")).unwrap();
    std::fs::create_dir_all(b.join("usr/bin")).unwrap();
    std::fs::create_dir_all(b.join("gone/sub")).unwrap();
    std::fs::write(b.join("gone/sub/x"), b"x").unwrap();
    std::fs::write(b.join("gone/y"), b"y").unwrap();
    std::fs::write(b.join("etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n").unwrap();
    chmod(&b.join("etc/passwd"), 0o640);
    std::fs::write(b.join("etc/keep"), b"unchanged").unwrap();
    std::fs::write(b.join("etc/shadow"), b"secret").unwrap();
    std::fs::write(b.join("usr/bin/suid"), b"#!/bin/sh\necho hi\n").unwrap();
    chmod(&b.join("usr/bin/suid"), 0o4755);
    std::fs::write(b.join("empty"), b"").unwrap();
    let big: Vec<u8> = (0..100_003u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(b.join("usr/big"), big).unwrap();
    std::fs::write(b.join("xattr"), b"with xattrs").unwrap();
    set_xattr(&b.join("xattr"), "user.b", b"second");
    set_xattr(&b.join("xattr"), "user.a", b"first");
    set_xattr(&b.join("etc"), "user.dir", b"on a dir");
    std::fs::write(b.join("frac"), b"fractional mtime").unwrap();
    std::fs::hard_link(b.join("etc/passwd"), b.join("hardlink")).unwrap();
    std::fs::hard_link(b.join("xattr"), b.join("etc/xattr-link")).unwrap();
    std::os::unix::fs::symlink("etc/passwd", b.join("sym")).unwrap();
    std::os::unix::fs::symlink("t".repeat(140), b.join("longsym")).unwrap();
    let long_dir = b.join("d".repeat(70)).join("e".repeat(50));
    std::fs::create_dir_all(&long_dir).unwrap();
    std::fs::write(long_dir.join("split-into-prefix"), b"ustar prefix").unwrap();
    std::fs::write(b.join("n".repeat(120)), b"pax path").unwrap();
    std::fs::write(b.join("café"), b"non-ascii").unwrap();
    mknod(&b.join("fifo"), rustix::fs::FileType::Fifo, 0o644, 0);
    if root {
        mknod(
            &b.join("null"),
            rustix::fs::FileType::CharacterDevice,
            0o666,
            rustix::fs::makedev(1, 3),
        );
        mknod(
            &b.join("loop"),
            rustix::fs::FileType::BlockDevice,
            0o660,
            rustix::fs::makedev(7, 1),
        );
        std::fs::write(b.join("bigid"), b"owned by a big uid").unwrap();
        lchown(&b.join("bigid"), 3_000_000, 42);
        lchown(&b.join("etc/shadow"), 0, 42);
        lchown(&b.join("sym"), 7, 8);
        let mut cap = vec![0u8; 20];
        cap[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
        cap[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
        set_xattr(&b.join("usr/bin/suid"), "security.capability", &cap);
    }
    for p in common::tree(b) {
        set_mtime(&b.join(&p), 1_600_000_000, 0);
    }
    set_mtime(&b.join("frac"), 1_600_000_100, 700_000_000);
    set_mtime(b, 1_600_000_000, 0);
}

/// Modifications for the child layer.
fn modify_child(c: &Path) {
    std::fs::write(c.join("etc/passwd"), b"root:x:0:0:root:/root:/bin/bash\n").unwrap(); // content
    chmod(&c.join("etc/shadow"), 0o600); // mode only
    std::fs::remove_dir_all(c.join("gone")).unwrap(); // a deleted dir is reported once
    std::fs::remove_file(c.join("empty")).unwrap();
    std::fs::create_dir_all(c.join("new/inner")).unwrap(); // added dir with content
    std::fs::write(c.join("new/inner/file"), b"added").unwrap();
    std::fs::write(c.join("usr/bin/tool"), b"added in existing dir").unwrap();
    set_xattr(&c.join("xattr"), "user.a", b"changed");
    std::fs::remove_file(c.join("sym")).unwrap();
    std::fs::create_dir(c.join("sym")).unwrap(); // file replaced by a dir
    std::fs::write(c.join("sym/inside"), b"i").unwrap();
    // Times only differ by nanoseconds on one side: not a change (sameFsTimeSpec).
    set_mtime(&c.join("usr/big"), 1_600_000_000, 999);
}

fn expected_changes() -> Vec<Change> {
    let c = |p: &str, k| Change {
        path: p.to_owned(),
        kind: k,
    };
    use ChangeKind::*;
    let mut v = vec![
        c("/empty", Delete),
        c("/etc", Modify),
        c("/etc/passwd", Modify),
        c("/etc/shadow", Modify),
        c("/etc/xattr-link", Modify),
        c("/gone", Delete),
        c("/hardlink", Modify),
        c("/new", Add),
        c("/new/inner", Add),
        c("/new/inner/file", Add),
        c("/sym", Modify),
        c("/sym/inside", Add),
        c("/usr", Modify),
        c("/usr/bin", Modify),
        c("/usr/bin/tool", Add),
        c("/xattr", Modify),
    ];
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

fn sorted(mut v: Vec<Change>) -> Vec<Change> {
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

#[test]
fn changes_all_kinds_and_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = vfs(tmp.path());
    d.create("base", None, &CreateOpts::default()).unwrap();
    let b = d.get("base", &MountOpts::default()).unwrap();
    populate_base(&b, is_root());
    d.create("child", Some("base"), &CreateOpts::default())
        .unwrap();
    let c = d.get("child", &MountOpts::default()).unwrap();
    modify_child(&c);

    // Go's order: a directory's Modify comes before the changes below it; a deleted
    // directory appears once, its children never.
    let raw = d.changes("child", Some("base")).unwrap();
    let pos = |p: &str| raw.iter().position(|c| c.path == p).unwrap();
    assert!(pos("/usr") < pos("/usr/bin") && pos("/usr/bin") < pos("/usr/bin/tool"));
    assert_eq!(
        raw.iter().filter(|c| c.path.starts_with("/gone")).count(),
        1
    );
    assert_eq!(sorted(raw), expected_changes());

    // Nothing changed → nothing reported; the reference layer against itself too.
    d.create("same", Some("base"), &CreateOpts::default())
        .unwrap();
    assert_eq!(d.changes("same", Some("base")).unwrap(), vec![]);
    assert_eq!(changes_dirs(&b, Some(&b)).unwrap(), vec![]);

    // Without a parent everything is an Add, in walk order.
    let all = d.changes("base", None).unwrap();
    assert!(all.iter().all(|c| c.kind == ChangeKind::Add));
    assert_eq!(all.len(), common::tree(&b).len());

    // Sizes: Adds and Modifies of non-dirs, hard links once.
    let size = d.diff_size("child", Some("base")).unwrap();
    let len = |p: &str| std::fs::symlink_metadata(c.join(p)).unwrap().len() as i64;
    // etc/passwd and hardlink share an inode; xattr and etc/xattr-link too.
    let want = len("etc/passwd")
        + len("etc/shadow")
        + len("xattr")
        + len("new/inner/file")
        + len("usr/bin/tool")
        + len("sym/inside");
    assert_eq!(size, want);
    assert_eq!(changes_size(&c, &expected_changes()), want);
    let base_size = d.diff_size("base", None).unwrap();
    assert!(base_size > 100_000, "{base_size}");
}

/// Header-by-header normalisation of a tar stream: with `go143`, the file-type bits
/// of mode and uname/gname;
/// always, the mtime of `.wh.` entries (Go stamps them with the current time).
fn normalise(tar: &[u8], go143: bool) -> Vec<u8> {
    let mut out = tar.to_vec();
    let mut off = 0;
    let octal = |b: &[u8]| -> u64 {
        let s: String = b
            .iter()
            .take_while(|&&c| c != 0 && c != b' ')
            .map(|&c| c as char)
            .collect();
        u64::from_str_radix(s.trim(), 8).unwrap_or(0)
    };
    while off + 512 <= out.len() {
        let blk = &mut out[off..off + 512];
        if blk.iter().all(|&c| c == 0) {
            break;
        }
        let typeflag = blk[156];
        let size = octal(&blk[124..136]);
        if !matches!(typeflag, b'x' | b'g' | b'L' | b'K') {
            if go143 {
                let mode = octal(&blk[100..108]) & 0o7777;
                blk[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
                blk[265..329].fill(0);
            }
            let name: Vec<u8> = blk[..100].iter().copied().take_while(|&c| c != 0).collect();
            let base = name.rsplit(|&c| c == b'/').next().unwrap_or(&name);
            if base.starts_with(b".wh.") {
                blk[136..148].copy_from_slice(b"00000000000\0");
            }
            let sum: u32 = blk
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u32::from(c)
                    }
                })
                .sum();
            blk[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        }
        off += 512 + size.div_ceil(512) as usize * 512;
    }
    out
}

fn parse_go_changes(out: &[u8]) -> Vec<Change> {
    let mut v: Vec<Change> = String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (kind, path) = l.split_once(' ').expect("kind path");
            let kind = match kind {
                "Add" => ChangeKind::Add,
                "Delete" => ChangeKind::Delete,
                "Modify" => ChangeKind::Modify,
                other => panic!("unknown kind {other}"),
            };
            let path: String = serde_unquote(path);
            Change { path, kind }
        })
        .collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

/// Go prints paths with `%q`; our test paths are plain ASCII.
fn serde_unquote(s: &str) -> String {
    s.trim().trim_matches('"').to_owned()
}

struct GoStore {
    _tmp: tempfile::TempDir,
    graph: PathBuf,
    run: PathBuf,
    bin: PathBuf,
}

impl GoStore {
    fn cs(&self, args: &[&str]) -> Vec<u8> {
        run(Command::new(&self.bin)
            .arg("--graph")
            .arg(&self.graph)
            .arg("--run")
            .arg(&self.run)
            .args(["--storage-driver", "vfs"])
            .args(args))
    }
    fn cs_str(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.cs(args)).trim().to_owned()
    }
}

#[test]
fn export_bytes_match_go() {
    let Some(bin) = common::go_cs() else {
        return;
    };
    if !require(is_root(), "Go's CLI store needs root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let go = GoStore {
        graph: tmp.path().join("g"),
        run: tmp.path().join("r"),
        bin,
        _tmp: tmp,
    };
    let base = go.cs_str(&["create-layer"]);
    let bm = PathBuf::from(go.cs_str(&["mount", &base]));
    populate_base(&bm, true);
    go.cs(&["unmount", &base]);
    let child = go.cs_str(&["create-layer", &base]);
    let cm = PathBuf::from(go.cs_str(&["mount", &child]));
    modify_child(&cm);
    go.cs(&["unmount", &child]);

    let go_base = go.cs(&["diff", "-u", &base]);
    let go_child = go.cs(&["diff", "-u", &child]);
    let go_changes = parse_go_changes(&go.cs(&["changes", &child]));
    let go_size: i64 = go
        .cs_str(&["diffsize", &child])
        .parse()
        .expect("diffsize is a number");

    // Our exporter on the very same directories.
    let bdir = go.graph.join("vfs/dir").join(&base);
    let cdir = go.graph.join("vfs/dir").join(&child);
    let mut ours = Vec::new();
    tar_dir(&bdir, &[], &[], &mut ours).unwrap();
    assert_eq!(common::entry_names(&ours), common::entry_names(&go_base));
    assert!(
        normalise(&ours, false) == normalise(&go_base, true),
        "base layer tar differs from Go's"
    );

    let changes = changes_dirs(&cdir, Some(&bdir)).unwrap();
    assert_eq!(sorted(changes.clone()), go_changes);
    assert_eq!(sorted(changes.clone()), expected_changes());
    assert_eq!(changes_size(&cdir, &changes), go_size);
    let mut ours_child = Vec::new();
    export_changes(&cdir, &changes, &[], &[], &mut ours_child).unwrap();
    assert_eq!(
        common::entry_names(&ours_child),
        common::entry_names(&go_child)
    );
    assert!(
        normalise(&ours_child, false) == normalise(&go_child, true),
        "child diff differs from Go's"
    );

    // The driver, opened on Go's store, produces the same bytes.
    let d = vfs_with_home(&go.graph);
    let mut via_driver = Vec::new();
    d.diff(&base, None, &[], &[], &mut via_driver).unwrap();
    assert!(via_driver == ours);
    let mut via_driver = Vec::new();
    d.diff(&child, Some(&base), &[], &[], &mut via_driver)
        .unwrap();
    assert!(normalise(&via_driver, false) == normalise(&go_child, true));
    assert_eq!(d.diff_size(&child, Some(&base)).unwrap(), go_size);
}

fn vfs_with_home(graph: &Path) -> Box<dyn storage_drivers::Driver> {
    storage_drivers::open_driver(
        "vfs",
        &storage_drivers::DriverOptions {
            home: graph.join("vfs"),
            run_home: graph.join("run-vfs"),
            graph_root: graph.to_path_buf(),
            run_root: graph.join("run"),
            image_store: None,
            options: vec![],
        },
    )
    .unwrap()
}

#[test]
fn exported_tar_parses_back() {
    let tmp = tempfile::tempdir().unwrap();
    let d = vfs(tmp.path());
    d.create("base", None, &CreateOpts::default()).unwrap();
    let b = d.get("base", &MountOpts::default()).unwrap();
    populate_base(&b, is_root());
    // Go 1.43's DirCopy cannot copy sockets, so only this test has one.
    mknod(&b.join("sock"), rustix::fs::FileType::Socket, 0o755, 0);
    let mut out = Vec::new();
    d.diff("base", None, &[], &[], &mut out).unwrap();
    assert_eq!(out.len() % 512, 0);
    assert!(out[out.len() - 1024..].iter().all(|&c| c == 0));
    let mut ar = tar::Archive::new(&out[..]);
    let mut seen = BTreeSet::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let h = e.header().clone();
        assert_eq!(
            h.mode().unwrap() & !0o7777,
            0,
            "bare permission bits for {name}"
        );
        assert_eq!(h.username_bytes().unwrap_or_default(), b"", "{name}");
        let disk = b.join(name.trim_end_matches('/'));
        let md = std::fs::symlink_metadata(&disk).unwrap();
        assert_eq!(h.mtime().unwrap() as i64, md.mtime(), "{name}");
        match h.entry_type() {
            tar::EntryType::Regular => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                assert_eq!(data, std::fs::read(&disk).unwrap(), "{name}");
            }
            tar::EntryType::Link => {
                let target = e.link_name_bytes().unwrap().into_owned();
                assert!(
                    seen.contains(&String::from_utf8_lossy(&target).into_owned()),
                    "{name}"
                );
            }
            tar::EntryType::Directory => assert!(name.ends_with('/')),
            tar::EntryType::Symlink => {
                let target = e.link_name_bytes().unwrap().into_owned();
                assert_eq!(
                    Path::new(std::str::from_utf8(&target).unwrap()),
                    std::fs::read_link(&disk).unwrap()
                );
            }
            _ => {}
        }
        if name == "xattr" {
            let pax: Vec<(String, Vec<u8>)> = e
                .pax_extensions()
                .unwrap()
                .expect("pax")
                .map(|r| {
                    let r = r.unwrap();
                    (r.key().unwrap().to_owned(), r.value_bytes().to_vec())
                })
                .collect();
            assert_eq!(
                pax,
                vec![
                    ("SCHILY.xattr.user.a".to_owned(), b"first".to_vec()),
                    ("SCHILY.xattr.user.b".to_owned(), b"second".to_vec())
                ]
            );
        }
        seen.insert(name);
    }
    assert!(
        seen.contains("frac") && seen.contains("usr/bin/suid") && seen.contains(&"n".repeat(120))
    );
    assert!(seen.contains("café"));
    assert!(!seen.contains("sock"));
    // The hard link's first occurrence is a regular file; the second a link to it.
    let hl: Vec<_> = seen
        .iter()
        .filter(|n| *n == "etc/passwd" || *n == "hardlink")
        .collect();
    assert_eq!(hl.len(), 2);
}

#[test]
fn apply_diff_and_diff_getter() {
    let tmp = tempfile::tempdir().unwrap();
    let d = vfs(tmp.path());
    d.create("src", None, &CreateOpts::default()).unwrap();
    let s = d.get("src", &MountOpts::default()).unwrap();
    std::fs::create_dir_all(s.join("a/b")).unwrap();
    std::fs::write(s.join("a/b/file"), b"payload").unwrap();
    std::fs::write(s.join("top"), b"top file").unwrap();
    let mut tar = Vec::new();
    d.diff("src", None, &[], &[], &mut tar).unwrap();

    d.create("dst", None, &CreateOpts::default()).unwrap();
    let size = d
        .apply_diff("dst", None, &mut &tar[..], &ApplyDiffOpts::default())
        .unwrap();
    assert_eq!(size, 7 + 8);
    let dst = d.get("dst", &MountOpts::default()).unwrap();
    assert_eq!(std::fs::read(dst.join("a/b/file")).unwrap(), b"payload");

    let mut getter = d.diff_getter("dst").unwrap();
    let content = getter.open(b"a/b/file").unwrap().read_to_vec().unwrap();
    assert_eq!(content, b"payload");
    let content = getter.open(b"./top").unwrap().read_to_vec().unwrap();
    assert_eq!(content, b"top file");
    let err = getter
        .open(b"../escape")
        .err()
        .expect("escaping name must fail");
    assert!(
        err.to_string().contains("no such file or directory"),
        "{err}"
    );

    // A child layer deleting a file exports a bare whiteout.
    d.create("child", Some("dst"), &CreateOpts::default())
        .unwrap();
    let c = d.get("child", &MountOpts::default()).unwrap();
    std::fs::remove_file(c.join("top")).unwrap();
    let mut diff = Vec::new();
    d.diff("child", Some("dst"), &[], &[], &mut diff).unwrap();
    let mut ar = tar::Archive::new(&diff[..]);
    let entries: Vec<(String, u32, u64)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                h.mode().unwrap(),
                h.uid().unwrap(),
            )
        })
        .collect();
    assert_eq!(entries, vec![(".wh.top".to_owned(), 0, 0)]);
    // Applying that diff on top of a copy removes the file (whiteouts are applied).
    d.create("replay", Some("dst"), &CreateOpts::default())
        .unwrap();
    common::apply(d.as_ref(), "replay", Some("dst"), &diff);
    let r = d.get("replay", &MountOpts::default()).unwrap();
    assert!(!r.join("top").exists());
    assert!(r.join("a/b/file").exists());
}

#[test]
fn diff_with_id_maps() {
    if !require(is_root(), "chown needs root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = vfs(tmp.path());
    let uid_map = vec![IdMap::new(0, 100000, 1000)];
    let gid_map = vec![IdMap::new(0, 200000, 1000)];
    d.create("m", None, &CreateOpts::default()).unwrap();
    let m = d.get("m", &MountOpts::default()).unwrap();
    std::fs::write(m.join("mapped"), b"m").unwrap();
    lchown(&m.join("mapped"), 100005, 200006);
    std::fs::write(m.join("unmapped"), b"u").unwrap();
    lchown(&m.join("unmapped"), 5, 6);
    std::fs::write(m.join(".wh.kept"), b"").unwrap();
    lchown(&m.join(".wh.kept"), 5, 6);
    // An unmappable directory is skipped, but the walk still goes into it.
    std::fs::create_dir(m.join("udir")).unwrap();
    std::fs::write(m.join("udir/child"), b"c").unwrap();
    lchown(&m.join("udir/child"), 100001, 200001);
    lchown(&m.join("udir"), 5, 6);
    let mut out = Vec::new();
    d.diff("m", None, &uid_map, &gid_map, &mut out).unwrap();
    let mut ar = tar::Archive::new(&out[..]);
    let got: Vec<(String, u64, u64)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                h.uid().unwrap(),
                h.gid().unwrap(),
            )
        })
        .collect();
    // The unmappable entry is skipped; `.wh.` entries keep their host IDs.
    assert_eq!(
        got,
        vec![
            (".wh.kept".to_owned(), 5, 6),
            ("mapped".to_owned(), 5, 6),
            ("udir/child".to_owned(), 1, 1)
        ]
    );
}

#[test]
fn update_layer_id_map_rechowns() {
    if !require(is_root(), "chown needs root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = vfs(tmp.path());
    d.create("l", None, &CreateOpts::default()).unwrap();
    let l = d.get("l", &MountOpts::default()).unwrap();
    std::fs::create_dir(l.join("dir")).unwrap();
    std::fs::write(l.join("dir/file"), b"f").unwrap();
    lchown(&l.join("dir/file"), 1000, 1000);
    std::fs::write(l.join("suid"), b"s").unwrap();
    lchown(&l.join("suid"), 7, 7);
    chmod(&l.join("suid"), 0o4755);
    std::fs::hard_link(l.join("dir/file"), l.join("hl")).unwrap();
    std::os::unix::fs::symlink("dir/file", l.join("sym")).unwrap();
    let new_uid = vec![IdMap::new(0, 100000, 65536)];
    let new_gid = vec![IdMap::new(0, 300000, 65536)];
    d.update_layer_id_map("l", &[], &[], &new_uid, &new_gid)
        .unwrap();
    let own = |p: &str| {
        let md = std::fs::symlink_metadata(l.join(p)).unwrap();
        (md.uid(), md.gid())
    };
    // The walk skips the root dir, which then belongs to container root under the new
    // maps (1.47+; 1.43 left it as it was).
    assert_eq!(own(""), (100000, 300000), "the root dir");
    assert_eq!(own("dir"), (100000, 300000));
    assert_eq!(own("dir/file"), (101000, 301000));
    assert_eq!(own("hl"), (101000, 301000));
    assert_eq!(own("sym"), (100000, 300000));
    assert_eq!(own("suid"), (100007, 300007));
    assert_eq!(
        std::fs::metadata(l.join("suid")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::metadata(l.join("hl")).unwrap().ino(),
        std::fs::metadata(l.join("dir/file")).unwrap().ino()
    );

    // Back again: old maps → container IDs → identity.
    d.update_layer_id_map("l", &new_uid, &new_gid, &[], &[])
        .unwrap();
    assert_eq!(own("dir/file"), (1000, 1000));
    assert_eq!(own("dir"), (0, 0));
    assert_eq!(own(""), (0, 0));

    // An on-disk owner the old maps cannot map (and not 0:0) is an error.
    lchown(&l.join("dir/file"), 5, 5);
    let err = d
        .update_layer_id_map("l", &new_uid, &new_gid, &[], &[])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "mapping host ID pair idtools.IDPair{UID:5, GID:5} for \"dir/file\" to container: host ID 5 cannot be mapped to a container ID"
    );
}

#[test]
fn mapped_child_matches_go() {
    let Some(bin) = common::go_cs() else {
        return;
    };
    if !require(is_root(), "Go's CLI store needs root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let go = GoStore {
        graph: tmp.path().join("g"),
        run: tmp.path().join("r"),
        bin,
        _tmp: tmp,
    };
    let base = go.cs_str(&["create-layer"]);
    let bm = PathBuf::from(go.cs_str(&["mount", &base]));
    std::fs::create_dir(bm.join("d")).unwrap();
    std::fs::write(bm.join("d/f"), b"x\n").unwrap();
    lchown(&bm.join("d/f"), 1000, 1000);
    chmod(&bm.join("d/f"), 0o4755);
    std::fs::hard_link(bm.join("d/f"), bm.join("hl")).unwrap();
    std::os::unix::fs::symlink("d/f", bm.join("sym")).unwrap();
    lchown(&bm.join("sym"), 3, 4);
    go.cs(&["unmount", &base]);
    let (uid_arg, gid_arg) = ("0:100000:65536", "0:200000:65536");
    let child = go.cs_str(&[
        "create-layer",
        "--uidmap",
        uid_arg,
        "--gidmap",
        gid_arg,
        &base,
    ]);
    let go_changes = go.cs(&["changes", &child]);
    let go_diff = go.cs(&["diff", "-u", &child]);

    let uid = [IdMap::new(0, 100000, 65536)];
    let gid = [IdMap::new(0, 200000, 65536)];
    let d = vfs_with_home(&go.graph);
    let opts = CreateOpts {
        uid_map: uid.to_vec(),
        gid_map: gid.to_vec(),
        ..Default::default()
    };
    d.create("ours", Some(&base), &opts).unwrap();
    d.update_layer_id_map("ours", &[], &[], &uid, &gid).unwrap();
    let theirs = go.graph.join("vfs/dir").join(&child);
    let ours = go.graph.join("vfs/dir/ours");
    assert_eq!(common::tree(&ours), common::tree(&theirs));
    // The chown walk re-links the second name of a hard link, which stamps its
    // directory with the current time; Go's walk is parallel, so which of `d/` and the
    // root gets stamped varies. Directory mtimes are therefore not compared.
    let same = |p: &Path| {
        let (mut a, b) = (node(&ours.join(p)), node(&theirs.join(p)));
        if b.mode & 0o170000 == 0o040000 {
            a.mtime = b.mtime;
        }
        assert_eq!(a, b, "{}", p.display());
    };
    // The root dir: 1.47+ gives it to container root under the new maps; Go 1.43 (this
    // binary) left the parent's owner. The rest is as 1.43 made it (unchanged since).
    let (root, go_root) = (node(&ours), node(&theirs));
    assert_eq!((root.uid, root.gid), (100000, 200000));
    assert_eq!((go_root.uid, go_root.gid), (0, 0));
    assert_eq!(root.mode, go_root.mode);
    for p in common::tree(&theirs) {
        same(&p);
    }

    // Compared with each side's own maps nothing changed, as Go says.
    let maps = storage_drivers::LayerMaps {
        uid: &uid,
        gid: &gid,
    };
    let parent = Some((base.as_str(), storage_drivers::LayerMaps::default()));
    assert_eq!(go_changes, b"");
    assert_eq!(d.changes_mapped("ours", maps, parent).unwrap(), vec![]);
    assert_eq!(d.diff_size_mapped("ours", maps, parent).unwrap(), 0);
    let mut diff = Vec::new();
    d.diff_mapped("ours", maps, parent, &mut diff).unwrap();
    assert_eq!(diff, go_diff);
    assert_eq!(diff, vec![0u8; 1024]);
}
