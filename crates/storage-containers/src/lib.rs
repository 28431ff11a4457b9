//! The container store of containers/storage: `containers.json`,
//! `volatile-containers.json` and `containers.lock`.
//!
//! **Use it for:** the container records of one store and their data items and directories.
//! **Not for:** the container's layer, images or mounts: those belong to
//! `containers_storage::Store`.
//!
//! This crate mirrors Go's `containers.go`. A [`ContainerStore`] manages
//! `<graphroot>/<driver>-containers/`:
//!
//! * `containers.json` — records of ordinary containers, written atomically
//!   with `fdatasync`;
//! * `volatile-containers.json` — records of volatile containers, written
//!   without `fdatasync` (in transient mode it lives in
//!   `<runroot>/<driver>-containers/`, and every new container is volatile);
//! * `containers.lock` — the fcntl lock file whose 64-byte token is rewritten
//!   **before** every save (in transient mode it lives in the run root too);
//! * `<id>/<item>` — container big data; `<id>/userdata/` and
//!   `<runroot>/<driver>-containers/<id>/userdata/` — free-form directories of
//!   the engine.
//!
//! Access goes through guards so the `Store` can hold several locks in Go's
//! order: [`ContainerStore::read`] (shared lock, [`ContainersRead`]) and
//! [`ContainerStore::write`] (exclusive lock, [`ContainersWrite`]); both
//! dereference to [`ContainerSet`], the read API. The in-memory copy is
//! reloaded only when the lock token shows another writer.
//!
//! Limits: the store knows nothing about layers or images — `image` and
//! `layer` are opaque strings; creating, deleting or mounting the container's
//! layer and generating SELinux labels is the caller's job.
//!
//! ```
//! use storage_containers::{ContainerStore, NewContainer};
//! # fn main() -> storage_types::Result<()> {
//! let tmp = tempfile::tempdir()?;
//! let store = ContainerStore::open(
//!     &tmp.path().join("vfs-containers"),
//!     &tmp.path().join("run/vfs-containers"),
//!     false,
//! )?;
//! let mut containers = store.write()?;
//! let c = containers.create(NewContainer {
//!     names: vec!["web".into()],
//!     layer: "0123abcd".into(),
//!     ..NewContainer::default()
//! })?;
//! containers.set_big_data(&c.id, "config.json", b"{}")?;
//! drop(containers);
//!
//! let containers = store.read()?;
//! assert_eq!(containers.get("web")?.id, c.id);
//! // A container can also be found through its layer ID.
//! assert_eq!(containers.get("0123abcd")?.id, c.id);
//! assert_eq!(containers.big_data(&c.id, "config.json")?, b"{}");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashSet};
use std::ops::Deref;
use std::path::{Path, PathBuf};

use serde_json::Value;
use storage_lock::LockFile;
use storage_records::{Cache, Exclusive, Loaded, Record, Records, Shared, lock_error, mkdir};
use storage_types::{
    Container, Digest, Error, ErrorKind, FastMap, IdMap, Result, Timestamp, go_quote,
};

pub use storage_records::NamesOp;

/// File name of the records file of ordinary containers.
pub const CONTAINERS_JSON: &str = "containers.json";
/// File name of the records file of volatile containers.
pub const VOLATILE_CONTAINERS_JSON: &str = "volatile-containers.json";
/// File name of the lock file.
pub const CONTAINERS_LOCK: &str = "containers.lock";

const MOUNT_LABEL: &str = "MountLabel";
const PROCESS_LABEL: &str = "ProcessLabel";
const MOUNT_OPTS: &str = "MountOpts";
const VOLATILE: &str = "Volatile";

/// What the shared messages call a container.
const WHAT: &str = "container";

/// What to create with [`ContainersWrite::create`].
#[derive(Debug, Clone, Default)]
pub struct NewContainer {
    /// The ID; `None` (or empty) generates a fresh, unused one.
    pub id: Option<String>,
    /// Names (de-duplicated; each must be free).
    pub names: Vec<String>,
    /// Full ID of the image the container was created from, or `""`.
    pub image: String,
    /// ID of the container's read-write layer.
    pub layer: String,
    /// Opaque metadata.
    pub metadata: String,
    /// Requested UID mapping (ranges must not overlap).
    pub uid_map: Vec<IdMap>,
    /// Requested GID mapping (ranges must not overlap).
    pub gid_map: Vec<IdMap>,
    /// Initial flags. `MountLabel` and `ProcessLabel` must be both present or
    /// both absent; when absent both are recorded as `""`.
    pub flags: BTreeMap<String, Value>,
    /// Mount options, recorded as the `MountOpts` flag when given.
    pub mount_opts: Option<Vec<String>>,
    /// Keep the record in `volatile-containers.json` (always the case in
    /// transient mode) and set the `Volatile` flag.
    pub volatile: bool,
    /// Initial big-data items `(key, bytes)`, stored after the record.
    pub big_data: Vec<(String, Vec<u8>)>,
}

/// The container store.
pub struct ContainerStore {
    dir: PathBuf,
    run_dir: PathBuf,
    transient: bool,
    stable_path: PathBuf,
    volatile_path: PathBuf,
    cache: Cache<ContainerSet>,
}

impl std::fmt::Debug for ContainerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerStore")
            .field("dir", &self.dir)
            .field("run_dir", &self.run_dir)
            .field("transient", &self.transient)
            .finish_non_exhaustive()
    }
}

impl ContainerStore {
    /// Opens the container store: `dir` is `<graphroot>/<driver>-containers`,
    /// `run_dir` is `<runroot>/<driver>-containers`. In `transient` mode the
    /// lock and `volatile-containers.json` live in `run_dir` and every new
    /// container is volatile. Directories are created (0700) as needed; the
    /// records are loaded under the exclusive lock and duplicate names are
    /// repaired (the later record keeps the name).
    pub fn open(dir: &Path, run_dir: &Path, transient: bool) -> Result<ContainerStore> {
        mkdir(dir)?;
        let volatile_dir = if transient {
            mkdir(run_dir)?;
            run_dir
        } else {
            dir
        };
        let lock = LockFile::open(&volatile_dir.join(CONTAINERS_LOCK)).map_err(lock_error)?;
        let store = ContainerStore {
            dir: dir.to_owned(),
            run_dir: run_dir.to_owned(),
            transient,
            stable_path: dir.join(CONTAINERS_JSON),
            volatile_path: volatile_dir.join(VOLATILE_CONTAINERS_JSON),
            cache: Cache::new(lock),
        };
        drop(store.write()?);
        Ok(store)
    }

    /// `<graphroot>/<driver>-containers`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<runroot>/<driver>-containers`.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Whether the store runs in transient mode.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The path of `containers.json`.
    pub fn json_path(&self) -> &Path {
        &self.stable_path
    }

    /// The path of `volatile-containers.json`.
    pub fn volatile_json_path(&self) -> &Path {
        &self.volatile_path
    }

    /// The path of the lock file.
    pub fn lock_path(&self) -> &Path {
        self.cache.lock_file().path()
    }

    /// Takes the lock shared and returns the (fresh) records. A reload that
    /// needs a repair (duplicate names) briefly takes the exclusive lock to
    /// save it.
    pub fn read(&self) -> Result<ContainersRead<'_>> {
        self.cache.read(
            || self.load(),
            || {
                drop(self.write()?);
                Ok(())
            },
            "container store is inconsistent and the current caller does not hold a write lock",
        )
    }

    /// Takes the lock exclusively and returns the (fresh) records for
    /// modification.
    pub fn write(&self) -> Result<ContainersWrite<'_>> {
        let (state, repair) = self.cache.write(|| self.load())?;
        let mut guard = ContainersWrite { state, store: self };
        if let Some((stable, volatile)) = repair {
            guard.save(stable, volatile)?;
        }
        Ok(guard)
    }

    fn load(&self) -> Result<Loaded<ContainerSet, (bool, bool)>> {
        let mut containers: Vec<Container> = Vec::new();
        let mut volatile: Vec<bool> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for (path, is_volatile) in [(&self.stable_path, false), (&self.volatile_path, true)] {
            let records: Vec<Container> = storage_io::load_records(path)?;
            for record in records {
                // The first occurrence of an ID wins; duplicates are dropped.
                if seen.insert(record.id.clone()) {
                    containers.push(record);
                    volatile.push(is_volatile);
                }
            }
        }
        // Later records win duplicate names.
        let mut repair = (false, false);
        for (other, n) in storage_records::repair_duplicate_names(&mut containers) {
            for m in [other, n] {
                if volatile[m] {
                    repair.1 = true;
                } else {
                    repair.0 = true;
                }
            }
        }
        let mut set = ContainerSet {
            dir: self.dir.clone(),
            run_dir: self.run_dir.clone(),
            records: Records::new(containers),
            volatile,
            ..ContainerSet::default()
        };
        set.index_layers();
        Ok(Loaded {
            set,
            repair: (repair.0 || repair.1).then_some(repair),
        })
    }
}

/// The container records and their indexes: the read API, reached through
/// [`ContainersRead`] or [`ContainersWrite`].
#[derive(Default)]
pub struct ContainerSet {
    dir: PathBuf,
    run_dir: PathBuf,
    records: Records<Container>,
    /// Whether each record lives in `volatile-containers.json`.
    volatile: Vec<bool>,
    by_layer: FastMap<String, usize>,
}

impl ContainerSet {
    fn index_layers(&mut self) {
        self.by_layer.clear();
        for (n, c) in self.records.as_slice().iter().enumerate() {
            self.by_layer.insert(c.layer.clone(), n);
        }
    }

    /// Go's lookup: exact ID, exact name, layer ID, unique ID prefix.
    fn lookup(&self, id: &str) -> Option<usize> {
        let records = &self.records;
        records
            .by_id(id)
            .or_else(|| records.by_name(id))
            .or_else(|| self.by_layer.get(id).copied())
            .or_else(|| records.by_prefix(id))
    }

    fn container(&self, n: usize) -> &Container {
        &self.records.as_slice()[n]
    }

    fn container_mut(&mut self, n: usize) -> &mut Container {
        &mut self.records.items_mut()[n]
    }

    fn lookup_or_err(&self, id: &str) -> Result<usize> {
        self.lookup(id)
            .ok_or_else(|| Error::new(ErrorKind::ContainerUnknown))
    }

    /// All container records: those of `containers.json`, then those of
    /// `volatile-containers.json` (each in file order).
    pub fn containers(&self) -> &[Container] {
        self.records.as_slice()
    }

    /// The container with this ID, name, layer ID or unique ID prefix.
    pub fn get(&self, id: &str) -> Result<&Container> {
        Ok(self.container(self.lookup_or_err(id)?))
    }

    /// Like [`ContainerSet::get`], but `None` when not found.
    pub fn lookup_container(&self, id: &str) -> Option<&Container> {
        self.lookup(id).map(|n| self.container(n))
    }

    /// Whether a container with this ID, name, layer ID or unique prefix exists.
    pub fn exists(&self, id: &str) -> bool {
        self.lookup(id).is_some()
    }

    /// Whether the container's record lives in `volatile-containers.json`.
    pub fn is_volatile(&self, id: &str) -> Result<bool> {
        Ok(self.volatile[self.lookup_or_err(id)?])
    }

    /// The keys of a container's big-data items, in insertion order.
    pub fn big_data_names(&self, id: &str) -> Result<Vec<String>> {
        Ok(self
            .container(self.lookup_or_err(id)?)
            .big_data_names
            .clone())
    }

    /// The bytes of a big-data item (missing item: `open <path>: no such file
    /// or directory`).
    pub fn big_data(&self, id: &str, key: &str) -> Result<Vec<u8>> {
        storage_records::check_key(
            key,
            "can't retrieve container big data value for empty name",
        )?;
        let n = self.lookup_or_err(id)?;
        let path = storage_records::big_data_path(&self.dir, WHAT, &self.container(n).id, key)?;
        std::fs::read(&path).map_err(|e| Error::io("open", &path, e))
    }

    /// The recorded size of a big-data item, else the length of its file
    /// (without recording it; see [`ContainersWrite::big_data_size`]).
    pub fn big_data_size(&self, id: &str, key: &str) -> Result<i64> {
        storage_records::check_key(
            key,
            "can't retrieve size of container big data with empty name",
        )?;
        let n = self.lookup_or_err(id)?;
        let recorded = self.container(n).big_data_sizes.get(key).copied();
        storage_records::size_or_length(recorded, || self.big_data(id, key))
    }

    /// The recorded digest of a big-data item, else the sha256 of its file
    /// (without recording it; see [`ContainersWrite::big_data_digest`]).
    pub fn big_data_digest(&self, id: &str, key: &str) -> Result<Digest> {
        storage_records::check_key(
            key,
            "can't retrieve digest of container big data value with empty name",
        )?;
        let n = self.lookup_or_err(id)?;
        if let Some(d) = self.container(n).big_data_digests.get(key) {
            return d.parse();
        }
        match self.big_data(id, key) {
            Ok(data) => Ok(Digest::sha256(&data)),
            Err(_) => Err(Error::new(ErrorKind::DigestUnknown)),
        }
    }

    /// `<graphroot>/<driver>-containers/<id>/userdata` of the container
    /// (resolved by ID, name, layer or prefix), created (0700) on demand.
    pub fn container_dir(&self, id: &str) -> Result<PathBuf> {
        let n = self.lookup_or_err(id)?;
        storage_records::userdata_dir(&self.dir, WHAT, &self.container(n).id)
    }

    /// `<runroot>/<driver>-containers/<id>/userdata` of the container,
    /// created (0700) on demand.
    pub fn container_run_dir(&self, id: &str) -> Result<PathBuf> {
        let n = self.lookup_or_err(id)?;
        storage_records::userdata_dir(&self.run_dir, WHAT, &self.container(n).id)
    }
}

/// Shared access to the container store (lock held shared until dropped);
/// dereferences to [`ContainerSet`].
pub type ContainersRead<'a> = Shared<'a, ContainerSet>;

/// Exclusive access to the container store (lock held exclusively until
/// dropped). Every modification is saved before the method returns, the lock
/// token being rewritten first.
pub struct ContainersWrite<'a> {
    state: Exclusive<'a, ContainerSet>,
    store: &'a ContainerStore,
}

impl Deref for ContainersWrite<'_> {
    type Target = ContainerSet;
    fn deref(&self) -> &ContainerSet {
        &self.state
    }
}

impl ContainersWrite<'_> {
    /// Writes the token, then the requested files (`containers.json` with
    /// `fdatasync`, `volatile-containers.json` without).
    fn save(&mut self, stable: bool, volatile: bool) -> Result<()> {
        let store = self.store;
        self.state.save(|set| {
            for (wanted, is_volatile, path) in [
                (stable, false, &store.stable_path),
                (volatile, true, &store.volatile_path),
            ] {
                if !wanted {
                    continue;
                }
                if let Some(parent) = path.parent() {
                    mkdir(parent)?;
                }
                let subset: Vec<&Container> = set
                    .containers()
                    .iter()
                    .zip(&set.volatile)
                    .filter(|(_, v)| **v == is_volatile)
                    .map(|(c, _)| c)
                    .collect();
                let data = storage_types::to_go_json(&subset);
                storage_records::write_file("open", path, &data, !is_volatile)?;
            }
            Ok(())
        })
    }

    fn save_for(&mut self, n: usize) -> Result<()> {
        let v = self.state.volatile[n];
        self.save(!v, v)
    }

    /// Creates a container record (and its initial big data) and saves it.
    ///
    /// Errors: [`ErrorKind::DuplicateId`]; [`ErrorKind::DuplicateName`] (`the
    /// container name "X" is already in use by ID. You have to remove that
    /// container to be able to reuse that name: that name is already in use`);
    /// [`ErrorKind::InvalidInput`] for overlapping ID-map ranges or a lone
    /// `MountLabel`/`ProcessLabel` flag.
    pub fn create(&mut self, new: NewContainer) -> Result<Container> {
        let records = &self.state.records;
        let id = storage_records::new_id(WHAT, new.id, |id| records.by_id(id).is_some())?;
        let names = storage_types::dedup_names(&new.names);
        for name in &names {
            if let Some(n) = self.state.records.by_name(name) {
                return Err(Error::new(ErrorKind::DuplicateName).context(format!(
                    "the container name {} is already in use by {}. You have to remove that container to be able to reuse that name",
                    go_quote(name),
                    self.state.container(n).id
                )));
            }
        }
        check_overlaps(&new.uid_map)?;
        check_overlaps(&new.gid_map)?;
        let mut flags = new.flags;
        match (
            flags.contains_key(MOUNT_LABEL),
            flags.contains_key(PROCESS_LABEL),
        ) {
            (true, true) => {}
            (false, false) => {
                flags.insert(MOUNT_LABEL.to_owned(), Value::String(String::new()));
                flags.insert(PROCESS_LABEL.to_owned(), Value::String(String::new()));
            }
            _ => {
                return Err(Error::msg(
                    ErrorKind::InvalidInput,
                    format!("both {PROCESS_LABEL} and {MOUNT_LABEL} must be specified"),
                ));
            }
        }
        if let Some(opts) = new.mount_opts {
            flags.insert(
                MOUNT_OPTS.to_owned(),
                Value::Array(opts.into_iter().map(Value::String).collect()),
            );
        }
        let volatile = new.volatile || self.store.transient;
        if volatile {
            flags.insert(VOLATILE.to_owned(), Value::Bool(true));
        }
        let record = Container {
            id: id.clone(),
            names,
            image: new.image,
            layer: new.layer,
            metadata: new.metadata,
            created: Timestamp::now(),
            uidmap: new.uid_map,
            gidmap: new.gid_map,
            flags,
            ..Container::default()
        };
        let layer = record.layer.clone();
        let n = self.state.records.push(record);
        self.state.volatile.push(volatile);
        self.state.by_layer.insert(layer, n);
        let result = self.save_for(n).and_then(|()| {
            for (key, data) in &new.big_data {
                self.set_big_data(&id, key, data)?;
            }
            Ok(())
        });
        if let Err(err) = result {
            let _ = self.delete(&id);
            return Err(err);
        }
        self.get(&id).cloned()
    }

    /// Changes the names of a container; names used by other containers are
    /// silently taken from them. Saves even if nothing changed. Returns the
    /// new names.
    pub fn update_names(&mut self, id: &str, names: &[String], op: NamesOp) -> Result<Vec<String>> {
        let n = self.state.lookup_or_err(id)?;
        let new_names = storage_records::names_op(&self.state.container(n).names, names, op);
        let mut changed = self.state.records.take_names(n, &new_names);
        changed.push(n);
        let (mut stable, mut volatile) = (false, false);
        for m in changed {
            if self.state.volatile[m] {
                volatile = true;
            } else {
                stable = true;
            }
        }
        self.save(stable, volatile)?;
        Ok(new_names)
    }

    /// Sets the metadata of a container and saves.
    pub fn set_metadata(&mut self, id: &str, metadata: &str) -> Result<()> {
        let n = self.state.lookup_or_err(id)?;
        self.state.container_mut(n).metadata = metadata.to_owned();
        self.save_for(n)
    }

    /// Sets a flag of a container and saves.
    pub fn set_flag(&mut self, id: &str, flag: &str, value: Value) -> Result<()> {
        let n = self.state.lookup_or_err(id)?;
        self.state
            .container_mut(n)
            .flags
            .insert(flag.to_owned(), value);
        self.save_for(n)
    }

    /// Removes a flag of a container and saves.
    pub fn clear_flag(&mut self, id: &str, flag: &str) -> Result<()> {
        let n = self.state.lookup_or_err(id)?;
        self.state.container_mut(n).flags.remove(flag);
        self.save_for(n)
    }

    /// Stores a big-data item (`<dir>/<id>/<file name>`, 0600, directory
    /// 0700) and records its size and sha256; saves only if something changed.
    pub fn set_big_data(&mut self, id: &str, key: &str, data: &[u8]) -> Result<()> {
        storage_records::check_key(key, "can't set empty name for container big data item")?;
        let n = self.state.lookup_or_err(id)?;
        let full_id = self.state.container(n).id.clone();
        let size = storage_records::write_big_data(&self.store.dir, WHAT, &full_id, key, data)?;
        let digest = Digest::sha256(data).to_string();
        let changed = self.state.container_mut(n).note_big_data(key, size, digest);
        if changed {
            self.save_for(n)?;
        }
        Ok(())
    }

    /// The size of a big-data item; when it is not recorded, the item is
    /// stored again to record its size and digest (Go's behaviour).
    pub fn big_data_size(&mut self, id: &str, key: &str) -> Result<i64> {
        let n = self.state.lookup_or_err(id)?;
        if let Some(size) = self.state.container(n).big_data_sizes.get(key) {
            return Ok(*size);
        }
        self.refill(id, key, ErrorKind::SizeUnknown)?;
        self.state.big_data_size(id, key)
    }

    /// The digest of a big-data item; when it is not recorded, the item is
    /// stored again to record its size and digest (Go's behaviour).
    pub fn big_data_digest(&mut self, id: &str, key: &str) -> Result<Digest> {
        let n = self.state.lookup_or_err(id)?;
        if self.state.container(n).big_data_digests.contains_key(key) {
            return self.state.big_data_digest(id, key);
        }
        self.refill(id, key, ErrorKind::DigestUnknown)?;
        self.state.big_data_digest(id, key)
    }

    fn refill(&mut self, id: &str, key: &str, missing: ErrorKind) -> Result<()> {
        if key.is_empty() {
            return Err(Error::new(ErrorKind::InvalidBigDataName));
        }
        match self.state.big_data(id, key) {
            Ok(data) => self.set_big_data(id, key, &data),
            Err(_) => Err(Error::new(missing)),
        }
    }

    /// Deletes a container record (saved), then its directories
    /// `<graphroot>/<driver>-containers/<id>` and
    /// `<runroot>/<driver>-containers/<id>`. The layer is the caller's.
    pub fn delete(&mut self, id: &str) -> Result<()> {
        let n = self.state.lookup_or_err(id)?;
        let full_id = self.state.container(n).id.clone();
        let volatile = self.state.volatile[n];
        self.state.records.remove(n);
        self.state.volatile.remove(n);
        self.state.index_layers();
        self.save(!volatile, volatile)?;
        storage_records::remove_record_dir(&self.store.dir, &full_id)?;
        storage_records::remove_record_dir(&self.store.run_dir, &full_id)
    }

    /// Deletes every container (records and directories).
    pub fn wipe(&mut self) -> Result<()> {
        let ids: Vec<String> = self
            .state
            .containers()
            .iter()
            .map(|c| c.id.clone())
            .collect();
        for id in ids {
            if self.state.records.by_id(&id).is_some() {
                self.delete(&id)?;
            }
        }
        Ok(())
    }
}

/// Go's `hasOverlappingRanges`: no two entries of one mapping may overlap on
/// the container side or on the host side.
fn check_overlaps(maps: &[IdMap]) -> Result<()> {
    let end = |start: u32, size: u32| u64::from(start) + u64::from(size);
    for (i, a) in maps.iter().enumerate() {
        for b in &maps[..i] {
            let overlaps = |s1: u32, s2: u32| {
                u64::from(s1) < end(s2, b.size) && u64::from(s2) < end(s1, a.size)
            };
            if overlaps(a.container_id, b.container_id) || overlaps(a.host_id, b.host_id) {
                return Err(Error::msg(
                    ErrorKind::InvalidInput,
                    format!(
                        "the specified UID and/or GID mapping {}:{}:{} conflicts with other mappings: invalid mappings specified",
                        a.container_id, a.host_id, a.size
                    ),
                ));
            }
        }
    }
    Ok(())
}
