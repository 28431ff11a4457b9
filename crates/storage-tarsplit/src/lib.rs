//! Streaming tar reader with raw-byte accounting, and the tar-split format used by
//! containers/storage to reproduce applied layers byte for byte.
//!
//! * [`TarReader`] parses a tar stream exactly like Go's `archive/tar` reader (USTAR, PAX
//!   `x`/`g`, GNU `L`/`K`, old GNU, STAR, base-256 numbers, signed/unsigned checksums) and
//!   reports errors in Go's words.
//! * [`Disassembler`] is a pass-through reader: it yields the input bytes unchanged while
//!   writing tar-split JSON lines (the content of `<layer>.tar-split.gz`, byte-identical to
//!   what Go's tar-split 0.12 writes before compression).
//! * [`reassemble`] rebuilds the original tar from a tar-split file and the extracted files,
//!   verifying each file's CRC-64/GO-ISO; [`Entries`] iterates over the entries.
//!
//! Limits: GNU sparse members are rejected ([`Error::Sparse`]); the gzip bytes differ from
//! Go's (pgzip) but any gzip reader accepts both.
//!
//! ```
//! use std::io::Read;
//! use storage_tarsplit::TarReader;
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
//! let mut tr = TarReader::new(&tar[..]);
//! let h = tr.next_header().unwrap().unwrap();
//! assert_eq!(h.name, b"hello");
//! let mut content = Vec::new();
//! tr.read_to_end(&mut content).unwrap();
//! assert_eq!(content, b"hi\n");
//! assert!(tr.next_header().unwrap().is_none());
//! ```
#![deny(missing_docs)]

mod crc;
mod error;
#[allow(dead_code)] // used by the tar-split modules (in progress)
mod gostr;
#[allow(dead_code)]
mod reader;

pub use crc::{crc64_iso, crc64_update};
pub use error::Error;
pub use reader::{Header, TarReader, TarTime};
