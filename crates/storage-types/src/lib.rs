//! IDs, digests, ID maps, errors and the Go-compatible JSON records of
//! containers/storage.
//!
//! **Use it for:** the IDs, digests, ID maps, errors and records every crate shares, and
//! reading or writing Go's record JSON. **Not for:** anything that touches the file system,
//! locks or store logic: that is `storage_layers`, `storage_images`, `storage_containers` and
//! `containers_storage`.
//!
//! This crate holds the vocabulary every other crate of the project shares:
//!
//! * [`Error`] / [`ErrorKind`] / [`Result`]: the error type, with Go's wording
//!   for the library's sentinel errors and for OS errors ([`Error::io`]);
//! * [`generate_id`], [`Digest`] (validated like go-digest), [`Sha256Digester`],
//!   [`IdMap`] with [`to_host`]/[`to_container`]/[`parse_id_maps`], [`Timestamp`]
//!   (Go `time.Time` JSON semantics, offsets preserved);
//! * the records [`Layer`], [`Image`], [`Container`], [`MountPoint`], which read
//!   and write exactly the JSON Go writes (key order, omitempty, escaping) via
//!   [`to_go_json`], and keep unknown keys in `extra`;
//! * [`big_data_file_name`] (refuses the empty key, `.`, `..` and keys whose encoding
//!   holds a `/`), lookup ([`find`], [`IdIndex`]) and name helpers.
//!
//! Nothing here panics on input: malformed JSON, digests, ID maps (ranges running past
//! `u32::MAX` map only what fits) and timestamps are errors or saturate.
//!
//! Limits: Go's case-insensitive key matching when decoding is not reproduced
//! (a key spelled `"ID"` is kept as an unknown key); numbers inside `flags` go
//! through `f64`/`i64` like Go's `interface{}` values but may print differently
//! for exotic values (e.g. `1e21`); map iteration for the derived image digest
//! list is in key order (Go's is random).
//!
//! ```
//! use storage_types::{Layer, Timestamp, to_go_json, parse_records, Error, ErrorKind};
//!
//! let json = br#"[{"id":"abc","names":["a<b"],"created":"2024-01-01T00:00:00+02:00","future-key":7}]"#;
//! let layers: Vec<Layer> = parse_records(json, "layers.json".as_ref()).unwrap();
//! assert_eq!(layers[0].names, ["a<b"]);
//! assert_eq!(layers[0].created.offset_seconds(), 7200);
//! // Go's encoding, unknown keys kept:
//! assert_eq!(
//!     to_go_json(&layers),
//!     br#"[{"id":"abc","names":["a\u003cb"],"created":"2024-01-01T00:00:00+02:00","future-key":7}]"#
//! );
//! let e = Error::new(ErrorKind::LayerUnknown).context("deleting layer");
//! assert_eq!(e.to_string(), "deleting layer: layer not known");
//! assert!(Timestamp::default().is_zero());
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod bigdata;
mod digest;
mod error;
mod id;
mod idmap;
mod json;
mod lookup;
mod records;
mod time;

pub use bigdata::big_data_file_name;
pub use digest::{Digest, Sha256Digester};
pub use error::{Error, ErrorKind, Result};
pub use id::{generate_id, generate_unique_id};
pub use idmap::{IdMap, parse_id_maps, root_pair, to_container, to_host};
pub use json::{GoFormatter, parse_records, to_go_json, to_go_json_line, try_to_go_json};
pub use lookup::{
    FastMap, FastSet, IdIndex, Named, PrefixMatch, dedup_names, find, find_container,
    repair_duplicate_names, take_names_from_others, unique_prefix,
};
pub use records::{Container, Image, Layer, MountPoint, is_manifest_key, parse_images};
/// Go's text for an I/O error (`no such file or directory`; from [`storage_gocompat`]).
pub use storage_gocompat::syscall::io_error_text as go_io_error_text;
pub use storage_gocompat::validate::{is_full_id, is_path_component};
pub use time::Timestamp;

/// Go's `strconv.Quote` (the `%q` verb), the quoting of names in Go's error texts
/// (from [`storage_gocompat`], the one home of Go's behaviours).
pub use storage_gocompat::strconv::quote as go_quote;
