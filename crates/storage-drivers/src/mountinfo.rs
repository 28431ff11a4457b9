//! Is a path a mount point of the calling process's mount namespace?
//!
//! Go's `mount.Mounted(path)` answers from `/proc/self/mountinfo`; [`is_mounted`] does
//! the same. [`is_mountpoint`] asks the kernel first (`statx`), which is cheaper, and
//! reads the table only when the kernel cannot tell.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Decodes the octal escapes (`\040` for a space, …) the kernel uses in mountinfo
/// fields. The three bytes after `\` are taken as bytes, never as a `str` slice (which
/// could split a multi-byte character); an escape that is not three octal digits of a
/// byte value stays as it is.
pub(crate) fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = bytes.get(i + 1..i + 4)
            && oct.iter().all(|b| (b'0'..=b'7').contains(b))
            && let Ok(b) = u8::try_from(
                u32::from(oct[0] - b'0') * 64
                    + u32::from(oct[1] - b'0') * 8
                    + u32::from(oct[2] - b'0'),
            )
        {
            out.push(b);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The mount points listed in `mountinfo` text.
fn mount_points(text: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4).map(unescape))
}

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
    fn unescape_never_splits_characters() {
        assert_eq!(unescape(r"/mnt/a\040b\134c"), b"/mnt/a b\\c");
        assert_eq!(unescape(r"/end\04"), br"/end\04");
        assert_eq!(unescape("/a\\040b"), b"/a b");
        assert_eq!(unescape("/plain"), b"/plain");
        // A backslash followed by a multi-byte character used to panic (str slice
        // inside the character).
        assert_eq!(unescape("/x\\12\u{e9}"), "/x\\12\u{e9}".as_bytes());
        assert_eq!(unescape("/x\\\u{e9}\u{e9}"), "/x\\\u{e9}\u{e9}".as_bytes());
        // Octal above a byte's range is not an escape.
        assert_eq!(unescape(r"\777"), br"\777");
    }

    #[test]
    fn parses_escaped_mount_points() {
        let text = "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 98:0 / /proc rw - proc proc rw\n";
        let points: Vec<Vec<u8>> = mount_points(text).collect();
        assert_eq!(points, vec![b"/mnt/a b".to_vec(), b"/proc".to_vec()]);
    }

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
