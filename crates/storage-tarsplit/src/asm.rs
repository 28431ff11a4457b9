//! Reading side of tar-split: entry iteration and reassembly of the original tar stream.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use storage_io::confined::{self, RegularFile, Root};

use crate::Error;
use crate::crc::crc64_update;
use storage_gocompat::path::clean as clean_path;

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
struct RawEntry<'a> {
    #[serde(rename = "type", default)]
    kind: i64,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name_raw: Option<Cow<'a, str>>,
    #[serde(default)]
    size: Option<i64>,
    #[serde(default, borrow)]
    payload: Option<Cow<'a, str>>,
    #[serde(default)]
    position: Option<i64>,
}

fn b64(field: &str, s: &str) -> Result<Vec<u8>, Error> {
    let bad = |e: base64::DecodeError| {
        Error::Json(format!("tar-split entry: invalid base64 in {field}: {e}"))
    };
    // Go's decoder skips '\r' and '\n'; they are rare, so decode directly and clean only
    // when that fails (the result without them is the same).
    match B64.decode(s.as_bytes()) {
        Ok(v) => Ok(v),
        Err(e) if !s.bytes().any(|b| b == b'\r' || b == b'\n') => Err(bad(e)),
        Err(_) => {
            let cleaned: String = s.chars().filter(|&c| c != '\r' && c != '\n').collect();
            B64.decode(cleaned.as_bytes()).map_err(bad)
        }
    }
}

/// Iterator over the entries of a tar-split stream, rejecting duplicate file names like
/// Go's `jsonUnpacker`. Stops after the first error.
///
/// The stream is parsed a line at a time from a reused buffer (tar-split files hold one
/// JSON value per line); values spanning lines or sharing one are handled too.
pub struct Entries<R: Read> {
    reader: BufReader<R>,
    /// Bytes read but not parsed yet (the start of a value continued on the next line).
    buf: Vec<u8>,
    /// Entries (or the final error) parsed from the current line, in order.
    queue: VecDeque<Result<Entry, Error>>,
    /// Cleaned names of the file entries so far (duplicates are refused).
    seen: crate::PathSet,
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
            reader: BufReader::with_capacity(64 * 1024, r),
            buf: Vec::new(),
            queue: VecDeque::new(),
            seen: crate::PathSet::default(),
            done: false,
        }
    }

    /// Reads lines until at least one entry or error is queued, or the input ends.
    fn fill(&mut self) {
        while self.queue.is_empty() && !self.done {
            let eof = match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(n) => n == 0,
                Err(e) => {
                    self.queue.push_back(Err(Error::Io(e)));
                    self.done = true;
                    return;
                }
            };
            let mut values =
                serde_json::Deserializer::from_slice(&self.buf).into_iter::<RawEntry<'_>>();
            let mut partial = false;
            let mut failed = false;
            for v in values.by_ref() {
                match v {
                    Ok(raw) => {
                        let entry = convert(&mut self.seen, raw);
                        failed = entry.is_err();
                        self.queue.push_back(entry);
                        if failed {
                            break;
                        }
                    }
                    // A value continued on the next line: keep its bytes, read more.
                    Err(e) if e.is_eof() && !eof => {
                        partial = true;
                        break;
                    }
                    Err(e) => {
                        self.queue.push_back(Err(if e.is_io() {
                            Error::Io(io::Error::from(e))
                        } else {
                            Error::Json(e.to_string())
                        }));
                        failed = true;
                        break;
                    }
                }
            }
            let offset = values.byte_offset();
            if failed || eof {
                self.done = true;
            } else if partial {
                self.buf.drain(..offset);
            } else {
                self.buf.clear();
            }
        }
    }
}

fn convert(seen: &mut crate::PathSet, raw: RawEntry<'_>) -> Result<Entry, Error> {
    let name = match raw.name_raw.as_deref() {
        Some(s) if !s.is_empty() => b64("name_raw", s)?,
        _ => raw
            .name
            .map(Cow::into_owned)
            .unwrap_or_default()
            .into_bytes(),
    };
    let kind = match raw.kind {
        1 => EntryKind::File,
        2 => EntryKind::Segment,
        k => EntryKind::Other(k),
    };
    if kind == EntryKind::File && !seen.insert(&clean_path(&name)) {
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

impl<R: Read> Iterator for Entries<R> {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.fill();
        self.queue.pop_front()
    }
}

/// Opens the extracted files of a layer during reassembly.
pub trait FileGetter {
    /// Opens the member `name` (as recorded in the tar-split file, not cleaned).
    fn open(&mut self, name: &[u8]) -> io::Result<Box<dyn FileContent + '_>>;
}

/// The content of one member, as a [`FileGetter`] opened it: a size and reads at any
/// offset, so that reassembly can check a file before it writes any of it out.
pub trait FileContent {
    /// Its size in bytes (for a file: its size when it was opened).
    fn size(&self) -> u64;
    /// Reads into `buf` from `offset` (like `pread`); fewer bytes than asked only at the
    /// end, 0 past it.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// The whole content, read to its end.
    fn read_to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.size()).unwrap_or(0).min(1 << 20));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.read_at(&mut buf, out.len() as u64) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl FileContent for RegularFile {
    fn size(&self) -> u64 {
        RegularFile::size(self)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file().read_at(buf, offset)
    }
}

impl FileContent for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

impl FileContent for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }
}

/// A [`FileGetter`] reading from a directory: the file Go's `filepath.Join(root, name)`
/// names, confined to `root`.
///
/// Unlike Go, nothing outside the layer is ever read: a name that `Join` cleans to a path
/// outside `root` (`../x` in a hostile tar-split file) fails as if absent, with the text Go
/// gives when nothing is there, and the path is resolved under a handle on `root` without
/// following a symbolic link in any component, the last included
/// ([`storage_io::confined`]): a layer holding `etc -> /` and a recorded `etc/passwd`, or a
/// link `x -> /etc/shadow` where a regular `x` was recorded, fails with an error naming the
/// path instead of reading the host's file. Only regular files are opened for reading (a
/// FIFO or a device node in their place is refused before a byte is read). Directory
/// handles are kept while consecutive names share them (tar order), so the path is not
/// resolved from the root for every file.
#[derive(Debug)]
pub struct DirFileGetter {
    root: PathBuf,
    /// `root` cleaned like Go's `filepath.Clean`.
    clean_root: Vec<u8>,
    /// The root, opened on first use.
    handle: Option<Root>,
    /// The directory (relative to the root) of the last file opened and a handle on it.
    dir: Option<(Vec<u8>, OwnedFd)>,
}

impl Clone for DirFileGetter {
    fn clone(&self) -> Self {
        DirFileGetter::new(self.root.clone())
    }
}

impl DirFileGetter {
    /// A getter for files under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let clean_root = clean_path(root.as_os_str().as_bytes());
        DirFileGetter {
            root,
            clean_root,
            handle: None,
            dir: None,
        }
    }

    /// Go's `filepath.Join(root, name)`.
    pub fn path_of(&self, name: &[u8]) -> PathBuf {
        PathBuf::from(std::ffi::OsString::from_vec(self.join(name)))
    }

    fn join(&self, name: &[u8]) -> Vec<u8> {
        // Clean(root + "/" + name) is Clean(root) + "/" + Clean(name) when the root is
        // absolute and the cleaned name is relative and does not climb: one clean of the
        // (usually already clean) name instead of one of the whole path.
        let r = &self.clean_root[..];
        if !name.is_empty() && r.starts_with(b"/") {
            let n = clean_path(name);
            if n != b"." && n != b".." && !n.starts_with(b"/") && !n.starts_with(b"../") {
                let mut out = Vec::with_capacity(r.len() + 1 + n.len());
                out.extend_from_slice(r);
                if r != b"/" {
                    out.push(b'/');
                }
                out.extend_from_slice(&n);
                return out;
            }
        }
        let mut joined = Vec::with_capacity(self.clean_root.len() + 1 + name.len());
        joined.extend_from_slice(self.root.as_os_str().as_bytes());
        if !name.is_empty() {
            if !joined.is_empty() {
                joined.push(b'/');
            }
            joined.extend_from_slice(name);
        }
        clean_path(&joined)
    }

    /// The part of the cleaned `path` below the root (empty for the root itself), or `None`
    /// when `path` is not inside the root.
    fn relative<'p>(&self, path: &'p [u8]) -> Option<&'p [u8]> {
        let r = &self.clean_root[..];
        if r == b"." {
            return match path {
                b"." => Some(b""),
                b".." => None,
                p if p.starts_with(b"../") => None,
                p => Some(p),
            };
        }
        let rest = path.strip_prefix(r)?;
        if rest.is_empty() || r.ends_with(b"/") {
            Some(rest)
        } else {
            rest.strip_prefix(b"/")
        }
    }

    /// Opens the regular file `rel` (relative to the root, not empty) without following
    /// symbolic links, through the cached handle on its directory.
    fn open_rel(&mut self, rel: &[u8]) -> io::Result<RegularFile> {
        let (dir, base) = confined::split(rel);
        if base.is_empty() {
            return Err(rustix::io::Errno::ISDIR.into());
        }
        if self.dir.as_ref().map(|(d, _)| d.as_slice()) != Some(dir) {
            self.dir = None;
            if self.handle.is_none() {
                self.handle = Some(Root::open(&self.root)?);
            }
            let Some(root) = &self.handle else {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            };
            let fd = root.open_dir(dir)?;
            self.dir = Some((dir.to_vec(), fd));
        }
        match &self.dir {
            Some((_, fd)) => confined::open_regular_at(fd, base),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
}

impl FileGetter for DirFileGetter {
    fn open(&mut self, name: &[u8]) -> io::Result<Box<dyn FileContent + '_>> {
        let path = self.join(name);
        let Some(rel) = self.relative(&path).map(<[u8]>::to_vec) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "open {}: no such file or directory",
                    String::from_utf8_lossy(&path)
                ),
            ));
        };
        match self.open_rel(&rel) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) => Err(storage_gocompat::syscall::path_error(
                "open",
                Path::new(OsStr::from_bytes(&path)),
                &e,
            )),
        }
    }
}

/// Rebuilds the original tar stream from a gzip-compressed tar-split file and the files
/// provided by `getter`, writing it to `out`. Returns the number of bytes written.
///
/// For every file entry with a size, the file's size and CRC-64 are checked before any of
/// its bytes is written: a mismatch fails with `file integrity checksum failed for
/// "<name>"` and the output ends before the file (Go writes the file's bytes first, which
/// let a hostile layer copy host files into the stream). A file larger than the 1 MiB
/// output buffer is read twice: once to check it, once to write it while checking again
/// (a change in between fails with the same error, after what was written).
pub fn reassemble(
    tar_split_gz: impl Read + Send,
    getter: &mut dyn FileGetter,
    out: &mut dyn Write,
) -> Result<u64, Error> {
    // The tar-split file is inflated and decoded (JSON, base64) on a second thread while
    // this one reads the files and writes; batches bound what is decoded ahead.
    const BATCH: usize = 256;
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<Entry, Error>>>(8);
        std::thread::Builder::new()
            .name("tar-split decode".into())
            .spawn_scoped(s, move || {
                let mut batch = Vec::with_capacity(BATCH);
                for e in Entries::from_gzip(tar_split_gz) {
                    let stop = e.is_err();
                    batch.push(e);
                    if batch.len() == BATCH || stop {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        // A closed channel: the reassembly stopped (error); so do we.
                        if tx.send(full).is_err() || stop {
                            return;
                        }
                    }
                }
                let _ = tx.send(batch);
            })
            .map_err(Error::Io)?;
        reassemble_entries(rx.into_iter().flatten(), getter, out)
    })
}

/// [`reassemble`] over already-decoded entries (for example [`Entries::from_json`]).
///
/// Output is gathered in a 1 MiB buffer that file contents are read into directly, and
/// written in large pieces; what was gathered is written before an error is returned.
pub fn reassemble_entries<I>(
    entries: I,
    getter: &mut dyn FileGetter,
    out: &mut dyn Write,
) -> Result<u64, Error>
where
    I: IntoIterator<Item = Result<Entry, Error>>,
{
    let mut o = OutBuf {
        buf: Vec::new(),
        len: 0,
        out,
    };
    let r = copy_entries(entries, getter, &mut o);
    let flushed = o.flush().map_err(Error::Io);
    let n = r?;
    flushed?;
    Ok(n)
}

/// The output buffer of [`reassemble_entries`].
struct OutBuf<'a> {
    buf: Vec<u8>,
    len: usize,
    out: &'a mut dyn Write,
}

impl OutBuf<'_> {
    const SIZE: usize = 1024 * 1024;

    fn flush(&mut self) -> io::Result<()> {
        if self.len > 0 {
            self.out.write_all(&self.buf[..self.len])?;
            self.len = 0;
        }
        Ok(())
    }

    /// Free space for at least `want` bytes (capped at the buffer size), flushing if needed.
    fn spare(&mut self, want: u64) -> io::Result<&mut [u8]> {
        if self.buf.is_empty() {
            self.buf = vec![0u8; Self::SIZE];
        }
        let want = usize::try_from(want).unwrap_or(usize::MAX).min(Self::SIZE);
        if Self::SIZE - self.len < want {
            self.flush()?;
        }
        Ok(&mut self.buf[self.len..])
    }

    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() >= Self::SIZE / 2 {
            self.flush()?;
            return self.out.write_all(data);
        }
        let n = data.len();
        self.spare(n as u64)?[..n].copy_from_slice(data);
        self.len += n;
        Ok(())
    }
}

fn copy_entries<I>(
    entries: I,
    getter: &mut dyn FileGetter,
    o: &mut OutBuf<'_>,
) -> Result<u64, Error>
where
    I: IntoIterator<Item = Result<Entry, Error>>,
{
    let mut written: u64 = 0;
    for entry in entries {
        let entry = entry?;
        match entry.kind {
            EntryKind::Segment => {
                let p = entry.payload.as_deref().unwrap_or_default();
                o.put(p).map_err(Error::Io)?;
                written += p.len() as u64;
            }
            EntryKind::File if entry.size != 0 => {
                let f = getter.open(&entry.name).map_err(Error::from_io)?;
                // Go writes whatever the file holds when its CRC matches, whatever the
                // recorded size: an entry of a header-only type (a hard link, say) with a
                // size in its header records that size and the CRC of no bytes, and must
                // come back from an empty file. The CRC is still checked before any byte.
                let size = f.size();
                let crc = entry
                    .payload
                    .as_deref()
                    .and_then(|p| <[u8; 8]>::try_from(p).ok())
                    .map(u64::from_be_bytes);
                let Some(crc) = crc else {
                    return Err(Error::ChecksumMismatch(entry.name));
                };
                if !copy_checked(&*f, size, crc, o)? {
                    return Err(Error::ChecksumMismatch(entry.name));
                }
                written += size;
            }
            EntryKind::File | EntryKind::Other(_) => {}
        }
    }
    Ok(written)
}

/// Reads `buf.len()` bytes of `f` from `offset`, fewer only at its end. A short read that
/// reaches `end` is taken as the end without asking again (a regular file's reads are
/// short only there), which saves a read per file.
fn read_full(f: &dyn FileContent, buf: &mut [u8], offset: u64, end: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let ask = buf.len() - got;
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if n < ask && offset + got as u64 == end {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Writes the `size` bytes of `f` to `o` if they have the CRC-64 `crc` (and `f` has no
/// more); returns `false`, having written nothing of `f`, when they do not.
fn copy_checked(
    f: &dyn FileContent,
    size: u64,
    crc: u64,
    o: &mut OutBuf<'_>,
) -> Result<bool, Error> {
    const SIZE: u64 = OutBuf::SIZE as u64;
    if size < SIZE {
        // Read into the buffer's free space (with one byte more, to see the end), check,
        // and only then count the bytes as written.
        let n = size as usize;
        let space = o.spare(size + 1).map_err(Error::Io)?;
        let got = read_full(f, &mut space[..=n], 0, size).map_err(Error::from_io)?;
        if got != n || crc64_update(0, &space[..n]) != crc {
            return Ok(false);
        }
        o.len += n;
        return Ok(true);
    }
    // Too large to hold: a first pass checks the whole file (in the buffer's space, after
    // writing out what it holds), a second one writes it and checks again.
    let mut first = 0u64;
    let mut off = 0u64;
    while off < size {
        let space = o.spare(SIZE).map_err(Error::Io)?;
        let want = usize::try_from(size - off)
            .unwrap_or(usize::MAX)
            .min(space.len());
        let n = read_full(f, &mut space[..want], off, size).map_err(Error::from_io)?;
        if n == 0 {
            return Ok(false);
        }
        first = crc64_update(first, &space[..n]);
        off += n as u64;
    }
    if first != crc || !at_end(f, size)? {
        return Ok(false);
    }
    let mut second = 0u64;
    let mut off = 0u64;
    while off < size {
        let space = o.spare((size - off).min(SIZE)).map_err(Error::Io)?;
        let want = usize::try_from(size - off)
            .unwrap_or(usize::MAX)
            .min(space.len());
        let n = read_full(f, &mut space[..want], off, size).map_err(Error::from_io)?;
        if n == 0 {
            break;
        }
        second = crc64_update(second, &space[..n]);
        o.len += n;
        off += n as u64;
    }
    Ok(off == size && second == crc && at_end(f, size)?)
}

/// Whether `f` has nothing after `size` bytes.
fn at_end(f: &dyn FileContent, size: u64) -> Result<bool, Error> {
    let mut one = [0u8; 1];
    Ok(read_full(f, &mut one, size, size).map_err(Error::from_io)? == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(json: &[u8]) -> Vec<Result<(EntryKind, Vec<u8>), String>> {
        Entries::from_json(json)
            .map(|e| e.map(|e| (e.kind, e.name)).map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn values_sharing_a_line_or_spanning_lines() {
        let one_per_line =
            kinds(b"{\"type\":1,\"name\":\"a\"}\n{\"type\":2,\"payload\":\"AA==\"}\n");
        let shared = kinds(b"  {\"type\":1,\"name\":\"a\"} {\"type\":2,\"payload\":\"AA==\"}");
        let spanning =
            kinds(b"\n\n{\"type\":1,\n\"name\":\n\"a\"}\n{\"type\"\n:2,\"payload\":\"AA==\"}\n\n");
        assert_eq!(one_per_line.len(), 2);
        assert_eq!(one_per_line, shared);
        assert_eq!(one_per_line, spanning);
        assert_eq!(one_per_line[0], Ok((EntryKind::File, b"a".to_vec())));
        assert!(kinds(b"").is_empty());
        assert!(kinds(b"\n \n").is_empty());
    }

    #[test]
    fn join_equals_cleaning_the_whole_path() {
        let names = storage_gocompat::path::sample_paths(6);
        for root in ["/", "/r", "/r/s/", "//r/./s", "rel", "."] {
            let g = DirFileGetter::new(root);
            for n in &names {
                let mut whole = root.as_bytes().to_vec();
                if !n.is_empty() {
                    whole.push(b'/');
                    whole.extend_from_slice(n);
                }
                assert_eq!(
                    g.join(n),
                    clean_path(&whole),
                    "{root} + {:?}",
                    String::from_utf8_lossy(n)
                );
            }
        }
    }

    #[test]
    fn errors_end_the_stream() {
        // Truncated value at the end of the input.
        let r = kinds(b"{\"type\":1,\"name\":\"a\"}\n{\"type\":2,\"pay");
        assert_eq!(r.len(), 2);
        assert!(r[0].is_ok());
        assert!(r[1].is_err());
        // Garbage after a good value on the same line: the good one first, then the error.
        let r = kinds(b"{\"type\":1,\"name\":\"a\"} nope\n{\"type\":1,\"name\":\"b\"}\n");
        assert_eq!(r.len(), 2);
        assert!(r[1].is_err());
        // A duplicate stops the stream too.
        let r = kinds(
            b"{\"type\":1,\"name\":\"a\"}{\"type\":1,\"name\":\"./a\"}{\"type\":1,\"name\":\"c\"}",
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[1], Err(Error::DuplicatePath.to_string()));
        // Base64 with line breaks (Go's decoder skips them), and a bad one.
        let r: Vec<_> = Entries::from_json(
            &b"{\"type\":2,\"payload\":\"aGVs\\r\\nbG8=\"}{\"type\":2,\"payload\":\"a!\"}"[..],
        )
        .collect();
        assert_eq!(
            r[0].as_ref().ok().and_then(|e| e.payload.clone()),
            Some(b"hello".to_vec())
        );
        assert!(matches!(r[1], Err(Error::Json(_))));
        // Escaped strings (not borrowable) decode as well.
        let r = kinds(b"{\"type\":1,\"name\":\"a\\u00e9\\\"b\"}\n");
        assert_eq!(r[0], Ok((EntryKind::File, "aé\"b".as_bytes().to_vec())));
    }
}
