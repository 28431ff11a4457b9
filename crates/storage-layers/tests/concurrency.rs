//! Concurrent writers: threads sharing one store, separate instances, and a Go process
//! creating layers at the same time (needs /usr/bin/containers-storage; fails in CI without it).

mod common;

use storage_testsupport::per_driver;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{Scratch, in_ci};
use storage_layers::{CreateLayerOptions, LayerStore};

fn named(name: String) -> CreateLayerOptions {
    CreateLayerOptions {
        names: vec![name],
        ..Default::default()
    }
}

#[test]
fn store_is_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LayerStore>();
}

#[test]
fn threads_and_instances_do_not_lose_writes() {
    let s = Scratch::new();
    let shared = Arc::new(s.store());
    std::thread::scope(|scope| {
        for t in 0..3 {
            let shared = shared.clone();
            scope.spawn(move || {
                for i in 0..8 {
                    shared
                        .write()
                        .unwrap()
                        .create(&named(format!("shared-{t}-{i}")), None)
                        .unwrap();
                    assert!(shared.read().unwrap().exists(&format!("shared-{t}-{i}")));
                }
            });
        }
        for t in 0..2 {
            let own = s.store();
            scope.spawn(move || {
                for i in 0..8 {
                    own.write()
                        .unwrap()
                        .create(&named(format!("own-{t}-{i}")), None)
                        .unwrap();
                }
            });
        }
    });
    let fresh = s.store();
    let r = fresh.read().unwrap();
    assert_eq!(r.len(), 40);
    assert_eq!(
        shared.read().unwrap().len(),
        40,
        "the shared instance reloaded"
    );
    let names: BTreeSet<String> = r.iter().flat_map(|l| l.names.clone()).collect();
    assert_eq!(names.len(), 40);
}

per_driver!(go_and_we_create_layers_at_the_same_time);

fn go_and_we_create_layers_at_the_same_time(driver: &str) {
    let go = "/usr/bin/containers-storage";
    if !Path::new(go).exists() {
        assert!(!in_ci(), "{go} is required in CI");
        eprintln!("SKIPPED: {go} not installed");
        return;
    }
    let Some(s) = Scratch::with_driver(driver) else {
        return;
    };
    // Make sure both sides agree on the directories before racing.
    drop(s.store().write().unwrap());
    let script = format!(
        "for i in $(seq 1 10); do {go} --storage-driver {driver} --graph '{}' --run '{}' create-layer -n go-$i >/dev/null || exit 1; done",
        s.graph().display(),
        s.run().display()
    );
    let mut child = Command::new("sh").arg("-c").arg(&script).spawn().unwrap();
    let store = s.store();
    for i in 1..=10 {
        store
            .write()
            .unwrap()
            .create(&named(format!("ours-{i}")), None)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(child.wait().unwrap().success(), "Go loop failed");
    let r = store.read().unwrap();
    assert_eq!(r.len(), 20, "no write lost on either side");
    for i in 1..=10 {
        assert!(r.exists(&format!("go-{i}")) && r.exists(&format!("ours-{i}")));
    }
    drop(r);
    let out = Command::new(go)
        .args(["--storage-driver", driver, "--graph"])
        .arg(s.graph())
        .arg("--run")
        .arg(s.run())
        .args(["layers", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(20));
}
