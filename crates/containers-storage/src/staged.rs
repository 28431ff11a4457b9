//! Staged layers at the store level (Go's `PrepareStagedLayer` / `ApplyStagedLayer` /
//! `CleanupStagedLayer`), the staged paths of `create_layer` and `apply_diff`, and the
//! parallel import of a chain of layers.
//!
//! A layer's data is prepared in a driver staging area while no store lock is held;
//! the layers lock is taken exclusively only to commit it (create the record, move the
//! content into place). Other processes, ours and Go's, can read the store all the while.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use storage_layers::{CreateLayerOptions, Differ, LayerStore, StagedLayer};
use storage_types::{Error, ErrorKind, Layer, Result};

use crate::Store;

/// A layer prepared with [`Store::prepare_staged_layer`]: its data waits in a staging
/// directory held by this process until [`Store::apply_staged_layer`] commits it or
/// [`Store::cleanup_staged_layer`] removes it (dropping it removes it too).
#[derive(Debug)]
pub struct Staged {
    layer: StagedLayer,
}

impl Staged {
    /// The staging directory holding the layer's data.
    pub fn staging_dir(&self) -> Option<&std::path::Path> {
        self.layer.staging_dir()
    }

    /// The digest of the layer's uncompressed tar, when known.
    pub fn uncompressed_digest(&self) -> Option<storage_types::Digest> {
        self.layer.uncompressed_digest()
    }
}

/// One layer of [`Store::import_layers`].
pub struct LayerImport {
    /// The layer's options. `parent` may name the `id` of an earlier layer of the same
    /// import (which is then committed first) or an existing layer.
    pub opts: CreateLayerOptions,
    /// The layer's (possibly compressed) tar.
    pub diff: Box<dyn Read + Send>,
}

/// Options of [`Store::import_layers`].
#[derive(Debug, Clone, Default)]
pub struct ImportLayersOptions {
    /// How many layers are prepared at once (0: as many as there are cores, bounded by
    /// the available memory).
    pub jobs: usize,
}

/// A failed [`Store::import_layers`]: the layers committed before the failure stay.
#[derive(Debug)]
pub struct ImportLayersError {
    /// What failed.
    pub error: Error,
    /// The index of the layer that failed.
    pub index: usize,
    /// The layers committed before it (in order), with their apply sizes.
    pub committed: Vec<(Layer, i64)>,
}

impl std::fmt::Display for ImportLayersError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl std::error::Error for ImportLayersError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<ImportLayersError> for Error {
    fn from(e: ImportLayersError) -> Error {
        e.error
    }
}

/// Go's "string bool" of `pull_options`: `"true"` in any case.
fn pull_option(opts: &BTreeMap<String, String>, key: &str) -> bool {
    opts.get(key)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

impl Store {
    /// Resolves `opts.parent` (primary store, then the read-only ones) with short shared
    /// locks, refusing a container's layer (Go's `ErrParentIsContainer`).
    fn resolve_parent(&self, rw: &LayerStore, key: Option<&str>) -> Result<Option<Layer>> {
        let Some(p) = key.filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let found = rw.read()?.lookup(p).cloned();
        let ro_stores = self.read_only_layer_stores()?;
        self.parent_layer(p, found, &ro_stores).map(Some)
    }

    /// Finishes resolving the parent `key` of a new layer: `found` in the primary store,
    /// else the first read-only store that has it; a container's layer is refused (Go's
    /// `ErrParentIsContainer`).
    pub(crate) fn parent_layer(
        &self,
        key: &str,
        found: Option<Layer>,
        ro_stores: &[Arc<LayerStore>],
    ) -> Result<Layer> {
        let mut found = found;
        if found.is_none() {
            for ro in ro_stores {
                if let Some(l) = ro.read()?.lookup(key) {
                    found = Some(l.clone());
                    break;
                }
            }
        }
        let Some(parent) = found else {
            return Err(Error::new(ErrorKind::LayerUnknown));
        };
        let containers = self.containers.read()?;
        if containers.containers().iter().any(|c| c.layer == parent.id) {
            return Err(Error::new(ErrorKind::ParentIsContainer));
        }
        Ok(parent)
    }

    /// Fails early (before any data is extracted) when the ID or a name is taken; the
    /// commit checks again under the lock.
    fn precheck_new(&self, rw: &LayerStore, opts: &CreateLayerOptions) -> Result<()> {
        let r = rw.read()?;
        if let Some(id) = opts.id.as_deref().filter(|i| !i.is_empty())
            && r.layers().iter().any(|l| l.id == id)
        {
            return Err(Error::new(ErrorKind::DuplicateId));
        }
        if opts
            .names
            .iter()
            .any(|n| r.lookup(n).is_some_and(|l| l.names.contains(n)))
        {
            return Err(Error::new(ErrorKind::DuplicateName));
        }
        Ok(())
    }

    /// Commits a staged new layer under the layers lock, resolving its parent again.
    fn commit_new(
        &self,
        rw: &LayerStore,
        staged: StagedLayer,
        parent_key: Option<&str>,
        opts: &CreateLayerOptions,
    ) -> Result<(Layer, i64)> {
        let ro_stores = self.read_only_layer_stores()?;
        let mut w = rw.write()?;
        let parent = match parent_key.filter(|p| !p.is_empty()) {
            None => None,
            Some(p) => Some(self.parent_layer(p, w.lookup(p).cloned(), &ro_stores)?),
        };
        w.commit_staged(staged, parent.as_ref(), opts)
    }

    /// The staged path of [`Store::create_layer`] with a diff: `Ok(Err(diff))` hands the
    /// diff back when this layer cannot be staged.
    pub(crate) fn create_layer_staged(
        &self,
        opts: &CreateLayerOptions,
        diff: Box<dyn Read + Send>,
    ) -> Result<std::result::Result<(Layer, i64), Box<dyn Read + Send>>> {
        let rw = self.layer_store()?;
        let parent = self.resolve_parent(&rw, opts.parent.as_deref())?;
        if !rw.can_stage(parent.as_ref(), opts) {
            return Ok(Err(diff));
        }
        self.precheck_new(&rw, opts)?;
        let staged = rw.prepare(parent.as_ref(), opts, diff, true)?;
        let key = parent.as_ref().map(|p| p.id.clone());
        self.commit_new(&rw, staged, key.as_deref(), opts).map(Ok)
    }

    /// The staged path of [`Store::apply_diff`]: `Ok(Err(diff))` hands the diff back when
    /// the apply cannot be staged.
    pub(crate) fn apply_diff_staged(
        &self,
        key: &str,
        diff: Box<dyn Read + Send>,
    ) -> Result<std::result::Result<i64, Box<dyn Read + Send>>> {
        let rw = self.layer_store()?;
        let Some(plan) = rw.apply_plan(key)? else {
            return Ok(Err(diff));
        };
        let staged = rw.prepare_apply(&plan, diff)?;
        let mut w = rw.write()?;
        w.commit_staged_apply(staged).map(Ok)
    }

    /// Go's `PrepareStagedLayer` for a tar diff: prepares the layer `opts` describes (its
    /// parent, ID maps and placement are used now; its ID and names when it is applied)
    /// without holding any store lock beyond the staging directory's own.
    pub fn prepare_staged_layer(
        &self,
        opts: &CreateLayerOptions,
        diff: Box<dyn Read + Send>,
    ) -> Result<Staged> {
        let rw = self.layer_store()?;
        let parent = self.resolve_parent(&rw, opts.parent.as_deref())?;
        let layer = rw.prepare(parent.as_ref(), opts, diff, true)?;
        Ok(Staged { layer })
    }

    /// Whether this store may use a [`Differ`] (Go's partial pulls): the
    /// `enable_partial_images` pull option must be `"true"`, and the driver must have
    /// differ support (overlay). The errors are Go's.
    pub fn check_partial_pulls(&self) -> Result<()> {
        let convert = pull_option(&self.pull_options, "convert_images");
        if !pull_option(&self.pull_options, "enable_partial_images") {
            return Err(Error::msg(
                ErrorKind::NotSupported,
                "partial images are disabled",
            ));
        }
        let supported = self.with_driver(|d| {
            Ok(
                d.differ_unpack_options(&storage_drivers::ApplyDiffOpts::default())
                    .is_ok(),
            )
        })?;
        if !supported {
            let more = if convert {
                " but convert_images requires that"
            } else {
                ""
            };
            return Err(Error::msg(
                ErrorKind::NotSupported,
                format!(
                    "graph driver {} does not support partial pull{more}",
                    self.driver_name()
                ),
            ));
        }
        Ok(())
    }

    /// Go's `PrepareStagedLayer` with a differ (partial pulls): the differ fills a staging
    /// directory itself. Refused as Go refuses it (see [`Store::check_partial_pulls`]).
    pub fn prepare_staged_layer_with_differ(
        &self,
        opts: &CreateLayerOptions,
        differ: &mut dyn Differ,
    ) -> Result<Staged> {
        self.check_partial_pulls()?;
        let rw = self.layer_store()?;
        let parent = self.resolve_parent(&rw, opts.parent.as_deref())?;
        let layer = rw.prepare_with_differ(parent.as_ref(), opts, differ)?;
        Ok(Staged { layer })
    }

    /// Go's `ApplyStagedLayer`: commits a staged layer under the layers lock as the layer
    /// `opts` describes (a new layer with `opts.id`, or generated; a differ's layer whose
    /// `opts.id` names an existing layer replaces that layer's content). `opts.parent`
    /// must be the parent it was prepared on.
    pub fn apply_staged_layer(&self, staged: Staged, opts: &CreateLayerOptions) -> Result<Layer> {
        let rw = self.layer_store()?;
        self.commit_new(&rw, staged.layer, opts.parent.as_deref(), opts)
            .map(|(l, _)| l)
    }

    /// Go's `CleanupStagedLayer`: removes a staged layer's data.
    pub fn cleanup_staged_layer(&self, staged: Staged) -> Result<()> {
        let rw = self.layer_store()?;
        rw.discard(staged.layer)
    }

    /// Creates a chain of layers from their tars (an image's layers, base first): all are
    /// prepared at once outside the store lock (at most `jobs` at a time, by default one
    /// per core, bounded by the available memory) and committed in parent order as soon as
    /// each is ready. A layer whose `opts.parent` names an earlier layer's `id` goes on top
    /// of it. An error in any layer commits none of the later ones and removes every staged
    /// one; the layers committed before it stay (see [`ImportLayersError`]).
    ///
    /// With overlay every layer is prepared independently (a layer holds only its own
    /// changes); vfs and btrfs layers start as a copy of their parent, so each is prepared
    /// once its parent is committed.
    pub fn import_layers(
        &self,
        items: Vec<LayerImport>,
        opts: &ImportLayersOptions,
    ) -> std::result::Result<Vec<(Layer, i64)>, ImportLayersError> {
        let fail = |error: Error, index: usize, committed: Vec<(Layer, i64)>| ImportLayersError {
            error,
            index,
            committed,
        };
        let rw = self.layer_store().map_err(|e| fail(e, 0, Vec::new()))?;
        let n = items.len();
        // Parents: an earlier item (by ID) or an existing layer.
        let mut plans = Vec::with_capacity(n);
        for (k, item) in items.iter().enumerate() {
            let parent = match item.opts.parent.as_deref().filter(|p| !p.is_empty()) {
                None => Parent::None,
                Some(p) => match items[..k]
                    .iter()
                    .position(|o| o.opts.id.as_deref() == Some(p))
                {
                    Some(j) => Parent::Item(j),
                    None => match self.resolve_parent(&rw, Some(p)) {
                        Ok(Some(l)) => Parent::Existing(Box::new(l)),
                        Ok(None) => Parent::None,
                        Err(e) => return Err(fail(e, k, Vec::new())),
                    },
                },
            };
            if let Err(e) = self.precheck_new(&rw, &item.opts) {
                return Err(fail(e, k, Vec::new()));
            }
            plans.push(parent);
        }
        let independent = rw.driver().stages_children_independently();
        // What each item is staged on: the committed layer its chain starts on and the ID
        // maps of its (possibly staged) parent.
        let mut bases: Vec<Option<Layer>> = Vec::with_capacity(n);
        let mut maps: Vec<(Vec<_>, Vec<_>)> = Vec::with_capacity(n);
        for (k, item) in items.iter().enumerate() {
            let (base, parent_maps) = match &plans[k] {
                Parent::None => (None, None),
                Parent::Existing(l) => (
                    Some((**l).clone()),
                    Some((l.uidmap.clone(), l.gidmap.clone())),
                ),
                Parent::Item(j) => (bases[*j].clone(), Some(maps[*j].clone())),
            };
            let pseudo = parent_maps.map(|(u, g)| Layer {
                uidmap: u,
                gidmap: g,
                ..Layer::default()
            });
            maps.push(rw.layer_maps(pseudo.as_ref(), &item.opts));
            bases.push(base);
        }
        let all_opts: Vec<CreateLayerOptions> = items.iter().map(|i| i.opts.clone()).collect();
        let jobs = job_count(opts.jobs, n);
        // The index of the first layer that failed: the layers after it stop.
        let abort = Arc::new(AtomicUsize::new(usize::MAX));
        let slots: Vec<Slot> = (0..n).map(|_| Slot::default()).collect();
        let next = AtomicUsize::new(0);
        let inputs: Vec<Mutex<Option<LayerImport>>> =
            items.into_iter().map(|i| Mutex::new(Some(i))).collect();
        let mut committed: Vec<(Layer, i64)> = Vec::with_capacity(n);
        let mut failure: Option<(Error, usize)> = None;
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, Ordering::SeqCst);
                        if k >= n {
                            break;
                        }
                        let Some(item) = inputs[k].lock().ok().and_then(|mut g| g.take()) else {
                            slots[k].put(Prepared::Failed(Error::msg(
                                ErrorKind::Other,
                                "layer input lost",
                            )));
                            continue;
                        };
                        if abort.load(Ordering::SeqCst) < k {
                            slots[k].put(Prepared::Skipped);
                            continue;
                        }
                        let diff: Box<dyn Read + Send> = Box::new(Abortable {
                            inner: item.diff,
                            abort: abort.clone(),
                            index: k,
                        });
                        let result = match &plans[k] {
                            Parent::Item(j) if !independent => {
                                // A copy of the parent: wait until it is committed.
                                match slots[*j].wait_committed() {
                                    Some(parent) => {
                                        self.prepare_or_defer(&rw, Some(&parent), &item.opts, diff)
                                    }
                                    None => Ok(Prepared::Skipped),
                                }
                            }
                            Parent::Item(_) => {
                                let pseudo = Layer {
                                    uidmap: maps[k].0.clone(),
                                    gidmap: maps[k].1.clone(),
                                    ..Layer::default()
                                };
                                if rw.can_stage(Some(&pseudo), &item.opts) {
                                    let parent_maps = match &plans[k] {
                                        Parent::Item(j) => maps[*j].clone(),
                                        _ => maps[k].clone(),
                                    };
                                    rw.prepare_on_staged(
                                        bases[k].as_ref(),
                                        parent_maps,
                                        &item.opts,
                                        diff,
                                        true,
                                    )
                                    .map(|s| Prepared::Staged(Box::new(s)))
                                } else {
                                    Ok(Prepared::Classic(diff))
                                }
                            }
                            Parent::Existing(p) => {
                                self.prepare_or_defer(&rw, Some(p), &item.opts, diff)
                            }
                            Parent::None => self.prepare_or_defer(&rw, None, &item.opts, diff),
                        };
                        let prepared = result.unwrap_or_else(Prepared::Failed);
                        if matches!(prepared, Prepared::Failed(_)) {
                            abort.fetch_min(k, Ordering::SeqCst);
                        }
                        slots[k].put(prepared);
                    }
                });
            }
            // Commit in order, as each becomes ready.
            for k in 0..n {
                let prepared = slots[k].take();
                let parent_id = match &plans[k] {
                    Parent::None => None,
                    Parent::Existing(l) => Some(l.id.clone()),
                    Parent::Item(j) => committed.get(*j).map(|(l, _)| l.id.clone()),
                };
                // The item's options (ID, names, …) with the committed parent.
                let item_opts = CreateLayerOptions {
                    parent: parent_id.clone(),
                    ..all_opts[k].clone()
                };
                let result = match prepared {
                    Prepared::Staged(staged) => {
                        self.commit_new(&rw, *staged, parent_id.as_deref(), &item_opts)
                    }
                    Prepared::Classic(diff) => self.create_layer_classic(&item_opts, Some(diff)),
                    Prepared::Failed(e) => Err(e),
                    Prepared::Skipped => Err(Error::msg(ErrorKind::Other, "import aborted")),
                };
                match result {
                    Ok((layer, size)) => {
                        slots[k].commit(layer.clone());
                        committed.push((layer, size));
                    }
                    Err(e) => {
                        abort.fetch_min(k, Ordering::SeqCst);
                        failure = Some((e, k));
                        for s in &slots[k..] {
                            s.cancel();
                        }
                        break;
                    }
                }
            }
        });
        // Whatever was staged and not committed is discarded when dropped.
        for s in &slots {
            s.clear();
        }
        match failure {
            None => Ok(committed),
            Some((error, index)) => Err(fail(error, index, committed)),
        }
    }

    /// Stages a layer on a committed parent, or defers it to a classic create at commit.
    fn prepare_or_defer(
        &self,
        rw: &LayerStore,
        parent: Option<&Layer>,
        opts: &CreateLayerOptions,
        diff: Box<dyn Read + Send>,
    ) -> Result<Prepared> {
        if rw.can_stage(parent, opts) {
            rw.prepare(parent, opts, diff, true)
                .map(|s| Prepared::Staged(Box::new(s)))
        } else {
            Ok(Prepared::Classic(diff))
        }
    }
}

/// How many layers to prepare at once: one per core (at least two, so that extraction
/// and the disk overlap), bounded by the layers and by memory (a prepare holds about
/// 16 MiB of buffers).
fn job_count(asked: usize, n: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let wanted = if asked == 0 { cores.max(2) } else { asked };
    let by_memory = available_memory().map_or(usize::MAX, |m| (m / (64 << 20)).max(1) as usize);
    wanted.min(n).min(by_memory).max(1)
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn available_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The parent of an item of [`Store::import_layers`].
enum Parent {
    None,
    Existing(Box<Layer>),
    Item(usize),
}

/// What a worker made of an item.
enum Prepared {
    Staged(Box<StagedLayer>),
    /// Not stageable: created under the lock when its turn comes.
    Classic(Box<dyn Read + Send>),
    Failed(Error),
    /// Not prepared: the import was aborted.
    Skipped,
}

#[derive(Default)]
enum SlotState {
    #[default]
    Waiting,
    Ready(Prepared),
    Taken,
    Committed(Box<Layer>),
    Cancelled,
}

/// One item's hand-over between its worker and the committing thread.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    cv: Condvar,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, p: Prepared) {
        let mut g = self.lock();
        if matches!(*g, SlotState::Cancelled) {
            return; // dropped: discarded
        }
        *g = SlotState::Ready(p);
        self.cv.notify_all();
    }

    fn take(&self) -> Prepared {
        let mut g = self.lock();
        loop {
            match std::mem::replace(&mut *g, SlotState::Taken) {
                SlotState::Ready(p) => return p,
                other => {
                    *g = other;
                    g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    fn commit(&self, layer: Layer) {
        *self.lock() = SlotState::Committed(Box::new(layer));
        self.cv.notify_all();
    }

    fn cancel(&self) {
        let mut g = self.lock();
        *g = SlotState::Cancelled;
        self.cv.notify_all();
    }

    fn clear(&self) {
        *self.lock() = SlotState::Cancelled;
    }

    /// Waits until the item is committed (`None`: it never will be).
    fn wait_committed(&self) -> Option<Layer> {
        let mut g = self.lock();
        loop {
            match &*g {
                SlotState::Committed(l) => return Some((**l).clone()),
                SlotState::Cancelled => return None,
                _ => g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

/// A reader that fails once an earlier layer of the import failed, so that a worker stops
/// extracting a layer that will not be committed.
struct Abortable {
    inner: Box<dyn Read + Send>,
    abort: Arc<AtomicUsize>,
    index: usize,
}

impl Read for Abortable {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.abort.load(Ordering::Relaxed) < self.index {
            return Err(std::io::Error::other("import aborted"));
        }
        self.inner.read(buf)
    }
}
