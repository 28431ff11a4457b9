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
pub use error::{Error, ErrorKind, Result, go_io_error_text};
pub use id::{generate_id, generate_unique_id, is_full_id};
pub use idmap::{IdMap, parse_id_maps, root_pair, to_container, to_host};
pub use json::{GoFormatter, parse_records, to_go_json, to_go_json_line, try_to_go_json};
pub use lookup::{
    FastMap, FastSet, IdIndex, Named, PrefixMatch, dedup_names, find, find_container,
    repair_duplicate_names, take_names_from_others, unique_prefix,
};
pub use records::{Container, Image, Layer, MountPoint, is_manifest_key, parse_images};
pub use time::Timestamp;

/// Quotes a string like Go's `%q` / `strconv.Quote` (used in error messages):
/// `"` and `\` escaped, common control characters as `\n` etc., other
/// non-printable characters as `\x`/`\u`/`\U` escapes, printable Unicode kept.
pub fn go_quote(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    // Fast path (nearly every path): printable ASCII without quotes or backslashes.
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(s);
        out.push('"');
        return out;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' || c == '\u{feff}' => {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn go_quote_matches_strconv_quote() {
        assert_eq!(super::go_quote("bogus"), "\"bogus\"");
        assert_eq!(
            super::go_quote("a\"b\\c\n\u{1}é"),
            "\"a\\\"b\\\\c\\n\\x01é\""
        );
        assert_eq!(super::go_quote("\u{85}"), "\"\\u0085\"");
    }
}
