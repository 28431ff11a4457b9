//! Commands that work on any kind of record.

use std::collections::BTreeMap;

use containers_storage::types::to_go_json_line;
use containers_storage::{NamesOp, RecordKind};

use super::{Ctx, open_error, out};

fn out_bytes(b: &[u8]) -> Result<(), String> {
    out(&String::from_utf8_lossy(b))
}

/// `get-names ID`.
pub(crate) fn get_names(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let names = ctx.store.names(&ctx.args[0]).map_err(|e| e.to_string())?;
    if ctx.json() {
        out_bytes(&to_go_json_line(&names))?;
    } else {
        out(&names.iter().map(|n| format!("{n}\n")).collect::<String>())?;
    }
    Ok(0)
}

fn update(ctx: &mut Ctx<'_>, op: NamesOp) -> Result<i32, String> {
    let names = ctx.flags.list("-name");
    let result = ctx
        .store
        .update_names(&ctx.args[0], &names, op)
        .map_err(|e| e.to_string())?;
    if ctx.json() {
        out_bytes(&to_go_json_line(&result))?;
    }
    Ok(0)
}

/// `add-names -n NAME… ID`.
pub(crate) fn add_names(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    update(ctx, NamesOp::Add)
}

/// `set-names -n NAME… ID`.
pub(crate) fn set_names(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    update(ctx, NamesOp::Set)
}

/// `remove-names -n NAME… ID`.
pub(crate) fn remove_names(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    update(ctx, NamesOp::Remove)
}

/// `metadata ID…`.
pub(crate) fn metadata(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut missed = false;
    for arg in ctx.args {
        match ctx.store.metadata(arg) {
            Ok(m) => {
                let m = m.strip_suffix('\n').unwrap_or(&m).to_string();
                found.insert(arg.clone(), m);
            }
            Err(_) => missed = true,
        }
    }
    if ctx.json() {
        out_bytes(&to_go_json_line(&found))?;
    } else {
        let quiet = ctx.flags.bool("-quiet");
        let mut s = String::new();
        for arg in ctx.args {
            let value = found.get(arg).map(String::as_str).unwrap_or("");
            if quiet {
                s.push_str(&format!("{value}\n"));
            } else {
                s.push_str(&format!("{arg}: {value}\n"));
            }
        }
        out(&s)?;
    }
    Ok(if missed { 1 } else { 0 })
}

/// `set-metadata -m TEXT | -f FILE ID`.
pub(crate) fn set_metadata(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let file = ctx.flags.str("-metadata-file");
    let mut metadata = ctx.flags.str("-metadata");
    if !file.is_empty() {
        metadata = std::fs::read_to_string(&file).map_err(open_error(&file))?;
    }
    if metadata.is_empty() {
        return Err("no new metadata provided".into());
    }
    ctx.store
        .set_metadata(&ctx.args[0], &metadata)
        .map_err(|e| e.to_string())?;
    Ok(0)
}

/// `exists [-l|-i|-c] ID…`.
pub(crate) fn exists(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let mut dict: BTreeMap<String, bool> = BTreeMap::new();
    let mut order = Vec::new();
    let mut any_missing = false;
    for arg in ctx.args {
        let kinds = ctx.store.kinds_of(arg).map_err(|e| e.to_string())?;
        let exists = !kinds.is_empty();
        if !dict.contains_key(arg) {
            order.push(arg.clone());
        }
        dict.insert(arg.clone(), exists);
        let mut ok = exists;
        if ctx.flags.bool("-container") && !kinds.contains(&RecordKind::Container) {
            ok = false;
        }
        // Go checks `-i` with `Store.Image`, which skips a read-only record shadowed by its
        // pulled-up copy: a name removed from the copy exists, but not as an image.
        if ctx.flags.bool("-image")
            && (!kinds.contains(&RecordKind::Image) || ctx.store.image(arg).is_err())
        {
            ok = false;
        }
        if ctx.flags.bool("-layer") && !kinds.contains(&RecordKind::Layer) {
            ok = false;
        }
        if !ok {
            any_missing = true;
        }
    }
    if ctx.json() {
        out_bytes(&to_go_json_line(&dict))?;
    } else if !ctx.flags.bool("-quiet") {
        out(&order
            .iter()
            .map(|a| format!("{a}: {}\n", dict[a]))
            .collect::<String>())?;
    }
    Ok(if any_missing { 1 } else { 0 })
}
