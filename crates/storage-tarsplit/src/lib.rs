//! Streaming tar reader with raw-byte accounting, and the tar-split format used by
//! containers/storage to reproduce applied layers byte for byte.
//!
//! **Use it for:** reading tar streams exactly as Go does, and recording or replaying
//! tar-split metadata. **Not for:** extracting files, decompressing layer diffs or keeping
//! tar-split files on disk: that is `storage_archive` and `storage_layers`.
//!
//! * [`TarReader`] parses a tar stream exactly like Go's `archive/tar` reader (USTAR, PAX
//!   `x`/`g`, GNU `L`/`K`, old GNU, STAR, base-256 numbers, signed/unsigned checksums) and
//!   reports errors in Go's words; [`TarWriter`] writes the bytes Go's `archive/tar` writer
//!   writes. Both speak one member model, [`Header`] (Go's `tar.Header`).
//! * [`Disassembler`] is a pass-through reader: it yields the input bytes unchanged while
//!   writing tar-split JSON lines (the content of `<layer>.tar-split.gz`, byte-identical to
//!   what Go's tar-split 0.12 writes before compression).
//! * [`reassemble`] rebuilds the original tar from a tar-split file and the extracted files,
//!   verifying each file's size and CRC-64/GO-ISO before writing any of it; [`Entries`]
//!   iterates over the entries. [`DirFileGetter`] reads the files of a layer directory
//!   confined to it (`storage_io::confined`: no symbolic link followed, regular files only).
//!
//! Limits and deliberate differences from Go:
//! * PAX GNU sparse files (formats 0.0, 0.1, 1.0) are expanded as Go's `archive/tar` does
//!   (real name and size, holes read as zeros); their tar-split entry is Go's (real size,
//!   CRC of the logical content; the physical data area, 1.0 map included, is in no
//!   segment), so reassembly gives Go's output, which is not the input: header, then the
//!   whole real-size content, then the old padding. Old-GNU sparse members (type `S`) are
//!   refused ([`Error::Sparse`]), as Go's extractor refuses them.
//! * The gzip bytes differ from Go's (pgzip), but any gzip reader accepts both; reading
//!   accepts multi-member gzip and both tar-split 0.11 (trailing empty segment) and 0.12 output.
//! * Data after the end-of-archive marker is recorded in full 1 MiB segments (Go's chunking
//!   follows its read sizes); padding cut short by the end of input is recorded (Go's
//!   tar-split drops it, so its reassembly would not match the input).
//! * JSON escapes `\b`/`\f` like Go ≥ 1.22 (Go 1.19 wrote `\u0008`/`\u000c`); both parse.
//! * Memory is bounded by one header group (≤ 1 MiB of PAX/long-name data) or one 1 MiB
//!   trailer chunk, plus the set of names seen (for the duplicate check), whatever the
//!   layer size; content bytes go straight from the source to the caller's buffer.
//!
//! ```
//! use std::io::Read;
//! use storage_tarsplit::{
//!     Disassembler, FileContent, FileGetter, TarReader, gzip_writer, reassemble,
//! };
//!
//! // A one-file tar, written as Go writes it.
//! let mut tw = storage_tarsplit::TarWriter::new(Vec::new());
//! let hello = storage_tarsplit::Header {
//!     name: b"hello".to_vec(),
//!     typeflag: storage_tarsplit::typeflag::REG,
//!     mode: 0o644,
//!     size: 3,
//!     ..Default::default()
//! };
//! tw.write_header(&hello).unwrap();
//! tw.write_content(b"hi\n").unwrap();
//! let tar = tw.finish().unwrap();
//!
//! // Parse it.
//! let mut tr = TarReader::new(&tar[..]);
//! let h = tr.next_header().unwrap().unwrap();
//! assert_eq!(h.name, b"hello");
//! let mut content = Vec::new();
//! tr.read_to_end(&mut content).unwrap();
//! assert_eq!(content, b"hi\n");
//! assert!(tr.next_header().unwrap().is_none());
//!
//! // Disassemble while "extracting" (here: just reading everything through).
//! let mut d = Disassembler::new(&tar[..], gzip_writer(Vec::new()));
//! let mut passed = Vec::new();
//! d.read_to_end(&mut passed).unwrap();
//! let tar_split_gz = d.finish().unwrap().finish().unwrap();
//! assert_eq!(passed, tar);
//!
//! // Reassemble from the recorded metadata and the file contents.
//! struct Files;
//! impl FileGetter for Files {
//!     fn open(&mut self, name: &[u8]) -> std::io::Result<Box<dyn FileContent + '_>> {
//!         assert_eq!(name, b"hello");
//!         Ok(Box::new(&b"hi\n"[..]))
//!     }
//! }
//! let mut out = Vec::new();
//! let n = reassemble(&tar_split_gz[..], &mut Files, &mut out).unwrap();
//! assert_eq!(out, tar);
//! assert_eq!(n, tar.len() as u64);
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod asm;
mod crc;
mod disasm;
mod error;
mod header;
mod pathset;
mod reader;
mod writer;

pub use asm::{
    DirFileGetter, Entries, Entry, EntryKind, FileContent, FileGetter, reassemble,
    reassemble_entries,
};
pub use crc::{crc64_iso, crc64_update};
pub use disasm::{Disassembler, HeaderHook, NoHook, Packer, gzip_writer};
pub use error::{Error, typeflag_text};
pub use header::{Header, TarTime, typeflag};
pub use pathset::PathSet;
pub use reader::TarReader;
pub use writer::TarWriter;
