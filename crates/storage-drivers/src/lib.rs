//! Graph drivers: the per-layer file system storage under `<graphroot>/<driver>/`.
//!
//! **Use it for:** the per-layer file systems under `<graphroot>/<driver>/`. **Not for:** layer
//! records (`layers.json`), images or containers: a driver only knows layer IDs and parents.
//!
//! A [`Driver`] creates, mounts (`get`/`put`), diffs and removes layers by ID; the
//! layer store above it keeps the records. [`open_driver`] selects a driver by name
//! and parses its `"<driver>.<key>=<value>"` options the way Go does.
//!
//! Implemented: `vfs` (`<home>/dir/<id>` holds a full copy of each layer, created by a
//! fast copy of the parent that keeps owners, modes, times, xattrs, hard links, special
//! files and holes, with reflinks where the file system has them). Its diff side is
//! Go's NaiveDiffDriver (`storage_archive::changes` + `storage_archive::export`).
//!
//! Also `overlay` (alias `overlay2`; Go's layout under `<home>/l` and `<home>/<id>`,
//! native diffs, fuse-overlayfs through `overlay.mount_program`) and `btrfs` (one
//! subvolume per layer). [`choose_driver`] picks a driver like Go when none is configured.
//!
//! Every driver sits behind one ID check: a layer (or parent) ID must be a single path
//! component (not empty, `.` or `..`, no `/` or NUL), else the call fails with
//! [`ErrorKind::InvalidInput`] before touching the disk (Go does not check). Files of
//! a layer are only ever read inside it, whatever names a tar-split file holds.
//! `unsafe` is confined to one `sys` module of kernel interfaces (mounts, idmapped
//! mounts, XFS quotas, btrfs ioctls), each block with its SAFETY comment.
//!
//! Limits: `zfs`, `aufs` and `devicemapper` are known names that give a "not supported"
//! error naming the supported drivers; SELinux labels are not set.
//!
//! ```
//! use storage_drivers::{open_driver, CreateOpts, DriverOptions, MountOpts};
//! let tmp = tempfile::tempdir().unwrap();
//! let opts = DriverOptions {
//!     home: tmp.path().join("graph/vfs"),
//!     run_home: tmp.path().join("run/vfs"),
//!     graph_root: tmp.path().join("graph"),
//!     run_root: tmp.path().join("run"),
//!     image_store: None,
//!     options: vec![],
//! };
//! let driver = open_driver("vfs", &opts).unwrap();
//! driver.create("base", None, &CreateOpts::default()).unwrap();
//! let path = driver.get("base", &MountOpts::default()).unwrap();
//! assert_eq!(path, tmp.path().join("graph/vfs/dir/base"));
//! std::fs::write(path.join("hello"), b"hi").unwrap();
//! driver.put("base").unwrap();
//! driver.create("child", Some("base"), &CreateOpts::default()).unwrap();
//! let child = driver.get("child", &MountOpts::default()).unwrap();
//! assert_eq!(std::fs::read(child.join("hello")).unwrap(), b"hi");
//! assert_eq!(driver.list_layers().unwrap().len(), 2);
//! // IDs are single path components: nothing outside the driver's home is reachable.
//! assert!(driver.remove("..").is_err());
//! assert!(!driver.exists("../vfs"));
//! ```
#![deny(missing_docs)]
// `unsafe` is allowed only in the `sys` module (the kernel interfaces).
#![deny(unsafe_code)]
// A build without some drivers (Cargo features) leaves helpers of theirs unused.
#![cfg_attr(
    not(all(feature = "overlay", feature = "btrfs", feature = "vfs")),
    allow(dead_code, unused_imports, unused_variables)
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;

pub use mountinfo::is_mounted;
pub use storage_archive::changes::{Change, ChangeKind};
use storage_types::{Error, ErrorKind, IdMap, Result};

use guard::Guarded;

#[cfg(feature = "btrfs")]
mod btrfs;
mod common;
#[cfg(feature = "vfs")]
mod copy;
mod guard;
mod idmap;
mod mountinfo;
mod naive;
#[cfg(feature = "overlay")]
mod overlay;
pub mod staging;
#[allow(unsafe_code)]
mod sys;
#[cfg(feature = "vfs")]
mod vfs;

pub use staging::{CommitTarget, StageBase, StagingArea};

/// Where a driver lives and the options it was given.
#[derive(Debug, Clone, Default)]
pub struct DriverOptions {
    /// `<graphroot>/<name>`: the driver's home.
    pub home: PathBuf,
    /// `<runroot>/<name>`: run-time state (feature probes).
    pub run_home: PathBuf,
    /// The store's graph root.
    pub graph_root: PathBuf,
    /// The store's run root.
    pub run_root: PathBuf,
    /// The top-level split image store (`[storage] imagestore`), if configured.
    pub image_store: Option<PathBuf>,
    /// Driver options as `"<driver>.<key>=<value>"` (or `".<key>=<value>"`).
    pub options: Vec<String>,
}

/// Options of [`Driver::create`] and [`Driver::create_read_write`].
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// SELinux mount label.
    pub mount_label: String,
    /// `--storage-opt` values (vfs rejects any).
    pub storage_opt: BTreeMap<String, String>,
    /// UID map of the new layer (its root dir is owned by the host ID of container root).
    pub uid_map: Vec<IdMap>,
    /// GID map of the new layer.
    pub gid_map: Vec<IdMap>,
}

/// Options of [`Driver::get`].
#[derive(Debug, Clone, Default)]
pub struct MountOpts {
    /// SELinux mount label.
    pub mount_label: String,
    /// Mount options (vfs accepts only `ro`).
    pub options: Vec<String>,
    /// UID map for mount-time shifting (unused by vfs).
    pub uid_map: Vec<IdMap>,
    /// GID map for mount-time shifting (unused by vfs).
    pub gid_map: Vec<IdMap>,
    /// Volatile mount (overlay).
    pub volatile: bool,
}

/// Options of [`Driver::apply_diff`].
#[derive(Debug, Clone, Default)]
pub struct ApplyDiffOpts {
    /// UID map of the layer: tar IDs are mapped container → host.
    pub uid_map: Vec<IdMap>,
    /// GID map of the layer.
    pub gid_map: Vec<IdMap>,
    /// SELinux mount label.
    pub mount_label: String,
    /// Ignore failures of the chown syscall itself.
    pub ignore_chown_errors: bool,
    /// Force this permission mask (the real mode goes to an xattr).
    pub force_mask: Option<u32>,
}

/// Options of [`Driver::stage`].
#[derive(Debug, Clone, Default)]
pub struct StageOpts {
    /// UID map of the layer the content is for (the owner of a new base layer's root).
    pub uid_map: Vec<IdMap>,
    /// GID map of the layer.
    pub gid_map: Vec<IdMap>,
    /// An image (read-only) layer: staged where such layers live (the split image store,
    /// when one is configured).
    pub read_only: bool,
}

/// How an apply onto an existing layer can be staged (see
/// [`Driver::stage_for_apply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyStaging {
    /// The layer's own content is empty: stage from [`StageBase::EmptyLike`] the layer.
    Empty,
    /// The driver copies the layer cheaply (a btrfs snapshot): stage from
    /// [`StageBase::CopyOf`] the layer.
    Copy,
}

/// A graph driver (Go's `graphdriver.Driver` with the diff side).
pub trait Driver: Send + Sync {
    /// The driver's name (`"vfs"`).
    fn name(&self) -> &str;
    /// Creates an image layer whose content starts as `parent`'s (empty without one).
    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()>;
    /// Creates a container (writable) layer.
    fn create_read_write(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()>;
    /// Deletes the layer's data; a missing layer is not an error.
    fn remove(&self, id: &str) -> Result<()>;
    /// Makes the layer's file system available and returns its path.
    fn get(&self, id: &str, opts: &MountOpts) -> Result<PathBuf>;
    /// Releases one [`Driver::get`].
    fn put(&self, id: &str) -> Result<()>;
    /// Whether the layer exists (in the home or an additional store).
    fn exists(&self, id: &str) -> bool;
    /// IDs of the layers in the driver's home.
    fn list_layers(&self) -> Result<Vec<String>>;
    /// Diagnostic key/value pairs.
    fn status(&self) -> Vec<(String, String)>;
    /// Driver metadata of a layer (empty for vfs).
    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>>;
    /// Shuts the driver down.
    fn cleanup(&self) -> Result<()>;
    /// Writes the uncompressed tar of the changes between `parent` and `id`.
    fn diff(
        &self,
        id: &str,
        parent: Option<&str>,
        uid_map: &[IdMap],
        gid_map: &[IdMap],
        out: &mut dyn Write,
    ) -> Result<()>;
    /// The changes between `parent` and `id`.
    fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>>;
    /// Extracts an uncompressed layer tar into `id`; returns the driver's size figure.
    fn apply_diff(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut dyn Read,
        opts: &ApplyDiffOpts,
    ) -> Result<i64>;
    /// Size of the changes between `parent` and `id`.
    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<i64>;
    /// Opens files of the layer by tar name, for tar-split reassembly.
    fn diff_getter(&self, id: &str) -> Result<Box<dyn storage_tarsplit::FileGetter + '_>>;
    /// Go's `DeferredRemove`: takes the layer's data out of the driver's namespace at once,
    /// moving it into a new staging directory `<root>/temp-dir-<x>` (held by its lock
    /// `<root>/lock-<x>`) under one of [`Driver::temp_dir_roots`], and returns that
    /// directory: the caller removes it ([`storage_lock::TempDir::cleanup`]) once it has
    /// released its locks. A layer that is not there gives `None`. Drivers without a
    /// staging area remove the data at once and return `None` (this default; Go's btrfs).
    fn deferred_remove(&self, id: &str) -> Result<Option<storage_lock::TempDir>> {
        self.remove(id).map(|()| None)
    }
    /// Go's `GetTempDirRootDirs`: the staging roots of [`Driver::deferred_remove`] (none by
    /// default). Whoever loads a store removes the abandoned staging directories there.
    fn temp_dir_roots(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    /// The directories Go's driver `Dedup` walks for these layers: none by default (so a
    /// deduplication on btrfs shares nothing, as Go's btrfs driver does); vfs gives the
    /// layer directories, overlay their `diff` directories.
    fn dedup_dirs(&self, _ids: &[String]) -> Vec<PathBuf> {
        Vec::new()
    }
    /// Whether [`Driver::get`] can apply these ID maps at mount time (Go's
    /// `SupportsShifting`). When true, the store creates layers without maps and passes
    /// them to `get` instead. Drivers that cannot shift keep this default.
    fn supports_shifting(&self, _uid_map: &[IdMap], _gid_map: &[IdMap]) -> bool {
        false
    }
    /// Creates a staging area (held by this process) whose content starts from `base`;
    /// fill it with [`Driver::apply_diff_staged`], then [`Driver::commit_staged`] or
    /// [`Driver::discard_staged`] it. No store lock is needed (see [`staging`]).
    fn stage(&self, base: StageBase<'_>, opts: &StageOpts) -> Result<StagingArea> {
        let _ = (base, opts);
        Err(staging::not_supported(self.name()))
    }
    /// Extracts an uncompressed layer tar into a staging area's content exactly as
    /// [`Driver::apply_diff`] would into a layer; returns the same size figure.
    fn apply_diff_staged(
        &self,
        area: &StagingArea,
        diff: &mut dyn Read,
        opts: &ApplyDiffOpts,
    ) -> Result<i64> {
        let _ = (area, diff, opts);
        Err(staging::not_supported(self.name()))
    }
    /// The extraction options [`Driver::apply_diff_staged`] uses, for a differ that fills
    /// a staging area itself (Go's `DriverWithDiffer`: overlay only; others fail with
    /// [`ErrorKind::NotSupported`]).
    fn differ_unpack_options(
        &self,
        opts: &ApplyDiffOpts,
    ) -> Result<storage_archive::UnpackOptions> {
        let _ = opts;
        Err(staging::not_supported(self.name()))
    }
    /// Moves a staging area's content into a layer (a new one, or replacing an existing
    /// layer's own content) with `rename`, makes the move durable and releases the area.
    /// On failure the area is discarded.
    fn commit_staged(&self, area: StagingArea, target: CommitTarget<'_>) -> Result<()> {
        let _ = (area, target);
        Err(staging::not_supported(self.name()))
    }
    /// Removes a staging area that will not be committed (Go's `CleanupStagingDirectory`).
    fn discard_staged(&self, area: StagingArea) -> Result<()> {
        area.discard_with(&staging::remove_plain)
    }
    /// Whether (and how) an apply onto the existing layer `id` can be staged; `None`: it
    /// must be applied in place.
    fn stage_for_apply(&self, id: &str, parent: Option<&str>) -> Option<ApplyStaging> {
        let _ = (id, parent);
        None
    }
    /// Whether the staged content of a new layer is independent of its parent's content
    /// (overlay: a layer holds only its own changes), so that a chain of layers can be
    /// staged all at once; otherwise (vfs, btrfs: a layer starts as a copy of its parent)
    /// a child is staged from its committed parent.
    fn stages_children_independently(&self) -> bool {
        false
    }
    /// Removes abandoned staging areas (whose lock nobody holds). Run when a store is
    /// loaded for writing.
    fn recover_staging(&self) -> Result<()> {
        Ok(())
    }
    /// Re-owns the content of a freshly created layer from the old maps to the new ones.
    fn update_layer_id_map(
        &self,
        id: &str,
        old_uid: &[IdMap],
        old_gid: &[IdMap],
        new_uid: &[IdMap],
        new_gid: &[IdMap],
    ) -> Result<()>;

    /// [`Driver::diff`] with the parent's own ID maps. Go compares owners after mapping
    /// each side with *its* layer's maps (`Diff(id, idMappings, parent, parentMappings)`),
    /// which matters when a mapped layer sits on an unmapped parent (user-namespaced
    /// containers). The default assumes the parent shares the layer's maps.
    fn diff_mapped(
        &self,
        id: &str,
        maps: LayerMaps<'_>,
        parent: Option<(&str, LayerMaps<'_>)>,
        out: &mut dyn Write,
    ) -> Result<()> {
        self.diff(id, parent.map(|p| p.0), maps.uid, maps.gid, out)
    }

    /// [`Driver::changes`] with both layers' ID maps (see [`Driver::diff_mapped`]).
    fn changes_mapped(
        &self,
        id: &str,
        maps: LayerMaps<'_>,
        parent: Option<(&str, LayerMaps<'_>)>,
    ) -> Result<Vec<Change>> {
        let _ = maps;
        self.changes(id, parent.map(|p| p.0))
    }

    /// [`Driver::diff_size`] with both layers' ID maps (see [`Driver::diff_mapped`]).
    fn diff_size_mapped(
        &self,
        id: &str,
        maps: LayerMaps<'_>,
        parent: Option<(&str, LayerMaps<'_>)>,
    ) -> Result<i64> {
        let _ = maps;
        self.diff_size(id, parent.map(|p| p.0))
    }
}

/// The ID maps of one layer as recorded in its record (empty slices: identity).
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerMaps<'a> {
    /// UID map.
    pub uid: &'a [IdMap],
    /// GID map.
    pub gid: &'a [IdMap],
}

/// Names Go registers but this implementation does not provide.
const KNOWN_UNSUPPORTED: &[&str] = &["zfs", "aufs", "devicemapper"];

/// Drivers this build leaves out (their Cargo features are off).
const BUILT_WITHOUT: &[&str] = &[
    #[cfg(not(feature = "overlay"))]
    "overlay",
    #[cfg(not(feature = "overlay"))]
    "overlay2",
    #[cfg(not(feature = "btrfs"))]
    "btrfs",
    #[cfg(not(feature = "vfs"))]
    "vfs",
];

/// The drivers this build has, for the "not supported" message.
const BUILT_WITH: &str = {
    #[cfg(all(feature = "overlay", feature = "btrfs", feature = "vfs"))]
    {
        "overlay, btrfs, vfs"
    }
    #[cfg(not(all(feature = "overlay", feature = "btrfs", feature = "vfs")))]
    {
        "the drivers this build was compiled with"
    }
};

/// Opens the driver `name` with `opts`.
///
/// Every layer ID the returned driver is given (and every parent ID) must be a single
/// path component: `""`, `.`, `..` and IDs holding `/` or NUL are refused with
/// [`ErrorKind::InvalidInput`] (`invalid layer ID "../x"`), and `exists` is false for them.
///
/// Unknown names give Go's `driver not supported` ([`ErrorKind::NotSupported`]), which
/// the store prefixes (`failed to GetDriver graph bogus R: driver not supported`).
pub fn open_driver(name: &str, opts: &DriverOptions) -> Result<Box<dyn Driver>> {
    match name {
        #[cfg(feature = "vfs")]
        "vfs" => Ok(Box::new(Guarded(vfs::Vfs::open(opts)?))),
        #[cfg(feature = "overlay")]
        "overlay" | "overlay2" => Ok(Box::new(Guarded(overlay::Overlay::open(opts)?))),
        #[cfg(feature = "btrfs")]
        "btrfs" => Ok(Box::new(Guarded(btrfs::Btrfs::open(opts)?))),
        n if KNOWN_UNSUPPORTED.contains(&n) || BUILT_WITHOUT.contains(&n) => Err(Error::msg(
            ErrorKind::NotSupported,
            format!("driver not supported: {n} is not implemented here (supported: {BUILT_WITH})"),
        )),
        _ => Err(Error::new(ErrorKind::NotSupported)),
    }
}

/// Go's default driver priority.
const DEFAULT_PRIORITY: &[&str] = &["overlay", "aufs", "btrfs", "zfs", "vfs"];

/// Go's driver auto-selection (`graphdriver.New` with an empty name).
///
/// 1. A driver with prior state wins: the names of `priority` (Go's default
///    `overlay, aufs, btrfs, zfs, vfs` when empty; `vfs` only counts when the caller's
///    list names it) whose `<graph_root>/<name>` exists. Two or more are an error.
/// 2. Otherwise the first of the priority list that opens; "not supported" failures
///    (wrong file system, missing kernel features) move on to the next, other errors
///    are returned.
///
/// `options_for(name)` gives the [`DriverOptions`] to open `name` with. Returns the name
/// the driver was opened with (its home and `<name>-layers` prefix) and the driver.
pub fn choose_driver(
    graph_root: &std::path::Path,
    priority: &[String],
    options_for: &dyn Fn(&str) -> DriverOptions,
) -> Result<(String, Box<dyn Driver>)> {
    let explicit = !priority.is_empty();
    let list: Vec<String> = if explicit {
        priority.to_vec()
    } else {
        DEFAULT_PRIORITY.iter().map(|s| (*s).to_owned()).collect()
    };
    let prior: Vec<&String> = list
        .iter()
        .filter(|n| (explicit || n.as_str() != "vfs") && graph_root.join(n.as_str()).is_dir())
        .collect();
    if prior.len() > 1 {
        return Err(Error::msg(
            ErrorKind::InvalidInput,
            format!(
                "{} contains several valid graphdrivers: {}; Please cleanup or explicitly choose storage driver (-s <DRIVER>)",
                graph_root.display(),
                prior
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if let Some(name) = prior.first() {
        let d = open_driver(name, &options_for(name))?;
        return Ok(((*name).clone(), d));
    }
    for name in &list {
        match open_driver(name, &options_for(name)) {
            Ok(d) => return Ok((name.clone(), d)),
            Err(e) if e.kind() == ErrorKind::NotSupported => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::msg(
        ErrorKind::NotSupported,
        "no supported storage backend found",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver this build leaves out (Cargo features) is "not supported", like Go's
    /// unknown ones, so that `choose_driver` moves on.
    #[test]
    fn drivers_left_out_are_not_supported() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = DriverOptions {
            home: tmp.path().join("graph/x"),
            run_home: tmp.path().join("run/x"),
            graph_root: tmp.path().join("graph"),
            run_root: tmp.path().join("run"),
            ..DriverOptions::default()
        };
        for name in BUILT_WITHOUT {
            let e = open_driver(name, &opts).err().expect("left out");
            assert_eq!(e.kind(), ErrorKind::NotSupported, "{name}");
            assert!(e.to_string().starts_with("driver not supported"), "{e}");
        }
        #[cfg(feature = "vfs")]
        assert!(open_driver("vfs", &opts).is_ok());
    }
}
