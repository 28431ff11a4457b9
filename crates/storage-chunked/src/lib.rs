//! The zstd:chunked layer format (containers/storage `pkg/chunked`): a tar stream compressed
//! as a sequence of zstd frames — the headers of each member in one frame, a regular file's
//! content in a frame of its own — followed by three zstd *skippable* frames: the TOC (a JSON
//! list of the members with the offsets of their content frames, zstd-compressed), the
//! tar-split of the tar (zstd-compressed JSON lines) and a 64-byte footer locating both.
//!
//! Skippable frames are ignored by zstd decoders, so the whole blob decompresses to the
//! original tar, byte for byte ([`tar_reader`]); a reader that wants single files uses the
//! TOC ([`read`]). The TOC digest (the `io.github.containers.zstd-chunked.manifest-checksum`
//! annotation, a layer's `toc-digest`) is the sha256 of the compressed TOC bytes.
//!
//! This crate owns the byte format only; applying a blob to a layer (the "differ") is the
//! Store's business.
//!
//! ```
//! let tar = {
//!     let mut b = tar::Builder::new(Vec::new());
//!     let mut h = tar::Header::new_ustar();
//!     h.set_size(5);
//!     h.set_mode(0o644);
//!     h.set_entry_type(tar::EntryType::Regular);
//!     b.append_data(&mut h, "hello", &b"world"[..]).unwrap();
//!     b.into_inner().unwrap()
//! };
//! let mut blob = Vec::new();
//! let written = storage_chunked::write(&tar[..], &tar[..], &mut blob, 3).unwrap();
//! let read = storage_chunked::read(&mut std::io::Cursor::new(&blob)).unwrap();
//! assert_eq!(read.toc_digest, written.toc_digest);
//! assert_eq!(read.toc.entries[0].name, "hello");
//! let mut back = Vec::new();
//! std::io::copy(&mut storage_chunked::tar_reader(&blob[..]).unwrap(), &mut back).unwrap();
//! assert_eq!(back, tar);
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::rc::Rc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use storage_tarsplit::{Disassembler, TarReader};
use storage_types::Timestamp;

/// The magic of a zstd skippable frame (the first of the 16 allowed values).
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
/// Header of a skippable frame: magic and length, little-endian.
const SKIPPABLE_HEADER: u64 = 8;
/// The footer's payload length.
pub const FOOTER_SIZE: usize = 64;
/// The footer's last eight bytes.
pub const FOOTER_MAGIC: &[u8; 8] = b"GNUlInUx";
/// The footer's manifest type of a zstd:chunked TOC (`ManifestTypeCRFS`).
pub const MANIFEST_TYPE_CRFS: u64 = 1;
/// The annotation holding the TOC digest.
pub const MANIFEST_CHECKSUM_KEY: &str = "io.github.containers.zstd-chunked.manifest-checksum";
/// The annotation `offset:compressed:uncompressed:type` of the TOC.
pub const MANIFEST_POSITION_KEY: &str = "io.github.containers.zstd-chunked.manifest-position";
/// The annotation `offset:compressed:uncompressed` of the tar-split.
pub const TARSPLIT_POSITION_KEY: &str = "io.github.containers.zstd-chunked.tarsplit-position";
/// Limits of what [`read`] accepts (a TOC or tar-split larger than this is refused).
const MAX_SECTION: u64 = 1 << 30;

/// The TOC (`minimal.TOC`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Toc {
    /// Format version (1).
    pub version: i32,
    /// The tar's members, in order.
    pub entries: Vec<TocEntry>,
    /// sha256 of the uncompressed tar-split.
    #[serde(
        rename = "tarSplitDigest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub tar_split_digest: String,
}

/// One member of the tar (`minimal.FileMetadata`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TocEntry {
    /// `reg`, `dir`, `symlink`, `hardlink`, `char`, `block`, `fifo`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The member's name.
    pub name: String,
    /// Link target.
    #[serde(rename = "linkName", default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    /// Permission bits (with setuid, setgid, sticky).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode: i64,
    /// Content size of a regular file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: i64,
    /// Owner.
    #[serde(rename = "uid", default, skip_serializing_if = "is_zero")]
    pub uid: i64,
    /// Group.
    #[serde(rename = "gid", default, skip_serializing_if = "is_zero")]
    pub gid: i64,
    /// Modification time.
    #[serde(rename = "modtime", default, skip_serializing_if = "Option::is_none")]
    pub mod_time: Option<Timestamp>,
    /// Device major number.
    #[serde(rename = "devMajor", default, skip_serializing_if = "is_zero")]
    pub dev_major: i64,
    /// Device minor number.
    #[serde(rename = "devMinor", default, skip_serializing_if = "is_zero")]
    pub dev_minor: i64,
    /// Extended attributes, values in base64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// sha256 of a regular file's content.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Offset of the frame holding the content in the blob.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: i64,
    /// End of that frame.
    #[serde(rename = "endOffset", default, skip_serializing_if = "is_zero")]
    pub end_offset: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// What [`write()`] made.
#[derive(Debug, Clone)]
pub struct Written {
    /// `sha256:` of the compressed TOC (the layer's `toc-digest`).
    pub toc_digest: String,
    /// The TOC JSON, uncompressed (a layer's `zstd-chunked-manifest` big data).
    pub manifest: Vec<u8>,
    /// The annotations a zstd:chunked blob is published with (checksum and positions).
    pub annotations: BTreeMap<String, String>,
    /// `sha256:` of the tar.
    pub uncompressed_digest: String,
    /// Length of the tar.
    pub uncompressed_size: u64,
    /// Length of the blob.
    pub compressed_size: u64,
}

/// What [`read`] found in a blob.
#[derive(Debug, Clone)]
pub struct Chunked {
    /// The TOC.
    pub toc: Toc,
    /// The TOC JSON as stored (uncompressed).
    pub manifest: Vec<u8>,
    /// `sha256:` of the compressed TOC.
    pub toc_digest: String,
    /// The tar-split JSON lines (uncompressed).
    pub tar_split: Vec<u8>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn sha256_hex(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// A writer that counts bytes.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that keeps a copy of what it hands out (in a buffer shared with the writer).
struct Tee<R> {
    inner: R,
    seen: Rc<RefCell<Vec<u8>>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.borrow_mut().extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fn skippable(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| invalid("skippable frame too large"))?;
    out.write_all(&SKIPPABLE_MAGIC.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(data)
}

fn frame(out: &mut impl Write, data: &[u8], level: i32) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    out.write_all(&zstd::bulk::compress(data, level)?)
}

fn kind_of(typeflag: u8) -> Option<&'static str> {
    Some(match typeflag {
        b'0' | 0 | b'7' => "reg",
        b'1' => "hardlink",
        b'2' => "symlink",
        b'3' => "char",
        b'4' => "block",
        b'5' => "dir",
        b'6' => "fifo",
        _ => return None,
    })
}

/// Packs the uncompressed tar `tar` as zstd:chunked (compression `level`) into `out`.
/// `tar_again` is the same tar a second time (its tar-split is recorded from it).
pub fn write(
    tar: impl Read,
    tar_again: impl Read,
    out: impl Write,
    level: i32,
) -> io::Result<Written> {
    let mut out = Counting { inner: out, n: 0 };
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut tr = TarReader::new(Tee {
        inner: tar,
        seen: seen.clone(),
    });
    let mut entries = Vec::new();
    let mut hasher = sha2::Sha256::new();
    let mut total = 0u64;
    let mut take = || -> Vec<u8> {
        let bytes = std::mem::take(&mut *seen.borrow_mut());
        hasher.update(&bytes);
        total += bytes.len() as u64;
        bytes
    };
    loop {
        let header = tr.next_header().map_err(|e| invalid(e.to_string()))?;
        let headers = take();
        frame(&mut out, &headers, level)?;
        let Some(h) = header else { break };
        let Some(kind) = kind_of(h.typeflag) else {
            continue;
        };
        let mut e = TocEntry {
            kind: kind.into(),
            name: String::from_utf8_lossy(&h.name).into_owned(),
            link_name: String::from_utf8_lossy(&h.linkname).into_owned(),
            mode: h.mode & 0o7777,
            uid: h.uid,
            gid: h.gid,
            mod_time: Some(Timestamp::from_unix(h.mtime.secs, h.mtime.nanos)),
            dev_major: h.devmajor,
            dev_minor: h.devminor,
            xattrs: h
                .xattrs
                .iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        base64::engine::general_purpose::STANDARD.encode(v),
                    )
                })
                .collect(),
            ..TocEntry::default()
        };
        if kind == "reg" {
            e.size = h.size;
            let mut content = Vec::new();
            tr.read_to_end(&mut content)?;
            let _ = take();
            e.digest = sha256_hex(&content);
            if !content.is_empty() {
                e.offset = out.n as i64;
                frame(&mut out, &content, level)?;
                e.end_offset = out.n as i64;
            }
        }
        entries.push(e);
    }
    // Whatever follows the end-of-archive marker.
    let mut tee = tr.into_inner();
    std::io::copy(&mut tee, &mut io::sink())?;
    let rest = take();
    frame(&mut out, &rest, level)?;

    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let ts = Disassembler::new(tar_again, Vec::new())
        .finish()
        .map_err(|e| invalid(e.to_string()))?;
    let toc = Toc {
        version: 1,
        entries,
        tar_split_digest: sha256_hex(&ts),
    };
    let manifest = serde_json::to_vec(&toc).map_err(|e| invalid(e.to_string()))?;
    let compressed_manifest = zstd::bulk::compress(&manifest, level)?;
    let manifest_offset = out.n + SKIPPABLE_HEADER;
    skippable(&mut out, &compressed_manifest)?;
    let compressed_ts = zstd::bulk::compress(&ts, level)?;
    let ts_offset = out.n + SKIPPABLE_HEADER;
    skippable(&mut out, &compressed_ts)?;
    let mut footer = [0u8; FOOTER_SIZE];
    for (i, v) in [
        manifest_offset,
        compressed_manifest.len() as u64,
        manifest.len() as u64,
        MANIFEST_TYPE_CRFS,
        ts_offset,
        compressed_ts.len() as u64,
        ts.len() as u64,
    ]
    .into_iter()
    .enumerate()
    {
        footer[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
    }
    footer[56..].copy_from_slice(FOOTER_MAGIC);
    skippable(&mut out, &footer)?;
    out.flush()?;
    let toc_digest = sha256_hex(&compressed_manifest);
    let annotations = BTreeMap::from([
        (MANIFEST_CHECKSUM_KEY.to_string(), toc_digest.clone()),
        (
            MANIFEST_POSITION_KEY.to_string(),
            format!(
                "{manifest_offset}:{}:{}:{MANIFEST_TYPE_CRFS}",
                compressed_manifest.len(),
                manifest.len()
            ),
        ),
        (
            TARSPLIT_POSITION_KEY.to_string(),
            format!("{ts_offset}:{}:{}", compressed_ts.len(), ts.len()),
        ),
    ]);
    Ok(Written {
        toc_digest,
        manifest,
        annotations,
        uncompressed_digest: digest,
        uncompressed_size: total,
        compressed_size: out.n,
    })
}

fn read_section(
    blob: &mut (impl Read + Seek),
    offset: u64,
    len: u64,
    plain: u64,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    if len > MAX_SECTION || plain > MAX_SECTION {
        return Err(invalid("zstd:chunked section too large"));
    }
    blob.seek(SeekFrom::Start(offset))?;
    let mut compressed = vec![0u8; len as usize];
    blob.read_exact(&mut compressed)?;
    let data = zstd::bulk::decompress(&compressed, plain as usize)?;
    if data.len() as u64 != plain {
        return Err(invalid("zstd:chunked section has the wrong length"));
    }
    Ok((compressed, data))
}

/// Reads the footer, TOC and tar-split of a zstd:chunked blob.
pub fn read(blob: &mut (impl Read + Seek)) -> io::Result<Chunked> {
    let size = blob.seek(SeekFrom::End(0))?;
    let footer_len = FOOTER_SIZE as u64 + SKIPPABLE_HEADER;
    if size < footer_len {
        return Err(invalid("blob too small to be zstd:chunked"));
    }
    blob.seek(SeekFrom::Start(size - footer_len))?;
    let mut buf = [0u8; FOOTER_SIZE + 8];
    blob.read_exact(&mut buf)?;
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[8 + 8 * i..16 + 8 * i]);
        u64::from_le_bytes(b)
    };
    let magic = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if magic != SKIPPABLE_MAGIC || len as usize != FOOTER_SIZE || &buf[64..72] != FOOTER_MAGIC {
        return Err(invalid("not a zstd:chunked blob (no footer)"));
    }
    if word(3) != MANIFEST_TYPE_CRFS {
        return Err(invalid(format!("unsupported manifest type {}", word(3))));
    }
    let (compressed, manifest) = read_section(blob, word(0), word(1), word(2))?;
    let (_, tar_split) = read_section(blob, word(4), word(5), word(6))?;
    let toc: Toc = serde_json::from_slice(&manifest).map_err(|e| invalid(format!("TOC: {e}")))?;
    if !toc.tar_split_digest.is_empty() && toc.tar_split_digest != sha256_hex(&tar_split) {
        return Err(invalid("the tar-split does not match the TOC's digest"));
    }
    Ok(Chunked {
        toc,
        manifest,
        toc_digest: sha256_hex(&compressed),
        tar_split,
    })
}

/// The tar stream of a zstd:chunked blob (its frames decompressed; the skippable ones are
/// skipped).
pub fn tar_reader<'a>(blob: impl Read + 'a) -> io::Result<impl Read + 'a> {
    zstd::stream::read::Decoder::new(blob)
}
