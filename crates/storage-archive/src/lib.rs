//! Applying and producing layer tar diffs the way Go's containers/storage does:
//! compression detection, digests and sizes, whiteouts, ID mapping, and
//! extraction confined to the layer root by the kernel.
//!
//! **Use it for:** applying a tar diff to a directory and producing the diff of two trees,
//! with Go's semantics. **Not for:** layer records, tar-split files on disk or stores: that is
//! `storage_layers` and `containers_storage`.
//!
//! # Apply side
//!
//! * [`detect_compression`] / [`Compression`]: magic-number detection with the
//!   integer values Go records in `layers.json` (0 none … 4 zstd).
//! * [`open_diff`]: the single-pass pipeline of the layer store's `ApplyDiff`. It
//!   peeks 10240 bytes, counts and sha256-digests the input, decompresses (gzip
//!   multi-member, bzip2, xz, zstd) on a helper thread feeding a bounded channel
//!   (~2 MiB in flight), counts and digests the decompressed stream (once for
//!   uncompressed input), and logs the owners of the tar headers. Read the
//!   returned [`DiffReader`], then [`DiffReader::finish`] gives the [`DiffStats`]
//!   (`compressed-diff-digest`, `diff-digest`, sizes, `uidset`/`gidset`).
//! * [`open_diff_recording`]: the same, and the helper thread also records the
//!   stream's tar-split lines (a `storage_tarsplit::Disassembler` in the same pass,
//!   its errors reaching the reader in stream order), so that the reader's thread
//!   does nothing but extract; [`DiffReader::finish_recording`] hands the writer back.
//! * [`unpack`]: extraction with Go's `UnpackLayer` semantics for naive drivers
//!   ([`WhiteoutFormat::Apply`]) or `Unpack` with the overlay converter
//!   ([`WhiteoutFormat::Overlay`]) or none ([`WhiteoutFormat::Aufs`]); returns the
//!   sum of the entries' header sizes. [`unpack_sized`] also returns the size of
//!   the extracted tree (Go's `directory.Size`), counted while extracting, when it
//!   can be known without a walk ([`Unpacked`]).
//!
//! Confinement: every path is resolved relative to an `O_PATH` fd of the root
//! with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, and operations act on
//! (directory fd, final component) without following a final symlink. That gives
//! the semantics of Go's chrooted helper without chroot or re-exec: `..` is
//! clamped at the root, absolute names and symlink targets resolve inside it.
//! Resolved directory fds are cached, so many files in one directory cost one
//! resolution. There is no `unsafe` code in this crate (all system calls go
//! through `rustix`).
//!
//! Limits: the extractor needs Linux ≥ 5.6 (`openat2`) and `/proc` (xattrs are
//! set through `/proc/self/fd/N/name`). Warnings (ignored `lchown` failures,
//! unsupported xattrs) go to `tracing`. `unpack` rejects duplicate paths itself
//! (Go rejects them in tar-split). Parent directories implied by the tar are
//! created with mode 0755 (the process umask applies in the overlay/AUFS modes,
//! as in Go). Nothing is fsynced; callers `syncfs` once at the end.
//!
//! # Export side (H6's modules)
//!
//! * [`changes`]: Go's `ChangesDirs` (layer vs parent trees) and `ChangesSize`.
//! * [`export`]: Go 1.60's tar writer, `TarWithOptions` (`tar_dir`) and
//!   `ExportChanges` (`export_changes`), byte for byte. Entries are read relative to their
//!   directory's descriptor without following a symbolic link (`export::read_entry`); a
//!   change whose path crosses a symbolic link is skipped where Go would follow it.
//!
//! # Example
//!
//! ```
//! use std::io::Read;
//! use storage_archive::{Compression, UnpackOptions, open_diff, unpack};
//!
//! // A one-file tar, built by hand: "hello" containing "hi\n", mode 0640.
//! let mut hdr = [0u8; 512];
//! hdr[..5].copy_from_slice(b"hello");
//! hdr[100..108].copy_from_slice(b"0000640\0");
//! hdr[108..116].copy_from_slice(b"0000000\0");
//! hdr[116..124].copy_from_slice(b"0000000\0");
//! hdr[124..136].copy_from_slice(b"00000000003\0");
//! hdr[136..148].copy_from_slice(b"14000000000\0");
//! hdr[156] = b'0';
//! hdr[257..265].copy_from_slice(b"ustar\x0000");
//! hdr[148..156].copy_from_slice(b"        ");
//! let sum: u32 = hdr.iter().map(|&b| u32::from(b)).sum();
//! hdr[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
//! let mut tar = hdr.to_vec();
//! tar.extend_from_slice(b"hi\n");
//! tar.resize(512 * 4, 0);
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut diff = open_diff(Box::new(std::io::Cursor::new(tar.clone()))).unwrap();
//! assert_eq!(diff.compression(), Compression::None);
//! let size = unpack(&mut diff, dir.path(), &UnpackOptions::default()).unwrap();
//! let stats = diff.finish().unwrap();
//!
//! assert_eq!(size, 3);
//! assert_eq!(std::fs::read(dir.path().join("hello")).unwrap(), b"hi\n");
//! assert_eq!(stats.uncompressed_size, tar.len() as i64);
//! assert_eq!(stats.compressed_digest, stats.uncompressed_digest);
//! assert_eq!(stats.uidset, [0]);
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod changes;
mod compression;
mod diff;
mod error;
pub mod export;
mod fsops;
mod gopath;
mod unpack;
pub mod xattr;

pub use compression::{Compression, detect_compression};
pub use diff::{DiffReader, DiffStats, open_diff, open_diff_recording};
pub use error::Error;
pub use unpack::{UnpackOptions, Unpacked, WhiteoutFormat, unpack, unpack_sized};
