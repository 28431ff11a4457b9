//! Deferred layer deletion as Go 1.59+ does it, through our CLI on vfs and overlay: a deleted
//! layer's data goes through staging directories (`<G>/<drv>-layers/tmp/temp-dir-<x>` and
//! `<G>/<drv>/tempdirs/temp-dir-<x>`, each guarded by a `lock-<x>` held while it lives) that
//! are gone once the command ends; a store loaded after a crash in the middle of a deletion
//! finishes it — the incomplete record goes and every abandoned staging directory (one whose
//! lock nobody holds) is removed — while a live one (its lock held by another process, e.g. a
//! Go 1.60 process still deleting) is left alone. Debian's Go 1.43 (which deletes at once and
//! does not know the staging directories) still reads what we leave, in both cases.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use storage_tests::fs::DriverStore;
use storage_tests::tars::sample_layer;
use storage_tests::{Cs, go_cs, ok, require};

macro_rules! per_driver {
    ($name:ident) => {
        mod $name {
            #[test]
            fn vfs() {
                super::$name("vfs")
            }
            #[test]
            fn overlay() {
                super::$name("overlay")
            }
        }
    };
}

per_driver!(deletion_leaves_no_staging_behind);
per_driver!(crash_mid_deletion_is_finished_on_load);

fn entries(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn import(cs: &Cs, name: &str) -> String {
    let tar = cs.dir.path().join(format!("{name}.tar"));
    std::fs::write(&tar, sample_layer()).unwrap();
    let out = ok(&cs.ours_stdin(&["import-layer", "-n", name], &tar));
    out.lines().next().unwrap_or_default().to_string()
}

/// The driver's directory of layer `id` (what `DeferredRemove` stages).
fn driver_dir(cs: &DriverStore, id: &str) -> PathBuf {
    match cs.driver.as_str() {
        "vfs" => cs.home().join("dir").join(id),
        _ => cs.home().join(id),
    }
}

/// The staging roots: the layer store's and the driver's.
fn roots(cs: &DriverStore) -> [PathBuf; 2] {
    [
        cs.graph.join(format!("{}-layers", cs.driver)).join("tmp"),
        cs.home().join("tempdirs"),
    ]
}

/// Go 1.43 lists exactly `ids` (when it is installed).
fn go_lists(cs: &Cs, ids: &[&str]) {
    if !require(go_cs().is_some(), "Debian's Go containers-storage") {
        return;
    }
    let out: serde_json::Value = serde_json::from_str(&ok(&cs.go(&["layers", "--json"]))).unwrap();
    let mut got: Vec<&str> = out
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["id"].as_str())
        .collect();
    got.sort();
    let mut want = ids.to_vec();
    want.sort();
    assert_eq!(got, want, "Go's listing");
}

fn deletion_leaves_no_staging_behind(driver: &str) {
    let Some(cs) = DriverStore::new(driver) else {
        return;
    };
    let keep = import(&cs, "keep");
    let gone = import(&cs, "gone");
    ok(&cs.ours(&["set-layer-data", "-f", "/dev/null", &gone, "k"]));
    let layers_dir = cs.graph.join(format!("{driver}-layers"));
    assert!(layers_dir.join(format!("{gone}.tar-split.gz")).exists());
    assert!(driver_dir(&cs, &gone).exists());
    ok(&cs.ours(&["delete-layer", &gone]));
    assert!(!layers_dir.join(format!("{gone}.tar-split.gz")).exists());
    assert!(!layers_dir.join(&gone).exists(), "big data gone");
    assert!(!driver_dir(&cs, &gone).exists());
    // The roots stay (Go leaves them too), empty: no staging directory, no lock file.
    for root in roots(&cs) {
        assert!(root.is_dir(), "{}", root.display());
        assert_eq!(entries(&root), Vec::<String>::new(), "{}", root.display());
    }
    assert_eq!(ok(&cs.ours(&["layers", "-q"])).trim(), keep);
    ok(&cs.ours(&["check"]));
    go_lists(&cs, &[&keep]);
}

/// A process holding the POSIX (fcntl) write lock of `path` until dropped — the lock Go and
/// we hold on a live staging directory. Perl, because the lock must belong to another
/// process (fcntl locks are per process).
struct LockHolder {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl LockHolder {
    fn start(path: &Path) -> Option<LockHolder> {
        const SCRIPT: &str = r#"use Fcntl; open(my $f, "+<", $ARGV[0]) or die "open: $!";
            my $l = pack("s s x4 q q i x4", F_WRLCK, 0, 0, 0, 0);
            fcntl($f, F_SETLK, $l) or die "lock: $!"; $| = 1; print "locked\n"; <STDIN>;"#;
        let mut child = Command::new("perl")
            .arg("-e")
            .arg(SCRIPT)
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take()?)
            .read_line(&mut line)
            .ok()?;
        (line.trim() == "locked").then_some(LockHolder { child, stdin })
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"\n");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes `<root>/temp-dir-<x>` holding `what` (moved in as `<n>-<name>`) and `<root>/lock-<x>`.
fn stage(root: &Path, x: &str, what: &[&Path]) -> PathBuf {
    let dir = root.join(format!("temp-dir-{x}"));
    std::fs::create_dir_all(&dir).unwrap();
    for (n, p) in what.iter().enumerate() {
        let name = p.file_name().unwrap().to_string_lossy();
        std::fs::rename(p, dir.join(format!("{n}-{name}"))).unwrap();
    }
    std::fs::write(root.join(format!("lock-{x}")), b"").unwrap();
    dir
}

fn crash_mid_deletion_is_finished_on_load(driver: &str) {
    let Some(cs) = DriverStore::new(driver) else {
        return;
    };
    let keep = import(&cs, "keep");
    let gone = import(&cs, "gone");
    let layers_dir = cs.graph.join(format!("{driver}-layers"));
    // The state a process killed in the middle of deleting `gone` leaves: the record flagged
    // incomplete (saved first), the tar-split file and the driver's data already staged.
    let json_path = layers_dir.join("layers.json");
    let mut records: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    for r in records.as_array_mut().unwrap() {
        if r["id"] == gone.as_str() {
            r["flags"] = serde_json::json!({ "incomplete": true });
        }
    }
    std::fs::write(&json_path, serde_json::to_vec(&records).unwrap()).unwrap();
    let [tmp, tempdirs] = roots(&cs);
    stage(
        &tmp,
        "11",
        &[&layers_dir.join(format!("{gone}.tar-split.gz"))],
    );
    stage(&tempdirs, "22", &[&driver_dir(&cs, &gone)]);
    // A staging directory another process is still working on.
    let live = stage(&tempdirs, "33", &[]);
    std::fs::write(live.join("0-data"), b"in use").unwrap();
    let Some(holder) = LockHolder::start(&tempdirs.join("lock-33")) else {
        assert!(!require(false, "perl to hold a POSIX lock"));
        return;
    };
    // Debian's Go 1.43 loads a copy of the crashed store: it finishes the deletion of the
    // incomplete layer (it does not know the staging directories and leaves them).
    let go_copy = Cs::new(driver);
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&cs.graph)
        .arg(&go_copy.graph)
        .status()
        .unwrap();
    assert!(cp.success());

    // (The `Found incomplete layer` warning is below the CLI's level with store flags.)
    assert_eq!(ok(&cs.ours(&["layers", "-q"])).trim(), keep);
    assert!(!driver_dir(&cs, &gone).exists());
    assert_eq!(entries(&tmp), Vec::<String>::new());
    assert_eq!(entries(&tempdirs), vec!["lock-33", "temp-dir-33"]);
    assert_eq!(entries(&live), vec!["0-data"]);
    ok(&cs.ours(&["check"]));
    go_lists(&cs, &[&keep]);
    // Once its owner is gone, the next load removes it.
    drop(holder);
    ok(&cs.ours(&["layers"]));
    assert_eq!(entries(&tempdirs), Vec::<String>::new());

    if go_cs().is_some() {
        go_lists(&go_copy, &[&keep]);
        // And we clean up after it.
        ok(&go_copy.ours(&["layers"]));
        for root in [
            go_copy.graph.join(format!("{driver}-layers/tmp")),
            go_copy.graph.join(format!("{driver}/tempdirs")),
        ] {
            assert_eq!(entries(&root), Vec::<String>::new(), "{}", root.display());
        }
    }
}
