//! Reading side of tar-split: entry iteration and reassembly of the original tar stream.

use std::collections::HashSet;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use crate::Error;
use crate::crc::crc64_update;
use crate::gostr::clean_path;

/// Kind of a tar-split entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Type 1: a tar member (regular-file content not stored; payload = CRC-64).
    File,
    /// Type 2: raw bytes of the stream.
    Segment,
    /// Any other type value (ignored by reassembly, like Go).
    Other(i64),
}

/// One decoded tar-split entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Entry type.
    pub kind: EntryKind,
    /// Member name (`name_raw` when present, else `name`).
    pub name: Vec<u8>,
    /// Member content size (0 for segments).
    pub size: i64,
    /// Segment bytes, or the big-endian CRC-64 of a file; `None` for JSON `null`.
    pub payload: Option<Vec<u8>>,
    /// Sequence number as recorded (informational).
    pub position: i64,
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "type", default)]
    kind: i64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    name_raw: Option<String>,
    #[serde(default)]
    size: Option<i64>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    position: Option<i64>,
}

fn b64(field: &str, s: &str) -> Result<Vec<u8>, Error> {
    let cleaned: String = s.chars().filter(|&c| c != '\r' && c != '\n').collect();
    B64.decode(cleaned.as_bytes())
        .map_err(|e| Error::Json(format!("tar-split entry: invalid base64 in {field}: {e}")))
}

/// Iterator over the entries of a tar-split stream, rejecting duplicate file names like
/// Go's `jsonUnpacker`. Stops after the first error.
pub struct Entries<R: Read> {
    de: serde_json::StreamDeserializer<'static, serde_json::de::IoRead<BufReader<R>>, RawEntry>,
    seen: HashSet<Vec<u8>>,
    done: bool,
}

impl<R: Read> Entries<flate2::read::MultiGzDecoder<R>> {
    /// Entries of a gzip-compressed tar-split file (multi-member gzip accepted).
    pub fn from_gzip(r: R) -> Self {
        Entries::from_json(flate2::read::MultiGzDecoder::new(r))
    }
}

impl<R: Read> Entries<R> {
    /// Entries of an uncompressed JSON-lines stream.
    pub fn from_json(r: R) -> Self {
        Entries {
            de: serde_json::Deserializer::from_reader(BufReader::with_capacity(64 * 1024, r))
                .into_iter(),
            seen: HashSet::new(),
            done: false,
        }
    }

    fn convert(&mut self, raw: RawEntry) -> Result<Entry, Error> {
        let name = match raw.name_raw.as_deref() {
            Some(s) if !s.is_empty() => b64("name_raw", s)?,
            _ => raw.name.unwrap_or_default().into_bytes(),
        };
        let kind = match raw.kind {
            1 => EntryKind::File,
            2 => EntryKind::Segment,
            k => EntryKind::Other(k),
        };
        if kind == EntryKind::File && !self.seen.insert(clean_path(&name)) {
            return Err(Error::DuplicatePath);
        }
        let payload = match raw.payload.as_deref() {
            Some(s) => Some(b64("payload", s)?),
            None => None,
        };
        Ok(Entry {
            kind,
            name,
            size: raw.size.unwrap_or(0),
            payload,
            position: raw.position.unwrap_or(0),
        })
    }
}

impl<R: Read> Iterator for Entries<R> {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.de.next()? {
            Ok(raw) => self.convert(raw),
            Err(e) if e.is_io() => Err(Error::Io(io::Error::from(e))),
            Err(e) => Err(Error::Json(e.to_string())),
        };
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }
}

/// Opens the extracted files of a layer during reassembly.
pub trait FileGetter {
    /// Opens the member `name` (as recorded in the tar-split file, not cleaned).
    fn open(&mut self, name: &[u8]) -> io::Result<Box<dyn Read + '_>>;
}

/// A [`FileGetter`] reading from a directory: opens Go's `filepath.Join(root, name)`.
#[derive(Debug, Clone)]
pub struct DirFileGetter {
    root: PathBuf,
}

impl DirFileGetter {
    /// A getter for files under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirFileGetter { root: root.into() }
    }

    /// Go's `filepath.Join(root, name)`.
    pub fn path_of(&self, name: &[u8]) -> PathBuf {
        let mut joined = self.root.as_os_str().as_bytes().to_vec();
        if !name.is_empty() {
            if !joined.is_empty() {
                joined.push(b'/');
            }
            joined.extend_from_slice(name);
        }
        PathBuf::from(std::ffi::OsStr::from_bytes(&clean_path(&joined)))
    }
}

/// An I/O error worded like Go's `*PathError`: "open /x: no such file or directory".
pub(crate) fn go_path_error(op: &str, path: &Path, e: &io::Error) -> io::Error {
    let text = match e.raw_os_error() {
        Some(code) => {
            let s = io::Error::from_raw_os_error(code).to_string();
            let s = s.split(" (os error").next().unwrap_or(&s).to_owned();
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
                None => s,
            }
        }
        None => e.to_string(),
    };
    io::Error::new(e.kind(), format!("{op} {}: {text}", path.display()))
}

impl FileGetter for DirFileGetter {
    fn open(&mut self, name: &[u8]) -> io::Result<Box<dyn Read + '_>> {
        let path = self.path_of(name);
        match std::fs::File::open(&path) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) => Err(go_path_error("open", &path, &e)),
        }
    }
}

/// Rebuilds the original tar stream from a gzip-compressed tar-split file and the files
/// provided by `getter`, writing it to `out`. Returns the number of bytes written.
///
/// For every file entry with a size, the whole file is copied while its CRC-64 is
/// computed; a mismatch fails with `file integrity checksum failed for "<name>"` (the
/// output already holds the file's bytes then, as in Go).
pub fn reassemble(
    tar_split_gz: impl Read,
    getter: &mut dyn FileGetter,
    out: &mut dyn Write,
) -> Result<u64, Error> {
    reassemble_entries(Entries::from_gzip(tar_split_gz), getter, out)
}

/// [`reassemble`] over already-decoded entries (for example [`Entries::from_json`]).
pub fn reassemble_entries<I>(
    entries: I,
    getter: &mut dyn FileGetter,
    out: &mut dyn Write,
) -> Result<u64, Error>
where
    I: IntoIterator<Item = Result<Entry, Error>>,
{
    let mut written: u64 = 0;
    let mut buf: Vec<u8> = Vec::new();
    for entry in entries {
        let entry = entry?;
        match entry.kind {
            EntryKind::Segment => {
                let p = entry.payload.as_deref().unwrap_or_default();
                out.write_all(p).map_err(Error::Io)?;
                written += p.len() as u64;
            }
            EntryKind::File if entry.size != 0 => {
                if buf.is_empty() {
                    buf = vec![0u8; 1024 * 1024];
                }
                let mut f = getter.open(&entry.name).map_err(Error::from_io)?;
                let mut crc = 0u64;
                loop {
                    let n = match f.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(Error::from_io(e)),
                    };
                    out.write_all(&buf[..n]).map_err(Error::Io)?;
                    crc = crc64_update(crc, &buf[..n]);
                    written += n as u64;
                }
                if entry.payload.as_deref() != Some(&crc.to_be_bytes()[..]) {
                    return Err(Error::ChecksumMismatch(entry.name));
                }
            }
            EntryKind::File | EntryKind::Other(_) => {}
        }
    }
    Ok(written)
}
