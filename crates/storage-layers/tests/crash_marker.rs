//! The incomplete-flag protocol while a layer is being filled: the record is saved with
//! `flags.incomplete = true` before any driver work, the exclusive lock is held until the end
//! (a Go process waits), and a failure removes every trace.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Scratch, in_ci, sample_tar};
use storage_layers::CreateLayerOptions;

/// Releases a [`Gated`] reader: `Ok(data)` serves `data`, `Err(())` fails the stream.
type Gate = mpsc::Sender<Result<Vec<u8>, ()>>;

/// A reader that serves its data only once `go` says so (an `Err` aborts the stream).
struct Gated {
    rx: mpsc::Receiver<Result<Vec<u8>, ()>>,
    buf: std::io::Cursor<Vec<u8>>,
    done: bool,
}

impl Read for Gated {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if !self.done {
            self.done = true;
            match self.rx.recv() {
                Ok(Ok(data)) => self.buf = std::io::Cursor::new(data),
                _ => return Err(std::io::Error::other("aborted by the test")),
            }
        }
        self.buf.read(out)
    }
}

fn gated() -> (Gate, Box<dyn Read + Send>) {
    let (tx, rx) = mpsc::channel();
    (
        tx,
        Box::new(Gated {
            rx,
            buf: std::io::Cursor::new(Vec::new()),
            done: false,
        }),
    )
}

fn flagged_incomplete(s: &Scratch) -> Vec<String> {
    s.layers_json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["flags"]["incomplete"] == serde_json::Value::Bool(true))
        .map(|l| l["names"][0].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn marker_is_on_disk_during_the_apply_and_gone_after() {
    let s = Scratch::new();
    let store = s.store();
    let tar = sample_tar("gate");
    std::thread::scope(|scope| {
        let (tx, input) = gated();
        let st = &store;
        let t = scope.spawn(move || {
            let opts = CreateLayerOptions {
                names: vec!["slow".into()],
                ..Default::default()
            };
            st.write().unwrap().create(&opts, Some(input))
        });
        // Wait until the marker record is on disk, then let the data flow.
        let mut seen = false;
        for _ in 0..500 {
            if s.layer_dir().join("layers.json").exists()
                && flagged_incomplete(&s) == vec!["slow".to_string()]
            {
                seen = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(seen, "incomplete record saved before the driver work");
        tx.send(Ok(tar.clone())).unwrap();
        let (layer, _) = t.join().unwrap().unwrap();
        assert!(!layer.is_incomplete());
    });
    assert!(flagged_incomplete(&s).is_empty());

    // Same with a stream that fails: no trace is left.
    std::thread::scope(|scope| {
        let (tx, input) = gated();
        let st = &store;
        let t = scope.spawn(move || {
            let opts = CreateLayerOptions {
                names: vec!["doomed".into()],
                ..Default::default()
            };
            st.write().unwrap().create(&opts, Some(input))
        });
        for _ in 0..500 {
            if flagged_incomplete(&s) == vec!["doomed".to_string()] {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(flagged_incomplete(&s), vec!["doomed".to_string()]);
        tx.send(Err(())).unwrap();
        assert!(t.join().unwrap().is_err());
    });
    let r = store.read().unwrap();
    assert_eq!(r.len(), 1);
    assert!(r.lookup("doomed").is_none());
    assert_eq!(s.layers_json().as_array().unwrap().len(), 1);
}

#[test]
fn go_waits_for_our_exclusive_lock_during_an_apply() {
    let go = "/usr/bin/containers-storage";
    if !Path::new(go).exists() {
        assert!(!in_ci(), "{go} is required in CI");
        eprintln!("SKIPPED: {go} not installed");
        return;
    }
    let s = Scratch::new();
    let store = s.store();
    drop(store.write().unwrap());
    let tar = sample_tar("go-waits");
    std::thread::scope(|scope| {
        let (tx, input) = gated();
        let st = &store;
        let t = scope.spawn(move || {
            let opts = CreateLayerOptions {
                names: vec!["busy".into()],
                ..Default::default()
            };
            st.write().unwrap().create(&opts, Some(input))
        });
        for _ in 0..500 {
            if s.layer_dir().join("layers.json").exists() && !flagged_incomplete(&s).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut child = Command::new(go)
            .args(["--storage-driver", "vfs", "--graph"])
            .arg(s.graph())
            .arg("--run")
            .arg(s.run())
            .args(["layers", "--json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            child.try_wait().unwrap().is_none(),
            "Go must wait for our exclusive layers.lock"
        );
        tx.send(Ok(tar.clone())).unwrap();
        t.join().unwrap().unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 1, "Go saw the finished layer, not a half one");
        assert_eq!(arr[0]["names"], serde_json::json!(["busy"]));
        assert!(arr[0].get("flags").is_none());
    });
}
