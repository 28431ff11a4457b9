//! Recording side of tar-split: the JSON-lines packer and the pass-through disassembler.

use std::io::{self, Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::Error;
use crate::crc::crc64_update;
use crate::gostr::{clean_path, json_string};
use crate::reader::{Header, TarReader};

/// Size of the chunks in which data after the end-of-archive marker is recorded.
const TRAILER_CHUNK: usize = 1024 * 1024;

/// Writes tar-split entries as JSON lines, exactly like tar-split's `jsonPacker`
/// (keys `type`, `name`, `name_raw`, `size`, `payload`, `position`; Go's escaping).
///
/// A second file entry whose cleaned name was already seen is rejected with
/// [`Error::DuplicatePath`].
pub struct Packer<W: Write> {
    out: W,
    pos: i64,
    seen: crate::PathSet,
    line: Vec<u8>,
}

impl<W: Write> Packer<W> {
    /// A packer writing JSON lines (uncompressed) to `out`.
    pub fn new(out: W) -> Self {
        Packer {
            out,
            pos: 0,
            seen: crate::PathSet::default(),
            line: Vec::with_capacity(1024),
        }
    }

    /// Records raw bytes of the stream (type 2).
    pub fn add_segment(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.line.clear();
        self.line.extend_from_slice(b"{\"type\":2,\"payload\":\"");
        b64_append(&mut self.line, payload);
        self.line.extend_from_slice(b"\",");
        self.finish_line()
    }

    /// Records a member (type 1): its name as the tar reader yields it, its size and, when
    /// `size > 0`, the CRC-64/GO-ISO of its content.
    pub fn add_file(&mut self, name: &[u8], size: i64, crc: Option<u64>) -> Result<(), Error> {
        if !self.seen.insert(&clean_path(name)) {
            return Err(Error::DuplicatePath);
        }
        self.line.clear();
        self.line.extend_from_slice(b"{\"type\":1,");
        if !name.is_empty() {
            match std::str::from_utf8(name) {
                Ok(s) => {
                    self.line.extend_from_slice(b"\"name\":");
                    json_string(&mut self.line, s);
                    self.line.push(b',');
                }
                Err(_) => {
                    self.line.extend_from_slice(b"\"name_raw\":\"");
                    b64_append(&mut self.line, name);
                    self.line.extend_from_slice(b"\",");
                }
            }
        }
        if size != 0 {
            self.line
                .extend_from_slice(format!("\"size\":{size},").as_bytes());
        }
        match crc {
            Some(c) => {
                self.line.extend_from_slice(b"\"payload\":\"");
                b64_append(&mut self.line, &c.to_be_bytes());
                self.line.extend_from_slice(b"\",");
            }
            None => self.line.extend_from_slice(b"\"payload\":null,"),
        }
        self.finish_line()
    }

    fn finish_line(&mut self) -> Result<(), Error> {
        self.line
            .extend_from_slice(format!("\"position\":{}}}\n", self.pos).as_bytes());
        self.out.write_all(&self.line).map_err(Error::Io)?;
        self.pos += 1;
        Ok(())
    }

    /// Flushes and returns the writer.
    pub fn into_inner(mut self) -> Result<W, Error> {
        self.out.flush().map_err(Error::Io)?;
        Ok(self.out)
    }
}

/// Appends the standard (padded) base64 encoding of `data`.
fn b64_append(out: &mut Vec<u8>, data: &[u8]) {
    let start = out.len();
    let len = base64::encoded_len(data.len(), true).unwrap_or(0);
    out.resize(start + len, 0);
    let n = B64.encode_slice(data, &mut out[start..]).unwrap_or(0);
    out.truncate(start + n);
}

enum State {
    Header,
    Content { name: Vec<u8>, size: i64, crc: u64 },
    Trailer,
    Done,
}

/// Sees every member header a [`Disassembler`] parses, in stream order (Go's layer store
/// logs the owners of a diff this way while it is recorded).
pub trait HeaderHook {
    /// Called once per member header, before the member's content is read.
    fn header(&mut self, h: &Header);
}

impl<F: FnMut(&Header)> HeaderHook for F {
    fn header(&mut self, h: &Header) {
        self(h)
    }
}

/// The [`HeaderHook`] of [`Disassembler::new`]: does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

impl HeaderHook for NoHook {
    fn header(&mut self, _: &Header) {}
}

/// A pass-through reader over a tar stream that records tar-split entries.
///
/// Reading from it yields exactly the bytes of the input; meanwhile the stream is parsed
/// (like Go's tar-split `NewInputTarStream`) and JSON lines are written to `out`:
/// segments with the raw bytes of headers, padding, the end marker and any trailing data,
/// and one file entry per member with its size and content CRC. Call [`Self::finish`] at
/// the end: it consumes whatever is left (trailing junk included) and returns `out`.
///
/// Parse errors are reported by `read` (as `io::Error`s wrapping [`Error`]) and are sticky.
/// A duplicate member name is reported after the bytes of that member were handed out.
pub struct Disassembler<R: Read, W: Write, H: HeaderHook = NoHook> {
    tr: TarReader<R>,
    hook: H,
    packer: Packer<W>,
    pending: Vec<u8>,
    pending_off: usize,
    state: State,
    deferred: Option<Error>,
    err: Option<Error>,
}

impl<R: Read, W: Write> Disassembler<R, W> {
    /// Wraps the (uncompressed) tar stream `r`; tar-split JSON lines go to `out`
    /// (wrap it with [`crate::gzip_writer`] for a `.tar-split.gz` file).
    pub fn new(r: R, out: W) -> Self {
        Disassembler::with_hook(r, out, NoHook)
    }
}

impl<R: Read, W: Write, H: HeaderHook> Disassembler<R, W, H> {
    /// Like [`Disassembler::new`], and `hook` sees every member header as it is parsed.
    pub fn with_hook(r: R, out: W, hook: H) -> Self {
        Disassembler {
            tr: TarReader::with_raw_accounting(r),
            hook,
            packer: Packer::new(out),
            pending: Vec::new(),
            pending_off: 0,
            state: State::Header,
            deferred: None,
            err: None,
        }
    }

    /// Reads the rest of the input (recording it), flushes and returns the JSON writer.
    pub fn finish(mut self) -> Result<W, Error> {
        let mut scratch = vec![0u8; 256 * 1024];
        loop {
            match self.read(&mut scratch) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::from_io(e)),
            }
        }
        self.packer.into_inner()
    }

    fn fail(&mut self, e: Error) -> io::Error {
        self.err = Some(e.duplicate());
        e.into()
    }

    fn set_pending(&mut self, raw: Vec<u8>) {
        self.pending = raw;
        self.pending_off = 0;
    }

    /// Parses the next header group, recording it.
    fn step_header(&mut self) -> Result<(), Error> {
        match self.tr.next_header()? {
            Some(h) => {
                self.hook.header(&h);
                let raw = self.tr.take_raw();
                if !raw.is_empty() {
                    self.packer.add_segment(&raw)?;
                }
                // A sparse file's map blocks (format 1.0) are part of the stream passed on,
                // not of the tar-split segments, as in Go's tar-split.
                let mut out = raw;
                out.extend(self.tr.take_phys());
                self.set_pending(out);
                if h.size > 0 {
                    self.state = State::Content {
                        name: h.name,
                        size: h.size,
                        crc: 0,
                    };
                } else if let Err(e) = self.packer.add_file(&h.name, h.size, None) {
                    self.deferred = Some(e);
                }
            }
            None => {
                let raw = self.tr.take_raw();
                if !raw.is_empty() {
                    self.packer.add_segment(&raw)?;
                    self.set_pending(raw);
                }
                self.state = State::Trailer;
            }
        }
        Ok(())
    }

    /// Records the file entry of the member whose content was fully read.
    fn end_content(&mut self) {
        let State::Content { name, size, crc } = std::mem::replace(&mut self.state, State::Header)
        else {
            return;
        };
        if let Err(e) = self.packer.add_file(&name, size, Some(crc)) {
            self.deferred = Some(e);
        }
    }

    /// Reads (up to 1 MiB of) data after the end of the archive.
    fn step_trailer(&mut self) -> Result<(), Error> {
        let mut chunk = vec![0u8; TRAILER_CHUNK];
        let mut n = 0;
        let inner = self.tr.inner_mut();
        while n < chunk.len() {
            match inner.read(&mut chunk[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::from_io(e)),
            }
        }
        if n == 0 {
            self.state = State::Done;
            return Ok(());
        }
        chunk.truncate(n);
        self.packer.add_segment(&chunk)?;
        self.set_pending(chunk);
        Ok(())
    }
}

impl<R: Read, W: Write, H: HeaderHook> Read for Disassembler<R, W, H> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pending_off < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.pending_off);
                buf[..n].copy_from_slice(&self.pending[self.pending_off..self.pending_off + n]);
                self.pending_off += n;
                return Ok(n);
            }
            if let Some(e) = self.deferred.take() {
                return Err(self.fail(e));
            }
            if let Some(e) = &self.err {
                return Err(e.duplicate().into());
            }
            match &mut self.state {
                State::Content { crc, .. } => {
                    if self.tr.remaining() == 0 {
                        // A link/dir/device header with a non-zero size: no content.
                        self.end_content();
                        continue;
                    }
                    if self.tr.is_sparse() {
                        // The entry records the logical content (its CRC); the stream passed
                        // on keeps the physical bytes of the data area.
                        let mut logical = vec![0u8; buf.len().min(64 * 1024)];
                        let n = match self.tr.read(&mut logical) {
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                            Err(e) => return Err(self.fail(Error::from_io(e))),
                        };
                        *crc = crc64_update(*crc, &logical[..n]);
                        let phys = self.tr.take_phys();
                        self.set_pending(phys);
                        if self.tr.remaining() == 0 {
                            self.end_content();
                        }
                        continue;
                    }
                    let n = match self.tr.read(buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                        Err(e) => return Err(self.fail(Error::from_io(e))),
                    };
                    *crc = crc64_update(*crc, &buf[..n]);
                    if self.tr.remaining() == 0 {
                        self.end_content();
                    }
                    return Ok(n);
                }
                State::Header => {
                    if let Err(e) = self.step_header() {
                        return Err(self.fail(e));
                    }
                }
                State::Trailer => {
                    if let Err(e) = self.step_trailer() {
                        return Err(self.fail(e));
                    }
                }
                State::Done => return Ok(0),
            }
        }
    }
}

/// Wraps a writer in the gzip encoder used for `<id>.tar-split.gz` files (fast level).
/// Call `finish()` on the result to write the gzip trailer.
pub fn gzip_writer<W: Write>(w: W) -> flate2::write::GzEncoder<W> {
    flate2::write::GzEncoder::new(w, flate2::Compression::fast())
}
