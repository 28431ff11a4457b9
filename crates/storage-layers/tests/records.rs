//! Layer records: creation, lookup, names, metadata, flags, big data, deletion, mount counts,
//! crash recovery, reloads between instances and read-only stores (vfs driver, temp dirs).

mod common;

use storage_testsupport::per_driver;

// Driver-parametrised (`<test>::vfs`, `<test>::overlay`, `<test>::btrfs`).
per_driver!(delete_checks_children_and_removes_everything);
per_driver!(long_chain_of_layers);
per_driver!(mount_counts_in_mountpoints_json);

use std::io::Read;
use std::os::unix::fs::PermissionsExt;

use common::{Scratch, list_dir, reader, sample_tar};
use storage_drivers::MountOpts;
use storage_layers::{CreateLayerOptions, LayerStore};
use storage_types::ErrorKind;

fn named(names: &[&str]) -> CreateLayerOptions {
    CreateLayerOptions {
        names: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn child_of(parent: &str, names: &[&str]) -> CreateLayerOptions {
    CreateLayerOptions {
        parent: Some(parent.to_string()),
        ..named(names)
    }
}

/// Options for a layer with this ID and names.
fn with_id(id: &str, names: &[&str]) -> CreateLayerOptions {
    CreateLayerOptions {
        id: Some(id.to_string()),
        ..named(names)
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn create_and_look_up() {
    let s = Scratch::new();
    let store = s.store();
    let mut w = store.write().unwrap();
    let (base, size) = w.create(&named(&["base", "base2", "base"]), None).unwrap();
    assert_eq!(size, -1);
    assert_eq!(base.id.len(), 64);
    assert_eq!(
        base.names,
        strings(&["base", "base2"]),
        "names de-duplicated"
    );
    assert!(!base.is_incomplete());
    let (child, _) = w.create(&child_of("base", &["child"]), None).unwrap();
    assert_eq!(child.parent, base.id, "parent resolved to the full ID");
    let custom = CreateLayerOptions {
        id: Some("my-layer".into()),
        ..Default::default()
    };
    w.create(&custom, None).unwrap();

    // Go's error texts.
    let e = w.create(&named(&["base"]), None).unwrap_err();
    assert_eq!(
        (e.kind(), e.to_string().as_str()),
        (ErrorKind::DuplicateName, "that name is already in use")
    );
    let e = w.create(&custom, None).unwrap_err();
    assert_eq!(
        (e.kind(), e.to_string().as_str()),
        (ErrorKind::DuplicateId, "that ID is already in use")
    );
    let e = w.create(&child_of("nope", &[]), None).unwrap_err();
    assert_eq!(
        (e.kind(), e.to_string().as_str()),
        (ErrorKind::LayerUnknown, "layer not known")
    );
    drop(w);

    let r = store.read().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r.get(&base.id).unwrap().id, base.id);
    assert_eq!(r.get("base2").unwrap().id, base.id);
    assert_eq!(r.get(&child.id[..12]).unwrap().id, child.id);
    assert_eq!(r.get("my-layer").unwrap().parent, "");
    assert!(r.lookup("").is_none());
    assert!(r.has_children(&base.id));
    assert!(!r.has_children(&child.id));
    assert_eq!(
        r.size(&base.id).unwrap(),
        -1,
        "created layers have an unknown size"
    );
    drop(r);

    // On disk: a compact Go-shaped array, mode 0600, no incomplete flag left, driver dirs made.
    let json = s.layers_json();
    let arr = json.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    assert_eq!(arr[0]["id"], base.id.as_str());
    assert!(arr[0].get("flags").is_none(), "{}", arr[0]);
    assert!(arr[0]["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(arr[1]["parent"], base.id.as_str());
    let raw = std::fs::read(s.layer_dir().join("layers.json")).unwrap();
    assert!(
        !raw.ends_with(b"\n") && !raw.contains(&b' '),
        "compact JSON"
    );
    let mode = std::fs::metadata(s.layer_dir().join("layers.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(s.vfs_dir(&base.id).is_dir() && s.vfs_dir(&child.id).is_dir());
    assert_eq!(
        std::fs::read(s.run_dir().join("mountpoints.json")).unwrap(),
        b"[]"
    );
    assert_eq!(
        std::fs::metadata(s.layer_dir().join("layers.lock"))
            .unwrap()
            .len(),
        64,
        "token written"
    );
}

#[test]
fn ambiguous_prefix_is_not_found_and_names_shadow_prefixes() {
    let s = Scratch::new();
    let store = s.store();
    let mut w = store.write().unwrap();
    for id in ["abc1", "abc2"] {
        w.create(&with_id(id, &[]), None).unwrap();
    }
    w.create(&with_id("zzz", &["abc"]), None).unwrap();
    assert!(w.lookup("ab").is_none(), "ambiguous prefix");
    assert_eq!(w.get("abc1").unwrap().id, "abc1");
    assert_eq!(
        w.get("abc").unwrap().id,
        "zzz",
        "a name wins over an ID prefix"
    );
    assert_eq!(w.get("z").unwrap().id, "zzz");
}

#[test]
fn names_metadata_and_flags() {
    let s = Scratch::new();
    let store = s.store();
    let mut w = store.write().unwrap();
    let (a, _) = w.create(&named(&["a1"]), None).unwrap();
    let (b, _) = w.create(&named(&["b1", "b2"]), None).unwrap();
    w.add_names(&a.id, &strings(&["a2", "a1", "a3"])).unwrap();
    assert_eq!(
        w.get(&a.id).unwrap().names,
        strings(&["a2", "a1", "a3"]),
        "given first, then old"
    );
    // Set/add silently take names away from other layers.
    w.add_names("a1", &strings(&["b2"])).unwrap();
    assert_eq!(
        w.get(&a.id).unwrap().names,
        strings(&["b2", "a2", "a1", "a3"])
    );
    assert_eq!(w.get(&b.id).unwrap().names, strings(&["b1"]));
    w.set_names(&b.id, &strings(&["a3", "x"])).unwrap();
    assert_eq!(w.get(&a.id).unwrap().names, strings(&["b2", "a2", "a1"]));
    w.remove_names(&a.id, &strings(&["a2", "nope"])).unwrap();
    assert_eq!(w.get(&a.id).unwrap().names, strings(&["b2", "a1"]));
    assert!(w.lookup("a2").is_none());
    w.set_metadata("x", "some \"metadata\" <&>").unwrap();
    w.set_flag(&a.id, "custom", serde_json::json!({"k": 1}))
        .unwrap();
    w.set_flag(&a.id, "other", serde_json::Value::Bool(false))
        .unwrap();
    w.clear_flag(&a.id, "other").unwrap();
    assert_eq!(
        w.set_metadata("unknown", "m").unwrap_err().kind(),
        ErrorKind::LayerUnknown
    );
    drop(w);

    // A fresh instance (another process) sees everything.
    let other = s.store();
    let r = other.read().unwrap();
    assert_eq!(r.get(&b.id).unwrap().metadata, "some \"metadata\" <&>");
    assert_eq!(r.get(&b.id).unwrap().names, strings(&["a3", "x"]));
    let flags = &r.get(&a.id).unwrap().flags;
    assert_eq!(flags.len(), 1);
    assert_eq!(flags["custom"], serde_json::json!({"k": 1}));
    drop(r);
    let raw = String::from_utf8(std::fs::read(s.layer_dir().join("layers.json")).unwrap()).unwrap();
    assert!(
        raw.contains(r#""metadata":"some \"metadata\" \u003c\u0026\u003e""#),
        "{raw}"
    );
}

#[test]
fn big_data_items() {
    let s = Scratch::new();
    let store = s.store();
    let mut w = store.write().unwrap();
    let (l, _) = w.create(&named(&["l"]), None).unwrap();
    w.set_big_data("l", "plain.key", &mut &b"one"[..]).unwrap();
    w.set_big_data("l", "Upper-Key", &mut &b"two"[..]).unwrap();
    w.set_big_data("l", "plain.key", &mut &b"three"[..])
        .unwrap();
    let e = w.set_big_data("l", "", &mut &b""[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidBigDataName);
    let e = w.set_big_data("nope", "k", &mut &b""[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LayerUnknown);
    drop(w);
    let r = s.store();
    let r = r.read().unwrap();
    assert_eq!(
        r.big_data_names("l").unwrap(),
        strings(&["plain.key", "Upper-Key"])
    );
    let mut got = String::new();
    r.big_data("l", "plain.key")
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    assert_eq!(got, "three");
    assert_eq!(
        list_dir(&s.layer_dir().join(&l.id)),
        strings(&["=VXBwZXItS2V5", "plain.key"])
    );
    assert_eq!(
        r.big_data("l", "missing").unwrap_err().kind(),
        ErrorKind::Io
    );
}

fn delete_checks_children_and_removes_everything(driver: &str) {
    let Some(s) = Scratch::with_driver(driver) else {
        return;
    };
    let store = s.store();
    let mut w = store.write().unwrap();
    let (base, _) = w.create(&named(&["base"]), None).unwrap();
    let (child, _) = w.create(&child_of("base", &["child"]), None).unwrap();
    w.set_big_data("base", "k", &mut &b"v"[..]).unwrap();
    for key in [base.id.as_str(), "base", &base.id[..6]] {
        let e = w.delete(key).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LayerHasChildren);
        assert_eq!(
            e.to_string(),
            format!("used by layer {}: layer has children", child.id)
        );
    }
    assert_eq!(
        w.delete("nope").unwrap_err().kind(),
        ErrorKind::LayerUnknown
    );
    w.delete("child").unwrap();
    assert!(!s.content_dir(&child.id).exists());
    w.delete("base").unwrap();
    assert!(w.is_empty());
    drop(w);
    assert!(!s.content_dir(&base.id).exists());
    let left: Vec<String> = s
        .driver_entries()
        .into_iter()
        .filter(|e| e.contains(&base.id) || e.contains(&child.id))
        .collect();
    assert!(left.is_empty(), "{driver}: left behind {left:?}");
    if driver == "overlay" {
        assert_eq!(
            common::list_dir(&s.home().join("l")),
            Vec::<String>::new(),
            "short links removed"
        );
    }
    assert!(
        !s.layer_dir().join(&base.id).exists(),
        "big data dir removed"
    );
    assert_eq!(s.layers_json(), serde_json::json!([]));
}

fn long_chain_of_layers(driver: &str) {
    let Some(s) = Scratch::with_driver(driver) else {
        return;
    };
    let store = s.store();
    let mut w = store.write().unwrap();
    let mut ids = Vec::new();
    let mut parent: Option<String> = None;
    for i in 0..300 {
        let opts = CreateLayerOptions {
            parent: parent.clone(),
            names: vec![format!("l{i}")],
            ..Default::default()
        };
        let (l, _) = w.create(&opts, None).unwrap();
        parent = Some(l.id.clone());
        ids.push(l.id);
    }
    drop(w);
    let other = s.store();
    let r = other.read().unwrap();
    assert_eq!(r.len(), 300);
    for (i, id) in ids.iter().enumerate() {
        let l = r.get(&format!("l{i}")).unwrap();
        assert_eq!(&l.id, id);
        let want_parent = if i == 0 {
            String::new()
        } else {
            ids[i - 1].clone()
        };
        assert_eq!(l.parent, want_parent);
    }
    drop(r);
    let mut w = other.write().unwrap();
    assert_eq!(
        w.delete("l100").unwrap_err().kind(),
        ErrorKind::LayerHasChildren
    );
    for i in (250..300).rev() {
        w.delete(&format!("l{i}")).unwrap();
    }
    assert_eq!(w.len(), 250);
    // The 250-deep chain mounts.
    let p = w.mount("l249", &MountOpts::default()).unwrap();
    assert_eq!(p, s.mount_path(&ids[249]));
    assert!(p.is_dir(), "{driver}: {} is a dir", p.display());
    assert!(!w.unmount("l249", false).unwrap());
    assert!(
        common::mounts_under(s.dir.path())
            .iter()
            .all(|m| !m.starts_with(&p)),
        "{driver}: still mounted after unmount"
    );
}

fn mount_counts_in_mountpoints_json(driver: &str) {
    let Some(s) = Scratch::with_driver(driver) else {
        return;
    };
    let store = s.store();
    let mut w = store.write().unwrap();
    let (l, _) = w.create(&named(&["l"]), None).unwrap();
    let p1 = w.mount("l", &MountOpts::default()).unwrap();
    assert_eq!(p1, s.mount_path(&l.id));
    let mounted = |p: &std::path::Path| common::mounts_under(s.dir.path()).iter().any(|m| m == p);
    if driver == "overlay" {
        assert!(mounted(&p1), "overlay mount of the layer in mountinfo");
    }
    let p2 = w.mount(&l.id, &MountOpts::default()).unwrap();
    assert_eq!(p1, p2);
    assert_eq!(w.mounted("l").unwrap(), 2);
    drop(w);
    assert_eq!(
        s.mounts_json(),
        serde_json::json!([{"id": l.id, "path": p1.to_str().unwrap(), "count": 2}])
    );
    let raw = std::fs::read(s.run_dir().join("mountpoints.json")).unwrap();
    assert!(raw.starts_with(br#"[{"id":""#), "key order id, path, count");

    // Another instance sees the count, and its changes are seen back.
    let other = s.store();
    assert_eq!(other.read().unwrap().mounted("l").unwrap(), 2);
    assert!(
        other.write().unwrap().unmount("l", false).unwrap(),
        "still mounted"
    );
    assert_eq!(store.read().unwrap().mounted("l").unwrap(), 1);
    let mut w = store.write().unwrap();
    assert!(
        !w.unmount(p1.to_str().unwrap(), false).unwrap(),
        "unmount by mount path"
    );
    assert_eq!(w.mounted("l").unwrap(), 0);
    drop(w);
    assert_eq!(s.mounts_json(), serde_json::json!([]));
    assert!(!mounted(&p1), "{driver}: unmounted at count 0");

    // force drops every count at once; a stale count is incremented, not reset.
    let mut w = store.write().unwrap();
    for _ in 0..3 {
        w.mount("l", &MountOpts::default()).unwrap();
    }
    assert!(!w.unmount("l", true).unwrap());
    assert_eq!(w.mounted("l").unwrap(), 0);
    assert_eq!(
        w.unmount("nope", false).unwrap_err().kind(),
        ErrorKind::LayerUnknown
    );
    w.mount("l", &MountOpts::default()).unwrap();
    // Deleting a mounted layer unmounts it first.
    w.delete("l").unwrap();
    drop(w);
    assert_eq!(s.mounts_json(), serde_json::json!([]));
    assert!(!mounted(&p1), "{driver}: deleted layer still mounted");
}

#[test]
fn incomplete_layers_are_removed_on_load() {
    let s = Scratch::new();
    let (keep, gone) = {
        let store = s.store();
        let mut w = store.write().unwrap();
        let (keep, _) = w.create(&named(&["keep"]), None).unwrap();
        let (gone, _) = w.create(&named(&["gone"]), None).unwrap();
        w.set_big_data("gone", "k", &mut &b"v"[..]).unwrap();
        (keep, gone)
    };
    // Simulate a crash: the record carries the incomplete flag.
    let mut json = s.layers_json();
    json[1]["flags"] = serde_json::json!({"incomplete": true});
    std::fs::write(
        s.layer_dir().join("layers.json"),
        serde_json::to_vec(&json).unwrap(),
    )
    .unwrap();
    assert!(s.vfs_dir(&gone.id).exists());

    // A read-only view keeps it.
    let ro = s.read_only_store();
    assert_eq!(ro.read().unwrap().len(), 2);
    drop(ro);

    let store = s.store();
    let r = store.read().unwrap();
    assert_eq!(
        r.layers().iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        vec![keep.id.clone()]
    );
    drop(r);
    assert!(!s.vfs_dir(&gone.id).exists(), "driver dir removed");
    assert!(!s.layer_dir().join(&gone.id).exists(), "big data removed");
    assert_eq!(s.layers_json().as_array().unwrap().len(), 1, "repair saved");
}

#[test]
fn reload_only_when_changed() {
    let s = Scratch::new();
    let a = s.store();
    let b = s.store();
    let (l, _) = a.write().unwrap().create(&named(&["one"]), None).unwrap();
    assert_eq!(b.read().unwrap().get("one").unwrap().id, l.id);
    let loads = b.load_count();
    for _ in 0..5 {
        assert_eq!(b.read().unwrap().len(), 1);
        drop(b.write().unwrap());
    }
    assert_eq!(b.load_count(), loads, "no reload while nothing changed");
    let a_loads = a.load_count();
    assert_eq!(a.read().unwrap().len(), 1);
    assert_eq!(
        a.load_count(),
        a_loads,
        "a writer does not reload its own writes"
    );

    b.write()
        .unwrap()
        .add_names("one", &strings(&["two"]))
        .unwrap();
    assert_eq!(
        a.read().unwrap().get("two").unwrap().id,
        l.id,
        "token change seen"
    );
    assert_eq!(a.load_count(), a_loads + 1);

    // A hand edit of layers.json (no token change) is noticed through its mtime.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut json = s.layers_json();
    json[0]["metadata"] = serde_json::json!("edited");
    std::fs::write(
        s.layer_dir().join("layers.json"),
        serde_json::to_vec(&json).unwrap(),
    )
    .unwrap();
    assert_eq!(a.read().unwrap().get("one").unwrap().metadata, "edited");
}

#[test]
fn read_only_store_refuses_writes() {
    let s = Scratch::new();
    s.store()
        .write()
        .unwrap()
        .create(&named(&["x"]), None)
        .unwrap();
    let before = std::fs::read(s.layer_dir().join("layers.json")).unwrap();
    let ro = s.read_only_store();
    assert!(ro.is_read_only());
    let r = ro.read().unwrap();
    assert_eq!(r.len(), 1);
    assert!(r.get("x").unwrap().read_only);
    drop(r);
    let e = ro.write().err().expect("write refused");
    assert_eq!(e.kind(), ErrorKind::StoreIsReadOnly);
    assert!(
        e.to_string()
            .ends_with("called a write method on a read-only store"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(s.layer_dir().join("layers.json")).unwrap(),
        before
    );
}

#[test]
fn duplicate_names_are_repaired_later_record_wins() {
    let s = Scratch::new();
    let store = s.store();
    let mut w = store.write().unwrap();
    w.create(&with_id("first", &["n", "f"]), None).unwrap();
    w.create(&with_id("second", &["m"]), None).unwrap();
    drop(w);
    drop(store); // one process cannot hold a lock file both read-only and read-write
    let mut json = s.layers_json();
    json[1]["names"] = serde_json::json!(["m", "n"]);
    std::fs::write(
        s.layer_dir().join("layers.json"),
        serde_json::to_vec(&json).unwrap(),
    )
    .unwrap();

    let e = s
        .read_only_store()
        .read()
        .err()
        .expect("RO store with duplicate names fails");
    assert_eq!(
        e.to_string(),
        "read-only layer store assigns the same name to multiple layers"
    );

    let fresh = s.store();
    let r = fresh.read().unwrap();
    assert_eq!(r.get("n").unwrap().id, "second");
    assert_eq!(r.get("first").unwrap().names, strings(&["f"]));
    drop(r);
    assert_eq!(
        s.layers_json()[0]["names"],
        serde_json::json!(["f"]),
        "fix saved"
    );
}

#[test]
fn damaged_layers_json_is_a_clear_error() {
    let s = Scratch::new();
    s.store()
        .write()
        .unwrap()
        .create(&named(&["x"]), None)
        .unwrap();
    let path = s.layer_dir().join("layers.json");
    let mut data = std::fs::read(&path).unwrap();
    data.truncate(data.len() - 5);
    std::fs::write(&path, &data).unwrap();
    let store = s.store();
    let e = store.read().err().expect("damaged file");
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    let msg = e.to_string();
    assert!(
        msg.contains(path.to_str().unwrap()) && msg.contains("line 1 column"),
        "{msg}"
    );
    assert!(store.write().is_err());
    // Nothing was dropped or rewritten.
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn volatile_transient_and_image_store_locations() {
    let s = Scratch::new();
    let is_dir = s.dir.path().join("istore").join("vfs-layers");
    let mut o = s.options();
    o.image_store_dir = Some(is_dir.clone());
    o.transient = true;
    let store = LayerStore::open(o.clone()).unwrap();
    let mut w = store.write().unwrap();
    let (ro_layer, _) = w.create(&named(&["image-layer"]), None).unwrap();
    let rw = CreateLayerOptions {
        writeable: true,
        parent: Some("image-layer".into()),
        ..Default::default()
    };
    let (rw_layer, _) = w.create(&rw, None).unwrap();
    let vol = CreateLayerOptions {
        writeable: true,
        volatile: true,
        ..Default::default()
    };
    let (vol_layer, _) = w.create(&vol, None).unwrap();
    drop(w);
    let ids = |p: std::path::PathBuf| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(is_dir.join("layers.json")), vec![ro_layer.id.clone()]);
    assert_eq!(
        ids(s.layer_dir().join("layers.json")),
        vec![rw_layer.id.clone()]
    );
    assert_eq!(
        ids(s.run_dir().join("volatile-layers.json")),
        vec![vol_layer.id.clone()]
    );
    assert_eq!(
        std::fs::metadata(is_dir.join("layers.lock")).unwrap().len(),
        64
    );
    let other = LayerStore::open(o).unwrap();
    let r = other.read().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r.get(&rw_layer.id).unwrap().parent, ro_layer.id);
}

#[test]
fn staging_dirs_left_by_go_are_cleaned() {
    let s = Scratch::new();
    let tmp = s.layer_dir().join("tmp");
    std::fs::create_dir_all(tmp.join("temp-dir-123").join("0-x")).unwrap();
    std::fs::write(tmp.join("temp-dir-123").join("0-x").join("f"), b"x").unwrap();
    std::fs::write(tmp.join("lock-123"), b"").unwrap();
    let store = s.store();
    drop(store.write().unwrap());
    assert!(list_dir(&tmp).is_empty(), "{:?}", list_dir(&tmp));
}

#[test]
fn wipe_and_garbage_collect() {
    let s = Scratch::new();
    let store = s.store();
    let mut w = store.write().unwrap();
    let (a, _) = w.create(&named(&["a"]), None).unwrap();
    let (b, _) = w.create(&child_of("a", &["b"]), None).unwrap();
    w.set_big_data("b", "k", &mut &b"v"[..]).unwrap();
    // Leaked driver layers and files without a record.
    s.driver
        .create("leaked", None, &Default::default())
        .unwrap();
    std::fs::write(s.layer_dir().join("leaked.tar-split.gz"), b"x").unwrap();
    std::fs::create_dir(s.layer_dir().join("leaked")).unwrap();
    w.garbage_collect().unwrap();
    assert!(!s.vfs_dir("leaked").exists());
    assert!(!s.layer_dir().join("leaked.tar-split.gz").exists());
    assert!(!s.layer_dir().join("leaked").exists());
    assert!(
        s.vfs_dir(&a.id).exists() && s.vfs_dir(&b.id).exists(),
        "recorded layers kept"
    );
    assert_eq!(w.len(), 2);

    // delete_unchecked does not care about children (Go's Delete); wipe removes everything.
    s.driver
        .create("leaked2", None, &Default::default())
        .unwrap();
    let (c, _) = w.create(&named(&["c"]), None).unwrap();
    w.delete_unchecked("c").unwrap();
    assert!(!s.vfs_dir(&c.id).exists());
    w.mount("b", &MountOpts::default()).unwrap();
    w.wipe().unwrap();
    assert!(w.is_empty());
    drop(w);
    assert!(list_dir(&s.graph().join("vfs").join("dir")).is_empty());
    // The staging roots of deferred deletions stay, empty (as Go 1.59+ leaves them).
    assert_eq!(
        list_dir(&s.layer_dir()),
        vec!["layers.json", "layers.lock", "tmp"]
    );
    assert!(list_dir(&s.layer_dir().join("tmp")).is_empty());
    assert!(list_dir(&s.graph().join("vfs").join("tempdirs")).is_empty());
    assert_eq!(s.layers_json(), serde_json::json!([]));
    assert_eq!(s.mounts_json(), serde_json::json!([]));
}

/// Go 1.59+'s deferred deletion: under the lock a deleted layer's data leaves its place at
/// once for staging directories `temp-dir-<x>` (the tar-split file and big data in
/// `<drv>-layers/tmp`, the driver's directory in `<drv>/tempdirs`), each with its held
/// `lock-<x>`; they are removed when the guard is dropped, after the store's locks.
#[test]
fn deletion_stages_data_until_the_guard_is_dropped() {
    let s = Scratch::new();
    let store = s.store();
    let mut w = store.write().unwrap();
    let (a, _) = w
        .create(&named(&["a"]), Some(reader(sample_tar("t"))))
        .unwrap();
    w.set_big_data("a", "k", &mut &b"v"[..]).unwrap();
    let tar_split = s.layer_dir().join(format!("{}.tar-split.gz", a.id));
    assert!(tar_split.exists() && s.vfs_dir(&a.id).exists());
    w.delete_unchecked("a").unwrap();
    assert!(!tar_split.exists() && !s.layer_dir().join(&a.id).exists());
    assert!(!s.vfs_dir(&a.id).exists());
    let staged = |root: &std::path::Path| -> Vec<String> {
        let entries = list_dir(root);
        assert_eq!(entries.len(), 2, "{entries:?}");
        let x = entries[0].strip_prefix("lock-").expect("lock first");
        assert_eq!(entries[1], format!("temp-dir-{x}"));
        list_dir(&root.join(&entries[1]))
    };
    let tmp = s.layer_dir().join("tmp");
    assert_eq!(
        staged(&tmp),
        vec![format!("0-{}.tar-split.gz", a.id), format!("1-{}", a.id)]
    );
    let tempdirs = s.graph().join("vfs").join("tempdirs");
    assert_eq!(staged(&tempdirs), vec![format!("0-{}", a.id)]);
    // Another loader in this process cannot tell a held lock from an abandoned one (fcntl
    // locks are per process); the guard is the only one here.
    drop(w);
    assert!(list_dir(&tmp).is_empty(), "{:?}", list_dir(&tmp));
    assert!(list_dir(&tempdirs).is_empty(), "{:?}", list_dir(&tempdirs));
    assert!(store.read().unwrap().is_empty());
}

#[test]
fn volatile_layers_without_transient_mode() {
    let s = Scratch::new();
    let store = s.store();
    let mut w = store.write().unwrap();
    let (stable, _) = w.create(&named(&["stable"]), None).unwrap();
    let opts = CreateLayerOptions {
        volatile: true,
        ..child_of("stable", &["vol"])
    };
    let (vol, _) = w.create(&opts, None).unwrap();
    w.set_metadata("vol", "m").unwrap();
    drop(w);
    let vol_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.layer_dir().join("volatile-layers.json")).unwrap())
            .unwrap();
    assert_eq!(vol_json.as_array().unwrap().len(), 1);
    assert_eq!(vol_json[0]["id"], vol.id.as_str());
    assert_eq!(vol_json[0]["metadata"], "m");
    assert_eq!(s.layers_json().as_array().unwrap().len(), 1);
    assert_eq!(s.layers_json()[0]["id"], stable.id.as_str());
    let other = s.store();
    assert_eq!(other.read().unwrap().get("vol").unwrap().parent, stable.id);
    // A record present in both files: the stable one wins, the duplicate is dropped on save.
    std::fs::write(
        s.layer_dir().join("volatile-layers.json"),
        serde_json::to_vec(&serde_json::json!([vol_json[0], s.layers_json()[0]])).unwrap(),
    )
    .unwrap();
    let fresh = s.store();
    assert_eq!(fresh.read().unwrap().len(), 2);
    fresh.write().unwrap().set_metadata("vol", "again").unwrap();
    let vol_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.layer_dir().join("volatile-layers.json")).unwrap())
            .unwrap();
    assert_eq!(vol_json.as_array().unwrap().len(), 1);
}
