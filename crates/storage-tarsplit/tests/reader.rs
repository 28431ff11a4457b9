//! TarReader behaviour (Go archive/tar semantics).
mod common;

use std::io::Read;

use common::{Fmt, H, TarBuilder, block, pax_record, prng_bytes, set_checksum};
use storage_tarsplit::{Error, Header, TarReader, TarTime};

fn read_all(tar: &[u8]) -> Result<Vec<(Header, Vec<u8>)>, Error> {
    let mut tr = TarReader::new(tar);
    let mut out = Vec::new();
    while let Some(h) = tr.next_header()? {
        let mut c = Vec::new();
        tr.read_to_end(&mut c).map_err(Error::Io)?;
        out.push((h, c));
    }
    Ok(out)
}

#[test]
fn ustar_entries_and_content() {
    let mut b = TarBuilder::new();
    let big = prng_bytes(1, 1024 * 1024 + 1);
    b.dir(b"d/")
        .file(b"d/f", b"hello")
        .file(b"e", b"")
        .file(b"big", &big);
    let mut sl = H::new(b"sl", b'2', 0).link(b"/etc/passwd");
    sl.mode = 0o777;
    b.entry(&sl, b"");
    let mut dev = H::new(b"dev", b'3', 0);
    dev.devmajor = 1;
    dev.devminor = 3;
    b.entry(&dev, b"")
        .entry(&H::new(b"fifo", b'6', 0), b"")
        .entry(&H::new(b"hl", b'1', 0).link(b"d/f"), b"");
    b.end();
    let got = read_all(&b.out).unwrap();
    let names: Vec<_> = got
        .iter()
        .map(|(h, _)| String::from_utf8_lossy(&h.name).into_owned())
        .collect();
    assert_eq!(names, ["d/", "d/f", "e", "big", "sl", "dev", "fifo", "hl"]);
    assert_eq!(got[0].0.typeflag, b'5');
    assert_eq!(got[1].1, b"hello");
    assert_eq!(got[3].1, big);
    assert_eq!(got[4].0.linkname, b"/etc/passwd");
    assert_eq!(got[4].0.mode, 0o777);
    assert_eq!((got[5].0.devmajor, got[5].0.devminor), (1, 3));
    assert_eq!(got[7].0.linkname, b"d/f");
    assert_eq!(
        got[1].0.mtime,
        TarTime {
            secs: 1_700_000_000,
            nanos: 0
        }
    );
    assert_eq!(got[1].0.uname, b"root");
}

#[test]
fn skipping_unread_content() {
    let mut b = TarBuilder::new();
    b.file(b"a", &prng_bytes(2, 1000)).file(b"b", b"xyz").end();
    let mut tr = TarReader::new(&b.out[..]);
    let h = tr.next_header().unwrap().unwrap();
    assert_eq!(h.name, b"a");
    let mut two = [0u8; 2];
    tr.read_exact(&mut two).unwrap();
    let h = tr.next_header().unwrap().unwrap();
    assert_eq!(h.name, b"b");
    assert!(tr.next_header().unwrap().is_none());
    assert!(tr.next_header().unwrap().is_none());
}

#[test]
fn ustar_prefix_and_typeflag_normalization() {
    let mut h = H::new(b"name", 0, 0);
    h.prefix = b"some/prefix".to_vec();
    let mut d = H::new(b"dir/", 0, 0);
    d.fmt = Fmt::V7;
    let mut b = TarBuilder::new();
    b.entry(&h, b"").entry(&d, b"").end();
    let got = read_all(&b.out).unwrap();
    assert_eq!(got[0].0.name, b"some/prefix/name");
    assert_eq!(got[0].0.typeflag, b'0');
    assert_eq!(got[1].0.typeflag, b'5');
    assert!(got[1].0.uname.is_empty(), "V7 has no uname");
}

#[test]
fn pax_records() {
    let long: Vec<u8> = std::iter::repeat_n(b'x', 300).collect();
    let recs: Vec<(&[u8], &[u8])> = vec![
        (b"path", &long),
        (b"linkpath", b"target"),
        (b"uid", b"123456789"),
        (b"gid", b"+7"),
        (b"uname", b"\xffuser"),
        (b"mtime", b"1234567890.123456789123"),
        (b"atime", b"-1.5"),
        (b"SCHILY.xattr.user.k", b"v\0bin"),
        (b"SCHILY.xattr.security.capability", b""),
        (b"size", b"5"),
    ];
    let mut b = TarBuilder::new();
    b.pax(b'x', &recs, Some(&H::new(b"short", b'0', 0)), b"12345");
    b.end();
    let got = read_all(&b.out).unwrap();
    assert_eq!(got.len(), 1);
    let h = &got[0].0;
    assert_eq!(h.name, long);
    assert_eq!(h.linkname, b"target");
    assert_eq!(h.uid, 123_456_789);
    assert_eq!(h.gid, 7);
    assert_eq!(h.uname, b"\xffuser");
    assert_eq!(
        h.mtime,
        TarTime {
            secs: 1_234_567_890,
            nanos: 123_456_789
        }
    );
    assert_eq!(
        h.atime,
        Some(TarTime {
            secs: -2,
            nanos: 500_000_000
        })
    );
    assert_eq!(h.size, 5);
    assert_eq!(got[0].1, b"12345");
    assert_eq!(
        h.xattrs,
        vec![
            (b"user.k".to_vec(), b"v\0bin".to_vec()),
            (b"security.capability".to_vec(), Vec::new())
        ]
    );
    assert_eq!(h.pax.len(), recs.len());
}

#[test]
fn pax_global_header_is_an_entry() {
    let mut b = TarBuilder::new();
    b.pax(b'g', &[(b"comment", b"hi")], None, b"");
    b.file(b"f", b"1").end();
    let got = read_all(&b.out).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0.typeflag, b'g');
    assert_eq!(got[0].0.name, b"PaxHeaders.0/x");
    assert_eq!(got[0].0.size, 0);
    assert_eq!(got[0].0.pax, vec![("comment".to_owned(), b"hi".to_vec())]);
    assert_eq!(got[1].0.name, b"f");
}

#[test]
fn gnu_long_names_and_base256() {
    let long: Vec<u8> = (0..400).map(|i| b'a' + (i % 26) as u8).collect();
    let mut h = H::new(b"trunc", b'2', 0).fmt(Fmt::Gnu).link(b"t");
    h.uid = 1 << 40; // base-256 in an 8-byte field
    let mut b = TarBuilder::new();
    b.gnu_long(b'L', &long, &h, b"");
    b.gnu_long(b'K', &long, &H::new(b"hl", b'1', 0).fmt(Fmt::Gnu), b"");
    b.end();
    let got = read_all(&b.out).unwrap();
    assert_eq!(got[0].0.name, long);
    assert_eq!(got[0].0.uid, 1 << 40);
    assert_eq!(got[1].0.linkname, long);
    assert_eq!(got[1].0.name, b"hl");
}

#[test]
fn end_of_archive_variants() {
    let mut b = TarBuilder::new();
    b.file(b"f", b"x");
    let base = b.bytes();
    // No end marker at all: clean EOF.
    assert_eq!(read_all(&base).unwrap().len(), 1);
    // One zero block then EOF.
    let mut one = base.clone();
    one.extend_from_slice(&[0; 512]);
    assert_eq!(read_all(&one).unwrap().len(), 1);
    // Zero block then a partial block.
    let mut partial = one.clone();
    partial.extend_from_slice(&[0; 100]);
    assert!(matches!(read_all(&partial), Err(Error::UnexpectedEof)));
    // Zero block then a non-zero block.
    let mut nz = one.clone();
    nz.extend_from_slice(&block(&H::new(b"g", b'0', 0)));
    let e = read_all(&nz).unwrap_err();
    assert_eq!(e.to_string(), "archive/tar: invalid tar header");
    // Padding missing after the last file: Go reports a clean end.
    let mut nopad = block(&H::new(b"f", b'0', 3)).to_vec();
    nopad.extend_from_slice(b"abc");
    assert_eq!(read_all(&nopad).unwrap().len(), 1);
}

#[test]
fn malformed_headers() {
    let mut b = TarBuilder::new();
    b.file(b"f", b"hello").end();
    let good = b.bytes();
    // Truncated header.
    assert_eq!(
        read_all(&good[..300]).unwrap_err().to_string(),
        "unexpected EOF"
    );
    // Truncated content.
    let mut tr = TarReader::new(&good[..515]);
    tr.next_header().unwrap();
    let e = tr.read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(e.to_string(), "unexpected EOF");
    assert_eq!(
        tr.next_header().unwrap_err().to_string(),
        "unexpected EOF",
        "sticky"
    );
    // Bad checksum.
    let mut bad = good.clone();
    bad[0] = b'g';
    assert_eq!(
        read_all(&bad).unwrap_err().to_string(),
        "archive/tar: invalid tar header"
    );
    // Bad octal number with a valid checksum.
    let mut bad = block(&H::new(b"f", b'0', 0));
    bad[100..108].copy_from_slice(b"0009644\0");
    set_checksum(&mut bad);
    assert!(matches!(read_all(&bad), Err(Error::InvalidHeader)));
    // Signed checksum accepted.
    let mut hi = block(&H::new("é".as_bytes(), b'0', 0));
    hi[148..156].copy_from_slice(b"        ");
    let signed: i64 = hi.iter().map(|&c| i64::from(c as i8)).sum();
    hi[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
    assert_eq!(read_all(&hi).unwrap()[0].0.name, "é".as_bytes());
    // Negative size.
    let mut neg = block(&H::new(b"f", b'0', 0));
    neg[124..136].copy_from_slice(&[0xff; 12]);
    set_checksum(&mut neg);
    assert!(matches!(read_all(&neg), Err(Error::InvalidHeader)));
    // Bad PAX record.
    let mut b = TarBuilder::new();
    let mut ph = H::new(b"p", b'x', 6);
    ph.mode = 0;
    b.entry(&ph, b"9 a=b\n").file(b"f", b"").end();
    assert!(matches!(read_all(&b.out), Err(Error::InvalidHeader)));
    // Bad PAX number.
    let mut b = TarBuilder::new();
    b.pax(b'x', &[(b"uid", b"12a")], Some(&H::new(b"f", b'0', 0)), b"")
        .end();
    assert!(matches!(read_all(&b.out), Err(Error::InvalidHeader)));
}

#[test]
fn special_data_capped_at_one_mib() {
    let long = vec![b'a'; (1 << 20) + 1];
    let mut b = TarBuilder::new();
    b.gnu_long(b'L', &long[..(1 << 20) - 1], &H::new(b"x", b'0', 0), b"")
        .end();
    assert_eq!(read_all(&b.out).unwrap()[0].0.name.len(), (1 << 20) - 1);
    let mut b = TarBuilder::new();
    b.gnu_long(b'L', &long, &H::new(b"x", b'0', 0), b"").end();
    assert_eq!(
        read_all(&b.out).unwrap_err().to_string(),
        "archive/tar: header field too long"
    );
    let mut b = TarBuilder::new();
    let rec = pax_record(b"path", &long);
    let mut ph = H::new(b"p", b'x', rec.len() as u64);
    ph.mode = 0;
    b.entry(&ph, &rec).file(b"f", b"").end();
    assert!(matches!(read_all(&b.out), Err(Error::FieldTooLong)));
}

#[test]
fn old_gnu_sparse_is_refused() {
    let mut b = TarBuilder::new();
    b.entry(&H::new(b"s", b'S', 0).fmt(Fmt::Gnu), b"").end();
    let e = read_all(&b.out).unwrap_err();
    // Go's text first (its extractor refuses the type too), then the reason.
    assert_eq!(
        e.to_string(),
        "unhandled tar header type 83 ('S', old GNU sparse file \"s\"): sparse files are not supported"
    );
    assert_eq!(
        storage_tarsplit::typeflag_text(b'V'),
        "'V', GNU volume label"
    );
    assert_eq!(
        storage_tarsplit::typeflag_text(0x80),
        "'\\x80', unknown type"
    );
}

/// The logical content of the sparse test files: `abc` at 2, `de` at 10, 16 bytes.
const SPARSE_LOGICAL: &[u8] = b"\0\0abc\0\0\0\0\0de\0\0\0\0";

/// A PAX GNU sparse member named `s` in the TarBuilder's PAX header, with `recs`, the
/// physical data area `data`, then a plain file `after`.
fn sparse_tar(recs: &[(&[u8], &[u8])], data: &[u8]) -> Vec<u8> {
    let mut b = TarBuilder::new();
    b.pax(
        b'x',
        recs,
        Some(&H::new(b"s", b'0', data.len() as u64)),
        data,
    )
    .file(b"after", b"x")
    .end();
    b.out
}

/// The 1.0 map block (`2` fragments: 2+3, 10+2), padded to a block, then the data.
fn map_1x0(map: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = map.to_vec();
    v.resize(512, 0);
    v.extend_from_slice(data);
    v
}

/// Go's `archive/tar` (toolchain >= 1.23, the same in tar-split's fork) expands PAX GNU
/// sparse files of formats 0.0, 0.1 and 1.0: typeflag `0`, the real name and size, the
/// logical content with holes as zeros.
#[test]
fn pax_sparse_files_are_expanded() {
    let v01: &[(&[u8], &[u8])] = &[
        (b"GNU.sparse.major", b"0"),
        (b"GNU.sparse.minor", b"1"),
        (b"GNU.sparse.name", b"real"),
        (b"GNU.sparse.size", b"16"),
        (b"GNU.sparse.numblocks", b"2"),
        (b"GNU.sparse.map", b"2,3,10,2"),
    ];
    let v00: &[(&[u8], &[u8])] = &[
        (b"GNU.sparse.size", b"16"),
        (b"GNU.sparse.numblocks", b"2"),
        (b"GNU.sparse.offset", b"2"),
        (b"GNU.sparse.numbytes", b"3"),
        (b"GNU.sparse.offset", b"10"),
        (b"GNU.sparse.numbytes", b"2"),
    ];
    let v10: &[(&[u8], &[u8])] = &[
        (b"GNU.sparse.major", b"1"),
        (b"GNU.sparse.minor", b"0"),
        (b"GNU.sparse.name", b"real"),
        (b"GNU.sparse.realsize", b"16"),
    ];
    for (label, tar, name) in [
        ("0.1", sparse_tar(v01, b"abcde"), "real"),
        ("0.0", sparse_tar(v00, b"abcde"), "s"),
        (
            "1.0",
            sparse_tar(v10, &map_1x0(b"2\n2\n3\n10\n2\n", b"abcde")),
            "real",
        ),
    ] {
        let got = read_all(&tar).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(got.len(), 2, "{label}");
        let (h, content) = &got[0];
        assert_eq!(h.typeflag, b'0', "{label}");
        assert_eq!(h.name, name.as_bytes(), "{label}");
        assert_eq!(h.size, 16, "{label}");
        assert_eq!(content, SPARSE_LOGICAL, "{label}");
        assert_eq!(
            (got[1].0.name.as_slice(), got[1].1.as_slice()),
            (&b"after"[..], &b"x"[..])
        );
    }
    // A sparse map with a trailing hole and an empty fragment.
    let tar = sparse_tar(
        &[
            (b"GNU.sparse.size", b"8"),
            (b"GNU.sparse.numblocks", b"2"),
            (b"GNU.sparse.map", b"0,1,3,0"),
        ],
        b"z",
    );
    assert_eq!(read_all(&tar).unwrap()[0].1, b"z\0\0\0\0\0\0\0");
    // An unknown version is a plain file.
    let tar = sparse_tar(
        &[(b"GNU.sparse.major", b"2"), (b"GNU.sparse.minor", b"0")],
        b"abc",
    );
    let got = read_all(&tar).unwrap();
    assert_eq!((got[0].0.size, got[0].1.as_slice()), (3, &b"abc"[..]));
}

/// What Go refuses in a PAX sparse file, with its words.
#[test]
fn bad_pax_sparse_files_are_refused_as_go_does() {
    let map =
        |numblocks: &'static [u8], map: &'static [u8]| -> Vec<(&'static [u8], &'static [u8])> {
            vec![
                (b"GNU.sparse.major", b"0"),
                (b"GNU.sparse.minor", b"1"),
                (b"GNU.sparse.size", b"16"),
                (b"GNU.sparse.numblocks", numblocks),
                (b"GNU.sparse.map", map),
            ]
        };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "less data than the map",
            sparse_tar(&map(b"2", b"2,3,10,2"), b"abcd"),
            "archive/tar: sparse file references non-existent data",
        ),
        (
            "more data than the map",
            sparse_tar(&map(b"2", b"2,3,10,2"), b"abcdef"),
            "archive/tar: sparse file contains unreferenced data",
        ),
        (
            "fragment beyond the size",
            sparse_tar(&map(b"1", b"15,3"), b"abc"),
            "archive/tar: invalid tar header",
        ),
        (
            "fragments out of order",
            sparse_tar(&map(b"2", b"10,2,2,3"), b"abcde"),
            "archive/tar: invalid tar header",
        ),
        (
            "numblocks does not match the map",
            sparse_tar(&map(b"3", b"2,3,10,2"), b"abcde"),
            "archive/tar: invalid tar header",
        ),
        (
            "0.1 without numblocks",
            sparse_tar(
                &[
                    (b"GNU.sparse.major", b"0"),
                    (b"GNU.sparse.minor", b"1"),
                    (b"GNU.sparse.map", b"0,1"),
                ],
                b"a",
            ),
            "archive/tar: invalid tar header",
        ),
        (
            "bad real size",
            sparse_tar(
                &[
                    (b"GNU.sparse.map", b"0,1"),
                    (b"GNU.sparse.numblocks", b"1"),
                    (b"GNU.sparse.size", b"x"),
                ],
                b"a",
            ),
            "archive/tar: invalid tar header",
        ),
        (
            "1.0 map cut short",
            sparse_tar(
                &[
                    (b"GNU.sparse.major", b"1"),
                    (b"GNU.sparse.minor", b"0"),
                    (b"GNU.sparse.realsize", b"16"),
                ],
                b"2\n2\n3\n",
            ),
            "unexpected EOF",
        ),
        (
            "1.0 map with a bad number",
            sparse_tar(
                &[
                    (b"GNU.sparse.major", b"1"),
                    (b"GNU.sparse.minor", b"0"),
                    (b"GNU.sparse.realsize", b"16"),
                ],
                &map_1x0(b"1\nx\n3\n", b"abc"),
            ),
            "archive/tar: invalid tar header",
        ),
    ];
    for (label, tar, want) in cases {
        let e = read_all(&tar).expect_err(label);
        assert_eq!(e.to_string(), want, "{label}");
    }
}

#[test]
fn header_only_types_have_no_content() {
    // A directory header claiming a size: Go reads no content and the next block is a header.
    let mut b = TarBuilder::new();
    b.entry(&H::new(b"d/", b'5', 700), b"")
        .file(b"f", b"z")
        .end();
    let got = read_all(&b.out).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0.size, 700);
    assert!(got[0].1.is_empty());
}
