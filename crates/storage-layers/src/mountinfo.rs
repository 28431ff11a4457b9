//! Is a path a mount point of the calling process's mount namespace?
//!
//! Go's `mount.Mounted(path)` answers from `/proc/self/mountinfo`; so do we.

use std::path::Path;

/// Decodes the octal escapes (`\040` for a space, …) the kernel uses in mountinfo fields.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = u32::from(oct[0] - b'0') * 64
                    + u32::from(oct[1] - b'0') * 8
                    + u32::from(oct[2] - b'0');
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Returns the mount points listed in `mountinfo` text.
fn mount_points(text: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4).map(unescape))
}

/// Whether `path` is currently a mount point in this process's mount namespace.
/// Unreadable mountinfo counts as "not mounted" (the caller then remounts through the driver).
pub(crate) fn is_mounted(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_bytes();
    mount_points(&text).any(|mp| mp == want)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mounted(dir.path()));
    }
}
