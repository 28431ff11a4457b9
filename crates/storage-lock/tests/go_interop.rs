//! Interlocking with Go's containers/storage (the `containers-storage` CLI,
//! Debian's 1.43 at /usr/bin/containers-storage, or `$CONTAINERS_STORAGE_GO`).
//!
//! Without the Go binary or root privileges these tests fail when `CI=true`
//! and otherwise return early after saying why on stderr.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use storage_lock::{LockFile, Token};

const EVENTUALLY: Duration = Duration::from_secs(30);

struct Go {
    bin: PathBuf,
    _dir: tempfile::TempDir,
    graph: PathBuf,
    run: PathBuf,
    conf: PathBuf,
}

/// The Go peer, or `None` (after a loud message) when it cannot run here.
fn go() -> Option<Go> {
    let bin = std::env::var_os("CONTAINERS_STORAGE_GO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/containers-storage"));
    let why = if !bin.is_file() {
        Some(format!(
            "Go containers-storage binary {} not found",
            bin.display()
        ))
    } else if !storage_testsupport::is_root() {
        Some("not running as root (needed for Go's vfs store)".to_owned())
    } else {
        None
    };
    if let Some(why) = why {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but the Go interop peer is unavailable: {why}");
        }
        eprintln!("SKIPPING Go interop test: {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("storage.conf");
    std::fs::write(&conf, "[storage]\ndriver = \"vfs\"\n").unwrap();
    Some(Go {
        bin,
        graph: dir.path().join("graph"),
        run: dir.path().join("run"),
        conf,
        _dir: dir,
    })
}

impl Go {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("CONTAINERS_STORAGE_CONF", &self.conf)
            .arg("--graph")
            .arg(&self.graph)
            .arg("--run")
            .arg(&self.run)
            .arg("--storage-driver")
            .arg("vfs")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let out: Output = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "Go {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn create_layer(&self) -> String {
        self.run_ok(&["create-layer"]).trim().to_owned()
    }

    fn layers_lock(&self) -> PathBuf {
        self.graph.join("vfs-layers/layers.lock")
    }
}

/// Kills the child on drop unless it already finished.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            start.elapsed() < within,
            "Go process did not finish in {within:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// Whether /proc/locks shows a classic POSIX lock of `kind` ("READ"/"WRITE")
/// held by `pid` on `path`.
fn posix_lock_held(pid: u32, path: &Path, kind: &str) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let ino = meta.ino().to_string();
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // "1: POSIX  ADVISORY  WRITE 21295 fe:00:10011279 0 EOF"
        f.len() >= 8
            && f[1] == "POSIX"
            && f[3] == kind
            && f[4] == pid.to_string()
            && f[5].rsplit(':').next() == Some(ino.as_str())
    })
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success(), "mkfifo failed");
}

/// Opens the write end of `fifo`, which completes once Go opened it for
/// reading. Fails if Go exits first.
fn open_fifo_writer(fifo: &Path, child: &mut Child) -> File {
    let (tx, rx) = mpsc::channel();
    let p = fifo.to_path_buf();
    thread::spawn(move || {
        let _ = tx.send(OpenOptions::new().write(true).open(p));
    });
    let start = Instant::now();
    loop {
        if let Ok(f) = rx.recv_timeout(Duration::from_millis(50)) {
            return f.unwrap();
        }
        if let Some(st) = child.try_wait().unwrap() {
            // Unblock the opener thread before failing.
            let _ = OpenOptions::new().read(true).open(fifo);
            panic!(
                "Go exited ({st}) before opening the FIFO: {}",
                stderr_of(child)
            );
        }
        assert!(start.elapsed() < EVENTUALLY, "Go never opened the FIFO");
    }
}

/// Starts `applydiff -f FIFO layer` and returns once Go holds layers.lock
/// exclusively while waiting for the diff. Returns the child and the FIFO's
/// write end.
fn go_blocked_in_applydiff(go: &Go, layer: &str, fifo: &Path) -> (Reap, File) {
    mkfifo(fifo);
    let child = go
        .cmd(&["applydiff", "-f", fifo.to_str().unwrap(), layer])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let writer = open_fifo_writer(fifo, &mut child.0);
    let pid = child.0.id();
    let start = Instant::now();
    while !posix_lock_held(pid, &go.layers_lock(), "WRITE") {
        assert!(child.0.try_wait().unwrap().is_none(), "Go exited early");
        assert!(start.elapsed() < EVENTUALLY, "Go never took layers.lock");
        thread::sleep(Duration::from_millis(10));
    }
    (child, writer)
}

#[test]
fn go_holding_layers_lock_excludes_us() {
    let Some(go) = go() else { return };
    let layer = go.create_layer();
    let fifo = go.graph.parent().unwrap().join("diff.fifo");
    let (mut child, mut writer) = go_blocked_in_applydiff(&go, &layer, &fifo);
    let pid = child.0.id();

    // Go is blocked reading the FIFO with layers.lock held exclusively.
    thread::sleep(Duration::from_millis(200));
    assert!(posix_lock_held(pid, &go.layers_lock(), "WRITE"));
    let l = LockFile::open(&go.layers_lock()).unwrap();
    assert!(
        l.try_lock().unwrap().is_none(),
        "try_lock succeeded under Go's lock"
    );
    assert!(
        l.try_rlock().unwrap().is_none(),
        "try_rlock succeeded under Go's lock"
    );

    let (tx, rx) = mpsc::channel();
    let l2 = l.clone();
    let waiter = thread::spawn(move || {
        let g = l2.lock();
        let at = Instant::now();
        // Go must be gone (or at least have released) by now.
        let go_still_locks = posix_lock_held(pid, l2.path(), "WRITE");
        let _ = tx.send((at, go_still_locks, g.map(|g| g.token())));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(700)).is_err(),
        "our lock() returned while Go held layers.lock"
    );
    assert!(child.0.try_wait().unwrap().is_none());

    // An empty tar (two zero blocks) lets Go finish.
    let released = Instant::now();
    writer.write_all(&[0u8; 1024]).unwrap();
    drop(writer);
    let (at, go_still_locks, got) = rx.recv_timeout(EVENTUALLY).expect("lock() never returned");
    waiter.join().unwrap();
    assert!(at >= released);
    assert!(!go_still_locks, "we got the lock while Go still held it");
    let token = got.expect("lock failed").expect("token");
    assert_eq!(token.as_bytes().len(), 64, "Go writes 64-byte tokens");
    let st = wait_exit(&mut child.0, EVENTUALLY);
    assert!(
        st.success(),
        "Go applydiff failed: {}",
        stderr_of(&mut child.0)
    );
}

fn go_waits_for_our_lock(shared: bool) {
    let Some(go) = go() else { return };
    let layer = go.create_layer();
    let l = LockFile::open(&go.layers_lock()).unwrap();
    let (w, r) = if shared {
        (None, Some(l.rlock().unwrap()))
    } else {
        (Some(l.lock().unwrap()), None)
    };
    let child = go
        .cmd(&["layers"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    thread::sleep(Duration::from_millis(1200));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "Go `layers` finished while we held layers.lock (shared={shared})"
    );
    let released = Instant::now();
    drop((w, r));
    let st = wait_exit(&mut child.0, EVENTUALLY);
    let waited_after = released.elapsed();
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        st.success(),
        "Go layers failed: {}",
        stderr_of(&mut child.0)
    );
    assert!(
        out.contains(&layer),
        "Go layers output lacks {layer}: {out}"
    );
    assert!(waited_after < EVENTUALLY);
}

#[test]
fn our_exclusive_lock_blocks_go() {
    go_waits_for_our_lock(false);
}

#[test]
fn our_shared_lock_blocks_go_startup() {
    go_waits_for_our_lock(true);
}

#[test]
fn go_writes_change_our_token() {
    let Some(go) = go() else { return };
    go.create_layer();
    let l = LockFile::open(&go.layers_lock()).unwrap();
    let t0 = l.rlock().unwrap().token().unwrap();
    assert_eq!(t0.as_bytes().len(), 64);
    // A read-only command does not write the token.
    go.run_ok(&["layers"]);
    assert!(!l.rlock().unwrap().modified_since(&t0).unwrap());
    go.create_layer();
    let r = l.rlock().unwrap();
    assert!(
        r.modified_since(&t0).unwrap(),
        "Go's create-layer did not change the token"
    );
    let t1 = r.token().unwrap();
    drop(r);
    let pid = u32::from_le_bytes(t1.as_bytes()[16..20].try_into().unwrap());
    assert_ne!(pid, std::process::id());
    assert_ne!(t1, Token::default());
}

/// Rewrites a JSON array file without the record whose `id` is `drop_id`,
/// keeping the file's mtime, so that only the lock token can tell Go that
/// something changed.
fn remove_record_keep_mtime(path: &Path, drop_id: &str) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let data = std::fs::read(path).unwrap();
    let mut v: Vec<serde_json::Value> = serde_json::from_slice(&data).unwrap();
    let before = v.len();
    v.retain(|rec| rec["id"] != drop_id);
    assert_eq!(v.len() + 1, before);
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(&serde_json::to_vec(&v).unwrap()).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    assert_eq!(std::fs::metadata(path).unwrap().modified().unwrap(), mtime);
}

/// Whether some thread of `pid` is parked opening a FIFO (no partner yet).
fn waiting_for_fifo_partner(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(Result::ok).any(|t| {
                std::fs::read_to_string(t.path().join("wchan"))
                    .is_ok_and(|w| w.contains("wait_for_partner"))
            })
        })
        .unwrap_or(false)
}

/// Go's `set-image-data -f FIFO` loads the image store at start-up (under
/// images.lock), releases the lock, then blocks opening the FIFO; afterwards
/// it takes images.lock again, reloads if the token changed, and saves
/// images.json from its in-memory state. While it waits we delete an image
/// record behind its back (same mtime): the record stays deleted iff Go
/// reloaded, i.e. iff we bumped the token.
fn go_reloads_iff_token_changed(record: bool) -> Option<bool> {
    let go = go()?;
    let layer = go.create_layer();
    let target = go.run_ok(&["create-image", &layer]).trim().to_owned();
    let other = go.run_ok(&["create-image", &layer]).trim().to_owned();
    let fifo = go.graph.parent().unwrap().join("reload.fifo");
    mkfifo(&fifo);
    let child = go
        .cmd(&[
            "set-image-data",
            "-f",
            fifo.to_str().unwrap(),
            &target,
            "key",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let start = Instant::now();
    while !waiting_for_fifo_partner(child.0.id()) {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "Go exited early: {}",
            stderr_of(&mut child.0)
        );
        assert!(
            start.elapsed() < EVENTUALLY,
            "Go never reached the FIFO open"
        );
        thread::sleep(Duration::from_millis(10));
    }
    {
        let l = LockFile::open(&go.graph.join("vfs-images/images.lock")).unwrap();
        let w = l.lock().unwrap();
        if record {
            w.record_write().unwrap();
        }
        remove_record_keep_mtime(&go.graph.join("vfs-images/images.json"), &other);
    }
    let mut writer = open_fifo_writer(&fifo, &mut child.0);
    writer.write_all(b"payload").unwrap();
    drop(writer);
    let st = wait_exit(&mut child.0, EVENTUALLY);
    assert!(
        st.success(),
        "Go set-image-data failed: {}",
        stderr_of(&mut child.0)
    );
    let listed = go.run_ok(&["images"]);
    assert!(listed.contains(&target), "{listed}");
    // After Go's save, `other` is back only if Go did not reload.
    Some(!listed.contains(&other))
}

#[test]
fn our_record_write_makes_go_reload() {
    let Some(reloaded) = go_reloads_iff_token_changed(true) else {
        return;
    };
    assert!(reloaded, "Go did not reload after our record_write");
}

#[test]
fn go_does_not_reload_without_a_token_change() {
    // Control for the test above: same edit, no token bump → Go keeps its
    // cached state (proves the token is what made the difference).
    let Some(reloaded) = go_reloads_iff_token_changed(false) else {
        return;
    };
    assert!(
        !reloaded,
        "Go reloaded although only the token could have told it"
    );
}
