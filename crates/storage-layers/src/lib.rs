//! The layer store of containers-storage: Go's `layers.go`, byte-compatible on disk.
//!
//! **Use it for:** the layer records of one store directory, and creating, applying, diffing and
//! mounting layers through a driver. **Not for:** the images and containers that use layers or
//! the graph lock: those rules belong to `containers_storage::Store`.
//!
//! A [`LayerStore`] manages the layer records of one store directory
//! (`<graphroot>/<drv>-layers/`):
//!
//! * `layers.json` (stable records), `volatile-layers.json` (records written without
//!   `fdatasync`; in transient mode it lives in the run root) and, with a split image store,
//!   `<imagestore>/<drv>-layers/layers.json` for non-writeable layers;
//! * `layers.lock` (and the image store's `layers.lock`, locked second) with Go's last-writer
//!   token protocol, and `<runroot>/<drv>-layers/mountpoints.json` under `mountpoints.lock`;
//! * `<id>.tar-split.gz` (so `diff` reproduces an applied tar byte for byte) and layer big data
//!   in `<id>/<file name>`.
//!
//! All access goes through guards: [`LayerStore::read`] takes the lock files shared and
//! [`LayerStore::write`] exclusively; both reload the in-memory state only when another writer
//! changed it (token or `layers.json` mtime), exactly like Go, and repair what Go repairs on load
//! (incomplete layers, duplicate names, abandoned deferred-deletion staging directories) —
//! and, unlike Go, removes the temporary tar-split files (`.tmp-<id>.tar-split.gz<digits>`)
//! an interrupted apply left, when it loads under the exclusive lock (their writers hold it
//! while the file exists, so none is alive then).
//! Because the guards are separate values, the caller (the `Store`) can keep the layers lock
//! while it takes the images and containers locks in Go's lock order.
//!
//! Layers are created empty, from a tar (any compression; digests, sizes, UID/GID sets and a
//! tar-split file are recorded) or as an ID-mapped copy of a template layer.
//!
//! Limits: cross-store concerns (images and containers that use a layer, parents living in
//! other layer stores — see [`LayersWrite::create_with_parent`] —, the graph lock
//! `storage.lock`) belong to the caller. Deletion is deferred as in Go 1.59+: a deleted
//! layer's files are moved into staging directories at once and removed when the
//! [`LayersWrite`] guard is dropped, after its locks; abandoned staging directories (ours or
//! Go's) are removed when a store is loaded. Staged/partial
//! pulls (`toc-digest` layers are only read) and additional layer stores are not supported.
//! Do not take a second guard of the same store in a thread that already holds one (the
//! locks are not re-entrant).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use storage_drivers::{DriverOptions, open_driver};
//! use storage_layers::{CreateLayerOptions, LayerStore, LayerStoreOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tmp = tempfile::tempdir()?;
//! let (graph, run) = (tmp.path().join("root"), tmp.path().join("run"));
//! let driver = open_driver("vfs", &DriverOptions {
//!     home: graph.join("vfs"),
//!     run_home: run.join("vfs"),
//!     graph_root: graph.clone(),
//!     run_root: run.clone(),
//!     image_store: None,
//!     options: Vec::new(),
//! })?;
//! let store = LayerStore::open(LayerStoreOptions::new(
//!     graph.join("vfs-layers"),
//!     run.join("vfs-layers"),
//!     Arc::from(driver),
//! ))?;
//!
//! let mut layers = store.write()?;
//! let opts = CreateLayerOptions { names: vec!["base".into()], ..Default::default() };
//! let (layer, _size) = layers.create(&opts, None)?;
//! layers.add_names(&layer.id, &["first".to_string()])?;
//! drop(layers);
//!
//! let layers = store.read()?;
//! assert_eq!(layers.get("base")?.id, layer.id);
//! assert_eq!(layers.get("first")?.names, vec!["first".to_string(), "base".to_string()]);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod pgzip;
mod staged;
mod view;
mod write;

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use storage_drivers::Driver;
use storage_lock::{LockFile, ReadGuard, Token};
use storage_types::{Error, ErrorKind, IdMap, Layer, Result};

pub use staged::{ApplyPlan, Differ, DifferOutput, StagedLayer};
pub use view::{DiffOptions, Layers};
pub use write::{CreateLayerOptions, ExpectedDiff, LayersWrite};

/// Go's `ErrStoreIsReadOnly` wrapped with the store directory, as `layers.go` words it.
fn read_only_error(what: &str, dir: &Path) -> Error {
    Error::new(ErrorKind::StoreIsReadOnly).context(format!(
        "not allowed to {what} at {}",
        storage_types::go_quote(&dir.display().to_string())
    ))
}

/// Converts a lock error into the shared error type.
fn lock_error(e: storage_lock::LockError) -> Error {
    Error::wrap(ErrorKind::Io, e)
}

/// Where a layer record is stored. The index is also the slot in per-file arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Location {
    /// `<G>/<drv>-layers/layers.json`
    Stable = 0,
    /// `<IS>/<drv>-layers/layers.json`
    ImageStore = 1,
    /// `volatile-layers.json` (graph root, or run root in transient mode)
    Volatile = 2,
}

impl Location {
    const ALL: [Location; 3] = [Location::Stable, Location::ImageStore, Location::Volatile];

    /// Where a new layer created with `opts` is recorded: volatile layers in
    /// `volatile-layers.json`, read-only ones in the image store when there is one.
    pub(crate) fn for_new(ctx: &Ctx, opts: &CreateLayerOptions) -> Location {
        if opts.volatile {
            Location::Volatile
        } else if !opts.writeable && ctx.image_store_dir.is_some() {
            Location::ImageStore
        } else {
            Location::Stable
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Where and how a layer store lives.
#[derive(Clone)]
pub struct LayerStoreOptions {
    /// The layer metadata directory: `<graphroot>/<drv>-layers` (for an additional read-only
    /// store `<AIS>/<drv>-layers`). Holds `layers.json`, `layers.lock`, tar-split files and big
    /// data.
    pub layer_dir: PathBuf,
    /// The run-time directory `<runroot>/<drv>-layers` (mount counts; volatile records in
    /// transient mode). Unused by read-only stores.
    pub run_dir: PathBuf,
    /// `<imagestore>/<drv>-layers` when a split image store is configured: non-writeable layers
    /// are recorded there and its `layers.lock` is locked too.
    pub image_store_dir: Option<PathBuf>,
    /// The graph driver holding the layer contents.
    pub driver: Arc<dyn Driver>,
    /// Transient mode: `volatile-layers.json` lives in `run_dir`.
    pub transient: bool,
    /// Open as a read-only (additional) store: shared locks only, no writes, no repairs.
    pub read_only: bool,
    /// Store-wide default UID map for new layers without parent and without explicit maps.
    pub uid_map: Vec<IdMap>,
    /// Store-wide default GID map.
    pub gid_map: Vec<IdMap>,
}

impl LayerStoreOptions {
    /// Options for a plain read-write store in `layer_dir` / `run_dir`.
    pub fn new(layer_dir: PathBuf, run_dir: PathBuf, driver: Arc<dyn Driver>) -> Self {
        LayerStoreOptions {
            layer_dir,
            run_dir,
            image_store_dir: None,
            driver,
            transient: false,
            read_only: false,
            uid_map: Vec::new(),
            gid_map: Vec::new(),
        }
    }
}

/// Fixed facts about a store, shared by its state and guards.
pub(crate) struct Ctx {
    pub(crate) layer_dir: PathBuf,
    pub(crate) run_dir: PathBuf,
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) read_only: bool,
    /// `<IS>/<drv>-layers` of a read-write store with a split image store.
    pub(crate) image_store_dir: Option<PathBuf>,
    pub(crate) uid_map: Vec<IdMap>,
    pub(crate) gid_map: Vec<IdMap>,
    /// JSON file per [`Location`] (None: not used by this store).
    pub(crate) json_paths: [Option<PathBuf>; 3],
}

impl Ctx {
    pub(crate) fn mounts_path(&self) -> PathBuf {
        self.run_dir.join("mountpoints.json")
    }

    pub(crate) fn tar_split_path(&self, id: &str) -> PathBuf {
        self.layer_dir.join(format!("{id}.tar-split.gz"))
    }

    pub(crate) fn data_dir(&self, id: &str) -> PathBuf {
        self.layer_dir.join(id)
    }

    /// `(layer ID, path)` of every temporary tar-split file (`.tmp-<id>.tar-split.gz<digits>`)
    /// in the layer directory and the image store's, sorted.
    pub(crate) fn tar_split_temporaries(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        for dir in std::iter::once(&self.layer_dir).chain(self.image_store_dir.as_ref()) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name();
                let id = storage_io::temp_file_target(name.as_bytes(), b".tar-split.gz")
                    .and_then(|t| t.strip_suffix(b".tar-split.gz"))
                    .and_then(|id| std::str::from_utf8(id).ok())
                    .filter(|id| storage_types::is_full_id(id));
                if let Some(id) = id {
                    out.push((id.to_string(), e.path()));
                }
            }
        }
        out.sort();
        out
    }
}

/// One loaded layer with its store-private companions.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) layer: Layer,
    pub(crate) location: Location,
    /// Mount point recorded in mountpoints.json (empty: none).
    pub(crate) mount_point: Option<PathBuf>,
    /// Mount count recorded in mountpoints.json.
    pub(crate) mount_count: i64,
}

/// A layer store (Go's `layerStore` / `roLayerStore`). Cheap to share between threads.
pub struct LayerStore {
    ctx: Arc<Ctx>,
    lock: Arc<LockFile>,
    image_store_lock: Option<Arc<LockFile>>,
    mounts_lock: Option<Arc<LockFile>>,
    state: RwLock<Layers>,
    loads: AtomicU64,
}

/// How out of date the in-memory state is.
#[derive(PartialEq, Eq)]
enum Staleness {
    Fresh,
    Mounts,
    Full,
}

impl LayerStore {
    /// Opens (creating directories and lock files of a read-write store) a layer store.
    /// Nothing is loaded yet: the first [`read`](Self::read) or [`write`](Self::write) loads.
    pub fn open(opts: LayerStoreOptions) -> Result<LayerStore> {
        let LayerStoreOptions {
            layer_dir,
            run_dir,
            image_store_dir,
            driver,
            transient,
            read_only,
            uid_map,
            gid_map,
        } = opts;
        let lock = if read_only {
            LockFile::open_read_only(&layer_dir.join("layers.lock")).map_err(lock_error)?
        } else {
            storage_io::mkdir_all(&layer_dir, 0o700)
                .map_err(|e| Error::io("mkdir", &layer_dir, e))?;
            storage_io::mkdir_all(&run_dir, 0o700).map_err(|e| Error::io("mkdir", &run_dir, e))?;
            LockFile::open(&layer_dir.join("layers.lock")).map_err(lock_error)?
        };
        let image_store_lock = match (&image_store_dir, read_only) {
            (Some(dir), false) => {
                storage_io::mkdir_all(dir, 0o700).map_err(|e| Error::io("mkdir", dir, e))?;
                Some(LockFile::open(&dir.join("layers.lock")).map_err(lock_error)?)
            }
            _ => None,
        };
        let mounts_lock = if read_only {
            None
        } else {
            Some(LockFile::open(&run_dir.join("mountpoints.lock")).map_err(lock_error)?)
        };
        let volatile = if transient && !read_only {
            run_dir.join("volatile-layers.json")
        } else {
            layer_dir.join("volatile-layers.json")
        };
        let json_paths = [
            Some(layer_dir.join("layers.json")),
            image_store_dir
                .as_ref()
                .filter(|_| !read_only)
                .map(|d| d.join("layers.json")),
            Some(volatile),
        ];
        let ctx = Arc::new(Ctx {
            layer_dir,
            run_dir,
            driver,
            read_only,
            image_store_dir: image_store_dir.filter(|_| !read_only),
            uid_map,
            gid_map,
            json_paths,
        });
        Ok(LayerStore {
            state: RwLock::new(Layers::empty(ctx.clone())),
            ctx,
            lock,
            image_store_lock,
            mounts_lock,
            loads: AtomicU64::new(0),
        })
    }

    /// Whether this is a read-only (additional) store.
    pub fn is_read_only(&self) -> bool {
        self.ctx.read_only
    }

    /// The layer metadata directory (`<root>/<drv>-layers`).
    pub fn layer_dir(&self) -> &Path {
        &self.ctx.layer_dir
    }

    /// The graph driver of this store.
    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.ctx.driver
    }

    /// How many times the records were (re)loaded from disk by this instance (diagnostics: it
    /// must not grow while nobody changes the store).
    pub fn load_count(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    fn state_read(&self) -> RwLockReadGuard<'_, Layers> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state_write(&self) -> RwLockWriteGuard<'_, Layers> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Go's freshness check of a loaded store: layers token, JSON mtimes, mountpoints token.
    fn staleness(&self, st: &Layers, guard_modified: bool) -> Result<Staleness> {
        if !st.loaded || guard_modified {
            return Ok(Staleness::Full);
        }
        for (i, path) in self.ctx.json_paths.iter().enumerate() {
            let Some(path) = path else { continue };
            match std::fs::metadata(path) {
                Ok(md) => {
                    if md.modified().ok() != st.mtimes[i] {
                        return Ok(Staleness::Full);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("stat", path, e)),
            }
        }
        if let Some(ml) = &self.mounts_lock {
            let g = ml.rlock().map_err(lock_error)?;
            if g.modified_since(&st.mounts_last_write)
                .map_err(lock_error)?
            {
                return Ok(Staleness::Mounts);
            }
        }
        Ok(Staleness::Fresh)
    }

    /// Reloads records (and mount data) into `st`. Returns whether a repair (needing the
    /// exclusive lock) is pending.
    fn reload(&self, st: &mut Layers, token: Token) -> Result<bool> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        let mounts_guard = match &self.mounts_lock {
            Some(l) => Some(l.rlock().map_err(lock_error)?),
            None => None,
        };
        let repair = st.load(token)?;
        if let Some(g) = mounts_guard {
            st.load_mounts(g.token().map_err(lock_error)?)?;
        }
        Ok(repair)
    }

    fn reload_mounts(&self, st: &mut Layers) -> Result<()> {
        if let Some(ml) = &self.mounts_lock {
            let g = ml.rlock().map_err(lock_error)?;
            st.load_mounts(g.token().map_err(lock_error)?)?;
        }
        Ok(())
    }

    /// Brings the records up to date after the lock file said whether another writer came
    /// by: the mount records alone or everything reloaded (the latter followed by
    /// [`Self::after_full_load`]). Returns whether the load asks for a repair.
    fn refresh(
        &self,
        st: &mut Layers,
        modified: bool,
        token: impl FnOnce() -> std::result::Result<Token, storage_lock::LockError>,
        exclusive: bool,
    ) -> Result<bool> {
        match self.staleness(st, modified)? {
            Staleness::Fresh => Ok(false),
            Staleness::Mounts => {
                self.reload_mounts(st)?;
                Ok(false)
            }
            Staleness::Full => {
                let repair = self.reload(st, token().map_err(lock_error)?)?;
                self.after_full_load(exclusive);
                Ok(repair)
            }
        }
    }

    /// The clean-ups of a full load of a read-write store. Go loads with the exclusive
    /// lock at start-up and removes abandoned staging dirs then; the staging locks make
    /// that safe under the shared lock too. Under the exclusive lock we also remove the
    /// tar-split temporaries of interrupted writes, and abandoned staged layers.
    fn after_full_load(&self, exclusive: bool) {
        if self.ctx.read_only {
            return;
        }
        write::cleanup_staging_dirs(&self.ctx);
        if !exclusive {
            return;
        }
        if let Err(e) = write::remove_temporaries(&self.ctx) {
            tracing::warn!("removing temporary tar-split files: {e}");
        }
        if let Err(e) = self.ctx.driver.recover_staging() {
            tracing::warn!("cleaning up abandoned staged layers: {e}");
        }
    }

    /// Takes the layers lock(s) shared and returns a fresh view of the records.
    ///
    /// If loading finds something Go repairs on load (incomplete layers, duplicate names) in a
    /// read-write store, the lock is upgraded once to exclusive to repair, then reading resumes.
    pub fn read(&self) -> Result<LayersRead<'_>> {
        for _ in 0..3 {
            let guard = self.lock.rlock().map_err(lock_error)?;
            let is_guard = match &self.image_store_lock {
                Some(l) => Some(l.rlock().map_err(lock_error)?),
                None => None,
            };
            {
                let st = self.state_read();
                let modified = guard.modified_since(&st.last_write).map_err(lock_error)?;
                let stale = self.staleness(&st, modified)?;
                if stale == Staleness::Fresh {
                    return Ok(LayersRead {
                        state: st,
                        _is_guard: is_guard,
                        _guard: guard,
                    });
                }
            }
            let mut st = self.state_write();
            let modified = guard.modified_since(&st.last_write).map_err(lock_error)?;
            let repair = self.refresh(&mut st, modified, || guard.token(), false)?;
            if repair && !self.ctx.read_only {
                // Forget the unrepaired state and let a writer load, repair and save.
                st.loaded = false;
                drop(st);
                drop(is_guard);
                drop(guard);
                drop(self.write()?);
                continue;
            }
            drop(st);
            let st = self.state_read();
            return Ok(LayersRead {
                state: st,
                _is_guard: is_guard,
                _guard: guard,
            });
        }
        Err(Error::msg(
            ErrorKind::Other,
            format!(
                "layer store at {} kept changing while being loaded",
                storage_types::go_quote(&self.ctx.layer_dir.display().to_string())
            ),
        ))
    }

    /// Takes the layers lock(s) exclusively (graph root first, then the image store) and
    /// returns a fresh, writable view. Read-only stores refuse with `ErrStoreIsReadOnly`.
    pub fn write(&self) -> Result<LayersWrite<'_>> {
        if self.ctx.read_only {
            return Err(read_only_error("modify layers", &self.ctx.layer_dir));
        }
        let guard = self.lock.lock().map_err(lock_error)?;
        let is_guard = match &self.image_store_lock {
            Some(l) => Some(l.lock().map_err(lock_error)?),
            None => None,
        };
        let mut st = self.state_write();
        let modified = guard.modified_since(&st.last_write).map_err(lock_error)?;
        let repair = self.refresh(&mut st, modified, || guard.token(), true)?;
        let mut w = LayersWrite::new(st, guard, is_guard, self.mounts_lock.clone());
        if repair {
            w.repair()?;
        }
        Ok(w)
    }
}

/// A shared-locked, fresh view of a layer store; dereferences to [`Layers`].
/// Dropping it releases the locks.
pub struct LayersRead<'a> {
    // Field order = drop order: in-process state first, then the file locks.
    state: RwLockReadGuard<'a, Layers>,
    _is_guard: Option<ReadGuard>,
    _guard: ReadGuard,
}

impl std::ops::Deref for LayersRead<'_> {
    type Target = Layers;
    fn deref(&self) -> &Layers {
        &self.state
    }
}

pub(crate) type NameIndex = HashMap<String, usize>;

/// Modification time of a file, None when missing.
pub(crate) fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok().and_then(|m| m.modified().ok())
}
