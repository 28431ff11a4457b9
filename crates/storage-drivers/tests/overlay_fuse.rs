//! overlay with `overlay.mount_program=/usr/bin/fuse-overlayfs`: `.wh.` files stored
//! verbatim, `.has-mount-program` = `"true"`, mounts through the program (whiteouts and
//! opaque markers honoured by fuse-overlayfs), naive diffs.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use storage_testsupport::unmount_all_under;

use common::{is_root, require};
use storage_drivers::{ApplyDiffOpts, CreateOpts, Driver, DriverOptions, MountOpts, open_driver};

const FUSE_OVERLAYFS: &str = "/usr/bin/fuse-overlayfs";

fn fs_type(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy();
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(want.as_ref()))
        .and_then(|l| l.split(" - ").nth(1))
        .map(|s| s.split(' ').next().unwrap_or_default().to_owned())
}

struct Guard(PathBuf, Option<Box<dyn Driver>>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(d) = self.1.take() {
            let _ = d.cleanup();
        }
        unmount_all_under(&self.0);
    }
}

fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
        }
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn fuse_overlayfs_keeps_aufs_whiteouts() {
    let ok = is_root() && Path::new(FUSE_OVERLAYFS).is_file() && Path::new("/dev/fuse").exists();
    if !require(ok, "needs root, /dev/fuse and /usr/bin/fuse-overlayfs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let opts = DriverOptions {
        home: tmp.path().join("graph/overlay"),
        run_home: tmp.path().join("run/overlay"),
        graph_root: tmp.path().join("graph"),
        run_root: tmp.path().join("run"),
        image_store: None,
        options: vec![format!("overlay.mount_program={FUSE_OVERLAYFS}")],
    };
    let mut g = Guard(tmp.path().to_path_buf(), None);
    g.1 = Some(open_driver("overlay", &opts).unwrap());
    let d = g.1.as_deref().unwrap();
    let home = tmp.path().join("graph/overlay");
    assert_eq!(
        std::fs::read(home.join(".has-mount-program")).unwrap(),
        b"true"
    );
    let status = d.status();
    let native = status
        .iter()
        .find(|(k, _)| k == "Native Overlay Diff")
        .unwrap();
    assert_eq!(native.1, "false");

    d.create("base", None, &CreateOpts::default()).unwrap();
    let base = tar(&[
        ("etc/", b""),
        ("etc/passwd", b"root"),
        ("etc/group", b"g"),
        ("bin/", b""),
        ("bin/sh", b"sh"),
    ]);
    d.apply_diff("base", None, &mut &base[..], &ApplyDiffOpts::default())
        .unwrap();
    d.create("child", Some("base"), &CreateOpts::default())
        .unwrap();
    let child = tar(&[
        ("etc/", b""),
        ("etc/.wh.passwd", b""),
        ("bin/", b""),
        ("bin/.wh..wh..opq", b""),
        ("bin/new", b"n"),
    ]);
    d.apply_diff(
        "child",
        Some("base"),
        &mut &child[..],
        &ApplyDiffOpts::default(),
    )
    .unwrap();

    // Stored verbatim as empty regular files, no opaque xattr.
    let diff = home.join("child/diff");
    for f in ["etc/.wh.passwd", "bin/.wh..wh..opq"] {
        let md = std::fs::symlink_metadata(diff.join(f)).unwrap();
        assert!(md.is_file() && md.len() == 0, "{f}");
    }
    assert!(common::get_xattr(&diff.join("bin"), "trusted.overlay.opaque").is_none());

    // Mounted through fuse-overlayfs, which honours the AUFS whiteouts.
    d.create_read_write("rw", Some("child"), &CreateOpts::default())
        .unwrap();
    let m = d.get("rw", &MountOpts::default()).unwrap();
    assert_eq!(fs_type(&m).as_deref(), Some("fuse.fuse-overlayfs"));
    assert!(!m.join("etc/passwd").exists());
    assert!(m.join("etc/group").exists());
    assert!(!m.join("bin/sh").exists());
    let mut s = String::new();
    std::fs::File::open(m.join("bin/new"))
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "n");
    std::fs::remove_file(m.join("etc/group")).unwrap();
    d.put("rw").unwrap();
    assert!(fs_type(&m).is_none(), "unmounted");
    // fuse-overlayfs records the deletion as a 0/0 character device.
    let md = std::fs::symlink_metadata(home.join("rw/diff/etc/group")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &md.file_type()
    ));

    // The (naive) diff of the container layer shows the deletion as a `.wh.` entry.
    let mut out = Vec::new();
    d.diff("rw", Some("child"), &[], &[], &mut out).unwrap();
    let mut a = tar::Archive::new(&out[..]);
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect();
    assert!(names.contains(&"etc/.wh.group".to_owned()), "{names:?}");

    // Contiguous maps are shifted by fuse-overlayfs itself.
    let uid = vec![storage_types::IdMap {
        container_id: 0,
        host_id: 100_000,
        size: 65536,
    }];
    assert!(d.supports_shifting(&uid, &uid));
    let split = [
        storage_types::IdMap {
            container_id: 0,
            host_id: 1000,
            size: 1,
        },
        storage_types::IdMap {
            container_id: 1,
            host_id: 100_000,
            size: 65535,
        },
    ];
    assert!(!d.supports_shifting(&split, &split));
    let m = d
        .get(
            "rw",
            &MountOpts {
                uid_map: uid.clone(),
                gid_map: uid,
                ..MountOpts::default()
            },
        )
        .unwrap();
    let md = std::fs::metadata(m.join("bin/new")).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&md),
            std::os::unix::fs::MetadataExt::gid(&md)
        ),
        (100_000, 100_000)
    );
    d.put("rw").unwrap();

    // Reopening without the option keeps using a mount program (the store needs one).
    d.cleanup().unwrap();
    g.1 = None;
    let plain = DriverOptions {
        options: vec![],
        ..opts
    };
    match open_driver("overlay", &plain) {
        Ok(d2) => {
            let native = d2
                .status()
                .into_iter()
                .find(|(k, _)| k == "Native Overlay Diff")
                .unwrap();
            assert_eq!(native.1, "false");
            g.1 = Some(d2);
        }
        Err(e) => assert!(e.message().contains("mount-program"), "{e}"),
    }
}
