//! Importing an image into a store the way containers/image's `containers-storage:`
//! destination does (following containers/image HEAD where it differs from 5.23).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use crate::types::{Digest, Error, ErrorKind, Image, Layer, Result, Timestamp, go_quote};
use crate::{BigDataItem, CreateLayerOptions, DiffOptions, ExpectedDiff, NamesOp, NewImage, Store};
use sha2::Digest as _;

use crate::oci::files::bad_input;
use crate::oci::platform::Platform;
use crate::oci::reference::{ImageRef, normalize_name};
use crate::oci::source::Source;
use crate::oci::{LayerOutcome, Progress};

/// What to import with [`import_image`].
#[derive(Clone, Default)]
pub struct ImportOptions {
    /// Names to give the image (normalized like containers/image: `foo` →
    /// `docker.io/library/foo:latest`). Empty: a `docker-archive:` item's `RepoTags`, else
    /// no name.
    pub names: Vec<String>,
    /// The platform to choose from an index; `None`: this host's.
    pub platform: Option<Platform>,
    /// Progress reports, if wanted.
    pub progress: Option<Arc<dyn Progress>>,
}

impl std::fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field("names", &self.names)
            .field("platform", &self.platform)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// One layer of an imported image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedLayer {
    /// The layer's ID in the store.
    pub id: String,
    /// Its diff ID (digest of the uncompressed tar).
    pub diff_id: Digest,
    /// The blob digest in the manifest.
    pub blob: Digest,
    /// Whether the layer was already in the store.
    pub reused: bool,
}

/// The result of [`import_image`].
#[derive(Debug, Clone)]
pub struct Imported {
    /// The image record after the import.
    pub image: Image,
    /// Its layers, base first.
    pub layers: Vec<ImportedLayer>,
    /// The digest of the stored image manifest.
    pub manifest_digest: Digest,
    /// Whether the image record was created (false: an image with that ID existed).
    pub created: bool,
}

/// containers/image's `layerID`: the base layer's ID is its diff ID's hex; every other is
/// `sha256(parentID + "+" + hex(diffID))`.
pub fn layer_id(parent: Option<&str>, diff_id: &Digest) -> String {
    match parent {
        None => diff_id.encoded().to_string(),
        Some(p) => hex::encode(sha2::Sha256::digest(
            format!("{p}+{}", diff_id.encoded()).as_bytes(),
        )),
    }
}

/// Imports the image `src` names into `store`.
///
/// Every blob is checked against its digest and size; a layer whose ID (derived from the
/// chain of diff IDs) is already in the store is reused, not applied again. On an error
/// nothing is left behind: the layers and the image record this call created are removed
/// again (containers/image keeps created layers).
pub fn import_image(store: &Store, src: &ImageRef, opts: &ImportOptions) -> Result<Imported> {
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let mut names = opts
        .names
        .iter()
        .map(|n| normalize_name(n))
        .collect::<Result<Vec<_>>>()?;
    let source = Source::open(src, &platform)?;
    if names.is_empty() {
        names = source.repo_tags.clone();
    }
    let mut undo = Undo {
        store,
        layers: Vec::new(),
        image: None,
    };
    match run(store, &source, &names, opts, &mut undo) {
        Ok(done) => Ok(done),
        Err(e) => {
            undo.run();
            Err(e)
        }
    }
}

/// What a failed import removes again.
struct Undo<'a> {
    store: &'a Store,
    layers: Vec<String>,
    image: Option<String>,
}

impl Undo<'_> {
    fn run(&mut self) {
        if let Some(id) = self.image.take() {
            let removed = self.store.images().write().and_then(|mut w| w.delete(&id));
            if let Err(e) = removed {
                tracing::error!("removing image {id} after a failed import: {e}");
            }
        }
        for id in self.layers.drain(..).rev() {
            if let Err(e) = self.store.delete_layer(&id) {
                tracing::error!("removing layer {id} after a failed import: {e}");
            }
        }
    }
}

/// Where a new layer's content comes from.
enum Content {
    /// The source's blob.
    Blob,
    /// The uncompressed diff of a stored layer with the same content (containers/image's
    /// reuse by `diff-digest` / `compressed-diff-digest`).
    Stored(Box<Layer>),
}

fn run(
    store: &Store,
    source: &Source,
    names: &[String],
    opts: &ImportOptions,
    undo: &mut Undo<'_>,
) -> Result<Imported> {
    let config_digest = &source.config_digest;
    if config_digest.algorithm() != "sha256" {
        return Err(Error::msg(
            ErrorKind::NotSupported,
            format!("config digest {config_digest}: only sha256 image IDs are supported"),
        ));
    }
    let image_id = config_digest.encoded().to_string();
    let created = created_time(&source.config)?;
    let claimed = claimed_diff_ids(source)?;
    let progress = opts.progress.clone();
    let count = source.layers.len();

    // Layers, base first: one at a time (a staged, parallel apply would replace
    // `LayerImporter::import` and keep the order of commits).
    let mut importer = LayerImporter {
        store,
        source,
        progress: progress.clone(),
        received: HashMap::new(),
        known: store.layers()?.into_iter().map(|(l, _)| l).collect(),
    };
    let mut parent: Option<String> = None;
    let mut layers = Vec::with_capacity(count);
    for i in 0..count {
        let claim = claimed.get(i).cloned().flatten();
        let result = importer.import(i, parent.as_deref(), claim.as_ref(), undo);
        if let Some(p) = &progress {
            let outcome = match &result {
                Ok(l) if l.reused => LayerOutcome::Reused,
                Ok(_) => LayerOutcome::Applied,
                Err(_) => LayerOutcome::Failed,
            };
            p.layer_done(i, outcome);
        }
        let layer = result
            .map_err(|e| e.context(format!("layer {i} (blob {})", source.layers[i].desc.digest)))?;
        parent = Some(layer.id.clone());
        layers.push(layer);
    }
    let top = parent.unwrap_or_default();

    // The image record and its big data.
    let mut items = vec![BigDataItem {
        key: config_digest.to_string(),
        data: source.config.clone(),
        digest: None,
    }];
    if let Some(t) = &source.top {
        items.push(BigDataItem {
            key: format!("manifest-{}", t.digest),
            data: t.bytes.clone(),
            digest: None,
        });
    }
    let m = &source.manifest;
    items.push(BigDataItem {
        key: format!("manifest-{}", m.digest),
        data: m.bytes.clone(),
        digest: None,
    });
    items.push(BigDataItem {
        key: "manifest".into(),
        data: m.bytes.clone(),
        digest: None,
    });
    let mut created_record = false;
    let existing = match store.image(&image_id) {
        Ok(i) => Some(i),
        Err(e) if e.kind() == ErrorKind::ImageUnknown => None,
        Err(e) => return Err(e),
    };
    let existing = match existing {
        Some(i) => Some(i),
        None => {
            let new = NewImage {
                id: Some(image_id.clone()),
                layer: top.clone(),
                metadata: "{}".into(),
                created: Some(created),
                big_data: items.clone(),
                ..NewImage::default()
            };
            match store.create_image(new) {
                Ok(_) => {
                    created_record = true;
                    undo.image = Some(image_id.clone());
                    None
                }
                // Someone else created it meanwhile: update theirs.
                Err(e) if e.kind() == ErrorKind::DuplicateId => Some(store.image(&image_id)?),
                Err(e) => return Err(e.context("creating image")),
            }
        }
    };
    if let Some(existing) = existing {
        if existing.layer != top {
            return Err(Error::msg(
                ErrorKind::InvalidInput,
                format!(
                    "image with ID {} already exists, but uses a different top layer",
                    go_quote(&image_id)
                ),
            ));
        }
        for item in &items {
            store.set_image_big_data(&image_id, &item.key, &item.data)?;
        }
        store.set_metadata(&image_id, "{}")?;
    }
    if !names.is_empty() {
        store
            .update_names(&image_id, names, NamesOp::Add)
            .map_err(|e| e.context("adding names"))?;
    }
    let image = store.image(&image_id)?;
    undo.layers.clear();
    undo.image = None;
    Ok(Imported {
        image,
        layers,
        manifest_digest: m.digest.clone(),
        created: created_record,
    })
}

/// The config's `created` with its offset (now when missing).
fn created_time(config: &[u8]) -> Result<Timestamp> {
    match crate::oci::manifest::ConfigInfo::parse(config)?.created {
        Some(c) => Timestamp::parse(&c).map_err(|e| e.context("image config created time")),
        None => Ok(Timestamp::now()),
    }
}

/// The config's diff IDs, one per layer (`None`: not given). A missing or all-empty list
/// checks nothing; a list shorter than the layers is an error (HEAD).
fn claimed_diff_ids(source: &Source) -> Result<Vec<Option<Digest>>> {
    let ids = source.diff_ids()?;
    if ids.iter().all(|d| d.is_empty()) {
        return Ok(vec![None; source.layers.len()]);
    }
    if ids.len() < source.layers.len() {
        return Err(bad_input(format!(
            "config has {} diff IDs for {} layers",
            ids.len(),
            source.layers.len()
        )));
    }
    ids.iter()
        .map(|d| {
            if d.is_empty() {
                Ok(None)
            } else {
                d.parse()
                    .map(Some)
                    .map_err(|e: Error| e.context("invalid diff ID in the image config"))
            }
        })
        .collect()
}

struct LayerImporter<'a> {
    store: &'a Store,
    source: &'a Source,
    progress: Option<Arc<dyn Progress>>,
    /// Blobs applied by this import: blob digest → diff ID.
    received: HashMap<Digest, Digest>,
    /// The store's layers (plus the ones this import created).
    known: Vec<Layer>,
}

impl LayerImporter<'_> {
    /// Imports layer `i` on top of `parent`: finds its trusted diff ID, derives
    /// its ID and reuses or creates it.
    fn import(
        &mut self,
        i: usize,
        parent: Option<&str>,
        claimed: Option<&Digest>,
        undo: &mut Undo<'_>,
    ) -> Result<ImportedLayer> {
        let desc = &self.source.layers[i].desc;
        let blob = &desc.digest;
        if let Some(p) = &self.progress {
            p.layer_start(i, self.source.layers.len(), blob, desc.size);
        }
        let as_string = blob.to_string();
        let (trusted, content) = if let Some(d) = self.received.get(blob) {
            (Some(d.clone()), Content::Blob)
        } else if let Some(l) = self.known.iter().find(|l| l.diff_digest == as_string) {
            (Some(blob.clone()), Content::Stored(Box::new(l.clone())))
        } else if let Some(l) = self
            .known
            .iter()
            .find(|l| l.compressed_diff_digest == as_string && !l.diff_digest.is_empty())
        {
            let d: Digest = l.diff_digest.parse()?;
            (Some(d), Content::Stored(Box::new(l.clone())))
        } else {
            (None, Content::Blob)
        };
        if let (Some(t), Some(c)) = (&trusted, claimed)
            && t != c
        {
            return Err(diff_id_mismatch(i, blob, c));
        }
        let (diff_id, verified) = match (trusted, claimed) {
            (Some(t), _) => (t, true),
            (None, Some(c)) => (c.clone(), false),
            (None, None) => (self.digest_blob(i)?, true),
        };
        let id = layer_id(parent, &diff_id);
        let done = |reused| ImportedLayer {
            id: id.clone(),
            diff_id: diff_id.clone(),
            blob: blob.clone(),
            reused,
        };
        if self.store.layer(&id).is_ok() {
            // The layer exists: used as it is, its record untouched. A diff ID only the
            // config claims is checked against the blob first.
            if !verified && self.digest_blob(i)? != diff_id {
                return Err(diff_id_mismatch(i, blob, &diff_id));
            }
            return Ok(done(true));
        }
        let layer = match content {
            Content::Blob => self.apply_blob(i, &id, parent, &diff_id)?,
            Content::Stored(from) => self.copy_stored(&from, &id, parent, blob, &diff_id)?,
        };
        undo.layers.push(layer.id.clone());
        self.received.insert(blob.clone(), diff_id.clone());
        self.known.push(layer);
        Ok(done(false))
    }

    /// The blob of layer `i`, reporting progress.
    fn reader(&self, i: usize) -> Result<(Box<dyn std::io::Read + Send>, u64)> {
        let (r, size) = self.source.layer_reader(i)?;
        let r: Box<dyn std::io::Read + Send> = match &self.progress {
            Some(p) => Box::new(ProgressRead {
                inner: r,
                progress: p.clone(),
                index: i,
            }),
            None => r,
        };
        Ok((r, size))
    }

    /// Reads layer `i`'s blob without applying it: checks its digest and size and returns
    /// its diff ID.
    fn digest_blob(&self, i: usize) -> Result<Digest> {
        let desc = &self.source.layers[i].desc;
        let (r, _) = self.reader(i)?;
        let r = verify_other_algorithm(r, &desc.digest)?;
        let mut diff =
            crate::archive::open_diff(r).map_err(|e| bad_input(format!("reading blob: {e}")))?;
        std::io::copy(&mut diff, &mut std::io::sink())
            .map_err(|e| bad_input(format!("reading blob: {e}")))?;
        let stats = diff
            .finish()
            .map_err(|e| bad_input(format!("reading blob: {e}")))?;
        if stats.compressed_size != desc.size as i64 {
            return Err(bad_input(format!(
                "size mismatch: expected {}, got {}",
                desc.size, stats.compressed_size
            )));
        }
        if desc.digest.algorithm() == "sha256" && stats.compressed_digest != desc.digest {
            return Err(bad_input(format!(
                "digest mismatch: expected {}, got {}",
                desc.digest, stats.compressed_digest
            )));
        }
        Ok(stats.uncompressed_digest)
    }

    /// Creates layer `id` from the source's blob, checked while it is applied.
    fn apply_blob(
        &self,
        i: usize,
        id: &str,
        parent: Option<&str>,
        diff_id: &Digest,
    ) -> Result<Layer> {
        let desc = &self.source.layers[i].desc;
        let (r, size) = self.reader(i)?;
        let r = verify_other_algorithm(r, &desc.digest)?;
        let opts = CreateLayerOptions {
            id: Some(id.to_string()),
            parent: parent.map(str::to_string),
            expect: Some(ExpectedDiff {
                compressed_digest: (desc.digest.algorithm() == "sha256")
                    .then(|| desc.digest.clone()),
                compressed_size: i64::try_from(size).ok(),
                uncompressed_digest: Some(diff_id.clone()),
            }),
            ..CreateLayerOptions::default()
        };
        let (layer, _) = self.store.create_layer(&opts, Some(r))?;
        Ok(layer)
    }

    /// Creates layer `id` from the uncompressed diff of stored layer `from` (written to an
    /// anonymous temporary file first: the diff and the new layer need the same lock), with
    /// HEAD's compressed digest and size.
    fn copy_stored(
        &self,
        from: &Layer,
        id: &str,
        parent: Option<&str>,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<Layer> {
        let mut tmp = tempfile::tempfile_in(self.store.graph_root())
            .map_err(|e| Error::io("create temporary file in", self.store.graph_root(), e))?;
        let opts = DiffOptions {
            compression: Some(crate::archive::Compression::None),
        };
        self.store.diff(None, &from.id, &opts, &mut tmp)?;
        tmp.seek(SeekFrom::Start(0))
            .map_err(|e| Error::msg(ErrorKind::Io, e.to_string()))?;
        let keep_blob = from.compressed_diff_digest == blob.to_string() && from.compressed_size > 0;
        let opts = CreateLayerOptions {
            id: Some(id.to_string()),
            parent: parent.map(str::to_string),
            original_digest: keep_blob.then(|| blob.clone()),
            original_size: keep_blob.then_some(from.compressed_size),
            expect: Some(ExpectedDiff {
                uncompressed_digest: Some(diff_id.clone()),
                ..ExpectedDiff::default()
            }),
            ..CreateLayerOptions::default()
        };
        let (layer, _) = self.store.create_layer(&opts, Some(Box::new(tmp)))?;
        Ok(layer)
    }
}

fn diff_id_mismatch(i: usize, blob: &Digest, claimed: &Digest) -> Error {
    bad_input(format!(
        "layer {i} (blob {blob}) does not match config's DiffID {}",
        go_quote(&claimed.to_string())
    ))
}

/// A reader reporting the bytes read.
struct ProgressRead {
    inner: Box<dyn Read + Send>,
    progress: Arc<dyn Progress>,
    index: usize,
}

impl Read for ProgressRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.layer_advance(self.index, n as u64);
        Ok(n)
    }
}

/// For blob digests the apply pipeline does not compute (it hashes with sha256): a reader
/// that fails at the end when the content does not match `digest`.
fn verify_other_algorithm(
    r: Box<dyn Read + Send>,
    digest: &Digest,
) -> Result<Box<dyn Read + Send>> {
    match digest.algorithm() {
        "sha256" => Ok(r),
        "sha512" => Ok(Box::new(Sha512Check {
            inner: r,
            hasher: sha2::Sha512::new(),
            want: digest.encoded().to_string(),
        })),
        other => Err(Error::msg(
            ErrorKind::NotSupported,
            format!(
                "blob {digest}: unsupported digest algorithm {}",
                go_quote(other)
            ),
        )),
    }
}

struct Sha512Check {
    inner: Box<dyn Read + Send>,
    hasher: sha2::Sha512,
    want: String,
}

impl Read for Sha512Check {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let got = hex::encode(self.hasher.clone().finalize());
            if got != self.want {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "digest mismatch: expected sha512:{}, got sha512:{got}",
                        self.want
                    ),
                ));
            }
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
