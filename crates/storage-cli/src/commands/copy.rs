//! `copy [srcLayer:]/path… targetLayer:/path` (Go's `copyContent` + `CopyWithTar`): the
//! layers are mounted here, the copy itself is `containers_storage::copy_with_tar` (which
//! keeps both ends inside their layer).

use std::path::PathBuf;

use containers_storage::{CopyOwners, CopyPath};
use storage_drivers::MountOpts;

use super::Ctx;

fn parse_id(s: &str, what: &str) -> Result<u32, String> {
    s.parse::<u32>().map_err(|e| {
        let reason = match e.kind() {
            std::num::IntErrorKind::PosOverflow => "value out of range",
            _ => "invalid syntax",
        };
        format!(
            "bad {what}: strconv.ParseUint: parsing {}: {reason}",
            storage_types::go_quote(s)
        )
    })
}

/// `copy`.
pub fn copy(ctx: &mut Ctx<'_>) -> Result<i32, String> {
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
        // Mounts `layer`: its mount point and ID maps.
        let mut mount = |layer: &str| -> Result<(PathBuf, storage_types::Layer), String> {
            let (l, _) = ctx.store.layer(layer).map_err(|e| {
                format!(
                    "error finding layer {}: {e}",
                    storage_types::go_quote(layer)
                )
            })?;
            let opts = MountOpts {
                mount_label: l.mount_label.clone(),
                ..MountOpts::default()
            };
            let mp = ctx.store.mount(&l.id, &opts).map_err(|e| {
                format!(
                    "error mounting layer {}: {e}",
                    storage_types::go_quote(&l.id)
                )
            })?;
            mounted.push(l.id.clone());
            Ok((mp, l))
        };
        let mut owners = CopyOwners {
            chown,
            ..CopyOwners::default()
        };
        let target = match target_spec.split_once(':') {
            Some((layer, path)) => {
                let (mp, l) = mount(layer)?;
                owners.target_uid = l.uidmap;
                owners.target_gid = l.gidmap;
                CopyPath::in_layer(mp, path)
            }
            None => CopyPath::host(target_spec),
        };
        // Go names the target `<mount point>/<path>` in messages.
        let mut target_shown = target.display().to_string_lossy().into_owned();
        if target.path.ends_with('/') && !target_shown.ends_with('/') {
            target_shown.push('/');
        }
        for spec in sources {
            let source = match spec.split_once(':') {
                Some((layer, path)) => {
                    let (mp, l) = mount(layer)?;
                    owners.source_uid = l.uidmap;
                    owners.source_gid = l.gidmap;
                    CopyPath::in_layer(mp, path)
                }
                None => {
                    owners.source_uid.clear();
                    owners.source_gid.clear();
                    CopyPath::host(spec)
                }
            };
            containers_storage::copy_with_tar(&source, &target, &owners).map_err(|e| {
                format!(
                    "error copying {} to {}: {e}",
                    storage_types::go_quote(&source.display().to_string_lossy()),
                    storage_types::go_quote(&target_shown)
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
