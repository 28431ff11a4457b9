//! The files of a record store besides its records file: per-record directories and
//! big-data items, and the errors the stores share.

use std::path::{Path, PathBuf};

use storage_types::{Error, ErrorKind, Result, go_quote};

/// A lock-file error as the stores report it.
pub fn lock_error(err: storage_lock::LockError) -> Error {
    Error::msg(ErrorKind::Io, err.to_string())
}

/// Refuses an ID that is not a single path component (Go does not check; a `/` or `..`
/// would let a record's directory escape the store): `<what> ID "x" cannot be used as a
/// directory name`.
pub fn check_id(what: &str, id: &str) -> Result<()> {
    if storage_types::is_path_component(id) {
        return Ok(());
    }
    Err(Error::msg(
        ErrorKind::InvalidInput,
        format!(
            "{what} ID {} cannot be used as a directory name",
            go_quote(id)
        ),
    ))
}

/// The ID of a new record: the requested one ([`ErrorKind::DuplicateId`] when `taken`),
/// else (`None` or empty) a fresh one not `taken`; either way a single path component.
pub fn new_id(
    what: &str,
    requested: Option<String>,
    taken: impl Fn(&str) -> bool,
) -> Result<String> {
    let id = match requested {
        Some(id) if !id.is_empty() => {
            if taken(&id) {
                return Err(Error::new(ErrorKind::DuplicateId));
            }
            id
        }
        _ => storage_types::generate_unique_id(taken),
    };
    check_id(what, &id)?;
    Ok(id)
}

/// Refuses an empty big-data key: [`ErrorKind::InvalidBigDataName`] with Go's `message`
/// (`can't retrieve image big data value for empty name`, …).
pub fn check_key(key: &str, message: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::new(ErrorKind::InvalidBigDataName).context(message));
    }
    Ok(())
}

/// A big-data item's size: the recorded one, else the length of the item as `read`
/// returns it ([`ErrorKind::SizeUnknown`] when it cannot be read).
pub fn size_or_length(
    recorded: Option<i64>,
    read: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<i64> {
    if let Some(size) = recorded {
        return Ok(size);
    }
    match read() {
        Ok(data) => Ok(i64::try_from(data.len()).unwrap_or(i64::MAX)),
        Err(_) => Err(Error::new(ErrorKind::SizeUnknown)),
    }
}

/// `<dir>/<id>/<file name of key>` (Go's big-data file-name encoding).
pub fn big_data_path(dir: &Path, what: &str, id: &str, key: &str) -> Result<PathBuf> {
    check_id(what, id)?;
    let name = storage_types::big_data_file_name(key)?;
    // `big_data_file_name` drops a trailing '/' of the encoding like Go's path joining,
    // and refuses keys Go could not store either.
    Ok(dir.join(id).join(name))
}

/// Writes `data` to `path` atomically (mode 0600; `sync`: with `fdatasync`), the
/// directory being there; an error reads `<op> <path>: <reason>`.
pub fn write_file(op: &str, path: &Path, data: &[u8], sync: bool) -> Result<()> {
    storage_io::atomic_write(path, data, storage_io::WriteOptions { mode: 0o600, sync })
        .map_err(|e| Error::io(op, path, e))
}

/// Stores a big-data item of record `id` in `<dir>/<id>/` (directory 0700, file 0600,
/// synced). Returns the item's size.
pub fn write_big_data(dir: &Path, what: &str, id: &str, key: &str, data: &[u8]) -> Result<i64> {
    let path = big_data_path(dir, what, id, key)?;
    let record_dir = dir.join(id);
    mkdir(&record_dir)?;
    write_file("open", &path, data, true)?;
    Ok(i64::try_from(data.len()).unwrap_or(i64::MAX))
}

/// Removes `<base>/<id>` and everything in it (absent is fine); IDs that are not a single
/// path component are left alone.
pub fn remove_record_dir(base: &Path, id: &str) -> Result<()> {
    if !storage_types::is_path_component(id) {
        return Ok(());
    }
    let dir = base.join(id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("unlinkat", &dir, e)),
    }
}

/// `<base>/<id>/userdata`, created (0700) on demand; the ID is checked with [`check_id`].
pub fn userdata_dir(base: &Path, what: &str, id: &str) -> Result<PathBuf> {
    check_id(what, id)?;
    let dir = base.join(id).join("userdata");
    mkdir(&dir)?;
    Ok(dir)
}

/// `mkdir -p` with mode 0700.
pub fn mkdir(dir: &Path) -> Result<()> {
    storage_io::mkdir_all(dir, 0o700).map_err(|e| Error::io("mkdir", dir, e))
}
