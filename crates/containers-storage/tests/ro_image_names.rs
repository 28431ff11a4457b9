//! Names on an image of a read-only image store, through the `Store` API, as Go 1.46+
//! handles them (issue 19, point 2): a rename pulls the image up into the read-write store
//! (record, read-only names and big data), the rename applies to that copy, the read-only
//! store is never written, and `Store::image` no longer resolves a name the copy lost.
//! (Go 1.43 resolved a removed name through the read-only record; this follows 1.60.)

use std::path::Path;

use containers_storage::config::StoreOptions;
use containers_storage::types::ErrorKind;
use containers_storage::{CreateLayerOptions, NamesOp, NewImage, Store};

fn open(graph: &Path, run: &Path, image_store: Option<&Path>) -> Store {
    Store::open(&StoreOptions {
        graph_root: graph.to_path_buf(),
        run_root: run.to_path_buf(),
        driver: "vfs".into(),
        driver_options: image_store
            .map(|p| vec![format!("vfs.imagestore={}", p.display())])
            .unwrap_or_default(),
        ..StoreOptions::default()
    })
    .expect("open store")
}

/// A read-only store holding image `ro1`/`ro2` with big data `k`; returns its graph root
/// and the image ID.
fn read_only_store(dir: &Path) -> (std::path::PathBuf, String) {
    let graph = dir.join("ro");
    let st = open(&graph, &dir.join("ro-run"), None);
    let (layer, _) = st
        .create_layer(&CreateLayerOptions::default(), None)
        .expect("layer");
    let image = st
        .create_image(NewImage {
            layer: layer.id,
            names: vec!["ro1".into(), "ro2".into()],
            ..NewImage::default()
        })
        .expect("image");
    st.set_image_big_data(&image.id, "k", b"hello")
        .expect("big data");
    st.shutdown(true).expect("shutdown");
    (graph, image.id)
}

#[test]
fn renaming_a_read_only_image_pulls_it_up_and_shadows_its_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ro_graph, id) = read_only_store(dir.path());
    let ro_images = ro_graph.join("vfs-images/images.json");
    let before = std::fs::read(&ro_images).expect("images.json");

    let st = open(
        &dir.path().join("main"),
        &dir.path().join("run"),
        Some(&ro_graph),
    );
    assert_eq!(st.image("ro1").expect("ro1 via the read-only store").id, id);

    // add-names: the copy gets the read-only names, the new one first.
    let names = st
        .update_names("ro1", &["added".into()], NamesOp::Add)
        .expect("add-names");
    assert_eq!(names, ["added", "ro1", "ro2"]);
    assert_eq!(st.image("added").expect("new name").id, id);
    assert_eq!(
        st.image_big_data(&id, "k").expect("big data copied"),
        b"hello"
    );

    // remove-names: the name no longer resolves, although the read-only record has it.
    let names = st
        .update_names("ro2", &["ro2".into()], NamesOp::Remove)
        .expect("remove-names");
    assert_eq!(names, ["added", "ro1"]);
    let e = st.image("ro2").expect_err("removed name must not resolve");
    assert_eq!(e.kind(), ErrorKind::ImageUnknown, "{e}");
    assert_eq!(st.names(&id).expect("names"), ["added", "ro1"]);

    // set-names replaces the copy's names.
    let names = st
        .update_names(&id, &["only".into()], NamesOp::Set)
        .expect("set-names");
    assert_eq!(names, ["only"]);
    assert!(st.image("ro1").is_err(), "ro1 was replaced");
    assert_eq!(st.image("only").expect("only").id, id);

    // The read-only store was never written.
    assert_eq!(std::fs::read(&ro_images).expect("images.json"), before);
}
