//! Store construction, option resolution, shutdown, wipe and cross-store operations.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use containers_storage::{CreateLayerOptions, NamesOp, RecordKind, Store, resolve_options};
use storage_config::StoreOptions;
use storage_drivers::MountOpts;
use storage_types::ErrorKind;

fn opts(tmp: &Path) -> StoreOptions {
    StoreOptions {
        graph_root: tmp.join("root"),
        run_root: tmp.join("run"),
        driver: "vfs".into(),
        ..StoreOptions::default()
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[test]
fn open_creates_go_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&opts(tmp.path())).unwrap();
    let g = tmp.path().join("root");
    let r = tmp.path().join("run");
    for d in [
        g.clone(),
        g.join("vfs"),
        g.join("vfs-layers"),
        g.join("vfs-images"),
        g.join("vfs-containers"),
        r.clone(),
        r.join("vfs-layers"),
        r.join("vfs-containers"),
        r.join("vfs-locks"),
    ] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    for f in [
        g.join("storage.lock"),
        g.join("userns.lock"),
        g.join("vfs-layers/layers.lock"),
        g.join("vfs-images/images.lock"),
        g.join("vfs-containers/containers.lock"),
        r.join("vfs-layers/mountpoints.lock"),
    ] {
        assert_eq!(mode(&f), 0o644, "{}", f.display());
        assert_eq!(size(&f), 0, "opening writes no token: {}", f.display());
    }
    // 1.60 no longer creates these.
    assert!(!g.join("mounts").exists());
    assert!(!g.join("tmp").exists());
    assert!(!r.join("vfs-images").exists());
    assert_eq!(store.graph_root(), g);
    assert_eq!(store.run_root(), r);
    assert_eq!(store.driver_name(), "vfs");
    assert!(store.driver_options().is_empty());
}

#[test]
fn transient_store_keeps_container_lock_in_run_root() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path());
    o.transient_store = true;
    let store = Store::open(&o).unwrap();
    assert!(store.is_transient());
    assert!(
        tmp.path()
            .join("run/vfs-containers/containers.lock")
            .exists()
    );
    assert!(
        !tmp.path()
            .join("root/vfs-containers/containers.lock")
            .exists()
    );
    assert!(tmp.path().join("root/vfs-layers/layers.lock").exists());
}

#[test]
fn option_resolution_rules() {
    let defaults = || {
        Ok(StoreOptions {
            graph_root: "/def/g".into(),
            run_root: "/def/r".into(),
            driver: "overlay".into(),
            driver_options: vec!["overlay.mountopt=nodev".into()],
            ..StoreOptions::default()
        })
    };
    // Nothing given: the defaults as a whole.
    let r = resolve_options(&StoreOptions::default(), defaults).unwrap();
    assert_eq!(r.driver, "overlay");
    // A driver without roots is an error.
    let o = StoreOptions {
        driver: "vfs".into(),
        ..StoreOptions::default()
    };
    let e = resolve_options(&o, defaults).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no storage runroot or graphroot specified: missing necessary StoreOptions"
    );
    // One root given: the other one comes from the defaults, the driver does not.
    let o = StoreOptions {
        graph_root: "/x".into(),
        ..StoreOptions::default()
    };
    let r = resolve_options(&o, defaults).unwrap();
    assert_eq!(r.graph_root, PathBuf::from("/x"));
    assert_eq!(r.run_root, PathBuf::from("/def/r"));
    assert_eq!(r.driver, "");
    assert!(r.driver_options.is_empty());
}

#[test]
fn errors_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path());
    o.driver = "bogus".into();
    let e = Store::open(&o).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "failed to GetDriver graph bogus {}: driver not supported",
            tmp.path().join("root").display()
        )
    );
    let mut o = opts(tmp.path());
    o.image_store = Some(tmp.path().join("root"));
    let e = Store::open(&o).unwrap_err();
    assert!(
        e.to_string()
            .contains("must either be not set or be a different than graphroot"),
        "{e}"
    );
}

#[test]
fn auto_selection_falls_back_to_vfs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path());
    o.driver.clear();
    o.driver_priority = vec!["bogus1".into(), "vfs".into()];
    let store = Store::open(&o).unwrap();
    assert_eq!(store.driver_name(), "vfs");
    assert!(tmp.path().join("root/vfs-images").exists());
}

#[test]
fn relative_roots_become_absolute() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = std::env::current_dir().unwrap();
    let rel = pathdiff(tmp.path(), &cwd);
    let o = StoreOptions {
        graph_root: rel.join("a/../g"),
        run_root: rel.join("./r"),
        driver: "vfs".into(),
        ..StoreOptions::default()
    };
    let store = Store::open(&o).unwrap();
    assert!(store.graph_root().is_absolute());
    assert_eq!(
        std::fs::canonicalize(store.graph_root()).unwrap(),
        std::fs::canonicalize(tmp.path().join("g")).unwrap()
    );
    assert!(!store.graph_root().to_string_lossy().contains(".."));
}

/// A relative path from `base` to `target` (both absolute).
fn pathdiff(target: &Path, base: &Path) -> PathBuf {
    let t: Vec<_> = target.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

#[test]
fn shutdown_writes_token_only_when_nothing_is_mounted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&opts(tmp.path())).unwrap();
    let lock = tmp.path().join("root/storage.lock");
    let (layer, _) = store
        .create_layer(&CreateLayerOptions::default(), None)
        .unwrap();
    store.mount(&layer.id, &MountOpts::default()).unwrap();
    store.mount(&layer.id, &MountOpts::default()).unwrap();
    assert_eq!(store.mounted(&layer.id).unwrap(), 2);
    let e = store.shutdown(false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "a layer is mounted: layer is in use by a container"
    );
    assert_eq!(size(&lock), 0);
    // Forced: everything is unmounted, but the call still fails.
    let e = store.shutdown(true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LayerUsedByContainer);
    assert_eq!(store.mounted(&layer.id).unwrap(), 0);
    assert_eq!(size(&lock), 0);
    assert!(store.shutdown(false).unwrap().is_empty());
    assert_eq!(size(&lock), 64);
}

#[test]
fn another_shutdown_reinitialises_our_driver() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(&opts(tmp.path())).unwrap();
    let b = Store::open(&opts(tmp.path())).unwrap();
    let (layer, _) = a
        .create_layer(
            &CreateLayerOptions {
                names: vec!["n".into()],
                ..CreateLayerOptions::default()
            },
            None,
        )
        .unwrap();
    b.shutdown(false).unwrap();
    // `a` notices the new storage.lock token and keeps working.
    assert_eq!(a.layer("n").unwrap().0.id, layer.id);
    a.mount("n", &MountOpts::default()).unwrap();
    assert_eq!(b.mounted("n").unwrap(), 1);
    a.unmount("n", false).unwrap();
}

#[test]
fn delete_layer_checks_children_and_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&opts(tmp.path())).unwrap();
    let create = |id: &str, parent: Option<&str>| {
        store
            .create_layer(
                &CreateLayerOptions {
                    id: Some(id.into()),
                    parent: parent.map(str::to_string),
                    ..CreateLayerOptions::default()
                },
                None,
            )
            .unwrap()
    };
    create("a", None);
    create("b", Some("a"));
    let e = store.delete_layer("a").unwrap_err();
    assert_eq!(e.to_string(), "used by layer b: layer has children");
    assert_eq!(
        store.delete_layer("nosuch").unwrap_err().to_string(),
        "identifier is not a layer"
    );
    store.delete_layer("b").unwrap();
    store.delete_layer("a").unwrap();
    assert!(store.layers().unwrap().is_empty());
}

#[test]
fn names_metadata_and_kinds_across_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&opts(tmp.path())).unwrap();
    let (l, _) = store
        .create_layer(
            &CreateLayerOptions {
                id: Some("l1".into()),
                names: vec!["one".into()],
                ..CreateLayerOptions::default()
            },
            None,
        )
        .unwrap();
    assert_eq!(store.kind_of("one").unwrap(), Some(RecordKind::Layer));
    assert_eq!(store.kind_of("nosuch").unwrap(), None);
    assert_eq!(
        store
            .update_names(&l.id, &["two".into()], NamesOp::Add)
            .unwrap(),
        vec!["two".to_string(), "one".to_string()]
    );
    assert_eq!(
        store
            .update_names("two", &["one".into()], NamesOp::Remove)
            .unwrap(),
        vec!["two".to_string()]
    );
    assert_eq!(
        store.names("nosuch").unwrap_err().to_string(),
        "layer not known"
    );
    store.set_metadata("two", "meta").unwrap();
    assert_eq!(store.metadata("l1").unwrap(), "meta");
    assert_eq!(
        store.metadata("nosuch").unwrap_err().to_string(),
        "identifier is not a layer, image, or container"
    );
}

#[test]
fn wipe_removes_layers_images_containers_and_driver_leftovers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&opts(tmp.path())).unwrap();
    let (l, _) = store
        .create_layer(&CreateLayerOptions::default(), None)
        .unwrap();
    {
        let mut images = store.images().write().unwrap();
        images
            .create(storage_images::NewImage {
                layer: l.id.clone(),
                names: vec!["img".into()],
                ..storage_images::NewImage::default()
            })
            .unwrap();
    }
    store
        .create_driver_layer("leak", None, &storage_drivers::CreateOpts::default(), true)
        .unwrap();
    assert_eq!(store.driver_layers().unwrap().len(), 2);
    store.mount(&l.id, &MountOpts::default()).unwrap();
    store.wipe().unwrap();
    assert!(store.layers().unwrap().is_empty());
    assert!(store.images().read().unwrap().images().is_empty());
    assert!(store.driver_layers().unwrap().is_empty());
    store.shutdown(false).unwrap();
}

#[test]
fn split_image_store_keeps_graph_root_images_visible() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = Store::open(&opts(tmp.path())).unwrap();
    let (l0, _) = plain
        .create_layer(
            &CreateLayerOptions {
                id: Some("l0".into()),
                ..CreateLayerOptions::default()
            },
            None,
        )
        .unwrap();
    plain
        .create_image(storage_images::NewImage {
            id: Some("old".into()),
            layer: l0.id.clone(),
            ..storage_images::NewImage::default()
        })
        .unwrap();
    drop(plain);
    let mut o = opts(tmp.path());
    o.image_store = Some(tmp.path().join("is"));
    let split = Store::open(&o).unwrap();
    split
        .create_image(storage_images::NewImage {
            id: Some("new".into()),
            ..storage_images::NewImage::default()
        })
        .unwrap();
    assert!(tmp.path().join("is/vfs-images/images.json").exists());
    let ids: Vec<String> = split
        .images_list()
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, vec!["new".to_string(), "old".to_string()]);
    assert!(!split.image("old").unwrap().read_only);
    split.set_metadata("old", "m").unwrap();
    assert_eq!(split.metadata("old").unwrap(), "m");
    assert_eq!(
        split.delete_image("old", true).unwrap(),
        vec!["l0".to_string()]
    );
    assert!(split.image("old").is_err());
    assert!(split.layers().unwrap().is_empty());
}

/// `Store::copy` mounts the layers it names for the copy and unmounts them afterwards, also
/// when a later source fails; its errors name what failed as Go's CLI words it.
#[test]
fn copy_mounts_copies_and_unmounts() {
    use containers_storage::{CopyEnd, CopyError};
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&opts(tmp.path())).unwrap();
    let (layer, _) = store
        .create_layer(&CreateLayerOptions::default(), None)
        .unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    let host = |p: &Path| CopyEnd::Host(p.to_string_lossy().into_owned());
    let into = CopyEnd::Layer {
        layer: layer.id.clone(),
        path: "/dst".into(),
    };
    store.copy(&[host(&src)], &into, None).unwrap();
    assert_eq!(store.mounted(&layer.id).unwrap(), 0, "left mounted");
    let dir = tmp.path().join("root/vfs/dir").join(&layer.id);
    assert_eq!(std::fs::read(dir.join("dst/f")).unwrap(), b"data");
    // The second source is missing: the first is copied, the layer unmounted, the error
    // names the source and the target under the mount point.
    let missing = tmp.path().join("missing");
    let e = store
        .copy(&[host(&src.join("f")), host(&missing)], &into, None)
        .unwrap_err();
    assert!(matches!(e, CopyError::Copy { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(&format!(
            "error copying {:?} to \"{}/dst\": stat ",
            missing.display().to_string(),
            dir.display()
        )),
        "{e}"
    );
    assert_eq!(store.mounted(&layer.id).unwrap(), 0, "left mounted");
    let unknown = CopyEnd::Layer {
        layer: "nol".into(),
        path: "/x".into(),
    };
    let e = store.copy(&[host(&src)], &unknown, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "error finding layer \"nol\": layer not known"
    );
    store.shutdown(false).unwrap();
}
