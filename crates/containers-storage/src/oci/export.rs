//! Exporting an image from a store to an OCI layout, an `oci-archive` or a `docker-archive`.
//!
//! Layers are produced from the store (tar-split reassembly: byte for byte the tar that was
//! applied) and hashed while they are written; a layer that does not reproduce the config's
//! diff ID is an error. The config is written byte for byte, so the image ID stays. The stored
//! manifest is written unchanged when it still describes the blobs (an OCI image imported
//! from plain tars and exported uncompressed); otherwise a manifest is made in Go's JSON form.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::Compression;
use crate::types::{Digest, Error, ErrorKind, Result, Sha256Digester};
use crate::{DiffOptions, Store};
use serde::Serialize;
use sha2::Digest as _;

use crate::oci::files::bad_input;
use crate::oci::manifest::{
    self, COMPRESSED_ONLY_ANNOTATIONS, ConfigInfo, Desc, Kind, OCI_CONFIG, OCI_INDEX, OCI_LAYER,
    OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST, OciDescriptorOut, OciManifestOut, REF_NAME,
};
use crate::oci::reference::{ImageRef, Selector, Transport};
use crate::oci::{LayerOutcome, Progress};

/// How to export with [`export_image`].
#[derive(Clone, Default)]
pub struct ExportOptions {
    /// Layer compression: [`Compression::None`] (the default), `Gzip` or `Zstd` (OCI
    /// destinations only; `docker-archive` layers are plain tars).
    pub compression: Compression,
    /// Progress reports, if wanted.
    pub progress: Option<Arc<dyn Progress>>,
}

impl std::fmt::Debug for ExportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportOptions")
            .field("compression", &self.compression)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// One exported layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedLayer {
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size.
    pub size: u64,
    /// The diff ID (digest of the uncompressed tar).
    pub diff_id: Digest,
    /// The media type written.
    pub media_type: String,
}

/// The result of [`export_image`].
#[derive(Debug, Clone)]
pub struct Exported {
    /// The image's ID.
    pub image_id: String,
    /// Digest of the manifest written (`docker-archive` holds no manifest: the digest of the
    /// schema 2 manifest a reader of the archive generates).
    pub manifest_digest: Digest,
    /// Digest of the config written (its hex is the image ID).
    pub config_digest: Digest,
    /// The layers, base first.
    pub layers: Vec<ExportedLayer>,
}

/// Exports the image `key` (name, ID or ID prefix) from `store` to `dest`.
pub fn export_image(
    store: &Store,
    key: &str,
    dest: &ImageRef,
    opts: &ExportOptions,
) -> Result<Exported> {
    if matches!(opts.compression, Compression::Bzip2 | Compression::Xz) {
        return Err(Error::msg(
            ErrorKind::NotSupported,
            "layers can be exported uncompressed, or with gzip or zstd",
        ));
    }
    if dest.transport == Transport::DockerArchive && opts.compression != Compression::None {
        return Err(bad_input(
            "docker-archive layers are written uncompressed".into(),
        ));
    }
    if let Selector::Index(_) = dest.selector {
        return Err(bad_input(format!(
            "{dest}: a destination cannot be chosen by index"
        )));
    }
    let image = store.image(key)?;
    let stored = Stored::load(store, &image.id)?;
    match dest.transport {
        Transport::Oci => {
            std::fs::create_dir_all(dest.path.join("blobs/sha256"))
                .map_err(|e| Error::io("mkdir", &dest.path, e))?;
            let out = write_oci(store, &stored, &dest.path, opts)?;
            update_layout(&dest.path, &out.1, &dest.selector)?;
            Ok(out.0)
        }
        Transport::OciArchive => {
            let staging = staging_dir(&dest.path)?;
            std::fs::create_dir_all(staging.path().join("blobs/sha256"))
                .map_err(|e| Error::io("mkdir", staging.path(), e))?;
            let out = write_oci(store, &stored, staging.path(), opts)?;
            update_layout(staging.path(), &out.1, &dest.selector)?;
            tar_layout(staging.path(), &dest.path)?;
            Ok(out.0)
        }
        Transport::DockerArchive => {
            let staging = staging_dir(&dest.path)?;
            write_docker_archive(store, &stored, staging.path(), &dest.path, dest, opts)
        }
    }
}

/// What the store holds about the image.
struct Stored {
    id: String,
    /// Layer records, base first.
    layers: Vec<crate::types::Layer>,
    /// The stored manifest, parsed (absent for images made without one).
    manifest: Option<manifest::Parsed>,
    config: Vec<u8>,
    config_digest: Digest,
    /// The config's diff IDs.
    diff_ids: Vec<String>,
}

impl Stored {
    fn load(store: &Store, id: &str) -> Result<Stored> {
        let image = store.image(id)?;
        let manifest = match store.image_big_data(id, "manifest") {
            Ok(bytes) => {
                let m = manifest::parse(bytes, None)?;
                if m.kind.is_index() {
                    return Err(bad_input(format!("image {id}: its manifest is an index")));
                }
                Some(m)
            }
            Err(e) if e.is_not_found() || e.kind() == ErrorKind::ImageUnknown => None,
            Err(e) => return Err(e),
        };
        let config_digest: Digest = match &manifest {
            Some(m) => m
                .config
                .as_ref()
                .map(|c| c.digest.clone())
                .ok_or_else(|| bad_input("manifest has no config".into()))?,
            None => format!("sha256:{}", image.id).parse()?,
        };
        let config = store
            .image_big_data(id, &config_digest.to_string())
            .map_err(|e| e.context(format!("reading the config {config_digest} of image {id}")))?;
        if Digest::sha256(&config) != config_digest {
            return Err(bad_input(format!(
                "image {id}: the stored config does not match its digest {config_digest}"
            )));
        }
        let diff_ids = ConfigInfo::parse(&config)?.diff_ids();
        // The layer chain, top first, then reversed.
        let mut layers = Vec::new();
        let mut next = image.layer.clone();
        while !next.is_empty() {
            let (l, _) = store
                .layer(&next)
                .map_err(|e| e.context(format!("layer {next} of image {id}")))?;
            next = l.parent.clone();
            layers.push(l);
            if layers.len() > 100_000 {
                return Err(bad_input(format!("image {id}: layer chain loops")));
            }
        }
        layers.reverse();
        if let Some(m) = &manifest
            && m.entries.len() != layers.len()
        {
            return Err(bad_input(format!(
                "image {id}: the manifest has {} layers, the store {}",
                m.entries.len(),
                layers.len()
            )));
        }
        if !diff_ids.is_empty() && diff_ids.len() != layers.len() {
            return Err(bad_input(format!(
                "image {id}: the config has {} diff IDs for {} layers",
                diff_ids.len(),
                layers.len()
            )));
        }
        Ok(Stored {
            id: image.id,
            layers,
            manifest,
            config,
            config_digest,
            diff_ids,
        })
    }
}

/// A temporary directory beside `dest` (same file system, so the final rename is cheap).
fn staging_dir(dest: &Path) -> Result<tempfile::TempDir> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tempfile::Builder::new()
        .prefix(".export-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io("mkdir", &parent, e))
}

/// A writer hashing and counting what passes through.
struct Hashing<W> {
    inner: W,
    digester: Sha256Digester,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A writer reporting progress.
struct ProgressWrite<W> {
    inner: W,
    progress: Option<Arc<dyn Progress>>,
    index: usize,
}

impl<W: Write> Write for ProgressWrite<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(p) = &self.progress {
            p.layer_advance(self.index, n as u64);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A blob written into `dir/blobs/sha256/` (via a temporary file, renamed to its digest).
struct BlobOut {
    digest: Digest,
    size: u64,
}

fn io_err(e: io::Error) -> Error {
    Error::msg(ErrorKind::Io, crate::types::go_io_error_text(&e))
}

/// Writes `data` as a blob of the layout at `dir`.
fn put_blob(dir: &Path, data: &[u8]) -> Result<BlobOut> {
    let digest = Digest::sha256(data);
    let path = dir.join("blobs/sha256").join(digest.encoded());
    if !path.exists() {
        let blobs = dir.join("blobs/sha256");
        let mut tmp = tempfile::NamedTempFile::new_in(&blobs).map_err(io_err)?;
        tmp.write_all(data).map_err(io_err)?;
        tmp.persist(&path).map_err(|e| io_err(e.error))?;
    }
    Ok(BlobOut {
        digest,
        size: data.len() as u64,
    })
}

/// Produces layer `i` of `stored` into `dir`'s blobs (or, with `docker`, as `<diffID>.tar`
/// in `dir`), compressed as asked; checks that it reproduces its diff ID.
fn put_layer(
    store: &Store,
    stored: &Stored,
    i: usize,
    dir: &Path,
    compression: Compression,
    docker: bool,
    progress: &Option<Arc<dyn Progress>>,
) -> Result<(BlobOut, Digest)> {
    let layer = &stored.layers[i];
    let tmp_dir = if docker {
        dir.to_path_buf()
    } else {
        dir.join("blobs/sha256")
    };
    let tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(io_err)?;
    let file = tmp.reopen().map_err(io_err)?;
    let compressed = Hashing {
        inner: io::BufWriter::with_capacity(1 << 20, file),
        digester: Sha256Digester::new(),
    };
    if let Some(p) = progress {
        p.layer_start(
            i,
            stored.layers.len(),
            &layer
                .diff_digest
                .parse()
                .unwrap_or_else(|_| Digest::sha256(b"")),
            u64::try_from(layer.diff_size).unwrap_or(0),
        );
    }
    let result = (|| -> Result<(Digest, u64, Digest)> {
        let mut encoder = Encoder::new(compression, compressed)?;
        // Progress counts the uncompressed bytes (the layer's diff size is the total).
        let mut uncompressed = Hashing {
            inner: ProgressWrite {
                inner: &mut encoder,
                progress: progress.clone(),
                index: i,
            },
            digester: Sha256Digester::new(),
        };
        let plain = DiffOptions {
            compression: Some(Compression::None),
        };
        store.diff(None, &layer.id, &plain, &mut uncompressed)?;
        let diff_id = uncompressed.digester.finish();
        let mut compressed = encoder.finish()?;
        compressed.flush().map_err(io_err)?;
        let size = compressed.digester.bytes_written();
        let digest = compressed.digester.finish();
        compressed
            .inner
            .into_inner()
            .map_err(|e| io_err(e.into_error()))?
            .sync_all()
            .map_err(io_err)?;
        Ok((digest, size, diff_id))
    })();
    if let Some(p) = progress {
        p.layer_done(
            i,
            if result.is_ok() {
                LayerOutcome::Applied
            } else {
                LayerOutcome::Failed
            },
        );
    }
    let (digest, size, diff_id) =
        result.map_err(|e| e.context(format!("exporting layer {}", layer.id)))?;
    let want = stored
        .diff_ids
        .get(i)
        .cloned()
        .unwrap_or_else(|| layer.diff_digest.clone());
    if !want.is_empty() && want != diff_id.to_string() {
        return Err(bad_input(format!(
            "layer {} does not reproduce its diff ID {want}: its content has digest {diff_id}",
            layer.id
        )));
    }
    let path = if docker {
        dir.join(format!("{}.tar", diff_id.encoded()))
    } else {
        dir.join("blobs/sha256").join(digest.encoded())
    };
    tmp.persist(&path).map_err(|e| io_err(e.error))?;
    Ok((BlobOut { digest, size }, diff_id))
}

/// [`put_layer`] for every layer, base first.
fn put_layers(
    store: &Store,
    stored: &Stored,
    dir: &Path,
    compression: Compression,
    docker: bool,
    progress: &Option<Arc<dyn Progress>>,
) -> Result<Vec<ExportedLayer>> {
    let media_type = if docker {
        manifest::DOCKER_LAYER
    } else {
        layer_media_type(compression)
    };
    (0..stored.layers.len())
        .map(|i| {
            let (blob, diff_id) = put_layer(store, stored, i, dir, compression, docker, progress)?;
            Ok(ExportedLayer {
                digest: blob.digest,
                size: blob.size,
                diff_id,
                media_type: media_type.to_string(),
            })
        })
        .collect()
}

/// The layer compressor.
enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn new(c: Compression, w: W) -> Result<Self> {
        Ok(match c {
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::default(),
            )),
            Compression::Zstd => Encoder::Zstd(zstd::Encoder::new(w, 3).map_err(io_err)?),
            _ => Encoder::Plain(w),
        })
    }

    fn finish(self) -> Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(g) => g.finish().map_err(io_err),
            Encoder::Zstd(z) => z.finish().map_err(io_err),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(g) => g.write(buf),
            Encoder::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(g) => g.flush(),
            Encoder::Zstd(z) => z.flush(),
        }
    }
}

fn layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => OCI_LAYER_GZIP,
        Compression::Zstd => OCI_LAYER_ZSTD,
        _ => OCI_LAYER,
    }
}

/// Writes the blobs and the manifest of `stored` into the layout at `dir`; returns the
/// result and the manifest's descriptor.
fn write_oci(
    store: &Store,
    stored: &Stored,
    dir: &Path,
    opts: &ExportOptions,
) -> Result<(Exported, OciDescriptorOut)> {
    let layers = put_layers(store, stored, dir, opts.compression, false, &opts.progress)?;
    let config = put_blob(dir, &stored.config)?;
    // The stored manifest is kept when every descriptor still matches.
    let unchanged = stored.manifest.as_ref().filter(|m| {
        m.kind == Kind::OciManifest
            && m.entries.iter().zip(&layers).all(|(d, l)| {
                d.digest == l.digest && d.size == l.size && d.media_type == l.media_type
            })
    });
    let bytes = match unchanged {
        Some(m) => m.bytes.clone(),
        None => {
            let empty = Desc {
                media_type: String::new(),
                digest: config.digest.clone(),
                size: 0,
                annotations: BTreeMap::new(),
                urls: Vec::new(),
                platform: None,
            };
            let old = stored.manifest.as_ref();
            let out = OciManifestOut {
                schema_version: 2,
                media_type: OCI_MANIFEST.into(),
                config: OciDescriptorOut::like(
                    old.and_then(|m| m.config.as_ref()).unwrap_or(&empty),
                    OCI_CONFIG,
                    &config.digest,
                    config.size,
                ),
                layers: layers
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let d = old.and_then(|m| m.entries.get(i)).unwrap_or(&empty);
                        let mut o = OciDescriptorOut::like(d, &l.media_type, &l.digest, l.size);
                        if d.digest != l.digest {
                            o.annotations
                                .retain(|k, _| !COMPRESSED_ONLY_ANNOTATIONS.contains(&k.as_str()));
                        }
                        o
                    })
                    .collect(),
                annotations: old
                    .filter(|m| m.kind == Kind::OciManifest)
                    .map(|m| m.annotations.clone())
                    .unwrap_or_default(),
            };
            manifest::go_json(&out)?
        }
    };
    let m = put_blob(dir, &bytes)?;
    let desc = OciDescriptorOut::new(OCI_MANIFEST, &m.digest, m.size);
    Ok((
        Exported {
            image_id: stored.id.clone(),
            manifest_digest: m.digest,
            config_digest: config.digest,
            layers,
        },
        desc,
    ))
}

#[derive(Serialize)]
struct IndexOut {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: Vec<OciDescriptorOut>,
}

/// Adds the manifest to the layout's `index.json` as containers/image does: the ref
/// annotation is taken from any older entry, an unnamed entry of the same digest is
/// replaced; `oci-layout` is written when missing.
fn update_layout(dir: &Path, desc: &OciDescriptorOut, selector: &Selector) -> Result<()> {
    let layout = dir.join("oci-layout");
    if !layout.exists() {
        write_file(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    let index_path = dir.join("index.json");
    let mut entries: Vec<OciDescriptorOut> = match std::fs::read(&index_path) {
        Ok(b) => {
            let bad = |e: &dyn std::fmt::Display| {
                bad_input(format!("parsing {}: {e}", index_path.display()))
            };
            let idx = oci_spec::image::ImageIndex::from_reader(&b[..]).map_err(|e| bad(&e))?;
            // oci-spec 0.10 reads a platform's `os.version`/`os.features` under other names:
            // take them from the JSON itself so that no entry loses them.
            let raw: serde_json::Value = serde_json::from_slice(&b).map_err(|e| bad(&e))?;
            idx.manifests()
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let mut out = OciDescriptorOut::from_spec(d)?;
                    let p = &raw["manifests"][i]["platform"];
                    if let Some(platform) = &mut out.platform {
                        platform.os_version = p["os.version"].as_str().map(str::to_string);
                        platform.os_features = p["os.features"].as_array().map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        });
                    }
                    Ok(out)
                })
                .collect::<Result<_>>()?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("open", &index_path, e)),
    };
    let mut new = desc.clone();
    match selector {
        Selector::Name(name) => {
            for e in &mut entries {
                if e.annotations.get(REF_NAME) == Some(name) {
                    e.annotations.remove(REF_NAME);
                }
            }
            new.annotations.insert(REF_NAME.into(), name.clone());
        }
        Selector::Only | Selector::Index(_) => {}
    }
    entries.retain(|e| e.digest != new.digest || e.annotations.contains_key(REF_NAME));
    entries.push(new);
    let out = IndexOut {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests: entries,
    };
    write_file(&index_path, &manifest::go_json(&out)?)
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err)?;
    tmp.write_all(data).map_err(io_err)?;
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

/// A tar header for a member of an archive we write.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

/// Writes `out` atomically: `f` fills a temporary file beside it, which is renamed over it.
fn write_archive(
    out: &Path,
    f: impl FnOnce(&mut tar::Builder<io::BufWriter<File>>) -> Result<()>,
) -> Result<()> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io_err)?;
    let file = tmp.reopen().map_err(io_err)?;
    let mut b = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, file));
    f(&mut b)?;
    let w = b.into_inner().map_err(io_err)?;
    let file = w.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    tmp.persist(out).map_err(|e| io_err(e.error))?;
    Ok(())
}

fn append_file(
    b: &mut tar::Builder<io::BufWriter<File>>,
    name: &str,
    path: &Path,
    mode: u32,
) -> Result<()> {
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = f.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let mut h = header(tar::EntryType::Regular, mode, len);
    b.append_data(&mut h, name, &mut f).map_err(io_err)
}

fn append_bytes(
    b: &mut tar::Builder<io::BufWriter<File>>,
    name: &str,
    data: &[u8],
    mode: u32,
) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, name, data).map_err(io_err)
}

/// Writes the layout at `dir` as an `oci-archive` tar to `out` (relative names,
/// directories 0755, files 0644, owned by root).
fn tar_layout(dir: &Path, out: &Path) -> Result<()> {
    write_archive(out, |b| {
        for d in ["blobs/", "blobs/sha256/"] {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, d, io::empty()).map_err(io_err)?;
        }
        let blobs = dir.join("blobs/sha256");
        let mut names: Vec<String> = std::fs::read_dir(&blobs)
            .map_err(|e| Error::io("open", &blobs, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        for n in names {
            append_file(b, &format!("blobs/sha256/{n}"), &blobs.join(&n), 0o644)?;
        }
        append_file(b, "index.json", &dir.join("index.json"), 0o644)?;
        append_file(b, "oci-layout", &dir.join("oci-layout"), 0o644)
    })
}

/// Go's `json.Marshal` of a `json.RawMessage`: the value compacted, with `<`, `>`, `&`,
/// U+2028 and U+2029 escaped inside strings.
fn go_compact(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            if escaped {
                escaped = false;
                out.push(c);
                continue;
            }
            match c {
                '\\' => {
                    escaped = true;
                    out.push(c);
                }
                '"' => {
                    in_string = false;
                    out.push(c);
                }
                '<' => out.push_str("\\u003c"),
                '>' => out.push_str("\\u003e"),
                '&' => out.push_str("\\u0026"),
                '\u{2028}' => out.push_str("\\u2028"),
                '\u{2029}' => out.push_str("\\u2029"),
                c => out.push(c),
            }
        } else {
            match c {
                '"' => {
                    in_string = true;
                    out.push(c);
                }
                ' ' | '\t' | '\n' | '\r' => {}
                c => out.push(c),
            }
        }
    }
    out
}

/// A JSON object with sorted keys and raw values, as Go marshals a `map[string]any`.
fn sorted_object(fields: &BTreeMap<&str, String>) -> String {
    let items: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", json_quote(k)))
        .collect();
    format!("{{{}}}", items.join(","))
}

/// A JSON string in Go's escaping.
fn json_quote(s: &str) -> String {
    String::from_utf8(crate::types::to_go_json(s)).unwrap_or_else(|_| "\"\"".into())
}

/// The legacy (`docker save` v1.0) layer IDs and `json` files of containers/image's
/// `docker-archive` writer, for `diff_ids` (base first) and the raw config.
fn legacy_layers(diff_ids: &[Digest], config: &[u8]) -> Result<Vec<(String, String)>> {
    let raw: BTreeMap<String, Box<serde_json::value::RawValue>> = serde_json::from_slice(config)
        .map_err(|e| bad_input(format!("parsing image config: {e}")))?;
    let mut out = Vec::new();
    let mut chain: Option<String> = None;
    let mut last: Option<String> = None;
    for (i, d) in diff_ids.iter().enumerate() {
        let mut fields: BTreeMap<&str, String> = BTreeMap::new();
        if let Some(p) = &last {
            fields.insert("parent", json_quote(p));
        }
        if i + 1 == diff_ids.len() {
            for attr in [
                "architecture",
                "config",
                "container",
                "container_config",
                "created",
                "docker_version",
                "os",
            ] {
                let v = raw
                    .get(attr)
                    .map(|v| go_compact(v.get()))
                    .unwrap_or_else(|| "null".into());
                fields.insert(attr, v);
            }
        }
        let chain_id = match &chain {
            None => d.to_string(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        fields.insert("layer_id", json_quote(&chain_id));
        let legacy_id = Digest::sha256(sorted_object(&fields).as_bytes())
            .encoded()
            .to_string();
        fields.remove("layer_id");
        fields.insert("id", json_quote(&legacy_id));
        out.push((legacy_id.clone(), sorted_object(&fields)));
        chain = Some(chain_id);
        last = Some(legacy_id);
    }
    Ok(out)
}

/// Writes a `docker-archive` of `stored` to `out`, staging layers in `staging`.
fn write_docker_archive(
    store: &Store,
    stored: &Stored,
    staging: &Path,
    out: &Path,
    dest: &ImageRef,
    opts: &ExportOptions,
) -> Result<Exported> {
    let layers = put_layers(
        store,
        stored,
        staging,
        Compression::None,
        true,
        &opts.progress,
    )?;
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let legacy = legacy_layers(&diff_ids, &stored.config)?;
    let repo_tags: Vec<String> = match &dest.selector {
        Selector::Name(n) => vec![n.clone()],
        _ => Vec::new(),
    };
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Item<'a> {
        config: String,
        repo_tags: &'a [String],
        layers: Vec<String>,
    }
    let config_name = format!("{}.json", stored.config_digest.encoded());
    let layer_names: Vec<String> = diff_ids
        .iter()
        .map(|d| format!("{}.tar", d.encoded()))
        .collect();
    let manifest_json = manifest::go_json(&[Item {
        config: config_name.clone(),
        repo_tags: &repo_tags,
        layers: layer_names.clone(),
    }])?;
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    if let (Some(name), Some((last, _))) = (repo_tags.first(), legacy.last()) {
        let slash = name.rfind('/').map_or(0, |i| i + 1);
        if let Some(colon) = name[slash..].rfind(':') {
            let (repo, tag) = (&name[..slash + colon], &name[slash + colon + 1..]);
            repositories
                .entry(repo.to_string())
                .or_default()
                .insert(tag.to_string(), last.clone());
        }
    }
    let repositories = manifest::go_json(&repositories)?;
    write_archive(out, |b| {
        for name in &layer_names {
            append_file(b, name, &staging.join(name), 0o444)?;
        }
        append_bytes(b, &config_name, &stored.config, 0o444)?;
        for ((id, json), name) in legacy.iter().zip(&layer_names) {
            // containers/image writes the link first, with mode 0.
            let mut h = header(tar::EntryType::Symlink, 0, 0);
            b.append_link(&mut h, format!("{id}/layer.tar"), format!("../{name}"))
                .map_err(io_err)?;
            append_bytes(b, &format!("{id}/VERSION"), b"1.0", 0o444)?;
            append_bytes(b, &format!("{id}/json"), json.as_bytes(), 0o444)?;
        }
        append_bytes(b, "manifest.json", &manifest_json, 0o444)?;
        append_bytes(b, "repositories", &repositories, 0o444)
    })?;
    // The v2s2 manifest a reader of this archive generates (and stores).
    let generated = manifest::DockerManifestOut {
        schema_version: 2,
        media_type: manifest::DOCKER_MANIFEST.into(),
        config: manifest::DockerDescriptorOut {
            media_type: manifest::DOCKER_CONFIG.into(),
            size: stored.config.len() as u64,
            digest: stored.config_digest.to_string(),
            urls: Vec::new(),
        },
        layers: layers
            .iter()
            .map(|l| manifest::DockerDescriptorOut {
                media_type: manifest::DOCKER_LAYER_GZIP.into(),
                size: l.size,
                digest: l.diff_id.to_string(),
                urls: Vec::new(),
            })
            .collect(),
    };
    Ok(Exported {
        image_id: stored.id.clone(),
        manifest_digest: Digest::sha256(&manifest::go_json(&generated)?),
        config_digest: stored.config_digest.clone(),
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_like_go() {
        assert_eq!(
            go_compact("{ \"a\" : [1, 2],\n \"b\": \"x <y> & \\\"z\\\" \" }"),
            r#"{"a":[1,2],"b":"x \u003cy\u003e \u0026 \"z\" "}"#
        );
    }

    #[test]
    fn legacy_ids_follow_the_chain() {
        // As docker save does: the first legacy ID is the digest of
        // {"layer_id":"sha256:<D0>"}.
        let d0: Digest = "sha256:bb22a48b749901a39979c5811b30142247c25fa0e64a1bcb1eeccbc4616d2176"
            .parse()
            .unwrap();
        let d1 = Digest::sha256(b"x");
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}"#;
        let l = legacy_layers(&[d0.clone(), d1], config).unwrap();
        let want = Digest::sha256(format!("{{\"layer_id\":\"{d0}\"}}").as_bytes());
        assert_eq!(l[0].0, want.encoded());
        assert!(l[0].0.starts_with("27173386"), "{}", l[0].0);
        assert_eq!(l[0].1, format!("{{\"id\":\"{}\"}}", l[0].0));
        assert!(
            l[1].1
                .starts_with("{\"architecture\":\"amd64\",\"config\":null,")
        );
        assert!(l[1].1.contains(&format!("\"parent\":\"{}\"", l[0].0)));
    }
}
