//! Helpers shared by the driver tests.
#![allow(dead_code)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use storage_drivers::{Driver, DriverOptions, open_driver};
#[allow(unused_imports)] // each test binary uses a subset
pub use storage_testsupport::{in_ci, is_root, require};

/// Go's containers-storage CLI, if installed.
pub fn go_cs() -> Option<PathBuf> {
    let p = PathBuf::from(
        std::env::var("GO_CONTAINERS_STORAGE")
            .unwrap_or_else(|_| "/usr/bin/containers-storage".into()),
    );
    p.is_file().then_some(p)
}

pub fn vfs(tmp: &Path) -> Box<dyn Driver> {
    vfs_with(tmp, vec![])
}

pub fn vfs_with(tmp: &Path, options: Vec<String>) -> Box<dyn Driver> {
    let opts = DriverOptions {
        home: tmp.join("graph/vfs"),
        run_home: tmp.join("run/vfs"),
        graph_root: tmp.join("graph"),
        run_root: tmp.join("run"),
        image_store: None,
        options,
    };
    open_driver("vfs", &opts).expect("open vfs")
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).expect("setxattr");
}

pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    rustix::fs::lgetxattr(path, name, &mut buf[..])
        .ok()
        .map(|n| {
            buf.truncate(n);
            buf
        })
}

pub fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    let ts = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nanos as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("utimensat");
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("lchown");
}

/// Runs a command, panicking with its stderr on failure; returns stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A comparable summary of one file system node.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub rdev: u64,
    pub mtime: (i64, i64),
    pub link: Option<PathBuf>,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

pub fn node(path: &Path) -> Node {
    let md = std::fs::symlink_metadata(path).expect("lstat");
    let mut xattrs = Vec::new();
    if md.is_file() || md.is_dir() {
        for name in [
            "security.capability",
            "user.a",
            "user.b",
            "trusted.overlay.opaque",
        ] {
            if let Some(v) = get_xattr(path, name) {
                xattrs.push((name.to_owned(), v));
            }
        }
    }
    Node {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        size: if md.is_dir() { 0 } else { md.size() },
        rdev: md.rdev(),
        mtime: (md.mtime(), md.mtime_nsec()),
        link: md
            .file_type()
            .is_symlink()
            .then(|| std::fs::read_link(path).expect("readlink")),
        xattrs,
    }
}

/// All relative paths under `root`, sorted.
pub fn tree(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("readdir") {
            let p = e.expect("entry").path();
            out.push(p.strip_prefix(root).expect("prefix").to_path_buf());
            if std::fs::symlink_metadata(&p).expect("lstat").is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}
