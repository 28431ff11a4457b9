//! Streaming tar reader with raw-byte accounting, and the tar-split format used by
//! containers/storage to reproduce applied layers byte for byte.
//!
//! **Use it for:** reading tar streams exactly as Go does, and recording or replaying
//! tar-split metadata. **Not for:** extracting files, decompressing layer diffs or keeping
//! tar-split files on disk: that is `storage_archive` and `storage_layers`.
//!
//! * [`TarReader`] parses a tar stream exactly like Go's `archive/tar` reader (USTAR, PAX
//!   `x`/`g`, GNU `L`/`K`, old GNU, STAR, base-256 numbers, signed/unsigned checksums) and
//!   reports errors in Go's words.
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
//! // A one-file tar, built by hand.
//! let mut hdr = [0u8; 512];
//! hdr[..5].copy_from_slice(b"hello");
//! hdr[100..108].copy_from_slice(b"0000644\0");
//! hdr[124..136].copy_from_slice(b"00000000003\0");
//! hdr[257..265].copy_from_slice(b"ustar\x0000");
//! hdr[156] = b'0';
//! hdr[148..156].copy_from_slice(b"        ");
//! let sum: u32 = hdr.iter().map(|&b| u32::from(b)).sum();
//! hdr[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
//! let mut tar = hdr.to_vec();
//! tar.extend_from_slice(b"hi\n");
//! tar.resize(512 * 4, 0);
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
mod gostr;
mod pathset;
mod reader;

pub use asm::{
    DirFileGetter, Entries, Entry, EntryKind, FileContent, FileGetter, reassemble,
    reassemble_entries,
};
pub use crc::{crc64_iso, crc64_update};
pub use disasm::{Disassembler, HeaderHook, NoHook, Packer, gzip_writer};
pub use error::{Error, typeflag_text};
pub use pathset::PathSet;
pub use reader::{Header, TarReader, TarTime};
