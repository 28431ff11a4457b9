//! Opening a layer's files by a recorded name without ever leaving the layer.
//!
//! A layer directory holds whatever its tar said, including symbolic links to absolute host
//! paths (`etc -> /etc`, `x -> /root/.ssh/id_rsa`). Whoever reads a layer's files by a name
//! recorded elsewhere (tar-split reassembly, exports, `check`, `dedup`, `copy`) must get the
//! layer's own file or an error, never a host file reached through such a link. Everything
//! here resolves relative to a descriptor on the layer root:
//!
//! * [`Root::open_dir`] resolves a directory with `openat2(RESOLVE_IN_ROOT |
//!   RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`: `..` cannot climb above the root and a
//!   symbolic link in any component fails (`ELOOP`) instead of being followed. Mount points
//!   inside the layer are crossed (overlay and btrfs layers may legitimately hold them).
//!   Without `openat2` (Linux < 5.6, or a seccomp filter refusing it) the path is walked one
//!   component at a time with `O_NOFOLLOW`, which gives the same answer.
//! * [`open_regular_at`] opens a file in such a directory with `O_NOFOLLOW | O_NONBLOCK |
//!   O_NOCTTY` (a symbolic link fails, a FIFO cannot block, a terminal is not adopted) and
//!   `fstat`s it: anything but a regular file is refused before a byte is read.
//! * [`Root::resolve`] is the raw resolution shared with the extractor, which follows
//!   symbolic links *inside* the root (`Follow::InRoot`, the semantics of extracting in a
//!   chroot) where readers follow none (`Follow::Never`).
//!
//! Refusals are `io::Error`s whose text says why (`is a symbolic link (not followed in a
//! layer)`, `is a character device, not a regular file`); genuine OS errors keep their errno,
//! so callers can word them like Go (`open <path>: no such file or directory`).
//!
//! ```
//! use storage_io::confined::Root;
//! # fn main() -> std::io::Result<()> {
//! let dir = tempfile::tempdir()?;
//! std::fs::create_dir(dir.path().join("etc"))?;
//! std::fs::write(dir.path().join("etc/hostname"), b"box\n")?;
//! std::os::unix::fs::symlink("/", dir.path().join("host"))?;
//!
//! let root = Root::open(dir.path())?;
//! let f = root.open_regular(b"etc/hostname")?;
//! assert_eq!(f.size(), 4);
//! // `host/etc/hostname` would be the host's file: refused, not followed.
//! let e = root.open_regular(b"host/etc/hostname").unwrap_err();
//! assert!(e.to_string().contains("symbolic link"), "{e}");
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// How [`Root::resolve`] treats symbolic links on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Any symbolic link fails the resolution with `ELOOP` (readers of recorded names).
    Never,
    /// Symbolic links are followed, but resolve inside the root as if it were `/` (the
    /// extractor, like Go's chrooted one). Magic links (`/proc/self/fd/N`) still fail.
    InRoot,
}

/// A layer root opened for confined access (an `O_PATH` descriptor and the path it was
/// opened from, for messages).
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl AsFd for Root {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Root> for OwnedFd {
    fn from(root: Root) -> OwnedFd {
        root.fd
    }
}

impl Root {
    /// Opens the directory `path`. The root itself is trusted: symbolic links in `path` are
    /// followed, as for any path a caller gives.
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path the root was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `openat2(root, rel, flags | O_CLOEXEC)` confined to the root; `rel` empty means the
    /// root itself. Errors are raw errnos (`ELOOP` for a refused symbolic link).
    pub fn resolve(&self, rel: &[u8], flags: OFlags, follow: Follow) -> Result<OwnedFd, Errno> {
        resolve_at(self.fd.as_fd(), rel, flags, follow)
    }

    /// The directory `rel` (relative to the root, `""` for the root) as an `O_PATH`
    /// descriptor, following no symbolic link.
    pub fn open_dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        self.resolve(rel, OFlags::PATH | OFlags::DIRECTORY, Follow::Never)
            .map_err(|e| refusal(e, Component::Directory))
    }

    /// The directory `rel` (relative to the root, `""` for the root) opened for listing,
    /// following no symbolic link.
    pub fn open_dir_for_listing(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        self.resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY, Follow::Never)
            .map_err(|e| refusal(e, Component::Directory))
    }

    /// The regular file `rel` (relative to the root), following no symbolic link.
    pub fn open_regular(&self, rel: &[u8]) -> io::Result<RegularFile> {
        let (dir, base) = split(rel);
        if base.is_empty() {
            return Err(not_regular(FileType::Directory));
        }
        let dir = self.open_dir(dir)?;
        open_regular_at(&dir, base)
    }
}

/// Which part of a path a refused symbolic link was.
#[derive(Clone, Copy)]
enum Component {
    Directory,
    Last,
}

/// Splits a relative path into its directory part (possibly empty) and its last component.
pub fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    }
}

/// [`Root::resolve`] relative to any directory descriptor taken as the root.
pub fn resolve_at(
    dir: BorrowedFd<'_>,
    rel: &[u8],
    flags: OFlags,
    follow: Follow,
) -> Result<OwnedFd, Errno> {
    let path: &[u8] = if rel.is_empty() { b"." } else { rel };
    let resolve = match follow {
        Follow::Never => {
            ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
        }
        Follow::InRoot => ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    };
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags | OFlags::CLOEXEC, Mode::empty(), resolve) {
            // The kernel asks for a retry when a rename raced the lookup.
            Err(Errno::AGAIN) if tries < 64 => tries += 1,
            Err(Errno::NOSYS | Errno::PERM | Errno::AGAIN) if follow == Follow::Never => {
                return walk_nofollow(dir, path, flags);
            }
            other => return other,
        }
    }
}

/// [`Follow::Never`] without `openat2`: one component at a time, each opened with
/// `O_NOFOLLOW` (names are relative; `..` stays at the root as `RESOLVE_IN_ROOT` keeps it).
fn walk_nofollow(root: BorrowedFd<'_>, path: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
    let mut stack: Vec<OwnedFd> = Vec::new();
    let parts: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    let Some((last, dirs)) = parts.split_last() else {
        return rustix::fs::openat(root, ".", flags | OFlags::CLOEXEC, Mode::empty());
    };
    for part in dirs {
        if *part == b".." {
            stack.pop();
            continue;
        }
        let cur = stack.last().map_or(root, |f| f.as_fd());
        let next = subdir_nofollow(cur, part)?;
        stack.push(next);
    }
    if *last == b".." {
        stack.pop();
        let cur = stack.last().map_or(root, |f| f.as_fd());
        return rustix::fs::openat(cur, ".", flags | OFlags::CLOEXEC, Mode::empty());
    }
    let cur = stack.last().map_or(root, |f| f.as_fd());
    if flags.contains(OFlags::DIRECTORY) {
        // Opened for reading: `O_PATH | O_NOFOLLOW` would open a final link itself.
        return subdir_nofollow(cur, last);
    }
    rustix::fs::openat(
        cur,
        *last,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens the directory `name` in `dir` for reading without following a symbolic link in
/// its place: a link fails with `ELOOP` (the kernel says `ENOTDIR` when `O_DIRECTORY` and
/// `O_NOFOLLOW` meet a link; an `lstat` tells the two apart).
fn subdir_nofollow(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Err(Errno::NOTDIR) => {
            let st = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                Err(Errno::LOOP)
            } else {
                Err(Errno::NOTDIR)
            }
        }
        other => other,
    }
}

/// A regular file of a layer, opened by [`open_regular_at`] / [`Root::open_regular`], with
/// the `fstat` taken right after the open.
#[derive(Debug)]
pub struct RegularFile {
    file: File,
    stat: Stat,
}

impl RegularFile {
    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The open file, by value.
    pub fn into_file(self) -> File {
        self.file
    }

    /// Its size when it was opened.
    pub fn size(&self) -> u64 {
        u64::try_from(self.stat.st_size).unwrap_or(0)
    }

    /// Its `fstat` when it was opened.
    pub fn stat(&self) -> &Stat {
        &self.stat
    }
}

/// Opens `name` (one component) in the directory `dir` for reading, if it is a regular
/// file: a symbolic link is not followed, a FIFO does not block, and anything but a regular
/// file is refused (after the open, before any read).
pub fn open_regular_at(dir: impl AsFd, name: &[u8]) -> io::Result<RegularFile> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| refusal(e, Component::Last))?;
    let stat = rustix::fs::fstat(&fd)?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        return Err(not_regular(kind));
    }
    Ok(RegularFile {
        file: File::from(fd),
        stat,
    })
}

/// Opens the directory `name` (one component) in `dir` for listing, not following a
/// symbolic link in its place.
pub fn open_dir_at(dir: impl AsFd, name: &[u8]) -> io::Result<OwnedFd> {
    subdir_nofollow(dir.as_fd(), name).map_err(|e| refusal(e, Component::Last))
}

/// The entries of the directory `dir` (without `.` and `..`), each with whether it is a
/// directory (from `d_type`, or an `lstat` when the file system does not say; a symbolic
/// link to a directory is not one).
pub fn list_dir(dir: impl AsFd) -> Result<Vec<(Vec<u8>, bool)>, Errno> {
    let dir = dir.as_fd();
    let mut d = rustix::fs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(entry) = d.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => {
                rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
            }
            _ => false,
        };
        out.push((name.to_vec(), is_dir));
    }
    Ok(out)
}

/// `rm -rf` of `name` inside `dir`, without following symbolic links. A missing entry is
/// not an error.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    use rustix::fs::AtFlags;
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
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
    let sub = subdir_nofollow(dir, name)?;
    remove_children(sub.as_fd())?;
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes everything inside the directory `dir` (open for listing).
pub fn remove_children(dir: BorrowedFd<'_>) -> Result<(), Errno> {
    for (name, _) in list_dir(dir)? {
        remove_all_at(dir, &name)?;
    }
    Ok(())
}

/// Whether `e` says that nothing is at the path (`ENOENT`, or `ENOTDIR` for a component
/// that is not a directory): the cases where a reader may look elsewhere. Judged by the
/// error's kind, so that it holds for errors re-worded with the path.
pub fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Whether `e` is one of this module's refusals (a symbolic link or a non-regular file
/// where a regular file or directory was wanted), rather than an OS error.
pub fn is_refusal(e: &io::Error) -> bool {
    e.raw_os_error().is_none() && e.get_ref().is_some_and(|r| r.is::<Refused>())
}

/// The error text of a refusal.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refusal(e: Errno, at: Component) -> io::Error {
    if e != Errno::LOOP {
        return e.into();
    }
    let text = match at {
        Component::Directory => {
            "a directory on the path is a symbolic link (not followed in a layer)"
        }
        Component::Last => "is a symbolic link (not followed in a layer)",
    };
    io::Error::new(io::ErrorKind::InvalidData, Refused(text.to_string()))
}

fn not_regular(kind: FileType) -> io::Error {
    let what = match kind {
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "of an unknown type",
    };
    io::Error::new(
        io::ErrorKind::InvalidData,
        Refused(format!("is {what}, not a regular file")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn layer() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("a/b")).unwrap();
        std::fs::write(p.join("a/b/f"), b"inside").unwrap();
        std::os::unix::fs::symlink("/", p.join("up")).unwrap();
        std::os::unix::fs::symlink("a", p.join("rel")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("a/pw")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            p.join("a/fifo"),
            Mode::from_raw_mode(0o600),
        )
        .unwrap();
        dir
    }

    #[test]
    fn regular_files_open_and_links_are_refused() {
        let dir = layer();
        let root = Root::open(dir.path()).unwrap();
        let mut got = String::new();
        let f = root.open_regular(b"a/b/f").unwrap();
        assert_eq!(f.size(), 6);
        f.into_file().read_to_string(&mut got).unwrap();
        assert_eq!(got, "inside");
        for (rel, want) in [
            (
                &b"up/etc/passwd"[..],
                "a directory on the path is a symbolic link",
            ),
            (b"rel/b/f", "a directory on the path is a symbolic link"),
            (b"a/pw", "is a symbolic link"),
            (b"a/fifo", "is a FIFO, not a regular file"),
            (b"a/b", "is a directory, not a regular file"),
        ] {
            let e = root.open_regular(rel).unwrap_err();
            assert!(e.to_string().starts_with(want), "{rel:?}: {e}");
            assert!(is_refusal(&e) && !is_absent(&e), "{rel:?}: {e}");
        }
        let e = root.open_regular(b"a/missing").unwrap_err();
        assert!(is_absent(&e) && !is_refusal(&e));
        let e = root.open_regular(b"a/b/f/x").unwrap_err();
        assert!(is_absent(&e), "{e}");
    }

    #[test]
    fn dot_dot_stays_in_the_root() {
        let dir = layer();
        std::fs::write(dir.path().join("top"), b"t").unwrap();
        let root = Root::open(&dir.path().join("a")).unwrap();
        // `..` above the root is the root itself, as RESOLVE_IN_ROOT says.
        assert!(root.open_regular(b"../../b/f").is_ok());
        assert!(is_absent(&root.open_regular(b"../top").unwrap_err()));
    }

    #[test]
    fn the_fallback_walk_agrees_with_openat2() {
        let dir = layer();
        let root = Root::open(dir.path()).unwrap();
        let flags = OFlags::PATH | OFlags::DIRECTORY;
        for rel in [
            &b""[..],
            b"a",
            b"a/b",
            b"./a//b/",
            b"../a/../a/b",
            b"up",
            b"up/etc",
            b"rel/b",
            b"a/b/f",
            b"missing/x",
        ] {
            let via_openat2 = root.resolve(rel, flags, Follow::Never).map(|_| ());
            let path: &[u8] = if rel.is_empty() { b"." } else { rel };
            let walked = walk_nofollow(root.as_fd(), path, flags).map(|_| ());
            assert_eq!(via_openat2, walked, "{:?}", String::from_utf8_lossy(rel));
        }
    }
}
