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
//! [`file_header`] is the header of one file (Go's `FileInfoHeader` plus the xattrs), which
//! the overlay driver's native diff uses too; the bytes come from `storage_tarsplit`'s
//! [`TarWriter`], which writes what Go's `archive/tar` writer writes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use storage_tarsplit::{Header, TarTime, TarWriter, typeflag};
use storage_types::IdMap;

use crate::changes::{Change, ChangeKind};

/// The header Go's `addTarFile` starts from for the file at `path` (metadata `md`), named
/// `name` in the archive: Go's `FileInfoHeader` (permission bits with setuid/setgid/sticky,
/// owner, mtime truncated to whole seconds, `/` after directory names, link target, device
/// numbers) plus the extended attributes Go 1.60 exports ([`crate::xattr::exported`]).
/// `None` for sockets and other files a layer tar does not hold.
pub fn file_header(path: &Path, md: &std::fs::Metadata, name: &[u8]) -> io::Result<Option<Header>> {
    let ft = md.file_type();
    let mut h = Header {
        name: name.to_vec(),
        mode: i64::from(md.mode() & 0o7777),
        uid: i64::from(md.uid()),
        gid: i64::from(md.gid()),
        // FileInfoHeader truncates to whole seconds (1.43: .7 s → down).
        mtime: TarTime {
            secs: md.mtime(),
            nanos: 0,
        },
        ..Header::default()
    };
    if ft.is_file() {
        h.typeflag = typeflag::REG;
        h.size = md.size() as i64;
    } else if ft.is_dir() {
        h.typeflag = typeflag::DIR;
        h.name.push(b'/');
    } else if ft.is_symlink() {
        h.typeflag = typeflag::SYMLINK;
        h.linkname = std::fs::read_link(path)?.as_os_str().as_bytes().to_vec();
    } else if ft.is_char_device() || ft.is_block_device() {
        h.typeflag = if ft.is_char_device() {
            typeflag::CHAR
        } else {
            typeflag::BLOCK
        };
        let rdev = md.rdev();
        h.devmajor = i64::from(rustix::fs::major(rdev));
        h.devminor = i64::from(rustix::fs::minor(rdev));
    } else if ft.is_fifo() {
        h.typeflag = typeflag::FIFO;
    } else {
        return Ok(None);
    }
    h.xattrs = crate::xattr::exported(path, md);
    Ok(Some(h))
}

/// Go's owner mapping in `addTarFile`: the header's owner becomes the container IDs of the
/// file's host owner. Whiteouts (a 0/0 character device, or a `.wh.` name) and identity
/// maps keep the owner; `false` when an ID has no mapping (Go logs and skips the entry).
pub fn map_owner(
    h: &mut Header,
    md: &std::fs::Metadata,
    uid_map: &[IdMap],
    gid_map: &[IdMap],
) -> bool {
    let is_overlay_whiteout = md.file_type().is_char_device() && md.rdev() == 0;
    let base = h.name.strip_suffix(b"/").unwrap_or(&h.name);
    let base = base.rsplit(|&c| c == b'/').next().unwrap_or(base);
    let identity = uid_map.is_empty() && gid_map.is_empty();
    if is_overlay_whiteout || base.starts_with(b".wh.") || identity {
        return true;
    }
    match (
        storage_types::to_container(uid_map, md.uid()),
        storage_types::to_container(gid_map, md.gid()),
    ) {
        (Some(u), Some(g)) => {
            h.uid = i64::from(u);
            h.gid = i64::from(g);
            true
        }
        _ => false,
    }
}

/// Go's `tarAppender`: one archive being built.
struct Appender<'a> {
    tw: TarWriter<io::BufWriter<&'a mut dyn Write>>,
    uid_map: &'a [IdMap],
    gid_map: &'a [IdMap],
    seen: HashMap<u64, Vec<u8>>,
}

impl Appender<'_> {
    /// Go's `addTarFile(path, name)`. Returns `Ok(false)` when the entry was skipped.
    fn add(&mut self, path: &Path, name: &[u8]) -> io::Result<bool> {
        let md = std::fs::symlink_metadata(path)?;
        let Some(mut h) = file_header(path, &md, name)? else {
            return Ok(false);
        };
        if !md.is_dir() && md.nlink() > 1 {
            if let Some(old) = self.seen.get(&md.ino()) {
                h.typeflag = typeflag::LINK;
                h.linkname = old.clone();
                h.size = 0;
            } else {
                self.seen.insert(md.ino(), h.name.clone());
            }
        }
        if !map_owner(&mut h, &md, self.uid_map, self.gid_map) {
            // Go: "Can't add file …" logged, entry skipped.
            return Ok(false);
        }
        self.tw.write_header(&h)?;
        if h.typeflag == typeflag::REG && h.size > 0 {
            // The file may have vanished or become unreadable: Go's copy then fails;
            // we keep the archive well-formed by zero-filling.
            if let Ok(mut f) = File::open(path) {
                self.tw.copy_content(&mut f)?;
            }
        }
        Ok(true)
    }
}

/// Go's lexical `WalkDir` below `dir` (names relative to the walk root in `rel`).
fn walk(app: &mut Appender<'_>, dir: &Path, rel: &[u8]) -> io::Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    // WalkDir's view: names sorted byte-wise, "is a directory" from the dirent type.
    let mut names: Vec<(std::ffi::OsString, bool)> = rd
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name(), e.file_type().is_ok_and(|t| t.is_dir())))
        .collect();
    names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (name, is_dir) in names {
        let path = dir.join(&name);
        let mut child = rel.to_vec();
        if !child.is_empty() {
            child.push(b'/');
        }
        child.extend_from_slice(name.as_bytes());
        match app.add(&path, &child) {
            Ok(_) => {}
            Err(e) if is_write_error(&e) => return Err(e),
            // Go logs "Can't add file …" and walks on, into the directory too.
            Err(_) => {}
        }
        if is_dir {
            walk(app, &path, &child)?;
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
        walk(&mut app, root, b"")?;
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
                match app.add(&root.join(rel), rel.as_bytes()) {
                    Ok(_) => {}
                    Err(e) if is_write_error(&e) => return Err(e),
                    Err(_) => {}
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
