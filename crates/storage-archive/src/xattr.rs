//! Reading extended attributes without following symlinks, as the diff side needs them:
//! one value ([`get`], or [`get_fd`] through an open file), the list of names ([`list`],
//! [`list_fd`]), and the set Go 1.60 exports into a layer tar ([`pax_records`], read
//! through the entry's descriptor so that the exporters never resolve a layer path again).
//!
//! ```
//! let tmp = tempfile::tempdir().unwrap();
//! let f = tmp.path().join("f");
//! std::fs::write(&f, b"x").unwrap();
//! // A file without extended attributes (or on a file system without them).
//! assert_eq!(storage_archive::xattr::get(&f, "user.none"), None);
//! assert!(storage_archive::xattr::list(&f).map_or(true, |names| names.is_empty()));
//! ```

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::io::Errno;

/// The largest buffer tried: the kernel's limits are 64 KiB for a value and for a list.
const MAX_BUF: usize = 1 << 20;

/// `lgetxattr(path, name)`: the value, `None` when absent, unsupported or unreadable.
pub fn get(path: &Path, name: impl AsRef<OsStr>) -> Option<Vec<u8>> {
    let name = name.as_ref();
    read_growing(vec![0u8; 256], |buf| rustix::fs::lgetxattr(path, name, buf)).ok()
}

/// `fgetxattr(fd, name)`: [`get`] through an open file or directory.
pub fn get_fd(fd: BorrowedFd<'_>, name: impl AsRef<OsStr>) -> Option<Vec<u8>> {
    let name = name.as_ref();
    read_growing(vec![0u8; 256], |buf| rustix::fs::fgetxattr(fd, name, buf)).ok()
}

/// `llistxattr(path)`: the names, each followed by a NUL (empty when there are none).
/// The common case, a file without extended attributes, costs one system call and no
/// allocation.
pub fn list(path: &Path) -> io::Result<Vec<u8>> {
    list_with(|buf| rustix::fs::llistxattr(path, buf))
}

/// `flistxattr(fd)`: [`list`] through an open file or directory.
pub fn list_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    list_with(|buf| rustix::fs::flistxattr(fd, buf))
}

fn list_with(mut call: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut stack = [0u8; 1024];
    match call(&mut stack) {
        Ok(n) => Ok(stack[..n].to_vec()),
        Err(Errno::RANGE) => read_growing(vec![0u8; 4096], call).map_err(Into::into),
        Err(e) => Err(e.into()),
    }
}

/// Calls `call` with `buf`, four times larger each time the kernel says it is too small
/// (`ERANGE`), up to [`MAX_BUF`]; returns the bytes it filled.
fn read_growing(
    mut buf: Vec<u8>,
    mut call: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    loop {
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if buf.len() < MAX_BUF => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The extended attributes Go 1.60 writes into a layer tar for the entry open as `fd`, as
/// `SCHILY.xattr.<name>` PAX records: `security.capability`, `security.ima` and the
/// `user.*` ones except overlay's own `user.overlay.*`. Only regular files and directories
/// carry them: callers pass the descriptor of one (opened without following a symbolic
/// link), and nothing else.
pub fn pax_records(fd: BorrowedFd<'_>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut put = |name: &[u8], v: Vec<u8>| {
        let mut k = b"SCHILY.xattr.".to_vec();
        k.extend_from_slice(name);
        out.insert(k, v);
    };
    for name in ["security.capability", "security.ima"] {
        if let Some(v) = get_fd(fd, name) {
            put(name.as_bytes(), v);
        }
    }
    let names = list_fd(fd).unwrap_or_default();
    for name in names.split(|b| *b == 0) {
        if name.starts_with(b"user.")
            && !name.starts_with(b"user.overlay.")
            && let Some(v) = get_fd(fd, OsStr::from_bytes(name))
        {
            put(name, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_names_and_records() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let big = vec![b'v'; 3000];
        let set = |name: &str, v: &[u8]| {
            rustix::fs::lsetxattr(&f, name, v, rustix::fs::XattrFlags::empty())
        };
        if set("user.big", &big).is_err() {
            eprintln!("SKIPPING: no user xattrs on this file system");
            return;
        }
        set("user.overlay.x", b"o").unwrap();
        // Longer than the first buffer: read after growing it.
        assert_eq!(get(&f, "user.big").as_deref(), Some(&big[..]));
        assert_eq!(get(&f, "user.missing"), None);
        let names = list(&f).unwrap();
        let mut names: Vec<&[u8]> = names.split(|b| *b == 0).filter(|n| !n.is_empty()).collect();
        names.sort();
        assert_eq!(names, [&b"user.big"[..], b"user.overlay.x"]);
        let file = std::fs::File::open(&f).unwrap();
        let fd = std::os::fd::AsFd::as_fd(&file);
        assert_eq!(get_fd(fd, "user.big").as_deref(), Some(&big[..]));
        assert_eq!(list_fd(fd).unwrap().len(), list(&f).unwrap().len());
        let recs = pax_records(fd);
        assert_eq!(
            recs.keys().collect::<Vec<_>>(),
            [&b"SCHILY.xattr.user.big".to_vec()]
        );
        // Many names: longer than the stack buffer of `list` (ext4 keeps all of a
        // file's attributes in one 4 KiB block, so on a file of their own).
        let g = tmp.path().join("g");
        std::fs::write(&g, b"x").unwrap();
        for i in 0..50 {
            let name = format!("user.name-number-{i:03}");
            rustix::fs::lsetxattr(&g, name.as_str(), b"1", rustix::fs::XattrFlags::empty())
                .unwrap();
        }
        assert!(list(&g).unwrap().len() > 1024);
        assert_eq!(
            list(&g)
                .unwrap()
                .split(|b| *b == 0)
                .filter(|n| !n.is_empty())
                .count(),
            50
        );
    }
}
