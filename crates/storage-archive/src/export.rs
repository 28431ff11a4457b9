//! Producing layer tars the way Go 1.60 does (`TarWithOptions`, `ExportChanges`).
//!
//! [`tar_dir`] walks a tree in lexical order (the root itself is not emitted) and
//! [`export_changes`] writes a list of [`Change`]s sorted by path, deletes as bare
//! `.wh.<name>` headers. Headers follow containers/storage 1.60 (`prepareAddFile`):
//! bare permission bits (plus setuid/setgid/sticky), empty uname/gname, uid/gid
//! mapped host → container (entries with an unmappable owner are skipped), `/` after
//! directory names, `security.capability`/`security.ima`/`user.*` (not
//! `user.overlay.*`) xattrs as `SCHILY.xattr.` PAX records, hard links by inode, no
//! sockets, mtime truncated to whole seconds (whiteouts of deletes: `now`, rounded by
//! Go's writer).
//!
//! Unlike Go, nothing outside the tree is read: entries are read relative to their
//! directory's descriptor without following a symbolic link ([`read_entry`]); directories
//! are descended through descriptors; a change whose path crosses a symbolic link (or a
//! missing directory) is skipped, as Go skips what it cannot add.
//!
//! [`TreeEntry::header`] is the header of one entry (Go's `FileInfoHeader` plus the xattrs)
//! and [`map_owner`] Go's owner mapping, which the overlay driver's native diff uses too;
//! the bytes come from `storage_tarsplit`'s [`TarWriter`], which writes what Go's
//! `archive/tar` writer writes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use storage_io::confined;
use storage_tarsplit::{Header, TarTime, TarWriter, typeflag};
use storage_types::IdMap;

use crate::changes::{Change, ChangeKind};

/// Go's owner mapping in `addTarFile`: the header's owner (the file's host owner) becomes
/// its container IDs. Whiteouts (`whiteout_device`: the entry is a 0/0 character device; or
/// a `.wh.` name) and identity maps keep the owner; `false` when an ID has no mapping (Go
/// logs and skips the entry).
pub fn map_owner(
    h: &mut Header,
    whiteout_device: bool,
    uid_map: &[IdMap],
    gid_map: &[IdMap],
) -> bool {
    let base = h.name.strip_suffix(b"/").unwrap_or(&h.name);
    let base = base.rsplit(|&c| c == b'/').next().unwrap_or(base);
    let identity = uid_map.is_empty() && gid_map.is_empty();
    if whiteout_device || base.starts_with(b".wh.") || identity {
        return true;
    }
    let id = |v: i64| u32::try_from(v).ok();
    match (
        id(h.uid).and_then(|u| storage_types::to_container(uid_map, u)),
        id(h.gid).and_then(|g| storage_types::to_container(gid_map, g)),
    ) {
        (Some(u), Some(g)) => {
            h.uid = i64::from(u);
            h.gid = i64::from(g);
            true
        }
        _ => false,
    }
}

/// One entry of a layer tree, read relative to its directory without following a symbolic
/// link ([`read_entry`]): what the exporters put in a header, and the open regular file or
/// directory that content and extended attributes are read through.
#[derive(Debug)]
pub struct TreeEntry {
    /// `lstat` of the entry; for an opened regular file or directory, `fstat` of it.
    pub stat: Stat,
    /// The target of a symbolic link (empty otherwise).
    pub link: Vec<u8>,
    /// A regular file, open for reading (`None` if it could not be opened).
    pub file: Option<File>,
    /// A directory, open for listing (`None` if it could not be opened).
    pub dir: Option<OwnedFd>,
}

impl TreeEntry {
    /// The entry's type.
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.stat.st_mode)
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        match (&self.file, &self.dir) {
            (Some(f), _) => Some(f.as_fd()),
            (None, Some(d)) => Some(d.as_fd()),
            (None, None) => None,
        }
    }

    /// Go's `FileInfoHeader` plus the exported xattrs, for an entry named `name` in the
    /// archive (`/` appended for a directory); `None` for a socket or an unknown type, which
    /// are not archived.
    pub fn header(&self, name: &[u8]) -> Option<Header> {
        let st = &self.stat;
        let ft = self.file_type();
        let mut h = Header {
            name: name.to_vec(),
            mode: i64::from(st.st_mode & 0o7777),
            uid: i64::from(st.st_uid),
            gid: i64::from(st.st_gid),
            // FileInfoHeader truncates to whole seconds ([V] 1.43: .7 s → down).
            mtime: TarTime {
                secs: st.st_mtime,
                nanos: 0,
            },
            ..Header::default()
        };
        match ft {
            FileType::RegularFile => {
                h.typeflag = typeflag::REG;
                h.size = st.st_size;
            }
            FileType::Directory => {
                h.typeflag = typeflag::DIR;
                h.name.push(b'/');
            }
            FileType::Symlink => {
                h.typeflag = typeflag::SYMLINK;
                h.linkname = self.link.clone();
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                h.typeflag = if ft == FileType::CharacterDevice {
                    typeflag::CHAR
                } else {
                    typeflag::BLOCK
                };
                h.devmajor = i64::from(rustix::fs::major(st.st_rdev));
                h.devminor = i64::from(rustix::fs::minor(st.st_rdev));
            }
            FileType::Fifo => h.typeflag = typeflag::FIFO,
            _ => return None,
        }
        h.xattrs = self.exported_xattrs();
        Some(h)
    }

    /// The extended attribute `name` of an opened regular file or directory.
    pub fn xattr(&self, name: &[u8]) -> Option<Vec<u8>> {
        crate::xattr::get_fd(self.fd()?, OsStr::from_bytes(name))
    }

    /// The xattrs 1.60 exports ([`crate::xattr::exported`]), read through the opened regular
    /// file or directory (the only types that can carry these namespaces).
    pub fn exported_xattrs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.fd().map(crate::xattr::exported).unwrap_or_default()
    }
}

/// Reads the entry `name` of the directory `dir` without following a symbolic link: its
/// `lstat`, a symbolic link's target, and a regular file or directory opened with
/// `O_NOFOLLOW` ([`storage_io::confined`]; a FIFO or device is never opened). A regular file
/// or directory replaced meanwhile by something else is not opened (its content then reads
/// as zeros, like a file that vanished).
pub fn read_entry(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<TreeEntry> {
    let stat = rustix::fs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW)?;
    let mut entry = TreeEntry {
        stat,
        link: Vec::new(),
        file: None,
        dir: None,
    };
    let fstat = |fd: BorrowedFd<'_>| rustix::fs::fstat(fd).ok();
    match entry.file_type() {
        FileType::RegularFile => {
            if let Ok(f) = confined::open_regular_at(dir, name) {
                entry.stat = *f.stat();
                entry.file = Some(f.into_file());
            }
        }
        FileType::Directory => {
            if let Ok(d) = confined::open_dir_at(dir, name)
                && let Some(st) = fstat(d.as_fd())
            {
                entry.stat = st;
                entry.dir = Some(d);
            }
        }
        FileType::Symlink => {
            entry.link =
                rustix::fs::readlinkat(dir, OsStr::from_bytes(name), Vec::new())?.into_bytes();
        }
        _ => {}
    }
    Ok(entry)
}

/// The names in the directory `dir`, sorted byte-wise, each with whether its directory
/// entry says it is a directory (Go's `WalkDir` view).
pub fn sorted_names(dir: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, bool)>> {
    let mut names = crate::fsops::list_dir(dir)?;
    names.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(names)
}

/// Go's `tarAppender`: one archive being built.
struct Appender<'a> {
    tw: TarWriter<io::BufWriter<&'a mut dyn Write>>,
    uid_map: &'a [IdMap],
    gid_map: &'a [IdMap],
    seen: HashMap<u64, Vec<u8>>,
}

impl Appender<'_> {
    /// Go's `addTarFile` for the entry `base` of the directory `dir`, named `name` in the
    /// archive. Returns the entry's directory descriptor when it is one.
    fn add(
        &mut self,
        dir: BorrowedFd<'_>,
        base: &[u8],
        name: &[u8],
    ) -> io::Result<Option<OwnedFd>> {
        let mut e = read_entry(dir, base)?;
        // Sockets and anything unknown are not archived.
        let Some(mut h) = e.header(name) else {
            return Ok(None);
        };
        let st = &e.stat;
        let ft = e.file_type();
        if ft != FileType::Directory && st.st_nlink > 1 {
            if let Some(old) = self.seen.get(&st.st_ino) {
                h.typeflag = typeflag::LINK;
                h.linkname = old.clone();
                h.size = 0;
            } else {
                self.seen.insert(st.st_ino, h.name.clone());
            }
        }
        let whiteout_device = ft == FileType::CharacterDevice && h.devmajor == 0 && h.devminor == 0;
        if !map_owner(&mut h, whiteout_device, self.uid_map, self.gid_map) {
            // Go: "Can't add file …" logged, entry skipped.
            return Ok(e.dir.take());
        }
        self.tw.write_header(&h)?;
        if h.typeflag == typeflag::REG && h.size > 0 {
            // A file that could not be opened, or shrank, is zero-filled by the writer,
            // keeping the archive well-formed (Go's copy would fail).
            if let Some(f) = &mut e.file {
                self.tw.copy_content(f)?;
            }
        }
        Ok(e.dir.take())
    }
}

/// Go's lexical `WalkDir` below the directory `dir` (names relative to the walk root in
/// `rel`); directories are descended through descriptors, never through a symbolic link.
fn walk(app: &mut Appender<'_>, dir: BorrowedFd<'_>, rel: &[u8]) -> io::Result<()> {
    let Ok(names) = sorted_names(dir) else {
        return Ok(());
    };
    for (name, is_dir) in names {
        let mut child = rel.to_vec();
        if !child.is_empty() {
            child.push(b'/');
        }
        child.extend_from_slice(&name);
        let sub = match app.add(dir, &name, &child) {
            Ok(sub) => sub,
            Err(e) if is_write_error(&e) => return Err(e),
            // Go logs "Can't add file …" and walks on, into the directory too.
            Err(_) => None,
        };
        if is_dir {
            let sub = match sub {
                Some(fd) => Some(fd),
                None => confined::open_dir_at(dir, &name).ok(),
            };
            if let Some(fd) = sub {
                walk(app, fd.as_fd(), &child)?;
            }
        }
    }
    Ok(())
}

/// Errors from the output are fatal; errors reading the tree are skipped (Go logs them).
fn is_write_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<WriteError>())
}

#[derive(Debug)]
struct WriteError(io::Error);

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for WriteError {}

/// Marks errors of the wrapped writer so that the walk can tell them apart.
struct TaggedWriter<'a>(&'a mut dyn Write);

impl Write for TaggedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .write(buf)
            .map_err(|e| io::Error::other(WriteError(e)))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(|e| io::Error::other(WriteError(e)))
    }
}

fn untag(e: io::Error) -> io::Error {
    if is_write_error(&e) {
        if let Some(inner) = e.into_inner() {
            if let Ok(w) = inner.downcast::<WriteError>() {
                return w.0;
            }
            return io::Error::other("write error");
        }
        return io::Error::other("write error");
    }
    e
}

/// Go 1.60 `TarWithOptions(root, {UIDMaps, GIDMaps})`, uncompressed: every entry below
/// `root` in lexical walk order (the root itself is not emitted).
pub fn tar_dir(
    root: &Path,
    uid_map: &[IdMap],
    gid_map: &[IdMap],
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut tagged = TaggedWriter(out);
    let run = |w: &mut dyn Write| -> io::Result<()> {
        let mut app = Appender {
            tw: TarWriter::new(io::BufWriter::with_capacity(64 * 1024, w)),
            uid_map,
            gid_map,
            seen: HashMap::new(),
        };
        let opened = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        if let Ok(fd) = opened {
            walk(&mut app, fd.as_fd(), b"")?;
        }
        app.tw.finish()?;
        Ok(())
    };
    run(&mut tagged).map_err(untag)
}

/// Go's `ExportChanges(root, changes, uidMaps, gidMaps)`: changes sorted by path;
/// deletes become bare `.wh.<name>` headers (mode 0, owner 0, mtime now); the rest are
/// added from `root` like [`tar_dir`] entries.
pub fn export_changes(
    root: &Path,
    changes: &[Change],
    uid_map: &[IdMap],
    gid_map: &[IdMap],
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut sorted: Vec<&Change> = changes.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut tagged = TaggedWriter(out);
    let run = |w: &mut dyn Write| -> io::Result<()> {
        let mut app = Appender {
            tw: TarWriter::new(io::BufWriter::with_capacity(64 * 1024, w)),
            uid_map,
            gid_map,
            seen: HashMap::new(),
        };
        // Entries are read through their directory, resolved inside `root` without
        // following a symbolic link; the last directory is kept (changes come sorted).
        let layer = confined::Root::open(root).ok();
        let mut cached: Option<(Vec<u8>, OwnedFd)> = None;
        for change in sorted {
            let rel = change.path.trim_start_matches('/');
            if change.kind == ChangeKind::Delete {
                let (dir, base) = match rel.rfind('/') {
                    Some(i) => (&rel[..=i], &rel[i + 1..]),
                    None => ("", rel),
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let h = Header {
                    name: format!("{dir}.wh.{base}").into_bytes(),
                    typeflag: typeflag::REG,
                    // The writer rounds it to whole seconds, as Go's does.
                    mtime: TarTime {
                        secs: now.as_secs() as i64,
                        nanos: now.subsec_nanos(),
                    },
                    ..Header::default()
                };
                app.tw.write_header(&h)?;
            } else {
                let (dir, base) = confined::split(rel.as_bytes());
                let dir_fd = match (&layer, &cached) {
                    (_, Some((d, fd))) if d.as_slice() == dir => Some(fd),
                    (Some(layer), _) => {
                        cached = layer.open_dir(dir).ok().map(|fd| (dir.to_vec(), fd));
                        cached.as_ref().map(|(_, fd)| fd)
                    }
                    (None, _) => None,
                };
                // A missing or symlinked directory on the way: skipped (Go logs "Can't add
                // file …"; it would follow the link).
                if let Some(fd) = dir_fd {
                    match app.add(fd.as_fd(), base, rel.as_bytes()) {
                        Ok(_) => {}
                        Err(e) if is_write_error(&e) => return Err(e),
                        Err(_) => {}
                    }
                }
            }
        }
        app.tw.finish()?;
        Ok(())
    };
    run(&mut tagged).map_err(untag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_whiteouts_are_bare_headers() {
        let tmp = tempfile::tempdir().unwrap();
        let changes = [
            Change {
                path: "/z".into(),
                kind: ChangeKind::Delete,
            },
            Change {
                path: "/a/b".into(),
                kind: ChangeKind::Delete,
            },
        ];
        let mut out = Vec::new();
        export_changes(tmp.path(), &changes, &[], &[], &mut out).unwrap();
        assert_eq!(out.len(), 512 * 4);
        assert_eq!(&out[..8], b"a/.wh.b\0");
        assert_eq!(&out[512..519], b".wh.z\0\0");
        for blk in [&out[..512], &out[512..1024]] {
            assert_eq!(blk[156], b'0');
            assert_eq!(&blk[100..108], b"0000000\0");
            assert_eq!(&blk[265..297], &[0u8; 32][..]);
        }
    }
}
