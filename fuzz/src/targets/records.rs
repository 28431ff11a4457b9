//! The JSON record loaders.

use std::path::Path;

use containers_storage::Store;
use serde::Serialize;
use serde::de::DeserializeOwned;
use storage_config::StoreOptions;
use storage_types::{Container, Image, Layer, MountPoint, parse_images, parse_records, to_go_json};

use crate::Scratch;

type Parse<T> = fn(&[u8], &Path) -> storage_types::Result<Vec<T>>;

/// What loads, saves; what was saved loads back and saves to the same bytes.
fn round_trip<T: Serialize + DeserializeOwned>(data: &[u8], file: &str, parse: Parse<T>) {
    let path = Path::new(file);
    let Ok(records) = parse(data, path) else {
        return;
    };
    let saved = to_go_json(&records);
    let again = parse(&saved, path).unwrap_or_else(|e| {
        panic!(
            "{file}: what was saved does not load: {e}\n{}",
            String::from_utf8_lossy(&saved)
        )
    });
    let resaved = to_go_json(&again);
    assert!(
        resaved == saved,
        "{file}: saving what was loaded changed it:\n{}\n{}",
        String::from_utf8_lossy(&saved),
        String::from_utf8_lossy(&resaved)
    );
}

/// The loaders of `layers.json`, `images.json` (with its digest recomputation),
/// `containers.json` and `mountpoints.json`, each on the same input.
pub(crate) fn records(_: &mut Scratch, data: &[u8]) {
    round_trip::<Layer>(data, "layers.json", parse_records);
    round_trip::<Image>(data, "images.json", parse_images);
    round_trip::<Container>(data, "containers.json", parse_records);
    round_trip::<MountPoint>(data, "mountpoints.json", parse_records);
}

/// Where `store_load` writes the parts of its input, relative to its scratch root.
pub(crate) const STORE_FILES: [&str; 4] = [
    "g/vfs-layers/layers.json",
    "g/vfs-images/images.json",
    "g/vfs-containers/containers.json",
    "r/vfs-layers/mountpoints.json",
];

/// What a store lists: its layers, images and containers as Go's JSON.
fn listing(opts: &StoreOptions) -> Result<Vec<u8>, String> {
    let store = Store::open(opts).map_err(|e| e.to_string())?;
    let layers: Vec<Layer> = store
        .layers()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    let images = store.images_list().map_err(|e| e.to_string())?;
    let containers = store.containers_list().map_err(|e| e.to_string())?;
    let mut out = to_go_json(&layers);
    out.extend_from_slice(&to_go_json(&images));
    out.extend_from_slice(&to_go_json(&containers));
    Ok(out)
}

/// The stores' own loading (name repair, incomplete layers removed through the driver,
/// mount records) of the four record files, the input's NUL-separated parts, on a vfs store
/// in a scratch root: what the first open lists, after its repairs, a second open lists too,
/// and nothing outside the root is touched (record IDs name directories).
pub(crate) fn store_load(scratch: &mut Scratch, data: &[u8]) {
    let fence = scratch.fence("store_load");
    fence
        .reset_root()
        .unwrap_or_else(|e| panic!("emptying {}: {e}", fence.root().display()));
    let root = fence.root().to_path_buf();
    for (file, part) in STORE_FILES.iter().zip(data.split(|&b| b == 0)) {
        let path = root.join(file);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(&path, part).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let opts = StoreOptions {
        graph_root: root.join("g"),
        run_root: root.join("r"),
        driver: "vfs".into(),
        ..StoreOptions::default()
    };
    let first = listing(&opts);
    let second = listing(&opts);
    if let (Ok(a), Ok(b)) = (&first, &second) {
        assert!(
            a == b,
            "a second open lists other records:\n{}\n{}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
    }
    fence.check();
}
