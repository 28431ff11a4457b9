//! overlay driver: layout byte-equality with Go, mounts and reference counts, whiteouts
//! and opaque directories through apply_diff and back through the native diff, changes,
//! metadata, status, cleanup, and parity with Go 1.43's on-disk representation.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use storage_testsupport::unmount_all_under;

use common::{apply, get_xattr, is_root, require};
use storage_drivers::{
    ApplyDiffOpts, ChangeKind, CreateOpts, Driver, DriverOptions, MountOpts, open_driver,
};

fn mounted(path: &Path) -> bool {
    common::mountinfo_line(path).is_some()
}

/// A scratch store with an overlay driver; unmounts everything on drop.
struct Fixture {
    tmp: tempfile::TempDir,
    driver: Option<Box<dyn Driver>>,
}

impl Fixture {
    fn new(options: Vec<String>) -> Option<Fixture> {
        if !require(is_root(), "overlay tests need root") {
            return None;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut fx = Fixture { tmp, driver: None };
        fx.driver = Some(open(&fx.tmp, options));
        Some(fx)
    }

    fn d(&self) -> &dyn Driver {
        self.driver.as_deref().expect("driver")
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("graph/overlay")
    }

    fn reopen(&mut self, options: Vec<String>) {
        if let Some(d) = self.driver.take() {
            d.cleanup().expect("cleanup");
        }
        self.driver = Some(open(&self.tmp, options));
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(d) = self.driver.take() {
            let _ = d.cleanup();
        }
        unmount_all_under(self.tmp.path());
    }
}

fn opts_for(tmp: &Path, options: Vec<String>) -> DriverOptions {
    common::options_for(tmp, "overlay", options)
}

fn open(tmp: &tempfile::TempDir, options: Vec<String>) -> Box<dyn Driver> {
    open_driver("overlay", &opts_for(tmp.path(), options)).expect("open overlay")
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).expect("lstat").mode()
}

/// A tar built with the `tar` crate (GNU headers, like most images).
struct TarBuilder(tar::Builder<Vec<u8>>);

impl TarBuilder {
    fn new() -> Self {
        TarBuilder(tar::Builder::new(Vec::new()))
    }
    fn entry(
        mut self,
        name: &str,
        kind: tar::EntryType,
        mode: u32,
        data: &[u8],
        link: &str,
    ) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            h.set_link_name(link).expect("link");
        }
        self.0.append_data(&mut h, name, data).expect("append");
        self
    }
    fn dir(self, name: &str) -> Self {
        self.entry(name, tar::EntryType::Directory, 0o755, b"", "")
    }
    fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name, tar::EntryType::Regular, 0o644, data, "")
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(name, tar::EntryType::Symlink, 0o777, b"", target)
    }
    fn finish(self) -> Vec<u8> {
        self.0.into_inner().expect("finish")
    }
}

fn base_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("bin/")
        .file("bin/sh", b"#!sh")
        .dir("d/")
        .file("d/a", b"a")
        .file("d/b", b"b")
        .dir("etc/")
        .file("etc/group", b"root:x:0:")
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh")
        .symlink("link", "etc/passwd")
        .finish()
}

fn child_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("bin/")
        .file("bin/.wh..wh..opq", b"")
        .file("bin/newsh", b"new")
        .dir("d/")
        .file("d/.wh.a", b"")
        .file("d/.wh.b", b"")
        .dir("etc/")
        .file("etc/.wh.passwd", b"")
        .file("etc/hello", b"hello")
        .dir("newdir/")
        .file("newdir/.wh..wh..opq", b"")
        .file("newdir/f", b"f")
        .finish()
}

/// `(name, typeflag, mode, size, linkname)` of every entry of a tar.
fn tar_entries(data: &[u8]) -> Vec<(String, u8, u32, u64, String)> {
    let mut a = tar::Archive::new(data);
    a.entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            let h = e.header();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                h.entry_type().as_byte(),
                h.mode().expect("mode"),
                h.size().expect("size"),
                e.link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn layout_matches_go() {
    let Some(fx) = Fixture::new(vec![]) else {
        return;
    };
    let d = fx.d();
    let home = fx.home();
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.create("child", Some("base"), &CreateOpts::default())
        .unwrap();
    d.create_read_write("rw", Some("child"), &CreateOpts::default())
        .unwrap();

    // Home: .has-mount-program "false" 0600, l/ 0755.
    assert_eq!(
        std::fs::read(home.join(".has-mount-program")).unwrap(),
        b"false"
    );
    assert_eq!(mode(&home.join(".has-mount-program")) & 0o7777, 0o600);
    assert_eq!(mode(&home.join("l")) & 0o7777, 0o755);

    // Base layer: diff 0555, empty/, link, merged/, work/; no lower.
    let base = home.join("base");
    assert_eq!(mode(&base) & 0o7777, 0o700);
    assert_eq!(mode(&base.join("diff")) & 0o7777, 0o555);
    for sub in ["empty", "merged", "work"] {
        assert_eq!(mode(&base.join(sub)) & 0o7777, 0o700, "{sub}");
    }
    assert!(!base.join("lower").exists());
    let base_link = std::fs::read_to_string(base.join("link")).unwrap();
    assert_eq!(base_link.len(), 26);
    assert!(
        base_link
            .bytes()
            .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c))
    );
    assert_eq!(mode(&base.join("link")) & 0o7777, 0o644);
    assert_eq!(
        std::fs::read_link(home.join("l").join(&base_link)).unwrap(),
        Path::new("../base/diff")
    );

    // Child: lower = l/<base>, no empty/.
    let child = home.join("child");
    let child_link = std::fs::read_to_string(child.join("link")).unwrap();
    assert_eq!(
        std::fs::read_to_string(child.join("lower")).unwrap(),
        format!("l/{base_link}")
    );
    assert_eq!(mode(&child.join("lower")) & 0o7777, 0o644);
    assert!(!child.join("empty").exists());
    assert_eq!(mode(&child.join("diff")) & 0o7777, 0o555);
    // Grandchild: nearest parent first.
    assert_eq!(
        std::fs::read_to_string(home.join("rw/lower")).unwrap(),
        format!("l/{child_link}:l/{base_link}")
    );

    // Nothing else in the home that Go's GarbageCollect would delete.
    let mut names: Vec<String> = std::fs::read_dir(&home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".has-mount-program", "base", "child", "l", "rw"]);
    assert_eq!(d.list_layers().unwrap(), ["base", "child", "rw"]);

    // Probe results cached under Go's names.
    let run = fx.tmp.path().join("run/overlay");
    assert!(run.join("overlay-true").exists());
    assert!(run.join("native-diff()-true").exists() || run.join("native-diff()-false").exists());
    assert!(run.join("metacopy()-true").exists() || run.join("metacopy()-false").exists());

    // Remove drops the l/ link too.
    d.remove("rw").unwrap();
    assert!(!home.join("rw").exists());
    assert_eq!(std::fs::read_dir(home.join("l")).unwrap().count(), 2);
    assert!(d.exists("child") && !d.exists("rw"));
    d.remove("rw").unwrap();
}

#[test]
fn layout_equals_go_created_layers() {
    let Some(fx) = Fixture::new(vec![]) else {
        return;
    };
    let Some(go) = common::go_cs() else {
        return;
    };
    // Go creates two layers in its own store.
    let g = fx.tmp.path().join("go/graph");
    let r = fx.tmp.path().join("go/run");
    let cs = common::go_store_text(&go, &g, &r, "overlay");
    let l1 = cs(&["create-layer"]);
    let l2 = cs(&["create-layer", &l1]);
    cs(&["shutdown"]);
    let gh = g.join("overlay");
    let d = fx.d();
    d.create("l1", None, &CreateOpts::default()).unwrap();
    d.create("l2", Some("l1"), &CreateOpts::default()).unwrap();
    let home = fx.home();
    let shape = |dir: &Path| {
        let mut v: Vec<(String, u32, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let md = std::fs::symlink_metadata(e.path()).unwrap();
                let size = if md.is_dir() { 0 } else { md.size() };
                (
                    e.file_name().to_string_lossy().into_owned(),
                    md.mode(),
                    size,
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(shape(&gh.join(&l1)), shape(&home.join("l1")));
    assert_eq!(shape(&gh.join(&l2)), shape(&home.join("l2")));
    assert_eq!(mode(&gh.join("l")), mode(&home.join("l")));
    assert_eq!(
        std::fs::read(gh.join(".has-mount-program")).unwrap(),
        std::fs::read(home.join(".has-mount-program")).unwrap()
    );
    assert_eq!(
        mode(&gh.join(".has-mount-program")),
        mode(&home.join(".has-mount-program"))
    );
    // Go's lower file names Go's own short link the same way ours does.
    let go_link = std::fs::read_to_string(gh.join(&l1).join("link")).unwrap();
    assert_eq!(
        std::fs::read_to_string(gh.join(&l2).join("lower")).unwrap(),
        format!("l/{go_link}")
    );
    assert_eq!(
        std::fs::read_link(gh.join("l").join(&go_link)).unwrap(),
        PathBuf::from(format!("../{l1}/diff"))
    );
    // Same probe cache names in the run root.
    let mut go_probes: BTreeSet<String> = std::fs::read_dir(r.join("overlay"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    go_probes.remove("idmapped-lower-dir-true");
    go_probes.remove("idmapped-lower-dir-false");
    let ours: BTreeSet<String> = std::fs::read_dir(fx.tmp.path().join("run/overlay"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(go_probes.is_subset(&ours), "go {go_probes:?} ours {ours:?}");

    // Our driver mounts Go's layers (the store is shared), and Go's layer sees ours.
    let mut other = Fixture {
        tmp: tempfile::tempdir().unwrap(),
        driver: None,
    };
    let go_opts = common::options_in(&g, &r, "overlay", vec![]);
    other.driver = Some(open_driver("overlay", &go_opts).unwrap());
    let m = other.d().get(&l2, &MountOpts::default()).unwrap();
    assert!(mounted(&m));
    std::fs::write(m.join("x"), b"x").unwrap();
    other.d().put(&l2).unwrap();
    assert!(!mounted(&m));
    assert!(m.is_dir(), "merged is kept after put (1.60)");
    assert_eq!(std::fs::read(gh.join(&l2).join("diff/x")).unwrap(), b"x");
    other.d().cleanup().unwrap();
    other.driver = None;
    unmount_all_under(&g);
}

#[test]
fn mount_refcount_adoption_and_cleanup() {
    let Some(mut fx) = Fixture::new(vec![]) else {
        return;
    };
    let home = fx.home();
    assert!(mounted(&home), "home is bind-mounted private while open");
    fx.d().create("base", None, &CreateOpts::default()).unwrap();
    apply(fx.d(), "base", None, &base_tar());
    fx.d()
        .create_read_write("c", Some("base"), &CreateOpts::default())
        .unwrap();
    let m1 = fx.d().get("c", &MountOpts::default()).unwrap();
    assert_eq!(m1, home.join("c/merged"));
    assert!(mounted(&m1));
    assert_eq!(std::fs::read(m1.join("etc/group")).unwrap(), b"root:x:0:");
    let m2 = fx.d().get("c", &MountOpts::default()).unwrap();
    assert_eq!(m1, m2);
    fx.d().put("c").unwrap();
    assert!(mounted(&m1), "one reference left");

    // A second driver instance (another process in real life) adopts the mount.
    let second = open(&fx.tmp, vec![]);
    second.get("c", &MountOpts::default()).unwrap();
    second.put("c").unwrap();
    assert!(mounted(&m1), "adopted mount counts 1 + 1 - 1");
    second.put("c").unwrap();
    assert!(!mounted(&m1));
    fx.d().put("c").unwrap();
    assert!(!mounted(&m1));
    assert!(m1.is_dir());

    // Read-only mount of an image layer: no upper, writes fail.
    let ro = fx
        .d()
        .get(
            "base",
            &MountOpts {
                options: vec!["ro".into()],
                ..MountOpts::default()
            },
        )
        .unwrap();
    assert!(std::fs::write(ro.join("new"), b"x").is_err());
    fx.d().put("base").unwrap();

    // Metadata like Go's.
    let md = fx.d().metadata("c").unwrap();
    assert_eq!(md["UpperDir"], home.join("c/diff").display().to_string());
    assert_eq!(md["WorkDir"], home.join("c/work").display().to_string());
    assert_eq!(md["MergedDir"], home.join("c/merged").display().to_string());
    assert_eq!(md["LowerDir"], home.join("base/diff").display().to_string());
    assert!(!fx.d().metadata("base").unwrap().contains_key("LowerDir"));
    assert_eq!(
        fx.d().metadata("nope").unwrap_err().kind(),
        storage_types::ErrorKind::LayerUnknown
    );

    // Status lines in Go's order.
    let keys: Vec<String> = fx.d().status().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "Backing Filesystem",
            "Supports d_type",
            "Native Overlay Diff",
            "Using metacopy",
            "Supports shifting",
            "Supports volatile"
        ]
    );

    // Volatile mounts work and leave no incompat dir behind for the next mount.
    fx.d()
        .get(
            "c",
            &MountOpts {
                volatile: true,
                ..MountOpts::default()
            },
        )
        .unwrap();
    fx.d().put("c").unwrap();
    fx.d().get("c", &MountOpts::default()).unwrap();
    fx.d().put("c").unwrap();

    // Cleanup releases the home's bind mount; reopening makes it again.
    fx.d().cleanup().unwrap();
    assert!(!mounted(&home));
    fx.driver = None;
    fx.reopen(vec![]);
    assert!(mounted(&home));
    fx.reopen(vec!["overlay.skip_mount_home=true".into()]);
    assert!(!mounted(&home));
}

#[test]
fn whiteouts_and_opaque_dirs_round_trip() {
    let Some(fx) = Fixture::new(vec![]) else {
        return;
    };
    let d = fx.d();
    let home = fx.home();
    d.create("base", None, &CreateOpts::default()).unwrap();
    let size = apply(d, "base", None, &base_tar());
    assert_eq!(size, 4 + 1 + 1 + 9 + 25 + 10, "directory.Size of the diff");
    d.create("child", Some("base"), &CreateOpts::default())
        .unwrap();
    // Counted while extracting (whiteouts are 0/0 devices: size 0), the same as the walk.
    assert_eq!(apply(d, "child", Some("base"), &child_tar()), 3 + 5 + 1);
    let diff = home.join("child/diff");

    // On disk: 0/0 char devices and trusted.overlay.opaque=y.
    for wh in ["etc/passwd", "d/a", "d/b"] {
        let md = std::fs::symlink_metadata(diff.join(wh)).unwrap();
        assert!(md.file_type().is_char_device(), "{wh}");
        assert_eq!(md.rdev(), 0);
        assert_eq!(md.mode() & 0o7777, 0);
    }
    assert!(!diff.join("etc/.wh.passwd").exists());
    assert_eq!(
        get_xattr(&diff.join("bin"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        get_xattr(&diff.join("newdir"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!diff.join("bin/.wh..wh..opq").exists());
    assert_eq!(mode(&diff) & 0o7777, 0o555, "the root entry is not applied");

    // Mounted: whiteouts hide, opaque dirs hide the lower content.
    let m = d.get("child", &MountOpts::default()).unwrap();
    assert!(!m.join("etc/passwd").exists());
    assert!(m.join("etc/group").exists() && m.join("etc/hello").exists());
    assert!(!m.join("bin/sh").exists() && m.join("bin/newsh").exists());
    assert_eq!(std::fs::read_dir(m.join("d")).unwrap().count(), 0);
    d.put("child").unwrap();

    // Native diff: back to AUFS whiteouts, the opaque marker only where a lower has the dir.
    let mut out = Vec::new();
    d.diff("child", Some("base"), &[], &[], &mut out).unwrap();
    let entries = tar_entries(&out);
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin/",
            "bin/.wh..wh..opq",
            "bin/newsh",
            "d/",
            "d/.wh.a",
            "d/.wh.b",
            "etc/",
            "etc/hello",
            "etc/.wh.passwd",
            "newdir/",
            "newdir/f"
        ]
    );
    let opq = &entries[1];
    assert_eq!((opq.1, opq.2, opq.3), (b'0', 0o755, 0));
    let wh = entries.iter().find(|e| e.0 == "etc/.wh.passwd").unwrap();
    assert_eq!((wh.1, wh.2, wh.3), (b'0', 0, 0));
    let mut a = tar::Archive::new(&out[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path_bytes().as_ref() == b"bin/.wh..wh..opq" {
            assert_eq!(e.header().mtime().unwrap(), 0);
        }
        if e.path_bytes().as_ref() == b"etc/hello" {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            assert_eq!(s, "hello");
        }
    }

    // The exported tar applied to a fresh child gives the same on-disk result.
    d.create("again", Some("base"), &CreateOpts::default())
        .unwrap();
    apply(d, "again", Some("base"), &out);
    assert_eq!(common::tree(&diff), common::tree(&home.join("again/diff")));

    // Native changes (Go's OverlayChanges).
    let changes = d.changes("child", Some("base")).unwrap();
    let set: BTreeSet<(String, ChangeKind)> =
        changes.iter().map(|c| (c.path.clone(), c.kind)).collect();
    for (p, k) in [
        ("/bin", ChangeKind::Delete),
        ("/bin/newsh", ChangeKind::Add),
        ("/d/a", ChangeKind::Delete),
        ("/etc/passwd", ChangeKind::Delete),
        ("/etc/hello", ChangeKind::Add),
        ("/newdir", ChangeKind::Add),
        ("/newdir/f", ChangeKind::Add),
    ] {
        assert!(set.contains(&(p.to_owned(), k)), "{p} {k:?} in {set:?}");
    }
    assert!(
        set.iter()
            .any(|(p, k)| p == "/etc" && *k == ChangeKind::Modify)
    );
    assert_eq!(d.diff_size("child", Some("base")).unwrap(), 3 + 5 + 1);
    // A second tar on a diff that has files already: the size is the walk's, of both.
    let extra = TarBuilder::new().file("more", b"1234567").finish();
    assert_eq!(apply(d, "child", Some("base"), &extra), 3 + 5 + 1 + 7);

    // Diff against a non-parent takes the naive path and still works.
    let mut naive = Vec::new();
    d.diff("child", None, &[], &[], &mut naive).unwrap();
    let naive_names: BTreeSet<String> = tar_entries(&naive).into_iter().map(|e| e.0).collect();
    assert!(naive_names.contains("etc/group") && !naive_names.contains("etc/passwd"));

    // The diff getter finds files in the layer and in its lowers.
    let mut g = d.diff_getter("child").unwrap();
    assert_eq!(
        g.open(b"etc/hello").unwrap().read_to_vec().unwrap(),
        b"hello"
    );
    assert_eq!(
        g.open(b"etc/group").unwrap().read_to_vec().unwrap(),
        b"root:x:0:"
    );
    let err = g.open(b"missing").err().unwrap();
    assert!(err.to_string().contains("child/diff/missing"), "{err}");
}

/// Compares the on-disk representation of a tar applied by Go 1.43 and by us.
#[test]
fn apply_matches_go_on_disk() {
    let Some(fx) = Fixture::new(vec![]) else {
        return;
    };
    let Some(go) = common::go_cs() else {
        return;
    };
    let g = fx.tmp.path().join("go/graph");
    let r = fx.tmp.path().join("go/run");
    let base_path = fx.tmp.path().join("base.tar");
    let child_path = fx.tmp.path().join("child.tar");
    std::fs::write(&base_path, base_tar()).unwrap();
    std::fs::write(&child_path, child_tar()).unwrap();
    let cs = common::go_store_text(&go, &g, &r, "overlay");
    let gb = cs(&["import-layer", "-f", base_path.to_str().unwrap()]);
    let gc = cs(&["import-layer", "-f", child_path.to_str().unwrap(), &gb]);
    cs(&["shutdown"]);
    unmount_all_under(&g);

    let d = fx.d();
    d.create("base", None, &CreateOpts::default()).unwrap();
    apply(d, "base", None, &base_tar());
    d.create("child", Some("base"), &CreateOpts::default())
        .unwrap();
    apply(d, "child", Some("base"), &child_tar());

    for (go_id, ours) in [(gb, "base"), (gc, "child")] {
        let gd = g.join("overlay").join(&go_id).join("diff");
        let od = fx.home().join(ours).join("diff");
        assert_eq!(common::tree(&gd), common::tree(&od), "{ours}");
        for rel in common::tree(&gd) {
            let (a, b) = (common::node(&gd.join(&rel)), common::node(&od.join(&rel)));
            assert_eq!(
                (a.mode, a.uid, a.gid, a.size, a.rdev, &a.link, &a.xattrs),
                (b.mode, b.uid, b.gid, b.size, b.rdev, &b.link, &b.xattrs),
                "{ours}/{}",
                rel.display()
            );
            let md = std::fs::symlink_metadata(gd.join(&rel)).unwrap();
            if md.is_file() || md.file_type().is_symlink() {
                assert_eq!(a.mtime, b.mtime, "{}", rel.display());
            }
        }
        let (a, b) = (common::node(&gd), common::node(&od));
        assert_eq!((a.mode, a.uid, a.gid), (b.mode, b.uid, b.gid));
    }
}

#[test]
fn options_and_errors() {
    if !require(is_root(), "overlay tests need root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let open_with = |o: Vec<String>| open_driver("overlay", &opts_for(tmp.path(), o));
    let e = open_with(vec!["overlay.nope=1".into()]).err().unwrap();
    assert_eq!(e.message(), "overlay: unknown option overlay.nope");
    let e = open_with(vec!["overlay.size=10M".into()]).err().unwrap();
    assert!(
        e.message()
            .starts_with("storage option overlay.size and overlay.inodes only supported for backingFS XFS. Found "),
        "{e}"
    );
    let driver = Some(open_with(vec!["overlay2.MOUNTOPT=nodev".into()]).unwrap());
    let fx = Fixture { tmp, driver };
    let d = fx.d();
    assert_eq!(d.name(), "overlay");
    let e = d
        .create(
            "x",
            None,
            &CreateOpts {
                storage_opt: [("size".to_owned(), "1G".to_owned())].into(),
                ..CreateOpts::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        e.message(),
        "--storage-opt size is only supported for ReadWrite Layers"
    );
    let e = d
        .create_read_write(
            "x",
            None,
            &CreateOpts {
                storage_opt: [("size".to_owned(), "1G".to_owned())].into(),
                ..CreateOpts::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        e.message(),
        "--storage-opt is supported only for overlay over xfs with 'pquota' mount option"
    );
    assert!(!fx.home().join("x").exists());
    assert!(d.create("bad/id", None, &CreateOpts::default()).is_err());
    assert_eq!(
        d.create("y", Some("missing"), &CreateOpts::default())
            .unwrap_err()
            .kind(),
        storage_types::ErrorKind::LayerUnknown
    );
    assert!(!fx.home().join("y").exists());
    assert_eq!(
        d.get("missing", &MountOpts::default()).unwrap_err().kind(),
        storage_types::ErrorKind::LayerUnknown
    );
    // mountopt nodev becomes a mount flag.
    d.create("z", None, &CreateOpts::default()).unwrap();
    let m = d.get("z", &MountOpts::default()).unwrap();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(m.to_str().unwrap()))
        .unwrap()
        .to_owned();
    assert!(line.split(' ').nth(5).unwrap().contains("nodev"), "{line}");
    d.put("z").unwrap();
    // overlay2 is an alias; `zfs` and friends name the supported drivers.
    for n in ["zfs", "aufs", "devicemapper"] {
        let e = open_driver(n, &opts_for(fx.tmp.path(), vec![]))
            .err()
            .unwrap();
        assert_eq!(e.kind(), storage_types::ErrorKind::NotSupported);
        assert!(e.message().contains("overlay, btrfs, vfs"), "{e}");
    }
}

#[test]
fn existing_mount_program_store_is_refused_without_fuse_fallback() {
    if !require(is_root(), "overlay tests need root") {
        return;
    }
    // A home that has .wh. files (a fuse-overlayfs store) flips the flag to "true".
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("graph/overlay");
    std::fs::create_dir_all(home.join("layer/diff")).unwrap();
    std::fs::write(home.join("layer/diff/.wh.x"), b"").unwrap();
    let r = open_driver("overlay", &opts_for(tmp.path(), vec![]));
    assert_eq!(
        std::fs::read(home.join(".has-mount-program")).unwrap(),
        b"true"
    );
    match r {
        // fuse-overlayfs in PATH: used as the mount program, like Go.
        Ok(d) => {
            assert_eq!(
                d.status()
                    .iter()
                    .find(|(k, _)| k == "Native Overlay Diff")
                    .unwrap()
                    .1,
                "false"
            );
            d.cleanup().unwrap();
        }
        Err(e) => assert!(e.message().contains("mount-program"), "{e}"),
    }
    unmount_all_under(tmp.path());
}

#[test]
fn update_layer_id_map_rotates_diff() {
    let Some(fx) = Fixture::new(vec![]) else {
        return;
    };
    let d = fx.d();
    d.create("base", None, &CreateOpts::default()).unwrap();
    apply(d, "base", None, &base_tar());
    d.create("c", Some("base"), &CreateOpts::default()).unwrap();
    let map = [storage_types::IdMap::new(0, 100_000, 65536)];
    d.update_layer_id_map("c", &[], &[], &map, &map).unwrap();
    let dir = fx.home().join("c");
    assert!(dir.join("diff1").is_dir());
    assert_eq!(std::fs::read_dir(dir.join("diff")).unwrap().count(), 0);
    assert_eq!(
        std::fs::metadata(dir.join("diff1/etc/group"))
            .unwrap()
            .uid(),
        100_000
    );
    // diff1 is mounted as the top lower.
    let m = d.get("c", &MountOpts::default()).unwrap();
    assert_eq!(
        std::fs::metadata(m.join("etc/group")).unwrap().uid(),
        100_000
    );
    d.put("c").unwrap();
}

#[test]
fn split_and_additional_image_stores() {
    let Some(mut fx) = Fixture::new(vec![]) else {
        return;
    };
    // 1.60 split image store: read-only layers live in <imagestore>/overlay.
    let is = fx.tmp.path().join("imagestore");
    let mut opts = opts_for(fx.tmp.path(), vec![]);
    opts.image_store = Some(is.clone());
    if let Some(d) = fx.driver.take() {
        d.cleanup().unwrap();
    }
    fx.driver = Some(open_driver("overlay", &opts).unwrap());
    let d = fx.d();
    d.create("img", None, &CreateOpts::default()).unwrap();
    apply(d, "img", None, &base_tar());
    assert!(is.join("overlay/img/diff/etc/group").exists());
    assert!(!fx.home().join("img").exists());
    let link = std::fs::read_to_string(is.join("overlay/img/link")).unwrap();
    assert_eq!(
        std::fs::read_link(is.join("overlay/l").join(&link)).unwrap(),
        Path::new("../img/diff")
    );
    d.create_read_write("ctr", Some("img"), &CreateOpts::default())
        .unwrap();
    assert!(fx.home().join("ctr/diff").is_dir());
    assert_eq!(
        std::fs::read_to_string(fx.home().join("ctr/lower")).unwrap(),
        format!("l/{link}")
    );
    let m = d.get("ctr", &MountOpts::default()).unwrap();
    assert!(m.join("etc/group").exists());
    d.put("ctr").unwrap();
    assert_eq!(
        d.metadata("ctr").unwrap()["LowerDir"],
        is.join("overlay/img/diff").display().to_string()
    );
    let mut out = Vec::new();
    d.diff("img", None, &[], &[], &mut out).unwrap();
    assert!(tar_entries(&out).iter().any(|e| e.0 == "etc/group"));
    d.remove("ctr").unwrap();
    d.remove("img").unwrap();
    assert!(!is.join("overlay/img").exists());
    assert_eq!(std::fs::read_dir(is.join("overlay/l")).unwrap().count(), 0);

    // Additional read-only store (`overlay.imagestore=`): another store's layers.
    d.cleanup().unwrap();
    fx.driver = None;
    let store_tmp = tempfile::tempdir().unwrap();
    let store = open(&store_tmp, vec![]);
    store
        .create("ro-img", None, &CreateOpts::default())
        .unwrap();
    apply(store.as_ref(), "ro-img", None, &base_tar());
    store.cleanup().unwrap();
    drop(store);
    let store_root = store_tmp.path().join("graph");
    fx.driver = Some(open(
        &fx.tmp,
        vec![format!("overlay.imagestore={}", store_root.display())],
    ));
    let d = fx.d();
    assert!(d.exists("ro-img"));
    assert!(!d.list_layers().unwrap().contains(&"ro-img".to_owned()));
    d.create_read_write("c2", Some("ro-img"), &CreateOpts::default())
        .unwrap();
    let m = d.get("c2", &MountOpts::default()).unwrap();
    assert!(m.join("etc/passwd").exists());
    d.put("c2").unwrap();
    // Layers of an additional store mount read-only under the run home.
    let m = d.get("ro-img", &MountOpts::default()).unwrap();
    assert_eq!(m, fx.tmp.path().join("run/overlay/ro-img/merged"));
    assert!(m.join("etc/passwd").exists());
    assert!(std::fs::write(m.join("x"), b"x").is_err());
    d.put("ro-img").unwrap();
    assert!(!fx.tmp.path().join("run/overlay/ro-img").exists());
    unmount_all_under(store_tmp.path());
}

#[test]
fn kernel_whiteouts_export_as_wh_entries() {
    let Some(fx) = Fixture::new(vec![]) else {
        return;
    };
    let d = fx.d();
    d.create("base", None, &CreateOpts::default()).unwrap();
    apply(d, "base", None, &base_tar());
    d.create_read_write("c", Some("base"), &CreateOpts::default())
        .unwrap();
    let m = d.get("c", &MountOpts::default()).unwrap();
    for f in ["d/a", "d/b", "etc/passwd", "bin/sh"] {
        std::fs::remove_file(m.join(f)).unwrap();
    }
    d.put("c").unwrap();
    let mut out = Vec::new();
    d.diff("c", Some("base"), &[], &[], &mut out).unwrap();
    let entries = tar_entries(&out);
    let wh: Vec<_> = entries.iter().filter(|e| e.0.contains(".wh.")).collect();
    let names: Vec<&str> = wh.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        ["bin/.wh.sh", "d/.wh.a", "d/.wh.b", "etc/.wh.passwd"]
    );
    // Regular, mode 0, empty; a kernel-shared whiteout inode keeps the first `.wh.`
    // name as its (stale) link name, like Go 1.60.
    for e in &wh {
        assert_eq!((e.1, e.2, e.3), (b'0', 0, 0), "{e:?}");
        assert!(e.4.is_empty() || e.4 == "bin/.wh.sh", "{e:?}");
    }
    let changes = d.changes("c", Some("base")).unwrap();
    let deletes: BTreeSet<String> = changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Delete)
        .map(|c| c.path.clone())
        .collect();
    assert_eq!(
        deletes,
        ["/bin/sh", "/d/a", "/d/b", "/etc/passwd"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(d.diff_size("c", Some("base")).unwrap(), 0);
}

/// Go mounts and modifies a layer (kernel whiteouts, an opaque dir); Go's native diff and
/// changes of it must equal ours, apart from 1.43 → 1.60 header differences.
#[test]
fn native_diff_and_changes_match_go() {
    let Some(fx) = Fixture::new(vec![]) else {
        return;
    };
    let Some(go) = common::go_cs() else {
        return;
    };
    let g = fx.tmp.path().join("go/graph");
    let r = fx.tmp.path().join("go/run");
    let base_path = fx.tmp.path().join("base.tar");
    std::fs::write(&base_path, base_tar()).unwrap();
    let cs = common::go_store(&go, &g, &r, "overlay");
    let id = |out: Vec<u8>| String::from_utf8_lossy(&out).trim().to_owned();
    let b = id(cs(&["import-layer", "-f", base_path.to_str().unwrap()]));
    let c = id(cs(&["create-layer", &b]));
    let m = PathBuf::from(id(cs(&["mount", &c])));
    for f in ["etc/passwd", "d/a", "d/b"] {
        std::fs::remove_file(m.join(f)).unwrap();
    }
    std::fs::remove_dir_all(m.join("bin")).unwrap();
    std::fs::create_dir(m.join("bin")).unwrap();
    std::fs::write(m.join("bin/new"), b"new").unwrap();
    std::fs::write(m.join("etc/hello"), b"hello").unwrap();
    cs(&["unmount", &c]);
    let go_diff = cs(&["diff", &c]);
    let go_changes = String::from_utf8_lossy(&cs(&["changes", &c])).into_owned();
    cs(&["shutdown"]);
    unmount_all_under(&g);

    let opts = common::options_in(&g, &r, "overlay", vec![]);
    let d = open_driver("overlay", &opts).unwrap();
    let mut ours = Vec::new();
    let diff = d.diff(&c, Some(&b), &[], &[], &mut ours);
    let changes = d.changes(&c, Some(&b));
    d.cleanup().unwrap();
    unmount_all_under(&g);
    diff.unwrap();
    let changes = changes.unwrap();

    let norm = |t: &[u8]| {
        tar_entries(t)
            .into_iter()
            .map(|(n, t, m, s, l)| {
                let l = if n.contains(".wh.") { String::new() } else { l };
                (n, t, m & 0o7777, s, l)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(norm(&ours), norm(&go_diff));
    assert!(norm(&ours).iter().any(|e| e.0 == "bin/.wh..wh..opq"));

    let kind = |k: ChangeKind| match k {
        ChangeKind::Add => "Add",
        ChangeKind::Modify => "Modify",
        ChangeKind::Delete => "Delete",
    };
    let ours: BTreeSet<String> = changes
        .iter()
        .map(|c| format!("{} {:?}", kind(c.kind), c.path))
        .collect();
    let theirs: BTreeSet<String> = go_changes
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(ours, theirs);
}

#[test]
fn lost_links_are_repaired() {
    let Some(fx) = Fixture::new(vec![]) else {
        return;
    };
    let d = fx.d();
    let home = fx.home();
    d.create("base", None, &CreateOpts::default()).unwrap();
    apply(d, "base", None, &base_tar());
    d.create("mid", Some("base"), &CreateOpts::default())
        .unwrap();
    d.create_read_write("top", Some("mid"), &CreateOpts::default())
        .unwrap();
    let base_link = std::fs::read_to_string(home.join("base/link")).unwrap();
    let mid_link = std::fs::read_to_string(home.join("mid/link")).unwrap();
    // Lose an l/ symlink, a link file, and add a weird link.
    std::fs::remove_file(home.join("l").join(&base_link)).unwrap();
    std::fs::remove_file(home.join("mid/link")).unwrap();
    std::os::unix::fs::symlink("/etc", home.join("l/WEIRD")).unwrap();
    let m = d.get("top", &MountOpts::default()).unwrap();
    assert!(m.join("etc/group").exists());
    d.put("top").unwrap();
    assert_eq!(
        std::fs::read_link(home.join("l").join(&base_link)).unwrap(),
        Path::new("../base/diff")
    );
    assert_eq!(
        std::fs::read_to_string(home.join("mid/link")).unwrap(),
        mid_link
    );
    assert!(std::fs::symlink_metadata(home.join("l/WEIRD")).is_err());
    assert_eq!(std::fs::read_dir(home.join("l")).unwrap().count(), 3);
}

/// Owners of a layer created with ID maps, and a `merged` dir Go 1.43 removed.
#[test]
fn id_mapped_layers_match_go() {
    let Some(fx) = Fixture::new(vec![]) else {
        return;
    };
    let Some(go) = common::go_cs() else {
        return;
    };
    let g = fx.tmp.path().join("go/graph");
    let r = fx.tmp.path().join("go/run");
    let cs = common::go_store_text(&go, &g, &r, "overlay");
    // Make Go's overlay believe idmapped mounts are unusable (its cached probe), so that
    // its store hands the maps to the driver instead of shifting at mount time.
    std::fs::create_dir_all(r.join("overlay")).unwrap();
    std::fs::write(r.join("overlay/idmapped-lower-dir-false"), b"").unwrap();
    let gl = cs(&[
        "create-layer",
        "--uidmap",
        "0:100000:65536",
        "--gidmap",
        "0:200000:65536",
    ]);
    let gc = cs(&[
        "create-layer",
        "--uidmap",
        "0:100000:65536",
        "--gidmap",
        "0:200000:65536",
        &gl,
    ]);
    cs(&["shutdown"]);
    unmount_all_under(&g);
    let maps = CreateOpts {
        uid_map: vec![storage_types::IdMap::new(0, 100_000, 65536)],
        gid_map: vec![storage_types::IdMap::new(0, 200_000, 65536)],
        ..CreateOpts::default()
    };
    let d = fx.d();
    d.create("m1", None, &maps).unwrap();
    d.create("c", Some("m1"), &maps).unwrap();
    let owners = |dir: &Path| {
        let mut v: Vec<(String, u32, u32, u32)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let md = std::fs::symlink_metadata(e.path()).unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    md.uid(),
                    md.gid(),
                    md.mode(),
                )
            })
            .collect();
        v.sort();
        let md = std::fs::metadata(dir).unwrap();
        v.push((".".into(), md.uid(), md.gid(), md.mode()));
        v
    };
    // Go's store re-owns a mapped base layer with UpdateLayerIDMap (diff → diff1); only
    // what Create made is comparable there. The child (same maps as its parent) is pure
    // Create.
    let created = |v: Vec<(String, u32, u32, u32)>| {
        v.into_iter()
            .filter(|e| matches!(e.0.as_str(), "." | "empty" | "link"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        created(owners(&g.join("overlay").join(&gl))),
        created(owners(&fx.home().join("m1")))
    );
    assert_eq!(
        owners(&g.join("overlay").join(&gc)),
        owners(&fx.home().join("c"))
    );

    // 1.43 removes `merged` on unmount; mounting recreates it.
    std::fs::remove_dir(fx.home().join("c/merged")).unwrap();
    let m = d.get("c", &MountOpts::default()).unwrap();
    assert!(mounted(&m));
    d.put("c").unwrap();
    assert!(m.is_dir());
}

/// Mount-time ID shifting through idmapped lowers (root, kernel ≥ 5.19).
#[test]
fn mount_time_shifting() {
    let Some(fx) = Fixture::new(vec![]) else {
        return;
    };
    let d = fx.d();
    let uid = [storage_types::IdMap::new(0, 100_000, 65536)];
    let gid = [storage_types::IdMap::new(0, 200_000, 65536)];
    let disabled = std::env::var("_CONTAINERS_OVERLAY_DISABLE_IDMAP").as_deref() == Ok("yes");
    let status = d
        .status()
        .into_iter()
        .find(|(k, _)| k == "Supports shifting")
        .unwrap()
        .1;
    assert_eq!(status, d.supports_shifting(&uid, &gid).to_string());
    if disabled {
        assert!(!d.supports_shifting(&uid, &gid));
        return;
    }
    if !require(
        d.supports_shifting(&uid, &gid),
        "kernel without idmapped overlay lowers",
    ) {
        return;
    }
    assert!(
        fx.tmp
            .path()
            .join("run/overlay/idmapped-lower-dir-true")
            .exists()
    );
    d.create("base", None, &CreateOpts::default()).unwrap();
    apply(d, "base", None, &base_tar());
    d.create_read_write("c", Some("base"), &CreateOpts::default())
        .unwrap();
    let shifted = MountOpts {
        uid_map: uid.to_vec(),
        gid_map: gid.to_vec(),
        ..MountOpts::default()
    };
    let m = d.get("c", &shifted).unwrap();
    let md = std::fs::metadata(m.join("etc/group")).unwrap();
    assert_eq!((md.uid(), md.gid()), (100_000, 200_000));
    assert!(
        !fx.home().join("c/mapped").exists(),
        "views are detached and removed right after mounting"
    );
    d.put("c").unwrap();
    // On disk nothing changed.
    let md = std::fs::metadata(fx.home().join("base/diff/etc/group")).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0));
    // Read-only shifted mounts map the layer's own diff too.
    let ro = MountOpts {
        options: vec!["ro".into()],
        ..shifted
    };
    let m = d.get("base", &ro).unwrap();
    assert_eq!(std::fs::metadata(m.join("etc")).unwrap().uid(), 100_000);
    d.put("base").unwrap();

    // `_CONTAINERS_OVERLAY_DISABLE_IDMAP=yes` turns shifting off (checked in a child).
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", "mount_time_shifting", "--test-threads=1"])
        .env("_CONTAINERS_OVERLAY_DISABLE_IDMAP", "yes")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

#[test]
fn concurrent_get_put_balance() {
    let Some(fx) = Fixture::new(vec![]) else {
        return;
    };
    let d = fx.d();
    d.create("base", None, &CreateOpts::default()).unwrap();
    apply(d, "base", None, &base_tar());
    d.create_read_write("c", Some("base"), &CreateOpts::default())
        .unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20 {
                    let m = d.get("c", &MountOpts::default()).unwrap();
                    assert!(m.join("etc/group").exists(), "mounted when get returns");
                    d.put("c").unwrap();
                }
            });
        }
    });
    assert!(!mounted(&fx.home().join("c/merged")));
}

#[test]
fn force_mask_keeps_real_modes_in_xattrs() {
    let Some(fx) = Fixture::new(vec!["overlay.force_mask=private".into()]) else {
        return;
    };
    let d = fx.d();
    d.create("base", None, &CreateOpts::default()).unwrap();
    let diff = fx.home().join("base/diff");
    assert_eq!(mode(&diff) & 0o7777, 0o700);
    assert_eq!(
        get_xattr(&diff, "user.containers.override_stat").as_deref(),
        Some(&b"0:0:0555:dir"[..])
    );
    apply(d, "base", None, &base_tar());
    let f = diff.join("etc/group");
    assert_eq!(mode(&f) & 0o7777, 0o700);
    let v = get_xattr(&f, "user.containers.override_stat").unwrap();
    assert!(String::from_utf8_lossy(&v).starts_with("0:0:0644"), "{v:?}");
    // A child takes the real stat of its parent's diff from the xattr (which the
    // extraction rewrote from the tar's root entry).
    d.create("child", Some("base"), &CreateOpts::default())
        .unwrap();
    assert_eq!(
        get_xattr(
            &fx.home().join("child/diff"),
            "user.containers.override_stat"
        ),
        get_xattr(&diff, "user.containers.override_stat")
    );
    // 1.60: writable layers need a mount program for force_mask.
    let e = d
        .create_read_write("rw", Some("base"), &CreateOpts::default())
        .unwrap_err();
    assert!(e.message().contains("force_mask"), "{e}");
    assert!(!fx.home().join("rw").exists());
}

/// Go 1.43 mounts layers our driver created and filled (the records are written by
/// hand here; the layer store owns them in real use).
#[test]
fn go_mounts_our_layers() {
    let Some(fx) = Fixture::new(vec![]) else {
        return;
    };
    let Some(go) = common::go_cs() else {
        return;
    };
    let d = fx.d();
    let base = "a".repeat(64);
    let child = "b".repeat(64);
    d.create(&base, None, &CreateOpts::default()).unwrap();
    apply(d, &base, None, &base_tar());
    d.create(&child, Some(&base), &CreateOpts::default())
        .unwrap();
    apply(d, &child, Some(&base), &child_tar());
    d.cleanup().unwrap();
    let g = fx.tmp.path().join("graph");
    let r = fx.tmp.path().join("run");
    std::fs::create_dir_all(g.join("overlay-layers")).unwrap();
    std::fs::write(
        g.join("overlay-layers/layers.json"),
        format!(
            r#"[{{"id":"{base}","created":"2026-01-01T00:00:00Z"}},{{"id":"{child}","parent":"{base}","created":"2026-01-01T00:00:00Z"}}]"#
        ),
    )
    .unwrap();
    let cs = common::go_store_text(&go, &g, &r, "overlay");
    let m = PathBuf::from(cs(&["mount", &child]));
    let seen = (
        m.join("etc/group").exists(),
        m.join("etc/passwd").exists(),
        m.join("bin/sh").exists(),
        m.join("bin/newsh").exists(),
        std::fs::read_dir(m.join("d"))
            .map(|r| r.count())
            .unwrap_or(99),
    );
    cs(&["unmount", &child]);
    // Go's changes of our layer come from its native overlay diff of our upper dir.
    let changes = cs(&["changes", &child]);
    cs(&["shutdown"]);
    unmount_all_under(fx.tmp.path());
    assert_eq!(seen, (true, false, false, true, 0));
    for want in [
        "Delete \"/etc/passwd\"",
        "Add \"/etc/hello\"",
        "Delete \"/bin\"",
        "Add \"/bin/newsh\"",
    ] {
        assert!(changes.lines().any(|l| l == want), "{want} in {changes}");
    }
}

/// Hostile metadata inside the driver's home never reaches outside it: an ID with `..`,
/// a `lower` element other than `l/<link>` and an `l/` link pointing elsewhere are
/// errors, and nothing outside the home is mounted or read.
#[test]
fn hostile_ids_lowers_and_links_are_refused() {
    let Some(fx) = Fixture::new(vec![]) else {
        return;
    };
    let d = fx.d();
    let home = fx.home();
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.create("child", Some("base"), &CreateOpts::default())
        .unwrap();
    for bad in ["..", "../overlay", "a/b", ""] {
        let e = d.get(bad, &MountOpts::default()).expect_err(bad);
        assert!(e.to_string().contains("invalid layer ID"), "{e}");
        assert!(d.create("x", Some(bad), &CreateOpts::default()).is_err());
    }
    let lower = home.join("child/lower");
    let good = std::fs::read_to_string(&lower).unwrap();
    for bad in ["l/../../../etc", "/etc", "l/", "diff"] {
        std::fs::write(&lower, bad).unwrap();
        let e = d.get("child", &MountOpts::default()).expect_err(bad);
        assert!(
            e.to_string().contains("invalid lower element"),
            "{bad}: {e}"
        );
        assert!(!mounted(&home.join("child/merged")), "{bad}");
        assert!(d.changes("child", Some("base")).is_err(), "{bad}");
    }
    std::fs::write(&lower, &good).unwrap();
    let link = home.join(good.trim());
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("/", &link).unwrap();
    let e = d
        .get("child", &MountOpts::default())
        .expect_err("link to /");
    assert!(e.to_string().contains("invalid lower link"), "{e}");
    assert!(!mounted(&home.join("child/merged")));
    // Restored, everything works again.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("../base/diff", &link).unwrap();
    let m = d.get("child", &MountOpts::default()).unwrap();
    assert!(mounted(&m));
    d.put("child").unwrap();
}

/// A diff that fails to extract fails the same way on overlay as on vfs: the archive
/// error's kind and errno survive (they used to be flattened to `Other` here).
#[test]
fn apply_errors_keep_their_kind_like_vfs() {
    let Some(fx) = Fixture::new(vec![]) else {
        return;
    };
    let vfs_tmp = tempfile::tempdir().expect("tempdir");
    let vfs = common::vfs(vfs_tmp.path());
    // A truncated header block: Go's "unexpected EOF".
    let truncated = vec![b'a'; 300];
    // A file below a path that is a regular file: an OS error (ENOTDIR) on extraction.
    let not_dir = TarBuilder::new().file("f", b"x").file("f/g", b"y").finish();
    for (what, tar) in [("truncated", truncated), ("below a file", not_dir)] {
        let mut errs = Vec::new();
        for d in [fx.d(), vfs.as_ref()] {
            d.create("l", None, &CreateOpts::default()).expect("create");
            let e = d
                .apply_diff("l", None, &mut &tar[..], &ApplyDiffOpts::default())
                .expect_err(what);
            d.remove("l").expect("remove");
            errs.push((e.kind(), e.raw_os_error(), e.to_string()));
        }
        assert_eq!(errs[0], errs[1], "{what}: overlay vs vfs");
        assert_ne!(errs[0].0, storage_types::ErrorKind::Other, "{what}");
    }
}
