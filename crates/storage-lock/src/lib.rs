//! Lock files that interlock with Go `containers/storage` processes sharing
//! the same store (podman, buildah, CRI-O, Go's `containers-storage`).
//!
//! **Use it for:** any lock on a store file that must exclude Go processes too, and the
//! last-writer tokens that tell a process another one wrote. **Not for:** knowing what a lock
//! protects or in which order locks are taken: that belongs to the stores and the `Store`.
//!
//! # What this crate does
//!
//! * [`LockFile`]: a whole-file fcntl record lock (`F_OFD_SETLKW` /
//!   `F_OFD_SETLK`, `l_whence = SEEK_SET`, start 0, len 0), shared
//!   ([`LockFile::rlock`]) or exclusive ([`LockFile::lock`]), blocking or
//!   non-blocking (`try_*`). Linux open-file-description locks conflict with
//!   the classic POSIX locks Go takes (`F_SETLKW`), so Go and this crate
//!   exclude each other. `flock(2)` is never used (it does not exclude Go).
//! * One lock object per absolute path per process: [`LockFile::open`] twice
//!   for one path returns the same [`Arc`]; asking for a path read-write and
//!   read-only is an error (same words as Go). Threads of this process exclude
//!   each other exactly like two processes do (an in-process reader/writer
//!   gate in front of the file lock).
//! * The 64-byte *last-writer token* at offset 0 of the lock file
//!   ([`WriteGuard::record_write`], [`ReadGuard::token`],
//!   [`ReadGuard::modified_since`]): bytes 0–7 little-endian Unix nanoseconds,
//!   8–15 little-endian per-process counter, 16–19 little-endian PID, 20–63
//!   random; written with one `pwrite` (no truncation, no fsync), read with one
//!   64-byte `pread` (a short read is a valid, distinct state). Only byte
//!   equality matters.
//! * [`StagingLock`], [`TempDir`] and [`recover_stale_dirs`]: the
//!   deferred-deletion staging pattern of containers/storage ≥ 1.59
//!   (`lock-<x>` held with a non-blocking exclusive lock while `temp-dir-<x>`
//!   is in use; any process that can take the lock deletes both).
//!
//! # Descriptor lifetime (the rule that keeps Go's locks intact)
//!
//! The descriptor of a [`LockFile`] is opened (Go's flags:
//! `O_RDWR|O_CREAT|O_CLOEXEC, 0644`, or `O_RDONLY|O_CREAT|O_CLOEXEC` for
//! read-only lock files; on `ENOENT` the parent directories are created with
//! mode 0700 and the open retried) when the first holder arrives and is
//! unlocked (`F_UNLCK`) and closed when the last holder leaves, like Go
//! (which also opens and closes the file once in `open`, before anybody can
//! hold it, to create it and report errors early — so do we). No second
//! descriptor is ever opened on a lock file while it is held. Because the
//! locks are OFD locks, closing some *other* descriptor of the same file (e.g.
//! `std::fs::read` of a lock file elsewhere in the process) does not drop our
//! lock — but do not do it anyway.
//!
//! # Limits
//!
//! * Linux only (OFD locks).
//! * Like Go's `sync.RWMutex`, the gate is not re-entrant: a thread that holds
//!   a lock and asks for it again exclusively (or asks shared while it holds it
//!   exclusively) deadlocks. Shared-while-shared from one thread works (new
//!   readers are admitted while readers hold the lock; writers are not
//!   preferred).
//! * [`LockFile::lock`] on a read-only lock file is an error (Go panics).
//! * The lock is advisory: it only excludes cooperating processes.
//! * All `unsafe` (open(2), fcntl(2)) lives in the small private `sys` module; the
//!   rest of the crate is checked by `#![deny(unsafe_code)]`.
//! * Errors: OS errors are rendered the way Go prints them
//!   (`open /x/layers.lock: permission denied`).
//!
//! # Example
//!
//! ```
//! use storage_lock::LockFile;
//!
//! # fn main() -> Result<(), storage_lock::LockError> {
//! let dir = tempfile::tempdir().expect("tempdir");
//! let path = dir.path().join("vfs-layers/layers.lock");
//! let lock = LockFile::open(&path)?; // creates the file (and vfs-layers/, 0700)
//! assert!(path.exists());
//! assert!(std::sync::Arc::ptr_eq(&lock, &LockFile::open(&path)?));
//!
//! // Writer: take the lock exclusively, bump the token before writing data.
//! let written = {
//!     let w = lock.lock()?;
//!     let token = w.record_write()?;
//!     // ... atomically replace layers.json here ...
//!     token
//! }; // unlocked on drop
//!
//! // Reader: shared lock; reload cached state only if somebody wrote since.
//! let r = lock.rlock()?;
//! assert!(!r.modified_since(&written)?);
//! assert!(lock.try_lock()?.is_none()); // a writer cannot get in meanwhile
//! drop(r);
//! assert!(lock.try_lock()?.is_some());
//! # Ok(())
//! # }
//! ```
//!
//! # How a store uses it
//!
//! * **Reader**: `rlock()` → compare the token remembered at the last
//!   load/save with [`ReadGuard::modified_since`] (layer stores also compare
//!   the mtimes of their JSON files) → reload if stale and remember
//!   [`ReadGuard::token`] → serve from memory → drop the guard.
//! * **Writer**: `lock()` → same freshness check → mutate →
//!   [`WriteGuard::record_write`] **before** atomically replacing the data
//!   files; remember the returned token so your own write does not look like
//!   a foreign one → drop the guard.
//! * Lock order (never take an earlier one while holding a later one):
//!   `userns.lock` → `storage.lock` → `layers.lock` (graph root, then image
//!   store) → `mountpoints.lock` → staging locks → read-only layer stores →
//!   `images.lock` → other image stores → `containers.lock`.
//! * Hold locks briefly: Go takes `layers.lock`, `images.lock`,
//!   `containers.lock` and `storage.lock` *exclusively* just to open a store,
//!   so even a shared lock held here stalls every Go process starting up.
//! * Deferred deletion: create a [`TempDir`] under `<G>/<drv>-layers/tmp` (or
//!   a driver's `tempdirs`) while holding the layer lock, move doomed data
//!   into it with [`TempDir::stage_deletion`], drop/`cleanup` it after all
//!   store locks are released; call [`recover_stale_dirs`] when loading a
//!   read-write layer store.
//!
//! ```
//! use storage_lock::{recover_stale_dirs, TempDir};
//!
//! # fn main() -> Result<(), storage_lock::LockError> {
//! let graph = tempfile::tempdir().expect("tempdir");
//! let tmp_root = graph.path().join("vfs-layers/tmp");
//! let doomed = graph.path().join("layer-data");
//! std::fs::create_dir(&doomed).expect("mkdir");
//!
//! let mut staging = TempDir::new(&tmp_root)?; // lock-<x> held + temp-dir-<x>
//! staging.stage_deletion(&doomed)?;           // renamed to temp-dir-<x>/0-layer-data
//! recover_stale_dirs(&tmp_root)?;             // ours is alive: left alone
//! assert!(staging.path().join("0-layer-data").exists());
//! staging.cleanup()?;                         // removes both
//! assert_eq!(std::fs::read_dir(&tmp_root).expect("readdir").count(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Tests
//!
//! `tests/in_process.rs` (threads, registry, tokens, staging),
//! `tests/cross_process.rs` (against the `storage-lock-helper` binary of this
//! crate, a test helper) and `tests/go_interop.rs` (against Go's
//! `containers-storage`, `$CONTAINERS_STORAGE_GO` or
//! `/usr/bin/containers-storage`, as root; missing peer → skip with a message,
//! or failure when `CI=true`).
#![deny(missing_docs)]
// `unsafe` is allowed only in `sys`, the module that talks to the kernel.
#![deny(unsafe_code)]

mod staging;
#[allow(unsafe_code)]
mod sys;

pub use staging::{StagingLock, TempDir, recover_stale_dirs};

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Size of the last-writer token stored at offset 0 of every lock file.
pub const TOKEN_SIZE: usize = 64;

/// Renders an OS error the way Go's `syscall.Errno.Error()` does
/// ("no such file or directory", not "No such file or directory (os error 2)").
struct GoErr<'a>(&'a io::Error);

impl fmt::Display for GoErr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.raw_os_error() {
            Some(code) => {
                let text = self.0.to_string();
                let suffix = format!(" (os error {code})");
                let text = text.strip_suffix(&suffix).unwrap_or(&text);
                let mut chars = text.chars();
                match chars.next() {
                    Some(first) => {
                        write!(f, "{}{}", first.to_lowercase(), chars.as_str())
                    }
                    None => write!(f, "errno {code}"),
                }
            }
            None => write!(f, "{}", self.0),
        }
    }
}

/// Errors of this crate. `Display` names the lock file and renders OS errors
/// in Go's words.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Opening (or creating) the lock file, or its parent directory, failed.
    #[error("open {}: {}", .path.display(), GoErr(.source))]
    Open {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The fcntl lock operation failed with an unexpected error.
    #[error("lock {}: {}", .path.display(), GoErr(.source))]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Reading the last-writer token failed.
    #[error("read {}: {}", .path.display(), GoErr(.source))]
    ReadToken {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Writing the last-writer token failed (a short write reports
    /// "no space left on device", as Go does).
    #[error("write {}: {}", .path.display(), GoErr(.source))]
    WriteToken {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The path is already open read-write in this process and was asked for
    /// read-only.
    #[error("lock \"{}\" is not a read-only lock", .path.display())]
    NotReadOnly {
        /// The lock file.
        path: PathBuf,
    },
    /// The path is already open read-only in this process and was asked for
    /// read-write.
    #[error("lock \"{}\" is not a read-write lock", .path.display())]
    NotReadWrite {
        /// The lock file.
        path: PathBuf,
    },
    /// An exclusive lock was requested on a read-only lock file.
    #[error("can't take write lock on read-only lock file {}", .path.display())]
    ReadOnly {
        /// The lock file.
        path: PathBuf,
    },
    /// A file-system operation of the staging helpers failed
    /// (`"<op> <path>: <os error>"`).
    #[error("{op} {}: {}", .path.display(), GoErr(.source))]
    Io {
        /// Operation name as Go's `os.PathError` prints it (`mkdir`, `remove`, …).
        op: &'static str,
        /// The path operated on.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Renaming into a staging directory failed (`"rename <from> <to>: <os error>"`).
    #[error("rename {} {}: {}", .from.display(), .to.display(), GoErr(.source))]
    Rename {
        /// Source path.
        from: PathBuf,
        /// Destination path.
        to: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl LockError {
    /// The underlying OS error, if any.
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            LockError::Open { source, .. }
            | LockError::Lock { source, .. }
            | LockError::ReadToken { source, .. }
            | LockError::WriteToken { source, .. }
            | LockError::Io { source, .. }
            | LockError::Rename { source, .. } => Some(source),
            LockError::NotReadOnly { .. }
            | LockError::NotReadWrite { .. }
            | LockError::ReadOnly { .. } => None,
        }
    }
}

/// The last-writer token read from (or written to) a lock file: up to
/// [`TOKEN_SIZE`] opaque bytes. Two tokens are equal iff their bytes are; the
/// empty token (`Token::default()`) is what a brand-new, empty lock file holds.
#[derive(Clone, PartialEq, Eq, Default, Hash)]
pub struct Token(Vec<u8>);

impl Token {
    /// The raw bytes (at most [`TOKEN_SIZE`]).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A fresh, unique token in Go's 1.42+ layout.
    fn generate() -> io::Result<Token> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let mut bytes = vec![0u8; TOKEN_SIZE];
        bytes[0..8].copy_from_slice(&nanos.to_le_bytes());
        bytes[8..16].copy_from_slice(&counter.to_le_bytes());
        bytes[16..20].copy_from_slice(&std::process::id().to_le_bytes());
        getrandom::fill(&mut bytes[20..]).map_err(rand_err)?;
        Ok(Token(bytes))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// Converts a `getrandom` failure into an I/O error.
pub(crate) fn rand_err(e: getrandom::Error) -> io::Error {
    e.raw_os_error()
        .map(io::Error::from_raw_os_error)
        .unwrap_or_else(|| io::Error::other(e.to_string()))
}

/// State of the OS-level lock of one [`LockFile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Os {
    /// No descriptor open, nobody holds or waits at the OS level.
    Unlocked,
    /// One thread is opening the file / waiting for the OS lock.
    Acquiring,
    /// Held shared by `State::readers` guards.
    Shared,
    /// Held exclusively by one guard.
    Exclusive,
}

struct State {
    os: Os,
    readers: usize,
    file: Option<File>,
}

/// A lock file shared with Go processes (see the crate docs). Obtain it with
/// [`LockFile::open`] / [`LockFile::open_read_only`]; lock it with the methods
/// that return guards, which unlock on drop.
pub struct LockFile {
    path: PathBuf,
    read_only: bool,
    state: Mutex<State>,
    cond: Condvar,
}

impl fmt::Debug for LockFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockFile")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

type Registry = Mutex<HashMap<PathBuf, Weak<LockFile>>>;
static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of our mutexes cannot leave the state
    // inconsistent in a way that matters more than deadlocking would.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `filepath.Abs`: make `path` absolute (against the current directory) and
/// clean it lexically (no symlink resolution).
fn absolute_clean(path: &Path) -> io::Result<PathBuf> {
    let joined;
    let path = if path.is_absolute() {
        path
    } else {
        joined = std::env::current_dir()?.join(path);
        &joined
    };
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

impl LockFile {
    /// The process-wide read-write lock object for `path`. The first call for
    /// a path opens the file once to check it is usable (creating it, mode
    /// 0644, and missing parent directories, mode 0700), as Go does.
    pub fn open(path: &Path) -> Result<Arc<LockFile>, LockError> {
        Self::get(path, false)
    }

    /// The process-wide read-only lock object for `path` (for additional,
    /// read-only stores): only shared locks can be taken. Like Go, the file is
    /// created if missing (`O_RDONLY|O_CREAT`); unlike Go, a failure to open
    /// it (e.g. `EROFS`) is reported by the first lock attempt, not here.
    pub fn open_read_only(path: &Path) -> Result<Arc<LockFile>, LockError> {
        Self::get(path, true)
    }

    fn get(path: &Path, read_only: bool) -> Result<Arc<LockFile>, LockError> {
        let clean = absolute_clean(path).map_err(|source| LockError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reg = relock(&REGISTRY);
        if let Some(existing) = reg.get(&clean).and_then(Weak::upgrade) {
            return match (existing.read_only, read_only) {
                (false, true) => Err(LockError::NotReadOnly { path: clean }),
                (true, false) => Err(LockError::NotReadWrite { path: clean }),
                _ => Ok(existing),
            };
        }
        // Forget entries nobody uses any more (no holder can exist for them:
        // every guard keeps its LockFile alive).
        reg.retain(|_, w| w.strong_count() > 0);
        let lf = Arc::new(LockFile {
            path: clean.clone(),
            read_only,
            state: Mutex::new(State {
                os: Os::Unlocked,
                readers: 0,
                file: None,
            }),
            cond: Condvar::new(),
        });
        // Like Go, check right away that the file can be opened (this creates
        // it and its parent directories); the descriptor used for locking is
        // opened again by the first holder. Closing this one cannot drop any
        // lock: nobody holds this new object yet, and OFD locks belong to
        // their own open file description anyway.
        // For read-only lock files (additional stores, possibly on a
        // read-only file system) an error here is not fatal: the same error is
        // reported by the first `rlock`, where callers already handle it
        // (e.g. skip a store whose images.lock fails with EROFS).
        match lf.open_file() {
            Ok(file) => drop(file),
            Err(e) if !read_only => return Err(e),
            Err(_) => {}
        }
        reg.insert(clean, Arc::downgrade(&lf));
        Ok(lf)
    }

    /// The absolute, lexically cleaned path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this lock file was opened with [`LockFile::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Takes the lock exclusively, waiting for other threads and processes.
    pub fn lock(self: &Arc<Self>) -> Result<WriteGuard, LockError> {
        self.check_writable()?;
        self.acquire(sys::Kind::Exclusive, true)?;
        Ok(WriteGuard { lock: self.clone() })
    }

    /// Takes the lock shared, waiting for writers (threads or processes).
    pub fn rlock(self: &Arc<Self>) -> Result<ReadGuard, LockError> {
        self.acquire(sys::Kind::Shared, true)?;
        Ok(ReadGuard { lock: self.clone() })
    }

    /// Takes the lock exclusively if that is possible without waiting.
    pub fn try_lock(self: &Arc<Self>) -> Result<Option<WriteGuard>, LockError> {
        self.check_writable()?;
        Ok(self
            .acquire(sys::Kind::Exclusive, false)?
            .then(|| WriteGuard { lock: self.clone() }))
    }

    /// Takes the lock shared if that is possible without waiting.
    pub fn try_rlock(self: &Arc<Self>) -> Result<Option<ReadGuard>, LockError> {
        Ok(self
            .acquire(sys::Kind::Shared, false)?
            .then(|| ReadGuard { lock: self.clone() }))
    }

    fn check_writable(&self) -> Result<(), LockError> {
        if self.read_only {
            return Err(LockError::ReadOnly {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// In-process gate + OS lock. Returns `Ok(false)` only when `wait` is
    /// false and the lock is busy.
    fn acquire(&self, kind: sys::Kind, wait: bool) -> Result<bool, LockError> {
        let mut st = relock(&self.state);
        let mut logged = false;
        loop {
            match (st.os, kind) {
                (Os::Shared, sys::Kind::Shared) => {
                    st.readers += 1;
                    return Ok(true);
                }
                (Os::Unlocked, _) => break,
                _ if !wait => return Ok(false),
                _ => {
                    if !logged {
                        tracing::debug!(path = %self.path.display(), "waiting for lock held by another thread of this process");
                        logged = true;
                    }
                    st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
        // We own the transition out of Unlocked: do the (possibly slow) OS
        // work without holding the state mutex.
        st.os = Os::Acquiring;
        drop(st);
        let result = self.acquire_os(kind, wait);
        let mut st = relock(&self.state);
        let got = match result {
            Ok(Some(file)) => {
                st.file = Some(file);
                match kind {
                    sys::Kind::Shared => {
                        st.os = Os::Shared;
                        st.readers = 1;
                    }
                    sys::Kind::Exclusive => st.os = Os::Exclusive,
                }
                Ok(true)
            }
            Ok(None) => {
                st.os = Os::Unlocked;
                Ok(false)
            }
            Err(e) => {
                st.os = Os::Unlocked;
                Err(e)
            }
        };
        drop(st);
        self.cond.notify_all();
        got
    }

    fn open_file(&self) -> Result<File, LockError> {
        let flags = if self.read_only {
            libc::O_RDONLY | libc::O_CREAT
        } else {
            libc::O_RDWR | libc::O_CREAT
        };
        let open_err = |source| LockError::Open {
            path: self.path.clone(),
            source,
        };
        match sys::open(&self.path, flags, 0o644) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = self.path.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(parent)
                        .map_err(open_err)?;
                }
                sys::open(&self.path, flags, 0o644).map_err(open_err)
            }
            Err(e) => Err(open_err(e)),
        }
    }

    fn acquire_os(&self, kind: sys::Kind, wait: bool) -> Result<Option<File>, LockError> {
        let file = self.open_file()?;
        let lock_err = |source| LockError::Lock {
            path: self.path.clone(),
            source,
        };
        if sys::lock_try(&file, kind).map_err(lock_err)? {
            return Ok(Some(file));
        }
        if !wait {
            return Ok(None);
        }
        tracing::debug!(path = %self.path.display(), ?kind, "waiting for lock held by another process");
        loop {
            match sys::lock_wait(&file, kind) {
                Ok(()) => return Ok(Some(file)),
                // Transient conditions Go also retries (after 10 ms).
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOLCK) | Some(libc::EDEADLK)) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(lock_err(e)),
            }
        }
    }

    fn release(&self, kind: sys::Kind) {
        let mut st = relock(&self.state);
        let last = match kind {
            sys::Kind::Exclusive => true,
            sys::Kind::Shared => {
                st.readers = st.readers.saturating_sub(1);
                st.readers == 0
            }
        };
        if last {
            if let Some(file) = st.file.take() {
                // Explicit unlock so that a copy of the descriptor inherited by
                // a child between fork and exec cannot keep the lock alive;
                // closing releases it anyway, so an error here changes nothing.
                let _ = sys::unlock(&file);
                drop(file);
            }
            st.os = Os::Unlocked;
            drop(st);
            self.cond.notify_all();
        }
    }

    fn read_token(&self) -> Result<Token, LockError> {
        let st = relock(&self.state);
        let err = |source| LockError::ReadToken {
            path: self.path.clone(),
            source,
        };
        let file = st
            .file
            .as_ref()
            .ok_or_else(|| err(io::Error::from_raw_os_error(libc::EBADF)))?;
        let mut buf = vec![0u8; TOKEN_SIZE];
        let n = loop {
            match file.read_at(&mut buf, 0) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(err(e)),
            }
        };
        buf.truncate(n);
        Ok(Token(buf))
    }

    fn write_token(&self) -> Result<Token, LockError> {
        let st = relock(&self.state);
        let err = |source| LockError::WriteToken {
            path: self.path.clone(),
            source,
        };
        let file = st
            .file
            .as_ref()
            .ok_or_else(|| err(io::Error::from_raw_os_error(libc::EBADF)))?;
        let token = Token::generate().map_err(err)?;
        let n = loop {
            match file.write_at(&token.0, 0) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(err(e)),
            }
        };
        if n != TOKEN_SIZE {
            return Err(err(io::Error::from_raw_os_error(libc::ENOSPC)));
        }
        Ok(token)
    }
}

/// An exclusive hold on a [`LockFile`]; unlocks (and closes the descriptor)
/// on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct WriteGuard {
    lock: Arc<LockFile>,
}

impl WriteGuard {
    /// Writes a fresh unique 64-byte token at offset 0 and returns it.
    /// Call it **before** replacing the files the lock protects.
    pub fn record_write(&self) -> Result<Token, LockError> {
        self.lock.write_token()
    }

    /// The token currently stored in the lock file.
    pub fn token(&self) -> Result<Token, LockError> {
        self.lock.read_token()
    }

    /// Whether the stored token differs from `last` (byte comparison).
    pub fn modified_since(&self, last: &Token) -> Result<bool, LockError> {
        Ok(self.lock.read_token()? != *last)
    }

    /// The lock file this guard holds.
    pub fn lock_file(&self) -> &Arc<LockFile> {
        &self.lock
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        self.lock.release(sys::Kind::Exclusive);
    }
}

impl fmt::Debug for WriteGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WriteGuard").field(&self.lock.path).finish()
    }
}

/// A shared hold on a [`LockFile`]; the last reader unlocks (and closes the
/// descriptor) on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ReadGuard {
    lock: Arc<LockFile>,
}

impl ReadGuard {
    /// The token currently stored in the lock file.
    pub fn token(&self) -> Result<Token, LockError> {
        self.lock.read_token()
    }

    /// Whether the stored token differs from `last` (byte comparison).
    pub fn modified_since(&self, last: &Token) -> Result<bool, LockError> {
        Ok(self.lock.read_token()? != *last)
    }

    /// The lock file this guard holds.
    pub fn lock_file(&self) -> &Arc<LockFile> {
        &self.lock
    }
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        self.lock.release(sys::Kind::Shared);
    }
}

impl fmt::Debug for ReadGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReadGuard").field(&self.lock.path).finish()
    }
}

#[cfg(test)]
mod tests;
