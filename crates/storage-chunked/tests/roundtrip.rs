//! zstd:chunked blobs written by this crate: the blob decompresses to the tar byte for byte,
//! the TOC lists every member with content frames that hold exactly the file, and damaged
//! blobs are refused with an error.

use std::io::{Cursor, Read};

fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add =
        |kind: tar::EntryType, path: &str, mode: u32, uid: u64, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid + 1);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            match link {
                Some(l) => b.append_link(&mut h, path, l).unwrap(),
                None => b.append_data(&mut h, path, data).unwrap(),
            }
        };
    add(tar::EntryType::Directory, "etc/", 0o755, 0, b"", None);
    add(
        tar::EntryType::Regular,
        "etc/conf",
        0o4644,
        1000,
        b"hello\n",
        None,
    );
    add(tar::EntryType::Regular, "empty", 0o600, 0, b"", None);
    let long = format!("deep/{}/file", "x".repeat(150));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    add(tar::EntryType::Regular, &long, 0o644, 0, &big, None);
    add(
        tar::EntryType::Symlink,
        "link",
        0o777,
        0,
        b"",
        Some("etc/conf"),
    );
    let mut tar = b.into_inner().unwrap();
    tar.extend_from_slice(b"junk after the end");
    tar
}

fn decompress(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    storage_chunked::tar_reader(blob)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn blob_decompresses_to_the_tar_and_the_toc_locates_every_file() {
    let tar = sample_tar();
    let mut blob = Vec::new();
    let w = storage_chunked::write(&tar[..], &tar[..], &mut blob, 10).unwrap();
    assert_eq!(decompress(&blob), tar, "byte-exact tar");
    assert_eq!(w.uncompressed_size, tar.len() as u64);
    assert_eq!(w.compressed_size, blob.len() as u64);
    assert_eq!(w.uncompressed_digest, storage_testsupport::sha256(&tar));

    let r = storage_chunked::read(&mut Cursor::new(&blob)).unwrap();
    assert_eq!(r.toc_digest, w.toc_digest);
    assert_eq!(r.manifest, w.manifest);
    assert_eq!(
        w.annotations[storage_chunked::MANIFEST_CHECKSUM_KEY],
        w.toc_digest
    );
    let names: Vec<(&str, &str)> = r
        .toc
        .entries
        .iter()
        .map(|e| (e.kind.as_str(), e.name.as_str()))
        .collect();
    let long = format!("deep/{}/file", "x".repeat(150));
    assert_eq!(
        names,
        vec![
            ("dir", "etc/"),
            ("reg", "etc/conf"),
            ("reg", "empty"),
            ("reg", long.as_str()),
            ("symlink", "link")
        ]
    );
    let conf = &r.toc.entries[1];
    assert_eq!(
        (conf.mode, conf.uid, conf.gid, conf.size),
        (0o4644, 1000, 1001, 6)
    );
    assert_eq!(conf.digest, storage_testsupport::sha256(b"hello\n"));
    assert_eq!(r.toc.entries[4].link_name, "etc/conf");
    // Each file's frame holds exactly its content.
    for e in r
        .toc
        .entries
        .iter()
        .filter(|e| e.kind == "reg" && e.size > 0)
    {
        let frame = &blob[e.offset as usize..e.end_offset as usize];
        let data = zstd::bulk::decompress(frame, e.size as usize).unwrap();
        assert_eq!(storage_testsupport::sha256(&data), e.digest, "{}", e.name);
    }
    // The tar-split reassembles nothing but knows every member.
    let ts = String::from_utf8(r.tar_split).unwrap();
    assert!(ts.contains("\"name\":\"etc/conf\""), "{ts}");
    assert_eq!(
        r.toc.tar_split_digest,
        storage_testsupport::sha256(ts.as_bytes())
    );
}

#[test]
fn damaged_blobs_are_refused() {
    let tar = sample_tar();
    let mut blob = Vec::new();
    storage_chunked::write(&tar[..], &tar[..], &mut blob, 3).unwrap();
    // Not zstd:chunked at all.
    assert!(storage_chunked::read(&mut Cursor::new(&tar)).is_err());
    assert!(storage_chunked::read(&mut Cursor::new(&b"tiny"[..])).is_err());
    // A broken footer magic.
    let mut bad = blob.clone();
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    let err = storage_chunked::read(&mut Cursor::new(&bad)).unwrap_err();
    assert!(err.to_string().contains("no footer"), "{err}");
    // A TOC offset pointing elsewhere.
    let mut bad = blob.clone();
    let at = n - 64;
    bad[at] = bad[at].wrapping_add(3);
    assert!(storage_chunked::read(&mut Cursor::new(&bad)).is_err());
    // A damaged tar-split.
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&blob[n - 64 + 8 * i..n - 64 + 8 * i + 8]);
        u64::from_le_bytes(b) as usize
    };
    let mut bad = blob.clone();
    bad[word(4) + word(5) / 2] ^= 0xff;
    assert!(storage_chunked::read(&mut Cursor::new(&bad)).is_err());
    // A length beyond the blob.
    let mut bad = blob.clone();
    bad[n - 64 + 8..n - 64 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(storage_chunked::read(&mut Cursor::new(&bad)).is_err());
}

#[test]
fn a_broken_tar_is_an_error() {
    let mut tar = sample_tar();
    tar[150] ^= 0x55; // the first header's checksum no longer matches
    let mut blob = Vec::new();
    assert!(storage_chunked::write(&tar[..], &tar[..], &mut blob, 3).is_err());
}
