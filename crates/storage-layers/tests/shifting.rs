//! Mount-time ID shifting on overlay (Go's `canUseShifting`): layers requested with maps are
//! recorded without maps and keep canonical content when the driver can shift; the maps are applied
//! when mounting. Without shifting (overlay whose cached `idmapped-lower-dir` probe says no) the
//! old chown path stays. Needs root and a kernel with idmapped overlay lowers; without them the
//! tests fail when CI=true and are skipped (loudly) otherwise.

mod common;

use std::path::PathBuf;

use std::sync::Arc;
use storage_testsupport::owner;
use storage_testsupport::unmount_all_under;

use common::{in_ci, reader, sample_tar};
use storage_drivers::{Driver, DriverOptions, MountOpts, open_driver};
use storage_layers::{CreateLayerOptions, LayerStore, LayerStoreOptions};
use storage_types::{ErrorKind, IdMap};

fn map(host: u32) -> Vec<IdMap> {
    vec![IdMap::new(0, host, 65536)]
}

fn skip(why: &str) -> bool {
    assert!(!in_ci(), "{why} (required in CI)");
    eprintln!("SKIPPED: {why}");
    true
}

/// A scratch overlay layer store; unmounts everything below it on drop.
struct Overlay {
    dir: tempfile::TempDir,
    drivers: Vec<Arc<dyn Driver>>,
}

impl Overlay {
    /// `None` (after a loud skip) when not root.
    fn new() -> Option<Overlay> {
        if !rustix::process::geteuid().is_root() && skip("overlay layer stores need root") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        Some(Overlay {
            dir,
            drivers: Vec::new(),
        })
    }

    fn graph(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn run(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Sets the driver's cached idmapped-lowers probe (as Go's overlay caches it in the run
    /// root): `Some(false)` makes the driver report that it cannot shift, `None` makes the next
    /// driver instance probe the kernel again.
    fn set_probe(&self, idmapped: Option<bool>) {
        let d = self.run().join("overlay");
        std::fs::create_dir_all(&d).unwrap();
        for v in ["true", "false"] {
            let _ = std::fs::remove_file(d.join(format!("idmapped-lower-dir-{v}")));
        }
        if let Some(v) = idmapped {
            std::fs::write(d.join(format!("idmapped-lower-dir-{v}")), b"").unwrap();
        }
    }

    /// A new driver instance and layer store on this scratch directory.
    fn store(&mut self) -> LayerStore {
        let graph = self.graph();
        let run = self.run();
        let d: Arc<dyn Driver> = Arc::from(
            open_driver(
                "overlay",
                &DriverOptions {
                    home: graph.join("overlay"),
                    run_home: run.join("overlay"),
                    graph_root: graph.clone(),
                    run_root: run.clone(),
                    image_store: None,
                    options: Vec::new(),
                },
            )
            .expect("overlay driver"),
        );
        self.drivers.push(d.clone());
        LayerStore::open(LayerStoreOptions::new(
            graph.join("overlay-layers"),
            run.join("overlay-layers"),
            d,
        ))
        .expect("open layer store")
    }

    fn diff_dir(&self, id: &str) -> PathBuf {
        self.graph().join("overlay").join(id).join("diff")
    }

    fn layer_json(&self, id: &str) -> serde_json::Value {
        let data = std::fs::read(self.graph().join("overlay-layers/layers.json")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
        v.as_array()
            .and_then(|a| a.iter().find(|l| l["id"] == id).cloned())
            .unwrap_or_else(|| panic!("layer {id} not in layers.json: {v}"))
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        for d in self.drivers.drain(..) {
            let _ = d.cleanup();
        }
        unmount_all_under(self.dir.path());
    }
}

fn maps(uid: Vec<IdMap>, gid: Vec<IdMap>) -> MountOpts {
    MountOpts {
        uid_map: uid,
        gid_map: gid,
        ..MountOpts::default()
    }
}

#[test]
fn layers_stay_canonical_and_maps_apply_at_mount() {
    let Some(mut fx) = Overlay::new() else {
        return;
    };
    let store = fx.store();
    let mut w = store.write().unwrap();
    if !w.can_use_shifting(&map(100000), &map(200000))
        && skip("overlay here cannot shift IDs at mount time (no idmapped lowers)")
    {
        return;
    }
    // An image layer requested with maps: recorded without, content not re-owned.
    let base = CreateLayerOptions {
        uid_map: map(100000),
        gid_map: map(200000),
        ..Default::default()
    };
    let (base, _) = w.create(&base, Some(reader(sample_tar("base")))).unwrap();
    assert!(base.uidmap.is_empty() && base.gidmap.is_empty(), "{base:?}");
    let rec = fx.layer_json(&base.id);
    assert!(
        rec.get("uidmap").is_none() && rec.get("gidmap").is_none(),
        "no maps in layers.json: {rec}"
    );
    assert_eq!(rec["uidset"], serde_json::json!([0, 1000]));
    assert_eq!(
        owner(&fx.diff_dir(&base.id).join("etc/owned.txt")),
        (1000, 1000)
    );
    assert_eq!(owner(&fx.diff_dir(&base.id).join("etc/hello.txt")), (0, 0));

    // A container layer with maps on top: no maps either, nothing chowned.
    let ctr = CreateLayerOptions {
        parent: Some(base.id.clone()),
        writeable: true,
        uid_map: map(100000),
        gid_map: map(200000),
        ..Default::default()
    };
    let (ctr, _) = w.create(&ctr, None).unwrap();
    assert!(ctr.uidmap.is_empty() && ctr.gidmap.is_empty(), "{ctr:?}");
    assert_eq!(
        owner(&fx.diff_dir(&base.id).join("etc/owned.txt")),
        (1000, 1000)
    );

    // Mounted with the container's maps, the files appear shifted.
    let m = w.mount(&ctr.id, &maps(map(100000), map(200000))).unwrap();
    assert_eq!(owner(&m.join("etc/owned.txt")), (101000, 201000));
    assert_eq!(owner(&m.join("etc/hello.txt")), (100000, 200000));
    assert_eq!(owner(&m.join("etc/link")), (100000, 200000));
    assert!(!w.unmount(&ctr.id, false).unwrap());
    // Without maps the same layer shows the canonical owners.
    let m = w.mount(&ctr.id, &MountOpts::default()).unwrap();
    assert_eq!(owner(&m.join("etc/owned.txt")), (1000, 1000));
    assert!(!w.unmount(&ctr.id, false).unwrap());
    // On disk nothing moved.
    assert_eq!(
        owner(&fx.diff_dir(&base.id).join("etc/owned.txt")),
        (1000, 1000)
    );
    assert_eq!(owner(&fx.diff_dir(&base.id).join("etc")), (0, 0));

    // Non-contiguous maps: 1.59+ leaves contiguity to the driver, and idmapped lowers take
    // any map (1.43 refused to shift them and re-owned the layer instead).
    let split = vec![IdMap::new(0, 300000, 1000), IdMap::new(1000, 400000, 64536)];
    assert!(w.can_use_shifting(&split, &split));
    let odd = CreateLayerOptions {
        parent: Some(base.id.clone()),
        writeable: true,
        uid_map: split.clone(),
        gid_map: split.clone(),
        ..Default::default()
    };
    let (odd, _) = w.create(&odd, None).unwrap();
    assert!(odd.uidmap.is_empty() && odd.gidmap.is_empty(), "{odd:?}");
    let m = w
        .mount(&odd.id, &maps(split.clone(), split.clone()))
        .unwrap();
    assert_eq!(owner(&m.join("etc/owned.txt")), (400000, 400000));
    assert_eq!(owner(&m.join("etc/hello.txt")), (300000, 300000));
    assert!(!w.unmount(&odd.id, false).unwrap());
    assert_eq!(
        owner(&fx.diff_dir(&base.id).join("etc/owned.txt")),
        (1000, 1000)
    );
}

#[test]
fn without_shifting_maps_are_recorded_and_content_chowned() {
    let Some(mut fx) = Overlay::new() else {
        return;
    };
    fx.set_probe(Some(false));
    let store = fx.store();
    let mut w = store.write().unwrap();
    assert!(!w.can_use_shifting(&map(100000), &map(100000)));
    let (base, _) = w
        .create(
            &CreateLayerOptions::default(),
            Some(reader(sample_tar("b"))),
        )
        .unwrap();
    let ctr = CreateLayerOptions {
        parent: Some(base.id.clone()),
        writeable: true,
        uid_map: map(100000),
        gid_map: map(100000),
        ..Default::default()
    };
    let (ctr, _) = w.create(&ctr, None).unwrap();
    assert_eq!(ctr.uidmap, map(100000));
    let rec = fx.layer_json(&ctr.id);
    assert_eq!(rec["uidmap"][0]["host_id"], 100000, "{rec}");
    // The container layer's copy-up re-owned the inherited content.
    let m = w.mount(&ctr.id, &maps(map(100000), map(100000))).unwrap();
    assert_eq!(owner(&m.join("etc/owned.txt")), (101000, 101000));
    assert!(!w.unmount(&ctr.id, false).unwrap());
    // Other maps cannot be applied.
    let e = w
        .mount(&ctr.id, &maps(map(500000), map(500000)))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains(&format!(
            "cannot mount layer {}: shifting not enabled",
            ctr.id
        )),
        "{e}"
    );
    drop(w);
    drop(store);

    // The same store later opened where the driver can shift: maps equal to the layer's are
    // not applied a second time.
    fx.set_probe(None);
    let store = fx.store();
    let mut w = store.write().unwrap();
    if !w.can_use_shifting(&map(100000), &map(100000))
        && skip("overlay here cannot shift IDs at mount time (no idmapped lowers)")
    {
        return;
    }
    let m = w.mount(&ctr.id, &maps(map(100000), map(100000))).unwrap();
    assert_eq!(owner(&m.join("etc/owned.txt")), (101000, 101000));
    assert!(!w.unmount(&ctr.id, false).unwrap());
}
