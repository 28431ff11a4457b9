//! The confined filesystem layer of the extractor: every path is resolved inside
//! the layer root by the kernel (`openat2` with `RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS`), so `..` and symbolic links (absolute or relative)
//! can never leave the root, exactly as if the extraction ran chrooted (Go's
//! model). Operations then act on `(directory fd, final component)` pairs and
//! never follow a symbolic link in the final component unless Go does.
//!
//! The resolution itself is `storage_io::confined` (shared with the readers of recorded
//! names, which follow no symbolic link at all). Everything here is safe Rust over
//! `rustix`; there is no `unsafe` in the crate.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use storage_io::confined;

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
        let fd = OwnedFd::from(confined::Root::open(path)?);
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

    /// `openat2(root, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, retried on
    /// `EAGAIN` ([`confined::Follow::InRoot`]).
    pub(crate) fn resolve(&self, rel: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
        confined::resolve_at(self.fd.as_fd(), rel, flags, confined::Follow::InRoot)
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

/// `rm -rf` of an entry of a directory, and of a directory's content, without following
/// symbolic links.
pub(crate) use storage_io::confined::{remove_all_at, remove_children};

/// The entries of a directory (without `.` and `..`), with whether each is a directory.
pub(crate) use storage_io::confined::list_dir;

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
