//! Reading an image from an OCI layout, an `oci-archive` or a `docker-archive`: the chosen
//! manifest (and the index above it), the config, and the layer blobs — every blob checked
//! against its digest and size (small ones here, layers while they are applied).

use std::io::Read;

use crate::types::{Digest, Error, ErrorKind, Result, go_quote};
use serde::Deserialize;

use crate::oci::files::{Files, Member, bad_input, clean_member};
use crate::oci::manifest::{
    self, ConfigInfo, DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, DockerDescriptorOut,
    DockerManifestOut, Kind, MAX_JSON, Parsed, REF_NAME,
};
use crate::oci::platform::{Platform, choose};
use crate::oci::reference::{ImageRef, Selector, Transport, normalize_name};

/// One layer as the source offers it.
#[derive(Debug, Clone)]
pub(crate) struct SourceLayer {
    /// The descriptor in the manifest (`B`, size, media type).
    pub desc: manifest::Desc,
    /// docker-archive: the member holding the tar (maybe compressed), served decompressed.
    docker_path: Option<String>,
}

/// An opened image source.
pub(crate) struct Source {
    files: Files,
    /// The top-level index or list, when the image was chosen from one.
    pub top: Option<Parsed>,
    /// The image manifest (as stored: never converted).
    pub manifest: Parsed,
    /// The config bytes (verified).
    pub config: Vec<u8>,
    /// The config's digest.
    pub config_digest: Digest,
    /// Layers, base first.
    pub layers: Vec<SourceLayer>,
    /// docker-archive: the chosen item's normalized `RepoTags`.
    pub repo_tags: Vec<String>,
}

/// Reads a small blob and checks its digest and size.
fn read_verified(
    member: Member,
    digest: &Digest,
    size: Option<u64>,
    what: &str,
) -> Result<Vec<u8>> {
    if let Some(s) = size
        && s != member.size
    {
        return Err(bad_input(format!(
            "{what} {digest}: size {} does not match the descriptor's {s}",
            member.size
        )));
    }
    let bytes = member.read_all(MAX_JSON, &format!("{what} {digest}"))?;
    check_digest(&bytes, digest, what)?;
    Ok(bytes)
}

fn check_digest(bytes: &[u8], digest: &Digest, what: &str) -> Result<()> {
    let got = match digest.algorithm() {
        "sha256" => Digest::sha256(bytes),
        "sha512" => {
            use sha2::Digest as _;
            format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
                .parse()
                .map_err(|e: Error| e.context("sha512"))?
        }
        other => {
            return Err(Error::msg(
                ErrorKind::NotSupported,
                format!(
                    "{what} {digest}: unsupported digest algorithm {}",
                    go_quote(other)
                ),
            ));
        }
    };
    if got != *digest {
        return Err(bad_input(format!(
            "{what} {digest}: digest mismatch: content has digest {got}"
        )));
    }
    Ok(())
}

/// `blobs/<algorithm>/<encoded>` of an OCI layout.
fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.encoded())
}

#[derive(Deserialize)]
struct LayoutIndex {
    #[serde(default)]
    manifests: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerItem {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// The entry `selector` chooses among `len` entries (`what`: where they are listed);
/// `by_name` finds a named one.
fn pick(
    selector: &Selector,
    len: usize,
    what: &str,
    by_name: impl Fn(&str) -> Option<usize>,
) -> Result<usize> {
    match selector {
        Selector::Only if len == 1 => Ok(0),
        Selector::Only => Err(bad_input(format!(
            "{len} {what}: choose an image with :REF or :@N"
        ))),
        Selector::Index(n) if *n < len => Ok(*n),
        Selector::Index(n) => Err(bad_input(format!(
            "Invalid source index @{n}, only {len} {what} available"
        ))),
        Selector::Name(name) => by_name(name)
            .ok_or_else(|| bad_input(format!("no image named {} in the {what}", go_quote(name)))),
    }
}

impl Source {
    /// Opens `r`, choosing the image for `platform` when it names an index.
    pub(crate) fn open(r: &ImageRef, platform: &Platform) -> Result<Source> {
        let files = match r.transport {
            Transport::Oci => Files::dir(&r.path)?,
            Transport::OciArchive | Transport::DockerArchive => Files::archive(&r.path)?,
        };
        match r.transport {
            Transport::Oci | Transport::OciArchive => Self::open_oci(files, r, platform),
            Transport::DockerArchive => Self::open_docker(files, r),
        }
    }

    fn blob(&self, d: &Digest) -> Result<Member> {
        Self::blob_in(&self.files, d)
    }

    fn blob_in(files: &Files, d: &Digest) -> Result<Member> {
        files
            .open(&blob_path(d))?
            .ok_or_else(|| bad_input(format!("blob {d} is missing from the image layout")))
    }

    fn open_oci(files: Files, r: &ImageRef, platform: &Platform) -> Result<Source> {
        let layout = files
            .open("oci-layout")?
            .ok_or_else(|| bad_input(format!("{r}: not an OCI image layout (no oci-layout file)")))?
            .read_all(MAX_JSON, "oci-layout")?;
        let layout: serde_json::Value = serde_json::from_slice(&layout)
            .map_err(|e| bad_input(format!("parsing oci-layout: {e}")))?;
        if layout["imageLayoutVersion"] != "1.0.0" {
            return Err(bad_input(format!(
                "unsupported OCI layout version {}",
                layout["imageLayoutVersion"]
            )));
        }
        let index = files
            .open("index.json")?
            .ok_or_else(|| bad_input(format!("{r}: index.json is missing")))?
            .read_all(MAX_JSON, "index.json")?;
        let index: LayoutIndex = serde_json::from_slice(&index)
            .map_err(|e| bad_input(format!("parsing index.json: {e}")))?;
        // Parse every entry with oci-spec's descriptor.
        let entries: Vec<manifest::Desc> = index
            .manifests
            .iter()
            .map(|v| {
                let d: oci_spec::image::Descriptor = serde_json::from_value(v.clone())
                    .map_err(|e| bad_input(format!("parsing index.json: {e}")))?;
                manifest::Desc::from_spec(&d)
            })
            .collect::<Result<_>>()?;
        let pick = pick(&r.selector, entries.len(), "index.json entries", |name| {
            entries.iter().position(|d| {
                d.annotations.get(REF_NAME).map(String::as_str) == Some(name)
                    && matches!(
                        d.media_type.as_str(),
                        manifest::OCI_MANIFEST
                            | manifest::OCI_INDEX
                            | manifest::DOCKER_MANIFEST
                            | manifest::DOCKER_LIST
                    )
            })
        })?;
        let desc = &entries[pick];
        let bytes = read_verified(
            Self::blob_in(&files, &desc.digest)?,
            &desc.digest,
            Some(desc.size),
            "manifest",
        )?;
        let mut parsed = manifest::parse(bytes, Some(&desc.media_type))?;
        let mut top = None;
        if parsed.kind.is_index() {
            let i = choose(&parsed.entries, platform, parsed.kind == Kind::OciIndex)?;
            let inst = parsed.entries[i].clone();
            let bytes = read_verified(
                Self::blob_in(&files, &inst.digest)?,
                &inst.digest,
                Some(inst.size),
                "manifest",
            )?;
            let inner = manifest::parse(bytes, Some(&inst.media_type))?;
            if inner.kind.is_index() {
                return Err(bad_input(format!(
                    "manifest {} is an index inside an index",
                    inst.digest
                )));
            }
            top = Some(std::mem::replace(&mut parsed, inner));
        }
        manifest::check_image_manifest(&parsed)?;
        let config_desc = parsed
            .config
            .clone()
            .ok_or_else(|| bad_input("no config".into()))?;
        let config = read_verified(
            Self::blob_in(&files, &config_desc.digest)?,
            &config_desc.digest,
            Some(config_desc.size),
            "config",
        )?;
        let layers = parsed
            .entries
            .iter()
            .map(|d| SourceLayer {
                desc: d.clone(),
                docker_path: None,
            })
            .collect();
        let src = Source {
            files,
            top,
            manifest: parsed,
            config,
            config_digest: config_desc.digest,
            layers,
            repo_tags: Vec::new(),
        };
        src.check_blobs()?;
        Ok(src)
    }

    /// Every layer blob exists with the size its descriptor says (before anything is
    /// written to the store).
    fn check_blobs(&self) -> Result<()> {
        for (i, l) in self.layers.iter().enumerate() {
            if l.docker_path.is_some() {
                continue;
            }
            let m = self
                .blob(&l.desc.digest)
                .map_err(|e| e.context(format!("layer {i}")))?;
            if m.size != l.desc.size {
                return Err(bad_input(format!(
                    "layer {i}: blob {} has {} bytes, the manifest says {}",
                    l.desc.digest, m.size, l.desc.size
                )));
            }
        }
        Ok(())
    }

    fn open_docker(files: Files, r: &ImageRef) -> Result<Source> {
        let data = files
            .open("manifest.json")?
            .ok_or_else(|| {
                bad_input(format!(
                    "{r}: manifest.json is missing (not a docker-archive)"
                ))
            })?
            .read_all(MAX_JSON, "manifest.json")?;
        let items: Vec<DockerItem> = serde_json::from_slice(&data)
            .map_err(|e| bad_input(format!("parsing manifest.json: {e}")))?;
        let normalized = |item: &DockerItem| -> Vec<String> {
            item.repo_tags
                .iter()
                .flatten()
                .filter_map(|t| normalize_name(t).ok())
                .collect()
        };
        let pick = pick(&r.selector, items.len(), "manifest.json items", |name| {
            items
                .iter()
                .position(|i| normalized(i).iter().any(|t| t == name))
        })?;
        let item = &items[pick];
        let repo_tags = normalized(item);
        let config_path = clean_member(&item.config).ok_or_else(|| {
            bad_input(format!(
                "config {} points outside of the archive",
                go_quote(&item.config)
            ))
        })?;
        let config = files
            .open(&config_path)?
            .ok_or_else(|| {
                bad_input(format!(
                    "config {} is missing from the archive",
                    go_quote(&item.config)
                ))
            })?
            .read_all(MAX_JSON, "config")?;
        let config_digest = Digest::sha256(&config);
        let diff_ids = ConfigInfo::parse(&config)?.diff_ids();
        if diff_ids.len() != item.layers.len() {
            return Err(bad_input(format!(
                "Inconsistent layer count: {} in manifest, {} in config",
                item.layers.len(),
                diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        let mut out_layers = Vec::new();
        for (i, (path, diff_id)) in item.layers.iter().zip(&diff_ids).enumerate() {
            let digest: Digest = diff_id
                .parse()
                .map_err(|e: Error| e.context(format!("layer {i}: invalid diff ID")))?;
            let m = files.open(path)?.ok_or_else(|| {
                bad_input(format!(
                    "layer {i}: {} is missing from the archive",
                    go_quote(path)
                ))
            })?;
            let size = uncompressed_size(m)?;
            let desc = manifest::Desc {
                media_type: DOCKER_LAYER_GZIP.to_string(),
                digest: digest.clone(),
                size,
                annotations: Default::default(),
                urls: Vec::new(),
                platform: None,
            };
            out_layers.push(DockerDescriptorOut {
                media_type: DOCKER_LAYER_GZIP.into(),
                size,
                digest: digest.to_string(),
                urls: Vec::new(),
            });
            layers.push(SourceLayer {
                desc,
                docker_path: Some(path.clone()),
            });
        }
        // The manifest containers/image generates for the item (and stores).
        let generated = DockerManifestOut {
            schema_version: 2,
            media_type: DOCKER_MANIFEST.into(),
            config: DockerDescriptorOut {
                media_type: DOCKER_CONFIG.into(),
                size: config.len() as u64,
                digest: config_digest.to_string(),
                urls: Vec::new(),
            },
            layers: out_layers,
        };
        let bytes = manifest::go_json(&generated)?;
        let parsed = manifest::parse(bytes, Some(DOCKER_MANIFEST))?;
        Ok(Source {
            files,
            top: None,
            manifest: parsed,
            config,
            config_digest,
            layers,
            repo_tags,
        })
    }

    /// The diff IDs of the config (empty when it has none).
    pub(crate) fn diff_ids(&self) -> Result<Vec<String>> {
        Ok(ConfigInfo::parse(&self.config)?.diff_ids())
    }

    /// A reader of layer `i`'s blob as the manifest describes it (for `docker-archive:`,
    /// the decompressed tar), and its length.
    pub(crate) fn layer_reader(&self, i: usize) -> Result<(Box<dyn Read + Send>, u64)> {
        let l = self
            .layers
            .get(i)
            .ok_or_else(|| Error::msg(ErrorKind::Other, format!("no layer {i}")))?;
        match &l.docker_path {
            None => {
                let m = self.blob(&l.desc.digest)?;
                let size = m.size;
                Ok((Box::new(m.reader()?), size))
            }
            Some(path) => {
                let m = self.files.open(path)?.ok_or_else(|| {
                    bad_input(format!(
                        "layer {i}: {} is missing from the archive",
                        go_quote(path)
                    ))
                })?;
                Ok((decompressed(m)?, l.desc.size))
            }
        }
    }
}

/// The member's compression and a reader of all of its content.
fn peeked(m: Member) -> Result<(crate::archive::Compression, Box<dyn Read + Send>)> {
    let mut r = m.reader()?;
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(Error::msg(ErrorKind::Io, format!("reading layer: {e}"))),
        }
    }
    let compression = crate::archive::detect_compression(&head[..n]);
    let whole = std::io::Cursor::new(head[..n].to_vec()).chain(r);
    Ok((compression, Box::new(whole)))
}

/// The member's content, decompressed when it is compressed.
fn decompressed(m: Member) -> Result<Box<dyn Read + Send>> {
    let (compression, whole) = peeked(m)?;
    if compression == crate::archive::Compression::None {
        return Ok(whole);
    }
    Ok(Box::new(crate::archive::open_diff(whole).map_err(|e| {
        bad_input(format!("decompressing layer: {e}"))
    })?))
}

/// The length of a (possibly compressed) layer member once decompressed.
fn uncompressed_size(m: Member) -> Result<u64> {
    let size = m.size;
    let (compression, whole) = peeked(m)?;
    if compression == crate::archive::Compression::None {
        return Ok(size);
    }
    let mut d = crate::archive::open_diff(whole)
        .map_err(|e| bad_input(format!("decompressing layer: {e}")))?;
    std::io::copy(&mut d, &mut std::io::sink())
        .map_err(|e| bad_input(format!("decompressing layer: {e}")))
}
