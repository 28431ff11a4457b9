//! Damaged record files (`layers.json`, `images.json`, `containers.json` and their volatile
//! variants): finding them without opening the store, and salvaging every complete record.
//!
//! [`crate::Store::open`] refuses a store whose record files cannot be parsed, so `check` looks at
//! them first with [`check_record_files`]. [`repair_record_files`] keeps a copy of each
//! damaged file next to it (`images.json.damaged-<unix seconds>`), then rewrites it with the
//! records that could be read (a directory or other non-file in a record file's place is
//! moved aside under that name and the file rebuilt empty): the JSON array is parsed one element at a time and parsing
//! stops at the damage; elements that are valid JSON but not valid records (for example an
//! image with an invalid digest, which Go refuses to load) are dropped and counted. The
//! salvaged records are written back byte for byte as they were. The rewrite happens under
//! the store's lock file with a new last-writer token, like any other save.

use std::path::{Path, PathBuf};

use serde_json::Value;
use storage_config::StoreOptions;
use storage_types::{Container, Error, ErrorKind, Layer, Result};

/// Which kind of records a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFileKind {
    /// `layers.json` / `volatile-layers.json`.
    Layers,
    /// `images.json`.
    Images,
    /// `containers.json` / `volatile-containers.json`.
    Containers,
}

/// A record file that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedFile {
    /// The file.
    pub path: PathBuf,
    /// What it holds.
    pub kind: RecordFileKind,
    /// Why it cannot be loaded.
    pub error: String,
}

/// What [`repair_record_files`] did to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvaged {
    /// The repaired file.
    pub path: PathBuf,
    /// The copy of the damaged file.
    pub backup: PathBuf,
    /// Records kept.
    pub kept: usize,
    /// Complete JSON elements dropped because they are not valid records.
    pub dropped: usize,
    /// Bytes after the damage that could not be read (0: the array was complete).
    pub lost_bytes: usize,
    /// What stopped the parse, if anything.
    pub damage: Option<String>,
}

impl Salvaged {
    /// A one-line description for humans.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}: kept {} records, damaged copy saved as {}",
            self.path.display(),
            self.kept,
            self.backup.display()
        );
        if self.dropped > 0 {
            s.push_str(&format!("; dropped {} invalid records", self.dropped));
        }
        match &self.damage {
            Some(d) if self.lost_bytes > 0 => s.push_str(&format!(
                "; {} bytes after the damage could not be read ({d})",
                self.lost_bytes
            )),
            Some(d) => s.push_str(&format!("; {d}")),
            None => {}
        }
        s
    }
}

/// Every record file of the store described by `opts`, with its kind and lock file.
fn record_files(opts: &StoreOptions) -> Vec<(PathBuf, RecordFileKind, PathBuf)> {
    let mut roots = vec![opts.graph_root.clone(), opts.run_root.clone()];
    if let Some(is) = &opts.image_store {
        roots.push(is.clone());
    }
    let mut out = Vec::new();
    for root in roots.iter().filter(|r| !r.as_os_str().is_empty()) {
        let Ok(rd) = std::fs::read_dir(root) else {
            continue;
        };
        let mut names: Vec<String> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let dir = root.join(&name);
            let (kind, files, lock) = if let Some(drv) = name.strip_suffix("-layers") {
                (
                    RecordFileKind::Layers,
                    vec!["layers.json", "volatile-layers.json"],
                    opts.graph_root
                        .join(format!("{drv}-layers"))
                        .join("layers.lock"),
                )
            } else if name.ends_with("-images") {
                (
                    RecordFileKind::Images,
                    vec!["images.json"],
                    dir.join("images.lock"),
                )
            } else if let Some(drv) = name.strip_suffix("-containers") {
                let lock = if dir.join("containers.lock").exists() {
                    dir.join("containers.lock")
                } else {
                    opts.graph_root
                        .join(format!("{drv}-containers"))
                        .join("containers.lock")
                };
                (
                    RecordFileKind::Containers,
                    vec!["containers.json", "volatile-containers.json"],
                    lock,
                )
            } else {
                continue;
            };
            for f in files {
                let path = dir.join(f);
                // Anything there counts: a directory or other non-file in a record file's
                // place makes the store unloadable as surely as bad JSON. (A dangling
                // symbolic link reads as a missing file, which loads as empty.)
                if std::fs::metadata(&path).is_ok() {
                    out.push((path, kind, lock.clone()));
                }
            }
        }
    }
    out
}

/// Whether one element is a loadable record of `kind`.
fn valid_record(raw: &[u8], kind: RecordFileKind) -> bool {
    match kind {
        RecordFileKind::Layers => serde_json::from_slice::<Layer>(raw).is_ok(),
        RecordFileKind::Containers => serde_json::from_slice::<Container>(raw).is_ok(),
        RecordFileKind::Images => {
            let mut data = b"[".to_vec();
            data.extend_from_slice(raw);
            data.push(b']');
            storage_types::parse_images(&data, Path::new("images.json")).is_ok()
        }
    }
}

fn parse_error(data: &[u8], path: &Path, kind: RecordFileKind) -> Option<String> {
    let r = match kind {
        RecordFileKind::Layers => storage_types::parse_records::<Layer>(data, path).map(|_| ()),
        RecordFileKind::Containers => {
            storage_types::parse_records::<Container>(data, path).map(|_| ())
        }
        RecordFileKind::Images => storage_types::parse_images(data, path).map(|_| ()),
    };
    r.err().map(|e| e.to_string())
}

/// Why the record file `path` is not a regular file that can be read (a directory, a
/// FIFO…), worded like Go's failed read; `None` for a regular file.
fn not_a_file(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let ft = std::fs::metadata(path).ok()?.file_type();
    let why = if ft.is_file() {
        return None;
    } else if ft.is_dir() {
        "is a directory"
    } else if ft.is_fifo() {
        "is a FIFO, not a regular file"
    } else if ft.is_socket() {
        "is a socket, not a regular file"
    } else {
        "is a device, not a regular file"
    };
    Some(format!("read {}: {why}", path.display()))
}

/// The record files of the store that cannot be loaded (read without taking locks: a
/// writer replaces files atomically, so a reader never sees a half-written one), including
/// a directory or other non-file in a record file's place.
pub fn check_record_files(opts: &StoreOptions) -> Result<Vec<DamagedFile>> {
    let mut out = Vec::new();
    for (path, kind, _) in record_files(opts) {
        if let Some(error) = not_a_file(&path) {
            out.push(DamagedFile { path, kind, error });
            continue;
        }
        let data = std::fs::read(&path).map_err(|e| Error::io("open", &path, e))?;
        if let Some(error) = parse_error(&data, &path, kind) {
            out.push(DamagedFile { path, kind, error });
        }
    }
    Ok(out)
}

fn skip_ws(data: &[u8], mut pos: usize) -> usize {
    while data.get(pos).is_some_and(|b| b.is_ascii_whitespace()) {
        pos += 1;
    }
    pos
}

/// Splits a (possibly damaged) JSON array into its valid records: returns the raw bytes of
/// the kept elements, the number dropped, and where/why parsing stopped.
fn salvage(data: &[u8], kind: RecordFileKind) -> (Vec<Vec<u8>>, usize, Option<(usize, String)>) {
    let mut kept = Vec::new();
    let mut dropped = 0;
    let mut pos = skip_ws(data, 0);
    if data.get(pos) != Some(&b'[') {
        return (kept, 0, Some((pos, "not a JSON array".into())));
    }
    pos += 1;
    loop {
        pos = skip_ws(data, pos);
        match data.get(pos) {
            None => return (kept, dropped, Some((pos, "unexpected end of file".into()))),
            Some(b']') => return (kept, dropped, None),
            Some(_) => {}
        }
        let rest = data.get(pos..).unwrap_or(&[]);
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        match stream.next() {
            Some(Ok(_)) => {
                let end = pos + stream.byte_offset();
                let raw = data.get(pos..end).unwrap_or(&[]).to_vec();
                if valid_record(&raw, kind) {
                    kept.push(raw);
                } else {
                    dropped += 1;
                }
                pos = skip_ws(data, end);
                match data.get(pos) {
                    Some(b',') => pos += 1,
                    Some(b']') => return (kept, dropped, None),
                    None => return (kept, dropped, Some((pos, "unexpected end of file".into()))),
                    Some(c) => {
                        return (
                            kept,
                            dropped,
                            Some((pos, format!("unexpected character {:?}", *c as char))),
                        );
                    }
                }
            }
            Some(Err(e)) => return (kept, dropped, Some((pos, e.to_string()))),
            None => return (kept, dropped, Some((pos, "unexpected end of file".into()))),
        }
    }
}

/// `<path>.damaged-<unix seconds>`, with `.<n>` added when that exists already.
fn backup_path(path: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut backup = PathBuf::from(format!("{}.damaged-{secs}", path.display()));
    let mut n = 1;
    while std::fs::symlink_metadata(&backup).is_ok() {
        backup = PathBuf::from(format!("{}.damaged-{secs}.{n}", path.display()));
        n += 1;
    }
    backup
}

/// Salvages every damaged record file of the store described by `opts` (see the module
/// documentation). Files that load fine are not touched.
pub fn repair_record_files(opts: &StoreOptions) -> Result<Vec<Salvaged>> {
    let mut out = Vec::new();
    for (path, kind, lock_path) in record_files(opts) {
        let lock = storage_lock::LockFile::open(&lock_path)
            .map_err(|e| Error::msg(ErrorKind::Io, e.to_string()))?;
        let guard = lock
            .lock()
            .map_err(|e| Error::msg(ErrorKind::Io, e.to_string()))?;
        let backup = backup_path(&path);
        let (data, records, dropped, damage) = match not_a_file(&path) {
            // Not a file: moved aside whole, the records rebuilt from nothing.
            Some(why) => {
                std::fs::rename(&path, &backup).map_err(|e| Error::io("rename", &path, e))?;
                (Vec::new(), Vec::new(), 0, Some((0, why)))
            }
            None => {
                let data = std::fs::read(&path).map_err(|e| Error::io("open", &path, e))?;
                if parse_error(&data, &path, kind).is_none() {
                    continue;
                }
                let (records, dropped, damage) = salvage(&data, kind);
                storage_io::atomic_write(
                    &backup,
                    &data,
                    storage_io::WriteOptions {
                        mode: 0o600,
                        sync: true,
                    },
                )
                .map_err(|e| Error::io("write", &backup, e))?;
                (data, records, dropped, damage)
            }
        };
        let mut fixed = b"[".to_vec();
        fixed.extend_from_slice(&records.join(&b","[..]));
        fixed.push(b']');
        guard
            .record_write()
            .map_err(|e| Error::msg(ErrorKind::Io, e.to_string()))?;
        storage_io::atomic_write(
            &path,
            &fixed,
            storage_io::WriteOptions {
                mode: 0o600,
                sync: true,
            },
        )
        .map_err(|e| Error::io("write", &path, e))?;
        let (lost_bytes, damage) = match damage {
            Some((at, why)) => (data.len().saturating_sub(at), Some(why)),
            None => (0, None),
        };
        out.push(Salvaged {
            path,
            backup,
            kept: records.len(),
            dropped,
            lost_bytes,
            damage,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    const A: &str = r#"{"id":"aaaa","created":"0001-01-01T00:00:00Z"}"#;
    const B: &str = r#"{"id":"bbbb","names":["x"],"created":"0001-01-01T00:00:00Z"}"#;

    #[test]
    fn keeps_complete_records_before_the_damage() {
        let data = format!("[{A},{B},{{\"id\":\"cc");
        let (kept, dropped, damage) = salvage(data.as_bytes(), RecordFileKind::Containers);
        assert_eq!(kept, vec![A.as_bytes().to_vec(), B.as_bytes().to_vec()]);
        assert_eq!(dropped, 0);
        assert!(damage.is_some());
    }

    #[test]
    fn complete_array_has_no_damage_and_drops_invalid_records() {
        let data = format!("[ {A} , 5 ,{B}]");
        let (kept, dropped, damage) = salvage(data.as_bytes(), RecordFileKind::Layers);
        assert_eq!(kept.len(), 2);
        assert_eq!(dropped, 1);
        assert_eq!(damage, None);
    }

    #[test]
    fn a_fifo_in_a_record_files_place_is_damage_and_never_read() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            graph_root: tmp.path().join("root"),
            run_root: tmp.path().join("run"),
            ..StoreOptions::default()
        };
        let dir = opts.graph_root.join("vfs-images");
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("images.json");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let damaged = check_record_files(&opts).unwrap();
        assert_eq!(
            damaged,
            vec![DamagedFile {
                path: fifo.clone(),
                kind: RecordFileKind::Images,
                error: format!("read {}: is a FIFO, not a regular file", fifo.display()),
            }]
        );
        let done = repair_record_files(&opts).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(std::fs::read(&fifo).unwrap(), b"[]");
        assert!(
            std::fs::symlink_metadata(&done[0].backup)
                .unwrap()
                .file_type()
                .is_fifo()
        );
    }

    #[test]
    fn garbage_keeps_nothing() {
        let (kept, _, damage) = salvage(b"\0\0\0garbage", RecordFileKind::Images);
        assert!(kept.is_empty());
        assert!(damage.is_some());
    }
}
