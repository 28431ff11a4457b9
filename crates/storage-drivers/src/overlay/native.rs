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
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use storage_archive::export::{GoTarWriter, TarHeader};
use storage_types::IdMap;

use crate::{Change, ChangeKind};

const REG: u8 = b'0';
const LINK: u8 = b'1';
const SYMLINK: u8 = b'2';
const CHAR: u8 = b'3';
const BLOCK: u8 = b'4';
const DIR: u8 = b'5';
const FIFO: u8 = b'6';

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
    /// Go's `addTarFile` with the overlay whiteout converter.
    fn add(&mut self, path: &Path, name: &[u8]) -> io::Result<()> {
        let md = std::fs::symlink_metadata(path)?;
        let ft = md.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        let mut h = TarHeader {
            name: name.to_vec(),
            mode: i64::from(md.mode() & 0o7777),
            uid: i64::from(md.uid()),
            gid: i64::from(md.gid()),
            mtime: md.mtime(),
            ..TarHeader::default()
        };
        if ft.is_file() {
            h.typeflag = REG;
            h.size = md.size() as i64;
        } else if ft.is_dir() {
            h.typeflag = DIR;
            h.name.push(b'/');
        } else if ft.is_symlink() {
            h.typeflag = SYMLINK;
            h.linkname = std::fs::read_link(path)?.as_os_str().as_bytes().to_vec();
        } else if ft.is_char_device() || ft.is_block_device() {
            h.typeflag = if ft.is_char_device() { CHAR } else { BLOCK };
            h.devmajor = i64::from(rustix::fs::major(md.rdev()));
            h.devminor = i64::from(rustix::fs::minor(md.rdev()));
        } else if ft.is_fifo() {
            h.typeflag = FIFO;
        } else {
            return Ok(());
        }
        h.pax = storage_archive::xattr::pax_records(path, &md);
        let mut first_link = false;
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(old) = self.seen.get(&md.ino()) {
                h.typeflag = LINK;
                h.linkname = old.clone();
                h.size = 0;
            } else {
                first_link = true;
            }
        }
        let whiteout = is_whiteout(&md);
        let identity = self.uid_map.is_empty() && self.gid_map.is_empty();
        let base = name.rsplit(|&c| c == b'/').next().unwrap_or(name);
        if !(whiteout || base.starts_with(b".wh.") || identity) {
            match (
                map_id(self.uid_map, md.uid()),
                map_id(self.gid_map, md.gid()),
            ) {
                (Some(u), Some(g)) => {
                    h.uid = i64::from(u);
                    h.gid = i64::from(g);
                }
                _ => return Ok(()),
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
        } else if ft.is_dir() && is_opaque(path, self.opaque_xattr) {
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
            self.seen.insert(md.ino(), h.name.clone());
        }
        self.tw.write_header(&h)?;
        if let Some(m) = marker {
            self.tw.write_header(&m)?;
        } else if h.typeflag == REG && h.size > 0 {
            let mut remaining = h.size as u64;
            let mut buf = vec![0u8; 64 * 1024];
            if let Ok(mut f) = std::fs::File::open(path) {
                while remaining > 0 {
                    let want = buf
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(buf.len()));
                    let n = f.read(&mut buf[..want])?;
                    if n == 0 {
                        break;
                    }
                    self.tw.write_content(&buf[..n])?;
                    remaining -= n as u64;
                }
            }
            // A file that shrank meanwhile is zero-filled, keeping the archive valid.
            while remaining > 0 {
                let n = buf
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(buf.len()));
                buf[..n].fill(0);
                self.tw.write_content(&buf[..n])?;
                remaining -= n as u64;
            }
        }
        Ok(())
    }

    fn walk(&mut self, dir: &Path, rel: &[u8]) -> io::Result<()> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        let mut names: Vec<std::ffi::OsString> =
            rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = dir.join(&name);
            let mut child = rel.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            self.add(&path, &child)?;
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                self.walk(&path, &child)?;
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
    ex.walk(upper, b"")?;
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
    fn open(&mut self, name: &[u8]) -> io::Result<Box<dyn Read + '_>> {
        let mut first_err = None;
        for g in &mut self.getters {
            match g.open(name) {
                Ok(f) => return Ok(f),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
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
