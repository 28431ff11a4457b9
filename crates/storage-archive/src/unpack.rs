//! Extraction of an uncompressed layer tar into a directory, with Go's semantics
//! (`archive.UnpackLayer` for naive drivers, `archive.Unpack` with the overlay or
//! AUFS whiteout format), confined to the root by the kernel.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use storage_tarsplit::{Header, TarReader, TarTime};
use storage_types::{IdMap, to_host};

use crate::Error;
use crate::fsops::{self, Root};
use crate::gopath::{self, clean, in_root, join, split};

/// How whiteouts (`.wh.` entries) of the tar are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutFormat {
    /// Naive drivers (vfs, btrfs, …; Go's `UnpackLayer`): `.wh.X` deletes `X`,
    /// `.wh..wh..opq` empties the directory of what this tar did not create;
    /// the root entry's metadata is applied.
    #[default]
    Apply,
    /// Native overlay (Go's `Unpack` with the overlay converter): `.wh.X` becomes
    /// a 0/0 character device `X`, `.wh..wh..opq` sets `opaque_xattr` to `"y"` on
    /// the directory; the root entry is skipped.
    Overlay {
        /// `trusted.overlay.opaque` (root) or `user.overlay.opaque` (rootless).
        opaque_xattr: &'static str,
    },
    /// fuse-overlayfs and AUFS (Go's `Unpack` without converter): `.wh.` entries
    /// are stored verbatim as regular files; the root entry is skipped.
    Aufs,
}

/// Options of [`unpack`].
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Container → host UID mapping applied to every entry's owner (empty: identity).
    pub uid_map: Vec<IdMap>,
    /// Container → host GID mapping.
    pub gid_map: Vec<IdMap>,
    /// Only warn when `lchown` itself fails.
    pub ignore_chown_errors: bool,
    /// Whiteout handling (and with it: Go's `UnpackLayer` or `Unpack` semantics).
    pub whiteout: WhiteoutFormat,
    /// Go's `ForceMask`: every file gets this mode, devices and fifos become
    /// regular files, and the real owner/mode/type go into the
    /// `user.containers.override_stat` xattr.
    pub force_mask: Option<u32>,
    /// Running in a user namespace: device nodes are skipped, `EPERM` on xattrs
    /// is only a warning.
    pub in_user_ns: bool,
}

const WH: &[u8] = b".wh.";
const WH_META: &[u8] = b".wh..wh.";
const WH_OPAQUE: &[u8] = b".wh..wh..opq";
const WH_LINKDIR: &[u8] = b".wh..wh.plnk";
const OVERRIDE_XATTR: &str = "user.containers.override_stat";
/// Go's `maxTime` for `Chtimes` clamping: `time.Unix(0, 1<<63-1)`.
const MAX_SECS: i64 = i64::MAX / 1_000_000_000;

/// Extracts the uncompressed tar stream `tar` into `root` and returns the sum of
/// the entries' header sizes (what Go's naive `ApplyDiff` returns).
///
/// Every path is resolved inside `root` by the kernel (see the crate docs), `..`
/// is clamped at the root and absolute names land inside it; owners are mapped
/// through the options' ID maps (an unmappable owner is an error); directory
/// times are set after all entries. Duplicate paths are rejected with Go's
/// tar-split message. Nothing is fsynced.
pub fn unpack(tar: &mut dyn Read, root: &Path, opts: &UnpackOptions) -> Result<i64, Error> {
    unpack_sized(tar, root, opts).map(|u| u.header_size)
}

/// What [`unpack_sized`] extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// The sum of the entries' header sizes (what [`unpack`] returns).
    pub header_size: i64,
    /// Go's `directory.Size` of `root` after the extraction (the apparent sizes of
    /// its non-directories, each inode once), counted while extracting: `Some` only
    /// for the overlay and AUFS formats, when `root` was empty before and no entry
    /// replaced another; otherwise `None`, and a caller that needs it walks `root`.
    pub tree_size: Option<i64>,
}

/// [`unpack`], also counting the size of the extracted tree (see [`Unpacked`]), so
/// that a caller that needs it does not have to walk the tree again.
pub fn unpack_sized(
    tar: &mut dyn Read,
    root: &Path,
    opts: &UnpackOptions,
) -> Result<Unpacked, Error> {
    let root_fd = Root::open(root).map_err(|e| Error::Path {
        op: "open",
        path: root.display().to_string(),
        source: e,
    })?;
    let empty = std::fs::read_dir(root).is_ok_and(|mut d| d.next().is_none());
    let mut u = Unpacker {
        root: root_fd,
        opts,
        unpacked: storage_tarsplit::PathSet::default(),
        dirs: Vec::new(),
        plnk: HashMap::new(),
        plnk_dir: None,
        buf: vec![0u8; 1 << 20],
        euid: rustix::process::geteuid().as_raw(),
        warnings: Vec::new(),
        tree_size: (empty && opts.whiteout != WhiteoutFormat::Apply).then_some(0),
    };
    let result = u.run(tar);
    u.cleanup_tmp();
    for w in &u.warnings {
        tracing::warn!("{w}");
    }
    Ok(Unpacked {
        header_size: result?,
        tree_size: u.tree_size,
    })
}

struct Unpacker<'a> {
    root: Root,
    opts: &'a UnpackOptions,
    /// Root-relative paths extracted so far (UnpackLayer's opaque handling).
    unpacked: storage_tarsplit::PathSet,
    /// Directories whose times are set at the end: (path, atime, mtime).
    dirs: Vec<(Vec<u8>, Option<TarTime>, TarTime)>,
    /// `.wh..wh.plnk/<base>` headers (UnpackLayer).
    plnk: HashMap<Vec<u8>, Header>,
    /// Go's helper's `$TMPDIR` (`/temp-storage-extract*` in the root), holding the
    /// plnk files; created first and removed last, like Go's (so the root's mtime
    /// ends up "now", as with Go).
    plnk_dir: Option<Vec<u8>>,
    buf: Vec<u8>,
    euid: u32,
    warnings: Vec<String>,
    /// The size of what is in the root so far (see [`Unpacked::tree_size`]); `None`
    /// once it cannot be known without a walk.
    tree_size: Option<i64>,
}

/// Where an entry's data comes from.
enum Data<'r> {
    Tar(&'r mut dyn Read),
    File(File),
}

impl Read for Data<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Data::Tar(r) => r.read(buf),
            Data::File(f) => f.read(buf),
        }
    }
}

impl Unpacker<'_> {
    fn layer_mode(&self) -> bool {
        self.opts.whiteout == WhiteoutFormat::Apply
    }

    fn run(&mut self, tar: &mut dyn Read) -> Result<i64, Error> {
        if self.layer_mode() {
            self.make_tmp()?;
        }
        let mut tr = TarReader::new(tar);
        let mut size: i64 = 0;
        let mut seen = storage_tarsplit::PathSet::default();
        let mut root_hdr: Option<Header> = None;
        while let Some(hdr) = tr.next_header()? {
            size = size.wrapping_add(hdr.size);
            let name = clean(&hdr.name);
            if !seen.insert(&name) {
                return Err(Error::DuplicatePath);
            }
            if self.layer_mode() {
                self.layer_entry(&name, hdr, &mut tr)?;
            } else if let Some(h) = self.unpack_entry(&name, hdr, &mut tr)? {
                root_hdr = Some(h);
            }
        }
        let dirs = std::mem::take(&mut self.dirs);
        for (rel, atime, mtime) in dirs {
            let fd = self
                .root
                .resolve(&rel, OFlags::PATH)
                .map_err(|e| Error::path("chtimes", &rel, e))?;
            let times = Timestamps {
                last_access: chtimes_clamp(atime),
                last_modification: chtimes_clamp(Some(mtime)),
            };
            rustix::fs::utimensat(&fd, "", &times, AtFlags::EMPTY_PATH)
                .map_err(|e| Error::path("chtimes", &rel, e))?;
        }
        if !self.layer_mode() && self.opts.force_mask.is_some() {
            let value = match &root_hdr {
                Some(h) => format!("{}:{}:{:04o}:dir", h.uid, h.gid, (h.mode & 0o777) as u32),
                None => "0:0:0755:dir".to_owned(),
            };
            let fd = self.root.fd();
            set_xattr(fd, b".", OVERRIDE_XATTR.as_bytes(), value.as_bytes())
                .map_err(|e| Error::path("lsetxattr", b"", e))?;
        }
        Ok(size)
    }

    /// Go's `UnpackLayer` for one entry.
    fn layer_entry(
        &mut self,
        name: &[u8],
        hdr: Header,
        tr: &mut TarReader<&mut dyn Read>,
    ) -> Result<(), Error> {
        let rel = in_root(name);
        let (parent, base) = split(&rel);
        if name != b"/" {
            self.ensure_parent(parent, false)?;
        }
        if name.starts_with(WH_META) {
            if name.starts_with(WH_LINKDIR) && hdr.typeflag == b'0' {
                self.store_plnk(&rel, &hdr, tr)?;
            }
            if name != WH_OPAQUE {
                return Ok(());
            }
        }
        if base.starts_with(WH) && !rel.is_empty() {
            if base == WH_OPAQUE {
                self.opaque(parent)?;
            } else {
                let target = join(parent, &base[WH.len()..]);
                self.remove(&target)?;
            }
            return Ok(());
        }
        let mut src_hdr = hdr.clone();
        let mut data = Data::Tar(tr);
        if hdr.typeflag == b'1' && clean(&hdr.linkname).starts_with(WH_LINKDIR) {
            let link_base = go_base(&hdr.linkname);
            let Some(stored) = self.plnk.get_mut(&link_base) else {
                return Err(Error::InvalidAufsHardlink);
            };
            // Go remaps the stored header in place (a second link maps it again).
            remap(self.opts, stored)?;
            src_hdr = stored.clone();
            let dir = self.plnk_dir.clone().unwrap_or_default();
            let file_rel = join(&dir, &link_base);
            let fd = self
                .root
                .resolve(&file_rel, OFlags::RDONLY | OFlags::NOFOLLOW)
                .map_err(|e| Error::path("open", &file_rel, e))?;
            data = Data::File(File::from(fd));
        } else {
            remap(self.opts, &mut src_hdr)?;
        }
        self.create(&rel, &src_hdr, &mut data, true)?;
        if hdr.typeflag == b'5' {
            self.dirs.push((rel.clone(), hdr.atime, hdr.mtime));
        }
        self.unpacked.insert(&rel);
        Ok(())
    }

    /// Go's `Unpack` (overlay or AUFS whiteout format) for one entry; returns the
    /// header of a skipped root entry.
    fn unpack_entry(
        &mut self,
        name: &[u8],
        mut hdr: Header,
        tr: &mut TarReader<&mut dyn Read>,
    ) -> Result<Option<Header>, Error> {
        let rel = in_root(name);
        let (parent, base) = split(&rel);
        if name != b"/" {
            self.ensure_parent(parent, true)?;
        }
        if rel.is_empty() && name == b"." {
            // The root exists and is a directory: the entry is skipped.
            return Ok(Some(hdr));
        }
        remap(self.opts, &mut hdr)?;
        if let WhiteoutFormat::Overlay { opaque_xattr } = self.opts.whiteout {
            if base == WH_OPAQUE {
                let fd = self
                    .root
                    .resolve(parent, OFlags::PATH)
                    .map_err(|e| Error::path("setxattr", parent, e))?;
                set_xattr_follow(fd.as_fd(), opaque_xattr.as_bytes(), b"y")
                    .map_err(|e| Error::path("setxattr", parent, e))?;
                return Ok(None);
            }
            if base.starts_with(WH) && !rel.is_empty() {
                let target = join(parent, &base[WH.len()..]);
                let (tp, tb) = split(&target);
                let dir = match self.root.dir(tp) {
                    Ok(d) => d,
                    Err(Errno::NOTDIR) => return Ok(None),
                    Err(e) => return Err(Error::Os(e.into())),
                };
                match rustix::fs::mknodat(&*dir, tb, FileType::CharacterDevice, Mode::empty(), 0) {
                    Ok(()) => {}
                    Err(Errno::NOTDIR) => return Ok(None),
                    Err(e) => return Err(Error::Os(e.into())),
                }
                rustix::fs::chownat(
                    &*dir,
                    tb,
                    Some(uid_of(hdr.uid)),
                    Some(gid_of(hdr.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Error::path("chown", &target, e))?;
                return Ok(None);
            }
        }
        let do_chown = self.opts.force_mask.is_none();
        let mut data = Data::Tar(tr);
        self.create(&rel, &hdr, &mut data, do_chown)?;
        if hdr.typeflag == b'5' {
            self.dirs.push((rel, hdr.atime, hdr.mtime));
        }
        Ok(None)
    }

    /// Creates the missing parents of an entry (Go: only if `Lexists(parent)` says
    /// it does not exist).
    fn ensure_parent(&mut self, parent: &[u8], unpack: bool) -> Result<(), Error> {
        match self.root.dir(parent) {
            Err(Errno::NOENT) => {}
            _ => return Ok(()),
        }
        // Lexists: a dangling symlink counts as existing.
        let (pp, pb) = split(parent);
        if let Ok(d) = self.root.dir(pp)
            && rustix::fs::statat(&*d, pb, AtFlags::SYMLINK_NOFOLLOW).is_ok()
        {
            return Ok(());
        }
        let opts = self.opts;
        let euid = self.euid;
        if unpack {
            // MkdirAllAndChownNew(parent, 0755, root pair): umask applies.
            let uid = to_host(&opts.uid_map, 0).unwrap_or(0);
            let gid = to_host(&opts.gid_map, 0).unwrap_or(0);
            fsops::mkdir_all(&mut self.root, parent, 0o755, &mut |d, name| {
                let st = rustix::fs::statat(d, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| Error::path("lstat", name, e))?;
                if st.st_uid != uid || st.st_gid != gid {
                    rustix::fs::chownat(
                        d,
                        name,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| Error::path("chown", name, e))?;
                }
                Ok(())
            })
        } else {
            // UnpackLayer runs with umask 0: MkdirAll(parent, 0755) gives exactly 0755.
            let _ = euid;
            fsops::mkdir_all(&mut self.root, parent, 0o755, &mut |d, name| {
                rustix::fs::chmodat(d, name, Mode::from_raw_mode(0o755), AtFlags::empty())
                    .map_err(|e| Error::path("chmod", name, e))
            })
        }
    }

    /// `rm -rf` of a root-relative path (the root itself: its contents).
    fn remove(&mut self, rel: &[u8]) -> Result<(), Error> {
        self.root.invalidate();
        if rel.is_empty() {
            let fd = self
                .root
                .resolve(b"", OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| Error::path("unlinkat", rel, e))?;
            return fsops::remove_children(fd.as_fd()).map_err(|e| Error::path("unlinkat", rel, e));
        }
        let (parent, base) = split(rel);
        let dir = match self.root.dir(parent) {
            Ok(d) => d,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(Error::path("open", parent, e)),
        };
        fsops::remove_all_at(dir.as_fd(), base).map_err(|e| Error::path("unlinkat", rel, e))
    }

    /// UnpackLayer's `.wh..wh..opq`: remove every path under `dir` not extracted
    /// by this tar.
    fn opaque(&mut self, dir: &[u8]) -> Result<(), Error> {
        let (pp, pb) = split(dir);
        let pfd = self
            .root
            .dir(pp)
            .map_err(|e| Error::path("lstat", dir, e))?;
        let st = rustix::fs::statat(&*pfd, pb, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Error::path("lstat", dir, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Ok(());
        }
        let fd = fsops::open_subdir(pfd.as_fd(), pb).map_err(|e| Error::path("open", dir, e))?;
        self.root.invalidate();
        self.opaque_walk(fd.as_fd(), dir)
    }

    fn opaque_walk(&self, fd: BorrowedFd<'_>, rel: &[u8]) -> Result<(), Error> {
        let entries = fsops::list_dir(fd).map_err(|e| Error::path("open", rel, e))?;
        for (name, is_dir) in entries {
            let child = join(rel, &name);
            if !self.unpacked.contains(&child) {
                fsops::remove_all_at(fd, &name).map_err(|e| Error::path("unlinkat", &child, e))?;
            } else if is_dir {
                match fsops::open_subdir(fd, &name) {
                    Ok(sub) => self.opaque_walk(sub.as_fd(), &child)?,
                    Err(Errno::NOENT) => {}
                    Err(e) => return Err(Error::path("open", &child, e)),
                }
            }
        }
        Ok(())
    }

    /// UnpackLayer: keep a `.wh..wh.plnk/` regular file aside as a hard-link source.
    fn store_plnk(
        &mut self,
        rel: &[u8],
        hdr: &Header,
        tr: &mut TarReader<&mut dyn Read>,
    ) -> Result<(), Error> {
        let base = go_base(rel);
        let dir_rel = self.plnk_dir.clone().unwrap_or_default();
        let dir = self
            .root
            .dir(&dir_rel)
            .map_err(|e| Error::path("open", &dir_rel, e))?;
        let file_rel = join(&dir_rel, &base);
        let _ = rustix::fs::unlinkat(&*dir, base.as_slice(), AtFlags::empty());
        let fd = rustix::fs::openat(
            &*dir,
            base.as_slice(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::path("open", &file_rel, e))?;
        let mut f = File::from(fd);
        copy(tr, &mut f, &mut self.buf).map_err(|e| copy_error(e, &file_rel))?;
        self.plnk.insert(base, hdr.clone());
        Ok(())
    }

    fn make_tmp(&mut self) -> Result<(), Error> {
        let name = format!("temp-storage-extract{}", std::process::id()).into_bytes();
        let mut n = 0u32;
        let mut candidate = name.clone();
        loop {
            match rustix::fs::mkdirat(
                self.root.fd(),
                candidate.as_slice(),
                Mode::from_raw_mode(0o700),
            ) {
                Ok(()) => break,
                Err(Errno::EXIST) if n < 1000 => {
                    n += 1;
                    candidate = [name.as_slice(), format!("-{n}").as_bytes()].concat();
                }
                Err(e) => return Err(Error::path("mkdir", &candidate, e)),
            }
        }
        self.plnk_dir = Some(candidate);
        Ok(())
    }

    fn cleanup_tmp(&mut self) {
        if let Some(dir) = self.plnk_dir.take() {
            self.root.invalidate();
            let _ = fsops::remove_all_at(self.root.fd(), &dir);
        }
    }

    /// Go's `createTarFile`: create the entry at `rel` (an existing non-directory,
    /// or anything under a non-directory entry, is replaced), then owner, xattrs,
    /// mode and times.
    fn create(
        &mut self,
        rel: &[u8],
        hdr: &Header,
        data: &mut Data<'_>,
        do_chown: bool,
    ) -> Result<(), Error> {
        let opts = self.opts;
        let mut typeflag = hdr.typeflag;
        let mask = opts
            .force_mask
            .map_or((hdr.mode & 0o7777) as u32, |m| m & 0o7777);
        if opts.force_mask.is_some() && !matches!(typeflag, b'5' | b'2' | b'1') {
            typeflag = b'0';
        }
        let (parent, base) = split(rel);
        let op = match typeflag {
            b'5' => "mkdir",
            b'0' => "open",
            b'1' => "link",
            b'2' => "symlink",
            _ => "mknod",
        };
        let dir = self.root.dir(parent).map_err(|e| Error::path(op, rel, e))?;
        let dirfd = dir.as_fd();
        let mut file: Option<File> = None;
        // Hard links: whether chmod/chtimes apply (the target is not a symlink).
        let mut link_meta = true;
        match typeflag {
            b'5' => loop {
                match rustix::fs::mkdirat(dirfd, base, Mode::from_raw_mode(mask)) {
                    Ok(()) => break,
                    Err(Errno::EXIST) => {
                        let st = rustix::fs::statat(dirfd, base, AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(|e| Error::path("lstat", rel, e))?;
                        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                            break;
                        }
                        self.replace(dirfd, rel, base)?;
                    }
                    Err(e) => return Err(Error::path("mkdir", rel, e)),
                }
            },
            b'0' => {
                let fd = self
                    .retry_exist(dirfd, rel, base, |d| {
                        rustix::fs::openat(
                            d,
                            base,
                            OFlags::WRONLY
                                | OFlags::CREATE
                                | OFlags::EXCL
                                | OFlags::NOFOLLOW
                                | OFlags::CLOEXEC,
                            Mode::from_raw_mode(mask),
                        )
                    })
                    .map_err(|e| Error::path("open", rel, e))?;
                let mut f = File::from(fd);
                let n = copy(data, &mut f, &mut self.buf).map_err(|e| copy_error(e, rel))?;
                self.add_size(n);
                file = Some(f);
            }
            b'3' | b'4' | b'6' => {
                if typeflag != b'6' && opts.in_user_ns {
                    return Ok(());
                }
                let ft = match typeflag {
                    b'3' => FileType::CharacterDevice,
                    b'4' => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(hdr.devmajor as u32, hdr.devminor as u32);
                self.retry_exist(dirfd, rel, base, |d| {
                    rustix::fs::mknodat(d, base, ft, Mode::from_raw_mode(mask), dev)
                })
                .map_err(|e| Error::Os(e.into()))?;
            }
            b'1' => {
                let target = in_root(&hdr.linkname);
                let (tp, tb) = split(&target);
                let link_err = |e: Errno| Error::Path {
                    op: "link",
                    path: format!("{} {}", gopath::display(&target), gopath::display(rel)),
                    source: e.into(),
                };
                let tdir = self.root.dir(tp).map_err(link_err)?;
                self.retry_exist(dirfd, rel, base, |d| {
                    rustix::fs::linkat(&*tdir, tb, d, base, AtFlags::empty())
                })
                .map_err(link_err)?;
                link_meta = match rustix::fs::statat(&*tdir, tb, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => FileType::from_raw_mode(st.st_mode) != FileType::Symlink,
                    Err(_) => false,
                };
            }
            b'2' => {
                let linkname = hdr.linkname.as_slice();
                self.retry_exist(dirfd, rel, base, |d| {
                    rustix::fs::symlinkat(linkname, d, base)
                })
                .map_err(|e| Error::Path {
                    op: "symlink",
                    path: format!(
                        "{} {}",
                        String::from_utf8_lossy(linkname),
                        gopath::display(rel)
                    ),
                    source: e.into(),
                })?;
                // A symlink's size is the length of its target.
                self.add_size(linkname.len() as u64);
            }
            b'g' => return Ok(()),
            other => return Err(Error::UnhandledType(other)),
        }

        // ForceMask: record the real owner, mode and type.
        if opts.force_mask.is_some() && matches!(typeflag, b'0' | b'5') {
            let value = override_stat(hdr);
            self.set_xattr_entry(
                file.as_ref(),
                dirfd,
                base,
                OVERRIDE_XATTR.as_bytes(),
                value.as_bytes(),
            )
            .map_err(|e| Error::path("lsetxattr", rel, e))?;
        }

        if do_chown {
            self.chown(file.as_ref(), dirfd, rel, base, hdr)?;
        }

        for (key, value) in &hdr.xattrs {
            if key.as_slice() == b"security.selinux" {
                continue;
            }
            match self.set_xattr_entry(file.as_ref(), dirfd, base, key, value) {
                Ok(()) => {}
                Err(e) if e == Errno::NOTSUP || (opts.in_user_ns && e == Errno::PERM) => {
                    self.warnings.push(format!(
                        "ignored xattrs in archive: underlying filesystem doesn't support them: {}: lsetxattr {} {}: {}",
                        String::from_utf8_lossy(key),
                        gopath::display(rel),
                        String::from_utf8_lossy(key),
                        storage_types::go_io_error_text(&e.into())
                    ));
                }
                Err(e) => return Err(Error::path("lsetxattr", rel, e)),
            }
        }

        // Mode (not for symlinks; for hard links only when the target is not one).
        let meta = match typeflag {
            b'2' => false,
            b'1' => link_meta,
            _ => true,
        };
        if meta {
            let mode = Mode::from_raw_mode(mask);
            match &file {
                Some(f) => rustix::fs::fchmod(f, mode),
                None => rustix::fs::chmodat(dirfd, base, mode, AtFlags::empty()),
            }
            .map_err(|e| Error::path("chmod", rel, e))?;
        }

        // Times (directories: at the end).
        if typeflag == b'5' {
            return Ok(());
        }
        let atime = match hdr.atime {
            Some(a) if a > hdr.mtime => a,
            _ => hdr.mtime,
        };
        if typeflag == b'2' {
            let times = Timestamps {
                last_access: timespec(atime),
                last_modification: timespec(hdr.mtime),
            };
            rustix::fs::utimensat(dirfd, base, &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| Error::path("lutimesnano", rel, e))?;
        } else if meta {
            let times = Timestamps {
                last_access: chtimes_clamp(Some(atime)),
                last_modification: chtimes_clamp(Some(hdr.mtime)),
            };
            let r = match &file {
                Some(f) => rustix::fs::futimens(f, &times),
                None => rustix::fs::utimensat(dirfd, base, &times, AtFlags::empty()),
            };
            match r {
                Ok(()) => {}
                Err(Errno::NOENT) if typeflag == b'1' => {}
                Err(e) => return Err(Error::path("chtimes", rel, e)),
            }
        }
        Ok(())
    }

    /// Runs `op`; on `EEXIST` removes whatever is at `base` and tries once more.
    fn retry_exist<T>(
        &mut self,
        dirfd: BorrowedFd<'_>,
        rel: &[u8],
        base: &[u8],
        mut op: impl FnMut(BorrowedFd<'_>) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        match op(dirfd) {
            Err(Errno::EXIST) => {
                self.replace(dirfd, rel, base).map_err(|_| Errno::EXIST)?;
                op(dirfd)
            }
            other => other,
        }
    }

    /// Adds a new inode's size to the tree's (hard links add nothing: their inode
    /// is counted already; directories and devices have none).
    fn add_size(&mut self, n: u64) {
        if let Some(t) = &mut self.tree_size {
            *t = t.saturating_add(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Removes the existing entry `base` (of `rel`) before replacing it.
    fn replace(&mut self, dirfd: BorrowedFd<'_>, rel: &[u8], base: &[u8]) -> Result<(), Error> {
        self.root.invalidate();
        // What is removed is not counted out: the tree's size is unknown from now on.
        self.tree_size = None;
        if rel.is_empty() {
            // Replacing the root: Go's RemoveAll("/") in the chroot empties it and fails.
            let fd = self
                .root
                .resolve(b"", OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| Error::path("unlinkat", rel, e))?;
            fsops::remove_children(fd.as_fd()).map_err(|e| Error::path("unlinkat", rel, e))?;
            return Err(Error::path("unlinkat", rel, Errno::BUSY));
        }
        fsops::remove_all_at(dirfd, base).map_err(|e| Error::path("unlinkat", rel, e))
    }

    fn chown(
        &mut self,
        file: Option<&File>,
        dirfd: BorrowedFd<'_>,
        rel: &[u8],
        base: &[u8],
        hdr: &Header,
    ) -> Result<(), Error> {
        let (uid, gid) = (hdr.uid as u32, hdr.gid as u32);
        let st = match file {
            Some(f) => rustix::fs::fstat(f),
            None => rustix::fs::statat(dirfd, base, AtFlags::SYMLINK_NOFOLLOW),
        };
        if let Ok(st) = st
            && st.st_uid == uid
            && st.st_gid == gid
        {
            return Ok(());
        }
        let (u, g) = (Some(uid_of(hdr.uid)), Some(gid_of(hdr.gid)));
        let r = match file {
            Some(f) => rustix::fs::fchown(f, u, g),
            None => rustix::fs::chownat(dirfd, base, u, g, AtFlags::SYMLINK_NOFOLLOW),
        };
        if let Err(e) = r {
            let (path, uid, gid, source) = (gopath::display(rel), hdr.uid, hdr.gid, e.into());
            let err = if self.opts.in_user_ns && e == Errno::INVAL {
                Error::InsufficientIds {
                    path,
                    uid,
                    gid,
                    source,
                }
            } else {
                Error::Lchown {
                    path,
                    uid,
                    gid,
                    source,
                }
            };
            if !self.opts.ignore_chown_errors {
                return Err(err);
            }
            self.warnings.push(format!(
                "Chown error detected. Ignoring due to ignoreChownErrors flag: {err}"
            ));
        }
        let _ = self.euid;
        Ok(())
    }

    fn set_xattr_entry(
        &self,
        file: Option<&File>,
        dirfd: BorrowedFd<'_>,
        base: &[u8],
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Errno> {
        match file {
            Some(f) => rustix::fs::fsetxattr(f, key, value, XattrFlags::empty()),
            None => set_xattr(dirfd, base, key, value),
        }
    }
}

/// `lsetxattr` on `base` inside the (confined) directory `dir`.
fn set_xattr(dir: BorrowedFd<'_>, base: &[u8], key: &[u8], value: &[u8]) -> Result<(), Errno> {
    rustix::fs::lsetxattr(fsops::proc_path(dir, base), key, value, XattrFlags::empty())
}

/// `setxattr` on the file an `O_PATH` fd designates.
fn set_xattr_follow(fd: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> Result<(), Errno> {
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    rustix::fs::setxattr(path, key, value, XattrFlags::empty())
}

/// Go's `remapIDs` with the layer's maps (container → host).
fn remap(opts: &UnpackOptions, hdr: &mut Header) -> Result<(), Error> {
    if !opts.uid_map.is_empty() || !opts.gid_map.is_empty() {
        let map = |maps: &[IdMap], id: i64| -> Result<i64, Error> {
            u32::try_from(id)
                .ok()
                .and_then(|v| to_host(maps, v))
                .map(i64::from)
                .ok_or(Error::Unmappable(id))
        };
        hdr.uid = map(&opts.uid_map, hdr.uid)?;
        hdr.gid = map(&opts.gid_map, hdr.gid)?;
    }
    Ok(())
}

fn uid_of(id: i64) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(id as u32)
}

fn gid_of(id: i64) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(id as u32)
}

/// The 1.60 `user.containers.override_stat` value: `uid:gid:%04o mode:type`.
fn override_stat(hdr: &Header) -> String {
    let typ = match hdr.typeflag {
        b'5' => "dir".to_owned(),
        b'2' => "symlink".to_owned(),
        b'6' => "pipe".to_owned(),
        b'4' => format!("block-{}-{}", hdr.devmajor, hdr.devminor),
        b'3' => format!("char-{}-{}", hdr.devmajor, hdr.devminor),
        _ => "file".to_owned(),
    };
    format!(
        "{}:{}:{:04o}:{typ}",
        hdr.uid,
        hdr.gid,
        (hdr.mode & 0o7777) as u32
    )
}

/// Go's `system.Chtimes` clamping: before the epoch or after `maxTime` → epoch;
/// a missing (zero) time is before the epoch.
fn chtimes_clamp(t: Option<TarTime>) -> Timespec {
    match t {
        Some(t) if t.secs >= 0 && t.secs <= MAX_SECS => Timespec {
            tv_sec: t.secs,
            tv_nsec: i64::from(t.nanos),
        },
        _ => Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
    }
}

fn timespec(t: TarTime) -> Timespec {
    Timespec {
        tv_sec: t.secs,
        tv_nsec: i64::from(t.nanos),
    }
}

/// Go's `filepath.Base` of a name (after cleaning).
fn go_base(name: &[u8]) -> Vec<u8> {
    let c = clean(name);
    match c.iter().rposition(|&b| b == b'/') {
        Some(i) if c.len() > 1 => c[i + 1..].to_vec(),
        _ => c,
    }
}

/// Every time this much more of one file is written, writeback of what was just written is
/// started (`fadvise(DONTNEED)` starts it and does not wait), so that the `syncfs` before the
/// layer is marked complete finds most of a large file already on disk instead of writing it
/// all then. Files smaller than this are left to the kernel (and to that `syncfs`).
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// Copies `src` to the end of `dst`; returns the number of bytes written.
fn copy(src: &mut dyn Read, dst: &mut File, buf: &mut [u8]) -> io::Result<u64> {
    let (mut written, mut started) = (0u64, 0u64);
    loop {
        let n = match src.read(buf) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io::Error::new(e.kind(), ReadSide(e))),
        };
        dst.write_all(&buf[..n])?;
        written += n as u64;
        if written - started >= WRITEBACK_CHUNK {
            // Advice only: a failure changes nothing but speed.
            let _ = rustix::fs::fadvise(
                &*dst,
                started,
                std::num::NonZeroU64::new(written - started),
                rustix::fs::Advice::DontNeed,
            );
            started = written;
        }
    }
}

/// Marks an error of the source (tar stream) as opposed to the destination file.
#[derive(Debug)]
struct ReadSide(io::Error);

impl std::fmt::Display for ReadSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&storage_types::go_io_error_text(&self.0))
    }
}

impl std::error::Error for ReadSide {}

fn copy_error(e: io::Error, rel: &[u8]) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<ReadSide>()) {
        let kind = e.kind();
        let text = e.to_string();
        return Error::Read(io::Error::new(kind, text));
    }
    Error::path("write", rel, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(typeflag: u8, mode: i64) -> Header {
        Header {
            typeflag,
            mode,
            uid: 1,
            gid: 2,
            devmajor: 8,
            devminor: 1,
            ..Default::default()
        }
    }

    #[test]
    fn override_stat_values() {
        assert_eq!(override_stat(&hdr(b'0', 0o4755)), "1:2:4755:file");
        assert_eq!(override_stat(&hdr(b'5', 0o40700)), "1:2:0700:dir");
        assert_eq!(override_stat(&hdr(b'3', 0o666)), "1:2:0666:char-8-1");
        assert_eq!(override_stat(&hdr(b'4', 0o660)), "1:2:0660:block-8-1");
        assert_eq!(override_stat(&hdr(b'6', 0o600)), "1:2:0600:pipe");
        assert_eq!(override_stat(&hdr(b'2', 0o777)), "1:2:0777:symlink");
    }

    #[test]
    fn chtimes_clamping() {
        let t = |secs| Some(TarTime { secs, nanos: 5 });
        assert_eq!(chtimes_clamp(None).tv_sec, 0);
        assert_eq!(chtimes_clamp(t(-1)).tv_sec, 0);
        assert_eq!(chtimes_clamp(t(-1)).tv_nsec, 0);
        assert_eq!(chtimes_clamp(t(10)).tv_sec, 10);
        assert_eq!(chtimes_clamp(t(10)).tv_nsec, 5);
        assert_eq!(chtimes_clamp(t(MAX_SECS + 1)).tv_sec, 0);
    }

    #[test]
    fn base_names() {
        assert_eq!(go_base(b".wh..wh.plnk/123"), b"123");
        assert_eq!(go_base(b"/a/b/"), b"b");
        assert_eq!(go_base(b"x"), b"x");
        assert_eq!(go_base(b"/"), b"/");
    }

    #[test]
    fn remap_maps_or_fails() {
        let maps = vec![IdMap {
            container_id: 0,
            host_id: 1000,
            size: 10,
        }];
        let opts = UnpackOptions {
            uid_map: maps.clone(),
            gid_map: maps,
            ..Default::default()
        };
        let mut h = hdr(b'0', 0o644);
        remap(&opts, &mut h).unwrap();
        assert_eq!((h.uid, h.gid), (1001, 1002));
        let mut h = hdr(b'0', 0o644);
        h.gid = 10;
        assert_eq!(
            remap(&opts, &mut h).unwrap_err().to_string(),
            "container ID 10 cannot be mapped to a host ID"
        );
        let mut h = hdr(b'0', 0o644);
        h.uid = -1;
        assert!(remap(&opts, &mut h).is_err());
        // No maps: identity.
        let mut h = hdr(b'0', 0o644);
        remap(&UnpackOptions::default(), &mut h).unwrap();
        assert_eq!((h.uid, h.gid), (1, 2));
    }

    #[test]
    fn missing_root_is_an_error() {
        let err = unpack(
            &mut &[0u8; 1024][..],
            Path::new("/nonexistent/root"),
            &UnpackOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "open /nonexistent/root: no such file or directory"
        );
    }
}
