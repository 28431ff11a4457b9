//! Staged layers: a layer's content prepared in a driver-owned staging directory while no
//! store lock is held, then moved into place (a `rename`, never a copy) when the layer is
//! committed under the lock.
//!
//! Every driver keeps its staging directories as Go 1.60's overlay driver does (the only
//! one of Go's with staging): `<home>/staging/<random digits>/` holding the content in
//! `dir/` and a lock file `staging.lock`, held (exclusive, non-blocking) by the process
//! that prepares the layer until it is committed or cleaned up. With a split image store,
//! image layers are staged under `<imagestore>/<driver>/staging/` (the file system they
//! are committed to). The layer store may keep companions of the content (the tar-split
//! file) beside `dir/` ([`StagingArea::scratch`]).
//!
//! A staging directory whose lock nobody holds is abandoned: `recover` (run when a store
//! is loaded for writing) and the drivers' [`Driver::cleanup`](crate::Driver::cleanup)
//! remove it, as Go's overlay `Cleanup` does. Go 1.60 itself removes abandoned overlay
//! staging directories at shutdown and never touches a held one; Go's vfs and btrfs drivers
//! (1.43 and 1.60) never look at `staging/`, and no store load of Go's touches it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use storage_lock::StagingLock;
use storage_types::{Error, ErrorKind, Result};

use crate::common::{mkdir_all, remove_all};

/// The directory of a driver's staging directories.
pub(crate) const STAGING: &str = "staging";
/// The lock file inside each staging directory.
pub(crate) const STAGING_LOCK: &str = "staging.lock";
/// The content directory inside each staging directory.
pub(crate) const CONTENT: &str = "dir";
/// A staging directory without a lock file younger than this may be one another process
/// is still setting up (Go creates the directory, then `dir/`, then the lock).
const SETUP_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a staged layer's content starts from (see [`Driver::stage`](crate::Driver::stage)).
#[derive(Debug, Clone, Copy)]
pub enum StageBase<'a> {
    /// What a new layer on `parent` starts with, as [`Driver::create`](crate::Driver::create)
    /// makes it: overlay: an empty `diff` with the owner and mode of the parent's; vfs: a
    /// copy of the parent (btrfs: a snapshot); without a parent an empty root of mode 0555
    /// owned by the host IDs of container root.
    NewLayer {
        /// The parent of the layer the content is for.
        parent: Option<&'a str>,
    },
    /// An empty root with the owner and mode of the existing layer's own root (to replace
    /// its content when the layer is committed).
    EmptyLike(&'a str),
    /// A full copy of layer `id` (vfs: a copy with reflinks where possible; btrfs: a
    /// snapshot). Not for overlay, whose layers hold only their own changes.
    CopyOf(&'a str),
    /// Go 1.60's partial-pull staging (overlay only): an empty root of mode 0555 (or the
    /// forced mask) that gets the parent's mode when it is committed, unless the differ
    /// said what the root's mode is.
    Differ,
}

/// Where a staged layer goes (see [`Driver::commit_staged`](crate::Driver::commit_staged)).
#[derive(Debug, Clone, Copy)]
pub enum CommitTarget<'a> {
    /// A new layer: the driver creates `id` (child of `parent`) as
    /// [`Driver::create`](crate::Driver::create) (or `create_read_write` when `writeable`)
    /// would, with the staged content as its own.
    New {
        /// The new layer's ID.
        id: &'a str,
        /// Its parent.
        parent: Option<&'a str>,
        /// The creation options (ID maps, mount label; storage options are not supported).
        opts: &'a crate::CreateOpts,
        /// A container (read-write) layer.
        writeable: bool,
    },
    /// The existing layer `id`: its own content is replaced by the staged one.
    Replace {
        /// The layer.
        id: &'a str,
        /// Its parent.
        parent: Option<&'a str>,
        /// The mode the layer's root must get (Go's `RootDirMode` of a differ), if known.
        root_mode: Option<u32>,
    },
}

/// A staging directory held by this process: the content in [`StagingArea::content`],
/// guarded by its lock until it is committed or discarded. Dropping it without either
/// discards it (removes the directory), so a failed preparation leaves nothing behind.
#[derive(Debug)]
pub struct StagingArea {
    dir: PathBuf,
    lock: Option<StagingLock>,
    driver: String,
    /// The content is a btrfs subvolume.
    pub(crate) subvolume: bool,
    /// Go 1.60's differ staging (see [`StageBase::Differ`]).
    pub(crate) differ: bool,
    /// Committed or discarded.
    done: bool,
}

impl StagingArea {
    /// The staging directory (`<home>/staging/<x>`).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The directory holding the layer's content (`<home>/staging/<x>/dir`).
    pub fn content(&self) -> PathBuf {
        self.dir.join(CONTENT)
    }

    /// A path beside the content for the layer store's own files of this layer (e.g. the
    /// tar-split file); removed with the staging directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The name of the driver that made it.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// Creates `<root>/staging/<random digits>/` with its lock held and an empty
    /// `content` slot; the caller fills `dir/`.
    pub(crate) fn create(root: &Path, driver: &str) -> Result<StagingArea> {
        let staging = root.join(STAGING);
        mkdir_all(&staging, 0o700)?;
        let mut last = None;
        for _ in 0..100 {
            let mut rnd = [0u8; 4];
            getrandom::fill(&mut rnd)
                .map_err(|e| Error::msg(ErrorKind::Io, format!("getrandom: {e}")))?;
            let dir = staging.join(u32::from_le_bytes(rnd).to_string());
            match std::fs::DirBuilder::new().create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                // Another process removed the (empty) `staging/` meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    mkdir_all(&staging, 0o700)?;
                    continue;
                }
                Err(e) => return Err(Error::io("mkdir", &dir, e)),
            }
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            match StagingLock::try_acquire(&dir.join(STAGING_LOCK)) {
                Ok(Some(lock)) => {
                    return Ok(StagingArea {
                        dir,
                        lock: Some(lock),
                        driver: driver.to_owned(),
                        subvolume: false,
                        differ: false,
                        done: false,
                    });
                }
                // Someone's clean-up took the brand-new directory: try another name.
                Ok(None) => continue,
                Err(e) => {
                    last = Some(Error::wrap(ErrorKind::Io, e));
                    let _ = std::fs::remove_dir(&dir);
                    continue;
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::msg(
                ErrorKind::Io,
                format!("creating a staging directory in {}", staging.display()),
            )
        }))
    }

    /// Marks the area as used up: the content was moved into a layer. The lock is released
    /// and deleted; the directory itself is removed unless `keep_dir` (Go 1.60 leaves the
    /// empty directory of a committed partial pull until the driver's clean-up).
    pub(crate) fn finish(mut self, keep_dir: bool) -> Result<()> {
        self.done = true;
        for name in ["old", "tar-split.gz"] {
            let p = self.dir.join(name);
            if std::fs::symlink_metadata(&p).is_ok() {
                remove_all(&p)?;
            }
        }
        let unlock = self.unlock();
        if !keep_dir {
            remove_all(&self.dir)?;
            remove_staging_if_empty(&self.dir);
        }
        unlock
    }

    fn unlock(&mut self) -> Result<()> {
        match self.lock.take() {
            Some(l) => l
                .unlock_and_delete()
                .map_err(|e| Error::wrap(ErrorKind::Io, e)),
            None => Ok(()),
        }
    }

    /// Removes the staging directory and its content (a btrfs subvolume with `destroy`),
    /// then releases and deletes the lock (Go's `CleanupStagingDirectory`).
    pub(crate) fn discard_with(mut self, destroy: &dyn Fn(&Path) -> Result<()>) -> Result<()> {
        self.done = true;
        let content = self.content();
        let r = if self.subvolume && std::fs::symlink_metadata(&content).is_ok() {
            destroy(&content)
        } else {
            Ok(())
        };
        let old = self.dir.join("old");
        let r2 = if std::fs::symlink_metadata(&old).is_ok() {
            destroy(&old)
        } else {
            Ok(())
        };
        let r3 = remove_tree_keeping_lock(&self.dir);
        let r4 = self.unlock();
        let _ = std::fs::remove_dir(&self.dir);
        remove_staging_if_empty(&self.dir);
        r.and(r2).and(r3).and(r4)
    }
}

impl Drop for StagingArea {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // A btrfs subvolume cannot be removed here without the driver; `rm -rf` of an
        // empty subvolume works on Linux ≥ 4.18 and a left-over one is removed by the
        // next `recover` (the lock is gone then).
        if let Err(e) = remove_tree_keeping_lock(&self.dir) {
            tracing::warn!("removing staging directory {}: {e}", self.dir.display());
        }
        let _ = self.unlock();
        let _ = std::fs::remove_dir(&self.dir);
        remove_staging_if_empty(&self.dir);
    }
}

/// Removes `<root>/staging` (the parent of the area `dir`) when no other area is in it, so
/// that a store that staged layers looks as before (`rmdir` fails, harmlessly, otherwise).
fn remove_staging_if_empty(dir: &Path) {
    if let Some(staging) = dir.parent() {
        let _ = std::fs::remove_dir(staging);
    }
}

/// Removes everything in `dir` except its lock file (which must stay until it is unlocked,
/// or another process could take the name for a new area meanwhile).
fn remove_tree_keeping_lock(dir: &Path) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("open", dir, e)),
    };
    let mut first = Ok(());
    for e in rd.flatten() {
        if e.file_name() == STAGING_LOCK {
            continue;
        }
        if let Err(err) = remove_all(&e.path())
            && first.is_ok()
        {
            first = Err(err);
        }
    }
    first
}

/// Removes the abandoned staging directories under `<root>/staging` (those whose lock can
/// be taken; those without a lock file that are not empty and older than a minute), using
/// `destroy` for btrfs subvolumes. With `all`, also the empty directories committed
/// partial pulls leave (Go's driver `Cleanup`). Returns whether a held one remains.
pub(crate) fn recover(
    root: &Path,
    all: bool,
    destroy: &dyn Fn(&Path) -> Result<()>,
) -> Result<bool> {
    let staging = root.join(STAGING);
    let rd = match std::fs::read_dir(&staging) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("open", &staging, e)),
    };
    let mut held = false;
    let mut first = Ok(());
    for e in rd.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = e.path();
        let lock_path = dir.join(STAGING_LOCK);
        let has_lock = std::fs::symlink_metadata(&lock_path).is_ok();
        let empty = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none());
        if !has_lock {
            let young = std::fs::symlink_metadata(&dir)
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < SETUP_GRACE);
            if (empty && !all) || (!empty && young) {
                continue;
            }
        }
        let lock = match StagingLock::try_acquire(&lock_path) {
            Ok(Some(l)) => l,
            Ok(None) => {
                held = true;
                continue;
            }
            Err(err) => {
                if first.is_ok() {
                    first = Err(Error::wrap(ErrorKind::Io, err));
                }
                continue;
            }
        };
        let r = remove_content(&dir, destroy).and_then(|()| remove_tree_keeping_lock(&dir));
        let _ = lock.unlock_and_delete();
        let _ = std::fs::remove_dir(&dir);
        if let Err(err) = r
            && first.is_ok()
        {
            first = Err(err);
        }
    }
    first.map(|()| held)
}

/// Destroys the subvolumes a staging directory may hold (`dir`, `old`).
fn remove_content(dir: &Path, destroy: &dyn Fn(&Path) -> Result<()>) -> Result<()> {
    for name in [CONTENT, "old"] {
        let p = dir.join(name);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            destroy(&p)?;
        }
    }
    Ok(())
}

/// A plain directory removal for [`recover`] and [`StagingArea::discard_with`].
pub(crate) fn remove_plain(path: &Path) -> Result<()> {
    remove_all(path)
}

/// Checks, before a commit moves it into a layer, that the area is this driver's.
pub(crate) fn check_driver(area: &StagingArea, driver: &str) -> Result<()> {
    if area.driver != driver {
        return Err(Error::msg(
            ErrorKind::InvalidInput,
            format!(
                "staging directory {} belongs to the {} driver, not {driver}",
                area.dir.display(),
                area.driver
            ),
        ));
    }
    Ok(())
}

/// Whether `dir` is an empty directory.
pub(crate) fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// `fsync` of a directory, so that a rename into it is durable before the record says
/// the layer is complete.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", dir, e))
}

/// `rename(2)` with Go-like error text.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| {
        Error::msg(
            ErrorKind::Io,
            format!(
                "rename {} {}: {}",
                from.display(),
                to.display(),
                storage_types::go_io_error_text(&e)
            ),
        )
    })
}

/// Puts `content` in the place of `dest` and the old `dest` at `old` (a path beside
/// `content`): one `renameat2(RENAME_EXCHANGE)`, so that a crash leaves `dest` holding
/// either the old or the new content, never nothing. Where the file system cannot exchange,
/// two renames (with the old content put back when the second fails).
pub(crate) fn replace(content: &Path, dest: &Path, old: &Path) -> Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use rustix::io::Errno;
    match renameat_with(CWD, content, CWD, dest, RenameFlags::EXCHANGE) {
        // `content` now names the old content.
        Ok(()) => return rename(content, old),
        Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP => {}
        Err(e) => return Err(Error::io("rename", dest, e.into())),
    }
    rename(dest, old)?;
    if let Err(e) = rename(content, dest) {
        let _ = std::fs::rename(old, dest);
        return Err(e);
    }
    Ok(())
}

/// Owner and mode of a directory (for [`StageBase::EmptyLike`]).
pub(crate) fn owner_and_mode(path: &Path) -> Result<((u32, u32), u32)> {
    let md = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    Ok(((md.uid(), md.gid()), md.mode() & 0o7777))
}

/// The error of a driver without staging support.
pub(crate) fn not_supported(driver: &str) -> Error {
    Error::msg(
        ErrorKind::NotSupported,
        format!("the {driver} driver cannot stage layers"),
    )
}
