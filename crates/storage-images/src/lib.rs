//! The image store of containers/storage: `images.json` under `images.lock`.
//!
//! **Use it for:** the image records of one store directory and their data items. **Not for:**
//! layers (IDs are opaque strings here) or cross-store rules: those belong to
//! `containers_storage::Store`.
//!
//! This crate mirrors Go's `images.go`. An [`ImageStore`] manages one
//! `<root>/<driver>-images/` directory:
//!
//! * `images.json` — every image record (see [`storage_types::Image`]), written
//!   atomically (temp file + `fdatasync` + rename, mode 0600);
//! * `images.lock` — the fcntl lock file whose 64-byte token is rewritten
//!   **before** every save so other processes (Go or Rust) notice the change;
//! * `<id>/<item>` — image big data, one file per item, named with Go's
//!   big-data file-name encoding.
//!
//! Access goes through guards so a caller can hold several store locks in Go's
//! order: [`ImageStore::read`] takes the lock shared and yields an
//! [`ImagesRead`]; [`ImageStore::write`] takes it exclusively and yields an
//! [`ImagesWrite`]. Both dereference to [`ImageSet`], the read API (lookup by ID,
//! name or unique ID prefix, by digest, big data…). The in-memory copy is
//! reloaded only when the lock's token shows that somebody else wrote.
//!
//! Limits: the store knows nothing about layers — the top layer and mapped
//! layers are opaque strings resolved by the caller (the `Store`). Read-only
//! (additional) stores are opened with read-only locks and refuse every write
//! with [`ErrorKind::StoreIsReadOnly`]. With several different manifest digests
//! Go picks the automatic `digest` in random map order; this crate uses key
//! order. Caller-supplied IDs must be a single path component (Go accepts any
//! string, including ones that escape the store directory).
//!
//! Images of a read-only store are copied ("pulled up") into the read-write
//! store by passing [`ImageSet::pull_up_options`] to [`ImagesWrite::create`].
//!
//! ```
//! use storage_images::{ImageStore, NewImage};
//! # fn main() -> storage_types::Result<()> {
//! let tmp = tempfile::tempdir()?;
//! let store = ImageStore::open(&tmp.path().join("vfs-images"), &tmp.path().join("run/vfs-images"))?;
//! let mut images = store.write()?;
//! let image = images.create(NewImage { names: vec!["busybox:latest".into()], ..NewImage::default() })?;
//! images.set_big_data(&image.id, "config.json", b"{}", None)?;
//! drop(images);
//!
//! let images = store.read()?;
//! assert_eq!(images.get("busybox:latest")?.id, image.id);
//! assert_eq!(images.big_data(&image.id, "config.json")?, b"{}");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use storage_lock::LockFile;
use storage_records::{Cache, Exclusive, Loaded, Record, Records, Shared, lock_error};
use storage_types::{Digest, Error, ErrorKind, Image, Result, Timestamp, go_quote};

pub use storage_records::NamesOp;

/// File name of the records file.
pub const IMAGES_JSON: &str = "images.json";
/// File name of the lock file.
pub const IMAGES_LOCK: &str = "images.lock";

/// What the shared messages call an image.
const WHAT: &str = "image";

/// Go's `ErrDuplicateImageNames` text (a read-only store assigns one name twice).
const DUPLICATE_IMAGE_NAMES: &str =
    "read-only image store assigns the same name to multiple images";

/// What to create with [`ImagesWrite::create`].
#[derive(Debug, Clone, Default)]
pub struct NewImage {
    /// The ID; `None` (or empty) generates a fresh, unused one.
    pub id: Option<String>,
    /// Names (de-duplicated; each must be free in this store).
    pub names: Vec<String>,
    /// The top layer ID (already resolved by the caller), or `""` for none.
    pub layer: String,
    /// Opaque metadata.
    pub metadata: String,
    /// Creation time; `None` means now.
    pub created: Option<Timestamp>,
    /// "The" digest of the image (validated like go-digest), if any.
    pub digest: Option<String>,
    /// Initial names history (used when pulling up a read-only image).
    pub names_history: Vec<String>,
    /// Initial flags.
    pub flags: BTreeMap<String, serde_json::Value>,
    /// Initial big-data items, stored after the record.
    pub big_data: Vec<BigDataItem>,
}

/// A big-data item for [`NewImage::big_data`].
#[derive(Debug, Clone)]
pub struct BigDataItem {
    /// The key (any non-empty string).
    pub key: String,
    /// The bytes.
    pub data: Vec<u8>,
    /// The digest to record; `None` records the sha256 of the bytes.
    pub digest: Option<Digest>,
}

/// The image store of one `<root>/<driver>-images` directory.
pub struct ImageStore {
    dir: PathBuf,
    run_dir: PathBuf,
    read_only: bool,
    cache: Cache<ImageSet>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("dir", &self.dir)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl ImageStore {
    /// Opens (creating `dir` 0700 and the lock file if needed) the read-write
    /// image store in `dir`, loads it under the exclusive lock and repairs
    /// duplicate names. `run_dir` (`<runroot>/<driver>-images`) is where
    /// [`ImageStore::image_run_dir`] puts per-image run-time directories.
    pub fn open(dir: &Path, run_dir: &Path) -> Result<ImageStore> {
        storage_io::mkdir_all(dir, 0o700).map_err(|e| Error::io("mkdir", dir, e))?;
        let lock_path = dir.join(IMAGES_LOCK);
        let lock = LockFile::open(&lock_path).map_err(lock_error)?;
        let store = ImageStore {
            dir: dir.to_owned(),
            run_dir: run_dir.to_owned(),
            read_only: false,
            cache: Cache::new(lock),
        };
        drop(store.write()?);
        Ok(store)
    }

    /// Opens a read-only (additional) image store: its lock is opened read-only
    /// and only ever taken shared; nothing is ever written. Returns `Ok(None)`
    /// when the lock file cannot be opened because the file system is read-only
    /// (`EROFS`): Go skips such stores.
    pub fn open_read_only(dir: &Path, run_dir: &Path) -> Result<Option<ImageStore>> {
        let lock_path = dir.join(IMAGES_LOCK);
        let lock = LockFile::open_read_only(&lock_path).map_err(lock_error)?;
        // The lock file is opened (O_RDONLY|O_CREAT) when first locked.
        match lock.rlock() {
            Ok(guard) => drop(guard),
            Err(e) if lock_error_errno(&e) == Some(libc_erofs()) => return Ok(None),
            Err(e) => return Err(lock_error(e)),
        }
        let store = ImageStore {
            dir: dir.to_owned(),
            run_dir: run_dir.to_owned(),
            read_only: true,
            cache: Cache::new(lock),
        };
        drop(store.read()?);
        Ok(Some(store))
    }

    /// The store directory (`<root>/<driver>-images`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `images.json`.
    pub fn json_path(&self) -> PathBuf {
        self.dir.join(IMAGES_JSON)
    }

    /// Whether this is a read-only store.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// `<dir>/<id>/userdata`, created (0700) on demand. Like Go 1.60 the ID is
    /// used verbatim (not resolved); IDs that are not a single path component
    /// are refused.
    pub fn image_dir(&self, id: &str) -> Result<PathBuf> {
        storage_records::userdata_dir(&self.dir, WHAT, id)
    }

    /// `<run_dir>/<id>/userdata`, created (0700) on demand (ID used verbatim).
    pub fn image_run_dir(&self, id: &str) -> Result<PathBuf> {
        storage_records::userdata_dir(&self.run_dir, WHAT, id)
    }

    /// Go's refusal of a write to a read-only store, for the action Go names
    /// (`"save data items associated with images"`, `"change image name
    /// assignments"`, `"create new images"`, …): `not allowed to <action> at
    /// "<dir>/images.json": called a write method on a read-only store`.
    pub fn read_only_error(&self, action: &str) -> Error {
        Error::new(ErrorKind::StoreIsReadOnly).context(format!(
            "not allowed to {action} at {}",
            go_quote(&self.json_path().to_string_lossy())
        ))
    }

    /// Takes the lock shared and returns the (fresh) records. If another
    /// process changed the store since the last look it is reloaded; when the
    /// reload needs a repair (duplicate names) a read-write store briefly takes
    /// the exclusive lock to save it, a read-only store fails.
    pub fn read(&self) -> Result<ImagesRead<'_>> {
        self.cache.read(
            || load(&self.dir, self.read_only),
            || {
                if self.read_only {
                    return Err(Error::msg(ErrorKind::Corrupt, DUPLICATE_IMAGE_NAMES));
                }
                // Repair under the exclusive lock, then look again.
                drop(self.write()?);
                Ok(())
            },
            "image store is inconsistent and the current caller does not hold a write lock",
        )
    }

    /// Takes the lock exclusively and returns the (fresh) records for
    /// modification. Read-only stores refuse with
    /// [`ErrorKind::StoreIsReadOnly`].
    pub fn write(&self) -> Result<ImagesWrite<'_>> {
        if self.read_only {
            return Err(self.read_only_error("modify the image store"));
        }
        let (state, repair) = self.cache.write(|| load(&self.dir, false))?;
        let mut guard = ImagesWrite { store: self, state };
        if repair.is_some() {
            guard.save()?;
        }
        Ok(guard)
    }
}

/// The records of an image store and their indexes: the read API, reached
/// through [`ImagesRead`] or [`ImagesWrite`].
#[derive(Default)]
pub struct ImageSet {
    dir: PathBuf,
    records: Records<Image>,
}

fn load(dir: &Path, read_only: bool) -> Result<Loaded<ImageSet, ()>> {
    let path = dir.join(IMAGES_JSON);
    // Absent, empty or `null` = no images; errors name the file and position.
    let mut images: Vec<Image> = storage_io::load_records(&path)?;
    // Later records win duplicate names (Go's load-time repair).
    let repaired = !storage_records::repair_duplicate_names(&mut images).is_empty();
    for image in &mut images {
        image.recompute_digests().map_err(|e| {
            Error::wrap(ErrorKind::Corrupt, e).context(format!(
                "loading {}: computing digests for image with ID {} ({})",
                path.display(),
                go_quote(&image.id),
                go_list(&image.names)
            ))
        })?;
        image.read_only = read_only;
    }
    let set = ImageSet {
        dir: dir.to_owned(),
        records: Records::new(images),
    };
    Ok(Loaded {
        set,
        repair: repaired.then_some(()),
    })
}

impl ImageSet {
    fn lookup_or_err(&self, id: &str) -> Result<usize> {
        self.records.lookup(id).ok_or_else(|| unknown_image(id))
    }

    fn image(&self, n: usize) -> &Image {
        &self.records.as_slice()[n]
    }

    fn image_mut(&mut self, n: usize) -> &mut Image {
        &mut self.records.items_mut()[n]
    }
}

impl ImageSet {
    /// All image records, in file order.
    pub fn images(&self) -> &[Image] {
        self.records.as_slice()
    }

    /// The image with this ID, name or unique ID prefix.
    pub fn get(&self, id: &str) -> Result<&Image> {
        Ok(self.image(self.lookup_or_err(id)?))
    }

    /// Like [`ImageSet::get`], but `None` when not found.
    pub fn lookup_image(&self, id: &str) -> Option<&Image> {
        self.records.lookup(id).map(|n| self.image(n))
    }

    /// Whether an image with this ID, name or unique ID prefix exists.
    pub fn exists(&self, id: &str) -> bool {
        self.records.lookup(id).is_some()
    }

    /// The derived digest list of an image: its `digest`, then the digests of
    /// its manifest big-data items, without duplicates.
    pub fn digests(&self, id: &str) -> Result<&[Digest]> {
        Ok(&self.image(self.lookup_or_err(id)?).digests)
    }

    /// Every image whose derived digest list contains `digest`.
    pub fn by_digest(&self, digest: &Digest) -> Vec<&Image> {
        self.images()
            .iter()
            .filter(|image| image.digests.contains(digest))
            .collect()
    }

    /// The keys of an image's big-data items, in insertion order.
    pub fn big_data_names(&self, id: &str) -> Result<Vec<String>> {
        Ok(self.image(self.lookup_or_err(id)?).big_data_names.clone())
    }

    /// The bytes of a big-data item.
    pub fn big_data(&self, id: &str, key: &str) -> Result<Vec<u8>> {
        storage_records::check_key(key, "can't retrieve image big data value for empty name")?;
        let n = self.lookup_or_err(id)?;
        let path = storage_records::big_data_path(&self.dir, WHAT, &self.image(n).id, key)?;
        match std::fs::read(&path) {
            Ok(data) => Ok(data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::msg(
                ErrorKind::Io,
                format!(
                    "locating item named {} for image with ID {} (consider removing the image to resolve the issue): file does not exist",
                    go_quote(key),
                    go_quote(id)
                ),
            )),
            Err(e) => Err(Error::io("open", &path, e)),
        }
    }

    /// The size of a big-data item: the recorded size, else the file length.
    pub fn big_data_size(&self, id: &str, key: &str) -> Result<i64> {
        storage_records::check_key(key, "can't retrieve size of image big data with empty name")?;
        let n = self.lookup_or_err(id)?;
        let recorded = self.image(n).big_data_sizes.get(key).copied();
        storage_records::size_or_length(recorded, || self.big_data(id, key))
    }

    /// The recorded digest of a big-data item.
    pub fn big_data_digest(&self, id: &str, key: &str) -> Result<Digest> {
        storage_records::check_key(
            key,
            "can't retrieve digest of image big data value with empty name",
        )?;
        let n = self.lookup_or_err(id)?;
        match self.image(n).big_data_digests.get(key) {
            Some(text) => text.parse(),
            None => Err(Error::new(ErrorKind::DigestUnknown)),
        }
    }

    /// Everything needed to copy ("pull up") an image of this (read-only)
    /// store into a read-write store with [`ImagesWrite::create`]: ID, names,
    /// top layer, metadata, created time, digest, names history, flags and
    /// every big-data item with its recorded digest.
    ///
    /// Go's `CreateImage` pull-up creates the copy with the caller's names and
    /// adds the read-only image's names afterwards with
    /// [`ImagesWrite::update_names`] (so they take the names from other images
    /// instead of failing); the rename pull-up creates it with these names.
    pub fn pull_up_options(&self, id: &str) -> Result<NewImage> {
        let n = self.lookup_or_err(id)?;
        let image = self.image(n);
        let mut big_data = Vec::with_capacity(image.big_data_names.len());
        for key in &image.big_data_names {
            let data = self.big_data(&image.id, key)?;
            let digest = image.big_data_digests.get(key).and_then(|d| d.parse().ok());
            big_data.push(BigDataItem {
                key: key.clone(),
                data,
                digest,
            });
        }
        Ok(NewImage {
            id: Some(image.id.clone()),
            names: image.names.clone(),
            layer: image.layer.clone(),
            metadata: image.metadata.clone(),
            created: Some(image.created),
            digest: Some(image.digest.clone()),
            names_history: image.names_history.clone(),
            flags: image.flags.clone(),
            big_data,
        })
    }
}

/// Shared access to an image store (the lock is held shared until dropped);
/// dereferences to [`ImageSet`].
pub type ImagesRead<'a> = Shared<'a, ImageSet>;

/// Exclusive access to a read-write image store (the lock is held
/// exclusively until dropped). Every modification is saved before the method
/// returns, the lock token being rewritten first.
pub struct ImagesWrite<'a> {
    state: Exclusive<'a, ImageSet>,
    store: &'a ImageStore,
}

impl Deref for ImagesWrite<'_> {
    type Target = ImageSet;
    fn deref(&self) -> &ImageSet {
        &self.state
    }
}

impl ImagesWrite<'_> {
    /// Writes the token, then `images.json`.
    fn save(&mut self) -> Result<()> {
        let dir = &self.store.dir;
        storage_records::mkdir(dir)?;
        let path = self.store.json_path();
        self.state.save(|set| {
            let data = storage_types::to_go_json(set.images());
            storage_records::write_file("write", &path, &data, true)
        })
    }

    /// Creates an image record (and its initial big data) and saves it.
    ///
    /// Errors: [`ErrorKind::DuplicateId`], [`ErrorKind::DuplicateName`]
    /// (`image name "X" is already associated with image "ID": that name is
    /// already in use`), [`ErrorKind::InvalidInput`] for an invalid digest
    /// (`validating digests for new image: validating image digest "bogus":
    /// invalid checksum digest format`).
    pub fn create(&mut self, new: NewImage) -> Result<Image> {
        let records = &self.state.records;
        let id = storage_records::new_id(WHAT, new.id, |id| records.by_id(id).is_some())?;
        let names = storage_types::dedup_names(&new.names);
        for name in &names {
            if let Some(n) = self.state.records.by_name(name) {
                return Err(Error::new(ErrorKind::DuplicateName).context(format!(
                    "image name {} is already associated with image {}",
                    go_quote(name),
                    go_quote(&self.state.image(n).id)
                )));
            }
        }
        let mut image = Image {
            id: id.clone(),
            digest: new.digest.clone().unwrap_or_default(),
            names,
            names_history: new.names_history.clone(),
            layer: new.layer.clone(),
            metadata: new.metadata.clone(),
            created: new.created.unwrap_or_else(Timestamp::now),
            flags: new.flags.clone(),
            ..Image::default()
        };
        image
            .recompute_digests()
            .map_err(|e| e.context("validating digests for new image"))?;
        // The ID and the names are new (checked above): index the one record, not all.
        self.state.records.push(image);
        let result = self.create_rest(&id, new.big_data);
        if let Err(err) = result {
            // The in-memory state knows the record: remove it the regular way.
            let _ = self.delete(&id);
            return Err(err);
        }
        self.get(&id).cloned()
    }

    fn create_rest(&mut self, id: &str, items: Vec<BigDataItem>) -> Result<()> {
        for item in items {
            let digest = item.digest.unwrap_or_else(|| Digest::sha256(&item.data));
            self.store_big_data(id, &item.key, &item.data, digest, false)?;
        }
        self.save()
    }

    /// Changes the names of an image: names taken by other images are
    /// silently removed from them, every resulting name is pushed to the front
    /// of `names-history`, and the record is saved even if nothing changed.
    /// Returns the new names.
    pub fn update_names(&mut self, id: &str, names: &[String], op: NamesOp) -> Result<Vec<String>> {
        let n = self.state.lookup_or_err(id)?;
        let new_names = storage_records::names_op(&self.state.image(n).names, names, op);
        self.state.records.take_names(n, &new_names);
        self.state.image_mut(n).add_names_to_history(&new_names);
        self.save()?;
        Ok(new_names)
    }

    /// Sets the metadata of an image and saves.
    pub fn set_metadata(&mut self, id: &str, metadata: &str) -> Result<()> {
        let n = self.state.lookup_or_err(id)?;
        self.state.image_mut(n).metadata = metadata.to_owned();
        self.save()
    }

    /// Sets a flag of an image and saves.
    pub fn set_flag(&mut self, id: &str, flag: &str, value: serde_json::Value) -> Result<()> {
        let n = self.state.lookup_or_err(id)?;
        self.state.image_mut(n).flags.insert(flag.to_owned(), value);
        self.save()
    }

    /// Removes a flag of an image and saves.
    pub fn clear_flag(&mut self, id: &str, flag: &str) -> Result<()> {
        let n = self.state.lookup_or_err(id)?;
        self.state.image_mut(n).flags.remove(flag);
        self.save()
    }

    /// Records an ID-mapped copy of the image's top layer and saves.
    pub fn add_mapped_layer(&mut self, id: &str, layer: &str) -> Result<()> {
        let n = self.state.lookup_or_err(id)?;
        self.state.image_mut(n).mapped_layers.push(layer.to_owned());
        self.save()
    }

    /// Forgets an ID-mapped copy of the top layer (saves only if it was listed).
    pub fn remove_mapped_layer(&mut self, id: &str, layer: &str) -> Result<()> {
        let n = self.state.lookup_or_err(id)?;
        let list = &mut self.state.image_mut(n).mapped_layers;
        let before = list.len();
        list.retain(|x| x != layer);
        if list.len() == before {
            return Ok(());
        }
        self.save()
    }

    /// Stores a big-data item (`<dir>/<id>/<file name>`, 0600, directory 0700)
    /// and records its size and digest; saves only if something changed.
    ///
    /// Keys starting with `manifest` need `manifest_digest` (Go's digest
    /// callback; the CLI passes the sha256 of the bytes), else the error is
    /// [`ErrorKind::DigestUnknown`]; their digests feed the image's digest
    /// list and fill in its `digest` if it had none. Other keys always record
    /// the sha256 of the bytes.
    pub fn set_big_data(
        &mut self,
        id: &str,
        key: &str,
        data: &[u8],
        manifest_digest: Option<Digest>,
    ) -> Result<()> {
        storage_records::check_key(key, "can't set empty name for image big data item")?;
        let n = self.state.lookup_or_err(id)?;
        let digest = if is_manifest_key(key) {
            manifest_digest.ok_or_else(|| {
                Error::new(ErrorKind::DigestUnknown)
                    .context("digesting manifest: no manifest digest callback provided")
            })?
        } else {
            Digest::sha256(data)
        };
        let full_id = self.state.image(n).id.clone();
        self.store_big_data(&full_id, key, data, digest, true)
    }

    fn store_big_data(
        &mut self,
        id: &str,
        key: &str,
        data: &[u8],
        digest: Digest,
        save: bool,
    ) -> Result<()> {
        let n = self.state.lookup_or_err(id)?;
        let size = storage_records::write_big_data(&self.store.dir, WHAT, id, key, data)?;
        let image = self.state.image_mut(n);
        let changed = image.note_big_data(key, size, digest.to_string());
        image.recompute_digests().map_err(|e| {
            e.context(format!(
                "loading recomputed image digest information for {id}"
            ))
        })?;
        if save && changed {
            self.save()?;
        }
        Ok(())
    }

    /// Deletes an image record (saved), then its data directory `<dir>/<id>`.
    pub fn delete(&mut self, id: &str) -> Result<()> {
        let n = self.state.lookup_or_err(id)?;
        let full_id = self.state.image(n).id.clone();
        self.state.records.remove(n);
        self.save()?;
        storage_records::remove_record_dir(&self.store.dir, &full_id)
    }

    /// Deletes every image (records and data directories).
    pub fn wipe(&mut self) -> Result<()> {
        let ids: Vec<String> = self.state.images().iter().map(|i| i.id.clone()).collect();
        for id in ids {
            if self.state.records.by_id(&id).is_some() {
                self.delete(&id)?;
            }
        }
        Ok(())
    }
}

pub use storage_types::is_manifest_key;

fn unknown_image(id: &str) -> Error {
    Error::new(ErrorKind::ImageUnknown).context(format!("locating image with ID {}", go_quote(id)))
}

/// Go's `%v` formatting of a string slice: `[a b]`.
fn go_list(list: &[String]) -> String {
    format!("[{}]", list.join(" "))
}

fn lock_error_errno(err: &storage_lock::LockError) -> Option<i32> {
    err.os_error().and_then(std::io::Error::raw_os_error)
}

const fn libc_erofs() -> i32 {
    30
}
