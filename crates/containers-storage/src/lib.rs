//! A Rust implementation of containers/storage, the library that keeps the layers, images and
//! containers of podman, buildah, skopeo and CRI-O on disk.
//!
//! The [`Store`] is the front door. It reads and writes the store exactly as Go's
//! containers/storage does — the JSON records, the directory layout, the lock files and
//! their last-writer tokens, the graph drivers' layouts, the tar-split files — and takes the
//! same locks in the same order, so a program using this crate and podman can use one store
//! at the same moment. Every command of the `containers-storage` tool is one call on it.
//!
//! **Use it for:** opening podman's store (or a store of your own) from Rust; creating layers
//! from tar diffs, images and containers; mounting them; producing diffs; checking and
//! repairing a store. **Not for:** pulling or pushing images (that is containers/image's or
//! skopeo's job: this crate stores what they fetch, given as tar streams and data items),
//! building images, or running containers (a runtime mounts the container's layer and runs
//! it). It prints nothing; errors are values ([`storage_types::Error`], with Go's texts).
//!
//! # Guide
//!
//! ## Open a store
//!
//! [`Store::open`] takes the [`StoreOptions`]: the graph root
//! (persistent data), the run root (mount counts, locks and other state that does not survive
//! a reboot), the driver and its options. The directories and lock files are created if
//! needed. `storage_config::load_default_options()` gives the options podman uses (from
//! `storage.conf` and the environment), to open podman's own store.
//!
//! ```
//! use containers_storage::Store;
//! use storage_config::StoreOptions;
//!
//! let tmp = tempfile::tempdir()?;
//! let store = Store::open(&StoreOptions {
//!     graph_root: tmp.path().join("root"),
//!     run_root: tmp.path().join("run"),
//!     driver: "vfs".into(), // or "overlay", "btrfs"; "" picks one like Go
//!     ..StoreOptions::default()
//! })?;
//! assert_eq!(store.driver_name(), "vfs");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Apply a layer
//!
//! A layer is created empty or from a tar diff (plain, gzip, bzip2, xz or zstd, detected
//! from its first bytes); [`Store::apply_diff`] applies a diff to an existing layer. The
//! record gets the digests and sizes of the stream and of the uncompressed tar, and a
//! tar-split file is kept so that [`Store::diff`] gives the same tar back, byte for byte.
//!
//! ```
//! # use containers_storage::{CreateLayerOptions, Store};
//! # let tmp = tempfile::tempdir()?;
//! # let store = Store::open(&storage_config::StoreOptions { graph_root: tmp.path().join("g"),
//! #     run_root: tmp.path().join("r"), driver: "vfs".into(), ..Default::default() })?;
//! let mut tar = tar::Builder::new(Vec::new());
//! let mut header = tar::Header::new_gnu();
//! header.set_size(6);
//! header.set_mode(0o644);
//! tar.append_data(&mut header, "etc/hello", &b"hello\n"[..])?;
//! let tar = tar.into_inner()?;
//!
//! let opts = CreateLayerOptions { names: vec!["base".into()], ..Default::default() };
//! let (layer, _) = store.create_layer(&opts, Some(Box::new(std::io::Cursor::new(tar.clone()))))?;
//! assert_eq!(layer.diff_size, tar.len() as i64);
//! assert!(layer.diff_digest.starts_with("sha256:"));
//!
//! // The layer's diff is the tar it was made from, byte for byte.
//! let mut back = Vec::new();
//! store.diff(None, &layer.id, &Default::default(), &mut back)?;
//! assert!(back == tar);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Create an image and a container
//!
//! An image is a top layer plus names, metadata and named data items (the manifest, the
//! configuration). A container is a new read-write layer on top of an image's top layer.
//!
//! ```
//! # use containers_storage::{ContainerOptions, CreateLayerOptions, NewImage, Store};
//! # let tmp = tempfile::tempdir()?;
//! # let store = Store::open(&storage_config::StoreOptions { graph_root: tmp.path().join("g"),
//! #     run_root: tmp.path().join("r"), driver: "vfs".into(), ..Default::default() })?;
//! # let (layer, _) = store.create_layer(&CreateLayerOptions::default(), None)?;
//! let image = store.create_image(NewImage {
//!     names: vec!["localhost/hello:latest".into()],
//!     layer: layer.id.clone(),
//!     ..NewImage::default()
//! })?;
//! store.set_image_big_data(&image.id, "manifest", br#"{"schemaVersion":2}"#)?;
//! // A data item whose key starts with "manifest" gives the image a digest to be found by.
//! assert_eq!(store.image("localhost/hello:latest")?.digests.len(), 1);
//!
//! let ctr = store.create_container(&ContainerOptions {
//!     names: vec!["hello".into()],
//!     image: "localhost/hello:latest".into(),
//!     ..ContainerOptions::default()
//! })?;
//! assert_eq!(store.container("hello")?.layer, ctr.layer);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Mount, change, diff
//!
//! Mounting a layer or a container gives the directory of its file system and counts the
//! mount in the run root, where other processes see it. [`Store::changes`] and
//! [`Store::diff`] then say what the container changed, as Go reports it.
//!
//! ```
//! # use containers_storage::{ContainerOptions, CreateLayerOptions, DiffOptions, NewImage, Store};
//! # let tmp = tempfile::tempdir()?;
//! # let store = Store::open(&storage_config::StoreOptions { graph_root: tmp.path().join("g"),
//! #     run_root: tmp.path().join("r"), driver: "vfs".into(), ..Default::default() })?;
//! # let (layer, _) = store.create_layer(&CreateLayerOptions::default(), None)?;
//! # store.create_image(NewImage { names: vec!["img".into()], layer: layer.id, ..Default::default() })?;
//! # let ctr = store.create_container(&ContainerOptions { names: vec!["hello".into()],
//! #     image: "img".into(), ..Default::default() })?;
//! let rootfs = store.mount("hello", &Default::default())?;
//! std::fs::write(rootfs.join("greeting"), "written by the container\n")?;
//! store.unmount("hello", false)?;
//!
//! let changes = store.changes(None, &ctr.layer)?;
//! assert_eq!(changes.len(), 1);
//! assert_eq!(changes[0].path, "/greeting");
//!
//! let mut tar = Vec::new(); // the container's changes as a layer diff
//! store.diff(None, &ctr.layer, &DiffOptions::default(), &mut tar)?;
//! assert!(tar.windows(8).any(|w| w == b"greeting"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Check
//!
//! [`Store::check`] looks for damage (missing layers or data, contents that no longer match
//! their digests, driver layers without a record, …); [`Store::repair`] removes what is
//! damaged. Deleting an image also deletes the layers only it used.
//!
//! ```
//! # use containers_storage::{CheckOptions, CreateLayerOptions, NewImage, Store};
//! # let tmp = tempfile::tempdir()?;
//! # let store = Store::open(&storage_config::StoreOptions { graph_root: tmp.path().join("g"),
//! #     run_root: tmp.path().join("r"), driver: "vfs".into(), ..Default::default() })?;
//! # let (layer, _) = store.create_layer(&CreateLayerOptions::default(), None)?;
//! # store.create_image(NewImage { names: vec!["img".into()], layer: layer.id.clone(), ..Default::default() })?;
//! let report = store.check(&CheckOptions::default())?;
//! assert!(report.is_clean(), "{report:?}");
//!
//! assert_eq!(store.delete_image("img", true)?, vec![layer.id]);
//! store.shutdown(false)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## As a rootless user
//!
//! A rootless podman user's store (`~/.local/share/containers/storage`) holds files owned by
//! the IDs of the user's namespace (`/etc/subuid`, `/etc/subgid`). To use it, enter that
//! namespace first, at the start of `main`, like podman and Go's `containers-storage` do:
//! [`userns::maybe_reexec`] runs the program again inside it (and exits with its status),
//! and returns at once as root or when already inside (`podman unshare`).
//!
//! ```no_run
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     containers_storage::userns::maybe_reexec()?;
//!     let (options, _warnings) = storage_config::load_default_options()?;
//!     let store = containers_storage::Store::open(&options)?;
//!     for image in store.images_list()? {
//!         println!("{} {:?}", image.id, image.names);
//!     }
//!     Ok(())
//! }
//! ```
//!
//! The [`guide`] module has the same walk-through as one program.
//!
//! # The other crates
//!
//! The store is built from smaller crates, each usable on its own: `storage_types` (IDs,
//! digests, the records and their JSON, errors), `storage_config` (`storage.conf`),
//! `storage_lock` (lock files that interlock with Go), `storage_io` (atomic file writes),
//! `storage_tarsplit` and `storage_archive` (tar streams, tar-split, applying and producing
//! diffs), `storage_drivers` (vfs, overlay, btrfs), the record stores `storage_layers`,
//! `storage_images` and `storage_containers`, and `storage_userns` (the rootless user
//! namespace, re-exported as [`userns`]). `storage_cli` is the command-line tool.
//!
//! # How the store works
//!
//! [`Store::open`] does what Go's `storage.GetStore` does: it resolves the options (missing roots
//! from `storage.conf`, relative paths made absolute), creates the graph and run roots (0700), the
//! lock files (`storage.lock`, `userns.lock`, `<drv>-layers/layers.lock`,
//! `<drv>-images/images.lock`, `<drv>-containers/containers.lock` — in the run root in transient
//! mode — and `<R>/<drv>-layers/mountpoints.lock`), the `<R>/<drv>-containers/` and
//! `<R>/<drv>-locks/` directories, and initialises the driver (auto-selected when no name is
//! given).
//!
//! Operations span the stores the way Go's `store.go` does: layers (create/import, apply,
//! diff, changes, mount counting, names, metadata, data items, safety-checked and unchecked
//! deletion), images (create, data items, digests, sizes, deletion with the unused part of
//! their layer chain), containers (create with a read-write layer, data items, directories,
//! sizes, deletion), [`Store::wipe`] and [`Store::shutdown`]. Read-only additional stores
//! (`<driver>.imagestore=PATH`) are searched after the read-write ones.
//!
//! Locks are taken in Go's order: `storage.lock` (only around driver work and
//! to obtain the layer store handle, re-initialising the driver when another process shut
//! it down), layers (exclusive even for reads, like Go), images, containers.
//!
//! Read-only images are "pulled up" into the read-write store when renamed or re-created
//! with their ID; containers with ID maps get an ID-mapped copy of the image's top layer
//! (recorded in the image's `mapped-layers`), like Go — unless the driver shifts IDs at mount
//! time (overlay with idmapped mounts): then layers stay map-less and canonical, and the
//! container's maps are applied when it is mounted.
//!
//! Limits: auto user namespaces are not implemented; a split image store
//! (`--image-store`) keeps `<G>/<drv>-images` as an additional read-write store but the
//! 1.60 "search the graph root's layers as read-only" detail is covered only through the
//! layer store's own split-store support.
#![deny(missing_docs)]
// `unsafe` is allowed only in the `sys` module (the dedupe ioctl).
#![deny(unsafe_code)]

mod auto_userns;
mod check;
mod chunked;
mod copy;
mod dedup;
mod gc;
pub mod guide;
mod idmaps;
#[cfg(feature = "oci")]
pub mod oci;
mod ops;
mod records;
mod salvage;
mod staged;
#[allow(unsafe_code)]
mod sys;

pub use auto_userns::AutoUserNsOptions;
pub use check::{CheckOptions, CheckReport, RepairOptions};
pub use chunked::ChunkedDiffer;
pub use copy::{CopyEnd, CopyError, CopyOwners, CopyPath, copy_with_tar};
pub use dedup::{DedupOptions, DedupResult, HashMethod};
pub use ops::{LayerUsers, NamesOp, RecordKind};
pub use records::ContainerOptions;
pub use salvage::{DamagedFile, RecordFileKind, Salvaged, check_record_files, repair_record_files};
pub use staged::{ImportLayersError, ImportLayersOptions, LayerImport, Staged};
/// Layer archives: compression detection and decompression, digests, the changes walk and
/// Go-compatible tar export (the `storage_archive` crate).
pub use storage_archive as archive;
/// `storage.conf`: loading [`StoreOptions`] as podman does (the
/// `storage_config` crate).
pub use storage_config as config;
/// The storage drivers and their option types ([`MountOpts`](drivers::MountOpts),
/// [`CreateOpts`](drivers::CreateOpts), …; the `storage_drivers` crate).
pub use storage_drivers as drivers;
/// Go's texts and lexical rules (quoting, errno texts, JSON escaping, path cleaning, dates,
/// ID checks): the crate every part of the store takes them from.
pub use storage_gocompat as gocompat;
pub use storage_images::{BigDataItem, NewImage};
pub use storage_layers::{CreateLayerOptions, DiffOptions, Differ, DifferOutput, ExpectedDiff};
/// The records, IDs, digests, ID maps, timestamps and the `Error` type of every call (the
/// `storage_types` crate).
pub use storage_types as types;
/// The rootless user namespace (the `storage_userns` crate): call
/// [`userns::maybe_reexec`] at the start of `main` to use a rootless user's store.
pub use storage_userns as userns;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use storage_config::StoreOptions;
use storage_containers::ContainerStore;
use storage_drivers::{Driver, DriverOptions, open_driver};
use storage_images::ImageStore;
use storage_layers::{LayerStore, LayerStoreOptions};
use storage_lock::{LockFile, Token};
use storage_types::{Error, ErrorKind, Result};

/// An open store.
pub struct Store {
    graph_root: PathBuf,
    run_root: PathBuf,
    image_store_root: Option<PathBuf>,
    driver_name: String,
    driver_options: Vec<String>,
    transient: bool,
    graph_lock: Arc<LockFile>,
    userns_lock: Arc<LockFile>,
    ro_layer_roots: Vec<PathBuf>,
    driver: Mutex<DriverState>,
    images: ImageStore,
    ro_images: Vec<ImageStore>,
    /// With a split image store: `<G>/<drv>-images`, an additional read-write image store.
    extra_images: Vec<ImageStore>,
    containers: ContainerStore,
    /// `[storage.options.pull_options]`.
    pull_options: std::collections::BTreeMap<String, String>,
    /// `root-auto-userns-user`, `auto-userns-min-size`/`max-size` and the cached ranges.
    auto_userns: auto_userns::AutoUserNsConfig,
}

struct DriverState {
    driver: Arc<dyn Driver>,
    /// The primary (read-write) layer store, rebuilt with the driver.
    layers: Arc<LayerStore>,
    /// Read-only layer stores of the additional image stores, in configuration order.
    ro_layers: Vec<Arc<LayerStore>>,
    /// The `storage.lock` token seen when the driver was (re)initialised.
    token: Token,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("graph_root", &self.graph_root)
            .field("run_root", &self.run_root)
            .field("driver_name", &self.driver_name)
            .field("driver_options", &self.driver_options)
            .finish_non_exhaustive()
    }
}

fn lock_err(e: storage_lock::LockError) -> Error {
    Error::wrap(ErrorKind::Io, e)
}

fn mkdir(path: &Path) -> Result<()> {
    storage_io::mkdir_all(path, 0o700).map_err(|e| Error::io("mkdir", path, e))
}

/// Opens the lock object for `path` and makes sure the file exists (Go opens lock files
/// with `O_CREAT` when it gets them; our lock crate creates them on first use only).
fn open_lock(path: &Path) -> Result<Arc<LockFile>> {
    use std::os::unix::fs::OpenOptionsExt;
    let lock = LockFile::open(path).map_err(lock_err)?;
    if !path.exists() {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
    }
    Ok(lock)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(storage_gocompat::path::clean_path(path));
    }
    let cwd = std::env::current_dir().map_err(|e| Error::io("getwd", Path::new("."), e))?;
    Ok(storage_gocompat::path::clean_path(&cwd.join(path)))
}

/// Go's `GetStore` option resolution: returns the options to open with.
///
/// `defaults` is called only when values must come from `storage.conf`.
pub fn resolve_options(
    opts: &StoreOptions,
    defaults: impl FnOnce() -> Result<StoreOptions>,
) -> Result<StoreOptions> {
    let no_roots = opts.run_root.as_os_str().is_empty() && opts.graph_root.as_os_str().is_empty();
    if no_roots && opts.driver.is_empty() && opts.driver_options.is_empty() {
        return defaults();
    }
    if no_roots {
        return Err(Error::msg(
            ErrorKind::InvalidInput,
            "no storage runroot or graphroot specified: missing necessary StoreOptions",
        ));
    }
    let mut out = opts.clone();
    if out.run_root.as_os_str().is_empty() || out.graph_root.as_os_str().is_empty() {
        let d = defaults()?;
        if out.run_root.as_os_str().is_empty() {
            out.run_root = d.run_root;
        }
        if out.graph_root.as_os_str().is_empty() {
            out.graph_root = d.graph_root;
        }
    }
    Ok(out)
}

fn load_defaults() -> Result<StoreOptions> {
    storage_config::load_default_options()
        .map(|(o, _)| o)
        .map_err(|e| Error::wrap(ErrorKind::InvalidInput, e))
}

/// The driver options that name additional read-only image stores
/// (`<driver>.imagestore=PATH[,PATH]` or `.imagestore=…`).
fn additional_image_stores(driver: &str, options: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for opt in options {
        let Some((key, value)) = opt.split_once('=') else {
            continue;
        };
        let key = key.trim().to_lowercase();
        let matches = match key.split_once('.') {
            Some((d, k)) => (d.is_empty() || d == driver) && k == "imagestore",
            None => false,
        };
        if matches {
            out.extend(
                value
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from),
            );
        }
    }
    out
}

impl Store {
    /// Opens (creating as needed) the store described by `opts` (Go's `GetStore`).
    pub fn open(opts: &StoreOptions) -> Result<Store> {
        let opts = resolve_options(opts, load_defaults)?;
        let graph_root = absolute(&opts.graph_root)?;
        let run_root = absolute(&opts.run_root)?;
        let image_store_root = match &opts.image_store {
            Some(p) => {
                let p = absolute(p)?;
                if p == graph_root {
                    return Err(Error::msg(
                        ErrorKind::InvalidInput,
                        format!(
                            "imagestore {} must either be not set or be a different than graphroot",
                            p.display()
                        ),
                    ));
                }
                Some(p)
            }
            None => None,
        };
        mkdir(&run_root)?;
        mkdir(&graph_root)?;
        if let Some(is) = &image_store_root {
            mkdir(is)?;
        }
        let graph_lock = open_lock(&graph_root.join("storage.lock"))?;
        let userns_lock = open_lock(&graph_root.join("userns.lock"))?;

        // Driver initialisation under the graph lock.
        let guard = graph_lock.lock().map_err(lock_err)?;
        let driver: Arc<dyn Driver> = Arc::from(init_driver(
            &opts,
            &graph_root,
            &run_root,
            image_store_root.as_deref(),
        )?);
        let token = guard.token().map_err(lock_err)?;
        drop(guard);
        let name = driver.name().to_string();

        let extra_roots = additional_image_stores(&name, &opts.driver_options);
        let (layers, ro_layers) = open_layer_stores(
            &driver,
            &graph_root,
            &run_root,
            image_store_root.as_deref(),
            &extra_roots,
            opts.transient_store,
        )?;
        // Go creates the layer store's lock files when it first touches the store; our
        // tree after `GetStore` matches Go's.
        open_lock(
            &graph_root
                .join(format!("{name}-layers"))
                .join("layers.lock"),
        )?;
        open_lock(
            &run_root
                .join(format!("{name}-layers"))
                .join("mountpoints.lock"),
        )?;

        let images_root = image_store_root.as_deref().unwrap_or(&graph_root);
        let images = ImageStore::open(
            &images_root.join(format!("{name}-images")),
            &run_root.join(format!("{name}-images")),
        )?;
        let mut extra_images = Vec::new();
        if image_store_root.is_some() {
            extra_images.push(ImageStore::open(
                &graph_root.join(format!("{name}-images")),
                &run_root.join(format!("{name}-images")),
            )?);
        }
        let mut ro_images = Vec::new();
        for extra in &extra_roots {
            if let Some(s) = ImageStore::open_read_only(
                &extra.join(format!("{name}-images")),
                &run_root.join(format!("{name}-images")),
            )? {
                ro_images.push(s);
            }
        }
        let run_containers = run_root.join(format!("{name}-containers"));
        mkdir(&run_containers)?;
        let containers = ContainerStore::open(
            &graph_root.join(format!("{name}-containers")),
            &run_containers,
            opts.transient_store,
        )?;
        mkdir(&run_root.join(format!("{name}-locks")))?;

        Ok(Store {
            graph_root,
            run_root,
            image_store_root,
            driver_name: name,
            driver_options: opts.driver_options.clone(),
            transient: opts.transient_store,
            graph_lock,
            userns_lock,
            ro_layer_roots: extra_roots,
            driver: Mutex::new(DriverState {
                driver,
                layers,
                ro_layers,
                token,
            }),
            images,
            ro_images,
            extra_images,
            containers,
            pull_options: opts.pull_options.clone().unwrap_or_default(),
            auto_userns: auto_userns::AutoUserNsConfig::new(
                &opts.root_auto_userns_user,
                opts.auto_userns_min_size,
                opts.auto_userns_max_size,
            ),
        })
    }

    /// The graph root.
    pub fn graph_root(&self) -> &Path {
        &self.graph_root
    }

    /// The run root.
    pub fn run_root(&self) -> &Path {
        &self.run_root
    }

    /// The separate image store root, if configured.
    pub fn image_store(&self) -> Option<&Path> {
        self.image_store_root.as_deref()
    }

    /// The canonical name of the driver in use.
    pub fn driver_name(&self) -> &str {
        &self.driver_name
    }

    /// The driver options the store was opened with.
    pub fn driver_options(&self) -> &[String] {
        &self.driver_options
    }

    /// The pull options (`[storage.options.pull_options]`; empty when none were configured).
    pub fn pull_options(&self) -> &std::collections::BTreeMap<String, String> {
        &self.pull_options
    }

    /// Whether the store runs in transient mode.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The read-write image store.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// The read-write image stores: the primary one, then (with a split image store) the
    /// graph root's `<drv>-images`.
    pub fn rw_images(&self) -> impl Iterator<Item = &ImageStore> {
        std::iter::once(&self.images).chain(self.extra_images.iter())
    }

    /// The read-only additional image stores, in configuration order.
    pub fn read_only_images(&self) -> &[ImageStore] {
        &self.ro_images
    }

    /// The container store.
    pub fn containers(&self) -> &ContainerStore {
        &self.containers
    }

    /// The `userns.lock` file (taken around container creation with ID mappings).
    pub fn userns_lock(&self) -> &Arc<LockFile> {
        &self.userns_lock
    }

    fn driver_state(&self) -> Result<MutexGuard<'_, DriverState>> {
        self.driver
            .lock()
            .map_err(|_| Error::msg(ErrorKind::Other, "driver state poisoned"))
    }

    /// Takes `storage.lock` exclusively and re-initialises the driver (and drops the cached
    /// layer stores) if another process shut it down meanwhile (Go's `startUsingGraphDriver`).
    /// The returned guard keeps the graph lock.
    fn graph(&self) -> Result<GraphGuard<'_>> {
        let guard = self.graph_lock.lock().map_err(lock_err)?;
        let mut state = self.driver_state()?;
        if guard.modified_since(&state.token).map_err(lock_err)? {
            let opts = DriverOptions {
                home: self.graph_root.join(&self.driver_name),
                run_home: self.run_root.join(&self.driver_name),
                graph_root: self.graph_root.clone(),
                run_root: self.run_root.clone(),
                image_store: self.image_store_root.clone(),
                options: self.driver_options.clone(),
            };
            let driver: Arc<dyn Driver> = Arc::from(open_driver(&self.driver_name, &opts)?);
            let (layers, ro_layers) = open_layer_stores(
                &driver,
                &self.graph_root,
                &self.run_root,
                self.image_store_root.as_deref(),
                &self.ro_layer_roots,
                self.transient,
            )?;
            state.driver = driver;
            state.layers = layers;
            state.ro_layers = ro_layers;
            state.token = guard.token().map_err(lock_err)?;
        }
        Ok(GraphGuard { state, guard })
    }

    /// Runs `f` with the driver while holding `storage.lock` exclusively.
    pub fn with_driver<T>(&self, f: impl FnOnce(&dyn Driver) -> Result<T>) -> Result<T> {
        let g = self.graph()?;
        f(g.state.driver.as_ref())
    }

    /// The primary layer store (Go's `getLayerStore`: `storage.lock` is taken only to get
    /// the handle). Take its locks with [`LayerStore::read`] / [`LayerStore::write`].
    pub fn layer_store(&self) -> Result<Arc<LayerStore>> {
        Ok(self.graph()?.state.layers.clone())
    }

    /// The read-only layer stores of the additional image stores.
    pub fn read_only_layer_stores(&self) -> Result<Vec<Arc<LayerStore>>> {
        Ok(self.graph()?.state.ro_layers.clone())
    }

    /// The driver's status pairs (Go's `Store.Status`).
    pub fn status(&self) -> Result<Vec<(String, String)>> {
        self.with_driver(|d| Ok(d.status()))
    }

    /// Go's `Store.Shutdown(force)`.
    ///
    /// Returns the IDs of layers that were mounted. If any layer was mounted the call fails
    /// with "a layer is mounted: layer is in use by a container" (after unmounting them all
    /// when `force` is set) and the driver is not cleaned up; otherwise a new `storage.lock`
    /// token is written and the driver cleaned up.
    pub fn shutdown(&self, force: bool) -> Result<Vec<String>> {
        let mut g = self.graph()?;
        let layers = g.state.layers.clone();
        let mut w = layers.write()?;
        let mounted: Vec<String> = w
            .mounts()
            .into_iter()
            .filter(|(_, _, count)| *count != 0)
            .map(|(id, _, _)| id)
            .collect();
        if force {
            for id in &mounted {
                while w.unmount(id, true)? {}
            }
        }
        drop(w);
        if !mounted.is_empty() {
            return Err(Error::msg(
                ErrorKind::LayerUsedByContainer,
                "a layer is mounted: layer is in use by a container",
            ));
        }
        let token = g.guard.record_write().map_err(lock_err)?;
        g.state.driver.cleanup()?;
        g.state.token = token;
        Ok(mounted)
    }

    /// Go's `Store.Wipe()`: deletes every container, image and layer of
    /// the read-write stores. Locks: layers, images, containers (all exclusive).
    pub fn wipe(&self) -> Result<()> {
        let layers = self.layer_store()?;
        let mut l = layers.write()?;
        let mut images = Vec::new();
        for store in self.rw_images() {
            images.push(store.write()?);
        }
        let mut containers = self.containers.write()?;
        containers.wipe()?;
        for i in &mut images {
            i.wipe()?;
        }
        l.wipe()
    }
}

/// `storage.lock` held exclusively, with the current driver state.
struct GraphGuard<'a> {
    state: MutexGuard<'a, DriverState>,
    guard: storage_lock::WriteGuard,
}

fn open_layer_stores(
    driver: &Arc<dyn Driver>,
    graph_root: &Path,
    run_root: &Path,
    image_store: Option<&Path>,
    extra_roots: &[PathBuf],
    transient: bool,
) -> Result<(Arc<LayerStore>, Vec<Arc<LayerStore>>)> {
    let name = driver.name().to_string();
    let mut opts = LayerStoreOptions::new(
        graph_root.join(format!("{name}-layers")),
        run_root.join(format!("{name}-layers")),
        driver.clone(),
    );
    opts.transient = transient;
    opts.image_store_dir = image_store.map(|p| p.join(format!("{name}-layers")));
    let primary = Arc::new(LayerStore::open(opts)?);
    let mut ro = Vec::new();
    let mut extras: Vec<PathBuf> = extra_roots.to_vec();
    if image_store.is_some() {
        // With a split image store the graph root is searched as an additional store too;
        // its layers are already served by the primary store.
        extras.retain(|p| p != graph_root);
    }
    for root in extras {
        let dir = root.join(format!("{name}-layers"));
        if !dir.is_dir() {
            continue;
        }
        // Go opens read-only lock files with O_CREAT: a missing one is created when the
        // file system allows it.
        let lock = dir.join("layers.lock");
        if !lock.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&lock);
        }
        let mut o =
            LayerStoreOptions::new(dir, run_root.join(format!("{name}-layers")), driver.clone());
        o.read_only = true;
        ro.push(Arc::new(LayerStore::open(o)?));
    }
    Ok((primary, ro))
}

fn driver_options_for(
    name: &str,
    opts: &StoreOptions,
    graph_root: &Path,
    run_root: &Path,
    image_store: Option<&Path>,
) -> DriverOptions {
    DriverOptions {
        home: graph_root.join(name),
        run_home: run_root.join(name),
        graph_root: graph_root.to_path_buf(),
        run_root: run_root.to_path_buf(),
        image_store: image_store.map(Path::to_path_buf),
        options: opts.driver_options.clone(),
    }
}

/// Go's `drivers.New`: the named driver, or auto-selection.
fn init_driver(
    opts: &StoreOptions,
    graph_root: &Path,
    run_root: &Path,
    image_store: Option<&Path>,
) -> Result<Box<dyn Driver>> {
    let wrap = |name: &str, e: Error| {
        if e.kind() != ErrorKind::NotSupported {
            // Errors of a driver that exists pass through unchanged (Go's `GetDriver`).
            return e;
        }
        let text = format!(
            "failed to GetDriver graph {name} {}: {}",
            graph_root.display(),
            e
        );
        tracing::error!(
            "{}",
            format!("Failed to GetDriver graph {name} {}", graph_root.display())
        );
        Error::msg(e.kind(), text)
    };
    if !opts.driver.is_empty() {
        tracing::debug!("[graphdriver] trying provided driver {:?}", opts.driver);
        let o = driver_options_for(&opts.driver, opts, graph_root, run_root, image_store);
        return open_driver(&opts.driver, &o).map_err(|e| wrap(&opts.driver, e));
    }
    let options_for =
        |name: &str| driver_options_for(name, opts, graph_root, run_root, image_store);
    storage_drivers::choose_driver(graph_root, &opts.driver_priority, &options_for).map(|(_, d)| d)
}
