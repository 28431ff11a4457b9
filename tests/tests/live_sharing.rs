//! Live sharing of one store with Debian's Go `containers-storage`, on every driver (and on
//! overlay through fuse-overlayfs): while one tool holds the layer-store lock (an `applydiff`
//! fed from a FIFO; ours holds it for an apply onto a mounted layer, which it cannot stage),
//! the other tool's writers and readers wait; while ours applies a diff to an unmounted layer
//! (staged: extracted outside the lock) Go's writers and readers do not wait and Go deletes
//! nothing of ours; and 6 + 6 concurrent `create-layer` calls from both tools lose nothing.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use storage_tests::fs::DriverStore;
use storage_tests::tars::TarBuilder;
use storage_tests::{Cs, go_cs, ok, ours, require};

fn spawn(cs: &Cs, bin: &Path, args: &[&OsStr]) -> Child {
    Command::new(bin)
        .args(cs.global_args())
        .args(args)
        .env_remove("STORAGE_OPTS")
        .env_remove("STORAGE_DRIVER")
        .env_remove("CONTAINERS_STORAGE_CONF")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(st.success());
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// `holder` applies a diff read from a FIFO to a new layer (mounted first with `mounted`);
/// meanwhile `waiter` runs a writer (`create-layer`) and a reader (`layers`). With `blocks`
/// the holder keeps the layers lock exclusively while it waits for data and the waiter's
/// calls must not finish before the FIFO is fed; without, they must finish before it is.
fn holder_blocks_waiter(cs: &Cs, holder: &Path, waiter: &Path, mounted: bool, blocks: bool) {
    let base = first_line(&ok(&cs.ours(&["create-layer"])));
    if mounted {
        ok(&cs.ours(&["mount", &base]));
    }
    let fifo: PathBuf = cs.dir.path().join(format!("fifo-{base}"));
    mkfifo(&fifo);
    let mut hold = spawn(
        cs,
        holder,
        &[
            "applydiff".as_ref(),
            "-f".as_ref(),
            fifo.as_os_str(),
            base.as_ref(),
        ],
    );
    // Opening the write end lets the holder's open() return; it then locks and blocks reading.
    let mut feed = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("open fifo");
    std::thread::sleep(Duration::from_millis(700));
    let mut writer = spawn(
        cs,
        waiter,
        &["create-layer".as_ref(), "-n".as_ref(), "waited".as_ref()],
    );
    let mut reader = spawn(cs, waiter, &["layers".as_ref()]);
    if blocks {
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            writer.try_wait().unwrap().is_none(),
            "the writer ran while the other tool held the layers lock"
        );
        assert!(
            reader.try_wait().unwrap().is_none(),
            "the reader ran while the other tool held the layers lock"
        );
    } else {
        // A guard against a hang, not a measurement: they finish while the FIFO waits.
        let deadline = Instant::now() + Duration::from_secs(120);
        while (writer.try_wait().unwrap().is_none() || reader.try_wait().unwrap().is_none())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            writer.try_wait().unwrap().is_some() && reader.try_wait().unwrap().is_some(),
            "the other tool waited for a staged apply"
        );
        // The layer's content is untouched until the apply commits.
        let changes = ok(&cs.go(&["changes", &base]));
        assert!(!changes.contains("/fed"), "{changes}");
    }
    assert!(
        hold.try_wait().unwrap().is_none(),
        "the holder should be blocked on the FIFO"
    );
    let released = Instant::now();
    let tar = TarBuilder::new()
        .file("fed", 0o644, b"through the fifo\n")
        .finish();
    feed.write_all(&tar).unwrap();
    drop(feed);
    for (what, child) in [("holder", hold), ("writer", writer), ("reader", reader)] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(released.elapsed() < Duration::from_secs(60));
    // Both tools see the applied diff and the waiting writer's layer.
    for go in [false, true] {
        let out = if go {
            cs.go(&["layers"])
        } else {
            cs.ours(&["layers"])
        };
        let listing = ok(&out);
        assert!(listing.contains("name: waited"), "{listing}");
    }
    if mounted {
        // (fuse-overlayfs would show Go's naive diff the mount's cached view)
        ok(&cs.ours(&["unmount", &base]));
    }
    let changes = ok(&cs.go(&["changes", &base]));
    assert!(changes.contains("/fed"), "{changes}");
    ok(&cs.ours(&["delete-layer", "waited"]));
}

fn live_sharing(driver: &str) {
    if !require(go_cs().is_some(), "Debian's Go containers-storage") {
        return;
    }
    let Some(cs) = DriverStore::new(driver) else {
        return;
    };
    let go = go_cs().unwrap();
    holder_blocks_waiter(&cs, &go, ours(), false, true);
    holder_blocks_waiter(&cs, ours(), &go, true, true);
    holder_blocks_waiter(&cs, ours(), &go, false, false);

    // 6 + 6 concurrent create-layer from both tools.
    std::thread::scope(|s| {
        for tool in ["ours", "go"] {
            for i in 0..6 {
                let cs = &cs;
                s.spawn(move || {
                    let name = format!("{tool}-{i}");
                    let args = ["create-layer", "-n", name.as_str()];
                    let out = if tool == "go" {
                        cs.go(&args)
                    } else {
                        cs.ours(&args)
                    };
                    ok(&out);
                });
            }
        }
    });
    for go in [false, true] {
        let out = if go {
            cs.go(&["layers", "--json"])
        } else {
            cs.ours(&["layers", "--json"])
        };
        let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
        let names: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect();
        for tool in ["ours", "go"] {
            for i in 0..6 {
                let want = format!("{tool}-{i}");
                assert!(
                    names.contains(&want),
                    "{want} lost (listed by go={go}): {names:?}"
                );
            }
        }
    }
}

#[test]
fn live_sharing_vfs() {
    live_sharing("vfs");
}

#[test]
fn live_sharing_overlay() {
    live_sharing("overlay");
}

#[test]
fn live_sharing_btrfs() {
    live_sharing("btrfs");
}

#[test]
fn live_sharing_fuse_overlayfs() {
    live_sharing("fuse-overlayfs");
}
