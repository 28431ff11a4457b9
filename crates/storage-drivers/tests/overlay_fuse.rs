//! overlay with `overlay.mount_program=/usr/bin/fuse-overlayfs`: `.wh.` files stored
//! verbatim, `.has-mount-program` = `"true"`, mounts through the program (whiteouts and
//! opaque markers honoured by fuse-overlayfs), naive diffs.

mod common;

use std::io::Read;
use std::path::Path;

use common::{is_root, require};
use storage_drivers::{ApplyDiffOpts, CreateOpts, DriverOptions, MountOpts, open_driver};

const FUSE_OVERLAYFS: &str = "/usr/bin/fuse-overlayfs";

fn fs_type(path: &Path) -> Option<String> {
    common::mount_field(path, 0)
}

#[test]
fn fuse_overlayfs_keeps_aufs_whiteouts() {
    let ok = is_root() && Path::new(FUSE_OVERLAYFS).is_file() && Path::new("/dev/fuse").exists();
    if !require(ok, "needs root, /dev/fuse and /usr/bin/fuse-overlayfs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let opts = common::options_for(
        tmp.path(),
        "overlay",
        vec![format!("overlay.mount_program={FUSE_OVERLAYFS}")],
    );
    let mut g = common::Cleanup::new(tmp.path());
    g.driver = Some(open_driver("overlay", &opts).unwrap());
    let d = g.driver.as_deref().unwrap();
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
    let base = common::tar_of(&[
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
    let child = common::tar_of(&[
        ("etc/", b""),
        ("etc/.wh.passwd", b""),
        ("bin/", b""),
        ("bin/.wh..wh..opq", b""),
        ("bin/new", b"n"),
    ]);
    common::apply(d, "child", Some("base"), &child);

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
    let names = common::entry_names(&out);
    assert!(names.contains(&"etc/.wh.group".to_owned()), "{names:?}");

    // Contiguous maps are shifted by fuse-overlayfs itself.
    let uid = vec![storage_types::IdMap::new(0, 100_000, 65536)];
    assert!(d.supports_shifting(&uid, &uid));
    let split = [
        storage_types::IdMap::new(0, 1000, 1),
        storage_types::IdMap::new(1, 100_000, 65535),
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
    g.driver = None;
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
            g.driver = Some(d2);
        }
        Err(e) => assert!(e.message().contains("mount-program"), "{e}"),
    }
}
