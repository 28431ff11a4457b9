//! Image and container commands and `delete`.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use containers_storage::types::{Container, Digest, Image, to_go_json_line};
use containers_storage::{ContainerOptions, NewImage};

use super::layers::mappings;
use super::{Ctx, err, open_error, out};

fn out_bytes(b: &[u8]) -> Result<(), String> {
    std::io::stdout()
        .lock()
        .write_all(b)
        .map_err(|e| e.to_string())
}

fn read_input(file: &str) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    if file.is_empty() {
        std::io::stdin()
            .read_to_end(&mut data)
            .map_err(|e| e.to_string())?;
    } else {
        data = std::fs::read(file).map_err(open_error(file))?;
    }
    Ok(data)
}

fn write_output(file: &str, data: &[u8]) -> Result<(), String> {
    if file.is_empty() {
        return out_bytes(data);
    }
    std::fs::write(file, data).map_err(open_error(file))
}

fn metadata_arg(ctx: &Ctx<'_>) -> Result<String, String> {
    let file = ctx.flags.str("-metadata-file");
    if file.is_empty() {
        return Ok(ctx.flags.str("-metadata"));
    }
    let data = read_input(&file)?;
    Ok(String::from_utf8_lossy(&data).into_owned())
}

pub(crate) fn print_id_and_names(
    ctx: &Ctx<'_>,
    id: &str,
    names: &[String],
    json: Vec<u8>,
) -> Result<(), String> {
    if ctx.json() {
        return out_bytes(&json);
    }
    let mut s = format!("{id}\n");
    for n in names {
        s.push_str(&format!("\t{n}\n"));
    }
    out(&s)
}

/// `create-image [topLayer]`.
pub(crate) fn create_image(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let id = ctx.flags.str("-id");
    let digest = ctx.flags.str("-digest");
    let image = ctx
        .store
        .create_image(NewImage {
            id: (!id.is_empty()).then_some(id),
            names: ctx.flags.list("-name"),
            layer: ctx.args.first().cloned().unwrap_or_default(),
            metadata: metadata_arg(ctx)?,
            digest: (!digest.is_empty()).then_some(digest),
            ..NewImage::default()
        })
        .map_err(|e| e.to_string())?;
    print_id_and_names(ctx, &image.id, &image.names, to_go_json_line(&image))?;
    Ok(0)
}

fn print_images<I: std::borrow::Borrow<Image> + serde::Serialize>(
    ctx: &Ctx<'_>,
    images: &[I],
    empty_json: &str,
) -> Result<(), String> {
    if ctx.json() {
        if images.is_empty() {
            return out(empty_json);
        }
        return out_bytes(&to_go_json_line(images));
    }
    let quiet = ctx.flags.bool("-quiet");
    let mut s = String::new();
    for i in images {
        let i: &Image = i.borrow();
        s.push_str(&format!("{}\n", i.id));
        if quiet {
            continue;
        }
        for n in &i.names {
            s.push_str(&format!("\tname: {n}\n"));
        }
        for d in &i.digests {
            s.push_str(&format!("\tdigest: {d}\n"));
        }
        for k in &i.big_data_names {
            s.push_str(&format!("\tdata: {k}\n"));
        }
    }
    out(&s)
}

/// `images`.
pub(crate) fn images(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    ctx.store
        .with_images(|images| print_images(ctx, images, "null\n"))
        .map_err(|e| e.to_string())??;
    Ok(0)
}

/// `images-by-digest DIGEST`.
pub(crate) fn images_by_digest(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let d: Digest = ctx.args[0]
        .parse()
        .map_err(|e: containers_storage::types::Error| e.to_string())?;
    let images = ctx.store.images_by_digest(&d).map_err(|e| e.to_string())?;
    print_images(ctx, &images, "[]\n")?;
    Ok(0)
}

/// `image ID…`.
pub(crate) fn image(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let mut matched = Vec::new();
    for arg in ctx.args {
        if let Ok(i) = ctx.store.image(arg) {
            matched.push(i);
        }
    }
    if ctx.json() {
        out_bytes(&to_go_json_line(&matched))?;
    } else {
        let mut s = String::new();
        for i in &matched {
            s.push_str(&format!("ID: {}\n", i.id));
            for n in &i.names {
                s.push_str(&format!("Name: {n}\n"));
            }
            s.push_str(&format!("Top Layer: {}\n", i.layer));
            for l in &i.mapped_layers {
                s.push_str(&format!("Top Layer: {l}\n"));
            }
            for d in &i.digests {
                s.push_str(&format!("Digest: {d}\n"));
            }
            for k in &i.big_data_names {
                s.push_str(&format!("Data: {k}\n"));
            }
            match ctx.store.image_size(&i.id) {
                Ok(n) => s.push_str(&format!("Size: {n}\n")),
                Err(e) => s.push_str(&format!("Size unknown: {e}\n")),
            }
            if i.read_only {
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

fn print_names_list(ctx: &Ctx<'_>, names: &[String]) -> Result<(), String> {
    if ctx.json() {
        if names.is_empty() {
            return out("null\n");
        }
        return out_bytes(&to_go_json_line(names));
    }
    out(&names.iter().map(|n| format!("{n}\n")).collect::<String>())
}

/// The ID of image `key` as Go's CLI resolves it for the image-data commands (`Store.Image`,
/// which does not see a read-only record through a name its pulled-up copy lost).
fn image_id(ctx: &Ctx<'_>, key: &str) -> Result<String, String> {
    ctx.store
        .image(key)
        .map(|i| i.id)
        .map_err(|e| e.to_string())
}

/// `list-image-data IMAGE`.
pub(crate) fn list_image_data(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let id = image_id(ctx, &ctx.args[0])?;
    let names = ctx
        .store
        .image_big_data_names(&id)
        .map_err(|e| e.to_string())?;
    print_names_list(ctx, &names)?;
    Ok(0)
}

fn create_output(file: &str) -> Result<(), String> {
    if file.is_empty() {
        return Ok(());
    }
    std::fs::File::create(file)
        .map(|_| ())
        .map_err(open_error(file))
}

/// `get-image-data IMAGE KEY`.
pub(crate) fn get_image_data(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    // Like Go: the image is resolved, then the output file created, then the item read.
    let id = image_id(ctx, &ctx.args[0])?;
    create_output(&ctx.flags.str("-file"))?;
    let data = ctx
        .store
        .image_big_data(&id, &ctx.args[1])
        .map_err(|e| e.to_string())?;
    write_output(&ctx.flags.str("-file"), &data)?;
    Ok(0)
}

/// `get-image-data-size IMAGE KEY`.
pub(crate) fn get_image_data_size(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let id = image_id(ctx, &ctx.args[0])?;
    let n = ctx
        .store
        .image_big_data_size(&id, &ctx.args[1])
        .map_err(|e| e.to_string())?;
    out(&format!("{n}\n"))?;
    Ok(0)
}

/// `get-image-data-digest IMAGE KEY`.
pub(crate) fn get_image_data_digest(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let id = image_id(ctx, &ctx.args[0])?;
    let d = ctx
        .store
        .image_big_data_digest(&id, &ctx.args[1])
        .map_err(|e| e.to_string())?;
    out(&format!("{d}\n"))?;
    Ok(0)
}

/// `set-image-data IMAGE KEY`.
pub(crate) fn set_image_data(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let id = image_id(ctx, &ctx.args[0])?;
    let data = read_input(&ctx.flags.str("-file"))?;
    ctx.store
        .set_image_big_data(&id, &ctx.args[1], &data)
        .map_err(|e| e.to_string())?;
    Ok(0)
}

/// Prints the directory the Store named, one line (the `get-*-dir` commands).
fn print_dir(dir: containers_storage::types::Result<std::path::PathBuf>) -> Result<i32, String> {
    let dir = dir.map_err(|e| e.to_string())?;
    out(&format!("{}\n", dir.display()))?;
    Ok(0)
}

/// `get-image-dir IMAGE`.
pub(crate) fn get_image_dir(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    print_dir(ctx.store.image_dir(&ctx.args[0]))
}

/// `get-image-run-dir IMAGE`.
pub(crate) fn get_image_run_dir(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    print_dir(ctx.store.image_run_dir(&ctx.args[0]))
}

/// `delete-image IMAGE…`.
pub(crate) fn delete_image(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    #[derive(serde::Serialize, Default)]
    struct Res {
        #[serde(rename = "deleted-layers", skip_serializing_if = "Vec::is_empty")]
        deleted: Vec<String>,
        #[serde(skip_serializing_if = "String::is_empty")]
        error: String,
    }
    let commit = !ctx.flags.bool("-test");
    let mut results: BTreeMap<String, Res> = BTreeMap::new();
    let mut text = String::new();
    let mut failed = false;
    for arg in ctx.args {
        match ctx.store.delete_image(arg, commit) {
            Ok(layers) => {
                for l in &layers {
                    text.push_str(&format!("{arg}: {l}\n"));
                }
                results.insert(
                    arg.clone(),
                    Res {
                        deleted: layers,
                        ..Res::default()
                    },
                );
            }
            Err(e) => {
                failed = true;
                text.push_str(&format!("{arg}: {e}\n"));
                results.insert(
                    arg.clone(),
                    Res {
                        error: e.to_string(),
                        ..Res::default()
                    },
                );
            }
        }
    }
    if ctx.json() {
        out_bytes(&to_go_json_line(&results))?;
    } else {
        err(&text);
    }
    Ok(if failed { 1 } else { 0 })
}

/// `create-container IMAGE`.
pub(crate) fn create_container(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let m = mappings(ctx)?;
    let id = ctx.flags.str("-id");
    let c = ctx
        .store
        .create_container(&ContainerOptions {
            id: (!id.is_empty()).then_some(id),
            names: ctx.flags.list("-name"),
            image: ctx.args[0].clone(),
            metadata: metadata_arg(ctx)?,
            uid_map: m.uid_map,
            gid_map: m.gid_map,
            host_uid_mapping: m.host_uid,
            host_gid_mapping: m.host_gid,
            volatile: ctx.flags.bool("-volatile"),
            ..ContainerOptions::default()
        })
        .map_err(|e| e.to_string())?;
    print_id_and_names(ctx, &c.id, &c.names, to_go_json_line(&c))?;
    Ok(0)
}

/// `containers`.
pub(crate) fn containers(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let list = ctx.store.containers_list().map_err(|e| e.to_string())?;
    if ctx.json() {
        out_bytes(&to_go_json_line(&list))?;
        return Ok(0);
    }
    let mut s = String::new();
    for c in &list {
        s.push_str(&format!("{}\n", c.id));
        for n in &c.names {
            s.push_str(&format!("\tname: {n}\n"));
        }
        for k in &c.big_data_names {
            s.push_str(&format!("\tdata: {k}\n"));
        }
    }
    out(&s)?;
    Ok(0)
}

/// `container ID…`.
pub(crate) fn container(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let mut matched: Vec<Container> = Vec::new();
    for arg in ctx.args {
        if let Ok(c) = ctx.store.container(arg) {
            matched.push(c);
        }
    }
    if ctx.json() {
        out_bytes(&to_go_json_line(&matched))?;
    } else {
        let mut s = String::new();
        for c in &matched {
            s.push_str(&format!("ID: {}\n", c.id));
            for n in &c.names {
                s.push_str(&format!("Name: {n}\n"));
            }
            s.push_str(&format!("Image: {}\n", c.image));
            if let Ok(i) = ctx.store.image(&c.image) {
                for n in &i.names {
                    s.push_str(&format!("Image name: {n}\n"));
                }
            }
            match ctx.store.container_size(&c.id) {
                Ok(n) => s.push_str(&format!("Size: {n}\n")),
                Err(e) => s.push_str(&format!("Size unknown: {e}\n")),
            }
            s.push_str(&format!("Layer: {}\n", c.layer));
            for k in &c.big_data_names {
                s.push_str(&format!("Data: {k}\n"));
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

/// `list-container-data CONTAINER`.
pub(crate) fn list_container_data(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let names = ctx
        .store
        .container_big_data_names(&ctx.args[0])
        .map_err(|e| e.to_string())?;
    print_names_list(ctx, &names)?;
    Ok(0)
}

/// `get-container-data CONTAINER KEY`.
pub(crate) fn get_container_data(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    ctx.store
        .container_big_data_names(&ctx.args[0])
        .map_err(|e| e.to_string())?;
    create_output(&ctx.flags.str("-file"))?;
    let data = ctx
        .store
        .container_big_data(&ctx.args[0], &ctx.args[1])
        .map_err(|e| e.to_string())?;
    write_output(&ctx.flags.str("-file"), &data)?;
    Ok(0)
}

/// `get-container-data-size CONTAINER KEY`.
pub(crate) fn get_container_data_size(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let n = ctx
        .store
        .container_big_data_size(&ctx.args[0], &ctx.args[1])
        .map_err(|e| e.to_string())?;
    out(&format!("{n}\n"))?;
    Ok(0)
}

/// `get-container-data-digest CONTAINER KEY`.
pub(crate) fn get_container_data_digest(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let d = ctx
        .store
        .container_big_data_digest(&ctx.args[0], &ctx.args[1])
        .map_err(|e| e.to_string())?;
    out(&format!("{d}\n"))?;
    Ok(0)
}

/// `set-container-data CONTAINER KEY`.
pub(crate) fn set_container_data(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let data = read_input(&ctx.flags.str("-file"))?;
    ctx.store
        .set_container_big_data(&ctx.args[0], &ctx.args[1], &data)
        .map_err(|e| e.to_string())?;
    Ok(0)
}

/// `get-container-dir CONTAINER`.
pub(crate) fn get_container_dir(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    print_dir(ctx.store.container_dir(&ctx.args[0]))
}

/// `get-container-run-dir CONTAINER`.
pub(crate) fn get_container_run_dir(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    print_dir(ctx.store.container_run_dir(&ctx.args[0]))
}

/// `container-parent-owners CONTAINER…`.
pub(crate) fn container_parent_owners(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let store = ctx.store;
    super::layers::parent_owners(
        ctx,
        &super::layers::OwnersCommand {
            what: "ContainerParentOwner",
            always_both: true,
            resolve: &|arg| store.container(arg).ok().map(|c| c.id),
            owners: &|id| store.container_parent_owners(id),
        },
    )
}

/// Runs `f` on every argument and reports per-argument errors as Go's delete commands do
/// (stderr `ARG: ERROR` in argument order, or a JSON map of ARG to error text).
pub(crate) fn delete_each(
    ctx: &Ctx<'_>,
    f: impl Fn(&str) -> containers_storage::types::Result<()>,
) -> Result<i32, String> {
    let mut results: BTreeMap<String, String> = BTreeMap::new();
    let mut order = Vec::new();
    for arg in ctx.args {
        let text = match f(arg) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        };
        if !results.contains_key(arg) {
            order.push(arg.clone());
        }
        results.insert(arg.clone(), text);
    }
    if ctx.json() {
        out_bytes(&to_go_json_line(&results))?;
    } else {
        let text: String = order
            .iter()
            .filter(|a| !results[*a].is_empty())
            .map(|a| format!("{a}: {}\n", results[a]))
            .collect();
        err(&text);
    }
    Ok(if results.values().any(|e| !e.is_empty()) {
        1
    } else {
        0
    })
}

/// `delete-container CONTAINER…`.
pub(crate) fn delete_container(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let store = ctx.store;
    delete_each(ctx, |a| store.delete_container(a))
}

/// `delete ID…` (no safety checks).
pub(crate) fn delete(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let store = ctx.store;
    delete_each(ctx, |a| store.delete_any(a))
}
