//! Scratch stores on each graph driver: `vfs` and `overlay` in a temporary directory, `btrfs`
//! on a loop-mounted btrfs file system the test makes itself, and `fuse-overlayfs`: the
//! `overlay` driver with `--storage-opt overlay.mount_program=/usr/bin/fuse-overlayfs` given to
//! every command of both tools.
//!
//! [`DriverStore::new`] returns `None` (after a loud message) when the driver cannot run here
//! and `CI` is not `true`; in CI it panics instead (see [`crate::require`]). Dropping a
//! [`DriverStore`] — also while a test panics — runs our `shutdown -f` twice and Go's once,
//! lazily unmounts anything still mounted under the store (e.g. overlay's `<graph>/overlay`
//! bind mount), then unmounts the btrfs file system and detaches its loop device.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::peers::mounts_under;
use crate::{Cs, go_cs, is_root, ours, require};

/// The drivers every layer, image and container test runs on.
pub const DRIVERS: &[&str] = &["vfs", "overlay", "btrfs"];

/// The mount program of the `fuse-overlayfs` store kind.
pub const FUSE_OVERLAYFS: &str = "/usr/bin/fuse-overlayfs";

/// Mount points under `dir` whose file system type is a fuse one (`fuse.fuse-overlayfs`, …).
fn fuse_mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| {
            let mut halves = l.splitn(2, " - ");
            let left = halves.next()?;
            let fstype = halves.next()?.split(' ').next()?;
            let mnt = left.split(' ').nth(4)?;
            (fstype == "fuse" || fstype.starts_with("fuse."))
                .then(|| PathBuf::from(mnt.replace("\\040", " ")))
        })
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort();
    v
}

fn quiet(c: &mut Command) -> &mut Command {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

fn have_tool(name: &str) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(name).is_file())
}

fn kernel_has_fs(fs: &str) -> bool {
    let listed = |fs: &str| {
        std::fs::read_to_string("/proc/filesystems")
            .map(|s| s.lines().any(|l| l.split_whitespace().last() == Some(fs)))
            .unwrap_or(false)
    };
    if listed(fs) {
        return true;
    }
    let _ = quiet(Command::new("modprobe").arg(fs)).status();
    listed(fs)
}

/// A btrfs file system in a sparse 1 GiB image file, mounted through a loop device; unmounted
/// and detached on drop.
pub struct LoopBtrfs(storage_testsupport::LoopFs);

impl LoopBtrfs {
    /// Makes `<dir>/fs.img`, formats it and mounts it on `<dir>/mnt`.
    pub fn new(dir: &Path) -> Result<LoopBtrfs, String> {
        storage_testsupport::LoopFs::new_in(dir, "mkfs.btrfs", 1024).map(LoopBtrfs)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// A scratch store on one driver (dereferences to its [`Cs`]).
pub struct DriverStore {
    // Field order matters: the file system goes after the cleanup in `drop`, and before the
    // temporary directory holding its image is removed.
    fs: Option<LoopBtrfs>,
    cs: Cs,
}

impl DriverStore {
    /// A new empty store on `driver` (`vfs`, `overlay`, `btrfs`, or `fuse-overlayfs` — the
    /// `overlay` driver through [`FUSE_OVERLAYFS`]), or `None` when the driver cannot run here
    /// (only outside CI; a loud message says why).
    pub fn new(driver: &str) -> Option<DriverStore> {
        if driver == "fuse-overlayfs" {
            if !require(is_root(), "root (fuse-overlayfs mounts)")
                || !require(Path::new(FUSE_OVERLAYFS).is_file(), FUSE_OVERLAYFS)
                || !require(Path::new("/dev/fuse").exists(), "/dev/fuse")
            {
                return None;
            }
            let cs = Cs::new("overlay");
            cs.set_storage_opts(&[&format!("overlay.mount_program={FUSE_OVERLAYFS}")]);
            return Some(DriverStore { fs: None, cs });
        }
        let mut cs = Cs::new(driver);
        let mut fs = None;
        match driver {
            "vfs" => {}
            "overlay" => {
                if !require(is_root(), "root (overlay mounts)")
                    || !require(kernel_has_fs("overlay"), "overlay in the kernel")
                {
                    return None;
                }
            }
            "btrfs" => {
                if !require(is_root(), "root (loop-mounted btrfs)")
                    || !require(
                        have_tool("mkfs.btrfs") && have_tool("losetup"),
                        "mkfs.btrfs and losetup",
                    )
                    || !require(kernel_has_fs("btrfs"), "btrfs in the kernel")
                {
                    return None;
                }
                match LoopBtrfs::new(cs.dir.path()) {
                    Ok(b) => {
                        cs.graph = b.path().join("root");
                        fs = Some(b);
                    }
                    Err(e) => {
                        require(false, &format!("a loop-mounted btrfs: {e}"));
                        return None;
                    }
                }
            }
            other => panic!("unknown driver {other}"),
        }
        Some(DriverStore { fs, cs })
    }

    /// The driver's home, `<graph>/<driver>`.
    pub fn home(&self) -> PathBuf {
        self.cs.graph.join(&self.cs.driver)
    }

    /// Whether the store's overlay driver mounts through fuse-overlayfs (`mount_program`).
    pub fn uses_mount_program(&self) -> bool {
        self.cs
            .storage_opts()
            .iter()
            .any(|o| o.starts_with("overlay.mount_program=") || o.starts_with("mount_program="))
    }

    /// Whether the store lives on a loop-mounted file system made by the test.
    pub fn on_loop_fs(&self) -> bool {
        self.fs.is_some()
    }
}

impl Deref for DriverStore {
    type Target = Cs;
    fn deref(&self) -> &Cs {
        &self.cs
    }
}

impl Drop for DriverStore {
    fn drop(&mut self) {
        let cs = &self.cs;
        if cs.graph.exists() {
            let shutdown = |bin: &Path| {
                let mut c = Command::new(bin);
                c.args(cs.global_args())
                    .args(["shutdown", "-f"])
                    .env_remove("STORAGE_OPTS")
                    .env_remove("STORAGE_DRIVER")
                    .env_remove("CONTAINERS_STORAGE_CONF");
                let _ = quiet(&mut c).status();
            };
            shutdown(ours());
            shutdown(ours());
            if let Some(go) = go_cs() {
                shutdown(&go);
            }
        }
        let root = self
            .fs
            .as_ref()
            .map(|f| f.path().to_path_buf())
            .unwrap_or_else(|| cs.dir.path().to_path_buf());
        for m in fuse_mounts_under(cs.dir.path()).iter().rev() {
            eprintln!("cleanup: unmounting leftover fuse mount {}", m.display());
            let _ = quiet(Command::new("fusermount3").arg("-u").arg("-z").arg(m)).status();
        }
        for m in mounts_under(cs.dir.path()).iter().rev() {
            if m == &root && self.fs.is_some() {
                continue;
            }
            eprintln!("cleanup: lazily unmounting leftover {}", m.display());
            let _ = quiet(Command::new("umount").arg("-l").arg(m)).status();
        }
        cs.set_storage_opts(&[]);
    }
}
