//! `copy [srcLayer:]/path… targetLayer:/path` (Go's `copyContent` + `CopyWithTar`): the
//! layers are mounted here, the copy itself is `containers_storage::copy_with_tar` (which
//! keeps both ends inside their layer).

use containers_storage::drivers::MountOpts;
use containers_storage::types::{IdMap, go_quote};
use containers_storage::{CopyOwners, CopyPath};

use super::Ctx;

fn parse_id(s: &str, what: &str) -> Result<u32, String> {
    s.parse::<u32>().map_err(|e| {
        let reason = match e.kind() {
            std::num::IntErrorKind::PosOverflow => "value out of range",
            _ => "invalid syntax",
        };
        format!(
            "bad {what}: strconv.ParseUint: parsing {}: {reason}",
            go_quote(s)
        )
    })
}

/// `copy`.
pub(crate) fn copy(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let chown = ctx.flags.str("-chown");
    let chown = if chown.is_empty() {
        None
    } else {
        let (u, g) = chown.split_once(':').unwrap_or((&chown, &chown));
        Some((parse_id(u, "UID")?, parse_id(g, "GID")?))
    };
    let Some((target_spec, sources)) = ctx.args.split_last() else {
        return Ok(1);
    };
    let mut mounted: Vec<String> = Vec::new();
    let result = (|| -> Result<(), String> {
        // One end of the copy: a host path, or `LAYER:PATH` with the layer mounted, and
        // the layer's ID maps.
        let mut end = |spec: &str| -> Result<(CopyPath, Vec<IdMap>, Vec<IdMap>), String> {
            let Some((layer, path)) = spec.split_once(':') else {
                return Ok((CopyPath::host(spec), Vec::new(), Vec::new()));
            };
            let (l, _) = ctx
                .store
                .layer(layer)
                .map_err(|e| format!("error finding layer {}: {e}", go_quote(layer)))?;
            let opts = MountOpts {
                mount_label: l.mount_label.clone(),
                ..MountOpts::default()
            };
            let mp = ctx
                .store
                .mount(&l.id, &opts)
                .map_err(|e| format!("error mounting layer {}: {e}", go_quote(&l.id)))?;
            mounted.push(l.id.clone());
            Ok((CopyPath::in_layer(mp, path), l.uidmap, l.gidmap))
        };
        let (target, target_uid, target_gid) = end(target_spec)?;
        let mut owners = CopyOwners {
            chown,
            target_uid,
            target_gid,
            ..CopyOwners::default()
        };
        // Go names the target `<mount point>/<path>` in messages.
        let mut target_shown = target.display().to_string_lossy().into_owned();
        if target.path.ends_with('/') && !target_shown.ends_with('/') {
            target_shown.push('/');
        }
        for spec in sources {
            let source;
            (source, owners.source_uid, owners.source_gid) = end(spec)?;
            containers_storage::copy_with_tar(&source, &target, &owners).map_err(|e| {
                format!(
                    "error copying {} to {}: {e}",
                    go_quote(&source.display().to_string_lossy()),
                    go_quote(&target_shown)
                )
            })?;
        }
        Ok(())
    })();
    for id in mounted.iter().rev() {
        let _ = ctx.store.unmount(id, false);
    }
    result.map(|()| 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ids_use_go_wording() {
        assert_eq!(
            parse_id("x", "UID").unwrap_err(),
            "bad UID: strconv.ParseUint: parsing \"x\": invalid syntax"
        );
    }
}
