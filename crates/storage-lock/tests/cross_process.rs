//! Cross-process behaviour with our own code on both sides: the child is the
//! `storage-lock-helper` binary of this crate.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use storage_lock::{LockFile, Token};

const HELPER: &str = env!("CARGO_BIN_EXE_storage-lock-helper");
const NOT_YET: Duration = Duration::from_millis(500);
const EVENTUALLY: Duration = Duration::from_secs(10);

fn hex(t: &Token) -> String {
    t.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the helper to completion and returns its single output line.
fn run(mode: &str, path: &Path) -> String {
    let out = Command::new(HELPER).arg(mode).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "helper {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A helper process holding a lock until `release`.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    _stdout: BufReader<ChildStdout>,
}

impl Holder {
    fn start(mode: &str, path: &Path) -> Holder {
        let mut child = Command::new(HELPER)
            .arg(mode)
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked", "helper did not lock");
        Holder {
            child,
            stdin,
            _stdout: stdout,
        }
    }

    fn release(mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"\n");
        }
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Never leave a helper behind (e.g. when an assertion failed).
        drop(self.stdin.take());
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn child_exclusive_lock_blocks_us_until_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("layers.lock");
    let holder = Holder::start("lock", &p);
    let l = LockFile::open(&p).unwrap();
    assert!(l.try_lock().unwrap().is_none());
    assert!(l.try_rlock().unwrap().is_none());

    let (tx, rx) = mpsc::channel();
    let l2 = l.clone();
    let waiter = thread::spawn(move || {
        let g = l2.lock().unwrap();
        tx.send(Instant::now()).unwrap();
        drop(g);
    });
    assert!(
        rx.recv_timeout(NOT_YET).is_err(),
        "lock() returned while the child held it"
    );
    // While our thread waits at the OS level, other threads see it busy too.
    assert!(l.try_rlock().unwrap().is_none());
    let released = Instant::now();
    holder.release();
    let got = rx.recv_timeout(EVENTUALLY).unwrap();
    assert!(got >= released);
    waiter.join().unwrap();
}

#[test]
fn child_shared_lock_admits_our_readers_not_writers() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("images.lock");
    let holder = Holder::start("rlock", &p);
    let l = LockFile::open(&p).unwrap();
    assert!(l.try_rlock().unwrap().is_some());
    assert!(l.try_lock().unwrap().is_none());
    let (tx, rx) = mpsc::channel();
    let l2 = l.clone();
    let waiter = thread::spawn(move || {
        let _g = l2.lock().unwrap();
        tx.send(()).unwrap();
    });
    assert!(rx.recv_timeout(NOT_YET).is_err());
    holder.release();
    rx.recv_timeout(EVENTUALLY).unwrap();
    waiter.join().unwrap();
}

#[test]
fn our_locks_are_seen_by_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("containers.lock");
    let l = LockFile::open(&p).unwrap();
    let w = l.lock().unwrap();
    assert_eq!(run("try-lock", &p), "busy");
    assert_eq!(run("try-rlock", &p), "busy");
    drop(w);
    let r = l.rlock().unwrap();
    assert_eq!(run("try-lock", &p), "busy");
    assert_eq!(run("try-rlock", &p), "acquired");
    drop(r);
    assert_eq!(run("try-lock", &p), "acquired");
}

#[test]
fn tokens_cross_processes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("storage.lock");
    let l = LockFile::open(&p).unwrap();
    let before = l.rlock().unwrap().token().unwrap();
    assert_eq!(before, Token::default());

    let theirs = run("record", &p);
    assert_eq!(theirs.len(), 128);
    let r = l.rlock().unwrap();
    assert!(r.modified_since(&before).unwrap());
    let now = r.token().unwrap();
    assert_eq!(hex(&now), theirs);
    // The child's PID is in bytes 16..20 and differs from ours.
    let pid = u32::from_le_bytes(now.as_bytes()[16..20].try_into().unwrap());
    assert_ne!(pid, std::process::id());
    drop(r);

    let ours = l.lock().unwrap().record_write().unwrap();
    assert_ne!(ours, now);
    assert_eq!(run("token", &p), hex(&ours));
    assert!(!l.rlock().unwrap().modified_since(&ours).unwrap());
}

#[test]
fn lock_of_a_killed_child_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("killed.lock");
    let mut holder = Holder::start("lock", &p);
    let l = LockFile::open(&p).unwrap();
    assert!(l.try_rlock().unwrap().is_none());
    holder.child.kill().unwrap();
    holder.child.wait().unwrap();
    let start = Instant::now();
    let g = l.lock().unwrap();
    assert!(start.elapsed() < EVENTUALLY);
    drop(g);
}
