//! Everything that modifies a layer store, under the exclusive lock.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use std::sync::{Arc, RwLockWriteGuard};
use storage_gocompat::path::clean_path;

use serde_json::Value;
use storage_drivers::{ApplyDiffOpts, CreateOpts, MountOpts};
use storage_io::{AtomicFile, WriteOptions};
use storage_lock::{LockFile, TempDir, WriteGuard};
use storage_types::{Digest, Error, ErrorKind, IdMap, Layer, MountPoint, Result, Timestamp};

use crate::view::{Layers, layer_parent};
use crate::{Location, lock_error};

mod mount;

mod records;

pub(crate) const INCOMPLETE: &str = "incomplete";

/// What to create with [`LayersWrite::create`] (Go's `CreateLayer`/`PutLayer` arguments and
/// `LayerOptions`).
#[derive(Clone, Debug, Default)]
pub struct CreateLayerOptions {
    /// The new layer's ID; `None` generates a random one.
    pub id: Option<String>,
    /// Parent layer (ID, name or unique prefix, resolved in this store); `None` for a base
    /// layer. For a parent in another store use [`LayersWrite::create_with_parent`].
    pub parent: Option<String>,
    /// Names (de-duplicated; each must be unused among this store's layers).
    pub names: Vec<String>,
    /// SELinux mount label.
    pub mount_label: String,
    /// Driver storage options (`--storage-opt`).
    pub storage_opt: BTreeMap<String, String>,
    /// A writeable (container) layer: created with the driver's `create_read_write` and kept in
    /// the graph root even with a split image store.
    pub writeable: bool,
    /// Record the layer in `volatile-layers.json`.
    pub volatile: bool,
    /// Explicit UID map; empty = inherit (parent's maps, or the store default without parent).
    /// When the driver can shift the resulting maps at mount time (Go's `canUseShifting`),
    /// the layer is recorded without maps and its content stays canonical.
    pub uid_map: Vec<IdMap>,
    /// Explicit GID map; empty = inherit.
    pub gid_map: Vec<IdMap>,
    /// Force "no UID map" regardless of parent and defaults.
    pub host_uid_mapping: bool,
    /// Force "no GID map".
    pub host_gid_mapping: bool,
    /// Initial flags.
    pub flags: BTreeMap<String, Value>,
    /// Caller-known digest of the compressed blob (stored instead of the computed one when it
    /// is a sha256 digest).
    pub original_digest: Option<Digest>,
    /// Caller-known size of the compressed blob (used with `original_digest`).
    pub original_size: Option<i64>,
    /// Caller-known digest of the uncompressed tar (stored instead of the computed one when it
    /// is a sha256 digest).
    pub uncompressed_digest: Option<Digest>,
    /// Template layer (ID, name or prefix in this store): the new layer starts with the
    /// template's content (re-owned when the maps differ) and gets a copy of its metadata,
    /// digests, sizes, compression, UID/GID sets and tar-split file. Used for the ID-mapped
    /// copies of image top layers (`mapped-layers`).
    pub template: Option<String>,
    /// What the diff must turn out to be (an image's layer whose ID was derived from digests
    /// the caller was told): checked after extraction, before the layer is complete; a
    /// mismatch fails the creation, which removes the half-made layer.
    pub expect: Option<ExpectedDiff>,
}

/// Digests and size a diff must have (see [`CreateLayerOptions::expect`]); `None` fields are
/// not checked. Only sha256 digests can be checked (the ones the pipeline computes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpectedDiff {
    /// Digest of the input as given (the compressed blob).
    pub compressed_digest: Option<Digest>,
    /// Length of the input as given.
    pub compressed_size: Option<i64>,
    /// Digest of the decompressed tar.
    pub uncompressed_digest: Option<Digest>,
}

impl ExpectedDiff {
    /// Compares the digests and sizes of an applied diff with the expected ones.
    pub(crate) fn check(&self, stats: &storage_archive::DiffStats) -> Result<()> {
        let mismatch = |what: &str, want: &dyn std::fmt::Display, got: &dyn std::fmt::Display| {
            Err(Error::msg(
                ErrorKind::InvalidInput,
                format!("{what} mismatch: expected {want}, got {got}"),
            ))
        };
        if let Some(size) = self.compressed_size
            && size != stats.compressed_size
        {
            return mismatch("size", &size, &stats.compressed_size);
        }
        if let Some(d) = &self.compressed_digest {
            if d.algorithm() != "sha256" {
                return Err(Error::msg(
                    ErrorKind::NotSupported,
                    format!("unsupported digest algorithm of {d}"),
                ));
            }
            if *d != stats.compressed_digest {
                return mismatch("digest", d, &stats.compressed_digest);
            }
        }
        if let Some(d) = &self.uncompressed_digest
            && *d != stats.uncompressed_digest
        {
            return mismatch("uncompressed digest", d, &stats.uncompressed_digest);
        }
        Ok(())
    }
}

/// What `finish_create` needs besides the options.
struct Plan {
    id: String,
    parent: Option<String>,
    /// The maps of the content the driver starts from (template's, else parent's).
    old_uid: Vec<IdMap>,
    old_gid: Vec<IdMap>,
    /// Template ID and its tar-split file's bytes (empty: none).
    template: Option<(String, Vec<u8>)>,
}

/// Digests a caller already knows (see [`CreateLayerOptions`]).
#[derive(Default, Clone, Debug)]
pub(crate) struct KnownDigests {
    pub(crate) original_digest: Option<Digest>,
    pub(crate) original_size: Option<i64>,
    pub(crate) uncompressed_digest: Option<Digest>,
    pub(crate) expect: Option<ExpectedDiff>,
}

impl KnownDigests {
    pub(crate) fn of(opts: &CreateLayerOptions) -> KnownDigests {
        KnownDigests {
            original_digest: opts.original_digest.clone(),
            original_size: opts.original_size,
            uncompressed_digest: opts.uncompressed_digest.clone(),
            expect: opts.expect.clone(),
        }
    }
}

/// Name update operations (Go's `updateNameOperation`).
#[derive(Clone, Copy)]
enum NameOp {
    Set,
    Add,
    Remove,
}

/// An exclusively locked, fresh, writable view of a layer store; dereferences to [`Layers`]
/// for reading. Every change is saved before the method returns (token first, then the JSON
/// file of the changed record's location and `mountpoints.json`). Dropping it releases the
/// locks, and then removes the staging directories of the layers it deleted (Go's deferred
/// deletion): hold it longer than the other store locks you take after it, so that the
/// removal happens once every lock is released, as in Go.
pub struct LayersWrite<'a> {
    // Field order = drop order: in-process state first, then the file locks, then the
    // staging directories of deleted layers (removed with no lock held).
    pub(crate) state: RwLockWriteGuard<'a, Layers>,
    is_guard: Option<WriteGuard>,
    guard: WriteGuard,
    mounts_lock: Option<Arc<LockFile>>,
    deferred: Vec<TempDir>,
}

impl std::ops::Deref for LayersWrite<'_> {
    type Target = Layers;
    fn deref(&self) -> &Layers {
        &self.state
    }
}

/// Removes a file or directory tree, ignoring "not found".
fn remove_quietly(path: &Path, dir: bool) -> Result<()> {
    let r = if dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// The staging root of deferred layer deletions in a layer directory (`<drv>-layers/tmp`).
pub(crate) const TEMP_DIR: &str = "tmp";

/// Deletes abandoned deferred-deletion staging dirs (`temp-dir-X` whose `lock-X` nobody
/// holds) of the layer directory (`tmp/`) and of the driver's staging roots (`tempdirs/`),
/// left by a process of ours or Go's (1.59+) that died while deleting. Failures only warn:
/// they never block loading.
pub(crate) fn cleanup_staging_dirs(ctx: &crate::Ctx) {
    let roots = std::iter::once(ctx.layer_dir.join(TEMP_DIR)).chain(ctx.driver.temp_dir_roots());
    for root in roots {
        if let Err(e) = storage_lock::recover_stale_dirs(&root) {
            tracing::warn!("cleaning up deferred-deletion staging directories: {e}");
        }
    }
}

/// Removes the temporary tar-split files of interrupted writes (see
/// [`Layers::leftover_temporaries`]); to be called under the exclusive lock. Returns the
/// paths removed; every file is tried before the first error is returned.
pub(crate) fn remove_temporaries(ctx: &crate::Ctx) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let mut first = None;
    for (_, path) in ctx.tar_split_temporaries() {
        match remove_quietly(&path, false) {
            Ok(()) => removed.push(path),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

pub(crate) fn io_err(e: std::io::Error) -> Error {
    Error::from(e)
}

/// Records what an applied diff measured (Go's `applyDiffWithOptions`): digests (the
/// caller's known ones when they are sha256), sizes, compression and the UID/GID sets.
pub(crate) fn record_diff(l: &mut Layer, stats: &storage_archive::DiffStats, known: &KnownDigests) {
    match &known.original_digest {
        Some(d) if d.algorithm() == "sha256" => {
            l.compressed_diff_digest = d.to_string();
            l.compressed_size = known.original_size.unwrap_or(stats.compressed_size);
        }
        _ => {
            l.compressed_diff_digest = stats.compressed_digest.to_string();
            l.compressed_size = stats.compressed_size;
        }
    }
    l.diff_digest = match &known.uncompressed_digest {
        Some(d) if d.algorithm() == "sha256" => d.to_string(),
        _ => stats.uncompressed_digest.to_string(),
    };
    l.diff_size = stats.uncompressed_size;
    l.compression = stats.compression as i32;
    l.uidset = stats.uidset.clone();
    l.gidset = stats.gidset.clone();
}

/// Go's `store.canUseShifting` (1.59+): whether the driver applies these maps at mount time
/// (overlay with idmapped mounts, or a mount program given contiguous maps). 1.43 also
/// refused non-contiguous maps for every driver; 1.60 leaves that to the driver.
pub(crate) fn can_use_shifting(
    driver: &dyn storage_drivers::Driver,
    uid_map: &[IdMap],
    gid_map: &[IdMap],
) -> bool {
    driver.supports_shifting(uid_map, gid_map)
}

/// The ID maps a new layer gets (Go's `putLayer`): forced host maps, else the explicit
/// ones, else the parent's, else (base layers) the store's defaults; none when the driver
/// shifts them at mount time.
pub(crate) fn layer_maps(
    ctx: &crate::Ctx,
    parent: Option<&Layer>,
    opts: &CreateLayerOptions,
) -> (Vec<IdMap>, Vec<IdMap>) {
    let pick = |host: bool,
                explicit: &Vec<IdMap>,
                inherited: Option<&Vec<IdMap>>,
                default: &Vec<IdMap>| {
        if host {
            Vec::new()
        } else if !explicit.is_empty() {
            explicit.clone()
        } else if let Some(inherited) = inherited {
            inherited.clone()
        } else {
            default.clone()
        }
    };
    let mut uidmap = pick(
        opts.host_uid_mapping,
        &opts.uid_map,
        parent.map(|p| &p.uidmap),
        &ctx.uid_map,
    );
    let mut gidmap = pick(
        opts.host_gid_mapping,
        &opts.gid_map,
        parent.map(|p| &p.gidmap),
        &ctx.gid_map,
    );
    // Go's putLayer/CreateContainer: a driver that shifts IDs at mount time gets the
    // layer without maps (canonical content); the maps are applied when mounting.
    if can_use_shifting(ctx.driver.as_ref(), &uidmap, &gidmap) {
        uidmap.clear();
        gidmap.clear();
    }
    (uidmap, gidmap)
}

/// One `syncfs(2)` of the file system holding `dir`.
pub(crate) fn sync_filesystem(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    rustix::fs::syncfs(&f).map_err(|e| Error::io("syncfs", dir, e.into()))
}

/// Starts writeback of a file system early: while a diff is extracted, a helper thread
/// calls `syncfs` on it every [`EarlyWriteback::PERIOD`], so that the disk writes the
/// layer's files on the other core while more are created, and the one `syncfs` that
/// makes the layer durable finds little left to do. Errors are left to that final call.
pub(crate) struct EarlyWriteback {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl EarlyWriteback {
    const PERIOD: std::time::Duration = std::time::Duration::from_millis(200);

    /// Starts the helper for the file system of `dir` (none if `dir` cannot be opened).
    pub(crate) fn start(dir: &Path) -> EarlyWriteback {
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let handle = std::fs::File::open(dir).ok().and_then(|f| {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("layer-writeback".into())
                .spawn(move || {
                    let (lock, cvar) = &*stop;
                    let Ok(mut stopped) = lock.lock() else { return };
                    while !*stopped {
                        let Ok((g, timeout)) = cvar.wait_timeout(stopped, Self::PERIOD) else {
                            return;
                        };
                        stopped = g;
                        if !*stopped && timeout.timed_out() {
                            drop(stopped);
                            let _ = rustix::fs::syncfs(&f);
                            let Ok(g) = lock.lock() else { return };
                            stopped = g;
                        }
                    }
                })
                .ok()
        });
        EarlyWriteback { stop, handle }
    }
}

impl Drop for EarlyWriteback {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        if let Ok(mut stopped) = lock.lock() {
            *stopped = true;
        }
        cvar.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl<'a> LayersWrite<'a> {
    pub(crate) fn new(
        state: RwLockWriteGuard<'a, Layers>,
        guard: WriteGuard,
        is_guard: Option<WriteGuard>,
        mounts_lock: Option<Arc<LockFile>>,
    ) -> Self {
        LayersWrite {
            state,
            is_guard,
            guard,
            mounts_lock,
            deferred: Vec::new(),
        }
    }

    /// Whether this store's driver can apply these ID maps at mount time (Go's
    /// `store.canUseShifting`: the driver's `SupportsShifting` and contiguous maps). When it
    /// can, [`create`](Self::create) records new layers without maps and
    /// [`mount`](Self::mount) passes differing maps to the driver.
    pub fn can_use_shifting(&self, uid_map: &[IdMap], gid_map: &[IdMap]) -> bool {
        can_use_shifting(self.state.ctx.driver.as_ref(), uid_map, gid_map)
    }

    // ---------------------------------------------------------------- saving

    /// Writes the token(s) and the JSON files of the locations in `locs` (a bit mask).
    fn save_layers(&mut self, locs: u8) -> Result<()> {
        let token = self.guard.record_write().map_err(lock_error)?;
        if let Some(g) = &self.is_guard {
            g.record_write().map_err(lock_error)?;
        }
        self.state.last_write = token;
        for loc in Location::ALL {
            if locs & loc.bit() == 0 {
                continue;
            }
            let Some(path) = self.state.ctx.json_paths[loc as usize].clone() else {
                continue;
            };
            let subset: Vec<&Layer> = self
                .state
                .entries
                .iter()
                .filter(|e| e.location == loc)
                .map(|e| &e.layer)
                .collect();
            let data = storage_types::try_to_go_json(&subset)?;
            if let Some(dir) = path.parent() {
                storage_io::mkdir_all(dir, 0o700).map_err(|e| Error::io("mkdir", dir, e))?;
            }
            let opts = WriteOptions {
                mode: 0o600,
                sync: loc != Location::Volatile,
            };
            let written = storage_io::atomic_write_mtime(&path, &data, opts)
                .map_err(|e| Error::io("write", &path, e))?;
            self.state.mtimes[loc as usize] = Some(written);
        }
        Ok(())
    }

    /// Writes the mountpoints token and `mountpoints.json` (count > 0 entries only).
    fn save_mounts(&mut self, mguard: &WriteGuard) -> Result<()> {
        let token = mguard.record_write().map_err(lock_error)?;
        self.state.mounts_last_write = token;
        let records: Vec<MountPoint> = self
            .state
            .entries
            .iter()
            .filter(|e| e.mount_count > 0)
            .filter_map(|e| {
                let path = e.mount_point.as_ref()?;
                Some(MountPoint {
                    id: e.layer.id.clone(),
                    path: path.to_string_lossy().into_owned(),
                    count: i32::try_from(e.mount_count).unwrap_or(i32::MAX),
                    ..Default::default()
                })
            })
            .collect();
        let data = storage_types::try_to_go_json(&records)?;
        let path = self.state.ctx.mounts_path();
        storage_io::atomic_write(
            &path,
            &data,
            WriteOptions {
                mode: 0o600,
                sync: true,
            },
        )
        .map_err(|e| Error::io("write", &path, e))
    }

    /// Go's `save`: layers token + files of `locs`, then (under mountpoints.lock) the
    /// mountpoints token + file.
    pub(crate) fn save(&mut self, locs: u8) -> Result<()> {
        let mguard = match &self.mounts_lock {
            Some(l) => Some(l.lock().map_err(lock_error)?),
            None => None,
        };
        self.save_layers(locs)?;
        if let Some(g) = mguard {
            self.save_mounts(&g)?;
        }
        Ok(())
    }

    /// Takes mountpoints.lock exclusively and reloads mount data if another process changed it.
    fn lock_mounts(&mut self) -> Result<Option<WriteGuard>> {
        let Some(l) = self.mounts_lock.clone() else {
            return Ok(None);
        };
        let g = l.lock().map_err(lock_error)?;
        if g.modified_since(&self.state.mounts_last_write)
            .map_err(lock_error)?
        {
            let token = g.token().map_err(lock_error)?;
            self.state.load_mounts(token)?;
        }
        Ok(Some(g))
    }

    /// Finishes a load that found something to repair: deletes incomplete layers (with a
    /// warning) and saves name fixes.
    pub(crate) fn repair(&mut self) -> Result<()> {
        let mut locs = self.state.dirty;
        let incomplete: Vec<(String, Location)> = self
            .state
            .entries
            .iter()
            .filter(|e| e.layer.is_incomplete())
            .map(|e| (e.layer.id.clone(), e.location))
            .collect();
        let mut first_err = None;
        for (id, loc) in incomplete {
            tracing::warn!(
                "Found incomplete layer {}, deleting it",
                storage_types::go_quote(&id)
            );
            locs |= loc.bit();
            if let Err(e) = self.delete_internal(&id) {
                first_err.get_or_insert(e);
            }
        }
        self.state.dirty = 0;
        if locs != 0 {
            self.save(locs)?;
        }
        first_err.map_or(Ok(()), Err)
    }

    // ---------------------------------------------------------------- creation

    /// Creates a layer (Go's `CreateLayer`, or `PutLayer` when `diff` is given), resolving
    /// `opts.parent` in this store. Returns the new record and the size the driver reported for
    /// the applied diff (-1 without diff).
    ///
    /// The record is saved with `flags.incomplete = true` before any driver work, and the flag
    /// is cleared (and saved) only when everything succeeded; on failure the half-made layer is
    /// deleted again (record, driver data, tar-split file).
    pub fn create(
        &mut self,
        opts: &CreateLayerOptions,
        diff: Option<Box<dyn Read + Send>>,
    ) -> Result<(Layer, i64)> {
        let parent = match opts.parent.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => Some(self.state.get(p)?),
            None => None,
        };
        self.create_with_parent(parent.as_ref(), opts, diff)
    }

    /// Makes the record directories, then picks the new layer's ID (the requested one or a
    /// fresh one) and its de-duplicated names; a taken ID or name is refused as Go does.
    pub(crate) fn new_id_and_names(
        &self,
        ctx: &crate::Ctx,
        opts: &CreateLayerOptions,
    ) -> Result<(String, Vec<String>)> {
        storage_io::mkdir_all(&ctx.run_dir, 0o700)
            .map_err(|e| Error::io("mkdir", &ctx.run_dir, e))?;
        storage_io::mkdir_all(&ctx.layer_dir, 0o700)
            .map_err(|e| Error::io("mkdir", &ctx.layer_dir, e))?;
        let id = match opts.id.as_deref().filter(|i| !i.is_empty()) {
            Some(id) => id.to_string(),
            None => storage_types::generate_unique_id(|c| self.state.by_id.contains_key(c)),
        };
        if self.state.by_id.contains_key(&id) {
            return Err(Error::new(ErrorKind::DuplicateId));
        }
        let names = storage_types::dedup_names(&opts.names);
        if names.iter().any(|n| self.state.by_name.contains_key(n)) {
            return Err(Error::new(ErrorKind::DuplicateName));
        }
        Ok((id, names))
    }

    /// Like [`create`](Self::create) with an already resolved parent record, which may live in
    /// another (e.g. read-only) layer store. `opts.parent` is ignored.
    pub fn create_with_parent(
        &mut self,
        parent: Option<&Layer>,
        opts: &CreateLayerOptions,
        diff: Option<Box<dyn Read + Send>>,
    ) -> Result<(Layer, i64)> {
        let ctx = self.state.ctx.clone();
        let (id, names) = self.new_id_and_names(&ctx, opts)?;
        let (parent_uid, parent_gid) = match parent {
            Some(p) => (p.uidmap.clone(), p.gidmap.clone()),
            None => (Vec::new(), Vec::new()),
        };
        let template = match opts.template.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => {
                let tl = self.state.get(t)?;
                let ts_path = ctx.tar_split_path(&tl.id);
                let ts = match std::fs::read(&ts_path) {
                    Ok(d) => d,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(Error::io("open", &ts_path, e)),
                };
                Some((tl, ts))
            }
            None => None,
        };
        let (uidmap, gidmap) = layer_maps(&ctx, parent, opts);
        let location = Location::for_new(&ctx, opts);
        let mut flags = opts.flags.clone();
        flags.insert(INCOMPLETE.to_string(), Value::Bool(true));
        let mut layer = Layer {
            id: id.clone(),
            names,
            parent: parent.map(|p| p.id.clone()).unwrap_or_default(),
            mount_label: opts.mount_label.clone(),
            created: Timestamp::now(),
            uidmap: uidmap.clone(),
            gidmap: gidmap.clone(),
            flags,
            ..Default::default()
        };
        if let Some((t, _)) = &template {
            layer.metadata = t.metadata.clone();
            layer.compressed_diff_digest = t.compressed_diff_digest.clone();
            layer.compressed_size = t.compressed_size;
            layer.diff_digest = t.diff_digest.clone();
            layer.toc_digest = t.toc_digest.clone();
            layer.diff_size = t.diff_size;
            layer.compression = t.compression;
            layer.uidset = t.uidset.clone();
            layer.gidset = t.gidset.clone();
        }
        let plan = Plan {
            id: id.clone(),
            parent: parent.map(|p| p.id.clone()),
            old_uid: template
                .as_ref()
                .map_or(parent_uid, |(t, _)| t.uidmap.clone()),
            old_gid: template
                .as_ref()
                .map_or(parent_gid, |(t, _)| t.gidmap.clone()),
            template: template.map(|(t, ts)| (t.id, ts)),
        };
        self.state.push_new(layer, location)?;

        let known = KnownDigests::of(opts);
        let result = self.finish_create(&plan, opts, diff, &known);
        match result {
            Ok(size) => {
                let layer = self.state.get(&id)?;
                Ok((layer, size))
            }
            Err(e) => {
                self.delete_after_failure(&id, location);
                Err(e)
            }
        }
    }

    /// Deletes a layer whose creation failed and saves its record file, logging (as Go
    /// does) what fails while recovering.
    pub(crate) fn delete_after_failure(&mut self, id: &str, location: Location) {
        // Go deletes a layer it failed to create while holding the lock, staging
        // directories included (`deleteWhileHoldingLock`).
        let staged_before = self.deferred.len();
        let deleted = self.delete_internal(id);
        self.cleanup_staged_since(staged_before);
        match deleted {
            Ok(()) => {
                if let Err(e3) = self.save(location.bit()) {
                    tracing::error!(
                        "While recovering from a failure, error saving layers after deleting layer {}: {e3}",
                        storage_types::go_quote(id)
                    );
                }
            }
            Err(e2) => tracing::error!(
                "While recovering from a failure, error deleting layer {}: {e2}",
                storage_types::go_quote(id)
            ),
        }
    }

    fn finish_create(
        &mut self,
        plan: &Plan,
        opts: &CreateLayerOptions,
        diff: Option<Box<dyn Read + Send>>,
        known: &KnownDigests,
    ) -> Result<i64> {
        let id = plan.id.as_str();
        let i = self.state.index_or_unknown(id)?;
        let location = self.state.entries[i].location;
        self.save(location.bit())?;
        let (uidmap, gidmap) = {
            let l = &self.state.entries[i].layer;
            (l.uidmap.clone(), l.gidmap.clone())
        };
        let copts = CreateOpts {
            mount_label: opts.mount_label.clone(),
            storage_opt: opts.storage_opt.clone(),
            uid_map: uidmap.clone(),
            gid_map: gidmap.clone(),
        };
        let ctx = self.state.ctx.clone();
        let driver = &ctx.driver;
        match &plan.template {
            // vfs/overlay/btrfs make a template copy as a driver-level child of the template.
            Some((t, _)) => {
                let r = if opts.writeable {
                    driver.create_read_write(id, Some(t), &copts)
                } else {
                    driver.create(id, Some(t), &copts)
                };
                r.map_err(|e| {
                    e.context(format!(
                        "creating copy of template layer {} with ID {}",
                        storage_types::go_quote(t),
                        storage_types::go_quote(id)
                    ))
                })?;
            }
            None if opts.writeable => driver
                .create_read_write(id, plan.parent.as_deref(), &copts)
                .map_err(|e| {
                    e.context(format!(
                        "creating read-write layer with ID {}",
                        storage_types::go_quote(id)
                    ))
                })?,
            None => driver
                .create(id, plan.parent.as_deref(), &copts)
                .map_err(|e| {
                    e.context(format!(
                        "creating read-only layer with ID {}",
                        storage_types::go_quote(id)
                    ))
                })?,
        }
        // 1.51+: a layer with neither parent nor template has no content to re-own (its root
        // dir already belongs to the maps' root); 1.43 still called the driver, which on
        // overlay rotated the empty `diff` into `diff1`.
        let has_content = plan.parent.is_some() || plan.template.is_some();
        if has_content && (plan.old_uid != uidmap || plan.old_gid != gidmap) {
            driver.update_layer_id_map(id, &plan.old_uid, &plan.old_gid, &uidmap, &gidmap)?;
        }
        if let Some((_, ts)) = &plan.template
            && !ts.is_empty()
        {
            let path = ctx.tar_split_path(id);
            storage_io::atomic_write(
                &path,
                ts,
                WriteOptions {
                    mode: 0o600,
                    sync: true,
                },
            )
            .map_err(|e| Error::io("write", &path, e))?;
        }
        let mut size = -1;
        if let Some(diff) = diff {
            size = self.apply_diff_inner(id, diff, known)?;
        }
        let i = self.state.index_or_unknown(id)?;
        self.state.entries[i].layer.flags.remove(INCOMPLETE);
        self.save(location.bit())?;
        Ok(size)
    }

    /// Applies a (possibly compressed) layer tar on top of layer `key` (Go's `ApplyDiff`):
    /// decompresses and digests it, records tar-split data, lets the driver extract it, then
    /// records digests, sizes, compression and the UID/GID sets. Returns the driver's size.
    pub fn apply_diff(&mut self, key: &str, diff: Box<dyn Read + Send>) -> Result<i64> {
        let id = self.state.get(key)?.id;
        self.apply_diff_inner(&id, diff, &KnownDigests::default())
    }

    fn apply_diff_inner(
        &mut self,
        id: &str,
        input: Box<dyn Read + Send>,
        known: &KnownDigests,
    ) -> Result<i64> {
        let ctx = self.state.ctx.clone();
        let i = self.state.index_or_unknown(id)?;
        let (parent, aopts) = {
            let l = &self.state.entries[i].layer;
            (
                layer_parent(l).map(str::to_string),
                ApplyDiffOpts {
                    uid_map: l.uidmap.clone(),
                    gid_map: l.gidmap.clone(),
                    mount_label: l.mount_label.clone(),
                    ignore_chown_errors: false,
                    force_mask: None,
                },
            )
        };
        let ts_path = ctx.tar_split_path(id);
        let ts_file = AtomicFile::create(
            &ts_path,
            WriteOptions {
                mode: 0o600,
                sync: true,
            },
        )
        .map_err(|e| Error::io("open", &ts_path, e))?;
        // Tar-split is recorded on the decompression thread, in the same pass as the digests;
        // this thread only extracts. Lines are batched before they reach the compressor.
        let gz = io::BufWriter::with_capacity(64 * 1024, storage_tarsplit::gzip_writer(ts_file));
        let mut reader = storage_archive::open_diff_recording(input, gz).map_err(Error::from)?;
        let writeback = EarlyWriteback::start(&ctx.layer_dir);
        let size = ctx
            .driver
            .apply_diff(id, parent.as_deref(), &mut reader, &aopts)?;
        drop(writeback);
        let (stats, gz) = reader.finish_recording().map_err(Error::from)?;
        if let Some(expect) = &known.expect {
            expect.check(&stats)?;
        }
        let gz = gz.into_inner().map_err(|e| io_err(e.into_error()))?;
        // One syncfs makes the extracted files durable before the record says they are there.
        sync_filesystem(&ctx.layer_dir)?;
        if let Some(dir) = &ctx.image_store_dir {
            sync_filesystem(dir)?;
        }
        let mut ts_file = gz.finish().map_err(io_err)?;
        ts_file.flush().map_err(io_err)?;
        ts_file
            .commit()
            .map_err(|e| Error::io("write", &ts_path, e))?;

        record_diff(&mut self.state.entries[i].layer, &stats, known);
        let loc = self.state.entries[i].location;
        self.save(loc.bit())?;
        Ok(size)
    }

    // ---------------------------------------------------------------- deletion

    /// Go's `deferredDelete` (1.59+): flag incomplete (saved), then move the tar-split file and
    /// the big-data directory into a staging directory `<drv>-layers/tmp/temp-dir-<x>`, let
    /// the driver move its data into its own staging area, and drop the record. The staging
    /// directories are removed when this guard is dropped, after its locks are released; a
    /// process that dies before leaves them to the next loader (ours or Go's), which removes
    /// any whose `lock-<x>` it can take. The caller saves the record's file afterwards.
    pub(crate) fn delete_internal(&mut self, id: &str) -> Result<()> {
        let i = self.state.index_or_unknown(id)?;
        let id = self.state.entries[i].layer.id.clone();
        if !self.state.entries[i].layer.is_incomplete() {
            self.state.entries[i]
                .layer
                .flags
                .insert(INCOMPLETE.to_string(), Value::Bool(true));
            let loc = self.state.entries[i].location;
            self.save(loc.bit())?;
        }
        let ctx = self.state.ctx.clone();
        let present: Vec<PathBuf> = [ctx.tar_split_path(&id), ctx.data_dir(&id)]
            .into_iter()
            .filter(|p| std::fs::symlink_metadata(p).is_ok())
            .collect();
        // As Go's, the staging directory is made only when there is something to stage.
        if !present.is_empty() {
            let mut staging = TempDir::new(&ctx.layer_dir.join(TEMP_DIR)).map_err(lock_error)?;
            let staged = present.iter().try_for_each(|p| staging.stage_deletion(p));
            self.deferred.push(staging);
            staged.map_err(lock_error)?;
        }
        match ctx.driver.deferred_remove(&id) {
            Ok(Some(dir)) => self.deferred.push(dir),
            Ok(None) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let i = self.state.index_or_unknown(&id)?;
        self.state.entries.remove(i);
        self.state.reindex(false)?;
        Ok(())
    }

    /// Removes the staging directories of the deletions made since `self.deferred` had `len`
    /// entries, now rather than when the guard is dropped.
    fn cleanup_staged_since(&mut self, len: usize) {
        for dir in self.deferred.split_off(len.min(self.deferred.len())) {
            if let Err(e) = dir.cleanup() {
                tracing::warn!("cleaning up deferred-deletion staging directory: {e}");
            }
        }
    }

    /// Deletes layer `key` without asking whether other layers, images or containers use it
    /// (Go's layer-store `Delete`): unmount until not mounted, mark incomplete, remove the
    /// driver data, tar-split file and big data, drop the record and save.
    pub fn delete_unchecked(&mut self, key: &str) -> Result<()> {
        let i = self.state.index_or_unknown(key)?;
        let id = self.state.entries[i].layer.id.clone();
        let loc = self.state.entries[i].location;
        loop {
            match self.unmount_impl(&id, false, true) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::LayerNotMounted => break,
                Err(e) => return Err(e),
            }
        }
        self.delete_internal(&id)?;
        self.save(loc.bit())
    }

    /// Deletes layer `key` after the layer-side safety check: it fails with `layer has
    /// children` if a layer of this store has it as parent. The ID is resolved first (unlike
    /// Go, whose checks compare the string as given). Checks against images and containers
    /// are the caller's.
    pub fn delete(&mut self, key: &str) -> Result<()> {
        let id = self.state.get(key)?.id;
        if let Some(child) = self.state.children(&id).first() {
            return Err(Error::new(ErrorKind::LayerHasChildren)
                .context(format!("used by layer {}", child.id)));
        }
        self.delete_unchecked(&id)
    }

    /// Deletes every layer, newest first, then every driver layer without record (Go's
    /// layer-store `Wipe`).
    pub fn wipe(&mut self) -> Result<()> {
        let mut ids: Vec<(Timestamp, String)> = self
            .state
            .iter()
            .map(|l| (l.created, l.id.clone()))
            .collect();
        ids.sort_by_key(|b| std::cmp::Reverse(b.0.unix_nanos()));
        for (_, id) in ids {
            self.delete_unchecked(&id)?;
        }
        let driver = self.state.ctx.driver.clone();
        let leftovers = match driver.list_layers() {
            Ok(l) => l,
            Err(e) if e.kind() == ErrorKind::NotSupported => Vec::new(),
            Err(e) => return Err(e),
        };
        for id in leftovers {
            driver.remove(&id)?;
        }
        Ok(())
    }

    /// Removes driver layers that have no record, with their tar-split files and big data
    /// (Go's layer-store `GarbageCollect`), and the temporary tar-split files of interrupted
    /// writes.
    pub fn garbage_collect(&mut self) -> Result<()> {
        let ctx = self.state.ctx.clone();
        self.remove_leftover_temporaries()?;
        for id in ctx.driver.list_layers()? {
            if self.state.by_id.contains_key(&id) {
                continue;
            }
            match ctx.driver.remove(&id) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            remove_quietly(&ctx.tar_split_path(&id), false)?;
            remove_quietly(&ctx.data_dir(&id), true)?;
        }
        Ok(())
    }

    /// Removes the temporary tar-split files of interrupted writes
    /// ([`Layers::leftover_temporaries`]; no writer can own them while this guard is held)
    /// and returns their paths.
    pub fn remove_leftover_temporaries(&mut self) -> Result<Vec<PathBuf>> {
        if self.state.ctx.read_only {
            return Ok(Vec::new());
        }
        remove_temporaries(&self.state.ctx)
    }

    // ---------------------------------------------------------------- mounting
}
