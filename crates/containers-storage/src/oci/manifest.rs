//! Manifests, indexes and configs: media types, parsing (with `oci-spec`'s image-spec types),
//! and writing in the exact JSON form Go's `encoding/json` gives them.

use std::collections::BTreeMap;

use crate::types::{Digest, Error, ErrorKind, Result, go_quote};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::oci::files::bad_input;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer (also what `docker-archive:` sources label every layer).
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The annotation naming an entry of an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation marking zstd instances of a multi-compression index.
pub const ZSTD_INSTANCE: &str = "io.github.containers.compression.zstd";
/// Layer annotations dropped when a layer is offered uncompressed (containers/image's
/// `LayerInfosForCopy`): they describe the compressed blob.
pub const COMPRESSED_ONLY_ANNOTATIONS: &[&str] = &[
    "io.github.containers.zstd-chunked.manifest-checksum",
    "io.github.containers.zstd-chunked.manifest-position",
    "io.github.containers.zstd-chunked.tarsplit-position",
    "containerd.io/snapshot/stargz/toc.digest",
    "io.github.containers.estargz.uncompressed-size",
];

/// Largest manifest, index or config read into memory (containers/image's limit).
pub const MAX_JSON: u64 = 4 << 20;

/// What a manifest-like document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// OCI image manifest.
    OciManifest,
    /// Docker schema 2 manifest.
    DockerManifest,
    /// OCI image index.
    OciIndex,
    /// Docker manifest list.
    DockerList,
}

impl Kind {
    /// The media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Kind::OciManifest => OCI_MANIFEST,
            Kind::DockerManifest => DOCKER_MANIFEST,
            Kind::OciIndex => OCI_INDEX,
            Kind::DockerList => DOCKER_LIST,
        }
    }

    fn from_media_type(mt: &str) -> Result<Kind> {
        match mt {
            OCI_MANIFEST => Ok(Kind::OciManifest),
            DOCKER_MANIFEST => Ok(Kind::DockerManifest),
            OCI_INDEX => Ok(Kind::OciIndex),
            DOCKER_LIST => Ok(Kind::DockerList),
            DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Err(Error::msg(
                ErrorKind::NotSupported,
                format!("unsupported manifest type {mt} (Docker schema 1)"),
            )),
            other => Err(bad_input(format!(
                "unsupported manifest MIME type {}",
                go_quote(other)
            ))),
        }
    }

    /// An index or list (as opposed to an image manifest).
    pub fn is_index(self) -> bool {
        matches!(self, Kind::OciIndex | Kind::DockerList)
    }
}

/// A descriptor, with the digest validated like go-digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desc {
    /// Media type.
    pub media_type: String,
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Annotations, sorted (Go writes map keys sorted).
    pub annotations: BTreeMap<String, String>,
    /// URLs.
    pub urls: Vec<String>,
    /// Platform: (os, architecture, variant).
    pub platform: Option<(String, String, String)>,
}

impl Desc {
    /// Converts `oci-spec`'s descriptor.
    pub(crate) fn from_spec(d: &Descriptor) -> Result<Desc> {
        let digest: Digest = d
            .digest()
            .to_string()
            .parse()
            .map_err(|e: Error| e.context("invalid descriptor digest"))?;
        Ok(Desc {
            media_type: d.media_type().to_string(),
            digest,
            size: d.size(),
            annotations: d
                .annotations()
                .as_ref()
                .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            urls: d.urls().clone().unwrap_or_default(),
            platform: d.platform().as_ref().map(|p| {
                (
                    p.os().to_string(),
                    p.architecture().to_string(),
                    p.variant().clone().unwrap_or_default(),
                )
            }),
        })
    }
}

/// A parsed manifest or index, with its bytes.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// What it is.
    pub kind: Kind,
    /// The bytes as read.
    pub bytes: Vec<u8>,
    /// sha256 of the bytes.
    pub digest: Digest,
    /// Image manifests: the config.
    pub config: Option<Desc>,
    /// Image manifests: the layers, base first. Indexes: the instances.
    pub entries: Vec<Desc>,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<ProbeConfig>,
}

#[derive(Deserialize)]
struct ProbeConfig {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
}

/// containers/image's `GuessMIMEType`: the document's own `mediaType`, else its shape.
fn guess_kind(bytes: &[u8]) -> Result<Kind> {
    let p: Probe =
        serde_json::from_slice(bytes).map_err(|e| bad_input(format!("parsing manifest: {e}")))?;
    if let Some(mt) = p.media_type.as_deref().filter(|m| !m.is_empty()) {
        return Kind::from_media_type(mt);
    }
    if p.schema_version == Some(1) {
        return Kind::from_media_type(DOCKER_SCHEMA1);
    }
    if p.manifests.is_some() {
        return Ok(Kind::OciIndex);
    }
    match p.config.and_then(|c| c.media_type) {
        Some(mt) if mt == DOCKER_CONFIG => Ok(Kind::DockerManifest),
        Some(_) => Ok(Kind::OciManifest),
        None => Err(bad_input("unrecognized manifest format".into())),
    }
}

/// Parses a manifest or index; `declared` is the media type its descriptor gave, if any
/// (it must agree with the document's own).
pub fn parse(bytes: Vec<u8>, declared: Option<&str>) -> Result<Parsed> {
    let kind = guess_kind(&bytes)?;
    if let Some(d) = declared.filter(|d| !d.is_empty())
        && d != kind.media_type()
    {
        // An unknown or schema 1 declared type is reported as such.
        let declared_kind = Kind::from_media_type(d)?;
        return Err(bad_input(format!(
            "manifest has media type {} but its descriptor says {}",
            kind.media_type(),
            declared_kind.media_type()
        )));
    }
    let digest = Digest::sha256(&bytes);
    let spec_err = |e: oci_spec::OciSpecError| bad_input(format!("parsing manifest: {e}"));
    let annotations = |a: &Option<std::collections::HashMap<String, String>>| {
        a.as_ref()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let (config, entries, ann) = if kind.is_index() {
        let idx = ImageIndex::from_reader(&bytes[..]).map_err(spec_err)?;
        let entries = idx
            .manifests()
            .iter()
            .map(Desc::from_spec)
            .collect::<Result<Vec<_>>>()?;
        (None, entries, annotations(idx.annotations()))
    } else {
        let m = ImageManifest::from_reader(&bytes[..]).map_err(spec_err)?;
        let layers = m
            .layers()
            .iter()
            .map(Desc::from_spec)
            .collect::<Result<Vec<_>>>()?;
        (
            Some(Desc::from_spec(m.config())?),
            layers,
            annotations(m.annotations()),
        )
    };
    Ok(Parsed {
        kind,
        bytes,
        digest,
        config,
        entries,
        annotations: ann,
    })
}

/// Checks an image manifest's config and layer media types: the config must be an image
/// config (HEAD rejects OCI manifests with other config types), layers plain, gzip or zstd
/// tars (encrypted or unknown layers cannot be applied).
pub fn check_image_manifest(m: &Parsed) -> Result<()> {
    let Some(config) = &m.config else {
        return Err(bad_input("manifest has no config".into()));
    };
    match (m.kind, config.media_type.as_str()) {
        (Kind::OciManifest, OCI_CONFIG) | (Kind::DockerManifest, DOCKER_CONFIG) => {}
        (Kind::OciManifest, other) => {
            return Err(bad_input(format!(
                "unsupported image-specific operation on artifact with type {}",
                go_quote(other)
            )));
        }
        (_, other) => {
            return Err(bad_input(format!(
                "unsupported config MIME type {}",
                go_quote(other)
            )));
        }
    }
    for (i, l) in m.entries.iter().enumerate() {
        if layer_compression_of(&l.media_type).is_none() {
            return Err(bad_input(format!(
                "layer {i} ({}): unsupported layer MIME type {}",
                l.digest,
                go_quote(&l.media_type)
            )));
        }
    }
    Ok(())
}

/// The compression a layer media type announces (`Some(None)` for plain tars), or `None`
/// for a media type that is not a layer we can apply.
pub fn layer_compression_of(mt: &str) -> Option<Option<crate::archive::Compression>> {
    use crate::archive::Compression;
    match mt {
        OCI_LAYER | DOCKER_LAYER | "application/vnd.oci.image.layer.nondistributable.v1.tar" => {
            Some(None)
        }
        OCI_LAYER_GZIP
        | DOCKER_LAYER_GZIP
        | DOCKER_FOREIGN_LAYER_GZIP
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
            Some(Some(Compression::Gzip))
        }
        OCI_LAYER_ZSTD | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
            Some(Some(Compression::Zstd))
        }
        _ => None,
    }
}

/// The fields of an image config this crate needs (parsed leniently, like Go's
/// `imgspecv1.Image`: every field optional).
#[derive(Debug, Default, Deserialize)]
pub struct ConfigInfo {
    /// `created`, as written.
    #[serde(default)]
    pub created: Option<String>,
    /// `rootfs`.
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

/// `rootfs` of a config.
#[derive(Debug, Default, Deserialize)]
pub struct RootFs {
    /// `diff_ids`.
    #[serde(default)]
    pub diff_ids: Option<Vec<String>>,
}

impl ConfigInfo {
    /// Parses a config.
    pub fn parse(bytes: &[u8]) -> Result<ConfigInfo> {
        serde_json::from_slice(bytes).map_err(|e| bad_input(format!("parsing image config: {e}")))
    }

    /// The diff IDs (empty when missing).
    pub fn diff_ids(&self) -> Vec<String> {
        self.rootfs
            .as_ref()
            .and_then(|r| r.diff_ids.clone())
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------- writing

/// An OCI platform in Go's field order.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformOut {
    /// Architecture.
    pub architecture: String,
    /// OS.
    pub os: String,
    /// OS version.
    #[serde(rename = "os.version", skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// OS features.
    #[serde(rename = "os.features", skip_serializing_if = "Option::is_none")]
    pub os_features: Option<Vec<String>>,
    /// CPU variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An OCI descriptor in Go's field order (`mediaType, digest, size, urls, annotations,
/// data, platform, artifactType`).
#[derive(Debug, Clone, Serialize)]
pub struct OciDescriptorOut {
    /// Media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Digest.
    pub digest: String,
    /// Size.
    pub size: u64,
    /// URLs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Embedded data (base64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Platform.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformOut>,
    /// Artifact type.
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl OciDescriptorOut {
    /// A descriptor with only a media type, digest and size.
    pub fn new(media_type: &str, digest: &Digest, size: u64) -> Self {
        OciDescriptorOut {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            data: None,
            platform: None,
            artifact_type: None,
        }
    }

    /// From a parsed descriptor, with another media type, digest and size.
    pub fn like(d: &Desc, media_type: &str, digest: &Digest, size: u64) -> Self {
        OciDescriptorOut {
            urls: d.urls.clone(),
            annotations: d.annotations.clone(),
            ..Self::new(media_type, digest, size)
        }
    }

    /// `oci-spec`'s descriptor, every field kept.
    pub fn from_spec(d: &Descriptor) -> Result<Self> {
        let desc = Desc::from_spec(d)?;
        Ok(OciDescriptorOut {
            data: d.data().clone(),
            platform: d.platform().as_ref().map(|p| PlatformOut {
                architecture: p.architecture().to_string(),
                os: p.os().to_string(),
                os_version: p.os_version().clone(),
                os_features: p.os_features().clone(),
                variant: p.variant().clone(),
            }),
            artifact_type: d.artifact_type().as_ref().map(|a| a.to_string()),
            ..Self::like(&desc, &desc.media_type, &desc.digest, desc.size)
        })
    }
}

/// An OCI image manifest in Go's field order.
#[derive(Debug, Clone, Serialize)]
pub struct OciManifestOut {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// [`OCI_MANIFEST`].
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The config.
    pub config: OciDescriptorOut,
    /// The layers.
    pub layers: Vec<OciDescriptorOut>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A Docker schema 2 descriptor in Go's field order (`mediaType, size, digest, urls`).
#[derive(Debug, Clone, Serialize)]
pub struct DockerDescriptorOut {
    /// Media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Size.
    pub size: u64,
    /// Digest.
    pub digest: String,
    /// URLs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

/// A Docker schema 2 manifest in Go's field order.
#[derive(Debug, Clone, Serialize)]
pub struct DockerManifestOut {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// [`DOCKER_MANIFEST`].
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The config.
    pub config: DockerDescriptorOut,
    /// The layers.
    pub layers: Vec<DockerDescriptorOut>,
}

/// Go's compact JSON of `v`.
pub fn go_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    crate::types::try_to_go_json(v)
}
