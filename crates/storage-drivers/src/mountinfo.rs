//! Is a path a mount point of the calling process's mount namespace?
//!
//! Go's `mount.Mounted(path)` answers from `/proc/self/mountinfo`; [`is_mounted`] does
//! the same. [`is_mountpoint`] asks the kernel first (`statx`), which is cheaper, and
//! reads the table only when the kernel cannot tell.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use storage_gocompat::mountinfo::mount_points;

/// Whether `/proc/self/mountinfo` lists `path` as a mount point of this process's mount
/// namespace (Go's `mount.Mounted`). Unreadable mountinfo counts as "not mounted".
///
/// ```
/// assert!(storage_drivers::is_mounted(std::path::Path::new("/proc")));
/// ```
pub fn is_mounted(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_bytes();
    mount_points(&text).any(|mp| mp == want)
}

/// Whether `path` is a mount point: `statx`'s `STATX_ATTR_MOUNT_ROOT` when the kernel
/// reports it, else whether `/proc/self/mountinfo` lists it (also when `statx` fails, as
/// on a dead FUSE mount, which is still listed).
pub(crate) fn is_mountpoint(path: &Path) -> bool {
    crate::sys::mount::is_mount_root(path).unwrap_or_else(|| is_mounted(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_is_mounted_and_tempdir_is_not() {
        assert!(is_mounted(Path::new("/proc")));
        assert!(is_mountpoint(Path::new("/")));
        assert!(!is_mountpoint(Path::new("/definitely/not/a/mount")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mounted(dir.path()));
    }

    #[test]
    fn statx_and_mountinfo_agree() {
        // Both ways agree, before and after a bind mount of a directory on itself.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(!is_mountpoint(dir) && !is_mounted(dir));
        match rustix::mount::mount_bind(dir, dir) {
            Ok(()) => {
                let (fast, listed) = (is_mountpoint(dir), is_mounted(dir));
                rustix::mount::unmount(dir, rustix::mount::UnmountFlags::DETACH).unwrap();
                assert!(fast && listed, "statx {fast}, mountinfo {listed}");
                assert!(!is_mountpoint(dir));
            }
            Err(e) => eprintln!("SKIPPING the bind-mount half: {e} (needs root)"),
        }
        for dir in ["/usr/bin", "/etc"] {
            let dir = Path::new(dir);
            if dir.exists() {
                assert_eq!(is_mountpoint(dir), is_mounted(dir), "{}", dir.display());
            }
        }
    }
}
