//! btrfs driver on a loop-mounted btrfs the test makes itself (200 MiB image, mkfs.btrfs,
//! `mount -o loop`), unmounted and detached on exit even on failure.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use storage_testsupport::unmount_all_under;

use common::{is_root, require};
use storage_drivers::{
    ApplyDiffOpts, ChangeKind, CreateOpts, Driver, DriverOptions, MountOpts, open_driver,
};

/// A loop-mounted btrfs; everything is unmounted and the loop device detached on drop.
struct LoopBtrfs {
    tmp: tempfile::TempDir,
    driver: Option<Box<dyn Driver>>,
}

impl LoopBtrfs {
    fn new() -> Option<LoopBtrfs> {
        let tools = ["/usr/sbin/mkfs.btrfs", "/usr/sbin/losetup"]
            .iter()
            .all(|t| Path::new(t).exists());
        if !require(
            is_root() && tools,
            "btrfs tests need root, mkfs.btrfs and loop devices",
        ) {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("btrfs.img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(200 << 20).unwrap();
        drop(f);
        let mkfs = Command::new("/usr/sbin/mkfs.btrfs")
            .arg("-q")
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            mkfs.status.success(),
            "{}",
            String::from_utf8_lossy(&mkfs.stderr)
        );
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let fx = LoopBtrfs { tmp, driver: None };
        let m = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .output()
            .unwrap();
        if !require(
            m.status.success(),
            &format!(
                "mount -o loop failed: {}",
                String::from_utf8_lossy(&m.stderr)
            ),
        ) {
            return None;
        }
        Some(fx)
    }

    fn graph(&self) -> PathBuf {
        self.tmp.path().join("mnt/graph")
    }

    fn opts(&self, options: Vec<String>) -> DriverOptions {
        common::options_in(
            &self.graph(),
            &self.tmp.path().join("run"),
            "btrfs",
            options,
        )
    }

    fn open(&mut self, options: Vec<String>) -> &dyn Driver {
        std::fs::create_dir_all(self.graph()).unwrap();
        if let Some(d) = self.driver.take() {
            d.cleanup().unwrap();
        }
        self.driver = Some(open_driver("btrfs", &self.opts(options)).unwrap());
        self.driver.as_deref().unwrap()
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        if let Some(d) = self.driver.take() {
            let _ = d.cleanup();
        }
        unmount_all_under(self.tmp.path());
        // `mount -o loop` sets autoclear; detach explicitly in case it did not.
        let img = self.tmp.path().join("btrfs.img");
        if let Ok(out) = Command::new("/usr/sbin/losetup")
            .arg("-j")
            .arg(&img)
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(dev) = line.split(':').next() {
                    let _ = Command::new("/usr/sbin/losetup")
                        .arg("-d")
                        .arg(dev)
                        .status();
                }
            }
        }
    }
}

fn subvolume_list(mnt: &Path) -> String {
    let out = Command::new("btrfs")
        .args(["subvolume", "list"])
        .arg(mnt)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn refuses_non_btrfs_home() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = common::options_for(tmp.path(), "btrfs", vec![]);
    std::fs::create_dir_all(tmp.path().join("graph")).unwrap();
    let e = open_driver("btrfs", &opts).err().unwrap();
    assert_eq!(e.kind(), storage_types::ErrorKind::NotSupported);
    assert_eq!(
        e.message(),
        format!(
            "{:?} is not on a btrfs filesystem: prerequisites for driver not satisfied (wrong filesystem?)",
            opts.home.display().to_string()
        )
    );
    assert!(!opts.home.exists());
}

#[test]
fn subvolumes_snapshots_and_removal() {
    let Some(mut fx) = LoopBtrfs::new() else {
        return;
    };
    let mnt = fx.tmp.path().join("mnt");
    let home = fx.graph().join("btrfs");
    let d = fx.open(vec![]);
    assert_eq!(
        d.status(),
        [
            ("Build Version".to_owned(), "Btrfs v6.2".to_owned()),
            ("Library Version".to_owned(), "102".to_owned())
        ]
    );
    assert!(d.metadata("x").unwrap().is_empty());
    assert_eq!(
        std::fs::metadata(home.join("subvolumes")).unwrap().mode() & 0o7777,
        0o700
    );

    d.create("base", None, &CreateOpts::default()).unwrap();
    let base = home.join("subvolumes/base");
    let md = std::fs::metadata(&base).unwrap();
    assert_eq!(md.ino(), 256, "a subvolume root");
    assert_eq!(md.mode() & 0o7777, 0o555);
    let tar1 = common::tar_of(&[
        ("etc/", b""),
        ("etc/passwd", b"root"),
        ("bin/", b""),
        ("bin/sh", b"sh"),
    ]);
    let size = d
        .apply_diff("base", None, &mut &tar1[..], &ApplyDiffOpts::default())
        .unwrap();
    assert_eq!(size, 6);

    // A child is a writable snapshot of its parent.
    d.create_read_write("child", Some("base"), &CreateOpts::default())
        .unwrap();
    let p = d.get("child", &MountOpts::default()).unwrap();
    assert_eq!(p, home.join("subvolumes/child"));
    assert_eq!(std::fs::metadata(&p).unwrap().ino(), 256);
    assert_eq!(std::fs::read(p.join("etc/passwd")).unwrap(), b"root");
    std::fs::write(p.join("etc/passwd"), b"changed").unwrap();
    std::fs::remove_file(p.join("bin/sh")).unwrap();
    std::fs::write(p.join("new"), b"new").unwrap();
    d.put("child").unwrap();
    assert_eq!(std::fs::read(base.join("etc/passwd")).unwrap(), b"root");
    let list = subvolume_list(&mnt);
    assert!(list.contains("graph/btrfs/subvolumes/base"), "{list}");
    assert!(list.contains("graph/btrfs/subvolumes/child"), "{list}");
    assert_eq!(d.list_layers().unwrap(), ["base", "child"]);
    assert!(d.exists("child") && !d.exists("nope"));

    // Naive diff/changes between the snapshot and its parent.
    let mut changes: Vec<(String, ChangeKind)> = d
        .changes("child", Some("base"))
        .unwrap()
        .into_iter()
        .map(|c| (c.path, c.kind))
        .collect();
    changes.sort();
    assert!(
        changes.contains(&("/bin/sh".into(), ChangeKind::Delete)),
        "{changes:?}"
    );
    assert!(
        changes.contains(&("/new".into(), ChangeKind::Add)),
        "{changes:?}"
    );
    assert!(
        changes.contains(&("/etc/passwd".into(), ChangeKind::Modify)),
        "{changes:?}"
    );
    let mut out = Vec::new();
    d.diff("child", Some("base"), &[], &[], &mut out).unwrap();
    let names = common::entry_names(&out);
    assert!(names.contains(&"bin/.wh.sh".to_owned()), "{names:?}");
    assert_eq!(d.diff_size("child", Some("base")).unwrap(), 7 + 3);
    let mut g = d.diff_getter("base").unwrap();
    assert_eq!(
        g.open(b"etc/passwd").unwrap().read_to_vec().unwrap(),
        b"root"
    );
    drop(g);

    // Mount options other than `ro` are refused.
    assert!(
        d.get(
            "base",
            &MountOpts {
                options: vec!["nodev".into()],
                ..MountOpts::default()
            }
        )
        .is_err()
    );
    assert_eq!(
        d.get("nope", &MountOpts::default()).unwrap_err().kind(),
        storage_types::ErrorKind::LayerUnknown
    );
    assert_eq!(
        d.create("orphan", Some("nope"), &CreateOpts::default())
            .unwrap_err()
            .kind(),
        storage_types::ErrorKind::LayerUnknown
    );

    // Nested subvolumes inside a layer go away with it.
    let nested = Command::new("btrfs")
        .args(["subvolume", "create"])
        .arg(p.join("nested"))
        .output()
        .unwrap();
    assert!(nested.status.success());
    d.remove("child").unwrap();
    assert!(!p.exists());
    let list = subvolume_list(&mnt);
    assert!(!list.contains("subvolumes/child"), "{list}");
    d.remove("child").unwrap();
    d.remove("base").unwrap();
    assert!(subvolume_list(&mnt).trim().is_empty());
    assert!(d.list_layers().unwrap().is_empty());

    // The home is bind-mounted private while open; cleanup releases it.
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(info.lines().any(|l| l.split(' ').nth(4) == home.to_str()));
    fx.driver.take().unwrap().cleanup().unwrap();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!info.lines().any(|l| l.split(' ').nth(4) == home.to_str()));
}

#[test]
fn quota_sizes() {
    let Some(mut fx) = LoopBtrfs::new() else {
        return;
    };
    let home = fx.graph().join("btrfs");
    std::fs::create_dir_all(fx.graph()).unwrap();
    let e = open_driver("btrfs", &fx.opts(vec!["btrfs.mountopt=nodev".into()]))
        .err()
        .unwrap();
    assert_eq!(e.message(), "btrfs driver does not support mount options");
    let e = open_driver("btrfs", &fx.opts(vec!["btrfs.bogus=1".into()]))
        .err()
        .unwrap();
    assert_eq!(e.message(), "Unknown option btrfs.bogus");

    let d = fx.open(vec!["btrfs.min_space=10M".into()]);
    let sized = |size: &str| CreateOpts {
        storage_opt: [("size".to_owned(), size.to_owned())].into(),
        ..CreateOpts::default()
    };
    let e = d.create("small", None, &sized("1M")).unwrap_err();
    assert_eq!(
        e.message(),
        "btrfs: storage size cannot be less than 10485760"
    );
    assert!(!d.exists("small"));
    let e = d.create("bad", None, &sized("lots")).unwrap_err();
    assert_eq!(e.message(), "btrfs: invalid storage size: lots");

    d.create("q", None, &sized("64M")).unwrap();
    assert_eq!(
        std::fs::read_to_string(home.join("quotas/q")).unwrap(),
        "67108864"
    );
    let show = Command::new("btrfs")
        .args(["qgroup", "show", "-r", "--raw"])
        .arg(&home)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("67108864"), "{text}");
    // The limit is enforced.
    let p = d.get("q", &MountOpts::default()).unwrap();
    let big = vec![0x5au8; 1 << 20];
    let mut wrote = 0usize;
    let mut failed = false;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(p.join("fill")).unwrap();
        for _ in 0..128 {
            match f.write_all(&big).and_then(|()| f.sync_data()) {
                Ok(()) => wrote += big.len(),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
    }
    assert!(failed && wrote <= 64 << 20, "wrote {wrote} bytes");
    d.put("q").unwrap();
    d.remove("q").unwrap();
    assert!(!home.join("quotas/q").exists());
}

#[test]
fn layout_equals_go() {
    let Some(mut fx) = LoopBtrfs::new() else {
        return;
    };
    let Some(go) = common::go_cs() else {
        return;
    };
    let g = fx.tmp.path().join("mnt/go");
    let r = fx.tmp.path().join("go-run");
    std::fs::create_dir_all(&g).unwrap();
    let cs = common::go_store_text(&go, &g, &r, "btrfs");
    let l1 = cs(&["create-layer"]);
    let l2 = cs(&["create-layer", &l1]);
    // The 1.43 CLI prints the status on stderr.
    let out = Command::new(&go)
        .arg("--graph")
        .arg(&g)
        .arg("--run")
        .arg(&r)
        .args(["--storage-driver", "btrfs", "status"])
        .output()
        .unwrap();
    let status =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    cs(&["shutdown"]);
    let d = fx.open(vec![]);
    d.create("l1", None, &CreateOpts::default()).unwrap();
    d.create("l2", Some("l1"), &CreateOpts::default()).unwrap();
    for (k, v) in d.status() {
        assert!(
            status.contains(&format!("{k}: {v}")),
            "{k}: {v} in {status}"
        );
    }
    let ours = fx.graph().join("btrfs");
    let go_home = g.join("btrfs");
    let shape = |p: &Path| {
        let md = std::fs::symlink_metadata(p).unwrap();
        (md.mode(), md.uid(), md.gid(), md.ino() == 256)
    };
    assert_eq!(shape(&go_home), shape(&ours));
    assert_eq!(
        shape(&go_home.join("subvolumes")),
        shape(&ours.join("subvolumes"))
    );
    assert_eq!(
        shape(&go_home.join("subvolumes").join(&l1)),
        shape(&ours.join("subvolumes/l1"))
    );
    assert_eq!(
        shape(&go_home.join("subvolumes").join(&l2)),
        shape(&ours.join("subvolumes/l2"))
    );
    // Our driver reads and removes Go's layers.
    let go_opts = common::options_in(&g, &r, "btrfs", vec![]);
    let gd = open_driver("btrfs", &go_opts).unwrap();
    assert_eq!(gd.list_layers().unwrap().len(), 2);
    gd.remove(&l2).unwrap();
    gd.remove(&l1).unwrap();
    assert!(gd.list_layers().unwrap().is_empty());
    gd.cleanup().unwrap();
}

/// A mapped layer on an unmapped parent is compared through each layer's own maps (Go's
/// NaiveDiffDriver does): a child that only shifted owners has no changes. (btrfs used
/// to compare the parent through the child's maps, so every entry looked changed.)
#[test]
fn mapped_child_compares_through_each_layers_maps() {
    let Some(mut fx) = LoopBtrfs::new() else {
        return;
    };
    let d = fx.open(vec![]);
    d.create("base", None, &CreateOpts::default()).unwrap();
    let b = d.get("base", &MountOpts::default()).unwrap();
    std::fs::create_dir(b.join("d")).unwrap();
    std::fs::write(b.join("d/f"), b"x\n").unwrap();
    common::lchown(&b.join("d/f"), 1000, 1000);
    d.put("base").unwrap();
    let uid = [storage_types::IdMap::new(0, 100000, 65536)];
    let gid = [storage_types::IdMap::new(0, 200000, 65536)];
    let opts = CreateOpts {
        uid_map: uid.to_vec(),
        gid_map: gid.to_vec(),
        ..Default::default()
    };
    d.create("child", Some("base"), &opts).unwrap();
    d.update_layer_id_map("child", &[], &[], &uid, &gid)
        .unwrap();
    let c = d.get("child", &MountOpts::default()).unwrap();
    let md = std::fs::symlink_metadata(c.join("d/f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (101000, 201000));
    d.put("child").unwrap();

    let maps = storage_drivers::LayerMaps {
        uid: &uid,
        gid: &gid,
    };
    let parent = Some(("base", storage_drivers::LayerMaps::default()));
    assert_eq!(d.changes_mapped("child", maps, parent).unwrap(), vec![]);
    assert_eq!(d.diff_size_mapped("child", maps, parent).unwrap(), 0);
    let mut diff = Vec::new();
    d.diff_mapped("child", maps, parent, &mut diff).unwrap();
    assert_eq!(diff, vec![0u8; 1024]);
    // Through the child's maps on both sides the parent's owners differ.
    assert!(!d.changes("child", Some("base")).unwrap().is_empty());
}
