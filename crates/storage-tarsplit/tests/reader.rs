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
fn sparse_is_reported() {
    let mut b = TarBuilder::new();
    b.entry(&H::new(b"s", b'S', 0).fmt(Fmt::Gnu), b"").end();
    let e = read_all(&b.out).unwrap_err();
    // Go's text first (its extractor refuses the type too), then the reason.
    assert_eq!(
        e.to_string(),
        "unhandled tar header type 83 ('S', old GNU sparse file \"s\"): sparse files are not supported"
    );
    // PAX sparse files are regular files ('0'): the error says what they are, never
    // "unhandled tar header type 48".
    for (recs, format, name) in [
        (
            &[
                (&b"GNU.sparse.major"[..], &b"1"[..]),
                (b"GNU.sparse.minor", b"0"),
                (b"GNU.sparse.name", b"real"),
            ][..],
            "1.0",
            "real",
        ),
        (
            &[
                (b"GNU.sparse.major", b"0"),
                (b"GNU.sparse.minor", b"1"),
                (b"GNU.sparse.map", b"0,1"),
            ],
            "0.1",
            "s",
        ),
        (&[(b"GNU.sparse.map", b"0,1")], "0.1", "s"),
        (
            &[
                (b"GNU.sparse.numblocks", b"1"),
                (b"GNU.sparse.offset", b"0"),
                (b"GNU.sparse.numbytes", b"1"),
            ],
            "0.0",
            "s",
        ),
    ] {
        let mut b = TarBuilder::new();
        b.pax(b'x', recs, Some(&H::new(b"s", b'0', 0)), b"");
        let e = read_all(&b.out).unwrap_err();
        assert!(matches!(e, Error::Sparse { typeflag: b'0', .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "\"{name}\" is a GNU sparse file in PAX format {format}: sparse files are not supported"
            )
        );
    }
    assert_eq!(
        storage_tarsplit::typeflag_text(b'V'),
        "'V', GNU volume label"
    );
    assert_eq!(
        storage_tarsplit::typeflag_text(0x80),
        "'\\x80', unknown type"
    );
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
