//! Native overlay diffs, read straight from a layer's upper (`diff/`) directory.
//!
//! * [`diff`]: Go 1.60's `TarWithOptions(diff, {WhiteoutFormat: Overlay, WhiteoutData:
//!   lowers})`: entries like the naive export, except that 0/0 character devices become
//!   `.wh.<name>` (mode 0, owner not mapped) and an opaque directory that hides something
//!   of a lower layer is followed by `<dir>/.wh..wh..opq` (dir permissions and owner,
//!   mtime 0).
//! * [`changes`]: Go's `OverlayChanges`.
//! * [`dir_size`]: Go's `directory.Size`.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::FileType;
use storage_archive::export::{GoTarWriter, TarHeader, read_entry, sorted_names};
use storage_types::IdMap;

use crate::{Change, ChangeKind};

const REG: u8 = b'0';
const LINK: u8 = b'1';

fn is_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    storage_archive::xattr::get(path, name)
}

/// Whether `dir` carries the opaque xattr with exactly the value `y`.
pub(crate) fn is_opaque(dir: &Path, opaque_xattr: &str) -> bool {
    xattr(dir, opaque_xattr).is_some_and(|v| v == b"y")
}

/// What the nearest lower that knows `rel` says about it.
enum InLower {
    /// Present (not a whiteout) in some lower.
    Exists(std::fs::Metadata),
    /// Deleted by a whiteout of the path or an ancestor, or absent everywhere.
    Absent,
}

/// The nearest-lower rule shared by the opaque marker and `OverlayChanges`.
fn lookup_lowers(lowers: &[PathBuf], rel: &str) -> InLower {
    for lower in lowers {
        let path = lower.join(rel);
        if let Ok(md) = std::fs::metadata(&path) {
            if is_whiteout(&md) {
                return InLower::Absent;
            }
            return InLower::Exists(md);
        }
        // A whiteout of an ancestor hides the path in this lower and all below it.
        let mut anc = Path::new(rel).parent();
        while let Some(a) = anc {
            if a.as_os_str().is_empty() {
                break;
            }
            if std::fs::symlink_metadata(lower.join(a)).is_ok_and(|m| is_whiteout(&m)) {
                return InLower::Absent;
            }
            anc = a.parent();
        }
    }
    InLower::Absent
}

fn map_id(maps: &[IdMap], id: u32) -> Option<u32> {
    storage_types::to_container(maps, id)
}

struct Exporter<'a, W: Write> {
    tw: GoTarWriter<W>,
    uid_map: &'a [IdMap],
    gid_map: &'a [IdMap],
    lowers: &'a [PathBuf],
    opaque_xattr: &'a str,
    seen: HashMap<u64, Vec<u8>>,
}

impl<W: Write> Exporter<'_, W> {
    /// Go's `addTarFile` with the overlay whiteout converter, for the entry `base` of the
    /// directory `dir` (read without following symbolic links), named `name` in the archive.
    /// Returns the entry's directory descriptor when it is one.
    fn add(
        &mut self,
        dir: BorrowedFd<'_>,
        base: &[u8],
        name: &[u8],
    ) -> io::Result<Option<OwnedFd>> {
        let mut e = read_entry(dir, base)?;
        let Some(mut h) = e.header(name) else {
            return Ok(e.dir.take());
        };
        let st = &e.stat;
        let ft = e.file_type();
        let mut first_link = false;
        if ft != FileType::Directory && st.st_nlink > 1 {
            if let Some(old) = self.seen.get(&st.st_ino) {
                h.typeflag = LINK;
                h.linkname = old.clone();
                h.size = 0;
            } else {
                first_link = true;
            }
        }
        let whiteout = ft == FileType::CharacterDevice && st.st_rdev == 0;
        let identity = self.uid_map.is_empty() && self.gid_map.is_empty();
        let last = name.rsplit(|&c| c == b'/').next().unwrap_or(name);
        if !(whiteout || last.starts_with(b".wh.") || identity) {
            match (
                map_id(self.uid_map, st.st_uid),
                map_id(self.gid_map, st.st_gid),
            ) {
                (Some(u), Some(g)) => {
                    h.uid = i64::from(u);
                    h.gid = i64::from(g);
                }
                _ => return Ok(e.dir.take()),
            }
        }
        // The overlay → AUFS converter.
        let mut marker = None;
        if whiteout {
            let (dir, file) = match name.iter().rposition(|&c| c == b'/') {
                Some(i) => (&name[..=i], &name[i + 1..]),
                None => (&b""[..], name),
            };
            let mut wh = dir.to_vec();
            wh.extend_from_slice(b".wh.");
            wh.extend_from_slice(file);
            h.name = wh;
            h.mode = 0;
            // A shared whiteout inode keeps its stale link name (Go quirk, T7).
            h.typeflag = REG;
            h.size = 0;
            h.devmajor = 0;
            h.devminor = 0;
        } else if ft == FileType::Directory
            && e.xattr(self.opaque_xattr.as_bytes())
                .is_some_and(|v| v == b"y")
        {
            let rel = String::from_utf8_lossy(name).into_owned();
            if matches!(lookup_lowers(self.lowers, &rel), InLower::Exists(_)) {
                let mut n = name.to_vec();
                n.extend_from_slice(b"/.wh..wh..opq");
                marker = Some(TarHeader {
                    name: n,
                    typeflag: REG,
                    mode: h.mode & 0o777,
                    uid: h.uid,
                    gid: h.gid,
                    uname: h.uname.clone(),
                    gname: h.gname.clone(),
                    mtime: 0,
                    ..TarHeader::default()
                });
            }
        }
        if first_link {
            self.seen.insert(st.st_ino, h.name.clone());
        }
        self.tw.write_header(&h)?;
        if let Some(m) = marker {
            self.tw.write_header(&m)?;
        } else if h.typeflag == REG && h.size > 0 {
            // A file that could not be opened, or shrank meanwhile, is zero-filled by the
            // writer, keeping the archive valid.
            if let Some(f) = &mut e.file {
                self.tw.copy_content(f)?;
            }
        }
        Ok(e.dir.take())
    }

    /// The entries below the directory `dir` in lexical order, descending through
    /// descriptors (never through a symbolic link).
    fn walk(&mut self, dir: BorrowedFd<'_>, rel: &[u8]) -> io::Result<()> {
        let Ok(names) = sorted_names(dir) else {
            return Ok(());
        };
        for (name, _) in names {
            let mut child = rel.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&name);
            if let Some(sub) = self.add(dir, &name, &child)? {
                self.walk(sub.as_fd(), &child)?;
            }
        }
        Ok(())
    }
}

/// Writes the native diff of the upper dir `upper` (lower diff dirs nearest first).
pub(crate) fn diff(
    upper: &Path,
    lowers: &[PathBuf],
    uid_map: &[IdMap],
    gid_map: &[IdMap],
    opaque_xattr: &str,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut ex = Exporter {
        tw: GoTarWriter::new(out),
        uid_map,
        gid_map,
        lowers,
        opaque_xattr,
        seen: HashMap::new(),
    };
    let root = rustix::fs::open(
        upper,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    );
    if let Ok(fd) = root {
        ex.walk(fd.as_fd(), b"")?;
    }
    ex.tw.finish()?;
    Ok(())
}

/// Go's `sameFsTime`: equal seconds and (equal nanoseconds or either is 0).
fn same_fs_time(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.mtime() == b.mtime()
        && (a.mtime_nsec() == b.mtime_nsec() || a.mtime_nsec() == 0 || b.mtime_nsec() == 0)
}

/// Go's `OverlayChanges(lowers, upper)`, in walk order.
pub(crate) fn changes(
    upper: &Path,
    lowers: &[PathBuf],
    opaque_xattr: &str,
) -> io::Result<Vec<Change>> {
    if lowers.is_empty() {
        // Nothing to compare with: names and types from readdir (what the walk below gives
        // then, without a stat and an xattr read per entry).
        return storage_archive::changes::overlay_changes_without_lowers(upper);
    }
    let mut out = Vec::new();
    let mut changed_dirs: HashSet<String> = HashSet::new();
    walk_changes(upper, "", lowers, opaque_xattr, &mut out, &mut changed_dirs)?;
    Ok(out)
}

fn walk_changes(
    dir: &Path,
    rel: &str,
    lowers: &[PathBuf],
    opaque_xattr: &str,
    out: &mut Vec<Change>,
    changed_dirs: &mut HashSet<String>,
) -> io::Result<()> {
    // Each entry is stat'ed relative to the open directory (std's `DirEntry::metadata` is
    // `statx(dirfd, name)`), not through its whole path; the directory is closed before
    // descending, so deep trees do not pile up descriptors.
    let mut entries: Vec<(std::ffi::OsString, std::fs::Metadata)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let md = e.metadata()?;
        entries.push((e.file_name(), md));
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (name, md) in entries {
        let path = dir.join(&name);
        let child_rel = if rel.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", name.to_string_lossy())
        };
        let abs = format!("/{child_rel}");
        let kind = if is_whiteout(&md)
            || (md.is_dir()
                && is_opaque(&path, opaque_xattr)
                && matches!(lookup_lowers(lowers, &child_rel), InLower::Exists(_)))
        {
            Some(ChangeKind::Delete)
        } else {
            match lookup_lowers(lowers, &child_rel) {
                InLower::Absent => Some(ChangeKind::Add),
                InLower::Exists(lmd) => {
                    if lmd.is_dir()
                        && md.is_dir()
                        && lmd.size() == md.size()
                        && lmd.mode() == md.mode()
                        && same_fs_time(&md, &lmd)
                    {
                        None
                    } else {
                        Some(ChangeKind::Modify)
                    }
                }
            }
        };
        if let Some(kind) = kind {
            if md.is_dir() {
                changed_dirs.insert(abs.clone());
            }
            if matches!(kind, ChangeKind::Add | ChangeKind::Delete) {
                let parent = match abs.rfind('/') {
                    Some(0) | None => "/".to_owned(),
                    Some(i) => abs[..i].to_owned(),
                };
                if parent != "/" && !changed_dirs.contains(&parent) {
                    out.push(Change {
                        path: parent.clone(),
                        kind: ChangeKind::Modify,
                    });
                    changed_dirs.insert(parent);
                }
            }
            out.push(Change { path: abs, kind });
        }
        if md.is_dir() {
            walk_changes(&path, &child_rel, lowers, opaque_xattr, out, changed_dirs)?;
        }
    }
    Ok(())
}

/// Go's `directory.Size`: non-directory sizes (symlinks and specials included), each
/// inode once.
pub(crate) fn dir_size(root: &Path) -> i64 {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut i64) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut dirs = Vec::new();
        for e in rd.flatten() {
            // d_type first: directories need no stat; the rest are stat'ed relative to the
            // open directory.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
                continue;
            }
            let Ok(md) = e.metadata() else {
                continue;
            };
            if md.is_dir() {
                dirs.push(e.path());
                continue;
            }
            if md.nlink() > 1 && !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            *total = total.saturating_add(i64::try_from(md.size()).unwrap_or(i64::MAX));
        }
        for d in dirs {
            walk(&d, seen, total);
        }
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    walk(root, &mut seen, &mut total);
    total
}

/// Go's overlay `DiffGetter`: the layer's own `diff` first, then each lower diff; when
/// no directory has the file, the error names the layer's own path.
///
/// Unlike Go, the next directory is tried only when nothing is at the name (`ENOENT`,
/// `ENOTDIR`): a symbolic link, a whiteout or any other non-regular file in the layer's own
/// `diff` is the layer's entry and fails (Go would fall through to a lower's file of the
/// same name). Each directory is read through a confined
/// [`DirFileGetter`](storage_tarsplit::DirFileGetter).
pub(crate) struct LayeredFileGetter {
    getters: Vec<crate::naive::PathFileGetter>,
}

impl LayeredFileGetter {
    pub(crate) fn new(dirs: Vec<PathBuf>) -> Self {
        LayeredFileGetter {
            getters: dirs
                .into_iter()
                .map(crate::naive::PathFileGetter::new)
                .collect(),
        }
    }
}

impl storage_tarsplit::FileGetter for LayeredFileGetter {
    fn open(&mut self, name: &[u8]) -> io::Result<Box<dyn storage_tarsplit::FileContent + '_>> {
        let mut first_err = None;
        for g in &mut self.getters {
            match g.open(name) {
                Ok(f) => return Ok(f),
                Err(e) if storage_io::confined::is_absent(&e) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(first_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_counts_links_once_and_skips_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("d/a"), b"12345").unwrap();
        std::fs::hard_link(tmp.path().join("d/a"), tmp.path().join("b")).unwrap();
        std::os::unix::fs::symlink("xyz", tmp.path().join("s")).unwrap();
        assert_eq!(dir_size(tmp.path()), 8);
    }

    #[test]
    fn changes_without_lowers_match_the_full_walk() {
        let tmp = tempfile::tempdir().unwrap();
        let up = tmp.path();
        for d in ["a/b/c", "a/e", "z", "opaque"] {
            std::fs::create_dir_all(up.join(d)).unwrap();
        }
        for f in ["a/f", "a/b/g", "a/b/c/h", "b", "z/\u{e9}t\u{e9}"] {
            std::fs::write(up.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("a/f", up.join("a/link")).unwrap();
        // Opaque only matters against lowers; set when allowed (root), ignored otherwise.
        let _ = rustix::fs::setxattr(
            up.join("opaque"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        );
        if rustix::process::geteuid().is_root() {
            for (name, dev) in [("a/b/gone", 0), ("a/dev", rustix::fs::makedev(1, 3))] {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    up.join(name),
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    dev,
                )
                .unwrap();
            }
        }
        let fast = changes(up, &[], "trusted.overlay.opaque").unwrap();
        let mut slow = Vec::new();
        walk_changes(
            up,
            "",
            &[],
            "trusted.overlay.opaque",
            &mut slow,
            &mut HashSet::new(),
        )
        .unwrap();
        let show = |v: &[Change]| {
            v.iter()
                .map(|c| format!("{} {}", c.kind.letter(), c.path))
                .collect::<Vec<_>>()
        };
        assert_eq!(show(&fast), show(&slow));
        assert!(fast.len() >= 12, "{:?}", show(&fast));
        if rustix::process::geteuid().is_root() {
            assert!(show(&fast).contains(&"D /a/b/gone".to_string()));
            assert!(show(&fast).contains(&"A /a/dev".to_string()));
        }
    }

    #[test]
    fn lower_lookup_stops_at_whiteouts() {
        let tmp = tempfile::tempdir().unwrap();
        let l1 = tmp.path().join("l1");
        let l2 = tmp.path().join("l2");
        std::fs::create_dir_all(l2.join("a/b")).unwrap();
        std::fs::create_dir_all(&l1).unwrap();
        assert!(matches!(
            lookup_lowers(&[l1.clone(), l2.clone()], "a/b"),
            InLower::Exists(_)
        ));
        if rustix::process::geteuid().is_root() {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                l1.join("a"),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .unwrap();
            assert!(matches!(lookup_lowers(&[l1, l2], "a/b"), InLower::Absent));
        }
    }
}
