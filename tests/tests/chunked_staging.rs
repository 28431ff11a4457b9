//! `applydiff-using-staging-dir` and the zstd:chunked differ: refused without partial pulls
//! (as Go 1.60 refuses it), and on overlay with `enable_partial_images` a layer recorded as
//! Go records a zstd:chunked layer, whose diff is the directory's tar and which Go reads.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use containers_storage::{CreateLayerOptions, DiffOptions, Store};
use storage_config::StoreOptions;
use storage_tests::fs::DriverStore;
use storage_tests::{go_cs, ok, ours, require};
use storage_testsupport::{per_driver, sha256};

per_driver!(staging_dir_apply_needs_partial_pulls: vfs, overlay, btrfs);

fn open(ds: &DriverStore, partial: bool) -> Store {
    Store::open(&StoreOptions {
        graph_root: ds.graph.clone(),
        run_root: ds.run.clone(),
        driver: ds.driver.clone(),
        pull_options: partial
            .then(|| BTreeMap::from([("enable_partial_images".to_string(), "TRUE".to_string())])),
        ..StoreOptions::default()
    })
    .expect("open store")
}

fn make_dir(root: &Path) {
    std::fs::create_dir_all(root.join("etc/sub")).unwrap();
    std::fs::write(root.join("etc/conf"), b"conf\n").unwrap();
    std::fs::write(root.join("etc/sub/data"), vec![7u8; 100_000]).unwrap();
    std::os::unix::fs::symlink("conf", root.join("etc/link")).unwrap();
}

fn staging_dir_apply_needs_partial_pulls(driver: &str) {
    let Some(ds) = DriverStore::new(driver) else {
        return;
    };
    let src = ds.dir.path().join("src");
    make_dir(&src);
    // With --graph (the options of storage.conf are skipped): partial pulls are off.
    let out = ds.ours(&[
        "applydiff-using-staging-dir",
        &"c".repeat(64),
        src.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("partial images are disabled"), "{err}");
    // Enabled, but the driver has no differ.
    let store = open(&ds, true);
    let r = store.apply_diff_using_staging_dir(&"c".repeat(64), &src);
    if driver == "overlay" {
        let layer = r.expect("overlay applies through the chunked differ");
        assert_eq!(layer.id, "c".repeat(64));
    } else {
        let err = r.expect_err("no partial pulls on this driver").to_string();
        assert_eq!(
            err,
            format!("graph driver {driver} does not support partial pull")
        );
        assert!(store.layers().unwrap().is_empty());
    }
    let staging = ds.home().join("staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("dir").exists())
                .count()
        })
        .into_iter()
        .collect();
    assert!(left.iter().all(|n| *n == 0), "no staged data left");
}

#[test]
fn chunked_layer_on_overlay_is_recorded_like_go_and_replaces_content() {
    let Some(ds) = DriverStore::new("overlay") else {
        return;
    };
    let store = open(&ds, true);
    // An existing layer with other content: its content is replaced, not merged.
    let old = storage_tests::tars::TarBuilder::new()
        .file("old-file", 0o644, b"old")
        .finish();
    let (base, _) = store
        .create_layer(
            &CreateLayerOptions {
                names: vec!["target".into()],
                ..CreateLayerOptions::default()
            },
            Some(Box::new(std::io::Cursor::new(old))),
        )
        .expect("layer");
    let src = ds.dir.path().join("src");
    make_dir(&src);
    let layer = store
        .apply_diff_using_staging_dir("target", &src)
        .expect("apply a directory");
    assert_eq!(layer.id, base.id);
    let diff_dir = ds.home().join(&base.id).join("diff");
    assert!(!diff_dir.join("old-file").exists(), "replaced, not merged");
    assert_eq!(std::fs::read(diff_dir.join("etc/conf")).unwrap(), b"conf\n");
    assert!(
        layer.toc_digest.starts_with("sha256:"),
        "{}",
        layer.toc_digest
    );
    assert!(
        layer.compressed_diff_digest.is_empty(),
        "no compressed digest"
    );
    assert!(layer.metadata.is_empty());
    let mut tar = Vec::new();
    store
        .diff(None, &layer.id, &DiffOptions::default(), &mut tar)
        .expect("diff");
    assert_eq!(layer.diff_digest, sha256(&tar), "diff-digest is the tar's");
    assert_eq!(layer.diff_size, tar.len() as i64);
    let big: Vec<String> = layer.big_data_names.clone();
    assert!(
        big.contains(&"zstd-chunked-manifest".to_string()),
        "{big:?}"
    );
    assert!(
        big.contains(&"zstd-chunked-layer-data".to_string()),
        "{big:?}"
    );
    drop(store);
    assert!(
        std::fs::read_dir(ds.home().join("staging"))
            .map(|rd| rd.flatten().all(|e| !e.path().join("dir").exists()))
            .unwrap_or(true)
    );

    // Go sees a complete layer and diffs it to the same tar.
    if go_cs().is_some() {
        let listed = ok(&ds.go(&["layers"]));
        assert!(listed.contains(&layer.id), "{listed}");
        let out = ds.go(&["diff", "-u", &layer.id]);
        ok(&out);
        assert_eq!(out.stdout, tar, "Go diffs the chunked layer byte-exactly");
    } else {
        require(false, "Go containers-storage (/usr/bin/containers-storage)");
    }
}

/// The CLI reads `enable_partial_images` from storage.conf (no store flags given) and
/// applies a directory to a new ID.
#[test]
fn cli_applies_a_directory_with_partial_pulls_configured() {
    let Some(ds) = DriverStore::new("overlay") else {
        return;
    };
    let conf = ds.dir.path().join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n\n[storage.options.pull_options]\nenable_partial_images = \"true\"\n",
            ds.graph.display(),
            ds.run.display()
        ),
    )
    .unwrap();
    let src = ds.dir.path().join("src");
    make_dir(&src);
    let id = "d".repeat(64);
    let run = |args: &[&str]| {
        Command::new(ours())
            .args(args)
            .env_remove("STORAGE_OPTS")
            .env_remove("STORAGE_DRIVER")
            .env("CONTAINERS_STORAGE_CONF", &conf)
            .stdin(Stdio::null())
            .output()
            .expect("run ours")
    };
    let out = run(&["applydiff-using-staging-dir", &id, src.to_str().unwrap()]);
    assert_eq!(ok(&out), "", "silent on success");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&run(&["layer", "--json", &id]))).unwrap();
    // One layer asked for: an array of one record.
    let json = json.get(0).cloned().unwrap_or(json);
    assert_eq!(json["id"], id.as_str(), "{json}");
    assert!(
        json["toc-digest"]
            .as_str()
            .unwrap_or("")
            .starts_with("sha256:"),
        "{json}"
    );
    assert!(json.get("compressed-diff-digest").is_none(), "{json}");
    assert!(json.get("parent").is_none(), "{json}");
    let out = run(&[
        "applydiff-using-staging-dir",
        &id,
        "/nonexistent/dir",
        "extra",
    ]);
    assert!(!out.status.success());
}
