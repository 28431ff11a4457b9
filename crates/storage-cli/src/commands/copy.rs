//! `copy [srcLayer:]/path… targetLayer:/path` (Go's `copyContent`): the arguments parsed
//! into the ends of one `Store::copy`, which mounts the layers and copies.

use containers_storage::CopyEnd;
use containers_storage::types::go_quote;

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
    let end = |spec: &String| match spec.split_once(':') {
        Some((layer, path)) => CopyEnd::Layer {
            layer: layer.to_string(),
            path: path.to_string(),
        },
        None => CopyEnd::Host(spec.clone()),
    };
    let sources: Vec<CopyEnd> = sources.iter().map(end).collect();
    ctx.store
        .copy(&sources, &end(target_spec), chown)
        .map_err(|e| e.to_string())?;
    Ok(0)
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
