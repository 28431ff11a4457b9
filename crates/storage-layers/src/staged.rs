//! Staged layers: a diff is extracted (and digested, sized, its tar-split recorded) into a
//! driver staging area while no layer lock is held, then committed under the exclusive
//! lock in a short step that creates the record and moves the content into place.
//!
//! What other processes see stays what Go expects: until the commit there is no record
//! at all (a Go process loading the store for writing deletes `incomplete` records, so
//! none is written before the data is ready), and the staging area is held by a lock Go
//! respects (see `storage_drivers::staging`). The commit saves the record with
//! `incomplete` set, moves the content, then saves it complete: a crash in between leaves
//! a layer the next loader (Go's or ours) deletes, as after a crash in Go's own
//! `ApplyStagedLayer`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use storage_archive::{DiffStats, UnpackOptions};
use storage_drivers::{
    ApplyDiffOpts, ApplyStaging, CommitTarget, CreateOpts, Driver, StageBase, StageOpts,
    StagingArea,
};
use storage_types::{Digest, Error, ErrorKind, IdMap, Layer, Result, Timestamp};

use crate::view::layer_parent;
use crate::write::{
    EarlyWriteback, INCOMPLETE, KnownDigests, io_err, layer_maps, record_diff, sync_filesystem,
};
use crate::{CreateLayerOptions, LayerStore, LayersWrite, Location};

/// The tar-split file's name inside a staging area.
const TAR_SPLIT: &str = "tar-split.gz";

/// Go's `graphdriver.Differ`: something that fills a staging directory with a layer's
/// files itself (the partial-pull path: zstd:chunked), instead of a tar stream being
/// extracted into it.
pub trait Differ {
    /// Writes the layer's files into `dest` (an empty directory) the way the driver stores
    /// layer content, as described by `unpack` (whiteout format, ID maps, forced mask), and
    /// says what it staged.
    fn apply_diff(&mut self, dest: &Path, unpack: &UnpackOptions) -> Result<DifferOutput>;
}

/// What a [`Differ`] staged (Go's `DriverWithDifferOutput`).
#[derive(Debug, Clone, Default)]
pub struct DifferOutput {
    /// `diff-size`: the length of the layer's uncompressed tar (-1 when unknown).
    pub size: i64,
    /// `uidset` (Go's differ lists every entry's owner; order is not significant).
    pub uids: Vec<u32>,
    /// `gidset`.
    pub gids: Vec<u32>,
    /// `diff-digest` (the digest of the reassembled tar), when known.
    pub uncompressed_digest: Option<Digest>,
    /// `compressed-diff-digest` (none for zstd:chunked: an old value is cleared).
    pub compressed_digest: Option<Digest>,
    /// `toc-digest`.
    pub toc_digest: Option<Digest>,
    /// The record's `metadata` (overwritten, also when empty).
    pub metadata: String,
    /// Layer big-data items to store with the layer.
    pub big_data: BTreeMap<String, Vec<u8>>,
    /// The layer's tar-split (uncompressed JSON lines), written as `<id>.tar-split.gz`.
    pub tar_split: Option<Vec<u8>>,
    /// The mode the layer's root must get (the differ saw the root's entry).
    pub root_dir_mode: Option<u32>,
}

/// The parent a staged layer was prepared on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParentRef {
    id: String,
    created: Timestamp,
}

impl ParentRef {
    fn of(l: &Layer) -> ParentRef {
        ParentRef {
            id: l.id.clone(),
            created: l.created,
        }
    }
}

/// The parent of a staged new layer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ParentSpec {
    /// A base layer.
    None,
    /// An existing layer.
    Committed(ParentRef),
    /// A staged layer of the same chain, not committed yet (see
    /// [`LayerStore::prepare_on_staged`]): committed on whatever parent the caller gives.
    Pending,
}

impl ParentSpec {
    fn of(parent: Option<&Layer>) -> ParentSpec {
        parent.map_or(ParentSpec::None, |p| {
            ParentSpec::Committed(ParentRef::of(p))
        })
    }
}

/// What a staged layer is for.
#[derive(Debug, Clone)]
enum Target {
    /// A new layer on `parent`.
    New { parent: ParentSpec },
    /// Replacing the own content of the existing layer `id` (created at `created`).
    Existing {
        id: String,
        created: Timestamp,
        parent: Option<String>,
    },
}

/// What was staged.
#[derive(Debug, Clone)]
enum Applied {
    /// A tar diff went through the apply pipeline.
    Tar {
        stats: DiffStats,
        known: KnownDigests,
        size: i64,
    },
    /// A differ filled the area.
    Differ(DifferOutput),
}

/// A layer prepared outside the store lock (Go's `DriverWithDifferOutput` of
/// `PrepareStagedLayer`): its content waits in a driver staging area held by this
/// process. Commit it with [`LayersWrite::commit_staged`] (a new layer) or
/// [`LayersWrite::commit_staged_apply`] (an apply onto an existing layer), or throw it away
/// with [`LayerStore::discard`]; dropping it discards it too.
pub struct StagedLayer {
    area: Option<StagingArea>,
    driver: Arc<dyn Driver>,
    target: Target,
    uid_map: Vec<IdMap>,
    gid_map: Vec<IdMap>,
    writeable: bool,
    applied: Applied,
}

impl std::fmt::Debug for StagedLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedLayer")
            .field("area", &self.area.as_ref().map(StagingArea::path))
            .field("target", &self.target)
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

impl Drop for StagedLayer {
    fn drop(&mut self) {
        if let Some(area) = self.area.take()
            && let Err(e) = self.driver.discard_staged(area)
        {
            tracing::warn!("discarding a staged layer: {e}");
        }
    }
}

impl StagedLayer {
    /// The staging directory holding the content (until committed or discarded).
    pub fn staging_dir(&self) -> Option<&Path> {
        self.area.as_ref().map(StagingArea::path)
    }

    /// The digest of the uncompressed diff, when known.
    pub fn uncompressed_digest(&self) -> Option<Digest> {
        match &self.applied {
            Applied::Tar { stats, known, .. } => Some(
                known
                    .uncompressed_digest
                    .clone()
                    .filter(|d| d.algorithm() == "sha256")
                    .unwrap_or_else(|| stats.uncompressed_digest.clone()),
            ),
            Applied::Differ(o) => o.uncompressed_digest.clone(),
        }
    }

    /// The size figure of the apply (what `create` returns for a diff).
    pub fn size(&self) -> i64 {
        match &self.applied {
            Applied::Tar { size, .. } => *size,
            Applied::Differ(o) => o.size,
        }
    }

    /// The ID of the parent a new layer was prepared on (`None` also while that parent is
    /// itself a staged layer not committed yet).
    pub fn parent(&self) -> Option<&str> {
        match &self.target {
            Target::New {
                parent: ParentSpec::Committed(p),
            } => Some(p.id.as_str()),
            Target::New { .. } => None,
            Target::Existing { parent, .. } => parent.as_deref(),
        }
    }

    fn area(&self) -> Result<&StagingArea> {
        self.area
            .as_ref()
            .ok_or_else(|| Error::msg(ErrorKind::InvalidInput, "the staged layer was used up"))
    }
}

/// An apply onto an existing layer that can be staged (see [`LayerStore::apply_plan`]).
#[derive(Debug, Clone)]
pub struct ApplyPlan {
    id: String,
    created: Timestamp,
    parent: Option<String>,
    uid_map: Vec<IdMap>,
    gid_map: Vec<IdMap>,
    mount_label: String,
    how: ApplyStaging,
}

impl ApplyPlan {
    /// The layer's full ID.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Whether a new layer with these options can be staged: no template, no driver storage
/// options, and the content needs no re-owning (its maps are its parent's; a base layer
/// without maps).
pub(crate) fn stageable(
    ctx: &crate::Ctx,
    parent: Option<&Layer>,
    opts: &CreateLayerOptions,
) -> bool {
    if opts.template.as_deref().is_some_and(|t| !t.is_empty()) || !opts.storage_opt.is_empty() {
        return false;
    }
    let (uid, gid) = layer_maps(ctx, parent, opts);
    let (puid, pgid) = parent.map_or((&[][..], &[][..]), |p| (&p.uidmap[..], &p.gidmap[..]));
    uid == puid && gid == pgid
}

/// Moves the area's tar-split file next to the layer records under a temporary name
/// (a copy when the staging area is on another file system).
fn move_tar_split(area: &StagingArea, layer_dir: &Path, id: &str) -> Result<Option<PathBuf>> {
    let src = area.scratch(TAR_SPLIT);
    if std::fs::symlink_metadata(&src).is_err() {
        return Ok(None);
    }
    // Named like the temporaries of atomic writes, so that a crash before the rename
    // leaves a file the next full load (and `check`) recognises and removes.
    let tmp = layer_dir.join(format!(".tmp-{id}.tar-split.gz{}", std::process::id()));
    match std::fs::rename(&src, &tmp) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc_exdev()) => {
            let mut from = std::fs::File::open(&src).map_err(|e| Error::io("open", &src, e))?;
            let mut to = std::fs::File::create(&tmp).map_err(|e| Error::io("open", &tmp, e))?;
            std::io::copy(&mut from, &mut to).map_err(|e| Error::io("write", &tmp, e))?;
            to.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        }
        Err(e) => return Err(Error::io("rename", &src, e)),
    }
    Ok(Some(tmp))
}

fn libc_exdev() -> i32 {
    rustix::io::Errno::XDEV.raw_os_error()
}

/// Writes a gzip tar-split file from its JSON lines (a differ's).
fn write_tar_split(path: &Path, json: &[u8]) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|e| Error::io("open", path, e))?;
    let mut gz = storage_tarsplit::gzip_writer(std::io::BufWriter::new(f));
    gz.write_all(json)
        .map_err(|e| Error::io("write", path, e))?;
    let buf = gz.finish().map_err(|e| Error::io("write", path, e))?;
    let f = buf
        .into_inner()
        .map_err(|e| Error::io("write", path, e.into_error()))?;
    f.sync_all().map_err(|e| Error::io("fsync", path, e))
}

impl LayerStore {
    /// Whether a new layer with these options (on `parent`) can be prepared outside the
    /// lock with [`LayerStore::prepare`]; otherwise it must be created under the lock with
    /// [`LayersWrite::create_with_parent`] (templates, storage options, content that must
    /// be re-owned to other ID maps).
    pub fn can_stage(&self, parent: Option<&Layer>, opts: &CreateLayerOptions) -> bool {
        !self.ctx.read_only && stageable(&self.ctx, parent, opts)
    }

    /// Prepares a new layer from a (possibly compressed) tar diff without taking the layer
    /// lock (Go's `PrepareStagedLayer`): the driver stages what the new layer starts with
    /// on `parent` (resolved by the caller), the diff is extracted into it while its
    /// digests, sizes, UID/GID sets and tar-split are recorded, and, with `sync`, the
    /// staged files are made durable. `opts` are those the layer will be created with
    /// (its maps, placement and expected digests are used now).
    pub fn prepare(
        &self,
        parent: Option<&Layer>,
        opts: &CreateLayerOptions,
        diff: Box<dyn Read + Send>,
        sync: bool,
    ) -> Result<StagedLayer> {
        self.prepare_inner(
            parent,
            parent.map(|p| p.id.as_str()),
            ParentSpec::of(parent),
            opts,
            diff,
            sync,
        )
    }

    /// The ID maps a new layer on `parent` with `opts` gets (recorded on the layer; none
    /// when the driver shifts them at mount time).
    pub fn layer_maps(
        &self,
        parent: Option<&Layer>,
        opts: &CreateLayerOptions,
    ) -> (Vec<IdMap>, Vec<IdMap>) {
        layer_maps(&self.ctx, parent, opts)
    }

    /// Like [`LayerStore::prepare`], for a layer whose parent is itself staged and not
    /// committed yet (a chain of layers prepared at once). Only for drivers that stage
    /// children independently of their parent's content (overlay): `base` is the
    /// committed layer the chain starts on, `parent_maps` the staged parent's ID maps
    /// ([`LayerStore::layer_maps`]). Commit the parent first, then this one on it.
    pub fn prepare_on_staged(
        &self,
        base: Option<&Layer>,
        parent_maps: (Vec<IdMap>, Vec<IdMap>),
        opts: &CreateLayerOptions,
        diff: Box<dyn Read + Send>,
        sync: bool,
    ) -> Result<StagedLayer> {
        if !self.ctx.driver.stages_children_independently() {
            return Err(Error::msg(
                ErrorKind::NotSupported,
                format!(
                    "the {} driver stages a layer from its committed parent",
                    self.ctx.driver.name()
                ),
            ));
        }
        // The maps a child inherits are the staged parent's.
        let pseudo = Layer {
            uidmap: parent_maps.0,
            gidmap: parent_maps.1,
            ..Layer::default()
        };
        self.prepare_inner(
            Some(&pseudo),
            base.map(|p| p.id.as_str()),
            ParentSpec::Pending,
            opts,
            diff,
            sync,
        )
    }

    fn prepare_inner(
        &self,
        maps_parent: Option<&Layer>,
        base_parent: Option<&str>,
        parent_spec: ParentSpec,
        opts: &CreateLayerOptions,
        diff: Box<dyn Read + Send>,
        sync: bool,
    ) -> Result<StagedLayer> {
        if !self.can_stage(maps_parent, opts) {
            return Err(Error::msg(
                ErrorKind::NotSupported,
                "this layer cannot be staged (template, storage options or ID maps differing from its parent's)",
            ));
        }
        let (uid_map, gid_map) = layer_maps(&self.ctx, maps_parent, opts);
        let base = StageBase::NewLayer {
            parent: base_parent,
        };
        let mut staged = self.stage_new(base, parent_spec, (uid_map, gid_map), opts)?;
        let aopts = ApplyDiffOpts {
            uid_map: staged.uid_map.clone(),
            gid_map: staged.gid_map.clone(),
            mount_label: opts.mount_label.clone(),
            ..ApplyDiffOpts::default()
        };
        let known = KnownDigests::of(opts);
        let (stats, size) = self.extract(&staged, diff, &aopts, &known, sync)?;
        staged.applied = Applied::Tar { stats, known, size };
        Ok(staged)
    }

    /// A driver staging area for a new layer with these maps, as a [`StagedLayer`] with
    /// nothing applied yet.
    fn stage_new(
        &self,
        base: StageBase<'_>,
        parent: ParentSpec,
        (uid_map, gid_map): (Vec<IdMap>, Vec<IdMap>),
        opts: &CreateLayerOptions,
    ) -> Result<StagedLayer> {
        let driver = self.ctx.driver.clone();
        let area = driver.stage(
            base,
            &StageOpts {
                uid_map: uid_map.clone(),
                gid_map: gid_map.clone(),
                read_only: !opts.writeable,
            },
        )?;
        Ok(StagedLayer {
            area: Some(area),
            driver,
            target: Target::New { parent },
            uid_map,
            gid_map,
            writeable: opts.writeable,
            applied: Applied::Differ(DifferOutput::default()),
        })
    }

    /// Extracts `diff` into the staged area, recording the tar-split beside it.
    fn extract(
        &self,
        staged: &StagedLayer,
        diff: Box<dyn Read + Send>,
        aopts: &ApplyDiffOpts,
        known: &KnownDigests,
        sync: bool,
    ) -> Result<(DiffStats, i64)> {
        let area = staged.area()?;
        let ts_path = area.scratch(TAR_SPLIT);
        let ts_file =
            std::fs::File::create(&ts_path).map_err(|e| Error::io("open", &ts_path, e))?;
        let gz = std::io::BufWriter::with_capacity(
            64 * 1024,
            storage_tarsplit::gzip_writer(std::io::BufWriter::new(ts_file)),
        );
        let mut reader = storage_archive::open_diff_recording(diff, gz).map_err(Error::from)?;
        let content = area.content();
        let writeback = sync.then(|| EarlyWriteback::start(&content));
        let size = staged.driver.apply_diff_staged(area, &mut reader, aopts)?;
        drop(writeback);
        let (stats, gz) = reader.finish_recording().map_err(Error::from)?;
        if let Some(expect) = &known.expect {
            expect.check(&stats)?;
        }
        let gz = gz.into_inner().map_err(|e| io_err(e.into_error()))?;
        let buf = gz.finish().map_err(io_err)?;
        let mut f = buf.into_inner().map_err(|e| io_err(e.into_error()))?;
        f.flush().map_err(io_err)?;
        if sync {
            // One syncfs makes the staged files (and the tar-split) durable before any
            // record says they are there.
            sync_filesystem(&content)?;
        }
        Ok((stats, size))
    }

    /// Prepares a new layer with a [`Differ`] (Go's `PrepareStagedLayer` with a differ:
    /// partial pulls), without the layer lock. Only drivers with differ support (overlay)
    /// can do this; others fail with [`ErrorKind::NotSupported`].
    pub fn prepare_with_differ(
        &self,
        parent: Option<&Layer>,
        opts: &CreateLayerOptions,
        differ: &mut dyn Differ,
    ) -> Result<StagedLayer> {
        let (uid_map, gid_map) = layer_maps(&self.ctx, parent, opts);
        let aopts = ApplyDiffOpts {
            uid_map: uid_map.clone(),
            gid_map: gid_map.clone(),
            mount_label: opts.mount_label.clone(),
            ..ApplyDiffOpts::default()
        };
        let unpack = self.ctx.driver.differ_unpack_options(&aopts)?;
        let parent = ParentSpec::of(parent);
        let mut staged = self.stage_new(StageBase::Differ, parent, (uid_map, gid_map), opts)?;
        let area = staged.area()?;
        let out = differ.apply_diff(&area.content(), &unpack)?;
        if let Some(ts) = &out.tar_split {
            write_tar_split(&area.scratch(TAR_SPLIT), ts)?;
        }
        sync_filesystem(&area.content())?;
        staged.applied = Applied::Differ(out);
        Ok(staged)
    }

    /// Decides (under a short shared lock) whether an apply onto the existing layer `key`
    /// can be staged: the layer is complete, not mounted, and its driver can stage its
    /// content cheaply (see `Driver::stage_for_apply`). `None`: apply it in place under
    /// the lock ([`LayersWrite::apply_diff`]).
    pub fn apply_plan(&self, key: &str) -> Result<Option<ApplyPlan>> {
        let r = self.read()?;
        let i = r.index_or_unknown(key)?;
        let e = &r.entries[i];
        let l = &e.layer;
        if self.ctx.read_only || l.is_incomplete() || e.mount_count > 0 {
            return Ok(None);
        }
        let parent = layer_parent(l).map(str::to_owned);
        let Some(how) = self.ctx.driver.stage_for_apply(&l.id, parent.as_deref()) else {
            return Ok(None);
        };
        Ok(Some(ApplyPlan {
            id: l.id.clone(),
            created: l.created,
            parent,
            uid_map: l.uidmap.clone(),
            gid_map: l.gidmap.clone(),
            mount_label: l.mount_label.clone(),
            how,
        }))
    }

    /// Prepares an apply onto an existing layer (see [`LayerStore::apply_plan`]) without
    /// the lock: the layer's content is staged, the diff extracted into it and made durable.
    pub fn prepare_apply(
        &self,
        plan: &ApplyPlan,
        diff: Box<dyn Read + Send>,
    ) -> Result<StagedLayer> {
        let driver = self.ctx.driver.clone();
        let base = match plan.how {
            ApplyStaging::Empty => StageBase::EmptyLike(&plan.id),
            ApplyStaging::Copy => StageBase::CopyOf(&plan.id),
        };
        let area = driver.stage(
            base,
            &StageOpts {
                uid_map: plan.uid_map.clone(),
                gid_map: plan.gid_map.clone(),
                read_only: false,
            },
        )?;
        let mut staged = StagedLayer {
            area: Some(area),
            driver,
            target: Target::Existing {
                id: plan.id.clone(),
                created: plan.created,
                parent: plan.parent.clone(),
            },
            uid_map: plan.uid_map.clone(),
            gid_map: plan.gid_map.clone(),
            writeable: false,
            applied: Applied::Differ(DifferOutput::default()),
        };
        let aopts = ApplyDiffOpts {
            uid_map: plan.uid_map.clone(),
            gid_map: plan.gid_map.clone(),
            mount_label: plan.mount_label.clone(),
            ..ApplyDiffOpts::default()
        };
        let known = KnownDigests::default();
        let (stats, size) = self.extract(&staged, diff, &aopts, &known, true)?;
        staged.applied = Applied::Tar { stats, known, size };
        Ok(staged)
    }

    /// Removes a staged layer that will not be committed (Go's `CleanupStagedLayer`).
    pub fn discard(&self, mut staged: StagedLayer) -> Result<()> {
        match staged.area.take() {
            Some(area) => staged.driver.discard_staged(area),
            None => Ok(()),
        }
    }
}

impl LayersWrite<'_> {
    /// Commits a staged layer as a new layer (Go's `ApplyStagedLayer`): `parent` (resolved
    /// by the caller, possibly from another store) must be the layer it was prepared on and
    /// `opts` its options (ID, names, flags, placement; the ID maps must come out as when
    /// it was prepared). The record is saved `incomplete`, the content moved into place,
    /// the tar-split file and digests recorded, and the record saved complete; on failure
    /// the half-made layer is deleted again.
    ///
    /// A staged layer of a [`Differ`] whose `opts.id` names an existing layer replaces
    /// that layer's content instead (Go's `ApplyStagedLayer` on an existing ID).
    pub fn commit_staged(
        &mut self,
        mut staged: StagedLayer,
        parent: Option<&Layer>,
        opts: &CreateLayerOptions,
    ) -> Result<(Layer, i64)> {
        let ctx = self.state.ctx.clone();
        if let Target::Existing { id, .. } = &staged.target {
            let id = id.clone();
            let size = self.commit_staged_apply(staged)?;
            let i = self.state.index_or_unknown(&id)?;
            return Ok((self.state.entries[i].layer.clone(), size));
        }
        if matches!(staged.applied, Applied::Differ(_))
            && let Some(id) = opts.id.as_deref().filter(|i| !i.is_empty())
            && let Some(i) = self.state.lookup_index(id)
        {
            let l = &self.state.entries[i].layer;
            staged.target = Target::Existing {
                id: l.id.clone(),
                created: l.created,
                parent: layer_parent(l).map(str::to_owned),
            };
            let size = self.commit_staged_apply(staged)?;
            let i = self.state.index_or_unknown(id)?;
            return Ok((self.state.entries[i].layer.clone(), size));
        }
        let Target::New {
            parent: staged_parent,
        } = &staged.target
        else {
            return Err(Error::msg(ErrorKind::InvalidInput, "not a new layer"));
        };
        let pending_ok = *staged_parent == ParentSpec::Pending && parent.is_some();
        if !pending_ok && *staged_parent != ParentSpec::of(parent) {
            let prepared = match staged_parent {
                ParentSpec::None => "no parent".to_owned(),
                ParentSpec::Committed(p) => format!("layer {}", p.id),
                ParentSpec::Pending => "a staged layer".to_owned(),
            };
            return Err(Error::msg(
                ErrorKind::InvalidInput,
                format!(
                    "the staged layer was prepared on {prepared} but is committed on {}",
                    parent.map_or("no parent".to_owned(), |p| format!("layer {}", p.id))
                ),
            ));
        }
        let (uid_map, gid_map) = layer_maps(&ctx, parent, opts);
        if uid_map != staged.uid_map
            || gid_map != staged.gid_map
            || opts.writeable != staged.writeable
            || !stageable(&ctx, parent, opts)
        {
            return Err(Error::msg(
                ErrorKind::InvalidInput,
                "the staged layer was prepared with other ID maps or placement than it is committed with",
            ));
        }
        let (id, names) = self.new_id_and_names(&ctx, opts)?;
        let location = Location::for_new(&ctx, opts);
        let mut flags = opts.flags.clone();
        flags.insert(INCOMPLETE.to_string(), Value::Bool(true));
        let layer = Layer {
            id: id.clone(),
            names,
            parent: parent.map(|p| p.id.clone()).unwrap_or_default(),
            mount_label: opts.mount_label.clone(),
            created: Timestamp::now(),
            uidmap: uid_map.clone(),
            gidmap: gid_map.clone(),
            flags,
            ..Default::default()
        };
        self.state.push_new(layer, location)?;
        let copts = CreateOpts {
            mount_label: opts.mount_label.clone(),
            storage_opt: opts.storage_opt.clone(),
            uid_map,
            gid_map,
        };
        let result = self.finish_commit(&mut staged, &id, parent.map(|p| p.id.as_str()), &copts);
        match result {
            Ok(size) => {
                let i = self.state.index_or_unknown(&id)?;
                Ok((self.state.entries[i].layer.clone(), size))
            }
            Err(e) => {
                self.delete_after_failure(&id, location);
                Err(e)
            }
        }
    }

    fn finish_commit(
        &mut self,
        staged: &mut StagedLayer,
        id: &str,
        parent: Option<&str>,
        copts: &CreateOpts,
    ) -> Result<i64> {
        let ctx = self.state.ctx.clone();
        let i = self.state.index_or_unknown(id)?;
        let location = self.state.entries[i].location;
        // The crash marker: a crash from here on leaves a layer the next loader deletes.
        self.save(location.bit())?;
        let area = staged
            .area
            .take()
            .ok_or_else(|| Error::msg(ErrorKind::InvalidInput, "the staged layer was used up"))?;
        let tmp_ts = match move_tar_split(&area, &ctx.layer_dir, id) {
            Ok(t) => t,
            Err(e) => {
                let _ = staged.driver.discard_staged(area);
                return Err(e);
            }
        };
        let target = CommitTarget::New {
            id,
            parent,
            opts: copts,
            writeable: staged.writeable,
        };
        let r = staged.driver.commit_staged(area, target).and_then(|()| {
            if let Some(tmp) = &tmp_ts {
                let ts = ctx.tar_split_path(id);
                std::fs::rename(tmp, &ts).map_err(|e| Error::io("rename", tmp, e))?;
            }
            Ok(())
        });
        if let Err(e) = r {
            if let Some(tmp) = &tmp_ts {
                let _ = std::fs::remove_file(tmp);
            }
            return Err(e);
        }
        let size = self.record_staged(i, staged)?;
        let i = self.state.index_or_unknown(id)?;
        self.state.entries[i].layer.flags.remove(INCOMPLETE);
        self.save(location.bit())?;
        self.store_differ_big_data(id, staged)?;
        Ok(size)
    }

    /// Writes what was staged into record `i` (not saved).
    fn record_staged(&mut self, i: usize, staged: &StagedLayer) -> Result<i64> {
        let l = &mut self.state.entries[i].layer;
        match &staged.applied {
            Applied::Tar { stats, known, size } => {
                record_diff(l, stats, known);
                Ok(*size)
            }
            Applied::Differ(o) => {
                l.uidset = o.uids.clone();
                l.gidset = o.gids.clone();
                l.diff_digest = o
                    .uncompressed_digest
                    .as_ref()
                    .map(Digest::to_string)
                    .unwrap_or_default();
                l.compressed_diff_digest = o
                    .compressed_digest
                    .as_ref()
                    .map(Digest::to_string)
                    .unwrap_or_default();
                l.toc_digest = o
                    .toc_digest
                    .as_ref()
                    .map(Digest::to_string)
                    .unwrap_or_default();
                l.diff_size = o.size;
                l.metadata = o.metadata.clone();
                Ok(o.size)
            }
        }
    }

    /// Stores a differ's big-data items; a failure deletes the layer (Go).
    fn store_differ_big_data(&mut self, id: &str, staged: &StagedLayer) -> Result<()> {
        let Applied::Differ(o) = &staged.applied else {
            return Ok(());
        };
        for (name, data) in &o.big_data {
            self.set_big_data(id, name, &mut &data[..])?;
        }
        Ok(())
    }

    /// Commits a staged apply onto an existing layer (see [`LayerStore::prepare_apply`]):
    /// the layer must still be the one it was prepared for (same creation time, complete,
    /// not mounted); its content is replaced by the staged one and the diff's digests,
    /// sizes and tar-split recorded. Returns the apply's size figure.
    pub fn commit_staged_apply(&mut self, mut staged: StagedLayer) -> Result<i64> {
        let ctx = self.state.ctx.clone();
        let Target::Existing {
            id,
            created,
            parent,
        } = staged.target.clone()
        else {
            return Err(Error::msg(
                ErrorKind::InvalidInput,
                "the staged layer is a new layer, not an apply",
            ));
        };
        let i = self.state.index_or_unknown(&id)?;
        let e = &self.state.entries[i];
        let differ = matches!(staged.applied, Applied::Differ(_));
        if e.layer.created != created || e.layer.is_incomplete() || (!differ && e.mount_count > 0) {
            return Err(Error::msg(
                ErrorKind::InvalidInput,
                format!(
                    "layer {} changed while a diff was staged for it",
                    storage_types::go_quote(&id)
                ),
            ));
        }
        let area = staged
            .area
            .take()
            .ok_or_else(|| Error::msg(ErrorKind::InvalidInput, "the staged layer was used up"))?;
        let tmp_ts = match move_tar_split(&area, &ctx.layer_dir, &id) {
            Ok(t) => t,
            Err(e) => {
                let _ = staged.driver.discard_staged(area);
                return Err(e);
            }
        };
        let root_mode = match &staged.applied {
            Applied::Differ(o) => o.root_dir_mode,
            Applied::Tar { .. } => None,
        };
        let target = CommitTarget::Replace {
            id: &id,
            parent: parent.as_deref(),
            root_mode,
        };
        if let Err(e) = staged.driver.commit_staged(area, target) {
            if let Some(tmp) = &tmp_ts {
                let _ = std::fs::remove_file(tmp);
            }
            return Err(e);
        }
        if let Some(tmp) = &tmp_ts {
            let ts = ctx.tar_split_path(&id);
            std::fs::rename(tmp, &ts).map_err(|e| Error::io("rename", tmp, e))?;
        }
        let size = self.record_staged(i, &staged)?;
        let loc = self.state.entries[i].location;
        self.save(loc.bit())?;
        self.store_differ_big_data(&id, &staged)?;
        Ok(size)
    }
}
