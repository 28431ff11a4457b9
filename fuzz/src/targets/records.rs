//! The JSON record loaders.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
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
