//! Live sharing of one store with Debian's Go `containers-storage`, on every driver (and on
//! overlay through fuse-overlayfs): while one tool holds the layer-store lock (an `applydiff` fed from a FIFO), the other tool's writers
//! and readers wait; and 6 + 6 concurrent `create-layer` calls from both tools lose nothing.

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

/// `holder` applies a diff read from a FIFO (so it holds the layers lock exclusively while it
/// waits for data); meanwhile `waiter` runs a writer (`create-layer`) and a reader (`layers`),
/// which must not finish before the FIFO is fed.
fn holder_blocks_waiter(cs: &Cs, holder: &Path, waiter: &Path) {
    let base = first_line(&ok(&cs.ours(&["create-layer"])));
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
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        hold.try_wait().unwrap().is_none(),
        "the holder should be blocked on the FIFO"
    );
    assert!(
        writer.try_wait().unwrap().is_none(),
        "the writer ran while the other tool held the layers lock"
    );
    assert!(
        reader.try_wait().unwrap().is_none(),
        "the reader ran while the other tool held the layers lock"
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
    holder_blocks_waiter(&cs, &go, ours());
    holder_blocks_waiter(&cs, ours(), &go);

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
