//! The storage-archive targets: decompression and unpacking.

use std::io::{Cursor, Read};

use storage_archive::{Compression, UnpackOptions, WhiteoutFormat, detect_compression, open_diff};
use storage_types::{Digest, IdMap};

use crate::Scratch;

/// Output past this is not read (a small input can inflate to a lot).
const MAX_OUT: u64 = 64 << 20;

/// Compression detection and the decompression pipeline (`open_diff`): the detected
/// compression is that of the first bytes, and when the stream decompresses, the sizes and
/// digests it reports are those of the bytes given and read (an uncompressed input comes
/// through unchanged).
pub(crate) fn decompress(_: &mut Scratch, data: &[u8]) {
    let expected = detect_compression(&data[..data.len().min(10240)]);
    let mut reader = open_diff(Box::new(Cursor::new(data.to_vec())))
        .unwrap_or_else(|e| panic!("open_diff on memory: {e}"));
    assert_eq!(reader.compression(), expected);
    let mut out = Vec::new();
    let read = (&mut reader).take(MAX_OUT).read_to_end(&mut out);
    if read.is_err() || out.len() as u64 == MAX_OUT {
        return;
    }
    let stats = reader
        .finish()
        .unwrap_or_else(|e| panic!("finish after the stream was read to its end: {e}"));
    assert_eq!(stats.compression, expected);
    assert_eq!(stats.compressed_size, data.len() as i64);
    assert_eq!(stats.compressed_digest, Digest::sha256(data));
    assert_eq!(stats.uncompressed_size, out.len() as i64);
    assert_eq!(stats.uncompressed_digest, Digest::sha256(&out));
    if expected == Compression::None {
        assert!(out == data, "an uncompressed stream changed");
    }
}

/// The unpack options an input's first byte selects.
fn options(sel: u8) -> UnpackOptions {
    let map = || {
        vec![IdMap {
            container_id: 0,
            host_id: 100_000,
            size: 65_536,
        }]
    };
    UnpackOptions {
        whiteout: match sel & 3 {
            1 => WhiteoutFormat::Overlay {
                opaque_xattr: "trusted.overlay.opaque",
            },
            2 => WhiteoutFormat::Aufs,
            _ => WhiteoutFormat::Apply,
        },
        force_mask: (sel & 4 != 0).then_some(0o700),
        uid_map: if sel & 8 != 0 { map() } else { Vec::new() },
        gid_map: if sel & 8 != 0 { map() } else { Vec::new() },
        ignore_chown_errors: sel & 16 != 0,
        in_user_ns: sel & 32 != 0,
    }
}

/// `unpack` of the tar after the first byte (which selects the whiteout format, force mask,
/// ID maps, …) into an empty scratch root: whatever the tar holds (`..`, absolute names,
/// symlinks and hard links out of the root, whiteouts of `..`), nothing beside the root is
/// created, changed, removed or opened.
pub(crate) fn unpack(scratch: &mut Scratch, data: &[u8]) {
    let Some((&sel, tar)) = data.split_first() else {
        return;
    };
    let fence = scratch.fence("unpack");
    fence
        .reset_root()
        .unwrap_or_else(|e| panic!("emptying {}: {e}", fence.root().display()));
    let _ = storage_archive::unpack(&mut &tar[..], fence.root(), &options(sel));
    fence.check();
}
