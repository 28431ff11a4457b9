//! A library user's program, for the rootless tests: enters the user namespace the way the
//! `containers_storage` guide says (`userns::maybe_reexec` first thing in `main`), opens the
//! user's default store, and prints what it sees. With `import TAR` it also creates a layer
//! from that tar (files owned by several IDs need the namespace's maps).
//!
//! Output lines: `namespace: Root|Inside`, `uid_map: <ranges>`, `graph root: <path>`, one
//! `image: <id> <names>` per image, then `layer: <id>` after an import.

use containers_storage::{CreateLayerOptions, Store};

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("{what}: {e}");
    std::process::exit(1)
}

fn main() {
    let ns = containers_storage::userns::maybe_reexec().unwrap_or_else(|e| fail("namespace", e));
    let (options, _warnings) =
        storage_config::load_default_options().unwrap_or_else(|e| fail("options", e));
    let store = Store::open(&options).unwrap_or_else(|e| fail("opening the store", e));
    println!("namespace: {ns:?}");
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let map: Vec<String> = map
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    println!("uid_map: {}", map.join(", "));
    println!("graph root: {}", store.graph_root().display());
    for image in store
        .images_list()
        .unwrap_or_else(|e| fail("listing images", e))
    {
        println!("image: {} {}", image.id, image.names.join(","));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [cmd, tar] = args.as_slice()
        && cmd == "import"
    {
        let file = std::fs::File::open(tar).unwrap_or_else(|e| fail("opening the tar", e));
        let (layer, _) = store
            .create_layer(&CreateLayerOptions::default(), Some(Box::new(file)))
            .unwrap_or_else(|e| fail("creating a layer", e));
        println!("layer: {}", layer.id);
    }
    let _ = store.shutdown(false);
}
