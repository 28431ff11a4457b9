//! Deferred-deletion staging (containers/storage ≥ 1.59 `internal/tempdir`
//! and `internal/staging_lockfile`).
//!
//! A staging directory `<root>/temp-dir-<x>` is "alive" while some process
//! holds an exclusive lock on `<root>/lock-<x>`. Whoever loads a store runs
//! [`recover_stale_dirs`] on the staging roots and deletes every pair whose
//! lock it can take without waiting.
//!
//! Staging locks are *separate* files, each with its own descriptor (not the
//! [`LockFile`](crate::LockFile) registry): since the locks are OFD locks, a
//! second descriptor in this same process conflicts like another process
//! would, so [`StagingLock::try_acquire`] correctly reports a staging lock
//! held by another thread of this process as busy.

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::{LockError, sys};

const TEMP_DIR_PREFIX: &str = "temp-dir-";
const LOCK_PREFIX: &str = "lock-";

/// An exclusively held, non-blocking staging lock file (`lock-<x>`).
/// Dropping it releases the lock but leaves the file (a later
/// [`recover_stale_dirs`] deletes it); [`StagingLock::unlock_and_delete`]
/// removes it.
#[derive(Debug)]
pub struct StagingLock {
    path: PathBuf,
    file: File,
}

impl StagingLock {
    /// Go's `CreateAndLock(dir, prefix)`: creates a new file
    /// `<dir>/<prefix><random digits>` (mode 0600, never an existing one) and
    /// locks it exclusively without waiting.
    pub fn create(dir: &Path, prefix: &str) -> Result<StagingLock, LockError> {
        for _ in 0..10_000 {
            let mut rnd = [0u8; 4];
            getrandom::fill(&mut rnd).map_err(|e| LockError::Open {
                path: dir.to_path_buf(),
                source: crate::rand_err(e),
            })?;
            let path = dir.join(format!("{prefix}{}", u32::from_le_bytes(rnd)));
            let file = match sys::open(&path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(LockError::Open { path, source }),
            };
            return match sys::lock_try(&file, sys::Kind::Exclusive) {
                // Locked only after a recovery deleted the brand-new file: another name.
                Ok(true) if !same_file(&path, &file) => continue,
                Ok(true) => Ok(StagingLock { path, file }),
                // Someone's recovery grabbed the brand-new file first; it will
                // delete it. Try another name.
                Ok(false) => continue,
                Err(source) => Err(LockError::Lock { path, source }),
            };
        }
        Err(LockError::Open {
            path: dir.join(format!("{prefix}*")),
            source: io::Error::from_raw_os_error(libc::EEXIST),
        })
    }

    /// Go's `TryLockPath`: opens (creating if missing, mode 0644) `path` and
    /// takes an exclusive lock without waiting. `Ok(None)` when it is held by
    /// anybody else — any process, or another descriptor of this one.
    pub fn try_acquire(path: &Path) -> Result<Option<StagingLock>, LockError> {
        let file = sys::open(path, libc::O_RDWR | libc::O_CREAT, 0o644).map_err(|source| {
            LockError::Open {
                path: path.to_path_buf(),
                source,
            }
        })?;
        match sys::lock_try(&file, sys::Kind::Exclusive) {
            // Between our open and our lock, another process may have taken the lock,
            // deleted the file (and its directory) and let go: a lock on an unlinked file
            // guards nothing. Only a lock on the file still at `path` counts.
            Ok(true) if !same_file(path, &file) => Ok(None),
            Ok(true) => Ok(Some(StagingLock {
                path: path.to_path_buf(),
                file,
            })),
            Ok(false) => Ok(None),
            Err(source) => Err(LockError::Lock {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the lock file (a missing file is fine), then unlocks and closes
    /// it — Go's `UnlockAndDelete`.
    pub fn unlock_and_delete(self) -> Result<(), LockError> {
        let res = match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LockError::Io {
                op: "remove",
                path: self.path.clone(),
                source,
            }),
        };
        // Closing releases the lock; unlock explicitly first in case a forked
        // child shares the descriptor.
        let _ = sys::unlock(&self.file);
        res
    }
}

/// A deferred-deletion staging directory: `<root>/temp-dir-<x>` guarded by
/// the held [`StagingLock`] `<root>/lock-<x>`. Move things into it with
/// [`TempDir::stage_deletion`] while holding the store locks, then call
/// [`TempDir::cleanup`] (or drop it) after releasing them.
#[derive(Debug)]
pub struct TempDir {
    dir: PathBuf,
    lock: Option<StagingLock>,
    counter: u64,
}

fn mkdir_all(path: &Path) -> Result<(), LockError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| LockError::Io {
            op: "mkdir",
            path: path.to_path_buf(),
            source,
        })
}

fn remove_all(path: &Path) -> Result<(), LockError> {
    let res = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LockError::Io {
            op: "unlinkat",
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl TempDir {
    /// Go's `NewTempDir(root)`: creates `root` (0700) if needed, a new locked
    /// `lock-<x>` and the matching `temp-dir-<x>` (0700).
    pub fn new(root: &Path) -> Result<TempDir, LockError> {
        mkdir_all(root)?;
        let lock = StagingLock::create(root, LOCK_PREFIX)?;
        let name = lock
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = name.strip_prefix(LOCK_PREFIX).unwrap_or(&name);
        let dir = root.join(format!("{TEMP_DIR_PREFIX}{id}"));
        if let Err(e) = mkdir_all(&dir) {
            let _ = lock.unlock_and_delete();
            return Err(e);
        }
        Ok(TempDir {
            dir,
            lock: Some(lock),
            counter: 0,
        })
    }

    /// The staging directory (`<root>/temp-dir-<x>`).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Moves `src` into the staging directory as `<n>-<basename of src>`
    /// (`n` counts from 0), like Go's `StageDeletion`.
    pub fn stage_deletion(&mut self, src: &Path) -> Result<(), LockError> {
        let base = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = self.dir.join(format!("{}-{base}", self.counter));
        self.counter += 1;
        std::fs::rename(src, &dest).map_err(|source| LockError::Rename {
            from: src.to_path_buf(),
            to: dest,
            source,
        })
    }

    /// Removes the staging directory recursively, then unlocks and deletes
    /// its lock file.
    pub fn cleanup(mut self) -> Result<(), LockError> {
        self.cleanup_inner()
    }

    fn cleanup_inner(&mut self) -> Result<(), LockError> {
        let Some(lock) = self.lock.take() else {
            return Ok(());
        };
        if let Err(e) = remove_all(&self.dir) {
            // Keep the lock file: releasing it lets the next loader retry.
            drop(lock);
            return Err(e);
        }
        lock.unlock_and_delete()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup_inner() {
            tracing::warn!("cleaning up staging directory: {e}");
        }
    }
}

/// Go's `RecoverStaleDirs(root)`: for every `<x>` named by a `temp-dir-<x>`
/// or `lock-<x>` entry of `root` whose lock can be taken without waiting,
/// removes `temp-dir-<x>` recursively and deletes `lock-<x>`. A missing
/// `root` is fine. All entries are processed; the first error is returned.
pub fn recover_stale_dirs(root: &Path) -> Result<(), LockError> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(LockError::Io {
                op: "open",
                path: root.to_path_buf(),
                source,
            });
        }
    };
    let mut ids = std::collections::BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|source| LockError::Io {
            op: "readdirent",
            path: root.to_path_buf(),
            source,
        })?;
        // Names are bytes: a lossy conversion would turn a non-UTF-8 `<x>` into a
        // name that is not on disk, and the abandoned pair would never go away.
        let name = entry.file_name();
        let name = name.as_bytes();
        if let Some(id) = name
            .strip_prefix(TEMP_DIR_PREFIX.as_bytes())
            .or_else(|| name.strip_prefix(LOCK_PREFIX.as_bytes()))
        {
            ids.insert(id.to_vec());
        }
    }
    let mut first_err = None;
    for id in ids {
        let with_prefix = |prefix: &str| {
            let mut n = prefix.as_bytes().to_vec();
            n.extend_from_slice(&id);
            root.join(std::ffi::OsStr::from_bytes(&n))
        };
        let lock_path = with_prefix(LOCK_PREFIX);
        let dir = with_prefix(TEMP_DIR_PREFIX);
        let Ok(Some(lock)) = StagingLock::try_acquire(&lock_path) else {
            continue;
        };
        if let Err(e) = remove_all(&dir) {
            first_err.get_or_insert(e);
        }
        if let Err(e) = lock.unlock_and_delete() {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Whether `path` still names the open `file` (same device and inode).
fn same_file(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod same_file_tests {
    use super::*;

    #[test]
    fn a_lock_on_a_deleted_or_replaced_file_is_not_the_lock_at_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("staging.lock");
        let f = File::create(&p).expect("create");
        assert!(same_file(&p, &f));
        std::fs::remove_file(&p).expect("rm");
        assert!(!same_file(&p, &f), "deleted");
        std::fs::write(&p, b"").expect("recreate");
        assert!(!same_file(&p, &f), "replaced by another file");
    }
}
