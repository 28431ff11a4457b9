//! `import-image` and `export-image`: images in and out of the store through
//! `storage-oci` (the same records podman's and skopeo's copies write).

use std::sync::Arc;

use containers_storage::oci::{
    Compression, ExportOptions, ImageRef, ImportOptions, Platform, Progress, Transport,
    export_image, import_image,
};

use super::{Ctx, out};
use crate::flags::{FlagSpec, Kind, flag};
use crate::progress::LayerBars;

/// Flags of `import-image`.
pub(crate) const IMPORT_FLAGS: &[FlagSpec] = &[
    flag(
        &["-name", "n"],
        Kind::List,
        "Image name (default: a docker-archive's RepoTags)",
    ),
    flag(
        &["-platform"],
        Kind::Str,
        "Platform to pick from an index, OS/ARCH[/VARIANT] (default: this host's)",
    ),
    super::JSON,
];

/// Flags of `export-image`.
pub(crate) const EXPORT_FLAGS: &[FlagSpec] = &[
    flag(
        &["-format", "f"],
        Kind::Str,
        "Format of a DESTINATION given without transport: oci, oci-archive or docker-archive (default: oci)",
    ),
    flag(
        &["-compress", "c"],
        Kind::Str,
        "Layer compression: none, gzip or zstd (default: none)",
    ),
    super::JSON,
];

fn progress() -> Option<Arc<dyn Progress>> {
    LayerBars::new().map(|b| b as Arc<dyn Progress>)
}

/// `import-image [--name NAME…] [--platform OS/ARCH] SOURCE`.
pub(crate) fn import(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let src = &ctx.args[0];
    let source = ImageRef::parse(src).map_err(|e| e.to_string())?;
    let platform = match ctx.flags.str("-platform") {
        p if p.is_empty() => None,
        p => Some(Platform::parse(&p).map_err(|e| e.to_string())?),
    };
    let opts = ImportOptions {
        names: ctx.flags.list("-name"),
        platform,
        progress: progress(),
    };
    let done =
        import_image(ctx.store, &source, &opts).map_err(|e| format!("importing {src}: {e}"))?;
    let json = containers_storage::types::to_go_json_line(&done.image);
    super::records::print_id_and_names(ctx, &done.image.id, &done.image.names, json)?;
    Ok(0)
}

/// `export-image [--format F] [--compress C] IMAGE DESTINATION`.
pub(crate) fn export(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let (key, dst) = (&ctx.args[0], &ctx.args[1]);
    let format = ctx.flags.str("-format");
    let given = match format.as_str() {
        "" => None,
        f => Some(Transport::from_name(f).ok_or_else(|| {
            format!("export-image: unknown format {f:?} (oci, oci-archive or docker-archive)")
        })?),
    };
    let has_transport = dst
        .split_once(':')
        .is_some_and(|(t, _)| Transport::from_name(t).is_some());
    let dest = if has_transport {
        let d = ImageRef::parse(dst).map_err(|e| e.to_string())?;
        if let Some(f) = given.filter(|f| *f != d.transport) {
            return Err(format!(
                "export-image: --format {f} does not match the destination {dst}"
            ));
        }
        d
    } else {
        ImageRef::parse_with(given.unwrap_or(Transport::Oci), dst).map_err(|e| e.to_string())?
    };
    let compression = match ctx.flags.str("-compress").as_str() {
        "" | "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        other => {
            return Err(format!(
                "export-image: unknown compression {other:?} (none, gzip or zstd)"
            ));
        }
    };
    let opts = ExportOptions {
        compression,
        progress: progress(),
    };
    let done = export_image(ctx.store, key, &dest, &opts)
        .map_err(|e| format!("exporting {key} to {dest}: {e}"))?;
    if ctx.json() {
        let layers: Vec<serde_json::Value> = done
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "digest": l.digest.to_string(),
                    "size": l.size,
                    "diff-id": l.diff_id.to_string(),
                    "media-type": l.media_type,
                })
            })
            .collect();
        let v = serde_json::json!({
            "id": done.image_id,
            "manifest-digest": done.manifest_digest.to_string(),
            "config-digest": done.config_digest.to_string(),
            "layers": layers,
        });
        out(&format!("{v}\n"))?;
    } else {
        out(&format!("{}\n", done.manifest_digest))?;
    }
    Ok(0)
}
