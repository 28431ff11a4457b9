//! The command table and the handlers.

pub(crate) mod any;
pub(crate) mod check;
pub(crate) mod copy;
pub(crate) mod layers;
pub(crate) mod records;
pub(crate) mod transfer;

use std::io::Write;

use containers_storage::Store;
use containers_storage::gocompat::json::string as json_string;

use crate::flags::{FlagSet, FlagSpec, Kind, flag};

/// What a handler sees.
pub(crate) struct Ctx<'a> {
    /// The parsed command flags (command flags and global options).
    pub(crate) flags: &'a FlagSet,
    /// The open store.
    pub(crate) store: &'a Store,
    /// Positional arguments.
    pub(crate) args: &'a [String],
}

impl Ctx<'_> {
    /// Whether `--json`/`-j` was given.
    pub(crate) fn json(&self) -> bool {
        self.flags.bool("-json")
    }
}

/// A handler: returns the exit status, or an error printed on stderr (exit 1).
pub(crate) type Handler = fn(&mut Ctx<'_>) -> Result<i32, String>;

/// One command of the tool.
pub struct Command {
    /// Name, then aliases.
    pub names: &'static [&'static str],
    /// Text after the name in the per-command usage line.
    pub(crate) options_help: &'static str,
    /// One-line description (global usage).
    pub description: &'static str,
    /// Description in the per-command usage.
    pub(crate) usage: &'static str,
    /// Minimum number of positional arguments.
    pub(crate) min_args: usize,
    /// Maximum number of positional arguments (`None` = unlimited).
    pub(crate) max_args: Option<usize>,
    /// The command's own flags.
    pub flags: &'static [FlagSpec],
    /// The action.
    pub(crate) handler: Handler,
}

/// The error of opening or creating `file`, as Go words it (`open FILE: no such file or
/// directory`).
pub(crate) fn open_error(file: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| {
        format!(
            "open {file}: {}",
            containers_storage::types::go_io_error_text(&e)
        )
    }
}

/// `-j/--json`.
pub(crate) const JSON: FlagSpec = flag(&["-json", "j"], Kind::Bool, "Prefer JSON output");
const FORCE_SHUTDOWN: FlagSpec = flag(&["-force", "f"], Kind::Bool, "Unmount mounted layers first");

const LAYER_NAME: FlagSpec = flag(&["-name", "n"], Kind::List, "Layer name");
const LAYER_ID: FlagSpec = flag(&["-id", "i"], Kind::Str, "Layer ID");
const LABEL: FlagSpec = flag(&["-label", "l"], Kind::Str, "Mount Label");
const READONLY: FlagSpec = flag(&["-readonly", "r"], Kind::Bool, "Mark as read-only");
const UIDMAP: FlagSpec = flag(&["-uidmap"], Kind::Str, "UID map");
const GIDMAP: FlagSpec = flag(&["-gidmap"], Kind::Str, "GID map");
const SUBUIDMAP: FlagSpec = flag(&["-subuidmap"], Kind::Str, "subuid UID map for a user");
const SUBGIDMAP: FlagSpec = flag(&["-subgidmap"], Kind::Str, "subgid GID map for a group");
const HOSTUIDMAP: FlagSpec = flag(&["-hostuidmap"], Kind::Bool, "Force host UID map");
const HOSTGIDMAP: FlagSpec = flag(&["-hostgidmap"], Kind::Bool, "Force host GID map");
const NEW_NAME: FlagSpec = flag(&["-name", "n"], Kind::List, "New name");

const CREATE_LAYER_FLAGS: &[FlagSpec] = &[
    LAYER_NAME, LAYER_ID, LABEL, READONLY, JSON, HOSTUIDMAP, HOSTGIDMAP, UIDMAP, GIDMAP, SUBUIDMAP,
    SUBGIDMAP,
];
const IMPORT_LAYER_FLAGS: &[FlagSpec] = &[
    LAYER_NAME,
    LAYER_ID,
    LABEL,
    READONLY,
    JSON,
    HOSTUIDMAP,
    HOSTGIDMAP,
    UIDMAP,
    GIDMAP,
    SUBUIDMAP,
    SUBGIDMAP,
    flag(
        &["-file", "f"],
        Kind::Str,
        "Read from file instead of stdin",
    ),
];
const IMPORT_LAYERS_FLAGS: &[FlagSpec] = &[
    flag(&["-name", "n"], Kind::List, "Name of the top layer"),
    flag(
        &["-parent", "p"],
        Kind::Str,
        "Parent of the first layer (name or ID)",
    ),
    LABEL,
    READONLY,
    JSON,
    QUIET_IDS,
    HOSTUIDMAP,
    HOSTGIDMAP,
    UIDMAP,
    GIDMAP,
    SUBUIDMAP,
    SUBGIDMAP,
    flag(
        &["-jobs"],
        Kind::Str,
        "Layers prepared at once (default: one per core)",
    ),
];
const CREATE_STORAGE_LAYER_FLAGS: &[FlagSpec] = &[
    LAYER_ID, LABEL, READONLY, JSON, HOSTUIDMAP, HOSTGIDMAP, UIDMAP, GIDMAP, SUBUIDMAP, SUBGIDMAP,
];
const DIFF_FLAGS: &[FlagSpec] = &[
    flag(
        &["-file", "f"],
        Kind::Str,
        "Write to file instead of stdout",
    ),
    flag(&["-uncompressed", "u"], Kind::Bool, "Use no compression"),
    flag(&["-gzip", "c"], Kind::Bool, "Compress using gzip"),
    flag(
        &["-bzip2", "-bz2", "b"],
        Kind::Bool,
        "Compress using bzip2 (not currently supported)",
    ),
    flag(
        &["-xz", "x"],
        Kind::Bool,
        "Compress using xz (not currently supported)",
    ),
];
const EXISTS_FLAGS: &[FlagSpec] = &[
    flag(&["-quiet", "q"], Kind::Bool, "Don't print names"),
    flag(
        &["-layer", "l"],
        Kind::Bool,
        "Only succeed if the match is a layer",
    ),
    flag(
        &["-image", "i"],
        Kind::Bool,
        "Only succeed if the match is an image",
    ),
    flag(
        &["-container", "c"],
        Kind::Bool,
        "Only succeed if the match is a container",
    ),
    JSON,
];
const MOUNT_FLAGS: &[FlagSpec] = &[
    flag(&["-opt", "o"], Kind::Str, "Mount Options"),
    LABEL,
    flag(
        &["-read-only", "-ro", "r"],
        Kind::Bool,
        "Mount image readonly",
    ),
    JSON,
];

const IMAGE_FLAGS: &[FlagSpec] = &[
    flag(&["-name", "n"], Kind::List, "Image name"),
    flag(&["-id", "i"], Kind::Str, "Image ID"),
    flag(&["-digest", "d"], Kind::Str, "Image Digest"),
    flag(&["-metadata", "m"], Kind::Str, "Metadata"),
    flag(&["-metadata-file", "f"], Kind::Str, "Metadata File"),
    JSON,
];
const CONTAINER_FLAGS: &[FlagSpec] = &[
    flag(&["-name", "n"], Kind::List, "Container name"),
    flag(&["-id", "i"], Kind::Str, "Container ID"),
    flag(&["-metadata", "m"], Kind::Str, "Metadata"),
    flag(&["-metadata-file", "f"], Kind::Str, "Metadata File"),
    JSON,
    HOSTUIDMAP,
    HOSTGIDMAP,
    UIDMAP,
    GIDMAP,
    SUBUIDMAP,
    SUBGIDMAP,
    flag(&["-volatile"], Kind::Bool, "Mark as volatile"),
];
const QUIET_IDS: FlagSpec = flag(&["-quiet", "q"], Kind::Bool, "Only print IDs");
const WRITE_DATA: FlagSpec = flag(&["-file", "f"], Kind::Str, "Write data to file");
const READ_DATA: FlagSpec = flag(&["-file", "f"], Kind::Str, "Read data from file");

macro_rules! cmd {
    ($names:expr, $opts:expr, $desc:expr, $min:expr, $max:expr, $flags:expr, $handler:expr) => {
        Command {
            names: $names,
            options_help: $opts,
            description: $desc,
            usage: $desc,
            min_args: $min,
            max_args: $max,
            flags: $flags,
            handler: $handler,
        }
    };
}

/// Every registered command, in the order of Go's source files (the global usage order).
pub static COMMANDS: &[Command] = &[
    cmd!(
        &["check"],
        "",
        "Check storage consistency",
        0,
        Some(0),
        check::CHECK_FLAGS,
        check::check
    ),
    cmd!(
        &["config"],
        "[configurationFile]",
        "Print storage library configuration as JSON",
        0,
        Some(1),
        &[],
        config
    ),
    cmd!(
        &["container"],
        "[options [...]] containerNameOrID [...]",
        "Examine a container",
        1,
        None,
        &[JSON],
        records::container
    ),
    cmd!(
        &["list-container-data", "listcontainerdata"],
        "[options [...]] containerNameOrID",
        "List data items that are attached to an container",
        1,
        Some(1),
        &[JSON],
        records::list_container_data
    ),
    cmd!(
        &["get-container-data", "getcontainerdata"],
        "[options [...]] containerNameOrID dataName",
        "Get data that is attached to an container",
        2,
        Some(2),
        &[WRITE_DATA],
        records::get_container_data
    ),
    cmd!(
        &["get-container-data-size", "getcontainerdatasize"],
        "[options [...]] containerNameOrID dataName",
        "Get size of data that is attached to an container",
        2,
        Some(2),
        &[],
        records::get_container_data_size
    ),
    cmd!(
        &["get-container-data-digest", "getcontainerdatadigest"],
        "[options [...]] containerNameOrID dataName",
        "Get digest of data that is attached to an container",
        2,
        Some(2),
        &[],
        records::get_container_data_digest
    ),
    cmd!(
        &["set-container-data", "setcontainerdata"],
        "[options [...]] containerNameOrID dataName",
        "Set data that is attached to an container",
        2,
        Some(2),
        &[READ_DATA],
        records::set_container_data
    ),
    cmd!(
        &["get-container-dir", "getcontainerdir"],
        "[options [...]] containerNameOrID",
        "Find the container's associated data directory",
        1,
        Some(1),
        &[],
        records::get_container_dir
    ),
    cmd!(
        &["get-container-run-dir", "getcontainerrundir"],
        "[options [...]] containerNameOrID",
        "Find the container's associated runtime directory",
        1,
        Some(1),
        &[],
        records::get_container_run_dir
    ),
    cmd!(
        &["container-parent-owners"],
        "[options [...]] containerNameOrID [...]",
        "Compute the set of unmapped parent UIDs and GIDs of the container",
        1,
        None,
        &[JSON],
        records::container_parent_owners
    ),
    cmd!(
        &["containers"],
        "[options [...]]",
        "List containers",
        0,
        Some(0),
        &[JSON],
        records::containers
    ),
    cmd!(
        &["copy"],
        "[options [...]] [sourceLayerNameOrID:]/path [...] targetLayerNameOrID:/path",
        "Copy files or directories into a layer, possibly from another layer",
        2,
        None,
        &[
            flag(&["-chown", "o"], Kind::Str, "Set owner on new copies"),
            JSON,
        ],
        copy::copy
    ),
    cmd!(
        &["create-storage-layer"],
        "[options [...]] [parentLayerNameOrID]",
        "Create a new layer only in the storage driver",
        0,
        Some(1),
        CREATE_STORAGE_LAYER_FLAGS,
        layers::create_storage_layer
    ),
    cmd!(
        &["create-layer", "createlayer"],
        "[options [...]] [parentLayerNameOrID]",
        "Create a new layer",
        0,
        Some(1),
        CREATE_LAYER_FLAGS,
        layers::create_layer
    ),
    cmd!(
        &["import-layer", "importlayer"],
        "[options [...]] [parentLayerNameOrID]",
        "Import a new layer",
        0,
        Some(1),
        IMPORT_LAYER_FLAGS,
        layers::import_layer
    ),
    cmd!(
        &["import-layers"],
        "[options [...]] layerTarFile [...]",
        "Import a chain of layers, preparing them in parallel",
        1,
        None,
        IMPORT_LAYERS_FLAGS,
        layers::import_layers
    ),
    cmd!(
        &["create-image", "createimage"],
        "[options [...]] topLayerNameOrID",
        "Create a new image using layers",
        0,
        Some(1),
        IMAGE_FLAGS,
        records::create_image
    ),
    cmd!(
        &["create-container", "createcontainer"],
        "[options [...]] parentImageNameOrID",
        "Create a new container from an image",
        1,
        Some(1),
        CONTAINER_FLAGS,
        records::create_container
    ),
    cmd!(
        &["dedup"],
        "",
        "Dedup all images",
        0,
        Some(0),
        check::DEDUP_FLAGS,
        check::dedup
    ),
    cmd!(
        &["delete"],
        "[LayerOrImageOrContainerNameOrID [...]]",
        "Delete a layer or image or container, with no safety checks",
        1,
        None,
        &[JSON],
        records::delete
    ),
    cmd!(
        &["delete-layer", "deletelayer"],
        "[LayerNameOrID [...]]",
        "Delete a layer, with safety checks",
        1,
        None,
        &[JSON],
        layers::delete_layer
    ),
    cmd!(
        &["delete-image", "deleteimage"],
        "[ImageNameOrID [...]]",
        "Delete an image, with safety checks",
        1,
        None,
        &[JSON, flag(&["-test", "t"], Kind::Bool, "Only test removal")],
        records::delete_image
    ),
    cmd!(
        &["delete-container", "deletecontainer"],
        "[ContainerNameOrID [...]]",
        "Delete a container, with safety checks",
        1,
        None,
        &[JSON],
        records::delete_container
    ),
    cmd!(
        &["changes"],
        "[options [...]] layerNameOrID [referenceLayerNameOrID]",
        "Compare two layers",
        1,
        Some(2),
        &[JSON],
        layers::changes
    ),
    cmd!(
        &["diffsize", "diff-size"],
        "[options [...]] layerNameOrID [referenceLayerNameOrID]",
        "Compare two layers",
        1,
        Some(2),
        &[],
        layers::diff_size
    ),
    cmd!(
        &["diff"],
        "[options [...]] layerNameOrID [referenceLayerNameOrID]",
        "Compare two layers",
        1,
        Some(2),
        DIFF_FLAGS,
        layers::diff
    ),
    cmd!(
        &["applydiff", "apply-diff"],
        "[options [...]] layerNameOrID [referenceLayerNameOrID]",
        "Apply a diff to a layer",
        1,
        Some(1),
        &[flag(
            &["-file", "f"],
            Kind::Str,
            "Read from file instead of stdin"
        )],
        layers::apply_diff
    ),
    cmd!(
        &["applydiff-using-staging-dir"],
        "[options [...]] layerNameOrID directory",
        "Apply a directory to a layer using a staging directory",
        2,
        Some(2),
        &[],
        layers::apply_diff_using_staging_dir
    ),
    cmd!(
        &["exists"],
        "[LayerOrImageOrContainerNameOrID [...]]",
        "Check if a layer or image or container exists",
        1,
        None,
        EXISTS_FLAGS,
        any::exists
    ),
    cmd!(
        &["gc"],
        "",
        "Perform garbage collection",
        0,
        Some(0),
        check::GC_FLAGS,
        check::gc
    ),
    cmd!(
        &["image"],
        "[options [...]] imageNameOrID [...]",
        "Examine an image",
        1,
        None,
        &[JSON],
        records::image
    ),
    cmd!(
        &["list-image-data", "listimagedata"],
        "[options [...]] imageNameOrID",
        "List data items that are attached to an image",
        1,
        Some(1),
        &[JSON],
        records::list_image_data
    ),
    cmd!(
        &["get-image-data", "getimagedata"],
        "[options [...]] imageNameOrID dataName",
        "Get data that is attached to an image",
        2,
        Some(2),
        &[WRITE_DATA],
        records::get_image_data
    ),
    cmd!(
        &["get-image-data-size", "getimagedatasize"],
        "[options [...]] imageNameOrID dataName",
        "Get size of data that is attached to an image",
        2,
        Some(2),
        &[],
        records::get_image_data_size
    ),
    cmd!(
        &["get-image-data-digest", "getimagedatadigest"],
        "[options [...]] imageNameOrID dataName",
        "Get digest of data that is attached to an image",
        2,
        Some(2),
        &[],
        records::get_image_data_digest
    ),
    cmd!(
        &["set-image-data", "setimagedata"],
        "[options [...]] imageNameOrID dataName",
        "Set data that is attached to an image (with sometimes wrong digest)",
        2,
        Some(2),
        &[READ_DATA],
        records::set_image_data
    ),
    cmd!(
        &["get-image-dir", "getimagedir"],
        "[options [...]] imageNameOrID",
        "Find the image's associated data directory",
        1,
        Some(1),
        &[],
        records::get_image_dir
    ),
    cmd!(
        &["get-image-run-dir", "getimagerundir"],
        "[options [...]] imageNameOrID",
        "Find the image's associated runtime directory",
        1,
        Some(1),
        &[],
        records::get_image_run_dir
    ),
    cmd!(
        &["images"],
        "[options [...]]",
        "List images",
        0,
        Some(0),
        &[JSON, QUIET_IDS],
        records::images
    ),
    cmd!(
        &["images-by-digest"],
        "[options [...]] DIGEST",
        "List images by digest",
        1,
        Some(1),
        &[JSON, QUIET_IDS],
        records::images_by_digest
    ),
    Command {
        names: &["import-image", "importimage"],
        options_help: "[options [...]] {oci,oci-archive,docker-archive}:PATH[:REF]",
        description: "Import an image from an OCI layout or an archive",
        usage: "Import an image from an OCI layout (oci:DIR[:REF]), an oci-archive \
                (oci-archive:FILE[:REF]) or a docker-archive (docker-archive:FILE[:NAME:TAG|:@N]), \
                storing it as podman and skopeo do",
        min_args: 1,
        max_args: Some(1),
        flags: transfer::IMPORT_FLAGS,
        handler: transfer::import,
    },
    Command {
        names: &["export-image", "exportimage"],
        options_help: "[options [...]] imageNameOrID {oci,oci-archive,docker-archive}:PATH[:REF]",
        description: "Export an image to an OCI layout or an archive",
        usage: "Export an image to an OCI layout (oci:DIR[:REF]), an oci-archive \
                (oci-archive:FILE[:REF]) or a docker-archive (docker-archive:FILE[:NAME:TAG])",
        min_args: 2,
        max_args: Some(2),
        flags: transfer::EXPORT_FLAGS,
        handler: transfer::export,
    },
    cmd!(
        &["layer"],
        "[options [...]] layerNameOrID [...]",
        "Examine a layer",
        1,
        None,
        &[JSON],
        layers::layer
    ),
    cmd!(
        &["layer-parent-owners"],
        "[options [...]] layerNameOrID [...]",
        "Compute the set of unmapped parent UIDs and GIDs of the layer",
        1,
        None,
        &[JSON],
        layers::layer_parent_owners
    ),
    cmd!(
        &["list-layer-data", "listlayerdata"],
        "[options [...]] layerNameOrID",
        "List data items that are attached to a layer",
        1,
        Some(1),
        &[JSON],
        layers::list_layer_data
    ),
    cmd!(
        &["get-layer-data", "getlayerdata"],
        "[options [...]] layerID dataName",
        "Get data that is attached to a layer",
        2,
        Some(2),
        &[flag(&["-file", "f"], Kind::Str, "Write data to file")],
        layers::get_layer_data
    ),
    cmd!(
        &["set-layer-data", "setlayerdata"],
        "[options [...]] layerID dataName",
        "Set data that is attached to a layer",
        2,
        Some(2),
        &[flag(&["-file", "f"], Kind::Str, "Read data from file")],
        layers::set_layer_data
    ),
    cmd!(
        &["layers"],
        "[options [...]]",
        "List layers",
        0,
        Some(0),
        &[
            JSON,
            flag(&["-tree", "t"], Kind::Bool, "Use a tree"),
            flag(&["-quick", "q"], Kind::Bool, "Just the IDs"),
        ],
        layers::layers
    ),
    cmd!(
        &["storage-layers"],
        "[options [...]]",
        "List layers known to the storage driver",
        0,
        Some(0),
        &[JSON],
        layers::storage_layers
    ),
    cmd!(
        &["metadata"],
        "[LayerOrImageOrContainerNameOrID [...]]",
        "Retrieve layer, image, or container metadata",
        1,
        None,
        &[
            JSON,
            flag(&["-quiet", "q"], Kind::Bool, "Omit names and IDs")
        ],
        any::metadata
    ),
    cmd!(
        &["set-metadata", "setmetadata"],
        "[options [...]] layerOrImageOrContainerNameOrID",
        "Set layer, image, or container metadata",
        1,
        Some(1),
        &[
            flag(&["-metadata", "m"], Kind::Str, "Metadata"),
            flag(&["-metadata-file", "f"], Kind::Str, "Metadata File"),
        ],
        any::set_metadata
    ),
    cmd!(
        &["mount"],
        "[options [...]] LayerOrContainerNameOrID",
        "Mount a layer or container",
        1,
        None,
        MOUNT_FLAGS,
        layers::mount
    ),
    cmd!(
        &["unmount", "umount"],
        "LayerOrContainerNameOrID",
        "Unmount an image, layer or container",
        1,
        None,
        &[flag(&["-force", "f"], Kind::Bool, "Force the umount"), JSON],
        layers::unmount
    ),
    cmd!(
        &["mounted"],
        "LayerOrContainerNameOrID",
        "Check if a file system is mounted",
        1,
        None,
        &[JSON],
        layers::mounted
    ),
    cmd!(
        &["get-names", "getnames"],
        "[options [...]] imageOrContainerNameOrID",
        "Get layer, image, or container name or names",
        1,
        Some(1),
        &[JSON],
        any::get_names
    ),
    cmd!(
        &["add-names", "addnames"],
        "[options [...]] imageOrContainerNameOrID",
        "Add layer, image, or container name or names",
        1,
        None,
        &[NEW_NAME, JSON],
        any::add_names
    ),
    cmd!(
        &["remove-names", "removenames"],
        "[options [...]] imageOrContainerNameOrID",
        "Remove layer, image, or container name or names",
        1,
        None,
        &[NEW_NAME, JSON],
        any::remove_names
    ),
    cmd!(
        &["set-names", "setnames"],
        "[options [...]] imageOrContainerNameOrID",
        "Set layer, image, or container name or names",
        1,
        None,
        &[NEW_NAME, JSON],
        any::set_names
    ),
    cmd!(
        &["shutdown"],
        "",
        "Shut down layer storage",
        0,
        Some(0),
        &[FORCE_SHUTDOWN, JSON],
        shutdown
    ),
    cmd!(
        &["status"],
        "",
        "Check on graph driver status",
        0,
        Some(0),
        &[JSON],
        status
    ),
    cmd!(
        &["unshare"],
        "[command [...]]",
        "Run a command in a user namespace",
        0,
        None,
        &[],
        unshare
    ),
    cmd!(
        &["version"],
        "",
        "Return containers-storage version information",
        0,
        Some(0),
        &[JSON],
        version
    ),
    cmd!(
        &["wipe"],
        "",
        "Wipe all layers, images, and containers",
        0,
        Some(0),
        &[JSON],
        wipe
    ),
];

/// Writes `text` to stdout.
pub(crate) fn out(text: &str) -> Result<(), String> {
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())
}

/// Writes `text` to stderr.
pub(crate) fn err(text: &str) {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn pairs_json(pairs: &[(String, String)]) -> String {
    let items: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("[{},{}]", json_string(k), json_string(v)))
        .collect();
    format!("[{}]\n", items.join(","))
}

fn status(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let driver_status = ctx.store.status().map_err(|e| format!("status: {e}"))?;
    let mut pairs = vec![
        (
            "Root".to_string(),
            ctx.store.graph_root().to_string_lossy().into_owned(),
        ),
        (
            "Run Root".to_string(),
            ctx.store.run_root().to_string_lossy().into_owned(),
        ),
        (
            "Driver Name".to_string(),
            ctx.store.driver_name().to_string(),
        ),
        (
            "Driver Options".to_string(),
            crate::go_list(ctx.store.driver_options()),
        ),
    ];
    pairs.extend(driver_status);
    if ctx.json() {
        out(&pairs_json(&pairs))?;
    } else {
        let text: String = pairs.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        err(&text);
    }
    Ok(0)
}

/// Our version, in Go's `Version: X` format.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

fn version(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let pairs = vec![("Version".to_string(), VERSION.to_string())];
    if ctx.json() {
        out(&pairs_json(&pairs))?;
    } else {
        err(&format!("Version: {VERSION}\n"));
    }
    Ok(0)
}

fn shutdown(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let result = ctx.store.shutdown(ctx.flags.bool("-force"));
    match (result, ctx.json()) {
        (Ok(_), true) => {
            out("\"\"\n")?;
            Ok(0)
        }
        (Ok(_), false) => Ok(0),
        (Err(_), true) => {
            out("{}\n")?;
            Ok(1)
        }
        (Err(e), false) => Err(format!("shutdown: {e}")),
    }
}

fn wipe(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    match (ctx.store.wipe(), ctx.json()) {
        (Ok(()), true) => {
            out("\"\"\n")?;
            Ok(0)
        }
        (Ok(()), false) => Ok(0),
        (Err(_), true) => {
            out("{}\n")?;
            Ok(1)
        }
        (Err(e), false) => Err(format!("wipe: {e}")),
    }
}

/// `unshare [command …]`: runs the command (default `$SHELL`, else `/bin/sh`) with inherited
/// stdio and environment. For a rootless user the tool is inside the user namespace by now
/// (`--unshare` defaults to true), so the command runs there, as its root, and sees the
/// store's mounts; as root no namespace is needed. Its exit status is not propagated: a
/// failure is reported as an error (exit 1), like Go.
fn unshare(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let shell = std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into());
    let (prog, args) = match ctx.args.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => (shell, Vec::new()),
    };
    let _ = std::io::stdout().flush();
    let status = std::process::Command::new(&prog)
        .args(&args)
        .status()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "exec: {}: executable file not found in $PATH",
                    containers_storage::gocompat::json::string(&prog)
                )
            } else {
                format!(
                    "fork/exec {prog}: {}",
                    containers_storage::types::go_io_error_text(&e)
                )
            }
        })?;
    if status.success() {
        return Ok(0);
    }
    Err(match status.code() {
        Some(code) => format!("exit status {code}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            format!("signal: {}", status.signal().unwrap_or(0))
        }
    })
}

fn config(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let env = containers_storage::config::Environment::from_process();
    let (mut options, _) =
        containers_storage::config::load_options(&env).map_err(|e| format!("default: {e}"))?;
    if let Some(file) = ctx.args.first() {
        let (reloaded, _) =
            containers_storage::config::reload_file(std::path::Path::new(file), &env, &options)
                .map_err(|e| format!("reload: {e}"))?;
        options = reloaded;
    }
    out(&format!("{}\n", options.to_go_json()))?;
    Ok(0)
}
