//! Sharing one store with Debian's Go `containers-storage` 1.43 (/usr/bin/containers-storage):
//! Go lists and diffs our layers, we load, diff and modify Go's.
//! Without the Go binary these tests fail when CI=true and are skipped (loudly) otherwise.

mod common;

use storage_testsupport::per_driver;

use std::path::Path;
use std::process::Command;

use common::{Scratch, gzip, in_ci, reader, sample_tar, sha256};
use sha2::Digest as _;
use storage_archive::Compression;
use storage_layers::{CreateLayerOptions, DiffOptions};

const GO: &str = "/usr/bin/containers-storage";

fn have_go() -> bool {
    if Path::new(GO).exists() {
        return true;
    }
    assert!(
        !in_ci(),
        "Debian's Go containers-storage ({GO}) is required in CI"
    );
    eprintln!("SKIPPED: {GO} not installed");
    false
}

/// Runs the Go CLI on the scratch store; returns stdout, failing on a non-zero exit.
fn go(s: &Scratch, args: &[&str]) -> Vec<u8> {
    storage_testsupport::stdout_of(
        Command::new(GO)
            .arg("--storage-driver")
            .arg(s.driver_name())
            .arg("--graph")
            .arg(s.graph())
            .arg("--run")
            .arg(s.run())
            .args(args)
            .env_remove("STORAGE_OPTS")
            .env_remove("STORAGE_DRIVER"),
    )
}

fn go_layers(s: &Scratch) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_slice(&go(s, &["layers", "--json"])).expect("Go layers --json");
    v.as_array().cloned().unwrap_or_default()
}

fn hex_sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

fn go_lists_and_diffs_our_layers(driver: &str) {
    if !have_go() {
        return;
    }
    let Some(s) = Scratch::with_driver(driver) else {
        return;
    };
    let base_tar = sample_tar("ours-base");
    let child_tar = sample_tar("ours-child");
    let (base, child, empty) = {
        let store = s.store();
        let mut w = store.write().unwrap();
        let opts = CreateLayerOptions {
            names: vec!["our-base".into()],
            ..Default::default()
        };
        let (base, _) = w.create(&opts, Some(reader(gzip(&base_tar)))).unwrap();
        let opts = CreateLayerOptions {
            parent: Some("our-base".into()),
            ..Default::default()
        };
        let (child, _) = w.create(&opts, Some(reader(child_tar.clone()))).unwrap();
        let opts = CreateLayerOptions {
            parent: Some(child.id.clone()),
            names: vec!["ctr".into()],
            writeable: true,
            ..Default::default()
        };
        let (empty, _) = w.create(&opts, None).unwrap();
        (base, child, empty)
    };
    let listed = go_layers(&s);
    assert_eq!(listed.len(), 3);
    for ours in [&base, &child, &empty] {
        let theirs = listed
            .iter()
            .find(|l| l["id"] == ours.id.as_str())
            .expect("Go lists our layer");
        let mine: serde_json::Value =
            serde_json::from_slice(&storage_types::to_go_json(ours)).unwrap();
        for key in [
            "names",
            "parent",
            "created",
            "compressed-diff-digest",
            "compressed-size",
            "diff-digest",
            "diff-size",
            "compression",
            "uidset",
            "gidset",
        ] {
            assert_eq!(theirs.get(key), mine.get(key), "{key} of {}", ours.id);
        }
    }
    // Go reproduces the applied tars from our tar-split files.
    assert_eq!(
        hex_sha(&go(&s, &["diff", "-u", &base.id])),
        sha256(&base_tar)
    );
    assert_eq!(
        hex_sha(&go(&s, &["diff", "-u", &child.id])),
        sha256(&child_tar)
    );
    // Go can delete what we made, and we see it.
    go(&s, &["delete-layer", "ctr"]);
    let store = s.store();
    assert!(store.read().unwrap().lookup(&empty.id).is_none());
}

fn we_load_diff_and_modify_what_go_wrote(driver: &str) {
    if !have_go() {
        return;
    }
    let Some(s) = Scratch::with_driver(driver) else {
        return;
    };
    let tar = sample_tar("go");
    let file = s.dir.path().join("layer.tar.gz");
    std::fs::write(&file, gzip(&tar)).unwrap();
    let go_base = String::from_utf8(go(
        &s,
        &[
            "import-layer",
            "-n",
            "go-base",
            "-f",
            file.to_str().unwrap(),
        ],
    ))
    .unwrap();
    let go_base = go_base.lines().next().unwrap().trim().to_string();
    let go_child =
        String::from_utf8(go(&s, &["create-layer", "-n", "go-child", "go-base"])).unwrap();
    let go_child = go_child.lines().next().unwrap().trim().to_string();
    // (1.43 hands a layer *name* to the driver as is, so mount by ID.)
    go(&s, &["mount", &go_child]);
    go(
        &s,
        &[
            "set-layer-data",
            "-f",
            file.to_str().unwrap(),
            "go-base",
            "Some-Key",
        ],
    );

    let store = s.store();
    let r = store.read().unwrap();
    assert_eq!(r.len(), 2);
    let l = r.get("go-base").unwrap();
    assert_eq!(l.id, go_base);
    assert_eq!(l.diff_digest, sha256(&tar));
    assert_eq!(l.compression, 2);
    assert_eq!(r.get("go-child").unwrap().parent, go_base);
    assert_eq!(r.mounted("go-child").unwrap(), 1, "Go's mount count");
    assert_eq!(
        r.big_data_names("go-base").unwrap(),
        vec!["Some-Key".to_string()]
    );
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut r.big_data("go-base", "Some-Key").unwrap(), &mut data).unwrap();
    assert_eq!(data, std::fs::read(&file).unwrap());
    // Our reassembly of Go's tar-split gives the original bytes.
    let mut out = Vec::new();
    r.diff(
        None,
        "go-base",
        &DiffOptions {
            compression: Some(Compression::None),
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(out, tar);
    drop(r);

    // Our changes are visible to Go: names, mounts, deletion.
    let mut w = store.write().unwrap();
    w.add_names("go-base", &["renamed".to_string()]).unwrap();
    assert!(!w.unmount("go-child", false).unwrap());
    w.delete("go-child").unwrap();
    drop(w);
    let listed = go_layers(&s);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0]["names"],
        serde_json::json!(["renamed", "go-base"])
    );
    assert_eq!(
        std::fs::read(s.run_dir().join("mountpoints.json")).unwrap(),
        b"[]"
    );
    // Go still reproduces its layer after our rewrite of layers.json.
    assert_eq!(hex_sha(&go(&s, &["diff", "-u", "renamed"])), sha256(&tar));
}

// Driver-parametrised (`<test>::vfs`, `<test>::overlay`, `<test>::btrfs`).
per_driver!(go_lists_and_diffs_our_layers);
per_driver!(we_load_diff_and_modify_what_go_wrote);

#[test]
fn our_rewrite_of_go_records_is_byte_identical() {
    if !have_go() {
        return;
    }
    let s = Scratch::new();
    let tar = sample_tar("bytes");
    let file = s.dir.path().join("layer.tar");
    std::fs::write(&file, &tar).unwrap();
    go(
        &s,
        &[
            "import-layer",
            "-n",
            "a<b>&c é",
            "-f",
            file.to_str().unwrap(),
        ],
    );
    go(
        &s,
        &[
            "create-layer",
            "--uidmap",
            "0:100000:65536",
            "--gidmap",
            "0:100000:65536",
            "-n",
            "mapped",
        ],
    );
    go(&s, &["create-layer", "-n", "child", "mapped"]);
    go(&s, &["set-metadata", "-m", "line1\nline2", "child"]);
    let path = s.layer_dir().join("layers.json");
    let go_bytes = std::fs::read(&path).unwrap();
    let store = s.store();
    let mut w = store.write().unwrap();
    // A no-op rename makes us rewrite layers.json (Go saves even when nothing changed).
    w.set_names("child", &["child".to_string()]).unwrap();
    drop(w);
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(&path).unwrap()),
        String::from_utf8_lossy(&go_bytes)
    );
}

#[test]
fn long_lived_instance_sees_go_changes_and_go_finishes_our_crashes() {
    if !have_go() {
        return;
    }
    let s = Scratch::new();
    let store = s.store();
    let (a, crashed) = {
        let mut w = store.write().unwrap();
        let (a, _) = w
            .create(
                &CreateLayerOptions {
                    names: vec!["a".into()],
                    ..Default::default()
                },
                None,
            )
            .unwrap();
        let (c, _) = w
            .create(
                &CreateLayerOptions {
                    names: vec!["c".into()],
                    ..Default::default()
                },
                None,
            )
            .unwrap();
        w.mount("a", &Default::default()).unwrap();
        w.mount("a", &Default::default()).unwrap();
        (a, c)
    };
    assert_eq!(store.read().unwrap().len(), 2);
    let loads = store.load_count();

    // Go changes names and mount counts: the same instance notices through the tokens.
    go(&s, &["add-names", "-n", "from-go", "a"]);
    assert_eq!(store.read().unwrap().get("from-go").unwrap().id, a.id);
    assert_eq!(store.load_count(), loads + 1);
    go(&s, &["unmount", &a.id]);
    assert_eq!(store.read().unwrap().mounted("a").unwrap(), 1);
    go(&s, &["unmount", &a.id]);
    assert_eq!(store.read().unwrap().mounted("a").unwrap(), 0);
    assert_eq!(
        std::fs::read(s.run_dir().join("mountpoints.json")).unwrap(),
        b"[]"
    );

    // A record left flagged incomplete by a crash of ours is deleted by Go.
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.layer_dir().join("layers.json")).unwrap()).unwrap();
    json[1]["flags"] = serde_json::json!({"incomplete": true});
    std::fs::write(
        s.layer_dir().join("layers.json"),
        serde_json::to_vec(&json).unwrap(),
    )
    .unwrap();
    let listed = go_layers(&s);
    assert_eq!(listed.len(), 1);
    assert!(
        !s.vfs_dir(&crashed.id).exists(),
        "Go removed the driver data"
    );
    assert!(store.read().unwrap().lookup(&crashed.id).is_none());
}
