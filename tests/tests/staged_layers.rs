//! Staged layers through the library (`Store::prepare_staged_layer` / `apply_staged_layer` /
//! `cleanup_staged_layer`, and `create_layer`, which stages a diff outside the store lock):
//! records and diffs like ordinary layers, readers (ours and Go 1.43) not blocked while a
//! layer's data is extracted, no half layer visible, a Go process loading the store for
//! writing meanwhile deletes nothing of ours, abandoned staging directories cleaned and
//! live ones left alone.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use containers_storage::{
    CreateLayerOptions, DiffOptions, ImportLayersOptions, LayerImport, Store,
};
use storage_config::StoreOptions;
use storage_tests::fs::DriverStore;
use storage_tests::tars::TarBuilder;
use storage_tests::{go_cs, ok, require};
use storage_testsupport::{gzip, per_driver, sha256};

per_driver!(staged_layer_records_and_diffs_like_an_ordinary_one);
per_driver!(readers_and_go_are_not_blocked_while_a_layer_is_extracted);
per_driver!(abandoned_staging_is_removed_and_live_staging_kept);
per_driver!(import_layers_commits_a_chain_in_order);
per_driver!(import_layers_error_commits_none_of_the_later_layers);
per_driver!(killed_import_leaves_no_layer_and_no_orphan_staging);

fn open(ds: &DriverStore) -> Store {
    Store::open(&StoreOptions {
        graph_root: ds.graph.clone(),
        run_root: ds.run.clone(),
        driver: ds.driver.clone(),
        ..StoreOptions::default()
    })
    .expect("open store")
}

fn layer_tar(seed: u8) -> Vec<u8> {
    let big: Vec<u8> = (0..200_000u32).map(|i| (i as u8) ^ seed).collect();
    TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/conf", 0o644, format!("seed {seed}\n").as_bytes())
        .file_owned("etc/owned", 0o600, 1000, 1001, b"mine")
        .symlink("etc/link", "conf")
        .dir("data/", 0o750)
        .file("data/big", 0o644, &big)
        .finish()
}

fn diff_of(store: &Store, id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .diff(None, id, &DiffOptions::default(), &mut out)
        .expect("diff");
    out
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

/// Where the driver stages ordinary applies: overlay under `tempdirs/` (podman 4.x removes
/// `<home>/staging` whole when it shuts down), the others in the home.
fn stage_root(ds: &DriverStore) -> PathBuf {
    if ds.driver == "overlay" {
        ds.home().join("tempdirs")
    } else {
        ds.home()
    }
}

/// The staging directories (`<root>/staging/*`) the driver's ordinary applies use.
fn staging_dirs(ds: &DriverStore) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(stage_root(ds).join("staging"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn layers_json(ds: &DriverStore) -> String {
    std::fs::read_to_string(
        ds.graph
            .join(format!("{}-layers", ds.driver))
            .join("layers.json"),
    )
    .unwrap_or_default()
}

fn staged_layer_records_and_diffs_like_an_ordinary_one(driver: &str) {
    let Some(ds) = DriverStore::new(driver) else {
        return;
    };
    let store = open(&ds);
    let tar = layer_tar(1);
    let gz = gzip(&tar);

    // Prepared: data in a staging directory, no record at all.
    let staged = store
        .prepare_staged_layer(
            &CreateLayerOptions::default(),
            Box::new(Cursor::new(gz.clone())),
        )
        .expect("prepare");
    let dir = staged.staging_dir().expect("a staging dir").to_path_buf();
    assert!(
        dir.starts_with(stage_root(&ds).join("staging")),
        "{}",
        dir.display()
    );
    assert!(dir.join("dir/etc/conf").exists(), "the data is staged");
    assert_eq!(
        staged.uncompressed_digest().map(|d| d.to_string()),
        Some(sha256(&tar))
    );
    assert!(store.layers().expect("layers").is_empty());
    assert!(!layers_json(&ds).contains("diff-digest"));

    let opts = CreateLayerOptions {
        id: Some("a".repeat(64)),
        names: vec!["base".into()],
        ..CreateLayerOptions::default()
    };
    let base = store
        .apply_staged_layer(staged, &opts)
        .expect("apply staged");
    assert!(!dir.exists(), "the staging dir is gone after the commit");
    assert!(staging_dirs(&ds).is_empty(), "{:?}", staging_dirs(&ds));
    assert_eq!(base.id, "a".repeat(64));
    assert_eq!(base.names, vec!["base".to_string()]);
    assert!(!base.is_incomplete());
    assert_eq!(base.diff_digest, sha256(&tar));
    assert_eq!(base.diff_size, tar.len() as i64);
    assert_eq!(base.compressed_diff_digest, sha256(&gz));
    assert_eq!(base.compressed_size, gz.len() as i64);
    assert!(base.uidset.contains(&1000) && base.uidset.contains(&0));
    assert!(base.gidset.contains(&1001));
    assert_eq!(
        gunzip(&diff_of(&store, &base.id)),
        tar,
        "diff back byte-exactly"
    );

    // An ordinary create with a diff (staged inside create_layer) on top of it, uncompressed.
    let tar2 = TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/conf", 0o644, b"changed\n")
        .file("new", 0o644, b"new file")
        .finish();
    let (child, size) = store
        .create_layer(
            &CreateLayerOptions {
                parent: Some(base.id.clone()),
                ..CreateLayerOptions::default()
            },
            Some(Box::new(Cursor::new(tar2.clone()))),
        )
        .expect("create with diff");
    assert!(size >= 0);
    assert_eq!(child.parent, base.id);
    assert_eq!(child.diff_digest, sha256(&tar2));
    assert_eq!(child.compressed_diff_digest, sha256(&tar2));
    assert_eq!(diff_of(&store, &child.id), tar2);
    assert!(staging_dirs(&ds).is_empty(), "{:?}", staging_dirs(&ds));

    // A staged layer thrown away leaves nothing.
    let staged = store
        .prepare_staged_layer(
            &CreateLayerOptions {
                parent: Some(child.id.clone()),
                ..CreateLayerOptions::default()
            },
            Box::new(Cursor::new(layer_tar(3))),
        )
        .expect("prepare on a parent");
    let dir = staged.staging_dir().expect("a staging dir").to_path_buf();
    assert!(dir.exists());
    store.cleanup_staged_layer(staged).expect("cleanup");
    assert!(!dir.exists());
    assert_eq!(store.layers().expect("layers").len(), 2);

    // A bad diff leaves no layer and no staging data.
    let mut bad = gzip(&layer_tar(4));
    bad.truncate(bad.len() / 2);
    let err = store
        .create_layer(
            &CreateLayerOptions::default(),
            Some(Box::new(Cursor::new(bad))),
        )
        .expect_err("a truncated gzip fails");
    assert!(!err.to_string().is_empty());
    assert_eq!(store.layers().expect("layers").len(), 2);
    assert!(staging_dirs(&ds).is_empty(), "{:?}", staging_dirs(&ds));
    drop(store);

    // Go sees two complete layers of its own kind.
    if go_cs().is_some() {
        let listed = ok(&ds.go(&["layers"]));
        assert!(
            listed.contains(&base.id) && listed.contains(&child.id),
            "{listed}"
        );
        let out = ds.go(&["diff", "-u", &child.id]);
        ok(&out);
        assert_eq!(out.stdout, tar2, "Go diffs the staged layer byte-exactly");
    } else {
        require(false, "Go containers-storage (/usr/bin/containers-storage)");
    }
}

/// A reader that hands out `before` bytes, says so on `reached`, then waits for `go` (at
/// most ten minutes: a guard against a hang, not a measurement) before the rest.
struct Gate {
    inner: Cursor<Vec<u8>>,
    before: u64,
    reached: Option<mpsc::Sender<()>>,
    go: mpsc::Receiver<()>,
    timed_out: Arc<Mutex<bool>>,
}

impl Read for Gate {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let pos = self.inner.position();
        if pos >= self.before {
            if let Some(tx) = self.reached.take() {
                let _ = tx.send(());
                if self
                    .go
                    .recv_timeout(std::time::Duration::from_secs(600))
                    .is_err()
                {
                    *self.timed_out.lock().unwrap() = true;
                }
            }
            return self.inner.read(buf);
        }
        let n = buf.len().min((self.before - pos) as usize);
        self.inner.read(&mut buf[..n])
    }
}

fn readers_and_go_are_not_blocked_while_a_layer_is_extracted(driver: &str) {
    let Some(ds) = DriverStore::new(driver) else {
        return;
    };
    let Some(_) = go_cs() else {
        require(false, "Go containers-storage (/usr/bin/containers-storage)");
        return;
    };
    let store = open(&ds);
    let (base, _) = store
        .create_layer(
            &CreateLayerOptions {
                names: vec!["base".into()],
                ..CreateLayerOptions::default()
            },
            Some(Box::new(Cursor::new(layer_tar(1)))),
        )
        .expect("base layer");
    let tar = layer_tar(2);
    let (reached_tx, reached) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let timed_out = Arc::new(Mutex::new(false));
    let gate = Gate {
        inner: Cursor::new(tar.clone()),
        before: tar.len() as u64 / 2,
        reached: Some(reached_tx),
        go: go_rx,
        timed_out: timed_out.clone(),
    };
    let new_id = "b".repeat(64);
    let opts = CreateLayerOptions {
        id: Some(new_id.clone()),
        parent: Some(base.id.clone()),
        names: vec!["top".into()],
        ..CreateLayerOptions::default()
    };
    std::thread::scope(|s| {
        let writer = s.spawn(|| store.create_layer(&opts, Some(Box::new(gate))));
        reached.recv().expect("the extraction started");
        // Half the layer is extracted, in a staging directory.
        let staged = staging_dirs(&ds);
        assert_eq!(staged.len(), 1, "{staged:?}");

        // Another store object of ours (the same in-process locks as another thread of a
        // program would use) lists the layers, only the complete one.
        let other = open(&ds);
        let listed = other.layers().expect("layers while extracting");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0.id, base.id);
        assert!(other.layer("top").is_err(), "no half layer by name");
        drop(other);
        assert!(
            !layers_json(&ds).contains(&new_id),
            "no record of the half layer"
        );

        // Go 1.43 reads, then loads the store for writing (and creates a layer) meanwhile.
        let go_listed = ok(&ds.go(&["layers"]));
        assert!(
            go_listed.contains(&base.id) && !go_listed.contains(&new_id),
            "{go_listed}"
        );
        let go_layer = ok(&ds.go(&["create-layer", &base.id])).trim().to_string();
        assert_eq!(
            staging_dirs(&ds),
            staged,
            "Go left our staging directory alone"
        );
        assert!(staged[0].join("dir").exists());
        assert!(
            !*timed_out.lock().unwrap(),
            "the readers waited for the extraction"
        );

        go_tx.send(()).expect("open the gate");
        let (layer, _) = writer
            .join()
            .expect("writer thread")
            .expect("staged create");
        assert_eq!(layer.id, new_id);
        assert_eq!(layer.diff_digest, sha256(&tar));
        assert!(!layer.is_incomplete());

        let go_listed = ok(&ds.go(&["layers"]));
        for id in [&base.id, &new_id, &go_layer] {
            assert!(go_listed.contains(id.as_str()), "{id} in {go_listed}");
        }
    });
    assert!(!*timed_out.lock().unwrap());
    assert!(staging_dirs(&ds).is_empty(), "{:?}", staging_dirs(&ds));
    assert_eq!(diff_of(&store, &new_id), tar, "the layer's data is intact");
    let out = ds.go(&["diff", "-u", &new_id]);
    ok(&out);
    assert_eq!(out.stdout, tar, "Go diffs it byte-exactly");
}

/// Makes an abandoned staging directory of the driver as a killed process leaves it: the
/// content, and the unlocked lock file.
fn abandoned_staging(home: &Path, name: &str) -> PathBuf {
    let dir = home.join("staging").join(name);
    std::fs::create_dir_all(dir.join("dir/etc")).unwrap();
    std::fs::write(dir.join("dir/etc/file"), b"left over").unwrap();
    std::fs::write(dir.join("staging.lock"), b"").unwrap();
    dir
}

fn abandoned_staging_is_removed_and_live_staging_kept(driver: &str) {
    let Some(ds) = DriverStore::new(driver) else {
        return;
    };
    let store = open(&ds);
    // The driver's home exists once the store is open.
    let live = store
        .prepare_staged_layer(
            &CreateLayerOptions::default(),
            Box::new(Cursor::new(layer_tar(5))),
        )
        .expect("prepare");
    let live_dir = live.staging_dir().expect("a staging dir").to_path_buf();
    let dead = abandoned_staging(&ds.home(), "123456");

    // A store loaded for writing (another store object: its first write is a full load)
    // removes the abandoned directory and not the held one.
    let other = open(&ds);
    other
        .create_layer(&CreateLayerOptions::default(), None)
        .expect("a write");
    drop(other);
    assert!(!dead.exists(), "abandoned staging removed");
    assert!(live_dir.join("dir").exists(), "live staging kept");

    // Go loading the store for writing leaves the live one alone too.
    if go_cs().is_some() {
        ok(&ds.go(&["create-layer"]));
        assert!(
            live_dir.join("dir").exists(),
            "Go left the live staging alone"
        );
    } else {
        require(false, "Go containers-storage (/usr/bin/containers-storage)");
    }
    let layer = store
        .apply_staged_layer(live, &CreateLayerOptions::default())
        .expect("apply after the others' loads");
    assert_eq!(diff_of(&store, &layer.id), layer_tar(5));

    // A staging directory left by a process that died (the lock file is unlocked) goes at
    // the next full load of ours.
    let dead = abandoned_staging(&stage_root(&ds), "654321");
    let third = open(&ds);
    third.delete_layer(&layer.id).expect("a write");
    drop(third);
    assert!(!dead.exists(), "abandoned staging removed");
    assert!(staging_dirs(&ds).is_empty(), "{:?}", staging_dirs(&ds));
}

fn chain_tar(k: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..(50_000 * (k + 1))).map(|i| (i * 7 + k) as u8).collect();
    TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/conf", 0o644, format!("layer {k}\n").as_bytes())
        .file(&format!("layer{k}"), 0o644, &body)
        .finish()
}

/// A chain of four layers (plain and gzip) applied at once lands in parent order, each
/// diffing back to its tar.
fn import_layers_commits_a_chain_in_order(driver: &str) {
    let Some(ds) = DriverStore::new(driver) else {
        return;
    };
    let store = open(&ds);
    let tars: Vec<Vec<u8>> = (0..4).map(chain_tar).collect();
    let ids: Vec<String> = (0..4).map(|k| format!("{k}").repeat(64)).collect();
    let items: Vec<LayerImport> = tars
        .iter()
        .enumerate()
        .map(|(k, t)| LayerImport {
            opts: CreateLayerOptions {
                id: Some(ids[k].clone()),
                parent: (k > 0).then(|| ids[k - 1].clone()),
                ..CreateLayerOptions::default()
            },
            diff: if k % 2 == 0 {
                Box::new(Cursor::new(t.clone()))
            } else {
                Box::new(Cursor::new(gzip(t)))
            },
        })
        .collect();
    let done = store
        .import_layers(items, &ImportLayersOptions::default())
        .expect("import");
    assert_eq!(done.len(), 4);
    for (k, (layer, _)) in done.iter().enumerate() {
        assert_eq!(layer.id, ids[k]);
        assert_eq!(
            layer.parent,
            if k == 0 {
                String::new()
            } else {
                ids[k - 1].clone()
            }
        );
        assert_eq!(layer.diff_digest, sha256(&tars[k]));
        assert!(!layer.is_incomplete());
        let diff = diff_of(&store, &layer.id);
        let diff = if k % 2 == 0 { diff } else { gunzip(&diff) };
        assert_eq!(diff, tars[k], "layer {k} diffs back");
    }
    assert!(staging_dirs(&ds).is_empty(), "{:?}", staging_dirs(&ds));
}

/// A broken third layer: the first two are committed, none of the later ones, and no
/// staging data remains.
fn import_layers_error_commits_none_of_the_later_layers(driver: &str) {
    let Some(ds) = DriverStore::new(driver) else {
        return;
    };
    let store = open(&ds);
    let ids: Vec<String> = (0..5).map(|k| format!("{}", k + 5).repeat(64)).collect();
    let items: Vec<LayerImport> = (0..5)
        .map(|k| {
            let mut data = gzip(&chain_tar(k));
            if k == 2 {
                data.truncate(data.len() / 2);
            }
            LayerImport {
                opts: CreateLayerOptions {
                    id: Some(ids[k].clone()),
                    parent: (k > 0).then(|| ids[k - 1].clone()),
                    ..CreateLayerOptions::default()
                },
                diff: Box::new(Cursor::new(data)),
            }
        })
        .collect();
    let err = store
        .import_layers(items, &ImportLayersOptions { jobs: 3 })
        .expect_err("a truncated layer fails the import");
    assert_eq!(err.index, 2, "{}", err.error);
    let committed: Vec<&str> = err.committed.iter().map(|(l, _)| l.id.as_str()).collect();
    assert_eq!(committed, vec![ids[0].as_str(), ids[1].as_str()]);
    let listed: Vec<String> = store
        .layers()
        .expect("layers")
        .into_iter()
        .map(|(l, _)| l.id)
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for id in &ids[2..] {
        assert!(!listed.contains(id));
    }
    assert!(staging_dirs(&ds).is_empty(), "{:?}", staging_dirs(&ds));
}

/// `import-layer` killed while it extracts: no layer appears, ours and Go load the store
/// cleanly, and our next write load removes the staging data it left.
fn killed_import_leaves_no_layer_and_no_orphan_staging(driver: &str) {
    use std::io::Write;
    let Some(ds) = DriverStore::new(driver) else {
        return;
    };
    // Larger than any read-ahead buffer of the apply pipeline, so that writing most of it
    // gets the first entries extracted.
    let big: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    let tar = TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/conf", 0o644, b"conf")
        .file("big", 0o644, &big)
        .finish();
    let mut child = ds
        .ours_command(&["import-layer"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn import-layer");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(&tar[..tar.len() / 2])
        .expect("half the layer");
    stdin.flush().expect("flush");
    // Wait (a bounded guard, not a measurement) until the data is being staged.
    let mut staged = Vec::new();
    for _ in 0..6000 {
        staged = staging_dirs(&ds);
        if staged.iter().any(|d| d.join("dir/etc").exists()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        staged.iter().any(|d| d.join("dir/etc").exists()),
        "import-layer staged its data: {staged:?}"
    );
    child.kill().expect("kill -9");
    let _ = child.wait();
    drop(stdin);

    assert!(ok(&ds.ours(&["layers"])).trim().is_empty());
    if go_cs().is_some() {
        assert!(ok(&ds.go(&["layers"])).trim().is_empty());
    } else {
        require(false, "Go containers-storage (/usr/bin/containers-storage)");
    }
    // Our next write load removes the dead process's staging data.
    ok(&ds.ours(&["create-layer"]));
    assert!(staging_dirs(&ds).is_empty(), "{:?}", staging_dirs(&ds));
    assert_eq!(ok(&ds.ours(&["layers"])).lines().count(), 1);
}
