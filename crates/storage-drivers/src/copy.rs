//! Go's `DirCopy` in content mode: a full copy of a tree keeping owners, modes, times,
//! xattrs, hard links, special files and holes.
//!
//! Everything goes through `*at()` calls on directory fds, so no path is resolved twice.
//! Regular files are reflinked (`FICLONE`) when the file system allows it, else copied
//! hole by hole (`SEEK_DATA`/`SEEK_HOLE`) with `copy_file_range`, else with
//! `pread`/`pwrite`; a method that fails with EXDEV/ENOSYS/EOPNOTSUPP is switched off
//! for the rest of the copy, like Go.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, SeekFrom, Timestamps, XattrFlags};
use rustix::io::Errno;
use storage_types::{Error, Result};

/// Fixed for one copy: the destination root (hard link targets are relative to it) and
/// the source root (for messages).
struct Ctx<'a> {
    dst_root: BorrowedFd<'a>,
    src_base: &'a Path,
}

struct State {
    clone_ok: bool,
    range_ok: bool,
    rootless: bool,
    /// Our effective IDs: a new file already has them unless its dir is setgid.
    euid: u32,
    egid: u32,
    /// The process umask, when known (`/proc/self/status`).
    umask: Option<u32>,
    /// (dev, ino) of already copied multi-link regular files → their path relative to the
    /// destination root.
    links: HashMap<(u64, u64), CString>,
    /// Reusable buffers.
    names: Vec<u8>,
    value: Vec<u8>,
    data: Vec<u8>,
}

fn err(op: &str, path: &Path, e: Errno) -> Error {
    Error::io(op, path, std::io::Error::from(e))
}

fn open_dir_at(dirfd: BorrowedFd<'_>, name: &CStr) -> std::result::Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Raises the soft open-file limit to the hard one, once, as Go's runtime does at
/// start-up: the copy holds two directory fds per level of nesting.
fn raise_nofile_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut lim = getrlimit(Resource::Nofile);
        if lim.current < lim.maximum {
            lim.current = lim.maximum;
            let _ = setrlimit(Resource::Nofile, lim);
        }
    });
}

/// Copies the tree at `src` into the existing directory `dst` (whose own metadata is
/// set from `src`'s root, like Go's walk that includes the root).
pub(crate) fn dir_copy(src: &Path, dst: &Path) -> Result<()> {
    raise_nofile_limit();
    let open_root = |p: &Path| {
        rustix::fs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err("open", p, e))
    };
    let src_fd = open_root(src)?;
    let dst_fd = open_root(dst)?;
    let mut st = State {
        clone_ok: true,
        range_ok: true,
        rootless: storage_userns::is_rootless(),
        euid: rustix::process::geteuid().as_raw(),
        egid: rustix::process::getegid().as_raw(),
        umask: read_umask(),
        links: HashMap::new(),
        names: vec![0; 4096],
        value: vec![0; 4096],
        data: Vec::new(),
    };
    let root_stat = rustix::fs::fstat(&src_fd).map_err(|e| err("stat", src, e))?;
    let dst_setgid = is_setgid(dst_fd.as_fd(), dst)?;
    let ctx = Ctx {
        dst_root: dst_fd.as_fd(),
        src_base: src,
    };
    copy_children(
        src_fd.as_fd(),
        dst_fd.as_fd(),
        &ctx,
        &mut Vec::new(),
        dst_setgid,
        &mut st,
    )?;
    finish_dir(src_fd.as_fd(), dst_fd.as_fd(), &root_stat, dst, &mut st)
}

fn is_setgid(fd: BorrowedFd<'_>, path: &Path) -> Result<bool> {
    let st = rustix::fs::fstat(fd).map_err(|e| err("stat", path, e))?;
    Ok(st.st_mode & 0o2000 != 0)
}

/// The umask from `/proc/self/status` (reading it with `umask(2)` would change it).
fn read_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
}

/// Owner, xattrs, mode and times of a copied directory (after its children).
fn finish_dir(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    stat: &rustix::fs::Stat,
    path: &Path,
    st: &mut State,
) -> Result<()> {
    rustix::fs::fchown(
        dst,
        Some(rustix::fs::Uid::from_raw(stat.st_uid)),
        Some(rustix::fs::Gid::from_raw(stat.st_gid)),
    )
    .map_err(|e| err("lchown", path, e))?;
    copy_xattrs(src, dst, path, true, st)?;
    rustix::fs::fchmod(dst, Mode::from_raw_mode(stat.st_mode & 0o7777))
        .map_err(|e| err("chmod", path, e))?;
    rustix::fs::futimens(dst, &times(stat)).map_err(|e| err("utimes", path, e))
}

fn times(stat: &rustix::fs::Stat) -> Timestamps {
    Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: stat.st_atime,
            tv_nsec: stat.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: stat.st_mtime,
            tv_nsec: stat.st_mtime_nsec as _,
        },
    }
}

/// Reads the xattr `name` of `fd` into `st.value`; `Ok(None)` when absent/unsupported.
fn fget(
    fd: BorrowedFd<'_>,
    name: &CStr,
    st: &mut State,
) -> std::result::Result<Option<usize>, Errno> {
    loop {
        match rustix::fs::fgetxattr(fd, name, &mut st.value[..]) {
            Ok(n) => return Ok(Some(n)),
            Err(Errno::RANGE) => {
                let n = rustix::fs::fgetxattr_query(fd, name)?;
                st.value.resize(n.max(st.value.len() * 2), 0);
            }
            Err(Errno::NODATA) | Err(Errno::NOTSUP) | Err(Errno::PERM) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

fn copy_one_xattr(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    name: &CStr,
    path: &Path,
    st: &mut State,
    tolerate_eperm: bool,
) -> Result<()> {
    let Some(n) = fget(src, name, st).map_err(|e| err("lgetxattr", path, e))? else {
        return Ok(());
    };
    match rustix::fs::fsetxattr(dst, name, &st.value[..n], XattrFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::PERM) if tolerate_eperm => Ok(()),
        Err(e) => Err(err("lsetxattr", path, e)),
    }
}

/// Go's `doCopyXattrs`: `security.capability`, every `user.*`, and (root only)
/// `trusted.overlay.opaque`.
fn copy_xattrs(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    path: &Path,
    is_dir: bool,
    st: &mut State,
) -> Result<()> {
    let n = loop {
        match rustix::fs::flistxattr(src, &mut st.names[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) => {
                let n =
                    rustix::fs::flistxattr_query(src).map_err(|e| err("llistxattr", path, e))?;
                st.names.resize(n.max(st.names.len() * 2), 0);
            }
            Err(Errno::NOTSUP) => break 0,
            Err(e) => return Err(err("llistxattr", path, e)),
        }
    };
    // One listing tells which of the attributes Go copies exist (most files have none).
    if n == 0 {
        return Ok(());
    }
    let list = st.names[..n].to_vec();
    let has = |want: &[u8]| list.split(|b| *b == 0).any(|n| n == want);
    if has(b"security.capability") {
        copy_one_xattr(src, dst, c"security.capability", path, st, false)?;
    }
    for name in list.split(|b| *b == 0).filter(|n| n.starts_with(b"user.")) {
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        copy_one_xattr(src, dst, &cname, path, st, st.rootless)?;
    }
    if is_dir && !st.rootless && has(b"trusted.overlay.opaque") {
        copy_one_xattr(src, dst, c"trusted.overlay.opaque", path, st, false)?;
    }
    Ok(())
}

fn rel_display(base: &Path, rel: &[u8]) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    base.join(std::ffi::OsStr::from_bytes(rel))
}

/// Copies the children of `src` into `dst`. `rel` is the destination path relative
/// to the destination root (`dst_root`), used for hard links.
fn copy_children(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    ctx: &Ctx<'_>,
    rel: &mut Vec<u8>,
    dst_setgid: bool,
    st: &mut State,
) -> Result<()> {
    let mut dir = rustix::fs::Dir::read_from(src)
        .map_err(|e| err("open", &rel_display(ctx.src_base, rel), e))?;
    let mut names: Vec<CString> = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(|e| err("readdirent", &rel_display(ctx.src_base, rel), e))?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        names.push(name.to_owned());
    }
    drop(dir);
    for name in names {
        let rel_len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let r = copy_entry(src, dst, ctx, &name, rel, dst_setgid, st);
        rel.truncate(rel_len);
        r?;
    }
    Ok(())
}

fn copy_entry(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    ctx: &Ctx<'_>,
    name: &CStr,
    rel: &mut Vec<u8>,
    dst_setgid: bool,
    st: &mut State,
) -> Result<()> {
    let path = rel_display(ctx.src_base, rel);
    let stat = rustix::fs::statat(src, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| err("lstat", &path, e))?;
    let ftype = FileType::from_raw_mode(stat.st_mode);
    let perm = Mode::from_raw_mode(stat.st_mode & 0o7777);
    let owner = (
        Some(rustix::fs::Uid::from_raw(stat.st_uid)),
        Some(rustix::fs::Gid::from_raw(stat.st_gid)),
    );
    match ftype {
        FileType::Directory => {
            // Created 0700 and given its real mode after its children.
            let created = match rustix::fs::mkdirat(dst, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(e) => return Err(err("mkdir", &path, e)),
            };
            let s = open_dir_at(src, name).map_err(|e| err("open", &path, e))?;
            let d = open_dir_at(dst, name).map_err(|e| err("open", &path, e))?;
            // A directory made inside a setgid one inherits the bit (until finish_dir).
            let setgid = if created {
                dst_setgid
            } else {
                is_setgid(d.as_fd(), &path)?
            };
            copy_children(s.as_fd(), d.as_fd(), ctx, rel, setgid, st)?;
            finish_dir(s.as_fd(), d.as_fd(), &stat, &path, st)
        }
        FileType::RegularFile => {
            let key = (stat.st_dev, stat.st_ino);
            if stat.st_nlink > 1
                && let Some(first) = st.links.get(&key)
            {
                return rustix::fs::linkat(
                    ctx.dst_root,
                    first.as_c_str(),
                    dst,
                    name,
                    AtFlags::empty(),
                )
                .map_err(|e| err("link", &path, e));
            }
            let s = rustix::fs::openat(
                src,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| err("open", &path, e))?;
            let d = rustix::fs::openat(
                dst,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                perm,
            )
            .map_err(|e| err("open", &path, e))?;
            copy_data(s.as_fd(), d.as_fd(), stat.st_size as u64, st)
                .map_err(|e| err("copy", &path, e))?;
            if stat.st_nlink > 1
                && let Ok(c) = CString::new(rel.clone())
            {
                st.links.insert(key, c);
            }
            // A new file is owned by our effective IDs (group: the dir's when it is
            // setgid) and has `perm & !umask`: skip the calls that would change nothing.
            let owned = stat.st_uid == st.euid && stat.st_gid == st.egid && !dst_setgid;
            if !owned {
                rustix::fs::fchown(&d, owner.0, owner.1).map_err(|e| err("lchown", &path, e))?;
            }
            copy_xattrs(s.as_fd(), d.as_fd(), &path, false, st)?;
            let bits = stat.st_mode & 0o7777;
            let mode_ok = owned && bits & 0o7000 == 0 && st.umask.is_some_and(|u| bits & u == 0);
            if !mode_ok {
                rustix::fs::fchmod(&d, perm).map_err(|e| err("chmod", &path, e))?;
            }
            rustix::fs::futimens(&d, &times(&stat)).map_err(|e| err("utimes", &path, e))
        }
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(src, name, Vec::new())
                .map_err(|e| err("readlink", &path, e))?;
            rustix::fs::symlinkat(target.as_c_str(), dst, name)
                .map_err(|e| err("symlink", &path, e))?;
            let owned = stat.st_uid == st.euid && stat.st_gid == st.egid && !dst_setgid;
            if !owned {
                rustix::fs::chownat(dst, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| err("lchown", &path, e))?;
            }
            rustix::fs::utimensat(dst, name, &times(&stat), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| err("utimes", &path, e))
        }
        FileType::Fifo | FileType::Socket | FileType::CharacterDevice | FileType::BlockDevice => {
            let is_dev = matches!(ftype, FileType::CharacterDevice | FileType::BlockDevice);
            if is_dev && st.rootless {
                return Ok(());
            }
            let rdev = if is_dev { stat.st_rdev } else { 0 };
            rustix::fs::mknodat(dst, name, ftype, perm, rdev)
                .map_err(|e| err("mknod", &path, e))?;
            rustix::fs::chownat(dst, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| err("lchown", &path, e))?;
            rustix::fs::chmodat(dst, name, perm, AtFlags::empty())
                .map_err(|e| err("chmod", &path, e))?;
            rustix::fs::utimensat(dst, name, &times(&stat), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| err("utimes", &path, e))
        }
        FileType::Unknown => Err(Error::msg(
            storage_types::ErrorKind::Other,
            format!("unknown file type for {}", path.display()),
        )),
    }
}

fn disables(e: Errno) -> bool {
    matches!(
        e,
        Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL
    )
}

/// Copies the content of `src` to the empty `dst`, keeping holes.
fn copy_data(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    size: u64,
    st: &mut State,
) -> std::result::Result<(), Errno> {
    if size == 0 {
        return Ok(());
    }
    if st.clone_ok {
        match rustix::fs::ioctl_ficlone(dst, src) {
            Ok(()) => return Ok(()),
            Err(e) => {
                st.clone_ok = false;
                if e == Errno::XDEV {
                    st.range_ok = false;
                }
            }
        }
    }
    if st.range_ok {
        match copy_segments(src, dst, size, st, true) {
            Ok(end) => return set_len(dst, end, size),
            Err(e) if disables(e) => {
                st.range_ok = false;
                rustix::fs::ftruncate(dst, 0)?;
            }
            Err(e) => return Err(e),
        }
    }
    let end = copy_segments(src, dst, size, st, false)?;
    set_len(dst, end, size)
}

/// Extends `dst` over a trailing hole (only needed when the data stopped short).
fn set_len(dst: BorrowedFd<'_>, end: u64, size: u64) -> std::result::Result<(), Errno> {
    if end < size {
        rustix::fs::ftruncate(dst, size)
    } else {
        Ok(())
    }
}

/// Files up to this size are copied in one go: looking for holes costs more than it saves.
const SMALL_FILE: u64 = 64 * 1024;

/// Copies each data segment of `src` (whole file when SEEK_DATA is unsupported).
fn copy_segments(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    size: u64,
    st: &mut State,
    use_range: bool,
) -> std::result::Result<u64, Errno> {
    if size <= SMALL_FILE {
        return copy_range(src, dst, 0, size, st, use_range);
    }
    let mut pos = 0u64;
    let mut written = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL) if pos == 0 => 0,
            Err(e) => return Err(e),
        };
        let end = match rustix::fs::seek(src, SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(_) => size,
        };
        if end <= start {
            break;
        }
        written = copy_range(src, dst, start, end, st, use_range)?;
        pos = end;
    }
    Ok(written)
}

fn copy_range(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    start: u64,
    end: u64,
    st: &mut State,
    use_range: bool,
) -> std::result::Result<u64, Errno> {
    let mut off_in = start;
    let mut off_out = start;
    if use_range {
        while off_in < end {
            let want = usize::try_from(end - off_in)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            let n =
                rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want)?;
            if n == 0 {
                break;
            }
        }
        return Ok(off_out);
    }
    if st.data.len() < 1 << 17 {
        st.data.resize(1 << 17, 0);
    }
    while off_in < end {
        let want = usize::try_from(end - off_in)
            .unwrap_or(usize::MAX)
            .min(st.data.len());
        let n = rustix::io::pread(src, &mut st.data[..want], off_in)?;
        if n == 0 {
            break;
        }
        let mut written = 0;
        while written < n {
            let w = rustix::io::pwrite(dst, &st.data[written..n], off_out)?;
            written += w;
            off_out += w as u64;
        }
        off_in += n as u64;
    }
    Ok(off_out)
}
