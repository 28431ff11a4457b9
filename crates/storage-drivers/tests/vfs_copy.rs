//! vfs create/copy fidelity, options and layer bookkeeping.

mod common;

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;
use storage_drivers::{CreateOpts, DriverOptions, MountOpts, open_driver};
use storage_types::{ErrorKind, IdMap};

#[test]
fn open_errors_like_go() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = |options: Vec<&str>| DriverOptions {
        home: tmp.path().join("g/vfs"),
        run_home: tmp.path().join("r/vfs"),
        graph_root: tmp.path().join("g"),
        run_root: tmp.path().join("r"),
        image_store: None,
        options: options.into_iter().map(String::from).collect(),
    };
    let err = |name: &str, o: Vec<&str>| open_driver(name, &opts(o)).err().expect("must fail");
    let e = err("bogus", vec![]);
    assert_eq!(e.kind(), ErrorKind::NotSupported);
    assert_eq!(e.to_string(), "driver not supported");
    let e = err("zfs", vec![]);
    assert_eq!(e.kind(), ErrorKind::NotSupported);
    assert!(e.to_string().contains("vfs"), "{e}");
    assert_eq!(
        err("vfs", vec!["vfs.bogus=1"]).to_string(),
        "vfs driver does not support vfs.bogus options"
    );
    assert_eq!(
        err("vfs", vec!["VFS.Bogus=1"]).to_string(),
        "vfs driver does not support vfs.bogus options"
    );
    assert_eq!(
        err("vfs", vec!["vfs.mountopt=nodev"]).to_string(),
        "vfs driver does not support mount options"
    );
    assert_eq!(
        err("vfs", vec!["novalue"]).to_string(),
        "unable to parse key/value option: novalue"
    );
    assert_eq!(
        err("vfs", vec!["vfs.ignore_chown_errors=maybe"]).to_string(),
        "strconv.ParseBool: parsing \"maybe\": invalid syntax"
    );
    let d = open_driver(
        "vfs",
        &opts(vec![
            "vfs.ignore_chown_errors=true",
            ".imagestore=/nonexistent",
        ]),
    )
    .unwrap();
    assert_eq!(d.name(), "vfs");
    assert!(d.status().is_empty());
    let home_dir = tmp.path().join("g/vfs/dir");
    assert_eq!(std::fs::metadata(&home_dir).unwrap().mode() & 0o7777, 0o700);
}

#[test]
fn create_get_remove_list() {
    let tmp = tempfile::tempdir().unwrap();
    let d = vfs(tmp.path());
    d.create("a", None, &CreateOpts::default()).unwrap();
    let p = d.get("a", &MountOpts::default()).unwrap();
    assert_eq!(p, tmp.path().join("graph/vfs/dir/a"));
    assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o555);
    assert!(d.exists("a"));
    assert!(!d.exists("b"));
    let ro = MountOpts {
        options: vec!["ro".into()],
        ..Default::default()
    };
    assert_eq!(d.get("a", &ro).unwrap(), p);
    let bad = MountOpts {
        options: vec!["nodev".into()],
        ..Default::default()
    };
    assert_eq!(
        d.get("a", &bad).unwrap_err().to_string(),
        "vfs driver does not support mount options"
    );
    let two = MountOpts {
        options: vec!["ro".into(), "ro".into()],
        ..Default::default()
    };
    assert!(d.get("a", &two).is_err());
    let missing = d.get("nope", &MountOpts::default()).unwrap_err();
    assert!(
        missing.to_string().contains("no such file or directory"),
        "{missing}"
    );
    d.put("a").unwrap();
    let mut so = CreateOpts::default();
    so.storage_opt.insert("size".into(), "1G".into());
    assert_eq!(
        d.create("c", None, &so).unwrap_err().to_string(),
        "--storage-opt is not supported for vfs"
    );
    assert!(!tmp.path().join("graph/vfs/dir/c").exists());
    d.create_read_write("b", Some("a"), &CreateOpts::default())
        .unwrap();
    std::fs::write(tmp.path().join("graph/vfs/dir/junkfile"), b"").unwrap();
    assert_eq!(
        d.list_layers().unwrap(),
        vec!["a".to_owned(), "b".to_owned()]
    );
    assert_eq!(d.metadata("a").unwrap(), BTreeMap::new());
    d.remove("a").unwrap();
    d.remove("a").unwrap();
    assert!(!d.exists("a"));
    assert!(
        d.create("x", Some("nonexistent"), &CreateOpts::default())
            .is_err()
    );
    assert!(
        !tmp.path().join("graph/vfs/dir/x").exists(),
        "failed create must clean up"
    );
    d.cleanup().unwrap();
}

#[test]
fn mapped_root_owner() {
    if !require(is_root(), "chown to a mapped root needs root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = vfs(tmp.path());
    let opts = CreateOpts {
        uid_map: vec![IdMap::new(0, 100000, 65536)],
        gid_map: vec![IdMap::new(0, 200000, 65536)],
        ..Default::default()
    };
    d.create("m", None, &opts).unwrap();
    let md = std::fs::metadata(tmp.path().join("graph/vfs/dir/m")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (100000, 200000, 0o555)
    );
}

#[test]
fn additional_image_store_lookup() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = tmp.path().join("ro");
    std::fs::create_dir_all(extra.join("vfs/dir/ext")).unwrap();
    std::fs::write(extra.join("vfs/dir/ext/f"), b"from ro store").unwrap();
    let d = vfs_with(
        tmp.path(),
        vec![format!("vfs.imagestore={}", extra.display())],
    );
    assert!(d.exists("ext"));
    assert_eq!(
        d.get("ext", &MountOpts::default()).unwrap(),
        extra.join("vfs/dir/ext")
    );
    d.create("child", Some("ext"), &CreateOpts::default())
        .unwrap();
    let p = d.get("child", &MountOpts::default()).unwrap();
    assert_eq!(std::fs::read(p.join("f")).unwrap(), b"from ro store");
    assert_eq!(d.list_layers().unwrap(), vec!["child".to_owned()]);
}

#[test]
fn copy_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let d = vfs(tmp.path());
    d.create("base", None, &CreateOpts::default()).unwrap();
    let b = d.get("base", &MountOpts::default()).unwrap();
    let root = is_root();
    chmod(&b, 0o751);
    std::fs::create_dir_all(b.join("etc/deep/er")).unwrap();
    std::fs::write(b.join("etc/passwd"), b"root:x:0:0\n").unwrap();
    chmod(&b.join("etc/passwd"), 0o640);
    std::fs::write(b.join("suid"), b"#!/bin/sh\n").unwrap();
    chmod(&b.join("suid"), 0o4755);
    std::fs::write(b.join("empty"), b"").unwrap();
    std::fs::hard_link(b.join("etc/passwd"), b.join("hl")).unwrap();
    std::fs::hard_link(b.join("etc/passwd"), b.join("etc/deep/hl2")).unwrap();
    std::os::unix::fs::symlink("etc/passwd", b.join("sym")).unwrap();
    std::os::unix::fs::symlink("/dangling/target", b.join("etc/dangling")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        b.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o620),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        b.join("sock"),
        rustix::fs::FileType::Socket,
        rustix::fs::Mode::from_raw_mode(0o755),
        0,
    )
    .unwrap();
    set_xattr(&b.join("etc/passwd"), "user.a", b"value-a");
    set_xattr(&b.join("etc"), "user.b", b"dir xattr");
    if root {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            b.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            b.join("blk"),
            rustix::fs::FileType::BlockDevice,
            rustix::fs::Mode::from_raw_mode(0o660),
            rustix::fs::makedev(7, 0),
        )
        .unwrap();
        lchown(&b.join("etc/passwd"), 1000, 1001);
        lchown(&b.join("sym"), 12, 13);
        lchown(&b.join("etc/deep"), 5, 6);
        set_xattr(&b.join("etc/deep"), "trusted.overlay.opaque", b"y");
        // security.capability: a v2 cap_net_bind_service blob.
        let mut cap = vec![0u8; 20];
        cap[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
        cap[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
        set_xattr(&b.join("suid"), "security.capability", &cap);
    }
    // Distinct times everywhere; directories last so their own times stick.
    for (i, p) in common::tree(&b).iter().rev().enumerate() {
        set_mtime(&b.join(p), 1_500_000_000 + i as i64 * 1000, 123_456_789);
    }
    set_mtime(&b, 1_400_000_000, 5);

    d.create("child", Some("base"), &CreateOpts::default())
        .unwrap();
    let c = d.get("child", &MountOpts::default()).unwrap();
    let expected: Vec<_> = common::tree(&b)
        .into_iter()
        .filter(|p| root || !p.ends_with("null"))
        .collect();
    assert_eq!(common::tree(&c), expected);
    assert_eq!(node(&c), node(&b), "root dir metadata");
    for p in &expected {
        assert_eq!(node(&c.join(p)), node(&b.join(p)), "{}", p.display());
    }
    let ino = |p: &str| std::fs::symlink_metadata(c.join(p)).unwrap().ino();
    assert_eq!(ino("hl"), ino("etc/passwd"));
    assert_eq!(ino("etc/deep/hl2"), ino("etc/passwd"));
    assert_ne!(
        ino("etc/passwd"),
        std::fs::metadata(b.join("etc/passwd")).unwrap().ino()
    );
    assert_eq!(
        std::fs::symlink_metadata(c.join("etc/passwd"))
            .unwrap()
            .nlink(),
        3
    );
    assert!(
        std::fs::symlink_metadata(c.join("sock"))
            .unwrap()
            .file_type()
            .is_socket_like()
    );
    if root {
        assert!(get_xattr(&c.join("suid"), "security.capability").is_some());
        assert_eq!(
            get_xattr(&c.join("etc/deep"), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
    }
}

trait SocketLike {
    fn is_socket_like(&self) -> bool;
}

impl SocketLike for std::fs::FileType {
    fn is_socket_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_socket(self)
    }
}

#[test]
fn copy_keeps_holes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = vfs(tmp.path());
    d.create("base", None, &CreateOpts::default()).unwrap();
    let b = d.get("base", &MountOpts::default()).unwrap();
    let sparse = b.join("sparse");
    {
        let mut f = std::fs::File::create(&sparse).unwrap();
        f.write_all(b"start").unwrap();
        f.seek(SeekFrom::Start(16 << 20)).unwrap();
        f.write_all(b"middle").unwrap();
        f.set_len(32 << 20).unwrap();
    }
    let src = std::fs::metadata(&sparse).unwrap();
    if src.blocks() * 512 >= src.len() {
        require(false, "the test file system does not support sparse files");
        return;
    }
    d.create("child", Some("base"), &CreateOpts::default())
        .unwrap();
    let c = d.get("child", &MountOpts::default()).unwrap();
    let dst = std::fs::metadata(c.join("sparse")).unwrap();
    assert_eq!(dst.len(), 32 << 20);
    assert!(
        dst.blocks() <= src.blocks() + 16,
        "holes lost: {} blocks vs {}",
        dst.blocks(),
        src.blocks()
    );
    let data = std::fs::read(c.join("sparse")).unwrap();
    assert_eq!(&data[..5], b"start");
    assert_eq!(&data[16 << 20..(16 << 20) + 6], b"middle");
    assert!(data[5..16 << 20].iter().all(|&b| b == 0));
    assert_eq!(data, std::fs::read(&sparse).unwrap());
    // A big dense file with odd size copies exactly, too.
    let dense: Vec<u8> = (0..3_000_017u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(b.join("dense"), &dense).unwrap();
    d.create("child2", Some("base"), &CreateOpts::default())
        .unwrap();
    let c2 = d.get("child2", &MountOpts::default()).unwrap();
    assert_eq!(std::fs::read(c2.join("dense")).unwrap(), dense);
    assert_eq!(
        std::fs::metadata(c2.join("dense"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
}

#[test]
fn chain_of_300_layers() {
    // Depth is what this tests, not volume: every layer rewrites `top` and every tenth adds a
    // file of its own, so each copy stays small (the whole chain copies ~10k entries, not the
    // ~45k a file per layer would need — that made this one test 40 s under TCG in the VM).
    let tmp = tempfile::tempdir().unwrap();
    let d = vfs(tmp.path());
    let start = std::time::Instant::now();
    let mut parent: Option<String> = None;
    for i in 0..300u32 {
        let id = format!("layer{i:03}");
        d.create(&id, parent.as_deref(), &CreateOpts::default())
            .unwrap();
        let p = d.get(&id, &MountOpts::default()).unwrap();
        if let Some(prev) = i.checked_sub(1) {
            assert_eq!(
                std::fs::read_to_string(p.join("top")).unwrap(),
                format!("content {prev}"),
                "layer {i} did not inherit its parent's file"
            );
        }
        std::fs::write(p.join("top"), format!("content {i}")).unwrap();
        if i % 10 == 0 {
            let dir = p.join(format!("d{}", i % 7));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("f{i}")), format!("content {i}")).unwrap();
        }
        d.put(&id).unwrap();
        parent = Some(id);
    }
    eprintln!("300-layer chain in {:?}", start.elapsed());
    let top = d.get("layer299", &MountOpts::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(top.join("top")).unwrap(),
        "content 299"
    );
    for i in (0..300).step_by(10) {
        let f = top.join(format!("d{}/f{i}", i % 7));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), format!("content {i}"));
    }
    // 7 directories, 30 files in them, and `top`.
    assert_eq!(common::tree(&top).len(), 38);
    assert_eq!(d.list_layers().unwrap().len(), 300);
}

#[test]
fn split_image_store() {
    let tmp = tempfile::tempdir().unwrap();
    let is = tmp.path().join("imagestore");
    let d = open_driver(
        "vfs",
        &DriverOptions {
            image_store: Some(is.clone()),
            ..common::options_for(tmp.path(), "vfs", vec![])
        },
    )
    .unwrap();
    d.create("ro", None, &CreateOpts::default()).unwrap();
    assert!(is.join("vfs/dir/ro").is_dir());
    assert!(!tmp.path().join("graph/vfs/dir/ro").exists());
    std::fs::write(is.join("vfs/dir/ro/f"), b"image content").unwrap();
    d.create_read_write("rw", Some("ro"), &CreateOpts::default())
        .unwrap();
    let rw = d.get("rw", &MountOpts::default()).unwrap();
    assert_eq!(rw, tmp.path().join("graph/vfs/dir/rw"));
    assert_eq!(std::fs::read(rw.join("f")).unwrap(), b"image content");
    assert_eq!(
        d.get("ro", &MountOpts::default()).unwrap(),
        is.join("vfs/dir/ro")
    );
    assert!(d.exists("ro"));
    d.remove("ro").unwrap();
    assert!(!is.join("vfs/dir/ro").exists());
    assert!(!d.exists("ro"));
}

#[test]
fn deep_tree_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let d = vfs(tmp.path());
    d.create("base", None, &CreateOpts::default()).unwrap();
    let b = d.get("base", &MountOpts::default()).unwrap();
    // 700 levels: the copy holds two directory fds per level.
    let mut deep = b.clone();
    for _ in 0..700 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("leaf"), b"bottom").unwrap();
    d.create("child", Some("base"), &CreateOpts::default())
        .unwrap();
    let c = d.get("child", &MountOpts::default()).unwrap();
    let leaf = c.join(deep.strip_prefix(&b).unwrap()).join("leaf");
    assert_eq!(std::fs::read(leaf).unwrap(), b"bottom");
    assert_eq!(d.changes("child", Some("base")).unwrap(), vec![]);
    let mut tar = Vec::new();
    d.diff("child", None, &[], &[], &mut tar).unwrap();
    let mut ar = tar::Archive::new(&tar[..]);
    let names: Vec<Vec<u8>> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect();
    assert_eq!(names.len(), 701);
    assert_eq!(names.last().map(|n| n.len()), Some(700 * 2 + 4));
}

#[test]
fn setgid_dirs_do_not_leak_their_group() {
    if !require(is_root(), "chown needs root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = vfs(tmp.path());
    d.create("base", None, &CreateOpts::default()).unwrap();
    let b = d.get("base", &MountOpts::default()).unwrap();
    std::fs::create_dir(b.join("sg")).unwrap();
    std::fs::write(b.join("top"), b"t").unwrap();
    std::fs::write(b.join("sg/inner"), b"i").unwrap();
    std::os::unix::fs::symlink("top", b.join("link")).unwrap();
    for p in ["top", "sg/inner", "link"] {
        lchown(&b.join(p), 0, 0);
    }
    lchown(&b.join("sg"), 0, 55);
    chmod(&b.join("sg"), 0o2755);
    lchown(&b, 0, 56);
    chmod(&b, 0o2755);
    d.create("child", Some("base"), &CreateOpts::default())
        .unwrap();
    let c = d.get("child", &MountOpts::default()).unwrap();
    for p in ["", "sg", "top", "sg/inner", "link"] {
        assert_eq!(node(&c.join(p)), node(&b.join(p)), "{p}");
    }
}

/// Layer IDs are path components: `..`, `.`, `""` and IDs with `/` never reach the
/// file system. (Before the guard, `remove("..")` removed `<home>/dir` with every layer.)
#[test]
fn hostile_layer_ids_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = vfs(tmp.path());
    d.create("base", None, &CreateOpts::default()).unwrap();
    let base = d.get("base", &MountOpts::default()).unwrap();
    std::fs::write(base.join("keep"), b"k").unwrap();
    let outside = tmp.path().join("graph/victim");
    std::fs::create_dir_all(&outside).unwrap();
    for bad in [
        "..",
        ".",
        "",
        "../victim",
        "../../graph/victim",
        "a/b",
        "/abs",
    ] {
        let err = d.remove(bad).expect_err(bad);
        assert_eq!(err.kind(), storage_types::ErrorKind::InvalidInput, "{bad}");
        assert!(err.to_string().contains("invalid layer ID"), "{bad}: {err}");
        assert!(d.get(bad, &MountOpts::default()).is_err(), "{bad}");
        assert!(!d.exists(bad), "{bad}");
        assert!(
            d.create(bad, None, &CreateOpts::default()).is_err(),
            "{bad}"
        );
        assert!(
            d.create("child", Some(bad), &CreateOpts::default())
                .is_err(),
            "{bad}"
        );
        assert!(d.changes("base", Some(bad)).is_err(), "{bad}");
        assert!(d.diff_getter(bad).is_err(), "{bad}");
    }
    assert!(!d.exists("child"));
    assert!(outside.is_dir());
    assert_eq!(std::fs::read(base.join("keep")).unwrap(), b"k");
    assert_eq!(d.list_layers().unwrap(), vec!["base".to_owned()]);
}
