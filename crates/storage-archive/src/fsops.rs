//! The confined filesystem layer of the extractor: every path is resolved inside
//! the layer root by the kernel (`openat2` with `RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS`), so `..` and symbolic links (absolute or relative)
//! can never leave the root, exactly as if the extraction ran chrooted (Go's
//! model). Operations then act on `(directory fd, final component)` pairs and
//! never follow a symbolic link in the final component unless Go does.
//!
//! Everything here is safe Rust over `rustix`; there is no `unsafe` in the crate.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::gopath;

/// How many resolved directories are kept open.
const CACHE_MAX: usize = 256;

/// A layer root opened for confined extraction, with a cache of resolved
/// directory fds (the hot path: many files in the same directory cost one
/// resolution).
pub(crate) struct Root {
    fd: Rc<OwnedFd>,
    cache: HashMap<Vec<u8>, Rc<OwnedFd>>,
}

impl Root {
    pub(crate) fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd: Rc::new(fd),
            cache: HashMap::new(),
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Resolves a root-relative directory (following symbolic links, confined).
    pub(crate) fn dir(&mut self, rel: &[u8]) -> Result<Rc<OwnedFd>, Errno> {
        if rel.is_empty() {
            return Ok(Rc::clone(&self.fd));
        }
        if let Some(fd) = self.cache.get(rel) {
            return Ok(Rc::clone(fd));
        }
        let fd = Rc::new(self.resolve(rel, OFlags::PATH | OFlags::DIRECTORY)?);
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(rel.to_vec(), Rc::clone(&fd));
        Ok(fd)
    }

    /// `openat2(root, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, retried on `EAGAIN`.
    pub(crate) fn resolve(&self, rel: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
        let path: &[u8] = if rel.is_empty() { b"." } else { rel };
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(
                &*self.fd,
                path,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Err(Errno::AGAIN) if tries < 64 => tries += 1,
                Err(Errno::NOSYS) => return Err(Errno::NOSYS),
                other => return other,
            }
        }
    }

    /// Forgets every cached directory (after anything was removed or replaced).
    pub(crate) fn invalidate(&mut self) {
        self.cache.clear();
    }
}

/// A path through `/proc/self/fd` naming `base` inside the directory `dir`,
/// for the calls that have no `*at` form (xattrs). The directory is already
/// confined; `base` is a single component, never `..`.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, base: &[u8]) -> PathBuf {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(base);
    PathBuf::from(OsStr::from_bytes(&p))
}

/// `rm -rf` of `name` inside `dir`, without following symbolic links. A missing
/// entry is not an error.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR | Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    remove_children(sub.as_fd())?;
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes everything inside the directory `dir`.
pub(crate) fn remove_children(dir: BorrowedFd<'_>) -> Result<(), Errno> {
    for name in list_dir(dir)? {
        remove_all_at(dir, &name.0)?;
    }
    Ok(())
}

/// The entries of a directory (without `.` and `..`), with whether each is a
/// directory (from `d_type`, or `lstat` when the file system does not say).
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<(Vec<u8>, bool)>, Errno> {
    let mut d = rustix::fs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(entry) = d.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            rustix::fs::FileType::Directory => true,
            rustix::fs::FileType::Unknown => {
                rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| {
                        rustix::fs::FileType::from_raw_mode(st.st_mode)
                            == rustix::fs::FileType::Directory
                    })
                    .unwrap_or(false)
            }
            _ => false,
        };
        out.push((name.to_vec(), is_dir));
    }
    Ok(out)
}

/// Opens the directory `name` inside `dir` for reading, not following a final symlink.
pub(crate) fn open_subdir(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Callback for each directory [`mkdir_all`] creates: (parent fd, name).
pub(crate) type OnCreated<'a> = dyn FnMut(BorrowedFd<'_>, &[u8]) -> Result<(), crate::Error> + 'a;

/// Creates every missing directory of `rel` (Go's `MkdirAll` inside the root),
/// calling `created` for each new one with its parent fd and name.
pub(crate) fn mkdir_all(
    root: &mut Root,
    rel: &[u8],
    mode: u32,
    created: &mut OnCreated<'_>,
) -> Result<(), crate::Error> {
    let mut end = 0;
    while end < rel.len() {
        end = rel[end..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(rel.len(), |i| end + i);
        let prefix = &rel[..end];
        match root.dir(prefix) {
            Ok(_) => {}
            Err(Errno::NOENT) => {
                let (parent, base) = gopath::split(prefix);
                let pfd = root
                    .dir(parent)
                    .map_err(|e| crate::Error::path("mkdir", prefix, e))?;
                match rustix::fs::mkdirat(&*pfd, base, Mode::from_raw_mode(mode)) {
                    Ok(()) => created(pfd.as_fd(), base)?,
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(crate::Error::path("mkdir", prefix, e)),
                }
                root.dir(prefix)
                    .map_err(|_| crate::Error::path("mkdir", prefix, Errno::EXIST))?;
            }
            Err(e) => return Err(crate::Error::path("mkdir", prefix, e)),
        }
        end += 1;
    }
    Ok(())
}
