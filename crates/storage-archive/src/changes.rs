//! Filesystem change detection between a layer and its parent (Go's `ChangesDirs`).
//!
//! [`changes_dirs`] walks two full trees in parallel (names sorted byte-wise), prunes
//! names whose inode is the same on the same device, and reports, like Go's
//! `FileInfo.addChanges`:
//!
//! * a path only in the new tree as [`ChangeKind::Add`] (and each descendant too);
//! * a path only in the old tree as [`ChangeKind::Delete`] (descendants not reported);
//! * a path in both whose mode, owner, rdev, mtime (`sameFsTimeSpec`, non-dirs), size (non-dirs),
//!   `security.capability`, symlink target or `user.*` xattrs differ as
//!   [`ChangeKind::Modify`];
//! * a directory with any change below it as `Modify`, inserted before its children.
//!
//! Go emits siblings in map order (random); here they come sorted by name. Consumers
//! sort anyway. [`changes_size`] is Go's `ChangesSize`.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use storage_types::IdMap;

/// Kind of a change, with Go's numeric values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum ChangeKind {
    /// Changed in place (`C`).
    Modify = 0,
    /// Added (`A`).
    Add = 1,
    /// Deleted (`D`).
    Delete = 2,
}

impl ChangeKind {
    /// Go's one-letter form: `C`, `A` or `D`.
    pub fn letter(self) -> &'static str {
        match self {
            ChangeKind::Modify => "C",
            ChangeKind::Add => "A",
            ChangeKind::Delete => "D",
        }
    }
}

/// One change: an absolute path inside the layer (`/etc/passwd`) and its kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    /// Absolute path inside the layer, starting with `/`.
    pub path: String,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// One node of a collected tree.
struct Node {
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    size: u64,
    mtime: (i64, i64),
    capability: Option<Vec<u8>>,
    target: Option<Vec<u8>>,
    xattrs: BTreeMap<OsString, Vec<u8>>,
    children: BTreeMap<OsString, Node>,
    /// Inode number and link count, for [`changes_dirs_size_mapped`]'s hard-link rule.
    ino: u64,
    nlink: u64,
}

/// The `lstat` fields the comparison uses.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    size: u64,
    mtime: (i64, i64),
    dev: u64,
    ino: u64,
    nlink: u64,
}

impl Meta {
    fn from_std(md: &std::fs::Metadata) -> Meta {
        Meta {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            rdev: md.rdev(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            dev: md.dev(),
            ino: md.ino(),
            nlink: md.nlink(),
        }
    }

    fn from_stat(st: &rustix::fs::Stat) -> Meta {
        Meta {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: (st.st_mtime, i64::try_from(st.st_mtime_nsec).unwrap_or(0)),
            dev: st.st_dev,
            ino: st.st_ino,
            nlink: st.st_nlink,
        }
    }

    fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

impl Node {
    /// The node for `path`; its xattrs, capability and link target are read only when
    /// `compared` (else left empty).
    fn from_meta(path: &Path, md: &Meta, compared: bool) -> Node {
        let fmt = md.mode & libc::S_IFMT;
        let is_link = fmt == libc::S_IFLNK;
        let is_dir = fmt == libc::S_IFDIR;
        let is_reg = fmt == libc::S_IFREG;
        // Only regular files and directories can carry user.* xattrs or capabilities;
        // skipping the syscalls for the rest is both faster and equivalent.
        let (capability, xattrs) = if compared && (is_dir || is_reg) {
            xattrs_of(path)
        } else {
            (None, BTreeMap::new())
        };
        let target = if compared && is_link {
            std::fs::read_link(path)
                .ok()
                .map(|t| t.as_os_str().as_bytes().to_vec())
        } else {
            None
        };
        Node {
            mode: md.mode,
            uid: md.uid,
            gid: md.gid,
            rdev: md.rdev,
            size: md.size,
            mtime: md.mtime,
            capability,
            target,
            xattrs,
            children: BTreeMap::new(),
            ino: md.ino,
            nlink: md.nlink,
        }
    }

    fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// The node at `path` (absolute, `/`-separated, as in [`Change::path`]).
    fn lookup(&self, path: &str) -> Option<&Node> {
        path.split('/')
            .filter(|c| !c.is_empty())
            .try_fold(self, |n, c| n.children.get(OsStr::new(c)))
    }
}

/// The `security.capability` value and the `user.*` extended attributes of `path`.
///
/// The names are listed first, so files without extended attributes (nearly all) cost one
/// syscall instead of two; a capability is read only when listed.
fn xattrs_of(path: &Path) -> (Option<Vec<u8>>, BTreeMap<OsString, Vec<u8>>) {
    let mut out = BTreeMap::new();
    let names = match crate::xattr::list(path) {
        Ok(names) => names,
        // Names unavailable: look for the capability the direct way.
        Err(_) => return (crate::xattr::get(path, "security.capability"), out),
    };
    if names.is_empty() {
        return (None, out);
    }
    let mut capability = None;
    for name in names.split(|b| *b == 0) {
        if name == b"security.capability" {
            capability = crate::xattr::get(path, "security.capability");
        } else if name.starts_with(b"user.") {
            let name = OsStr::from_bytes(name);
            if let Some(v) = crate::xattr::get(path, name) {
                out.insert(name.to_owned(), v);
            }
        }
    }
    (capability, out)
}

/// Opens a directory (not following a symlink in its place) for `*at` lookups.
fn open_dir(dir: &Path) -> io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    Ok(rustix::fs::open(dir, flags, Mode::empty())?)
}

/// Sorted `(name, d_ino, d_type)` of the directory open as `fd`.
fn read_names(fd: &rustix::fd::OwnedFd) -> io::Result<Vec<(OsString, u64, rustix::fs::FileType)>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push((
            OsStr::from_bytes(name).to_owned(),
            entry.ino(),
            entry.file_type(),
        ));
    }
    names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(names)
}

/// `lstat` of `name` in the directory open as `dir` (no path walk from the root).
fn lstat_opt(dir: &rustix::fd::OwnedFd, name: &OsStr) -> io::Result<Option<Meta>> {
    match rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(Meta::from_stat(&st))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Go's parallel `walker.walk`: fills the children of `n1`/`n2` (either may be absent).
fn walk(
    p1: &Path,
    p2: &Path,
    m1: Option<&Meta>,
    m2: Option<&Meta>,
    n1: Option<&mut Node>,
    n2: Option<&mut Node>,
) -> io::Result<()> {
    let is1 = m1.is_some_and(|m| m.is_dir());
    let is2 = m2.is_some_and(|m| m.is_dir());
    if !is1 && !is2 {
        return Ok(());
    }
    let same_dev = matches!((m1, m2), (Some(a), Some(b)) if a.dev == b.dev);
    let fd1 = if is1 { Some(open_dir(p1)?) } else { None };
    let fd2 = if is2 { Some(open_dir(p2)?) } else { None };
    let names1 = match &fd1 {
        Some(fd) => read_names(fd)?,
        None => Vec::new(),
    };
    let names2 = match &fd2 {
        Some(fd) => read_names(fd)?,
        None => Vec::new(),
    };
    let mut names: Vec<OsString> = Vec::with_capacity(names1.len().max(names2.len()));
    let (mut i, mut j) = (0, 0);
    while i < names1.len() && j < names2.len() {
        let (a, b) = (&names1[i], &names2[j]);
        match a.0.as_bytes().cmp(b.0.as_bytes()) {
            std::cmp::Ordering::Less => {
                names.push(a.0.clone());
                i += 1;
            }
            std::cmp::Ordering::Equal => {
                if a.1 != b.1 || !same_dev {
                    names.push(a.0.clone());
                }
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Greater => {
                names.push(b.0.clone());
                j += 1;
            }
        }
    }
    names.extend(names1[i..].iter().map(|n| n.0.clone()));
    names.extend(names2[j..].iter().map(|n| n.0.clone()));

    // Stat every child relative to the open directories, then close them before
    // descending (deep trees must not pile up descriptors).
    let mut metas = Vec::with_capacity(names.len());
    for name in &names {
        let cm1 = match &fd1 {
            Some(fd) => lstat_opt(fd, name)?,
            None => None,
        };
        let cm2 = match &fd2 {
            Some(fd) => lstat_opt(fd, name)?,
            None => None,
        };
        metas.push((cm1, cm2));
    }
    drop((fd1, fd2));

    let (mut n1, mut n2) = (n1, n2);
    for (name, (cm1, cm2)) in names.into_iter().zip(metas) {
        let c1 = p1.join(&name);
        let c2 = p2.join(&name);
        // Extended attributes and link targets are only ever compared between the two
        // sides: a name on one side only (every entry of a layer without parent) skips them.
        let both = cm1.is_some() && cm2.is_some();
        let mut child1 = cm1.as_ref().map(|m| Node::from_meta(&c1, m, both));
        let mut child2 = cm2.as_ref().map(|m| Node::from_meta(&c2, m, both));
        walk(
            &c1,
            &c2,
            cm1.as_ref(),
            cm2.as_ref(),
            child1.as_mut(),
            child2.as_mut(),
        )?;
        if let (Some(c), Some(parent)) = (child1, n1.as_deref_mut()) {
            parent.children.insert(name.clone(), c);
        }
        if let (Some(c), Some(parent)) = (child2, n2.as_deref_mut()) {
            parent.children.insert(name, c);
        }
    }
    Ok(())
}

fn map_pair(maps: (&[IdMap], &[IdMap]), uid: u32, gid: u32) -> (Option<u32>, Option<u32>) {
    let to = |m: &[IdMap], id: u32| {
        if m.is_empty() {
            return Some(id);
        }
        m.iter().find_map(|r| {
            let off = id.checked_sub(r.host_id)?;
            (off < r.size)
                .then(|| r.container_id.checked_add(off))
                .flatten()
        })
    };
    (to(maps.0, uid), to(maps.1, gid))
}

struct Ctx<'a> {
    new_maps: (&'a [IdMap], &'a [IdMap]),
    old_maps: (&'a [IdMap], &'a [IdMap]),
}

/// Go's `statDifferent`.
fn stat_different(ctx: &Ctx<'_>, old: &Node, new: &Node) -> bool {
    if old.mode != new.mode {
        return true;
    }
    // Go maps each side to container IDs; a mapping failure counts as a change.
    let (ou, og) = map_pair(ctx.old_maps, old.uid, old.gid);
    let (nu, ng) = map_pair(ctx.new_maps, new.uid, new.gid);
    if ou.is_none() || og.is_none() || nu.is_none() || ng.is_none() {
        return true;
    }
    let same_time = old.mtime.0 == new.mtime.0
        && (old.mtime.1 == new.mtime.1 || old.mtime.1 == 0 || new.mtime.1 == 0);
    // Neither the size nor the mtime of a directory is a measure of change: Go's 1.43
    // binary reports no change for a directory whose only difference is its mtime (for
    // example after a hard link below it was re-created by an ID-map re-owning walk).
    let is_dir = old.mode & libc::S_IFMT == libc::S_IFDIR;
    ou != nu
        || og != ng
        || old.rdev != new.rdev
        || (!is_dir && (!same_time || old.size != new.size))
}

fn join(parent: &str, name: &OsStr) -> String {
    let name = String::from_utf8_lossy(name.as_bytes());
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Go's `FileInfo.addChanges`. Returns whether anything was appended.
fn add_changes(
    ctx: &Ctx<'_>,
    path: &str,
    new: &Node,
    old: Option<&Node>,
    added_self: bool,
    out: &mut Vec<Change>,
) {
    let at_entry = out.len();
    let mut added = added_self;
    if old.is_none() {
        out.push(Change {
            path: path.to_owned(),
            kind: ChangeKind::Add,
        });
        added = true;
    }
    let old_children: Option<&BTreeMap<OsString, Node>> =
        old.filter(|_| new.is_dir()).map(|o| &o.children);
    for (name, new_child) in &new.children {
        let child_path = join(path, name);
        let old_child = old_children.and_then(|c| c.get(name));
        let mut child_added = false;
        if let Some(oc) = old_child
            && (stat_different(ctx, oc, new_child)
                || oc.capability != new_child.capability
                || oc.target != new_child.target
                || oc.xattrs != new_child.xattrs)
        {
            out.push(Change {
                path: child_path.clone(),
                kind: ChangeKind::Modify,
            });
            child_added = true;
        }
        add_changes(ctx, &child_path, new_child, old_child, child_added, out);
    }
    if let Some(oc) = old_children {
        for name in oc.keys().filter(|n| !new.children.contains_key(*n)) {
            out.push(Change {
                path: join(path, name),
                kind: ChangeKind::Delete,
            });
        }
    }
    if out.len() > at_entry && new.is_dir() && !added && path != "/" {
        out.insert(
            at_entry,
            Change {
                path: path.to_owned(),
                kind: ChangeKind::Modify,
            },
        );
    }
}

/// Go's `ChangesDirs(layer, parent)` without ID mappings: the changes that turn
/// `parent` (an empty tree when `None`) into `layer`.
pub fn changes_dirs(layer: &Path, parent: Option<&Path>) -> io::Result<Vec<Change>> {
    changes_dirs_mapped(layer, (&[], &[]), parent, (&[], &[]))
}

/// [`changes_dirs`] with the `(uid_map, gid_map)` of each side: owners are compared
/// after mapping each side's host IDs to container IDs, like Go.
pub fn changes_dirs_mapped(
    layer: &Path,
    layer_maps: (&[IdMap], &[IdMap]),
    parent: Option<&Path>,
    parent_maps: (&[IdMap], &[IdMap]),
) -> io::Result<Vec<Change>> {
    if parent.is_none() && std::fs::symlink_metadata(layer)?.is_dir() {
        // Against an empty tree every entry is an `Add` and nothing is compared: no stat,
        // no xattrs, no tree — names and directory types from readdir, in the same
        // (sorted, pre-order) order as the full comparison gives.
        let mut out = Vec::new();
        all_added(layer, "/", false, &mut out)?;
        return Ok(out);
    }
    changes_and_tree(layer, layer_maps, parent, parent_maps).map(|(changes, _)| changes)
}

/// The changes of an overlay upper directory that has no lower layers (Go's
/// `OverlayChanges` with no lowers): every entry is an `Add`, except overlay whiteouts
/// (character devices 0/0), which are `Delete`s; sorted by name, each directory before its
/// children. Names and types come from readdir; only character devices are stat'ed.
pub fn overlay_changes_without_lowers(upper: &Path) -> io::Result<Vec<Change>> {
    let mut out = Vec::new();
    all_added(upper, "/", true, &mut out)?;
    Ok(out)
}

/// Appends an `Add` for every entry under `dir` (shown as `prefix`), sorted by name, each
/// directory before its children; with `whiteouts`, a character device 0/0 is a `Delete`.
fn all_added(dir: &Path, prefix: &str, whiteouts: bool, out: &mut Vec<Change>) -> io::Result<()> {
    use rustix::fs::FileType;
    let fd = open_dir(dir)?;
    let mut names = Vec::new();
    for (name, _, file_type) in read_names(&fd)? {
        let (is_dir, kind) = match file_type {
            FileType::Directory => (true, ChangeKind::Add),
            FileType::CharacterDevice | FileType::Unknown
                if whiteouts || file_type == FileType::Unknown =>
            {
                let m = lstat_opt(&fd, &name)?;
                let is_dir = m.as_ref().is_some_and(Meta::is_dir);
                let whiteout = whiteouts
                    && m.is_some_and(|m| m.mode & libc::S_IFMT == libc::S_IFCHR && m.rdev == 0);
                (
                    is_dir,
                    if whiteout {
                        ChangeKind::Delete
                    } else {
                        ChangeKind::Add
                    },
                )
            }
            _ => (false, ChangeKind::Add),
        };
        names.push((name, is_dir, kind));
    }
    // Closed before descending: deep trees must not pile up descriptors.
    drop(fd);
    for (name, is_dir, kind) in names {
        let path = join(prefix, &name);
        out.push(Change {
            path: path.clone(),
            kind,
        });
        if is_dir {
            all_added(&dir.join(&name), &path, whiteouts, out)?;
        }
    }
    Ok(())
}

/// Go's `ChangesSize(layer, ChangesDirs(layer, parent))` in one walk: the sizes come from
/// the `lstat` the walk already made, instead of a second `lstat` of every changed path.
pub fn changes_dirs_size_mapped(
    layer: &Path,
    layer_maps: (&[IdMap], &[IdMap]),
    parent: Option<&Path>,
    parent_maps: (&[IdMap], &[IdMap]),
) -> io::Result<i64> {
    if parent.is_none() && std::fs::symlink_metadata(layer)?.is_dir() {
        // Every entry is an `Add`: the sizes of the non-directories, stat'ed relative to
        // their open directory, and no change list or tree.
        let mut total = 0;
        size_all_added(layer, &mut HashSet::new(), &mut total)?;
        return Ok(total);
    }
    let (changes, tree) = changes_and_tree(layer, layer_maps, parent, parent_maps)?;
    Ok(sum_sizes(&changes, |path| {
        tree.lookup(path)
            .map(|n| (n.is_dir(), n.nlink, n.ino, n.size))
    }))
}

/// [`sum_sizes`] of [`all_added`]'s changes: the `lstat` sizes of the non-directories under
/// `dir`, hard links (by inode) once.
fn size_all_added(dir: &Path, seen: &mut HashSet<u64>, total: &mut i64) -> io::Result<()> {
    let fd = open_dir(dir)?;
    let mut dirs = Vec::new();
    for (name, _, file_type) in read_names(&fd)? {
        if file_type == rustix::fs::FileType::Directory {
            dirs.push(name);
            continue;
        }
        let Some(m) = lstat_opt(&fd, &name)? else {
            continue;
        };
        if m.is_dir() {
            dirs.push(name);
        } else if m.nlink <= 1 || seen.insert(m.ino) {
            *total = total.saturating_add(i64::try_from(m.size).unwrap_or(i64::MAX));
        }
    }
    // Closed before descending: deep trees must not pile up descriptors.
    drop(fd);
    for name in dirs {
        size_all_added(&dir.join(&name), seen, total)?;
    }
    Ok(())
}

/// Go's `ChangesSize` rule over `(is_dir, nlink, ino, size)` of each changed path (`None`:
/// gone): the sizes of the non-directory `Add`/`Modify` entries, hard links counted once.
fn sum_sizes(changes: &[Change], meta: impl Fn(&str) -> Option<(bool, u64, u64, u64)>) -> i64 {
    let mut seen = HashSet::new();
    let mut size: i64 = 0;
    for c in changes {
        if c.kind == ChangeKind::Delete {
            continue;
        }
        let Some((is_dir, nlink, ino, len)) = meta(&c.path) else {
            continue;
        };
        if is_dir || (nlink > 1 && !seen.insert(ino)) {
            continue;
        }
        size = size.saturating_add(i64::try_from(len).unwrap_or(i64::MAX));
    }
    size
}

/// The changes and the collected tree of the new side.
fn changes_and_tree(
    layer: &Path,
    layer_maps: (&[IdMap], &[IdMap]),
    parent: Option<&Path>,
    parent_maps: (&[IdMap], &[IdMap]),
) -> io::Result<(Vec<Change>, Node)> {
    let empty;
    let old_root: PathBuf = match parent {
        Some(p) => p.to_path_buf(),
        None => {
            empty = tempfile_dir()?;
            empty.0.clone()
        }
    };
    let m_new = Meta::from_std(&std::fs::symlink_metadata(layer)?);
    let m_old = Meta::from_std(&std::fs::symlink_metadata(&old_root)?);
    let mut new_root = Node::from_meta(layer, &m_new, true);
    let mut old_node = Node::from_meta(&old_root, &m_old, true);
    walk(
        &old_root,
        layer,
        Some(&m_old),
        Some(&m_new),
        Some(&mut old_node),
        Some(&mut new_root),
    )?;
    let ctx = Ctx {
        new_maps: layer_maps,
        old_maps: parent_maps,
    };
    let mut out = Vec::new();
    add_changes(&ctx, "/", &new_root, Some(&old_node), false, &mut out);
    Ok((out, new_root))
}

/// A temporary empty directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn tempfile_dir() -> io::Result<TempDir> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let name = format!("empty-{}-{}-{attempt}", std::process::id(), nanos());
        let p = base.join(name);
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(TempDir(p)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("cannot create a temporary directory"))
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Go's `ChangesSize(newDir, changes)`: the sum of the `lstat` sizes of the non-directory
/// `Add`/`Modify` entries, hard links counted once; deletes and unreadable entries count 0.
pub fn changes_size(root: &Path, changes: &[Change]) -> i64 {
    sum_sizes(changes, |path| {
        std::fs::symlink_metadata(root.join(path.trim_start_matches('/')))
            .ok()
            .map(|md| (md.is_dir(), md.nlink(), md.ino(), md.size()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    use storage_testsupport::set_mtime;

    fn pairs(v: &[Change]) -> Vec<(&str, &str)> {
        v.iter()
            .map(|c| (c.path.as_str(), c.kind.letter()))
            .collect()
    }

    /// Whether the test runs as root; elsewhere it skips saying `why`, and in CI fails.
    fn as_root(why: &str) -> bool {
        if rustix::process::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "needs root in CI"
        );
        eprintln!("SKIPPING: {why}");
        false
    }

    /// Two identical trees with equal times (like a vfs copy).
    fn twins() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
        for root in [&old, &new] {
            std::fs::create_dir_all(root.join("a/b")).unwrap();
            std::fs::write(root.join("a/b/f"), b"same").unwrap();
            std::fs::write(root.join("top"), b"top").unwrap();
            std::os::unix::fs::symlink("top", root.join("link")).unwrap();
            for p in ["a/b/f", "a/b", "a", "top", "link", ""] {
                set_mtime(&root.join(p), 1_000_000, 250);
            }
        }
        (tmp, old, new)
    }

    #[test]
    fn no_parent_fast_path_equals_the_full_comparison() {
        let (tmp, _old, new) = twins();
        std::fs::create_dir_all(new.join("z/y/x")).unwrap();
        std::fs::write(new.join("z/y/x/deep"), b"d").unwrap();
        std::fs::write(new.join("z/a-file"), b"f").unwrap();
        std::os::unix::fs::symlink("z", new.join("dirlink")).unwrap();
        std::fs::create_dir(new.join("B")).unwrap();
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let fast = changes_dirs(&new, None).unwrap();
        let full = changes_dirs(&new, Some(&empty)).unwrap();
        assert_eq!(fast, full);
        assert!(fast.iter().all(|c| c.kind == ChangeKind::Add));
        // Every entry once: 12 below the root.
        assert_eq!(fast.len(), 12, "{fast:?}");
        assert!(changes_dirs(&tmp.path().join("missing"), None).is_err());
    }

    #[test]
    fn size_in_one_walk_equals_go_changes_size() {
        let (_tmp, old, new) = twins();
        std::fs::write(new.join("a/b/f"), b"changed, longer").unwrap();
        std::fs::write(new.join("added"), vec![7u8; 5000]).unwrap();
        std::fs::hard_link(new.join("added"), new.join("a/link-to-added")).unwrap();
        std::fs::create_dir(new.join("newdir")).unwrap();
        std::fs::write(new.join("newdir/x"), b"xyz").unwrap();
        std::os::unix::fs::symlink("a-target-of-some-length", new.join("newdir/sl")).unwrap();
        std::fs::remove_file(new.join("top")).unwrap();
        let none: (&[IdMap], &[IdMap]) = (&[], &[]);
        for parent in [Some(old.as_path()), None] {
            let changes = changes_dirs(&new, parent).unwrap();
            let want = changes_size(&new, &changes);
            let got = changes_dirs_size_mapped(&new, none, parent, none).unwrap();
            assert_eq!(got, want, "parent {parent:?}: {changes:?}");
            assert!(got > 5000, "{got}");
        }
    }

    #[test]
    fn identical_trees_have_no_changes() {
        let (_t, old, new) = twins();
        assert_eq!(changes_dirs(&new, Some(&old)).unwrap(), vec![]);
    }

    #[test]
    fn nanoseconds_zero_on_one_side_is_the_same_time() {
        let (_t, old, new) = twins();
        set_mtime(&new.join("top"), 1_000_000, 0);
        assert_eq!(changes_dirs(&new, Some(&old)).unwrap(), vec![]);
        set_mtime(&new.join("top"), 1_000_000, 251);
        assert_eq!(
            pairs(&changes_dirs(&new, Some(&old)).unwrap()),
            vec![("/top", "C")]
        );
    }

    #[test]
    fn a_directory_mtime_alone_is_no_change() {
        // Go 1.43's `changes` ignores a directory whose only difference is its mtime.
        let (_t, old, new) = twins();
        set_mtime(&new.join("a/b"), 2_000_000, 0);
        set_mtime(&new.join("a"), 2_000_000, 0);
        assert_eq!(changes_dirs(&new, Some(&old)).unwrap(), vec![]);
        // A file's mtime still counts, and makes its directories Modify.
        set_mtime(&new.join("a/b/f"), 2_000_000, 0);
        assert_eq!(
            pairs(&changes_dirs(&new, Some(&old)).unwrap()),
            vec![("/a", "C"), ("/a/b", "C"), ("/a/b/f", "C")]
        );
    }

    #[test]
    fn kinds_and_order() {
        let (_t, old, new) = twins();
        std::fs::remove_dir_all(new.join("a/b")).unwrap();
        std::fs::write(new.join("a/added"), b"x").unwrap();
        std::fs::remove_file(new.join("link")).unwrap();
        std::os::unix::fs::symlink("elsewhere", new.join("link")).unwrap();
        set_mtime(&new.join("link"), 1_000_000, 250);
        std::fs::set_permissions(new.join("top"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let got = changes_dirs(&new, Some(&old)).unwrap();
        // The dir's Modify is inserted before what changed inside it; the deleted
        // directory is reported once; a changed symlink target is a Modify.
        assert_eq!(
            pairs(&got),
            vec![
                ("/a", "C"),
                ("/a/added", "A"),
                ("/a/b", "D"),
                ("/link", "C"),
                ("/top", "C")
            ]
        );
    }

    #[test]
    fn file_replaced_by_dir_and_back() {
        let (_t, old, new) = twins();
        std::fs::remove_file(new.join("top")).unwrap();
        std::fs::create_dir(new.join("top")).unwrap();
        std::fs::write(new.join("top/inner"), b"i").unwrap();
        std::fs::remove_dir_all(new.join("a")).unwrap();
        std::fs::write(new.join("a"), b"now a file").unwrap();
        let got = changes_dirs(&new, Some(&old)).unwrap();
        // Old children of a dir turned file are not reported (Go only recurses into
        // the old tree when the new node is a directory).
        assert_eq!(
            pairs(&got),
            vec![("/a", "C"), ("/top", "C"), ("/top/inner", "A")]
        );
    }

    #[test]
    fn no_parent_means_everything_added() {
        let (_t, _old, new) = twins();
        let got = changes_dirs(&new, None).unwrap();
        assert_eq!(
            pairs(&got),
            vec![
                ("/a", "A"),
                ("/a/b", "A"),
                ("/a/b/f", "A"),
                ("/link", "A"),
                ("/top", "A")
            ]
        );
        // Hard links count once in the size; deletes count 0; dirs count 0.
        std::fs::hard_link(new.join("top"), new.join("top2")).unwrap();
        let mut changes = changes_dirs(&new, None).unwrap();
        changes.push(Change {
            path: "/gone".into(),
            kind: ChangeKind::Delete,
        });
        assert_eq!(changes_size(&new, &changes), 4 + 3 + 3);
    }

    #[test]
    fn user_xattrs_count_as_modification() {
        let (_t, old, new) = twins();
        let f = new.join("a/b/f");
        if rustix::fs::lsetxattr(&f, "user.k", b"v", rustix::fs::XattrFlags::empty()).is_err() {
            eprintln!("SKIPPING: user xattrs unsupported on the temp file system");
            return;
        }
        let got = changes_dirs(&new, Some(&old)).unwrap();
        assert_eq!(
            pairs(&got),
            vec![("/a", "C"), ("/a/b", "C"), ("/a/b/f", "C")]
        );
    }

    #[test]
    fn capabilities_count_as_modification_with_or_without_user_xattrs() {
        if !as_root("setting security.capability needs root") {
            return;
        }
        // VFS_CAP_REVISION_2, CAP_NET_BIND_SERVICE permitted (struct vfs_cap_data).
        let mut cap = vec![0u8; 20];
        cap[..4].copy_from_slice(&0x0200_0000u32.to_le_bytes());
        cap[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
        let set = |f: &Path, name: &str, v: &[u8]| {
            rustix::fs::lsetxattr(f, name, v, rustix::fs::XattrFlags::empty())
        };
        let (_t, old, new) = twins();
        if set(&new.join("top"), "security.capability", &cap).is_err() {
            eprintln!("SKIPPING: capabilities unsupported on the temp file system");
            return;
        }
        let got = changes_dirs(&new, Some(&old)).unwrap();
        assert_eq!(pairs(&got), vec![("/top", "C")]);
        // The same capability on both sides, next to a user xattr only on one side.
        set(&old.join("top"), "security.capability", &cap).unwrap();
        assert_eq!(changes_dirs(&new, Some(&old)).unwrap(), vec![]);
        if set(&new.join("top"), "user.k", b"v").is_ok() {
            let got = changes_dirs(&new, Some(&old)).unwrap();
            assert_eq!(pairs(&got), vec![("/top", "C")]);
        }
    }

    #[test]
    fn owners_compare_after_mapping() {
        if !as_root("chown needs root") {
            return;
        }
        let (_t, old, new) = twins();
        let f = new.join("a/b/f");
        std::os::unix::fs::lchown(&f, Some(100_000), Some(100_000)).unwrap();
        set_mtime(&f, 1_000_000, 250);
        let plain = changes_dirs(&new, Some(&old)).unwrap();
        assert_eq!(
            pairs(&plain),
            vec![("/a", "C"), ("/a/b", "C"), ("/a/b/f", "C")]
        );
        let m = [IdMap {
            container_id: 0,
            host_id: 100_000,
            size: 10,
        }];
        // New side mapped: host 100000 is container 0, like the old side's 0.
        let got = changes_dirs_mapped(&new, (&m, &m), Some(&old), (&[], &[])).unwrap();
        // (The rest of the new tree, owned by host 0, is unmappable and so modified.)
        assert!(!got.iter().any(|c| c.path == "/a/b/f"), "{got:?}");
    }
}
