//! A gzip writer that deflates independent blocks on worker threads (like Go's `pgzip`,
//! which `Diff` uses, and `pigz`).
//!
//! The output is one ordinary gzip member: a 10-byte header, the raw deflate blocks of
//! consecutive 1 MiB input chunks (each primed with the previous chunk's last 32 KiB as
//! dictionary and ended with a sync flush, the last one with the final block), and the
//! CRC-32 / length trailer. Any gzip reader decompresses it.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Input bytes per block.
const BLOCK: usize = 1 << 20;
/// Deflate's window: the dictionary carried into the next block.
const DICT: usize = 32 * 1024;

struct Job {
    data: Vec<u8>,
    dict: Option<Vec<u8>>,
    last: bool,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// Parallel gzip writer; call [`ParallelGzWriter::finish`] at the end.
pub(crate) struct ParallelGzWriter<W: Write> {
    out: W,
    level: Compression,
    buf: Vec<u8>,
    crc: Crc,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    max_pending: usize,
    /// The tail of the last submitted block (dictionary of the next one).
    dict: Option<Vec<u8>>,
    header_written: bool,
}

impl<W: Write> ParallelGzWriter<W> {
    /// A writer compressing at `level` with up to `threads` worker threads.
    pub(crate) fn new(out: W, level: Compression, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(threads);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let rx = rx.clone();
            let h = std::thread::Builder::new()
                .name("diff-gzip".into())
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let res = deflate_block(level, &job.data, job.dict.as_deref(), job.last);
                        // The writer may have gone away (error path): nothing to do then.
                        let _ = job.reply.send(res);
                    }
                })?;
            workers.push(h);
        }
        Ok(ParallelGzWriter {
            out,
            level,
            buf: Vec::with_capacity(BLOCK),
            crc: Crc::new(),
            jobs: Some(tx),
            workers,
            pending: VecDeque::new(),
            max_pending: threads + 1,
            dict: None,
            header_written: false,
        })
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            // Magic, CM=deflate, no flags, no mtime, XFL (2: best / 4: fastest / 0), OS=unix;
            // the same header flate2's GzEncoder writes.
            let xfl = match self.level.level() {
                9 => 2,
                1 => 4,
                _ => 0,
            };
            self.out
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3])?;
            self.header_written = true;
        }
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let block = rx
                .recv()
                .map_err(|_| io::Error::other("gzip worker thread died"))??;
            self.write_header()?;
            self.out.write_all(&block)?;
        }
        Ok(())
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(
            &mut self.buf,
            if last {
                Vec::new()
            } else {
                Vec::with_capacity(BLOCK)
            },
        );
        let next_dict = (!last).then(|| data[data.len().saturating_sub(DICT)..].to_vec());
        let dict = std::mem::replace(&mut self.dict, next_dict);
        while self.pending.len() >= self.max_pending {
            self.collect_one()?;
        }
        let (reply, rx) = sync_channel(1);
        let job = Job {
            data,
            dict,
            last,
            reply,
        };
        let Some(jobs) = &self.jobs else {
            return Err(io::Error::other("gzip writer already finished"));
        };
        jobs.send(job)
            .map_err(|_| io::Error::other("gzip worker threads died"))?;
        self.pending.push_back(rx);
        Ok(())
    }

    /// Compresses what is buffered, writes the trailer and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.collect_one()?;
        }
        self.write_header()?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.out.write_all(&trailer)?;
        let ParallelGzWriter {
            out, jobs, workers, ..
        } = self;
        drop(jobs);
        for h in workers {
            let _ = h.join();
        }
        Ok(out)
    }
}

impl<W: Write> Write for ParallelGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        self.crc.update(&data[..n]);
        if self.buf.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Raw-deflates one block: sync flush at its end, or the final block when `last`.
fn deflate_block(
    level: Compression,
    data: &[u8],
    dict: Option<&[u8]>,
    last: bool,
) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(level, false);
    if let Some(d) = dict {
        c.set_dictionary(d).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = usize::try_from(c.total_in()).map_err(io::Error::other)?;
        let status = c
            .compress_vec(&data[consumed.min(data.len())..], &mut out, flush)
            .map_err(io::Error::other)?;
        let consumed = usize::try_from(c.total_in()).map_err(io::Error::other)?;
        let done = match status {
            Status::StreamEnd => true,
            _ if last => false,
            // A sync flush is complete once all input is in and deflate left output room.
            _ => consumed == data.len() && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(data: &[u8], threads: usize) -> Vec<u8> {
        let mut w = ParallelGzWriter::new(Vec::new(), Compression::default(), threads).unwrap();
        // Odd write sizes cross block boundaries.
        for chunk in data.chunks(77_777) {
            w.write_all(chunk).unwrap();
        }
        let gz = w.finish().unwrap();
        // A single member: the plain (non-multi) decoder reads it all.
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        gz
    }

    #[test]
    fn empty_input_is_a_valid_gzip() {
        let gz = roundtrip(b"", 2);
        assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(&gz[gz.len() - 8..], &[0u8; 8]);
    }

    #[test]
    fn many_blocks_decompress_to_the_input_and_compress() {
        // Compressible but not trivial: 3.5 blocks of pseudo-random text.
        let mut data = Vec::new();
        let mut x: u32 = 1;
        while data.len() < BLOCK * 7 / 2 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let word = ["layer ", "diff ", "tar ", "overlay ", "\n"][(x >> 16) as usize % 5];
            data.extend_from_slice(word.as_bytes());
        }
        for threads in [1, 2, 4] {
            let gz = roundtrip(&data, threads);
            assert!(gz.len() < data.len() / 3, "{} of {}", gz.len(), data.len());
        }
        // Exactly one block.
        roundtrip(&data[..BLOCK], 2);
    }

    #[test]
    fn trailer_has_crc_and_length() {
        let data = vec![7u8; BLOCK + 5];
        let gz = roundtrip(&data, 2);
        let mut crc = Crc::new();
        crc.update(&data);
        let n = gz.len();
        assert_eq!(gz[n - 8..n - 4], crc.sum().to_le_bytes());
        assert_eq!(gz[n - 4..], ((BLOCK + 5) as u32).to_le_bytes());
    }
}
