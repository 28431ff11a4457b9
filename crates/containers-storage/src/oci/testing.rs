//! Writing small OCI image layouts by hand, for examples, tests and benchmarks (no registry
//! and no other tool needed).

use std::path::Path;

use crate::types::{Digest, Error, ErrorKind, Result};

use crate::oci::manifest::{
    self, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST,
    OciDescriptorOut, OciManifestOut, REF_NAME,
};

fn io(e: std::io::Error) -> Error {
    Error::msg(ErrorKind::Io, crate::types::go_io_error_text(&e))
}

/// A tar of regular files (mode 0644, owned by root, mtime 0), as a layer.
pub fn tar_of(files: &[(&str, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, name, &data[..]).map_err(io)?;
    }
    b.into_inner().map_err(io)
}

/// Writes an OCI layout at `dir` holding one image tagged `tag`, whose layers (base first)
/// are tars of the given files. Returns the manifest's digest.
pub fn write_layout(dir: &Path, tag: &str, layers: &[Vec<(&str, Vec<u8>)>]) -> Result<Digest> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| Error::io("mkdir", &blobs, e))?;
    let mut files = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let p = dir.join(format!(".layer-{i}.tar"));
        std::fs::write(&p, tar_of(l)?).map_err(|e| Error::io("write", &p, e))?;
        files.push(p);
    }
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let d = write_layout_from_files(dir, tag, &refs)?;
    for p in files {
        let _ = std::fs::remove_file(p);
    }
    Ok(d)
}

/// Writes an OCI layout at `dir` holding one image tagged `tag` whose layers (base first) are
/// the given tar files (plain, gzip or zstd; hard-linked into the layout when possible,
/// else copied). The config has `created` 2026-01-01, `linux`/this host's architecture and
/// the diff IDs. Returns the manifest's digest.
pub fn write_layout_from_files(dir: &Path, tag: &str, layers: &[&Path]) -> Result<Digest> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| Error::io("mkdir", &blobs, e))?;
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for path in layers {
        let f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        let mut d = crate::archive::open_diff(Box::new(f))
            .map_err(|e| Error::msg(ErrorKind::InvalidInput, e.to_string()))?;
        let compression = d.compression();
        std::io::copy(&mut d, &mut std::io::sink()).map_err(io)?;
        let stats = d
            .finish()
            .map_err(|e| Error::msg(ErrorKind::InvalidInput, e.to_string()))?;
        let target = blobs.join(stats.compressed_digest.encoded());
        if !target.exists() && std::fs::hard_link(path, &target).is_err() {
            std::fs::copy(path, &target).map_err(|e| Error::io("copy", path, e))?;
        }
        let media_type = match compression {
            crate::archive::Compression::None => OCI_LAYER,
            crate::archive::Compression::Gzip => OCI_LAYER_GZIP,
            crate::archive::Compression::Zstd => OCI_LAYER_ZSTD,
            other => {
                return Err(Error::msg(
                    ErrorKind::NotSupported,
                    format!("{other:?} layers have no OCI media type"),
                ));
            }
        };
        descs.push(OciDescriptorOut::new(
            media_type,
            &stats.compressed_digest,
            u64::try_from(stats.compressed_size).unwrap_or(0),
        ));
        diff_ids.push(stats.uncompressed_digest.to_string());
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "2026-01-01T00:00:00Z",
        "architecture": crate::oci::Platform::host().architecture,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .map_err(|e| Error::msg(ErrorKind::Other, e.to_string()))?;
    let put = |data: &[u8]| -> Result<OciDescriptorOut> {
        let d = Digest::sha256(data);
        let p = blobs.join(d.encoded());
        std::fs::write(&p, data).map_err(|e| Error::io("write", &p, e))?;
        Ok(OciDescriptorOut::new("", &d, data.len() as u64))
    };
    let mut config_desc = put(&config)?;
    config_desc.media_type = OCI_CONFIG.into();
    let m = manifest::go_json(&OciManifestOut {
        schema_version: 2,
        media_type: OCI_MANIFEST.into(),
        config: config_desc,
        layers: descs,
        annotations: Default::default(),
    })?;
    let mut mdesc = put(&m)?;
    mdesc.media_type = OCI_MANIFEST.into();
    mdesc.annotations.insert(REF_NAME.into(), tag.into());
    let digest = mdesc.digest.clone();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [mdesc],
    });
    let write = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, data).map_err(|e| Error::io("write", &p, e))
    };
    write("index.json", index.to_string().as_bytes())?;
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    digest.parse()
}
