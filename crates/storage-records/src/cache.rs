//! The in-memory copy of a store's records, guarded by the store's lock file.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use storage_lock::{LockFile, Token};
use storage_types::{Error, ErrorKind, Result};

use crate::files::lock_error;

/// What a store's loader returns: the fresh records and, when loading repaired
/// something (duplicate names), what must be saved (`D`: which files).
pub struct Loaded<S, D> {
    /// The records.
    pub set: S,
    /// `Some` when the load repaired the records and the repair must be saved.
    pub repair: Option<D>,
}

struct Cached<S> {
    set: S,
    /// Token seen at the last load or save; `None` before the first load and
    /// while a save is under way.
    token: Option<Token>,
}

/// A store's records (`S`) cached in memory behind the store's lock file.
///
/// [`Cache::read`] and [`Cache::write`] take the lock file shared or exclusively and
/// reload the records only when the lock's token differs from the one of the last load or
/// save (another process, Go's or ours, wrote). [`Exclusive::save`] rewrites the token
/// before the data it guards.
pub struct Cache<S> {
    lock: Arc<LockFile>,
    state: RwLock<Cached<S>>,
}

impl<S: Default> Cache<S> {
    /// An empty cache (loaded on first use) for the records guarded by `lock`.
    pub fn new(lock: Arc<LockFile>) -> Cache<S> {
        Cache {
            lock,
            state: RwLock::new(Cached {
                set: S::default(),
                token: None,
            }),
        }
    }
}

impl<S> Cache<S> {
    /// The lock file.
    pub fn lock_file(&self) -> &LockFile {
        &self.lock
    }

    fn read_state(&self) -> RwLockReadGuard<'_, Cached<S>> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, Cached<S>> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the lock shared and returns the fresh records. When a reload (with `load`)
    /// needs a repair, both locks are let go and `repair` is called (which takes the
    /// exclusive lock to load and save, or refuses, e.g. for a read-only store); then the
    /// records are looked at again. A second repair in a row fails with `inconsistent`
    /// ([`ErrorKind::Corrupt`]).
    pub fn read<D>(
        &self,
        mut load: impl FnMut() -> Result<Loaded<S, D>>,
        mut repair: impl FnMut() -> Result<()>,
        inconsistent: &str,
    ) -> Result<Shared<'_, S>> {
        let mut repaired = false;
        loop {
            let file = self.lock.rlock().map_err(lock_error)?;
            let current = file.token().map_err(lock_error)?;
            {
                let state = self.read_state();
                if state.token.as_ref() == Some(&current) {
                    return Ok(Shared { state, _file: file });
                }
            }
            let mut state = self.write_state();
            if state.token.as_ref() != Some(&current) {
                let loaded = load()?;
                if loaded.repair.is_some() {
                    if repaired {
                        return Err(Error::msg(ErrorKind::Corrupt, inconsistent));
                    }
                    drop(state);
                    drop(file);
                    repair()?;
                    repaired = true;
                    continue;
                }
                state.set = loaded.set;
                state.token = Some(current);
            }
            drop(state);
            let state = self.read_state();
            return Ok(Shared { state, _file: file });
        }
    }

    /// Takes the lock exclusively and returns the fresh records (reloaded with `load` when
    /// another writer came by) for modification, with the repair the reload asks to save
    /// (the caller saves it).
    pub fn write<D>(
        &self,
        load: impl FnOnce() -> Result<Loaded<S, D>>,
    ) -> Result<(Exclusive<'_, S>, Option<D>)> {
        let file = self.lock.lock().map_err(lock_error)?;
        let current = file.token().map_err(lock_error)?;
        let mut state = self.write_state();
        let mut repair = None;
        if state.token.as_ref() != Some(&current) {
            let loaded = load()?;
            state.set = loaded.set;
            state.token = Some(current);
            repair = loaded.repair;
        }
        Ok((Exclusive { state, file }, repair))
    }
}

/// Shared access to the records: the lock file is held shared until this is dropped.
pub struct Shared<'a, S> {
    state: RwLockReadGuard<'a, Cached<S>>,
    _file: storage_lock::ReadGuard,
}

impl<S> Deref for Shared<'_, S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.state.set
    }
}

/// Exclusive access to the records: the lock file is held exclusively until this is
/// dropped. Changes are the caller's to save with [`Exclusive::save`].
pub struct Exclusive<'a, S> {
    state: RwLockWriteGuard<'a, Cached<S>>,
    file: storage_lock::WriteGuard,
}

impl<S> Deref for Exclusive<'_, S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.state.set
    }
}

impl<S> DerefMut for Exclusive<'_, S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.state.set
    }
}

impl<S> Exclusive<'_, S> {
    /// Rewrites the lock's token, then calls `write` to write the records file(s). Until
    /// `write` succeeded the in-memory copy is not trusted (the next access reloads).
    pub fn save(&mut self, write: impl FnOnce(&S) -> Result<()>) -> Result<()> {
        self.state.token = None;
        let token = self.file.record_write().map_err(lock_error)?;
        write(&self.state.set)?;
        self.state.token = Some(token);
        Ok(())
    }
}
