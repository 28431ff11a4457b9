//! Layer commands shared with Debian's Go `containers-storage` (1.43) on every driver (vfs,
//! overlay, btrfs): byte-exact diffs, `changes`/`diffsize`/`layer --json` parity, mount counts
//! shared between the two tools, `copy` into and between layers, and the driver's on-disk
//! layout of each layer compared with the one Go makes. One test function per driver, plus
//! `fuse_overlayfs` (overlay through `overlay.mount_program`, for both tools).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use storage_testsupport::per_driver;

use storage_tests::fs::DriverStore;
use storage_tests::peers::{first_line, mounts_under};
use storage_tests::tars::TarBuilder;
use storage_tests::{Cs, go_cs, ok, require};

per_driver!(diffs_changes_and_mount_counts_shared_with_go: vfs, overlay, btrfs, fuse_overlayfs);
per_driver!(copy_into_and_between_layers: vfs, overlay, btrfs, fuse_overlayfs);
per_driver!(copy_keeps_links_and_xattrs_like_go: vfs, overlay);
per_driver!(layer_layout_matches_go: vfs, overlay, btrfs, fuse_overlayfs);

fn go_ready() -> bool {
    require(
        go_cs().is_some(),
        "Debian's Go containers-storage (/usr/bin/containers-storage)",
    )
}

/// Runs a read-only command with both tools; the outputs must be equal. Returns ours.
#[track_caller]
fn both(cs: &Cs, args: &[&str]) -> String {
    let ours = ok(&cs.ours(args));
    let go = ok(&cs.go(args));
    assert_eq!(
        ours,
        go,
        "{}: `{}` differs from Go",
        cs.driver,
        args.join(" ")
    );
    ours
}

/// `changes` by both tools as sorted lines (Go's naive walk order is random).
#[track_caller]
fn changes(cs: &Cs, layer: &str) -> Vec<String> {
    let sorted = |s: String| {
        let mut v: Vec<String> = s.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    let ours = sorted(ok(&cs.ours(&["changes", layer])));
    let go = sorted(ok(&cs.go(&["changes", layer])));
    assert_eq!(
        ours, go,
        "{}: changes of {layer} differ from Go's",
        cs.driver
    );
    ours
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write input file");
    p
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn mount_count(cs: &Cs, id: &str) -> i64 {
    let p = cs
        .run
        .join(format!("{}-layers/mountpoints.json", cs.driver));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap_or_default())
        .unwrap_or(serde_json::Value::Null);
    v.as_array()
        .and_then(|a| a.iter().find(|m| m["id"] == id))
        .and_then(|m| m["count"].as_i64())
        .unwrap_or(0)
}

fn diffs_changes_and_mount_counts_shared_with_go(driver: &str) {
    if !go_ready() {
        return;
    }
    let Some(cs) = DriverStore::new(driver) else {
        return;
    };
    let tmp = cs.dir.path();
    let a_tar = TarBuilder::new()
        .file("f1", 0o644, b"one")
        .file("f2", 0o644, b"two")
        .dir("d/", 0o755)
        .file("d/f", 0o600, b"in d\n")
        .finish();
    let a = write(tmp, "a.tar", &a_tar);
    let la = first_line(&ok(&cs.ours(&["import-layer", "-f", &s(&a), "-n", "la"])));
    // Byte-exact diffs of our layer, by us and by Go.
    for who in ["ours", "go"] {
        let out = tmp.join(format!("{who}.tar"));
        let args = ["diff", "-f", &s(&out), "la"];
        ok(&if who == "ours" {
            cs.ours(&args)
        } else {
            cs.go(&args)
        });
        assert!(
            std::fs::read(&out).expect("diff output") == a_tar,
            "{driver}: {who} diff of our layer is not the applied tar"
        );
    }
    assert_eq!(both(&cs, &["diffsize", "la"]), "11\n");
    // A child created by Go, filled by us.
    let lb = first_line(&ok(&cs.go(&["create-layer", "-n", "lb", "la"])));
    let b_tar = TarBuilder::new()
        .file("f3", 0o644, b"three")
        .file(".wh.f2", 0o644, b"")
        .finish();
    let b = write(tmp, "b.tar", &b_tar);
    ok(&cs.ours_stdin(&["applydiff", "lb"], &b));
    assert_eq!(changes(&cs, "lb"), ["Add \"/f3\"", "Delete \"/f2\""]);
    both(&cs, &["layer", "--json", &lb]);
    both(&cs, &["diffsize", "lb"]);
    same_layers(&cs, "applydiff");
    let go_diff = cs.go(&["diff", "-u", "lb"]);
    ok(&go_diff);
    assert!(
        go_diff.stdout == b_tar,
        "{driver}: Go's diff of our applydiff is not the applied tar"
    );

    // Mount counts are shared: we mount, Go mounts the same path, both unmount.
    // (Go 1.43 mounts layers by ID only.)
    let mp = ok(&cs.ours(&["mount", "lb"]));
    assert_eq!(ok(&cs.go(&["mount", &lb])), mp, "{driver}: mount points");
    let mp = PathBuf::from(mp.trim());
    assert_eq!(mount_count(&cs, &lb), 2);
    assert_eq!(ok(&cs.ours(&["mounted", "lb"])), "lb mounted\n");
    let mut seen: Vec<String> = std::fs::read_dir(&mp)
        .expect("mounted layer")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ["d", "f1", "f3"], "{driver}: merged view");
    assert_eq!(ok(&cs.go(&["unmount", &lb])), "");
    assert_eq!(mount_count(&cs, &lb), 1);
    assert!(
        std::fs::read_dir(&mp).is_ok_and(|mut d| d.next().is_some()),
        "{driver}: still mounted for our reference"
    );
    assert_eq!(
        ok(&cs.ours(&["unmount", "lb"])),
        "lb mountpoint unmounted\n"
    );
    assert_eq!(mount_count(&cs, &lb), 0);
    assert_eq!(both(&cs, &["mounted", &lb]), "");
    assert!(
        mounts_under(&mp).is_empty(),
        "{driver}: {} still mounted",
        mp.display()
    );
    // Go mounts, we force-unmount everything.
    let gmp = PathBuf::from(ok(&cs.go(&["mount", &la])).trim());
    assert_eq!(mount_count(&cs, &la), 1);
    let out = cs.ours(&["shutdown", "-f"]);
    assert_eq!(out.status.code(), Some(1), "shutdown -f reports the mount");
    assert_eq!(mount_count(&cs, &la), 0);
    assert!(
        mounts_under(&gmp).is_empty(),
        "{driver}: Go's mount left after our shutdown -f"
    );
    same_layers(&cs, "shutdown -f");
}

#[track_caller]
fn same_layers(cs: &Cs, step: &str) {
    let parse = |s: String| -> serde_json::Value {
        match serde_json::from_str(&s) {
            Ok(serde_json::Value::Null) => serde_json::Value::Array(Vec::new()),
            Ok(v) => v,
            Err(e) => panic!("{step}: layers --json is not JSON ({e}): {s}"),
        }
    };
    assert_eq!(
        parse(ok(&cs.ours(&["layers", "--json"]))),
        parse(ok(&cs.go(&["layers", "--json"]))),
        "{} after {step}: layers listed differently by Go",
        cs.driver
    );
}

fn copy_into_and_between_layers(driver: &str) {
    let Some(cs) = DriverStore::new(driver) else {
        return;
    };
    ok(&cs.ours(&["create-layer", "-i", "l1"]));
    ok(&cs.ours(&[
        "create-layer",
        "-i",
        "l2",
        "--uidmap",
        "0:100000:65536",
        "--gidmap",
        "0:200000:65536",
    ]));
    let src = cs.dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("f"), "a").expect("write");
    std::fs::write(src.join("sub/g"), "b").expect("write");
    std::os::unix::fs::chown(src.join("f"), Some(5), Some(6)).expect("chown");
    assert_eq!(ok(&cs.ours(&["copy", &s(&src), "l1:/dst"])), "");
    let l2 = cs.ours(&["copy", "l1:/dst/f", "l2:/x/"]);
    ok(&l2);
    ok(&cs.ours(&["copy", "-o", "7:8", "l1:/dst/f", "l2:/y"]));
    assert_eq!(
        ok(&cs.ours(&["mounted", "l1", "l2"])),
        "",
        "nothing stays mounted"
    );

    // Look through a mount: the layer's content wherever the driver keeps it.
    let m1 = PathBuf::from(ok(&cs.ours(&["mount", "l1"])).trim());
    assert_eq!(
        std::fs::read_to_string(m1.join("dst/sub/g")).expect("dst/sub/g"),
        "b"
    );
    let md = std::fs::metadata(m1.join("dst/f")).expect("dst/f");
    assert_eq!((md.uid(), md.gid()), (5, 6), "{driver}: owner kept");
    ok(&cs.ours(&["unmount", "l1"]));
    // A driver that shifts IDs at mount time (overlay with idmapped lowers) keeps the layer
    // map-less, as Go does; then nothing is mapped on disk.
    let mapped = |c: &Cs, go: bool, id: &str| -> bool {
        let args = ["layer", "--json", id];
        let out = ok(&if go { c.go(&args) } else { c.ours(&args) });
        let v: serde_json::Value = serde_json::from_str(&out).expect("layer --json");
        v[0].get("uidmap").is_some()
    };
    ok(&cs.go(&[
        "create-layer",
        "-i",
        "g2",
        "--uidmap",
        "0:100000:65536",
        "--gidmap",
        "0:200000:65536",
    ]));
    let l2_mapped = mapped(&cs, false, "l2");
    assert_eq!(
        l2_mapped,
        mapped(&cs, true, "g2"),
        "{driver}: we and Go disagree on recording the maps"
    );
    let (u, g) = if l2_mapped { (100000, 200000) } else { (0, 0) };
    let m2 = PathBuf::from(ok(&cs.ours(&["mount", "l2"])).trim());
    let md = std::fs::metadata(m2.join("x/f")).expect("x/f");
    assert_eq!(
        (md.uid(), md.gid()),
        (u + 5, g + 6),
        "{driver}: owners through both maps"
    );
    let md = std::fs::metadata(m2.join("y")).expect("y");
    assert_eq!((md.uid(), md.gid()), (u + 7, g + 8), "{driver}: -o 7:8");
    ok(&cs.ours(&["unmount", "l2"]));
    // And the diff of l1 carries the copied files (container IDs).
    let out = cs.ours(&["diff", "-u", "l1"]);
    ok(&out);
    let mut a = tar::Archive::new(&out.stdout[..]);
    let mut owners = Vec::new();
    for e in a.entries().expect("diff is a tar") {
        let e = e.expect("entry");
        let p = e.path().expect("path").display().to_string();
        if p.ends_with("dst/f") {
            owners.push((
                e.header().uid().expect("uid"),
                e.header().gid().expect("gid"),
            ));
        }
    }
    assert_eq!(owners, [(5, 6)], "{driver}: diff of the copied file");
}

/// Every entry below `root` (sorted, relative): kind and mode, size of files, the first
/// name sharing its inode, and its extended attributes but overlay's own `user.overlay.*`.
fn copied_tree(root: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, inodes: &mut Vec<(u64, String)>, out: &mut Vec<String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        for p in names {
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(base).expect("below").display().to_string();
            let link = if m.is_dir() || m.nlink() < 2 {
                String::new()
            } else if let Some((_, first)) = inodes.iter().find(|(i, _)| *i == m.ino()) {
                format!(" = {first}")
            } else {
                inodes.push((m.ino(), rel.clone()));
                String::new()
            };
            let mut names = vec![0u8; 4096];
            let n = rustix::fs::llistxattr(&p, &mut names).unwrap_or(0);
            let mut xattrs: Vec<String> = names[..n]
                .split(|&b| b == 0)
                .filter(|k| k.starts_with(b"user.") && !k.starts_with(b"user.overlay."))
                .map(|k| {
                    let k = std::str::from_utf8(k).expect("utf-8 name");
                    let v = xattr_of(&p, k).expect("lgetxattr");
                    format!("{k}={}", String::from_utf8_lossy(&v))
                })
                .collect();
            xattrs.sort();
            let size = if m.is_file() { m.len() } else { 0 };
            out.push(format!(
                "{rel} {:o} {size}{link} [{}]",
                m.mode(),
                xattrs.join(",")
            ));
            if m.is_dir() {
                walk(base, &p, inodes, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut Vec::new(), &mut out);
    out
}

/// `copy` of a directory keeps what Go's tar round trip keeps: hard links, FIFOs, device
/// nodes and the extended attributes of a layer tar (Go 1.60's set, without `user.overlay.*`,
/// which 1.43 still copies), with modes and owners; both tools' copies look the same.
fn copy_keeps_links_and_xattrs_like_go(driver: &str) {
    let Some(cs) = DriverStore::new(driver) else {
        return;
    };
    if !go_ready() || !require(storage_testsupport::is_root(), "root (mknod, chown)") {
        return;
    }
    let src = cs.dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).expect("mkdir");
    std::fs::write(src.join("d/a"), "linked").expect("write");
    std::fs::hard_link(src.join("d/a"), src.join("b")).expect("link");
    std::fs::write(src.join("c"), "alone").expect("write");
    std::os::unix::fs::chown(src.join("c"), Some(5), Some(6)).expect("chown");
    let mode = rustix::fs::Mode::from_raw_mode(0o640);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("d/fifo"),
        rustix::fs::FileType::Fifo,
        mode,
        0,
    )
    .expect("mkfifo");
    let null = rustix::fs::makedev(1, 3);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("null"),
        rustix::fs::FileType::CharacterDevice,
        mode,
        null,
    )
    .expect("mknod");
    let set = |p: &str, k: &str, v: &str| {
        rustix::fs::lsetxattr(
            src.join(p),
            k,
            v.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
    };
    if !require(
        set("d/a", "user.k", "v").is_ok(),
        "user xattrs in the temporary directory",
    ) {
        return;
    }
    set("d/a", "user.overlay.x", "o").expect("setxattr");
    set("d", "user.dir", "dv").expect("setxattr");
    ok(&cs.ours(&["create-layer", "-i", "ours"]));
    ok(&cs.go(&["create-layer", "-i", "go"]));
    assert_eq!(ok(&cs.ours(&["copy", &s(&src), "ours:/into"])), "");
    assert_eq!(ok(&cs.go(&["copy", &s(&src), "go:/into"])), "");
    let ours = PathBuf::from(ok(&cs.ours(&["mount", "ours"])).trim());
    let go = PathBuf::from(ok(&cs.ours(&["mount", "go"])).trim());
    let tree = copied_tree(&ours.join("into"));
    assert_eq!(
        tree,
        copied_tree(&go.join("into")),
        "{driver}: copies differ"
    );
    // What the copies share, so that the comparison cannot pass on two empty trees.
    assert!(
        tree.contains(&"b 100644 6 [user.k=v]".to_string()),
        "{tree:?}"
    );
    assert!(
        tree.contains(&"d/a 100644 6 = b [user.k=v]".to_string()),
        "{tree:?}"
    );
    assert!(
        tree.contains(&"d 40755 0 [user.dir=dv]".to_string()),
        "{tree:?}"
    );
    assert!(tree.contains(&"d/fifo 10640 0 []".to_string()), "{tree:?}");
    assert!(tree.contains(&"null 20640 0 []".to_string()), "{tree:?}");
    let md = std::fs::metadata(ours.join("into/c")).expect("c");
    assert_eq!((md.uid(), md.gid()), (5, 6), "{driver}: owner kept");
    // Go 1.43 copies overlay's own attributes; 1.60 (and we) leave them out.
    assert_eq!(
        xattr_of(&ours.join("into/d/a"), "user.overlay.x"),
        None,
        "{driver}: user.overlay.x copied"
    );
    ok(&cs.ours(&["unmount", "ours"]));
    ok(&cs.ours(&["unmount", "go"]));
}

/// `lgetxattr`: the value, `None` when absent.
fn xattr_of(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut v = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(p, name, &mut v).ok()?;
    v.truncate(n);
    Some(v)
}

/// Mode, kind and size (for files) of every entry under a layer's driver dir, named relative
/// to it; overlay's random short names (`link`, `lower`, `l/…`) are only compared by shape.
fn layer_tree(root: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p.strip_prefix(base).unwrap_or(&p).display().to_string();
            let kind = if m.is_dir() {
                "d"
            } else if m.file_type().is_symlink() {
                "l"
            } else {
                "f"
            };
            let size = if m.is_file() { m.len() } else { 0 };
            out.push(format!(
                "{rel} {kind} {:o} {}:{} {size}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            ));
            if m.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(m) = std::fs::metadata(root) {
        out.push(format!(". {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid()));
    }
    walk(root, root, &mut out);
    out.sort();
    out
}

/// The driver dir of layer `id`.
fn layer_dir(cs: &Cs, id: &str) -> PathBuf {
    let home = cs.graph.join(&cs.driver);
    match cs.driver.as_str() {
        "overlay" => home.join(id),
        "btrfs" => home.join("subvolumes").join(id),
        _ => home.join("dir").join(id),
    }
}

fn layer_layout_matches_go(driver: &str) {
    if !go_ready() {
        return;
    }
    let (Some(a), Some(b)) = (DriverStore::new(driver), DriverStore::new(driver)) else {
        return;
    };
    let base = write(
        a.dir.path(),
        "base.tar",
        &TarBuilder::new()
            .dir("./", 0o711)
            .dir("etc/", 0o755)
            .file("etc/hello", 0o644, b"hello\n")
            .file_owned("etc/owned", 0o600, 1000, 1000, b"x\n")
            .symlink("etc/link", "hello")
            .dir("opq/", 0o700)
            .file("opq/old", 0o644, b"old\n")
            .finish(),
    );
    let child = write(
        a.dir.path(),
        "child.tar",
        &TarBuilder::new()
            .dir("etc/", 0o755)
            .file("etc/.wh.hello", 0o644, b"")
            .dir("opq/", 0o700)
            .file("opq/.wh..wh..opq", 0o644, b"")
            .file("opq/new", 0o644, b"new\n")
            .finish(),
    );
    // The same steps by each tool in its own store, with the same layer IDs.
    let steps = |run: &dyn Fn(&[&str]) -> std::process::Output| {
        ok(&run(&["create-layer", "-i", "base"]));
        ok(&run(&["applydiff", "-f", &s(&base), "base"]));
        ok(&run(&["create-layer", "-i", "child", "base"]));
        ok(&run(&["applydiff", "-f", &s(&child), "child"]));
        ok(&run(&["create-layer", "-i", "rw", "child"]));
        ok(&run(&["mount", "rw"]));
        ok(&run(&["unmount", "rw"]));
    };
    steps(&|args| a.ours(args));
    steps(&|args| b.go(args));
    // 1.43 deletes overlay's `merged` on unmount, 1.60 keeps it.
    // (fuse-overlayfs stores are the overlay driver too.)
    let skip = |l: &String| !(a.driver == "overlay" && (l.starts_with("merged ")));
    for id in ["base", "child", "rw"] {
        let ours: Vec<String> = layer_tree(&layer_dir(&a, id))
            .into_iter()
            .filter(skip)
            .collect();
        let go: Vec<String> = layer_tree(&layer_dir(&b, id))
            .into_iter()
            .filter(skip)
            .collect();
        assert_eq!(ours, go, "{driver}: layout of layer {id} differs from Go's");
        assert!(
            id == "rw" || ours.iter().any(|l| l.contains("opq/")),
            "{driver}: layer {id} content not found: {ours:?}"
        );
    }
    if driver == "fuse-overlayfs" {
        // Through a mount program, whiteouts and opaque markers stay AUFS-style regular
        // files in the diff, and the home says so.
        for (who, cs) in [("ours", &a), ("Go", &b)] {
            let tree = layer_tree(&layer_dir(cs, "child"));
            for wh in ["diff/etc/.wh.hello f ", "diff/opq/.wh..wh..opq f "] {
                assert!(
                    tree.iter().any(|l| l.starts_with(wh)),
                    "{who}: no {wh:?} in {tree:?}"
                );
            }
            let flag = std::fs::read_to_string(cs.graph.join("overlay/.has-mount-program"))
                .expect(".has-mount-program");
            assert_eq!(flag.trim(), "true", "{who}: .has-mount-program");
        }
    }
    if a.driver == "overlay" {
        // One short link per layer, pointing at its diff.
        for cs in [&a, &b] {
            let l = cs.graph.join("overlay/l");
            let mut targets: Vec<String> = std::fs::read_dir(&l)
                .expect("overlay/l")
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .collect();
            targets.sort();
            assert_eq!(targets, ["../base/diff", "../child/diff", "../rw/diff"]);
        }
    }
}

/// btrfs only: a container that made subvolumes of its own (nested twice) is deleted with
/// them, as Go's driver does; nothing is left in the file system.
#[test]
fn btrfs_container_with_nested_subvolumes_is_deleted() {
    if !require(
        Path::new("/usr/bin/btrfs").is_file() || Path::new("/usr/sbin/btrfs").is_file(),
        "the btrfs tool (btrfs-progs)",
    ) {
        return;
    }
    let Some(cs) = DriverStore::new("btrfs") else {
        return;
    };
    let base = write(
        cs.dir.path(),
        "base.tar",
        &TarBuilder::new().file("f", 0o644, b"f\n").finish(),
    );
    ok(&cs.ours(&["import-layer", "-i", "base", "-f", &s(&base)]));
    ok(&cs.ours(&["create-image", "-i", "img", "base"]));
    ok(&cs.ours(&["create-container", "-i", "ctr", "img"]));
    let mp = PathBuf::from(ok(&cs.ours(&["mount", "ctr"])).trim());
    for sub in ["nested", "nested/deeper"] {
        let st = std::process::Command::new("btrfs")
            .args(["subvolume", "create"])
            .arg(mp.join(sub))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("btrfs subvolume create");
        assert!(st.success(), "btrfs subvolume create {sub}");
    }
    std::fs::write(mp.join("nested/deeper/x"), b"x").expect("write in nested subvolume");
    ok(&cs.ours(&["unmount", "ctr"]));
    ok(&cs.ours(&["delete-container", "ctr"]));
    ok(&cs.ours(&["delete-image", "img"]));
    let fs_root = cs.graph.parent().expect("graph root is on the loop fs");
    let out = std::process::Command::new("btrfs")
        .args(["subvolume", "list"])
        .arg(fs_root)
        .output()
        .expect("btrfs subvolume list");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "subvolumes left"
    );
    if go_cs().is_some() {
        same_layers(&cs, "deletions");
    }
}
