//! The JSON records of `layers.json`, `images.json`, `containers.json` and
//! `mountpoints.json`.
//!
//! Field order, omission rules and encodings match what Go writes, so that
//! [`crate::to_go_json`] of a loaded file reproduces it byte for byte. Keys this
//! version does not know are kept in `extra` and written after the known keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::idmap::IdMap;
use crate::time::Timestamp;

/// Go's decoder leaves a field untouched on JSON `null`; do the same.
fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

/// A layer record (`layers.json`, `volatile-layers.json`).
///
/// Digest fields are kept as plain strings (empty = absent) because Go does not
/// validate them when loading; use [`Layer::diff_digest`] & co. to parse them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Layer ID.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Names, unique among the layers of a store.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub names: Vec<String>,
    /// Parent layer ID (empty: none).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub parent: String,
    /// Opaque caller data.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub metadata: String,
    /// SELinux mount label (`mountlabel`).
    #[serde(
        rename = "mountlabel",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mount_label: String,
    /// Creation time; always written (zero time when unknown).
    #[serde(default)]
    pub created: Timestamp,
    /// `compressed-diff-digest` (empty: absent).
    #[serde(
        rename = "compressed-diff-digest",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub compressed_diff_digest: String,
    /// `compressed-size`.
    #[serde(
        rename = "compressed-size",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero_i64"
    )]
    pub compressed_size: i64,
    /// `diff-digest` (DiffID; empty: absent).
    #[serde(
        rename = "diff-digest",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub diff_digest: String,
    /// `toc-digest` (empty: absent).
    #[serde(
        rename = "toc-digest",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub toc_digest: String,
    /// `diff-size` (-1: unknown, with only a TOC digest).
    #[serde(
        rename = "diff-size",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero_i64"
    )]
    pub diff_size: i64,
    /// Compression of the applied blob: 0 none, 1 bzip2, 2 gzip, 3 xz, 4 zstd.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero_i32"
    )]
    pub compression: i32,
    /// Container-side UIDs seen in the applied tar (sorted, unique).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub uidset: Vec<u32>,
    /// Container-side GIDs seen in the applied tar (sorted, unique).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub gidset: Vec<u32>,
    /// Free-form flags (`"incomplete": true` is store-reserved).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub flags: BTreeMap<String, Value>,
    /// UID mapping of the on-disk content.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub uidmap: Vec<IdMap>,
    /// GID mapping of the on-disk content.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub gidmap: Vec<IdMap>,
    /// Keys of the layer's big-data items.
    #[serde(
        rename = "big-data-names",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub big_data_names: Vec<String>,
    /// Keys this version does not know; written back after the known ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Loaded from a read-only store (never serialized).
    #[serde(skip)]
    pub read_only: bool,
}

fn parse_opt_digest(s: &str) -> Option<Digest> {
    if s.is_empty() { None } else { s.parse().ok() }
}

impl Layer {
    /// `compressed-diff-digest`, if present and valid.
    pub fn compressed_diff_digest(&self) -> Option<Digest> {
        parse_opt_digest(&self.compressed_diff_digest)
    }

    /// `diff-digest`, if present and valid.
    pub fn diff_digest(&self) -> Option<Digest> {
        parse_opt_digest(&self.diff_digest)
    }

    /// `toc-digest`, if present and valid.
    pub fn toc_digest(&self) -> Option<Digest> {
        parse_opt_digest(&self.toc_digest)
    }

    /// Go's `Size()` bookkeeping: `diff-size` when `diff-digest` or `toc-digest`
    /// is set, else `None` (unknown).
    pub fn known_size(&self) -> Option<i64> {
        (!self.diff_digest.is_empty() || !self.toc_digest.is_empty()).then_some(self.diff_size)
    }

    /// Whether the store-reserved flag `"incomplete": true` is set.
    pub fn is_incomplete(&self) -> bool {
        self.flags
            .get("incomplete")
            .is_some_and(|v| v == &Value::Bool(true))
    }
}

/// An entry of `mountpoints.json`; all keys always written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MountPoint {
    /// Layer ID (or anything that resolves to a layer).
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Where the layer is mounted.
    #[serde(default, deserialize_with = "null_default")]
    pub path: String,
    /// Mount count.
    #[serde(default, deserialize_with = "null_default")]
    pub count: i32,
    /// Keys this version does not know; written back after the known ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An image record (`images.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// Image ID.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// "The" digest (validated by [`Image::recompute_digests`]; empty: none).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub digest: String,
    /// Names, unique among the images of a store.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub names: Vec<String>,
    /// Former names, newest first.
    #[serde(
        rename = "names-history",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub names_history: Vec<String>,
    /// Top layer ID (empty: layer-less image).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub layer: String,
    /// ID-mapped copies of the top layer.
    #[serde(
        rename = "mapped-layers",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mapped_layers: Vec<String>,
    /// Opaque caller data.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub metadata: String,
    /// Big-data keys in insertion order.
    #[serde(
        rename = "big-data-names",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub big_data_names: Vec<String>,
    /// Byte length of each big-data item.
    #[serde(
        rename = "big-data-sizes",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub big_data_sizes: BTreeMap<String, i64>,
    /// Digest of each big-data item (manifest keys validated on load).
    #[serde(
        rename = "big-data-digests",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub big_data_digests: BTreeMap<String, String>,
    /// Creation time; always written.
    #[serde(default)]
    pub created: Timestamp,
    /// Free-form flags.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub flags: BTreeMap<String, Value>,
    /// Keys this version does not know; written back after the known ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Derived digest list, filled by [`Image::recompute_digests`]; never serialized.
    #[serde(skip)]
    pub digests: Vec<Digest>,
    /// Loaded from a read-only store (never serialized).
    #[serde(skip)]
    pub read_only: bool,
}

/// Whether a big-data key is a manifest key (starts with the bytes `manifest`).
pub fn is_manifest_key(key: &str) -> bool {
    key.as_bytes().starts_with(b"manifest")
}

impl Image {
    /// Go's `recomputeDigests`: `digest` (must validate), then the digests
    /// of manifest-key big-data items (each must validate; iterated in key order),
    /// de-duplicated. Fills `digests`, and `digest` from the list when empty.
    /// Errors read like Go's (`validating image digest "bogus": invalid checksum
    /// digest format`); a failure on load makes Go reject the whole images.json.
    pub fn recompute_digests(&mut self) -> Result<()> {
        let mut list: Vec<Digest> = Vec::new();
        if !self.digest.is_empty() {
            let d: Digest = self.digest.parse().map_err(|e: Error| {
                e.context(format!(
                    "validating image digest {}",
                    crate::go_quote(&self.digest)
                ))
            })?;
            list.push(d);
        }
        for (key, value) in &self.big_data_digests {
            if !is_manifest_key(key) {
                continue;
            }
            let d: Digest = value.parse().map_err(|e: Error| {
                e.context(format!(
                    "validating digest {} for big data item {}",
                    crate::go_quote(value),
                    crate::go_quote(key)
                ))
            })?;
            if !list.contains(&d) {
                list.push(d);
            }
        }
        if let Some(first) = list.first().filter(|_| self.digest.is_empty()) {
            self.digest = first.to_string();
        }
        self.digests = list;
        Ok(())
    }

    /// Validates the digests without changing the record.
    pub fn validate_digests(&self) -> Result<()> {
        self.clone().recompute_digests()
    }

    /// Pushes each of `names` to the front of `names-history` (so the last one
    /// ends up first), de-duplicating the history, like Go's `addNameToHistory`.
    pub fn add_names_to_history(&mut self, names: &[String]) {
        for name in names {
            let mut h = Vec::with_capacity(self.names_history.len() + 1);
            h.push(name.clone());
            h.extend(self.names_history.iter().cloned());
            self.names_history = crate::lookup::dedup_names(&h);
        }
    }
}

/// A container record (`containers.json`, `volatile-containers.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Container {
    /// Container ID.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Names, unique among containers.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub names: Vec<String>,
    /// Image ID (always written, may be empty).
    #[serde(default, deserialize_with = "null_default")]
    pub image: String,
    /// Read-write layer ID (always written).
    #[serde(default, deserialize_with = "null_default")]
    pub layer: String,
    /// Opaque caller data.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub metadata: String,
    /// Big-data keys in insertion order.
    #[serde(
        rename = "big-data-names",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub big_data_names: Vec<String>,
    /// Byte length of each big-data item.
    #[serde(
        rename = "big-data-sizes",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub big_data_sizes: BTreeMap<String, i64>,
    /// sha256 of each big-data item.
    #[serde(
        rename = "big-data-digests",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub big_data_digests: BTreeMap<String, String>,
    /// Creation time; always written.
    #[serde(default)]
    pub created: Timestamp,
    /// Requested UID mapping.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub uidmap: Vec<IdMap>,
    /// Requested GID mapping.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub gidmap: Vec<IdMap>,
    /// Flags (`MountLabel`, `ProcessLabel`, `MountOpts`, `Volatile`).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub flags: BTreeMap<String, Value>,
    /// Keys this version does not know; written back after the known ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Container {
    /// The `MountLabel` flag (empty when absent or not a string).
    pub fn mount_label(&self) -> &str {
        self.flags
            .get("MountLabel")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The `ProcessLabel` flag (empty when absent or not a string).
    pub fn process_label(&self) -> &str {
        self.flags
            .get("ProcessLabel")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The `MountOpts` flag (string elements only).
    pub fn mount_opts(&self) -> Vec<String> {
        self.flags
            .get("MountOpts")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the `Volatile` flag is `true`.
    pub fn is_volatile(&self) -> bool {
        self.flags
            .get("Volatile")
            .is_some_and(|v| v == &Value::Bool(true))
    }
}

/// Loads `images.json` content and recomputes every image's digests; any
/// validation failure fails the whole load, as in Go.
pub fn parse_images(data: &[u8], path: &std::path::Path) -> Result<Vec<Image>> {
    let mut images: Vec<Image> = crate::json::parse_records(data, path)?;
    for img in &mut images {
        img.recompute_digests().map_err(|e| {
            Error::wrap(ErrorKind::Corrupt, e).context(format!("loading {}", path.display()))
        })?;
    }
    Ok(images)
}
