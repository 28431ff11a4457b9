//! OCI and Docker images in and out of a store, written and read exactly as podman's and
//! skopeo's own copies through the `containers-storage:` transport do.
//!
//! * [`import_image`] reads an OCI image layout (`oci:DIR[:REF]`), an `oci-archive:FILE[:REF]`
//!   or a `docker-archive:FILE[:NAME:TAG|:@N]` ([`ImageRef`]), picks the platform from an
//!   index ([`Platform`], default this host's), checks every blob against its digest and size,
//!   and stores the image as containers/image does: layer IDs derived from the chain of diff
//!   IDs, layers already present reused (not applied again), the image ID = the config's
//!   digest, the config and the manifest (and the index above it) as big data, the image's
//!   `digest`, `created` from the config, names normalized (`foo` →
//!   `docker.io/library/foo:latest`). Layers are applied one at a time, in order.
//! * [`export_image`] writes an image of the store to an OCI layout, an `oci-archive` or a
//!   `docker-archive`: layers produced from the store (uncompressed, gzip or zstd), the config
//!   byte for byte (same image ID), the stored manifest unchanged when it still describes the
//!   blobs (same manifest digest), otherwise a new one in Go's JSON form.
//!
//! Where containers/image's current code ("HEAD") and Debian's skopeo 1.9 (c/image 5.23)
//! differ, HEAD is followed: unsigned images get the metadata `{}` and no `signature-…` item,
//! a layer whose content does not match the config's diff ID is refused. Unlike
//! containers/image, a failed import removes the layers it created. Not supported: Docker
//! schema 1 manifests, encrypted layers, signatures, partial (zstd:chunked) pulls — local
//! sources cannot serve them anyway.
//!
//! The CLI's `import-image` and `export-image` commands are thin wrappers of these two
//! functions; progress is reported through [`Progress`].
//!
//! # Example
//!
//! ```
//! use containers_storage::Store;
//! use containers_storage::oci::{ExportOptions, ImageRef, ImportOptions, export_image, import_image};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tmp = tempfile::tempdir()?;
//! // An OCI layout with one layer holding `hello`, written by hand.
//! let layout = tmp.path().join("layout");
//! containers_storage::oci::testing::write_layout(&layout, "v1", &[vec![("hello", b"hi\n".to_vec())]])?;
//!
//! let store = Store::open(&containers_storage::config::StoreOptions {
//!     graph_root: tmp.path().join("root"),
//!     run_root: tmp.path().join("run"),
//!     driver: "vfs".into(),
//!     ..Default::default()
//! })?;
//! let source = ImageRef::parse(&format!("oci:{}:v1", layout.display()))?;
//! let opts = ImportOptions { names: vec!["localhost/hello:v1".into()], ..Default::default() };
//! let imported = import_image(&store, &source, &opts)?;
//! assert_eq!(imported.image.names, ["localhost/hello:v1"]);
//! assert!(!imported.layers[0].reused);
//!
//! // Importing again reuses the layer and the image.
//! let again = import_image(&store, &source, &opts)?;
//! assert!(again.layers[0].reused && !again.created);
//!
//! // Out again, uncompressed: the same manifest digest.
//! let dest = ImageRef::parse(&format!("oci:{}:v1", tmp.path().join("out").display()))?;
//! let exported = export_image(&store, "localhost/hello:v1", &dest, &ExportOptions::default())?;
//! assert_eq!(exported.manifest_digest, imported.manifest_digest);
//! assert_eq!(exported.image_id, imported.image.id);
//! # store.shutdown(true)?;
//! # Ok(())
//! # }
//! ```

mod export;
mod files;
mod import;
pub mod manifest;
mod platform;
mod reference;
mod source;
pub mod testing;

pub use crate::archive::Compression;
pub use export::{ExportOptions, Exported, ExportedLayer, export_image};
pub use import::{ImportOptions, Imported, ImportedLayer, import_image, layer_id};
pub use platform::Platform;
pub use reference::{ImageRef, Selector, Transport, normalize_name};

use crate::types::Digest;

/// How a layer's import or export ended (see [`Progress::layer_done`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerOutcome {
    /// Applied to the store (import) or written (export).
    Applied,
    /// Already in the store: reused, nothing applied.
    Reused,
    /// Failed.
    Failed,
}

/// Receives progress reports of [`import_image`] and [`export_image`], layer by layer.
/// Called from the working threads (hence `Send + Sync`).
pub trait Progress: Send + Sync {
    /// Layer `index` of `count` (blob `digest` of `size` bytes) starts.
    fn layer_start(&self, index: usize, count: usize, digest: &Digest, size: u64);
    /// `bytes` more bytes of layer `index` were read (import) or written (export).
    fn layer_advance(&self, index: usize, bytes: u64);
    /// Layer `index` is done.
    fn layer_done(&self, index: usize, outcome: LayerOutcome);
}
