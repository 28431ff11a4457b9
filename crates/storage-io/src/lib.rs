//! Durable atomic file writes shared by every record store, and confined opens of a
//! layer's files by recorded name ([`confined`]).
//!
//! **Use it for:** replacing a file so that a crash leaves either the old or the new content,
//! and reading a records file whole. **Not for:** record formats, locking, or changing a file
//! in place.
//!
//! Reproduces Go's `ioutils.AtomicWriteFile` protocol, so a
//! reader — ours or Go's — always sees either the old or the new content:
//!
//! 1. create `.tmp-<basename><random digits>` in the target's directory
//!    (`O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC`, mode 0600);
//! 2. write the data;
//! 3. `fdatasync` (skipped when [`WriteOptions::sync`] is false, as Go does for
//!    `volatile-*.json`);
//! 4. record the file's mtime, `fchmod` to the requested mode (umask-proof);
//! 5. close, `rename` over the target, then `fsync` the directory (when syncing).
//!
//! On any error the temporary file is removed and the target is untouched.
//! Leftover `.tmp-*` files from a crash are left alone here (Go never cleans them);
//! [`temp_file_target`] recognizes them for callers that know no writer is alive.
//!
//! Limits: the directory must exist (use [`mkdir_all`]); the target is replaced,
//! never merged; symlinks at the target path are replaced, not followed.
//!
//! ```
//! use storage_io::{atomic_write, mkdir_all, WriteOptions};
//! # fn main() -> std::io::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let store = dir.path().join("vfs-layers");
//! mkdir_all(&store, 0o700)?;
//! let path = store.join("layers.json");
//! atomic_write(&path, b"[]", WriteOptions::default())?;
//! assert_eq!(std::fs::read(&path)?, b"[]");
//!
//! // Streaming variant: nothing is visible until commit().
//! let mut f = storage_io::AtomicFile::create(&path, WriteOptions { mode: 0o600, sync: false })?;
//! std::io::Write::write_all(&mut f, b"[{\"id\":\"x\"}]")?;
//! assert_eq!(std::fs::read(&path)?, b"[]");
//! f.commit()?;
//! assert_eq!(std::fs::read(&path)?, b"[{\"id\":\"x\"}]");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod confined;

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use storage_types::{Error, Result};

/// How [`atomic_write`] / [`AtomicFile`] write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Final permission bits of the file (applied with `fchmod`, so not subject
    /// to the umask). Go uses 0o600 for every store file.
    pub mode: u32,
    /// `fdatasync` the data and `fsync` the directory. Go skips this ("NoSync")
    /// for `volatile-*.json`.
    pub sync: bool,
}

impl Default for WriteOptions {
    /// Mode 0o600, synced.
    fn default() -> Self {
        WriteOptions {
            mode: 0o600,
            sync: true,
        }
    }
}

/// Atomically replaces `path` with `data` (see the crate docs for the protocol).
pub fn atomic_write(path: &Path, data: &[u8], opts: WriteOptions) -> io::Result<()> {
    atomic_write_mtime(path, data, opts).map(|_| ())
}

/// Like [`atomic_write`], returning the modification time of the written file as
/// recorded before the rename (what Go's layer store remembers to detect changes).
pub fn atomic_write_mtime(path: &Path, data: &[u8], opts: WriteOptions) -> io::Result<SystemTime> {
    let mut f = AtomicFile::create(path, opts)?;
    f.write_all(data)?;
    f.commit_with_mtime()
}

/// A file being written atomically: write into it, then [`AtomicFile::commit`].
/// Dropping it without committing removes the temporary file and leaves the
/// target untouched.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
    opts: WriteOptions,
}

impl AtomicFile {
    /// Creates the temporary file `.tmp-<basename><digits>` next to `path`.
    pub fn create(path: &Path, opts: WriteOptions) -> io::Result<Self> {
        let base = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a file path", path.display()),
            )
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        // Go's os.CreateTemp(dir, ".tmp-"+base): the random digits replace the
        // last `*` of the pattern, or are appended when there is none.
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let mut pattern = b".tmp-".to_vec();
        pattern.extend_from_slice(base.as_bytes());
        let (prefix, suffix) = match pattern.iter().rposition(|&b| b == b'*') {
            Some(pos) => (pattern[..pos].to_vec(), pattern[pos + 1..].to_vec()),
            None => (pattern, Vec::new()),
        };
        // Retry on collisions, up to 10000 times, like Go.
        let mut tries = 0;
        loop {
            let mut name = prefix.clone();
            name.extend_from_slice(random_u32().to_string().as_bytes());
            name.extend_from_slice(&suffix);
            let tmp = dir.join(std::ffi::OsString::from_vec(name));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(file) => {
                    return Ok(AtomicFile {
                        file: Some(file),
                        tmp,
                        target: path.to_path_buf(),
                        opts,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 10_000 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The temporary file's path.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Syncs, sets the mode, closes and renames the file over the target.
    pub fn commit(self) -> io::Result<()> {
        self.commit_with_mtime().map(|_| ())
    }

    /// [`AtomicFile::commit`], returning the file's mtime as recorded before the rename.
    pub fn commit_with_mtime(mut self) -> io::Result<SystemTime> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("atomic file already closed"))?;
        let result = finish(file, &self.tmp, &self.target, self.opts);
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        // The temporary name is gone (renamed or removed): nothing left for Drop.
        self.tmp = PathBuf::new();
        result
    }
}

fn finish(file: File, tmp: &Path, target: &Path, opts: WriteOptions) -> io::Result<SystemTime> {
    if opts.sync {
        file.sync_data()?;
    }
    let mtime = file.metadata()?.modified()?;
    file.set_permissions(Permissions::from_mode(opts.mode))?;
    drop(file);
    std::fs::rename(tmp, target)?;
    if opts.sync {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        match File::open(dir).and_then(|d| d.sync_all()) {
            // Some file systems cannot sync directories; the rename is done.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            other => other?,
        }
    }
    Ok(mtime)
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("atomic file already closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// If `name` is the temporary file [`AtomicFile`] (or Go's `AtomicWriteFile`) creates for a
/// target whose base name ends with `suffix` — `.tmp-<base><random digits>` — the target's
/// base name.
///
/// ```
/// use storage_io::temp_file_target;
/// assert_eq!(temp_file_target(b".tmp-a.tar-split.gz3141", b".tar-split.gz"), Some(&b"a.tar-split.gz"[..]));
/// assert_eq!(temp_file_target(b".tmp-a.tar-split.gz", b".tar-split.gz"), None);
/// assert_eq!(temp_file_target(b"a.tar-split.gz7", b".tar-split.gz"), None);
/// ```
pub fn temp_file_target<'a>(name: &'a [u8], suffix: &[u8]) -> Option<&'a [u8]> {
    let rest = name.strip_prefix(b".tmp-")?;
    let digits = rest.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let base = &rest[..rest.len() - digits];
    (digits > 0 && base.ends_with(suffix)).then_some(base)
}

/// Creates `path` and any missing parents with `mode` (subject to the umask),
/// like Go's `os.MkdirAll`; existing directories are left untouched, an existing
/// non-directory fails with `ENOTDIR`.
pub fn mkdir_all(path: &Path, mode: u32) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        Err(_) => {}
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
}

/// Reads and parses a records file (`images.json`, `containers.json`, …) with
/// [`storage_types::parse_records`]; an absent or 0-byte file (or `null`) is an empty
/// list. Errors name the file: `loading <path>: …`.
pub fn load_records<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    match std::fs::read(path) {
        Ok(data) => storage_types::parse_records(&data, path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("open", path, e).context(format!("loading {}", path.display()))),
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        return nanos
            ^ std::process::id().rotate_left(16)
            ^ COUNTER.fetch_add(1, Ordering::Relaxed);
    }
    u32::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_records_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.json");
        assert!(load_records::<i32>(&p).expect("absent").is_empty());
        std::fs::write(&p, b"").expect("write");
        assert!(load_records::<i32>(&p).expect("empty").is_empty());
        std::fs::write(&p, b"null").expect("write");
        assert!(load_records::<i32>(&p).expect("null").is_empty());
        std::fs::write(&p, b"[1,\n2,]").expect("write");
        let e = load_records::<i32>(&p).expect_err("bad json");
        assert_eq!(e.kind(), storage_types::ErrorKind::Corrupt);
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("loading {}: ", p.display())),
            "{msg}"
        );
        assert!(msg.contains("line 2 column"), "{msg}");
        std::fs::write(&p, b"[\"a\xffb\"]").expect("write");
        assert_eq!(
            load_records::<String>(&p).expect("lossy"),
            vec!["a\u{fffd}b".to_owned()]
        );
        // Bad bytes in broken JSON: the error is the parser's for the raw bytes.
        std::fs::write(&p, b"[\"a\xffb\"").expect("write");
        let e = load_records::<String>(&p).expect_err("broken");
        assert_eq!(e.kind(), storage_types::ErrorKind::Corrupt);
        assert!(e.to_string().contains("line 1 column"), "{e}");
    }
}
