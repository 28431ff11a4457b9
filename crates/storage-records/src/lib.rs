//! The core the image and container stores share: a records file (or two) cached in memory
//! under a Go-compatible lock file, records indexed by ID and name, and the per-record
//! big-data files.
//!
//! **Use it for:** writing a record store of containers/storage's shape (`images.json`,
//! `containers.json`): the [`Cache`] of the records guarded by the store's lock file
//! (reloaded only when the lock's token shows another writer, the token rewritten before
//! each save), [`Records`] (the records with their ID and name indexes, Go's lookup by ID,
//! name or unique ID prefix, the load-time repair of duplicate names and the moving of
//! names between records), [`NamesOp`], and the file helpers every store repeats
//! ([`write_big_data`], [`remove_record_dir`], [`userdata_dir`], ID checks). **Not for:**
//! what a store's records mean (digests of images, volatile containers), its error texts
//! beyond the shared ones, or layers (the layer store has its own, richer core).
//!
//! ```
//! use storage_records::{Cache, Loaded, Records, lock_error, write_file};
//! use storage_types::Container;
//! # fn main() -> storage_types::Result<()> {
//! let tmp = tempfile::tempdir()?;
//! let json = tmp.path().join("containers.json");
//! let lock = storage_lock::LockFile::open(&tmp.path().join("containers.lock")).map_err(lock_error)?;
//! let cache: Cache<Records<Container>> = Cache::new(lock);
//! let load = || -> storage_types::Result<Loaded<Records<Container>, ()>> {
//!     let records = storage_io::load_records(&json)?;
//!     Ok(Loaded { set: Records::new(records), repair: None })
//! };
//!
//! let (mut records, _repair) = cache.write(load)?;
//! records.push(Container { id: "c1".into(), names: vec!["web".into()], ..Container::default() });
//! records.save(|set| write_file("open", &json, &storage_types::to_go_json(set.as_slice()), true))?;
//! drop(records);
//!
//! let records = cache.read(load, || Ok(()), "inconsistent")?;
//! assert_eq!(records.lookup("web").map(|n| records.as_slice()[n].id.as_str()), Some("c1"));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod cache;
mod files;
mod index;

pub use cache::{Cache, Exclusive, Loaded, Shared};
pub use files::{
    big_data_path, check_id, check_key, lock_error, mkdir, new_id, remove_record_dir,
    size_or_length, userdata_dir, write_big_data, write_file,
};
pub use index::{BigDataFields, NamesOp, Record, Records, names_op, repair_duplicate_names};
