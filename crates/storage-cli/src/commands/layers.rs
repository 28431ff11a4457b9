//! Layer commands.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use containers_storage::archive::Compression;
use containers_storage::drivers::{ChangeKind, CreateOpts, MountOpts};
use containers_storage::types::{IdMap, Layer, parse_id_maps, to_go_json, to_go_json_line};
use containers_storage::{CreateLayerOptions, DiffOptions};

use containers_storage::Store;

use super::{Ctx, err, open_error, out};
use crate::progress::{ProgressReader, ProgressWriter};

/// ID mappings requested with `--uidmap`, `--gidmap`, `--subuidmap`, `--subgidmap`,
/// `--hostuidmap`, `--hostgidmap`.
pub(crate) struct Mappings {
    /// UID map.
    pub(crate) uid_map: Vec<IdMap>,
    /// GID map.
    pub(crate) gid_map: Vec<IdMap>,
    /// `--hostuidmap`.
    pub(crate) host_uid: bool,
    /// `--hostgidmap`.
    pub(crate) host_gid: bool,
}

/// Go's CLI mapping logic (`getIDMappingOptions`).
pub(crate) fn mappings(ctx: &Ctx<'_>) -> Result<Mappings, String> {
    let f = ctx.flags;
    let mut uid_map = Vec::new();
    let mut gid_map = Vec::new();
    let mut sub_u = f.str("-subuidmap");
    let mut sub_g = f.str("-subgidmap");
    if !sub_u.is_empty() || !sub_g.is_empty() {
        if sub_u.is_empty() {
            sub_u = sub_g.clone();
        }
        if sub_g.is_empty() {
            sub_g = sub_u.clone();
        }
        (uid_map, gid_map) = containers_storage::userns::sub_id_mappings(&sub_u, &sub_g)?;
    }
    uid_map.extend(parse_id_maps(&f.str("-uidmap"), "uid").map_err(|e| e.to_string())?);
    gid_map.extend(parse_id_maps(&f.str("-gidmap"), "gid").map_err(|e| e.to_string())?);
    let host_uid = f.bool("-hostuidmap");
    let host_gid = f.bool("-hostgidmap");
    if host_uid && !uid_map.is_empty() {
        return Err("host uid map specified along with UID mapping".into());
    }
    if host_gid && !gid_map.is_empty() {
        return Err("host gid map specified along with GID mapping".into());
    }
    Ok(Mappings {
        uid_map,
        gid_map,
        host_uid,
        host_gid,
    })
}

fn layer_options(ctx: &Ctx<'_>) -> Result<CreateLayerOptions, String> {
    let m = mappings(ctx)?;
    let id = ctx.flags.str("-id");
    Ok(CreateLayerOptions {
        id: (!id.is_empty()).then_some(id),
        parent: ctx.args.first().cloned(),
        names: ctx.flags.list("-name"),
        mount_label: ctx.flags.str("-label"),
        writeable: !ctx.flags.bool("-readonly"),
        uid_map: m.uid_map,
        gid_map: m.gid_map,
        host_uid_mapping: m.host_uid,
        host_gid_mapping: m.host_gid,
        ..CreateLayerOptions::default()
    })
}

fn print_created(ctx: &Ctx<'_>, layer: &Layer) -> Result<(), String> {
    if ctx.json() {
        out_bytes(&to_go_json_line(layer))
    } else {
        let mut s = format!("{}\n", layer.id);
        for n in &layer.names {
            s.push_str(&format!("\t{n}\n"));
        }
        out(&s)
    }
}

fn out_bytes(b: &[u8]) -> Result<(), String> {
    std::io::stdout()
        .lock()
        .write_all(b)
        .map_err(|e| e.to_string())
}

/// `create-layer [parent]`.
pub(crate) fn create_layer(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let opts = layer_options(ctx)?;
    let (layer, _) = ctx
        .store
        .create_layer(&opts, None)
        .map_err(|e| e.to_string())?;
    print_created(ctx, &layer)?;
    Ok(0)
}

/// Opens `file`, failing with Go's `open FILE: TEXT`.
fn open_file(file: &str) -> Result<std::fs::File, String> {
    std::fs::File::open(file).map_err(open_error(file))
}

fn open_input(file: &str) -> Result<Box<dyn Read + Send>, String> {
    if file.is_empty() {
        let bar = crate::progress::bar(None);
        return Ok(Box::new(ProgressReader::new(std::io::stdin(), bar)));
    }
    let f = open_file(file)?;
    let len = f.metadata().ok().map(|m| m.len());
    Ok(Box::new(ProgressReader::new(f, crate::progress::bar(len))))
}

fn open_data_input(file: &str) -> Result<Box<dyn Read + Send>, String> {
    if file.is_empty() {
        return Ok(Box::new(std::io::stdin()));
    }
    let f = open_file(file)?;
    Ok(Box::new(f))
}

/// `import-layer [parent]`.
pub(crate) fn import_layer(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let opts = layer_options(ctx)?;
    let input = open_input(&ctx.flags.str("-file"))?;
    let (layer, _) = ctx
        .store
        .create_layer(&opts, Some(input))
        .map_err(|e| e.to_string())?;
    print_created(ctx, &layer)?;
    Ok(0)
}

/// `import-layers [--parent LAYER] TAR…`: the tars applied as a chain through
/// [`containers_storage::Store::import_layers`] (prepared in parallel, committed in order).
pub(crate) fn import_layers(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let jobs = match ctx.flags.str("-jobs") {
        j if j.is_empty() => 0,
        j => j
            .parse::<usize>()
            .map_err(|_| format!("invalid value {j:?} for --jobs: not a number of layers"))?,
    };
    let base = layer_options(ctx)?;
    let parent = ctx.flags.str("-parent");
    let files = ctx.args;
    let count = files.len();
    let bars = crate::progress::LayerBars::new();
    let mut items = Vec::with_capacity(count);
    let mut previous: Option<String> = (!parent.is_empty()).then_some(parent);
    for (k, file) in files.iter().enumerate() {
        let f = open_file(file)?;
        if let Some(b) = &bars {
            let label = std::path::Path::new(file)
                .file_name()
                .map_or_else(|| file.clone(), |n| n.to_string_lossy().into_owned());
            b.start(k, count, &label, f.metadata().map_or(0, |m| m.len()));
        }
        // Every layer gets its ID now so that the next one can name it as its parent.
        let id = containers_storage::types::generate_id();
        let opts = CreateLayerOptions {
            id: Some(id.clone()),
            parent: previous.replace(id),
            // The names go to the top layer.
            names: if k + 1 == count {
                base.names.clone()
            } else {
                Vec::new()
            },
            ..base.clone()
        };
        items.push(containers_storage::LayerImport {
            opts,
            diff: Box::new(crate::progress::LayerReader::new(f, bars.clone(), k)),
        });
    }
    let opts = containers_storage::ImportLayersOptions { jobs };
    let (done, failure) = match ctx.store.import_layers(items, &opts) {
        Ok(done) => (done, None),
        Err(e) => (e.committed, Some((e.index, e.error))),
    };
    if let Some(b) = &bars {
        for k in 0..count {
            b.finish(
                k,
                match &failure {
                    _ if k < done.len() => "done",
                    Some((i, _)) if *i == k => "failed",
                    _ => "not applied",
                },
            );
        }
    }
    for (layer, _) in &done {
        if ctx.flags.bool("-quiet") && !ctx.json() {
            out(&format!("{}\n", layer.id))?;
        } else {
            print_created(ctx, layer)?;
        }
    }
    match failure {
        None => Ok(0),
        Some((index, error)) => Err(format!(
            "importing layer {} of {count} ({}): {error}{}",
            index + 1,
            files.get(index).map_or("", String::as_str),
            summary(done.len(), count - done.len() - 1)
        )),
    }
}

/// What became of the other layers of a failed `import-layers` (the failing one aside):
/// ` (2 committed, 1 not applied)`.
fn summary(committed: usize, later: usize) -> String {
    let mut parts = Vec::new();
    if committed > 0 {
        parts.push(format!("{committed} committed"));
    }
    if later > 0 {
        parts.push(format!("{later} not applied"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// `create-storage-layer [parent]`.
pub(crate) fn create_storage_layer(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let m = mappings(ctx)?;
    let mut id = ctx.flags.str("-id");
    if id.is_empty() {
        id = containers_storage::types::generate_id();
    }
    let opts = CreateOpts {
        mount_label: ctx.flags.str("-label"),
        uid_map: m.uid_map,
        gid_map: m.gid_map,
        ..CreateOpts::default()
    };
    let parent = ctx.args.first().map(String::as_str);
    ctx.store
        .create_driver_layer(&id, parent, &opts, !ctx.flags.bool("-readonly"))
        .map_err(|e| e.to_string())?;
    if ctx.json() {
        out_bytes(&to_go_json_line(&id))?;
    } else {
        out(&format!("{id}\n"))?;
    }
    Ok(0)
}

struct TreeNode {
    left: String,
    right: String,
    notes: Vec<String>,
}

fn tree_prefix(width: usize, continued: &[usize]) -> String {
    (0..width)
        .map(|c| if continued.contains(&c) { '│' } else { ' ' })
        .collect()
}

fn print_subtree(
    root: &str,
    nodes: Vec<TreeNode>,
    indent: usize,
    continued: &[usize],
    s: &mut String,
) -> Vec<TreeNode> {
    let (children, mut leftovers): (Vec<TreeNode>, Vec<TreeNode>) =
        nodes.into_iter().partition(|n| n.left == root);
    let count = children.len();
    for (i, child) in children.into_iter().enumerate() {
        let last = i + 1 == count;
        let mut next = continued.to_vec();
        if !last {
            next.push(indent);
        }
        s.push_str(&tree_prefix(indent, continued));
        s.push_str(if last { "└─" } else { "├─" });
        s.push_str(&child.right);
        s.push('\n');
        for note in &child.notes {
            s.push_str(&tree_prefix(indent + 2, &next));
            s.push_str(note);
            s.push('\n');
        }
        leftovers = print_subtree(&child.right, leftovers, indent + 2, &next, s);
    }
    leftovers
}

fn print_tree(mut nodes: Vec<TreeNode>) -> String {
    let mut s = String::new();
    while !nodes.is_empty() {
        let rights: Vec<&str> = nodes.iter().map(|n| n.right.as_str()).collect();
        let root = nodes
            .iter()
            .map(|n| n.left.clone())
            .find(|l| !rights.contains(&l.as_str()))
            .unwrap_or_else(|| nodes[0].left.clone());
        s.push_str(&root);
        s.push('\n');
        let before = nodes.len();
        nodes = print_subtree(&root, nodes, 0, &[], &mut s);
        if nodes.len() == before {
            break;
        }
    }
    s
}

/// `layers`.
pub(crate) fn layers(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let layers = ctx.store.layers().map_err(|e| e.to_string())?;
    if ctx.json() {
        let list: Vec<&Layer> = layers.iter().map(|(l, _)| l).collect();
        if list.is_empty() {
            out("null\n")?;
        } else {
            out_bytes(&to_go_json_line(&list))?;
        }
        return Ok(0);
    }
    let users = ctx.store.layer_users().map_err(|e| e.to_string())?;
    let quick = ctx.flags.bool("-quick");
    let tree = ctx.flags.bool("-tree");
    let mut s = String::new();
    let mut nodes = Vec::new();
    let mounts: BTreeMap<String, String> = if tree {
        layers
            .iter()
            .filter_map(|(l, _)| {
                let count = ctx.store.mounted(&l.id).ok()?;
                if count <= 0 {
                    return None;
                }
                let p = ctx.store.mount_point(&l.id).ok().flatten()?;
                Some((l.id.clone(), p.to_string_lossy().into_owned()))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    for (layer, _) in &layers {
        if quick {
            s.push_str(&format!("{}\n", layer.id));
            continue;
        }
        let images = users.images.get(&layer.id);
        let containers = users.containers.get(&layer.id);
        if tree {
            let mut notes: Vec<String> = layer.names.iter().map(|n| format!("name: {n}")).collect();
            if let Some(m) = mounts.get(&layer.id) {
                notes.push(format!("mount: {m}"));
            }
            for (id, names) in images.into_iter().flatten() {
                notes.push(format!("image: {id}"));
                notes.extend(names.iter().map(|n| format!("image name: {n}")));
            }
            for (id, names) in containers.into_iter().flatten() {
                notes.push(format!("container: {id}"));
                notes.extend(names.iter().map(|n| format!("container name: {n}")));
            }
            nodes.push(TreeNode {
                left: if layer.parent.is_empty() {
                    "(base)".to_string()
                } else {
                    layer.parent.clone()
                },
                right: layer.id.clone(),
                notes,
            });
        } else {
            s.push_str(&format!("{}\n", layer.id));
            for n in &layer.names {
                s.push_str(&format!("\tname: {n}\n"));
            }
            for (id, names) in images.into_iter().flatten() {
                s.push_str(&format!("\timage: {id}\n"));
                for n in names {
                    s.push_str(&format!("\t\tname: {n}\n"));
                }
            }
            for (id, names) in containers.into_iter().flatten() {
                s.push_str(&format!("\tcontainer: {id}\n"));
                for n in names {
                    s.push_str(&format!("\t\tname: {n}\n"));
                }
            }
        }
    }
    if tree && !quick {
        s = print_tree(nodes);
    }
    out(&s)?;
    Ok(0)
}

/// `storage-layers`.
pub(crate) fn storage_layers(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let ids = ctx.store.driver_layers().map_err(|e| e.to_string())?;
    if ctx.json() {
        out_bytes(&to_go_json_line(&ids))?;
    } else {
        out(&ids.iter().map(|i| format!("{i}\n")).collect::<String>())?;
    }
    Ok(0)
}

/// `layer ID…`.
pub(crate) fn layer(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let mut matched: Vec<(Layer, bool)> = Vec::new();
    for arg in ctx.args {
        if let Ok(l) = ctx.store.layer(arg) {
            matched.push(l);
        }
    }
    if ctx.json() {
        let list: Vec<&Layer> = matched.iter().map(|(l, _)| l).collect();
        out_bytes(&to_go_json_line(&list))?;
    } else {
        let mut s = String::new();
        for (l, ro) in &matched {
            s.push_str(&format!("ID: {}\n", l.id));
            for m in &l.uidmap {
                s.push_str(&format!(
                    "UID mapping: (container={}, host={}, size={})\n",
                    m.container_id, m.host_id, m.size
                ));
            }
            for m in &l.gidmap {
                s.push_str(&format!(
                    "GID mapping: (container={}, host={}, size={})\n",
                    m.container_id, m.host_id, m.size
                ));
            }
            if !l.parent.is_empty() {
                s.push_str(&format!("Parent: {}\n", l.parent));
            }
            for n in &l.names {
                s.push_str(&format!("Name: {n}\n"));
            }
            if *ro {
                s.push_str("Read Only: true\n");
            }
        }
        out(&s)?;
    }
    Ok(if matched.len() == ctx.args.len() {
        0
    } else {
        1
    })
}

fn go_int_list(v: &[u32]) -> String {
    let parts: Vec<String> = v.iter().map(u32::to_string).collect();
    format!("[{}]", parts.join(" "))
}

/// The unmapped parent owners of a layer or container: `(uids, gids)`.
type Owners = containers_storage::types::Result<(Vec<u32>, Vec<u32>)>;

/// How `layer-parent-owners` and `container-parent-owners` differ.
pub(crate) struct OwnersCommand<'a> {
    /// Prefix of the error (`LayerParentOwner`, `ContainerParentOwner`).
    pub(crate) what: &'a str,
    /// Print `UIDs:`/`GIDs:` even when empty (the container variant).
    pub(crate) always_both: bool,
    /// Resolves an argument to an ID (`None`: unknown, skipped) …
    pub(crate) resolve: &'a dyn Fn(&str) -> Option<String>,
    /// … and computes its owners.
    pub(crate) owners: &'a dyn Fn(&str) -> Owners,
}

/// `layer-parent-owners`/`container-parent-owners`: one record per resolved argument,
/// printed as it is computed (`--json`: one object per line). Unknown arguments are skipped
/// (exit 1 at the end); the first failure stops the command after what was printed.
pub(crate) fn parent_owners(ctx: &Ctx<'_>, cmd: &OwnersCommand<'_>) -> Result<i32, String> {
    #[derive(serde::Serialize)]
    struct Rec<'a> {
        #[serde(rename = "ID")]
        id: &'a str,
        #[serde(rename = "UIDs")]
        uids: Option<&'a [u32]>,
        #[serde(rename = "GIDs")]
        gids: Option<&'a [u32]>,
    }
    let mut missed = false;
    for arg in ctx.args {
        let Some(id) = (cmd.resolve)(arg) else {
            missed = true;
            continue;
        };
        let (uids, gids) = (cmd.owners)(&id).map_err(|e| format!("{}: {e}", cmd.what))?;
        if ctx.json() {
            let rec = Rec {
                id: &id,
                uids: (!uids.is_empty()).then_some(&uids[..]),
                gids: (!gids.is_empty()).then_some(&gids[..]),
            };
            out_bytes(&to_go_json_line(&rec))?;
            continue;
        }
        let mut s = format!("ID: {id}\n");
        for (label, list) in [("UIDs", &uids), ("GIDs", &gids)] {
            if cmd.always_both || !list.is_empty() {
                s.push_str(&format!("{label}: {}\n", go_int_list(list)));
            }
        }
        out(&s)?;
    }
    Ok(if missed { 1 } else { 0 })
}

/// `layer-parent-owners ID…`.
pub(crate) fn layer_parent_owners(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let store = ctx.store;
    parent_owners(
        ctx,
        &OwnersCommand {
            what: "LayerParentOwner",
            always_both: false,
            resolve: &|arg| store.layer(arg).ok().map(|(l, _)| l.id),
            owners: &|id| store.layer_parent_owners(id),
        },
    )
}

/// `list-layer-data ID`.
pub(crate) fn list_layer_data(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let names = ctx
        .store
        .layer_big_data_names(&ctx.args[0])
        .map_err(|e| e.to_string())?;
    if ctx.json() {
        if names.is_empty() {
            out("null\n")?;
        } else {
            out_bytes(&to_go_json_line(&names))?;
        }
    } else {
        out(&names.iter().map(|n| format!("{n}\n")).collect::<String>())?;
    }
    Ok(0)
}

/// `get-layer-data ID KEY`.
pub(crate) fn get_layer_data(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let (layer, _) = ctx.store.layer(&ctx.args[0]).map_err(|e| e.to_string())?;
    let file = ctx.flags.str("-file");
    let mut output: Box<dyn Write> = if file.is_empty() {
        Box::new(std::io::stdout())
    } else {
        Box::new(std::fs::File::create(&file).map_err(open_error(&file))?)
    };
    let data = ctx
        .store
        .layer_big_data(&layer.id, &ctx.args[1])
        .map_err(|e| e.to_string())?;
    output.write_all(&data).map_err(|e| e.to_string())?;
    output.flush().map_err(|e| e.to_string())?;
    Ok(0)
}

/// `set-layer-data ID KEY`.
pub(crate) fn set_layer_data(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let mut input = open_data_input(&ctx.flags.str("-file"))?;
    ctx.store
        .set_layer_big_data(&ctx.args[0], &ctx.args[1], &mut input)
        .map_err(|e| e.to_string())?;
    Ok(0)
}

/// `delete-layer ID…`.
pub(crate) fn delete_layer(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let store = ctx.store;
    super::records::delete_each(ctx, |a| store.delete_layer(a))
}

fn from_to(ctx: &Ctx<'_>) -> (Option<String>, String) {
    (ctx.args.get(1).cloned(), ctx.args[0].clone())
}

/// `changes LAYER [REF]`.
pub(crate) fn changes(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let (from, to) = from_to(ctx);
    let changes = ctx
        .store
        .changes(from.as_deref(), &to)
        .map_err(|e| e.to_string())?;
    if ctx.json() {
        if changes.is_empty() {
            out("null\n")?;
        } else {
            let items: Vec<String> = changes
                .iter()
                .map(|c| {
                    format!(
                        "{{\"Path\":{},\"Kind\":{}}}",
                        String::from_utf8_lossy(&to_go_json(&c.path)),
                        c.kind as i32
                    )
                })
                .collect();
            out(&format!("[{}]\n", items.join(",")))?;
        }
    } else {
        let mut text = String::with_capacity(changes.len() * 48);
        for c in &changes {
            text.push_str(match c.kind {
                ChangeKind::Add => "Add ",
                ChangeKind::Modify => "Modify ",
                ChangeKind::Delete => "Delete ",
            });
            text.push_str(&containers_storage::types::go_quote(&c.path));
            text.push('\n');
        }
        out(&text)?;
    }
    Ok(0)
}

/// `diffsize LAYER [REF]`.
pub(crate) fn diff_size(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let (from, to) = from_to(ctx);
    let n = ctx
        .store
        .diff_size(from.as_deref(), &to)
        .map_err(|e| e.to_string())?;
    out(&format!("{n}\n"))?;
    Ok(0)
}

/// `diff LAYER [REF]`.
pub(crate) fn diff(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let (from, to) = from_to(ctx);
    let file = ctx.flags.str("-file");
    let mut output: Box<dyn Write> = if file.is_empty() {
        // Unbuffered like Go's os.Stdout (not std's line-buffered stdout, which splits a tar
        // stream at its newlines); BufWriter below gathers small pieces.
        use std::os::fd::AsFd;
        match std::io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => Box::new(std::fs::File::from(fd)),
            Err(_) => Box::new(std::io::stdout().lock()),
        }
    } else {
        Box::new(std::fs::File::create(&file).map_err(open_error(&file))?)
    };
    let mut compression = None;
    if ctx.flags.bool("-uncompressed") {
        compression = Some(Compression::None);
    }
    if ctx.flags.bool("-gzip") {
        compression = Some(Compression::Gzip);
    }
    if ctx.flags.bool("-bzip2") {
        compression = Some(Compression::Bzip2);
    }
    if ctx.flags.bool("-xz") {
        compression = Some(Compression::Xz);
    }
    let opts = DiffOptions { compression };
    let mut progress = ProgressWriter::new(&mut output, crate::progress::bar(None));
    let mut buffered = std::io::BufWriter::with_capacity(256 * 1024, &mut progress);
    ctx.store
        .diff(from.as_deref(), &to, &opts, &mut buffered)
        .map_err(|e| e.to_string())?;
    buffered.flush().map_err(|e| e.to_string())?;
    Ok(0)
}

/// `applydiff LAYER`.
pub(crate) fn apply_diff(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let input = open_input(&ctx.flags.str("-file"))?;
    ctx.store
        .apply_diff(&ctx.args[0], input)
        .map_err(|e| e.to_string())?;
    Ok(0)
}

/// `applydiff-using-staging-dir LAYER DIR`: silent on success.
pub(crate) fn apply_diff_using_staging_dir(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    ctx.store
        .apply_diff_using_staging_dir(&ctx.args[0], std::path::Path::new(&ctx.args[1]))
        .map_err(|e| e.to_string())?;
    Ok(0)
}

/// `mount ID…`.
pub(crate) fn mount(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let label = ctx.flags.str("-label");
    let read_only = ctx.flags.bool("-read-only");
    let mut results: Vec<(String, String, String)> = Vec::new();
    for arg in ctx.args {
        let opts = MountOpts {
            mount_label: label.clone(),
            ..MountOpts::default()
        };
        let r = if read_only {
            ctx.store.mount_image(arg, &opts)
        } else {
            ctx.store.mount(arg, &opts)
        };
        match r {
            Ok(p) => results.push((arg.clone(), p.to_string_lossy().into_owned(), String::new())),
            Err(e) => {
                err(&format!("{e} while mounting {arg}\n"));
                results.push((arg.clone(), String::new(), e.to_string()));
            }
        }
    }
    if ctx.json() {
        let items: Vec<String> = results
            .iter()
            .map(|(id, mp, e)| {
                format!(
                    "{{\"id\":{},\"mountpoint\":{},\"error\":{}}}",
                    json(id),
                    json(mp),
                    json(e)
                )
            })
            .collect();
        out(&format!("[{}]\n", items.join(",")))?;
    } else {
        out(&results
            .iter()
            .map(|(_, mp, _)| format!("{mp}\n"))
            .collect::<String>())?;
    }
    Ok(if results.iter().any(|r| !r.2.is_empty()) {
        1
    } else {
        0
    })
}

fn json(s: &str) -> String {
    String::from_utf8_lossy(&to_go_json(s)).into_owned()
}

/// Runs `op` on every argument: `Ok(Some(line))` prints `line`, `Err(e)` prints
/// `"{e} {doing(arg)}"` on stderr; with `--json`, Go's `[{"id":…,"error":…}]` list follows.
/// Exit status 1 when any failed.
fn for_each_id(
    ctx: &mut Ctx<'_>,
    doing: fn(&str) -> String,
    mut op: impl FnMut(&Store, &str) -> containers_storage::types::Result<Option<String>>,
) -> Result<i32, String> {
    let mut results = Vec::new();
    let mut failed = false;
    for arg in ctx.args {
        let error = match op(ctx.store, arg) {
            Ok(line) => {
                if let Some(line) = line {
                    out(&line)?;
                }
                String::new()
            }
            Err(e) => {
                err(&format!("{e} {}\n", doing(arg)));
                failed = true;
                e.to_string()
            }
        };
        results.push(format!(
            "{{\"id\":{},\"error\":{}}}",
            json(arg),
            json(&error)
        ));
    }
    if ctx.json() {
        out(&format!("[{}]\n", results.join(",")))?;
    }
    Ok(i32::from(failed))
}

/// `unmount ID…`.
pub(crate) fn unmount(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let force = ctx.flags.bool("-force");
    for_each_id(
        ctx,
        |arg| format!("while unmounting {arg}"),
        |store, arg| {
            let still = match store.unmount(arg, force) {
                Ok(still) => still,
                Err(e) => store.unmount_image(arg, force).map_err(|_| e)?,
            };
            Ok((!still).then(|| format!("{arg} mountpoint unmounted\n")))
        },
    )
}

/// `mounted ID…`.
pub(crate) fn mounted(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    for_each_id(
        ctx,
        |arg| format!("checking if {arg} is mounted"),
        |store, arg| {
            let n = store.mounted(arg)?;
            Ok((n > 0).then(|| format!("{arg} mounted\n")))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(l: &str, r: &str, notes: &[&str]) -> TreeNode {
        TreeNode {
            left: l.into(),
            right: r.into(),
            notes: notes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn tree_like_go() {
        let t = print_tree(vec![
            node("(base)", "base", &["name: basename"]),
            node("base", "top", &["image: img", "image name: myimage"]),
            node("top", "c", &["container: ctr"]),
        ]);
        assert_eq!(
            t,
            "(base)\n└─base\n  name: basename\n  └─top\n    image: img\n    image name: myimage\n    └─c\n      container: ctr\n"
        );
        let t = print_tree(vec![
            node("(base)", "a", &["name: x"]),
            node("a", "b", &[]),
            node("(base)", "c", &[]),
        ]);
        assert_eq!(t, "(base)\n├─a\n│ name: x\n│ └─b\n└─c\n");
        // A deleted parent shows up as a root label.
        let t = print_tree(vec![node("gone", "b", &[])]);
        assert_eq!(t, "gone\n└─b\n");
    }
}
