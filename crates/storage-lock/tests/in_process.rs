//! In-process behaviour: registry identity, thread exclusion, guards, tokens,
//! read-only lock files, staging helpers.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use storage_lock::{LockError, LockFile, StagingLock, TOKEN_SIZE, TempDir, Token};

const NOT_YET: Duration = Duration::from_millis(300);
const EVENTUALLY: Duration = Duration::from_secs(10);

/// Number of descriptors of this process open on `path`.
fn open_fds(path: &Path) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path))
        .count()
}

/// Lines of /proc/locks that refer to the inode of `path`.
fn proc_locks_for(path: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(path).unwrap().ino();
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    locks
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(5)
                .and_then(|f| f.rsplit(':').next())
                .is_some_and(|i| i == ino.to_string())
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn registry_returns_one_object_per_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.lock");
    let a = LockFile::open(&p).unwrap();
    let b = LockFile::open(&dir.path().join("sub/../a.lock")).unwrap();
    let c = LockFile::open(&dir.path().join("./a.lock")).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(Arc::ptr_eq(&a, &c));
    assert_eq!(a.path(), p);
    assert!(!a.is_read_only());
    let other = LockFile::open(&dir.path().join("b.lock")).unwrap();
    assert!(!Arc::ptr_eq(&a, &other));
    // Like Go, opening creates the file (no lock is taken).
    assert!(p.is_file());
    assert_eq!(open_fds(&p), 0);
    assert!(proc_locks_for(&p).is_empty());
}

#[test]
fn read_only_and_read_write_cannot_mix() {
    let dir = tempfile::tempdir().unwrap();
    let rw = dir.path().join("rw.lock");
    let ro = dir.path().join("ro.lock");
    let _a = LockFile::open(&rw).unwrap();
    let e = LockFile::open_read_only(&rw).unwrap_err();
    assert!(matches!(e, LockError::NotReadOnly { .. }));
    assert_eq!(
        e.to_string(),
        format!("lock \"{}\" is not a read-only lock", rw.display())
    );
    let b = LockFile::open_read_only(&ro).unwrap();
    assert!(b.is_read_only());
    let e = LockFile::open(&ro).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("lock \"{}\" is not a read-write lock", ro.display())
    );
    assert!(Arc::ptr_eq(&b, &LockFile::open_read_only(&ro).unwrap()));
}

#[test]
fn read_only_lock_file_allows_only_shared_locks() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ro/images.lock");
    let l = LockFile::open_read_only(&p).unwrap();
    let e = l.lock().unwrap_err();
    assert!(matches!(e, LockError::ReadOnly { .. }), "{e}");
    assert!(matches!(l.try_lock(), Err(LockError::ReadOnly { .. })));
    let g = l.rlock().unwrap();
    assert!(
        p.exists(),
        "read-only open creates the file like Go (O_CREAT)"
    );
    assert_eq!(g.token().unwrap(), Token::default());
    let g2 = l.try_rlock().unwrap().expect("shared with ourselves");
    drop((g, g2));
    assert_eq!(open_fds(&p), 0);
}

#[test]
fn creates_parent_directories_0700_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x/y/layers.lock");
    let l = LockFile::open(&p).unwrap();
    let g = l.lock().unwrap();
    assert!(p.is_file());
    let mode = std::fs::metadata(dir.path().join("x/y"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let mode = std::fs::metadata(dir.path().join("x"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    drop(g);
}

#[test]
fn open_failure_names_the_path_in_go_words() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let p = file.join("layers.lock"); // parent is a regular file
    let e = LockFile::open(&p).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("open {}: not a directory", p.display())
    );
    assert!(matches!(e, LockError::Open { .. }));

    // A lock file that becomes unopenable after `open`: the failed attempt
    // reports the error and does not wedge the lock object.
    let sub = dir.path().join("sub");
    let q = sub.join("l.lock");
    let l = LockFile::open(&q).unwrap();
    std::fs::remove_dir_all(&sub).unwrap();
    std::fs::write(&sub, b"now a file").unwrap();
    let e = l.lock().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("open {}: not a directory", q.display())
    );
    let e = l.try_rlock().unwrap_err();
    assert!(matches!(e, LockError::Open { .. }));
    // Read-only lock files report open errors at the first lock instead.
    let r = dir.path().join("sub/ro.lock");
    let ro = LockFile::open_read_only(&r).unwrap();
    let e = ro.rlock().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("open {}: not a directory", r.display())
    );
    std::fs::remove_file(&sub).unwrap();
    assert!(ro.try_rlock().unwrap().is_some());
    // Missing again: recreated on the next lock.
    assert!(l.try_lock().unwrap().is_some());
    assert!(q.is_file());
}

#[test]
fn descriptor_lives_exactly_while_held_and_lock_is_visible_in_proc_locks() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.lock");
    let l = LockFile::open(&p).unwrap();
    {
        let _w = l.lock().unwrap();
        assert_eq!(open_fds(&p), 1);
        let locks = proc_locks_for(&p);
        assert_eq!(locks.len(), 1, "{locks:?}");
        assert!(
            locks[0].contains("OFDLCK") && locks[0].contains("WRITE"),
            "{locks:?}"
        );
        assert!(locks[0].contains(" 0 EOF"), "whole file: {locks:?}");
    }
    assert_eq!(open_fds(&p), 0);
    assert!(proc_locks_for(&p).is_empty());
    {
        let _r1 = l.rlock().unwrap();
        let _r2 = l.rlock().unwrap();
        assert_eq!(open_fds(&p), 1, "one descriptor for all holders");
        let locks = proc_locks_for(&p);
        assert_eq!(locks.len(), 1, "{locks:?}");
        assert!(locks[0].contains("READ"), "{locks:?}");
    }
    assert_eq!(open_fds(&p), 0);
}

#[test]
fn exclusive_excludes_other_threads_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let l = LockFile::open(&dir.path().join("x.lock")).unwrap();
    let w = l.lock().unwrap();
    assert!(l.try_lock().unwrap().is_none());
    assert!(l.try_rlock().unwrap().is_none());

    let (tx, rx) = mpsc::channel();
    let l2 = l.clone();
    let t1 = thread::spawn({
        let tx = tx.clone();
        move || {
            let g = l2.lock().unwrap();
            tx.send("write").unwrap();
            drop(g);
        }
    });
    let l3 = l.clone();
    let t2 = thread::spawn(move || {
        let g = l3.rlock().unwrap();
        tx.send("read").unwrap();
        drop(g);
    });
    assert!(
        rx.recv_timeout(NOT_YET).is_err(),
        "a waiter got in while the lock was held"
    );
    drop(w);
    let mut got = vec![
        rx.recv_timeout(EVENTUALLY).unwrap(),
        rx.recv_timeout(EVENTUALLY).unwrap(),
    ];
    got.sort_unstable();
    assert_eq!(got, ["read", "write"]);
    t1.join().unwrap();
    t2.join().unwrap();
    assert!(l.try_lock().unwrap().is_some());
}

#[test]
fn shared_holders_coexist_and_block_writers() {
    let dir = tempfile::tempdir().unwrap();
    let l = LockFile::open(&dir.path().join("s.lock")).unwrap();
    let r = l.rlock().unwrap();
    // Another thread can share it at once.
    let l2 = l.clone();
    let shared = thread::spawn(move || {
        let start = Instant::now();
        let g = l2.rlock().unwrap();
        let waited = start.elapsed();
        drop(g);
        waited
    })
    .join()
    .unwrap();
    assert!(shared < NOT_YET, "shared lock waited {shared:?}");
    assert!(l.try_rlock().unwrap().is_some());
    assert!(l.try_lock().unwrap().is_none());

    let (tx, rx) = mpsc::channel();
    let l3 = l.clone();
    let writer = thread::spawn(move || {
        let _g = l3.lock().unwrap();
        tx.send(()).unwrap();
    });
    assert!(
        rx.recv_timeout(NOT_YET).is_err(),
        "writer got in while shared"
    );
    drop(r);
    rx.recv_timeout(EVENTUALLY).unwrap();
    writer.join().unwrap();
}

#[test]
fn many_threads_never_overlap_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let l = LockFile::open(&dir.path().join("stress.lock")).unwrap();
    let writers = Arc::new(AtomicUsize::new(0));
    let readers = Arc::new(AtomicUsize::new(0));
    let max_readers = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (l, w, r, m, b) = (
                l.clone(),
                writers.clone(),
                readers.clone(),
                max_readers.clone(),
                barrier.clone(),
            );
            thread::spawn(move || {
                b.wait();
                for n in 0..40 {
                    if (i + n) % 3 == 0 {
                        let _g = l.lock().unwrap();
                        assert_eq!(w.fetch_add(1, Ordering::SeqCst), 0);
                        assert_eq!(r.load(Ordering::SeqCst), 0);
                        thread::sleep(Duration::from_micros(200));
                        w.fetch_sub(1, Ordering::SeqCst);
                    } else {
                        let _g = l.rlock().unwrap();
                        let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                        m.fetch_max(now, Ordering::SeqCst);
                        assert_eq!(w.load(Ordering::SeqCst), 0);
                        thread::sleep(Duration::from_micros(500));
                        r.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(
        max_readers.load(Ordering::SeqCst) >= 2,
        "readers never shared"
    );
}

#[test]
fn guards_are_send_and_can_be_released_on_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let l = LockFile::open(&dir.path().join("send.lock")).unwrap();
    let g = l.lock().unwrap();
    thread::spawn(move || drop(g)).join().unwrap();
    assert!(l.try_lock().unwrap().is_some());
}

#[test]
fn tokens_roundtrip_and_detect_changes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.lock");
    let l = LockFile::open(&p).unwrap();
    let w = l.lock().unwrap();
    // Brand-new file: empty token.
    let empty = w.token().unwrap();
    assert_eq!(empty, Token::default());
    assert!(!w.modified_since(&empty).unwrap());
    let t1 = w.record_write().unwrap();
    assert_eq!(t1.as_bytes().len(), TOKEN_SIZE);
    assert_eq!(w.token().unwrap(), t1);
    assert!(w.modified_since(&empty).unwrap());
    assert!(!w.modified_since(&t1).unwrap());
    let t2 = w.record_write().unwrap();
    assert_ne!(t1, t2);
    assert!(w.modified_since(&t1).unwrap());
    drop(w);
    // Visible on disk and to a reader.
    assert_eq!(std::fs::read(&p).unwrap(), t2.as_bytes());
    let r = l.rlock().unwrap();
    assert_eq!(r.token().unwrap(), t2);
    assert!(!r.modified_since(&t2).unwrap());
    assert_eq!(r.lock_file().path(), p);
}

#[test]
fn token_short_read_is_a_distinct_state_and_write_does_not_truncate() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("short.lock");
    std::fs::write(&p, b"0123456789").unwrap();
    let l = LockFile::open(&p).unwrap();
    let w = l.lock().unwrap();
    let short = w.token().unwrap();
    assert_eq!(short.as_bytes(), b"0123456789");
    assert_ne!(short, Token::default());
    assert!(w.modified_since(&Token::default()).unwrap());
    drop(w);

    let long: Vec<u8> = (0..100u8).collect();
    std::fs::write(&p, &long).unwrap();
    let w = l.lock().unwrap();
    assert_eq!(w.token().unwrap().as_bytes(), &long[..64]);
    let t = w.record_write().unwrap();
    drop(w);
    let on_disk = std::fs::read(&p).unwrap();
    assert_eq!(on_disk.len(), 100, "token write must not truncate");
    assert_eq!(&on_disk[..64], t.as_bytes());
    assert_eq!(&on_disk[64..], &long[64..]);
}

#[test]
fn lock_is_an_os_level_lock_other_descriptors_see() {
    // A second open file description (here: a staging lock on the same path)
    // conflicts exactly like another process would.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("os.lock");
    let l = LockFile::open(&p).unwrap();
    let r = l.rlock().unwrap();
    assert!(StagingLock::try_acquire(&p).unwrap().is_none());
    drop(r);
    let s = StagingLock::try_acquire(&p).unwrap().expect("free now");
    assert!(l.try_rlock().unwrap().is_none());
    assert!(l.try_lock().unwrap().is_none());
    drop(s);
    assert!(l.try_lock().unwrap().is_some());
}

#[test]
fn staging_lock_create_try_acquire_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = StagingLock::create(dir.path(), "lock-").unwrap();
    let name = s.path().file_name().unwrap().to_str().unwrap().to_owned();
    let digits = name.strip_prefix("lock-").unwrap();
    assert!(
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        "{name}"
    );
    let mode = std::fs::metadata(s.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(StagingLock::try_acquire(s.path()).unwrap().is_none());
    let path = s.path().to_path_buf();
    s.unlock_and_delete().unwrap();
    assert!(!path.exists());
}

#[test]
fn temp_dir_stages_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("vfs-layers/tmp");
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("f"), b"data").unwrap();
    let file_victim = dir.path().join("abc.tar-split.gz");
    std::fs::write(&file_victim, b"x").unwrap();

    let mut td = TempDir::new(&root).unwrap();
    let staged = td.path().to_path_buf();
    let id = staged
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .strip_prefix("temp-dir-")
        .unwrap()
        .to_owned();
    let lock_path = root.join(format!("lock-{id}"));
    assert!(lock_path.is_file());
    assert_eq!(
        std::fs::metadata(&staged).unwrap().permissions().mode() & 0o777,
        0o700
    );
    td.stage_deletion(&victim).unwrap();
    td.stage_deletion(&file_victim).unwrap();
    assert!(!victim.exists());
    assert!(staged.join("0-victim/f").is_file());
    assert!(staged.join("1-abc.tar-split.gz").is_file());
    // Alive: recovery must leave it alone.
    storage_lock::recover_stale_dirs(&root).unwrap();
    assert!(staged.join("0-victim/f").is_file());
    td.cleanup().unwrap();
    assert!(!staged.exists());
    assert!(!lock_path.exists());
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}

#[test]
fn staging_errors_name_paths() {
    let dir = tempfile::tempdir().unwrap();
    let mut td = TempDir::new(dir.path()).unwrap();
    let missing = dir.path().join("missing");
    let e = td.stage_deletion(&missing).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "rename {} {}/0-missing: ",
            missing.display(),
            td.path().display()
        )) && msg.ends_with("no such file or directory"),
        "{msg}"
    );
}

#[test]
fn recover_stale_dirs_removes_only_abandoned_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Abandoned by a crashed process: both present, nobody holds the lock.
    std::fs::create_dir_all(root.join("temp-dir-111/0-x/y")).unwrap();
    std::fs::write(root.join("lock-111"), b"").unwrap();
    // Lock file lost: Go creates it, locks it, deletes both.
    std::fs::create_dir(root.join("temp-dir-222")).unwrap();
    // Lone lock file.
    std::fs::write(root.join("lock-333"), b"").unwrap();
    // Alive (held by "someone": here another descriptor of this process).
    std::fs::create_dir(root.join("temp-dir-444")).unwrap();
    let held = StagingLock::try_acquire(&root.join("lock-444"))
        .unwrap()
        .unwrap();
    // Unrelated entries stay.
    std::fs::write(root.join("other"), b"").unwrap();

    storage_lock::recover_stale_dirs(root).unwrap();
    let mut left: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["lock-444", "other", "temp-dir-444"]);
    drop(held);
    storage_lock::recover_stale_dirs(root).unwrap();
    assert!(!root.join("temp-dir-444").exists());
    assert!(!root.join("lock-444").exists());
    // Missing root is fine.
    storage_lock::recover_stale_dirs(&root.join("nope")).unwrap();
}

/// Stale pairs whose `<x>` is not UTF-8 are removed too (a lossy name conversion
/// used to miss them), and odd lock paths are errors naming the path.
#[test]
fn recover_stale_dirs_handles_non_utf8_names_and_odd_paths_fail_cleanly() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let name = |prefix: &[u8]| {
        let mut n = prefix.to_vec();
        n.extend_from_slice(b"\xff\xfe");
        root.join(std::ffi::OsStr::from_bytes(&n))
    };
    std::fs::create_dir_all(name(b"temp-dir-").join("0-x")).unwrap();
    std::fs::write(name(b"lock-"), b"").unwrap();
    storage_lock::recover_stale_dirs(root).unwrap();
    assert_eq!(std::fs::read_dir(root).unwrap().count(), 0);

    let sub = root.join("a-dir");
    std::fs::create_dir(&sub).unwrap();
    let e = LockFile::open(&sub).expect_err("a directory is no lock file");
    assert!(e.to_string().contains("a-dir"), "{e}");
    let e = LockFile::open(std::path::Path::new(std::ffi::OsStr::from_bytes(
        b"/tmp/a\0b",
    )))
    .expect_err("NUL in a lock path");
    assert!(e.to_string().contains("invalid argument"), "{e}");
}
