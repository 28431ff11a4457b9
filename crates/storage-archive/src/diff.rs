//! The apply-side pipeline of a layer diff: detect the
//! compression, digest and count the compressed bytes, decompress on a separate
//! thread, digest and count the decompressed bytes, and log the owners found in
//! the tar headers, while the caller extracts the decompressed stream.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use storage_tarsplit::{Disassembler, Header, TarReader};
use storage_types::{Digest, Sha256Digester};

use crate::{Compression, Error, detect_compression};

/// How many bytes are inspected for compression detection (Go's layer store).
const PEEK: usize = 10240;
/// Size of one decompressed chunk handed to the consumer.
const CHUNK: usize = 128 * 1024;
/// Chunks in flight (bounded memory: `CHUNK * DEPTH`).
const DEPTH: usize = 16;
/// How long dropping an unfinished [`DiffReader`] waits for its helper thread to end.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// What the pipeline measured, once the whole stream went through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffStats {
    /// Detected compression of the input.
    pub compression: Compression,
    /// sha256 of the input bytes as given (`compressed-diff-digest`).
    pub compressed_digest: Digest,
    /// Number of input bytes (`compressed-size`).
    pub compressed_size: i64,
    /// sha256 of the decompressed stream, trailing padding and junk included (`diff-digest`).
    pub uncompressed_digest: Digest,
    /// Length of the decompressed stream (`diff-size`).
    pub uncompressed_size: i64,
    /// Sorted unique container UIDs of the tar headers whose base name does not start
    /// with `.wh.` (`uidset`).
    pub uidset: Vec<u32>,
    /// Same for GIDs (`gidset`).
    pub gidset: Vec<u32>,
}

/// What the helper thread hands back: the stats and, when recording, the tar-split writer.
type Finished<W> = (DiffStats, Option<W>);

enum Msg {
    Data(Vec<u8>),
    Err(io::Error),
}

/// The decompressed tar stream of a layer diff. Read it to the end (or not: see
/// [`DiffReader::finish`]), then call [`DiffReader::finish`] for the [`DiffStats`].
///
/// `W` is the tar-split writer of a reader made by [`open_diff_recording`], handed back
/// by [`DiffReader::finish_recording`]; readers made by [`open_diff`] record nothing
/// (`W` is then [`io::Sink`], never written).
///
/// Decompression, digesting and owner logging run on a helper thread, at most
/// about 2 MiB ahead of the reader. Dropping the reader stops that thread (at its
/// next chunk, or when its next read of the input returns) and waits up to 3 s for it
/// to end, so that what it owns (a tar-split writer) is released when `drop` returns.
pub struct DiffReader<W = io::Sink> {
    compression: Compression,
    rx: Receiver<Msg>,
    recycle: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
    failed: Option<(io::ErrorKind, String)>,
    cancel: Arc<AtomicBool>,
    handle: Option<JoinHandle<Option<Finished<W>>>>,
    /// Disconnected when the helper thread has ended (its sender is dropped with it).
    exited: Receiver<()>,
}

impl<W> std::fmt::Debug for DiffReader<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffReader")
            .field("compression", &self.compression)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Starts the pipeline on `input` (a layer blob, compressed or not).
///
/// Reads up to 10240 bytes synchronously to detect the compression; an empty
/// input is an empty uncompressed tar. Errors of the stream (corrupt compressed
/// data, truncation) surface from [`Read::read`] in Go's words (`"unexpected EOF"`,
/// `"gzip: invalid header"`, `"flate: corrupt input before offset N"`, …).
pub fn open_diff(input: Box<dyn Read + Send>) -> Result<DiffReader, Error> {
    open::<io::Sink>(input, None)
}

/// Like [`open_diff`], and the helper thread also records the stream's tar-split data
/// (a [`storage_tarsplit::Disassembler`] in the same pass, JSON lines written to `out`),
/// so that the reader's thread only extracts. The bytes read from the returned reader
/// are those the disassembler accepted: a tar-split error (a malformed header, a
/// duplicate path, a failed write to `out`) reaches the reader in stream order, as it
/// does in Go. Call [`DiffReader::finish_recording`] at the end to get `out` back.
pub fn open_diff_recording<W: Write + Send + 'static>(
    input: Box<dyn Read + Send>,
    out: W,
) -> Result<DiffReader<W>, Error> {
    open(input, Some(out))
}

fn open<W: Write + Send + 'static>(
    mut input: Box<dyn Read + Send>,
    recorder: Option<W>,
) -> Result<DiffReader<W>, Error> {
    let mut head = vec![0u8; PEEK];
    let mut n = 0;
    while n < PEEK {
        match input.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Read(e)),
        }
    }
    head.truncate(n);
    let compression = detect_compression(&head);
    let (tx, rx) = sync_channel::<Msg>(DEPTH);
    let (recycle_tx, recycle_rx) = sync_channel::<Vec<u8>>(DEPTH + 2);
    let cancel = Arc::new(AtomicBool::new(false));
    let thread_cancel = Arc::clone(&cancel);
    let (exit_tx, exited) = sync_channel::<()>(0);
    let handle = std::thread::Builder::new()
        .name("diff-decompress".into())
        .spawn(move || {
            let _exit = exit_tx;
            let source = Counted {
                inner: io::Cursor::new(head).chain(input),
                digester: (compression != Compression::None).then(Sha256Digester::new),
                count: Arc::new(AtomicU64::new(0)),
            };
            produce(
                compression,
                source,
                tx,
                recycle_rx,
                recorder,
                &thread_cancel,
            )
        })
        .map_err(Error::Os)?;
    Ok(DiffReader {
        compression,
        rx,
        recycle: recycle_tx,
        cur: Vec::new(),
        pos: 0,
        done: false,
        failed: None,
        cancel,
        handle: Some(handle),
        exited,
    })
}

impl<W> DiffReader<W> {
    /// The compression detected on the input.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Reads whatever the consumer left unread (trailing data counts in the
    /// digests, as in Go), waits for the helper thread and returns the stats.
    /// Fails with the stream's error if decompression failed.
    pub fn finish(self) -> Result<DiffStats, Error> {
        self.finish_inner().map(|(stats, _)| stats)
    }

    /// [`DiffReader::finish`] for a reader made by [`open_diff_recording`]: also hands back
    /// the tar-split writer (flushed).
    pub fn finish_recording(self) -> Result<(DiffStats, W), Error> {
        let (stats, out) = self.finish_inner()?;
        Ok((stats, out.ok_or(Error::Thread)?))
    }

    fn finish_inner(mut self) -> Result<Finished<W>, Error> {
        let mut sink = vec![0u8; 64 * 1024];
        loop {
            match self.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Read(e)),
            }
        }
        let handle = self.handle.take().ok_or(Error::Thread)?;
        match handle.join() {
            Ok(Some(done)) => Ok(done),
            _ => Err(Error::Thread),
        }
    }

    fn next_chunk(&mut self) -> io::Result<bool> {
        if let Some((kind, msg)) = &self.failed {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        if self.done {
            return Ok(false);
        }
        let old = std::mem::take(&mut self.cur);
        if old.capacity() >= CHUNK {
            let _ = self.recycle.try_send(old);
        }
        self.pos = 0;
        match self.rx.recv() {
            Ok(Msg::Data(buf)) => {
                self.cur = buf;
                Ok(true)
            }
            Ok(Msg::Err(e)) => {
                self.failed = Some((e.kind(), storage_types::go_io_error_text(&e)));
                Err(e)
            }
            Err(_) => {
                self.done = true;
                Ok(false)
            }
        }
    }
}

impl<W> Read for DiffReader<W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos >= self.cur.len() {
            if !self.next_chunk()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl<W> Drop for DiffReader<W> {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if self.handle.is_none() {
            return; // joined by `finish`
        }
        // Disconnect the data channel so that a producer blocked on a full channel
        // fails its send and ends, dropping what it owns (the tar-split writer, whose
        // temporary file goes with it). Wait for that a bounded time: the thread is
        // then detached, so that an input read that never returns cannot hang the caller.
        let (_, dead) = sync_channel::<Msg>(0);
        drop(std::mem::replace(&mut self.rx, dead));
        let _ = self.exited.recv_timeout(EXIT_WAIT);
    }
}

/// Counts and (optionally) digests what is read through it.
struct Counted<R> {
    inner: R,
    digester: Option<Sha256Digester>,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(d) = &mut self.digester {
            d.update(&buf[..n]);
        }
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The decompressed side: counts, digests, and ships the bytes to the consumer in
/// chunks. Remembers the first error of the decompressor.
struct Tee<R> {
    inner: R,
    digester: Sha256Digester,
    count: u64,
    buf: Vec<u8>,
    tx: SyncSender<Msg>,
    recycle: Receiver<Vec<u8>>,
    error: Option<io::Error>,
    consumer_gone: bool,
}

impl<R: Read> Tee<R> {
    fn new(inner: R, tx: SyncSender<Msg>, recycle: Receiver<Vec<u8>>) -> Self {
        Tee {
            inner,
            digester: Sha256Digester::new(),
            count: 0,
            buf: Vec::with_capacity(CHUNK),
            tx,
            recycle,
            error: None,
            consumer_gone: false,
        }
    }

    fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let fresh = match self.recycle.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Vec::with_capacity(CHUNK),
        };
        let full = std::mem::replace(&mut self.buf, fresh);
        if self.tx.send(Msg::Data(full)).is_err() {
            self.consumer_gone = true;
            return false;
        }
        true
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.consumer_gone {
            return Err(io::Error::other("consumer gone"));
        }
        if let Some(e) = &self.error {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        let n = match self.inner.read(out) {
            Ok(n) => n,
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.error = Some(e);
                return Err(copy);
            }
        };
        let data = &out[..n];
        self.digester.update(data);
        self.count += n as u64;
        let mut rest = data;
        while !rest.is_empty() {
            let room = CHUNK - self.buf.len();
            let take = room.min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() >= CHUNK && !self.flush() {
                return Err(io::Error::other("consumer gone"));
            }
        }
        Ok(n)
    }
}

/// Checks the cancel flag before every read of the input.
struct Cancellable<'a, R> {
    inner: R,
    cancel: &'a AtomicBool,
}

impl<R: Read> Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("diff reader dropped"));
        }
        self.inner.read(buf)
    }
}

/// Shared state of the source, visible after decompression finished.
struct SourceStats {
    digest: Option<Digest>,
    count: u64,
}

/// A reader that hands back the `Counted` source's stats when dropped into `slot`.
struct SourceGuard<'a, R> {
    inner: Option<Counted<R>>,
    slot: &'a mut Option<SourceStats>,
}

impl<R: Read> Read for SourceGuard<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Some(c) => c.read(buf),
            None => Ok(0),
        }
    }
}

impl<R> Drop for SourceGuard<'_, R> {
    fn drop(&mut self) {
        if let Some(c) = self.inner.take() {
            *self.slot = Some(SourceStats {
                digest: c.digester.map(Sha256Digester::finish),
                count: c.count.load(Ordering::Relaxed),
            });
        }
    }
}

fn produce<R: Read, W: Write>(
    compression: Compression,
    source: Counted<R>,
    tx: SyncSender<Msg>,
    recycle: Receiver<Vec<u8>>,
    recorder: Option<W>,
    cancel: &AtomicBool,
) -> Option<Finished<W>> {
    let mut source_stats = None;
    let offset = Arc::clone(&source.count);
    let result = {
        let guard = SourceGuard {
            inner: Some(source),
            slot: &mut source_stats,
        };
        let input = Cancellable {
            inner: guard,
            cancel,
        };
        let decoder: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(input),
            Compression::Gzip => Box::new(GoErrors::new(
                flate2::read::MultiGzDecoder::new(input),
                Compression::Gzip,
                offset,
            )),
            #[cfg(feature = "bzip2")]
            Compression::Bzip2 => Box::new(GoErrors::new(
                bzip2::read::MultiBzDecoder::new(input),
                Compression::Bzip2,
                offset,
            )),
            #[cfg(feature = "xz")]
            Compression::Xz => Box::new(GoErrors::new(
                liblzma::read::XzDecoder::new_multi_decoder(input),
                Compression::Xz,
                offset,
            )),
            #[cfg(feature = "zstd")]
            Compression::Zstd => match zstd::stream::read::Decoder::new(input) {
                Ok(d) => Box::new(GoErrors::new(d, Compression::Zstd, offset)),
                Err(e) => {
                    let _ = tx.send(Msg::Err(e));
                    return None;
                }
            },
            // A codec left out of this build (its Cargo feature is off): Go's error for a
            // format it cannot decompress.
            #[allow(unreachable_patterns)]
            other => {
                let _ = tx.send(Msg::Err(io::Error::other(format!(
                    "unsupported compression format {}",
                    other.extension()
                ))));
                return None;
            }
        };
        // Tar headers are parsed 512 bytes at a time: buffer the decoder's output
        // (for plain input this is also what keeps input reads large).
        let decoder: Box<dyn Read + '_> = Box::new(io::BufReader::with_capacity(CHUNK, decoder));
        match recorder {
            None => pump(decoder, tx, recycle),
            Some(out) => pump_recording(decoder, out, tx, recycle),
        }
    };
    let (digest, count, uids, gids, recorder) = result?;
    let source_stats = source_stats?;
    let compressed_digest = source_stats.digest.unwrap_or_else(|| digest.clone());
    let stats = DiffStats {
        compression,
        compressed_digest,
        compressed_size: source_stats.count as i64,
        uncompressed_digest: digest,
        uncompressed_size: count as i64,
        uidset: uids.into_iter().collect(),
        gidset: gids.into_iter().collect(),
    };
    Some((stats, recorder))
}

type Pumped<W> = (Digest, u64, BTreeSet<u32>, BTreeSet<u32>, Option<W>);

/// Adds a header's owners to the sets the way Go's header logger does: every header
/// whose base name does not start with `.wh.`.
fn log_owner(h: &Header, uids: &mut BTreeSet<u32>, gids: &mut BTreeSet<u32>) {
    if !go_base(&h.name).starts_with(b".wh.") {
        uids.insert(h.uid as u32);
        gids.insert(h.gid as u32);
    }
}

/// Reads `tee` to the end (or to its first error) and ships its last chunk; `None` when
/// the consumer went away or the stream failed (the error was sent to the consumer).
fn drain<R: Read>(tee: &mut Tee<R>) -> Option<()> {
    let mut scratch = vec![0u8; 64 * 1024];
    while tee.error.is_none() && !tee.consumer_gone {
        match tee.read(&mut scratch) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if tee.consumer_gone {
        return None;
    }
    if let Some(e) = tee.error.take() {
        if tee.flush() {
            let _ = tee.tx.send(Msg::Err(e));
        }
        return None;
    }
    tee.flush().then_some(())
}

/// The recording pump: decoder → disassembler (tar-split lines to `out`, owners logged
/// from its headers) → tee (digest, count, chunks to the consumer).
fn pump_recording<W: Write>(
    decoder: Box<dyn Read + '_>,
    out: W,
    tx: SyncSender<Msg>,
    recycle: Receiver<Vec<u8>>,
) -> Option<Pumped<W>> {
    let mut uids = BTreeSet::new();
    let mut gids = BTreeSet::new();
    let hook = |h: &Header| log_owner(h, &mut uids, &mut gids);
    let mut tee = Tee::new(Disassembler::with_hook(decoder, out, hook), tx, recycle);
    drain(&mut tee)?;
    let Tee {
        inner,
        digester,
        count,
        tx,
        ..
    } = tee;
    let out = match inner.finish() {
        Ok(out) => out,
        Err(e) => {
            let _ = tx.send(Msg::Err(e.into()));
            return None;
        }
    };
    Some((digester.finish(), count, uids, gids, Some(out)))
}

fn pump<W>(
    decoder: Box<dyn Read + '_>,
    tx: SyncSender<Msg>,
    recycle: Receiver<Vec<u8>>,
) -> Option<Pumped<W>> {
    let tee = Tee::new(decoder, tx, recycle);
    let mut uids = BTreeSet::new();
    let mut gids = BTreeSet::new();
    // Log owners like Go's tar header logger: every header whose base name does
    // not start with ".wh."; parse errors end the logging, the rest is drained.
    let mut tr = TarReader::new(tee);
    while let Ok(Some(h)) = tr.next_header() {
        log_owner(&h, &mut uids, &mut gids);
    }
    let mut tee = tr.into_inner();
    drain(&mut tee)?;
    Some((tee.digester.finish(), tee.count, uids, gids, None))
}

/// Go's `path.Base`.
fn go_base(name: &[u8]) -> &[u8] {
    let mut end = name.len();
    while end > 0 && name[end - 1] == b'/' {
        end -= 1;
    }
    if end == 0 {
        return if name.is_empty() { b"." } else { b"/" };
    }
    let start = name[..end]
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(0, |i| i + 1);
    &name[start..end]
}

/// Rewords decompressor errors the way Go's decompressors word them.
struct GoErrors<R> {
    inner: R,
    format: Compression,
    /// Compressed bytes consumed so far (for "corrupt input before offset N").
    offset: Arc<AtomicU64>,
}

impl<R: Read> GoErrors<R> {
    fn new(inner: R, format: Compression, offset: Arc<AtomicU64>) -> Self {
        GoErrors {
            inner,
            format,
            offset,
        }
    }
}

impl<R: Read> Read for GoErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| go_decompress_error(self.format, e, self.offset.load(Ordering::Relaxed)))
    }
}

fn go_decompress_error(format: Compression, e: io::Error, offset: u64) -> io::Error {
    if e.raw_os_error().is_some() {
        return e;
    }
    let text = e.to_string();
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return io::Error::new(io::ErrorKind::UnexpectedEof, "unexpected EOF");
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("unexpected end")
        || lower.contains("incomplete")
        || lower.contains("truncated")
    {
        return io::Error::new(io::ErrorKind::UnexpectedEof, "unexpected EOF");
    }
    let msg = match format {
        Compression::Gzip if lower.contains("header") => "gzip: invalid header".to_owned(),
        Compression::Gzip if lower.contains("checksum") => "gzip: invalid checksum".to_owned(),
        Compression::Gzip => format!("flate: corrupt input before offset {offset}"),
        Compression::Bzip2 => format!("bzip2 data invalid: {text}"),
        Compression::Xz => format!("xz: {text}"),
        Compression::Zstd => format!("zstd: {text}"),
        Compression::None => text,
    };
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every codec this build leaves out (Cargo features) is refused with Go's error;
    /// with all of them in, the test checks nothing but that the list is empty.
    #[test]
    fn codecs_left_out_are_unsupported() {
        let samples: [(Compression, &[u8], bool); 3] = [
            (
                Compression::Zstd,
                &[0x28, 0xB5, 0x2F, 0xFD, 0, 0],
                cfg!(feature = "zstd"),
            ),
            (
                Compression::Xz,
                &[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00],
                cfg!(feature = "xz"),
            ),
            (Compression::Bzip2, b"BZh91AY&SY", cfg!(feature = "bzip2")),
        ];
        for (c, magic, built) in samples {
            if built {
                continue;
            }
            let mut r = open_diff(Box::new(io::Cursor::new(magic.to_vec()))).unwrap();
            assert_eq!(r.compression(), c);
            let e = io::copy(&mut r, &mut io::sink()).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("unsupported compression format {}", c.extension())
            );
        }
    }
}
