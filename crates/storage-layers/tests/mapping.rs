//! ID-mapped layers: which maps a new layer gets, re-owned content, template copies, canonical
//! diffs, `layer_parent_owners`. Needs root (chown); without it the tests fail when CI=true
//! and are skipped (loudly) otherwise.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{Scratch, in_ci, reader, sample_tar, sha256};
use storage_archive::Compression;
use storage_drivers::MountOpts;
use storage_layers::{CreateLayerOptions, DiffOptions, LayerStore};
use storage_types::{ErrorKind, IdMap};

fn is_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        assert!(!in_ci(), "these tests need root in CI");
        eprintln!("SKIPPED: not root");
    }
    root
}

fn map(host: u32) -> Vec<IdMap> {
    vec![IdMap::new(0, host, 65536)]
}

fn plain_diff(l: &storage_layers::Layers, id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    l.diff(
        None,
        id,
        &DiffOptions {
            compression: Some(Compression::None),
        },
        &mut out,
    )
    .unwrap();
    out
}

#[test]
fn maps_are_chosen_like_go() {
    if !is_root() {
        return;
    }
    let s = Scratch::new();
    let mut o = s.options();
    o.uid_map = map(200000);
    o.gid_map = map(300000);
    let store = LayerStore::open(o).unwrap();
    let mut w = store.write().unwrap();
    let (base, _) = w.create(&CreateLayerOptions::default(), None).unwrap();
    assert_eq!(
        (base.uidmap.clone(), base.gidmap.clone()),
        (map(200000), map(300000)),
        "store defaults"
    );
    let root = std::fs::metadata(s.vfs_dir(&base.id)).unwrap();
    assert_eq!(
        (root.uid(), root.gid()),
        (200000, 300000),
        "root dir owned by container root"
    );
    let child = CreateLayerOptions {
        parent: Some(base.id.clone()),
        ..Default::default()
    };
    let (child, _) = w.create(&child, None).unwrap();
    assert_eq!(child.uidmap, map(200000), "inherited from the parent");
    let explicit = CreateLayerOptions {
        parent: Some(base.id.clone()),
        uid_map: map(100000),
        host_gid_mapping: true,
        ..Default::default()
    };
    let (explicit, _) = w.create(&explicit, None).unwrap();
    assert_eq!(
        (explicit.uidmap.clone(), explicit.gidmap.clone()),
        (map(100000), Vec::new())
    );
    let e = w
        .mount(
            &explicit.id,
            &MountOpts {
                uid_map: map(5),
                gid_map: map(5),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("cannot mount layer {}: shifting not enabled", explicit.id)
    );
    let json = s.layers_json();
    assert_eq!(
        json[0]["uidmap"],
        serde_json::json!([{"container_id": 0, "host_id": 200000, "size": 65536}])
    );
    assert!(json[2].get("gidmap").is_none(), "no empty list written");
}

#[test]
fn mapped_apply_template_copy_and_canonical_diffs() {
    if !is_root() {
        return;
    }
    let s = Scratch::new();
    let store = s.store();
    let mut w = store.write().unwrap();
    let tar = sample_tar("mapped");
    let (base, _) = w
        .create(
            &CreateLayerOptions {
                names: vec!["base".into()],
                ..Default::default()
            },
            Some(reader(tar.clone())),
        )
        .unwrap();
    assert_eq!(
        std::fs::metadata(s.vfs_dir(&base.id).join("etc/owned.txt"))
            .unwrap()
            .uid(),
        1000
    );

    // Applying into a mapped layer stores host IDs, the diff stays canonical.
    let mapped_apply = CreateLayerOptions {
        uid_map: map(100000),
        gid_map: map(100000),
        ..Default::default()
    };
    let (m1, _) = w.create(&mapped_apply, Some(reader(tar.clone()))).unwrap();
    let md = std::fs::metadata(s.vfs_dir(&m1.id).join("etc/owned.txt")).unwrap();
    assert_eq!((md.uid(), md.gid()), (101000, 101000));
    assert_eq!(m1.uidset, vec![0, 1000], "container-side IDs");
    assert_eq!(sha256(&plain_diff(&w, &m1.id)), sha256(&tar));

    // A template copy with other maps: same digests and tar-split, re-owned content.
    let copy = CreateLayerOptions {
        template: Some("base".into()),
        uid_map: map(300000),
        gid_map: map(300000),
        ..Default::default()
    };
    let (m2, _) = w.create(&copy, None).unwrap();
    assert_eq!(m2.parent, "", "same parent as the template");
    assert_eq!(
        (m2.diff_digest.clone(), m2.diff_size),
        (base.diff_digest.clone(), base.diff_size)
    );
    assert_eq!(
        (m2.compressed_diff_digest.clone(), m2.uidset.clone()),
        (base.compressed_diff_digest.clone(), base.uidset.clone())
    );
    let md = std::fs::metadata(s.vfs_dir(&m2.id).join("etc/owned.txt")).unwrap();
    assert_eq!((md.uid(), md.gid()), (301000, 301000));
    assert_eq!(
        std::fs::read(w.tar_split_path(&m2.id)).unwrap(),
        std::fs::read(w.tar_split_path(&base.id)).unwrap()
    );
    assert_eq!(
        plain_diff(&w, &m2.id),
        tar,
        "byte-exact through the copied tar-split"
    );
    let e = w
        .create(
            &CreateLayerOptions {
                template: Some("nope".into()),
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LayerUnknown);
}

#[test]
fn layer_parent_owners_of_a_mapped_layer() {
    if !is_root() {
        return;
    }
    let s = Scratch::new();
    let store = s.store();
    let mut w = store.write().unwrap();
    let (plain, _) = w.create(&CreateLayerOptions::default(), None).unwrap();
    let opts = CreateLayerOptions {
        uid_map: map(100000),
        gid_map: map(100000),
        ..Default::default()
    };
    let (mapped, _) = w.create(&opts, None).unwrap();
    assert_eq!(w.layer_parent_owners(&plain.id).unwrap(), (vec![], vec![]));
    assert_eq!(
        w.layer_parent_owners(&mapped.id).unwrap_err().kind(),
        ErrorKind::LayerNotMounted
    );
    w.mount(&mapped.id, &MountOpts::default()).unwrap();
    // Every ancestor of <tmp>/root/vfs/dir/<id> is owned by root, which the map cannot express.
    assert_eq!(
        w.layer_parent_owners(&mapped.id).unwrap(),
        (vec![0], vec![0])
    );
    // An ancestor owned by a mappable ID is not reported.
    std::os::unix::fs::chown(s.graph().join("vfs"), Some(100005), Some(7)).unwrap();
    assert_eq!(
        w.layer_parent_owners(&mapped.id).unwrap(),
        (vec![0], vec![0, 7])
    );
    w.unmount(&mapped.id, true).unwrap();
}
