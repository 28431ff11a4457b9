//! Helpers shared by the driver tests.
#![allow(dead_code)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use storage_drivers::{Driver, DriverOptions, open_driver};
#[allow(unused_imports)] // each test binary uses a subset
pub use storage_testsupport::{in_ci, is_root, require};

/// Go's containers-storage CLI, or `None` after saying it is missing (a failure in CI).
#[allow(unused_imports)]
pub use storage_testsupport::go_cli as go_cs;

/// Go's CLI `go` on the store with graph root `g` and run root `r` and the given driver:
/// the returned function runs it with some arguments and returns its stdout.
pub fn go_store<'a>(
    go: &'a Path,
    g: &'a Path,
    r: &'a Path,
    driver: &'a str,
) -> impl Fn(&[&str]) -> Vec<u8> + 'a {
    move |args| {
        let mut c = std::process::Command::new(go);
        c.arg("--graph").arg(g).arg("--run").arg(r);
        c.arg("--storage-driver").arg(driver).args(args);
        run(&mut c)
    }
}

/// [`go_store`] returning the trimmed output as text (an ID, a path).
pub fn go_store_text<'a>(
    go: &'a Path,
    g: &'a Path,
    r: &'a Path,
    driver: &'a str,
) -> impl Fn(&[&str]) -> String + 'a {
    let cs = go_store(go, g, r, driver);
    move |args| String::from_utf8_lossy(&cs(args)).trim().to_owned()
}

pub fn vfs(tmp: &Path) -> Box<dyn Driver> {
    vfs_with(tmp, vec![])
}

pub fn vfs_with(tmp: &Path, options: Vec<String>) -> Box<dyn Driver> {
    open_driver("vfs", &options_for(tmp, "vfs", options)).expect("open vfs")
}

/// The options of driver `name` with its graph root `graph` and run root `run`.
pub fn options_in(graph: &Path, run: &Path, name: &str, options: Vec<String>) -> DriverOptions {
    DriverOptions {
        home: graph.join(name),
        run_home: run.join(name),
        graph_root: graph.to_path_buf(),
        run_root: run.to_path_buf(),
        image_store: None,
        options,
    }
}

/// The options of driver `name` in a scratch store `<tmp>/graph`, `<tmp>/run`.
pub fn options_for(tmp: &Path, name: &str, options: Vec<String>) -> DriverOptions {
    options_in(&tmp.join("graph"), &tmp.join("run"), name, options)
}

/// A driver cleaned up on drop, after which everything mounted under `root` is unmounted
/// (also when a test fails half-way).
pub struct Cleanup {
    pub root: PathBuf,
    pub driver: Option<Box<dyn Driver>>,
}

impl Cleanup {
    pub fn new(root: &Path) -> Cleanup {
        Cleanup {
            root: root.to_path_buf(),
            driver: None,
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(d) = self.driver.take() {
            let _ = d.cleanup();
        }
        storage_testsupport::unmount_all_under(&self.root);
    }
}

/// The `/proc/self/mountinfo` line of the mount at `path`, if something is mounted there.
pub fn mountinfo_line(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy();
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(want.as_ref()))
        .map(str::to_owned)
}

/// Field `n` after the ` - ` separator of the mountinfo line of `path` (0: the file
/// system type, 2: the super options).
pub fn mount_field(path: &Path, n: usize) -> Option<String> {
    let line = mountinfo_line(path)?;
    let tail = line.split(" - ").nth(1)?;
    Some(tail.split(' ').nth(n).unwrap_or_default().to_owned())
}

/// Applies `tar` to layer `id` with the default options; returns the driver's size.
pub fn apply(d: &dyn Driver, id: &str, parent: Option<&str>, tar: &[u8]) -> i64 {
    d.apply_diff(
        id,
        parent,
        &mut &tar[..],
        &storage_drivers::ApplyDiffOpts::default(),
    )
    .expect("apply_diff")
}

/// The member names of a tar, in order.
pub fn entry_names(tar: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(tar);
    ar.entries()
        .expect("tar")
        .map(|e| String::from_utf8_lossy(&e.expect("tar entry").path_bytes()).into_owned())
        .collect()
}

/// A tar (GNU headers, mtime 1600000000) of directories (names ending in `/`, 0755) and
/// regular files (0644).
pub fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
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
        b.append_data(&mut h, name, *data).expect("tar entry");
    }
    b.into_inner().expect("tar")
}

#[allow(unused_imports)]
pub use storage_testsupport::xattr::{get as get_xattr, set as set_xattr};

#[allow(unused_imports)]
pub use storage_testsupport::set_mtime;

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("lchown");
}

/// Runs a command, panicking with its output on failure; returns stdout.
#[allow(unused_imports)]
pub use storage_testsupport::stdout_of as run;

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
