//! Disassemble → reassemble round trips, tar-split JSON format, and error cases.
mod common;

use std::collections::HashMap;
use std::io::{self, Read};

use common::{Fmt, H, TarBuilder, prng_bytes};
use sha2::{Digest as _, Sha256};
use storage_tarsplit::{
    DirFileGetter, Disassembler, Entries, EntryKind, Error, FileContent, FileGetter, TarReader,
    crc64_iso, gzip_writer, reassemble,
};

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Reads everything through a disassembler with the given read size; returns (passed, json).
fn disassemble(tar: &[u8], chunk: usize) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let mut d = Disassembler::new(tar, Vec::new());
    let mut passed = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        match d.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => passed.extend_from_slice(&buf[..n]),
            Err(e) => return Err(Error::Io(e)),
        }
    }
    let json = d.finish()?;
    Ok((passed, json))
}

/// Writes every regular member's content under `root` (like a minimal extractor).
fn extract(tar: &[u8], root: &std::path::Path) {
    let getter = DirFileGetter::new(root);
    let mut tr = TarReader::new(tar);
    while let Some(h) = tr.next_header().unwrap() {
        let mut content = Vec::new();
        tr.read_to_end(&mut content).unwrap();
        if h.typeflag == b'0' && h.size > 0 {
            let p = getter.path_of(&h.name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
    }
}

fn gz(json: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut w = gzip_writer(Vec::new());
    w.write_all(json).unwrap();
    w.finish().unwrap()
}

fn check_round_trip(label: &str, tar: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    extract(tar, dir.path());
    let mut reference: Option<Vec<u8>> = None;
    for chunk in [1, 7, 512, 4096, 1 << 20] {
        if chunk == 1 && tar.len() > 200_000 {
            continue;
        }
        let (passed, json) = disassemble(tar, chunk).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(
            sha(&passed),
            sha(tar),
            "{label}: pass-through differs (chunk {chunk})"
        );
        match &reference {
            None => reference = Some(json.clone()),
            Some(r) => assert_eq!(r, &json, "{label}: JSON depends on the read size"),
        }
        // Positions are 0,1,2…, lines are JSON objects.
        let entries: Vec<_> = Entries::from_json(&json[..])
            .collect::<Result<_, _>>()
            .unwrap();
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.position, i as i64, "{label}");
        }
        let mut out = Vec::new();
        let n = reassemble(
            &gz(&json)[..],
            &mut DirFileGetter::new(dir.path()),
            &mut out,
        )
        .unwrap_or_else(|e| panic!("{label}: reassemble: {e}"));
        assert_eq!(n, tar.len() as u64, "{label}");
        assert_eq!(sha(&out), sha(tar), "{label}: reassembled stream differs");
    }
}

fn gnu_tar() -> Vec<u8> {
    let long100: Vec<u8> = std::iter::repeat_n(b'n', 150).collect();
    let long255: Vec<u8> = (0..300)
        .map(|i| {
            if i % 50 == 49 {
                b'/'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    let mut b = TarBuilder::new();
    let mut d = H::new(b"d/", b'5', 0).fmt(Fmt::Gnu);
    d.mode = 0o755;
    b.entry(&d, b"");
    for (i, size) in [0usize, 1, 511, 512, 513, (1 << 20) + 1]
        .into_iter()
        .enumerate()
    {
        let name = format!("d/f{i}");
        b.entry(
            &H::new(name.as_bytes(), b'0', size as u64).fmt(Fmt::Gnu),
            &prng_bytes(i as u64, size),
        );
    }
    let mut long_path = b"d/".to_vec();
    long_path.extend_from_slice(&long100);
    b.gnu_long(
        b'L',
        &long_path,
        &H::new(&long_path[..100], b'0', 5).fmt(Fmt::Gnu),
        b"long1",
    );
    let mut lp = b"d/".to_vec();
    lp.extend_from_slice(&long255);
    b.gnu_long(b'L', &lp, &H::new(b"x", b'0', 3).fmt(Fmt::Gnu), b"abc");
    b.gnu_long(b'K', &lp, &H::new(b"hardlink", b'1', 0).fmt(Fmt::Gnu), b"");
    b.entry(
        &H::new(b"sym", b'2', 0)
            .fmt(Fmt::Gnu)
            .link(b"../../etc/passwd"),
        b"",
    );
    b.entry(
        &H::new(b"d/\xff\xfe-latin1-\xe9", b'0', 4).fmt(Fmt::Gnu),
        b"\x00\x01\x02\x03",
    );
    let mut c = H::new(b"chr", b'3', 0).fmt(Fmt::Gnu);
    c.devmajor = 1;
    c.devminor = 5;
    b.entry(&c, b"")
        .entry(&H::new(b"blk", b'4', 0).fmt(Fmt::Gnu), b"");
    b.entry(&H::new(b"fifo", b'6', 0).fmt(Fmt::Gnu), b"");
    b.entry(&H::new(b".wh.gone", b'0', 0).fmt(Fmt::Gnu), b"");
    b.entry(
        &H::new("d/<&>\"\\\n\u{2028}".as_bytes(), b'0', 1).fmt(Fmt::Gnu),
        b"q",
    );
    b.end().record_pad(10240);
    b.bytes()
}

fn pax_tar() -> Vec<u8> {
    let long: Vec<u8> = (0..280)
        .map(|i| if i % 60 == 59 { b'/' } else { b'p' })
        .collect();
    let mut b = TarBuilder::new();
    b.pax(b'g', &[(b"comment", b"global")], None, b"");
    b.dir(b"./").dir(b"./etc/");
    b.pax(
        b'x',
        &[
            (b"SCHILY.xattr.user.a", b"1"),
            (b"SCHILY.xattr.security.capability", b"\x01\x00\x00\x02\xff"),
            (b"path", &long),
        ],
        Some(&H::new(b"./etc/short", b'0', 600)),
        &prng_bytes(9, 600),
    );
    b.pax(
        b'x',
        &[(b"mtime", b"1700000000.5"), (b"linkpath", &long)],
        Some(&H::new(b"./etc/sl", b'2', 0)),
        b"",
    );
    b.pax(
        b'x',
        &[(b"path", "./etc/ünïcødé".as_bytes())],
        Some(&H::new(b"./etc/u", b'0', 2)),
        b"uu",
    );
    b.pax(
        b'x',
        &[(b"path", b"./etc/\xc3\x28bad")],
        Some(&H::new(b"./etc/b", b'0', 2)),
        b"bb",
    );
    b.file(b"./etc/hello.txt", b"hello\n");
    b.end();
    b.bytes()
}

fn ustar_tar() -> Vec<u8> {
    let mut b = TarBuilder::new();
    let mut h = H::new(b"name-in-prefix", b'0', 10);
    h.prefix = std::iter::repeat_n(b'q', 150).collect();
    b.entry(&h, b"0123456789");
    b.file(b"empty", b"").file(b"one", b"1");
    b.entry(&H::new(b"hl", b'1', 0).link(b"one"), b"");
    b.end().record_pad(10240);
    b.bytes()
}

#[test]
fn round_trip_gnu() {
    check_round_trip("gnu", &gnu_tar());
}

#[test]
fn round_trip_pax() {
    check_round_trip("pax", &pax_tar());
}

#[test]
fn round_trip_ustar_record_padding() {
    let t = ustar_tar();
    assert_eq!(t.len() % 10240, 0);
    check_round_trip("ustar", &t);
}

#[test]
fn round_trip_trailing_junk_and_odd_endings() {
    let mut t = ustar_tar();
    t.extend_from_slice(&prng_bytes(77, 2 * 1024 * 1024 + 333));
    check_round_trip("junk", &t);
    // Trailing junk is recorded in 1 MiB segments.
    let (_, json) = disassemble(&t, 65536).unwrap();
    let entries: Vec<_> = Entries::from_json(&json[..])
        .collect::<Result<_, _>>()
        .unwrap();
    let sizes: Vec<usize> = entries
        .iter()
        .rev()
        .take(3)
        .map(|e| e.payload.as_ref().unwrap().len())
        .collect();
    assert_eq!(sizes[1..], [1 << 20, 1 << 20]);
    assert!(sizes[0] >= 333 && sizes[0] < 333 + 10240, "{sizes:?}");

    let mut b = TarBuilder::new();
    b.file(b"f", b"abc");
    let no_end = b.bytes();
    check_round_trip("no end marker", &no_end);
    let mut one_zero = no_end.clone();
    one_zero.extend_from_slice(&[0; 512]);
    check_round_trip("one zero block", &one_zero);
    let mut nopad = no_end.clone();
    nopad.truncate(515);
    check_round_trip("missing padding", &nopad);
    // Partial padding: Go's tar-split drops these bytes (its reassembly then differs from
    // the input); we record them so the stream is reproduced exactly.
    let mut partpad = nopad.clone();
    partpad.extend_from_slice(&[0; 100]);
    check_round_trip("partial padding", &partpad);
    check_round_trip("empty input", b"");
    check_round_trip("only end blocks", &[0u8; 1024]);
}

#[test]
fn json_lines_are_byte_exact() {
    let mut b = TarBuilder::new();
    b.file(b"c", b"c").dir(b"d&<>/").end();
    let tar = b.bytes();
    let (_, json) = disassemble(&tar, 4096).unwrap();
    use base64::Engine as _;
    let b64 = |x: &[u8]| base64::engine::general_purpose::STANDARD.encode(x);
    let expected = format!(
        "{{\"type\":2,\"payload\":\"{}\",\"position\":0}}\n\
         {{\"type\":1,\"name\":\"c\",\"size\":1,\"payload\":\"N0AAAAAAAAA=\",\"position\":1}}\n\
         {{\"type\":2,\"payload\":\"{}\",\"position\":2}}\n\
         {{\"type\":1,\"name\":\"d\\u0026\\u003c\\u003e/\",\"payload\":null,\"position\":3}}\n\
         {{\"type\":2,\"payload\":\"{}\",\"position\":4}}\n",
        b64(&tar[..512]),
        b64(&tar[513..1536]),
        b64(&tar[1536..]),
    );
    assert_eq!(String::from_utf8(json).unwrap(), expected);

    let mut b = TarBuilder::new();
    b.file(b"\xff", b"").end();
    let (_, json) = disassemble(&b.bytes(), 4096).unwrap();
    let line = String::from_utf8(json)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    assert_eq!(
        line,
        "{\"type\":1,\"name_raw\":\"/w==\",\"payload\":null,\"position\":1}"
    );
    assert_eq!(
        crc64_iso(b"c").to_be_bytes(),
        [0x37, 0x40, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn accepts_tar_split_0_11_output_and_multi_member_gzip() {
    let mut b = TarBuilder::new();
    b.file(b"f", b"abc").end();
    let tar = b.bytes();
    let (_, mut json) = disassemble(&tar, 4096).unwrap();
    let n = Entries::from_json(&json[..]).count();
    json.extend_from_slice(
        format!("{{\"type\":2,\"payload\":\"\",\"position\":{n}}}\n").as_bytes(),
    );
    // Split the JSON into two gzip members.
    let mut file = gz(&json[..100]);
    file.extend_from_slice(&gz(&json[100..]));
    let mut files = MemFiles(HashMap::from([(b"f".to_vec(), b"abc".to_vec())]));
    let mut out = Vec::new();
    reassemble(&file[..], &mut files, &mut out).unwrap();
    assert_eq!(out, tar);
}

struct MemFiles(HashMap<Vec<u8>, Vec<u8>>);

impl FileGetter for MemFiles {
    fn open(&mut self, name: &[u8]) -> io::Result<Box<dyn FileContent + '_>> {
        match self.0.get(name) {
            Some(v) => Ok(Box::new(&v[..])),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    }
}

#[test]
fn duplicate_paths_are_rejected() {
    for pair in [
        (&b"f"[..], &b"./f"[..]),
        (b"d/", b"d/"),
        (b"a/b/../c", b"a/c"),
    ] {
        let mut b = TarBuilder::new();
        b.file(pair.0, b"")
            .file(b"other", b"x")
            .file(pair.1, b"")
            .end();
        let tar = b.bytes();
        let mut d = Disassembler::new(&tar[..], Vec::new());
        let mut passed = Vec::new();
        let e = d.read_to_end(&mut passed).unwrap_err();
        assert_eq!(e.to_string(), "duplicates of file paths not supported");
        // The duplicate member's header was handed out before the error, as in Go.
        assert_eq!(passed.len(), 512 * 4);
        let e = d.finish().unwrap_err();
        assert!(matches!(e, Error::DuplicatePath), "{e}");
    }
    // Same for a member with content: the error comes after its content.
    let mut b = TarBuilder::new();
    b.file(b"f", b"1").file(b"./f", b"22").end();
    let tar = b.bytes();
    let mut d = Disassembler::new(&tar[..], Vec::new());
    let mut passed = Vec::new();
    assert!(d.read_to_end(&mut passed).is_err());
    assert_eq!(passed.len(), 512 * 3 + 2);
    // The unpacking side rejects duplicates too.
    let json = b"{\"type\":1,\"name\":\"f\",\"payload\":null,\"position\":0}\n{\"type\":1,\"name\":\"./f/\",\"payload\":null,\"position\":1}\n";
    let r: Vec<_> = Entries::from_json(&json[..]).collect();
    assert!(matches!(r[1], Err(Error::DuplicatePath)));
}

#[test]
fn malformed_input_errors_through_the_disassembler() {
    let mut b = TarBuilder::new();
    b.file(b"f", b"hello").end();
    let tar = b.bytes();
    let e = disassemble(&tar[..200], 512).unwrap_err();
    assert_eq!(e.to_string(), "unexpected EOF");
    let e = disassemble(&tar[..514], 512).unwrap_err();
    assert_eq!(e.to_string(), "unexpected EOF");
    let mut bad = tar.clone();
    bad[10] ^= 1;
    let e = disassemble(&bad, 512).unwrap_err();
    assert_eq!(e.to_string(), "archive/tar: invalid tar header");
    let e = disassemble(&prng_bytes(5, 5000), 512).unwrap_err();
    assert_eq!(e.to_string(), "archive/tar: invalid tar header");
    // finish() reports the sticky error too.
    let mut d = Disassembler::new(&bad[..], Vec::new());
    assert!(d.read(&mut [0u8; 10]).is_err());
    assert_eq!(
        d.finish().unwrap_err().to_string(),
        "archive/tar: invalid tar header"
    );
}

#[test]
fn finish_consumes_what_the_consumer_did_not_read() {
    let mut t = ustar_tar();
    t.extend_from_slice(b"junk");
    let mut d = Disassembler::new(&t[..], Vec::new());
    let mut first = [0u8; 700];
    d.read_exact(&mut first).unwrap();
    let json = d.finish().unwrap();
    let total: usize = Entries::from_json(&json[..])
        .map(|e| {
            let e = e.unwrap();
            match e.kind {
                EntryKind::Segment => e.payload.unwrap().len(),
                _ => e.size as usize,
            }
        })
        .sum();
    assert_eq!(total, t.len());
}

#[test]
fn checksum_mismatch_and_missing_file() {
    let mut b = TarBuilder::new();
    b.file(b"./f", b"abc").end();
    let tar = b.bytes();
    let (_, json) = disassemble(&tar, 4096).unwrap();
    let file = gz(&json);
    let mut files = MemFiles(HashMap::from([(b"./f".to_vec(), b"abd".to_vec())]));
    let mut out = Vec::new();
    let e = reassemble(&file[..], &mut files, &mut out).unwrap_err();
    assert_eq!(e.to_string(), "file integrity checksum failed for \"./f\"");
    assert_eq!(out, tar[..512], "the output stops before the file's bytes");

    let dir = tempfile::tempdir().unwrap();
    let e = reassemble(
        &file[..],
        &mut DirFileGetter::new(dir.path()),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("open {}/f: no such file or directory", dir.path().display())
    );
    let e = reassemble(&b"not gzip"[..], &mut files, &mut Vec::new()).unwrap_err();
    assert!(matches!(e, Error::Io(_)), "{e:?}");
    let e = reassemble(
        &gz(b"{\"type\":2,\"payload\":\"!!\"}\n")[..],
        &mut files,
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Json(_)), "{e:?}");
}

/// A header-only entry (hard link, symbolic link, fifo) whose header carries a size is
/// recorded as Go records it (that size, the CRC of no bytes) and comes back from the empty
/// file it is on disk, byte for byte, as Go's reassembly gives it back; a file of another
/// content under that name still fails before any of its bytes.
#[test]
fn header_only_entries_with_a_size_come_back_from_empty_files() {
    let mut b = TarBuilder::new();
    b.file(b"empty", b"");
    b.entry(&H::new(b"hard", b'1', 42).link(b"empty"), b"");
    b.entry(&H::new(b"fifo", b'6', 7), b"");
    b.end();
    let tar = b.bytes();
    let (_, json) = disassemble(&tar, 4096).unwrap();
    let entries: Vec<_> = Entries::from_json(&json[..])
        .collect::<Result<_, _>>()
        .unwrap();
    let hard = entries.iter().find(|e| e.name == b"hard").unwrap();
    assert_eq!(hard.size, 42, "the header's size, as Go records it");
    assert_eq!(
        hard.payload.as_deref(),
        Some(&[0u8; 8][..]),
        "CRC of no bytes"
    );

    let dir = tempfile::tempdir().unwrap();
    for name in ["empty", "hard", "fifo"] {
        std::fs::write(dir.path().join(name), b"").unwrap();
    }
    let mut out = Vec::new();
    let n = reassemble(
        &gz(&json)[..],
        &mut DirFileGetter::new(dir.path()),
        &mut out,
    )
    .unwrap();
    assert_eq!(n, tar.len() as u64);
    assert!(out == tar, "reassembled stream differs");

    std::fs::write(dir.path().join("hard"), b"host secret").unwrap();
    let mut out = Vec::new();
    let e = reassemble(
        &gz(&json)[..],
        &mut DirFileGetter::new(dir.path()),
        &mut out,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "file integrity checksum failed for \"hard\"");
    assert!(!out.windows(11).any(|w| w == b"host secret"));
}

#[test]
fn never_panics_on_damaged_input() {
    let bases = [gnu_tar(), pax_tar(), ustar_tar()];
    let mut seed = 1u64;
    for base in &bases {
        let base = &base[..base.len().min(40_000)];
        for _ in 0..150 {
            seed += 1;
            let r = prng_bytes(seed, 16);
            let mut t = base.to_vec();
            match r[0] % 3 {
                0 => t.truncate(usize::from(u16::from_le_bytes([r[1], r[2]])) % (t.len() + 1)),
                1 => {
                    for k in 0..(r[3] % 8 + 1) as usize {
                        let pos =
                            (usize::from(u16::from_le_bytes([r[4 + k], r[5 + k]])) * 7) % t.len();
                        t[pos] ^= 1 << (r[12] % 8);
                    }
                }
                _ => {
                    let pos = usize::from(u16::from_le_bytes([r[1], r[2]])) % t.len();
                    let junk = prng_bytes(seed ^ 0xabc, usize::from(r[3]) * 4);
                    t.splice(pos..pos, junk);
                }
            }
            // Reader: Ok or Err, never a panic.
            let mut tr = TarReader::new(&t[..]);
            for _ in 0..1000 {
                match tr.next_header() {
                    Ok(Some(_)) => {
                        if tr.read_to_end(&mut Vec::new()).is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            // Disassembler + reassembly against memory files.
            if let Ok((passed, json)) = disassemble(&t, 4096) {
                assert_eq!(passed, t);
                let mut files = MemFiles(HashMap::new());
                let _ = reassemble(&gz(&json)[..], &mut files, &mut Vec::new());
            }
        }
    }
    // Random junk gzip / JSON.
    for s in 0..50 {
        let junk = prng_bytes(s, 300);
        let mut files = MemFiles(HashMap::new());
        let _ = reassemble(&junk[..], &mut files, &mut Vec::new());
        let _ = reassemble(&gz(&junk)[..], &mut files, &mut Vec::new());
    }
}

/// A reader returning short reads of varying sizes and occasional `Interrupted` errors.
struct Choppy<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Choppy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.step += 1;
        if self.step % 5 == 4 {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let n = buf
            .len()
            .min(self.data.len())
            .min(1 + (self.step * 797) % 3000);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn short_reads_and_interruptions_from_the_source() {
    let mut t = gnu_tar();
    t.extend_from_slice(b"trailing");
    let (_, reference) = disassemble(&t, 4096).unwrap();
    let mut d = Disassembler::new(Choppy { data: &t, step: 0 }, Vec::new());
    let mut passed = Vec::new();
    d.read_to_end(&mut passed).unwrap();
    assert_eq!(sha(&passed), sha(&t));
    let json = d.finish().unwrap();
    // Only the trailing chunking could differ; here it is one small chunk either way.
    assert_eq!(json, reference);
    // A TarReader on top of the disassembler (what an extractor does) sees every member.
    let mut tr = TarReader::new(Disassembler::new(Choppy { data: &t, step: 0 }, Vec::new()));
    let mut count = 0;
    while let Some(_h) = tr.next_header().unwrap() {
        io::copy(&mut tr, &mut io::sink()).unwrap();
        count += 1;
    }
    assert_eq!(
        count,
        Entries::from_json(&reference[..])
            .filter(|e| e.as_ref().unwrap().kind == EntryKind::File)
            .count()
    );
    let json = tr.into_inner().finish().unwrap();
    assert_eq!(json, reference);
}

/// A generated tar stream that is never held in memory: one big file of `size` bytes.
struct Generated {
    header: Vec<u8>,
    size: u64,
    pos: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let total = 512 + self.size.div_ceil(512) * 512 + 1024;
        let mut n = 0;
        while n < buf.len() && self.pos < total {
            buf[n] = if self.pos < 512 {
                self.header[self.pos as usize]
            } else if self.pos - 512 < self.size {
                (self.pos % 251) as u8
            } else {
                0
            };
            n += 1;
            self.pos += 1;
        }
        Ok(n)
    }
}

#[test]
fn streams_large_members() {
    let size = 24 * 1024 * 1024 + 3;
    let header = common::block(&H::new(b"big", b'0', size)).to_vec();
    let mut d = Disassembler::new(
        Generated {
            header,
            size,
            pos: 0,
        },
        Vec::new(),
    );
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = d.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let mut crc = 0u64;
    let mut pos = 512u64;
    while pos < 512 + size {
        let n = (512 + size - pos).min(1 << 20);
        let chunk: Vec<u8> = (pos..pos + n).map(|p| (p % 251) as u8).collect();
        crc = storage_tarsplit::crc64_update(crc, &chunk);
        pos += n;
    }
    let json = d.finish().unwrap();
    assert!(
        json.len() < 4096,
        "the JSON holds no content: {} bytes",
        json.len()
    );
    let entries: Vec<_> = Entries::from_json(&json[..])
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(entries[1].size, size as i64);
    assert_eq!(total, 512 + size.div_ceil(512) * 512 + 1024);
    assert_eq!(entries[1].payload.as_deref(), Some(&crc.to_be_bytes()[..]));
}

/// Reassembly reads file contents straight into its output buffer, asks for one byte more
/// than the recorded size to see the end, checks before it writes, and opens files through
/// a handle on their directory: sizes around the buffer's 1 MiB, files that grew, shrank or
/// changed since they were recorded, directories revisited out of order and a symlinked
/// directory on the way.
#[test]
fn reassembly_buffering_size_changes_and_directory_handles() {
    let mut b = TarBuilder::new();
    b.dir(b"./a/").dir(b"./b/");
    let sizes = [
        1usize,
        511,
        512,
        4096,
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 1,
        3 << 20,
    ];
    for (i, n) in sizes.iter().enumerate() {
        let dir = if i % 2 == 0 { "a" } else { "b" };
        b.file(
            format!("./{dir}/f{i}").as_bytes(),
            &prng_bytes(i as u64, *n),
        );
    }
    b.file(b"./a/small", b"xyz");
    b.file(b"./link/small", b"xyz");
    b.end();
    let tar = b.bytes();
    let dir = tempfile::tempdir().unwrap();
    extract(&tar, dir.path());
    let (_, json) = disassemble(&tar, 4096).unwrap();
    let file = gz(&json);

    let mut out = Vec::new();
    let n = reassemble(&file[..], &mut DirFileGetter::new(dir.path()), &mut out).unwrap();
    assert_eq!(n, tar.len() as u64);
    assert_eq!(sha(&out), sha(&tar));

    // The output of a failed reassembly is the tar up to the header of `name`: not a byte
    // of the file that failed.
    let stops_before = |out: &[u8], name: &[u8], label: &str| {
        assert!(
            tar.starts_with(out),
            "{label}: output is a prefix of the tar"
        );
        assert_eq!(
            out.len() % 512,
            0,
            "{label}: output ends at a block boundary"
        );
        let header = &out[out.len() - 512..];
        assert!(
            header.starts_with(name),
            "{label}: output ends with {name:?}'s header"
        );
    };

    // ./link is a symlink to ./a now: not followed, although it stays inside.
    std::fs::remove_dir_all(dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink("a", dir.path().join("link")).unwrap();
    let mut out = Vec::new();
    let e = reassemble(&file[..], &mut DirFileGetter::new(dir.path()), &mut out).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "open {}/link/small: a directory on the path is a symbolic link (not followed in a layer)",
            dir.path().display()
        )
    );
    stops_before(&out, b"./link/small", "symlinked directory");
    std::fs::remove_file(dir.path().join("link")).unwrap();
    std::fs::create_dir(dir.path().join("link")).unwrap();
    std::fs::write(dir.path().join("link/small"), b"xyz").unwrap();

    // A file longer or shorter than recorded fails before any of it is written (Go writes
    // it all, then fails its checksum). So does one of the right size with other bytes.
    for (content, label) in [
        (&b"xyzw"[..], "grown"),
        (&b"xy"[..], "shrunk"),
        (&b"xyZ"[..], "changed"),
    ] {
        std::fs::write(dir.path().join("a/small"), content).unwrap();
        let mut out = Vec::new();
        let e = reassemble(&file[..], &mut DirFileGetter::new(dir.path()), &mut out).unwrap_err();
        assert_eq!(
            e.to_string(),
            "file integrity checksum failed for \"./a/small\"",
            "{label}"
        );
        stops_before(&out, b"./a/small", label);
    }
    // Every file grown by one byte, or changed in its last byte, is seen wherever its end
    // falls in the buffer, and none of it is written.
    std::fs::write(dir.path().join("a/small"), b"xyz").unwrap();
    for (i, n) in sizes.iter().enumerate() {
        let name = format!("f{i}");
        let path = dir
            .path()
            .join(if i % 2 == 0 { "a" } else { "b" })
            .join(&name);
        let good = prng_bytes(i as u64, *n);
        let mut grown = good.clone();
        grown.push(0);
        let mut changed = good.clone();
        if let Some(last) = changed.last_mut() {
            *last ^= 1;
        }
        for (bad, how) in [(&grown, "grown"), (&changed, "changed")] {
            std::fs::write(&path, bad).unwrap();
            let mut out = Vec::new();
            let e =
                reassemble(&file[..], &mut DirFileGetter::new(dir.path()), &mut out).unwrap_err();
            assert!(
                e.to_string().starts_with("file integrity checksum failed"),
                "{name} {how}: {e}"
            );
            let dir_name = if i % 2 == 0 { "a" } else { "b" };
            stops_before(&out, format!("./{dir_name}/{name}").as_bytes(), how);
        }
        std::fs::write(&path, &good).unwrap();
    }
    // A file whose end meets the end of the buffer (its 512-byte header is all that is
    // buffered before it): the read that fills the buffer is not taken for the end.
    let mut b = TarBuilder::new();
    let exact = (1 << 20) - 512;
    b.file(b"f", &prng_bytes(9, exact)).end();
    let tar = b.bytes();
    let dir = tempfile::tempdir().unwrap();
    extract(&tar, dir.path());
    let (_, json) = disassemble(&tar, 4096).unwrap();
    let mut grown = prng_bytes(9, exact);
    grown.push(1);
    std::fs::write(dir.path().join("f"), &grown).unwrap();
    let e = reassemble(
        &gz(&json)[..],
        &mut DirFileGetter::new(dir.path()),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "file integrity checksum failed for \"f\"");
}

/// The host file a hostile layer tries to reach, with content no layer holds.
fn host_marker(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("host-secret");
    let content = format!("HOST-SECRET-{:x}", std::process::id()).repeat(50);
    std::fs::write(&path, &content).unwrap();
    (path, content.into_bytes())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len().min(16))
        .any(|w| w == &needle[..needle.len().min(16)])
}

/// Symbolic links (in a directory component or in place of the file), FIFOs and device
/// nodes where a layer recorded a regular file: the getter refuses them with an error naming
/// the path and reassembly writes nothing of the file; the host file never shows up.
#[test]
fn hostile_layers_never_reach_host_files() {
    let host = tempfile::tempdir().unwrap();
    let (secret, secret_content) = host_marker(host.path());
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path();
    std::fs::create_dir(layer.join("etc")).unwrap();
    // `rl -> <host dir>` then a recorded `rl/host-secret`; `x -> <host file>` where a regular
    // `x` was recorded; a FIFO and (as root) a device node in place of regular files.
    std::os::unix::fs::symlink(host.path(), layer.join("rl")).unwrap();
    std::os::unix::fs::symlink(&secret, layer.join("x")).unwrap();
    std::os::unix::fs::symlink("../x", layer.join("etc/rel")).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        layer.join("fifo"),
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let root = rustix::process::geteuid().is_root();
    if root {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            layer.join("dev"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o644),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
    } else {
        eprintln!("not root: the device-node case is not exercised");
    }
    let mut cases = vec![
        (
            "rl/host-secret",
            "a directory on the path is a symbolic link (not followed in a layer)",
        ),
        ("./x", "is a symbolic link (not followed in a layer)"),
        ("/x", "is a symbolic link (not followed in a layer)"),
        ("etc/rel", "is a symbolic link (not followed in a layer)"),
        ("fifo", "is a FIFO, not a regular file"),
        ("etc", "is a directory, not a regular file"),
    ];
    if root {
        cases.push(("dev", "is a character device, not a regular file"));
    }
    for (name, why) in cases {
        let mut g = DirFileGetter::new(layer);
        let clean = name.trim_start_matches("./").trim_start_matches('/');
        let want = format!("open {}/{clean}: {why}", layer.display());
        match g.open(name.as_bytes()) {
            Ok(_) => panic!("{name}: opened"),
            Err(e) => assert_eq!(e.to_string(), want, "{name}"),
        }
        // Through reassembly: a tar recording `name` as a regular file of the host file's
        // size and content fails with the same error, and the output stops at its header.
        let mut b = TarBuilder::new();
        b.file(name.as_bytes(), &secret_content).end();
        let tar = b.bytes();
        let (_, json) = disassemble(&tar, 4096).unwrap();
        let mut out = Vec::new();
        let e = reassemble(&gz(&json)[..], &mut g, &mut out).unwrap_err();
        assert_eq!(e.to_string(), want, "{name}");
        assert_eq!(out.len(), 512, "{name}: only the header was written");
        assert!(
            !contains(&out, &secret_content),
            "{name}: host bytes in the output"
        );
    }
    // Outside the root by `..`: absent, like Go's text for a missing file.
    let mut g = DirFileGetter::new(layer.join("etc"));
    let e = g.open(b"../x").err().expect("escape refused");
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
}

/// A file too large for the output buffer is checked in a first pass and written in a
/// second; content that changes between the two fails the checksum.
#[test]
fn large_files_are_checked_before_they_are_written() {
    use std::cell::Cell;
    struct Flaky {
        data: Vec<u8>,
        reads: Cell<u64>,
        change_after: u64,
    }
    impl FileContent for Flaky {
        fn size(&self) -> u64 {
            self.data.len() as u64
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let n = self.data.as_slice().read_at(buf, offset)?;
            let seen = self.reads.get() + n as u64;
            self.reads.set(seen);
            if seen > self.change_after && n > 0 {
                buf[0] ^= 0xff;
            }
            Ok(n)
        }
    }
    struct One(Flaky);
    impl FileGetter for One {
        fn open(&mut self, _: &[u8]) -> io::Result<Box<dyn FileContent + '_>> {
            self.0.reads.set(0);
            Ok(Box::new(Flaky {
                data: self.0.data.clone(),
                reads: Cell::new(0),
                change_after: self.0.change_after,
            }))
        }
    }
    let data = prng_bytes(5, (3 << 20) + 17);
    let mut b = TarBuilder::new();
    b.file(b"big", &data).end();
    let tar = b.bytes();
    let (_, json) = disassemble(&tar, 4096).unwrap();
    let file = gz(&json);
    let getter = |change_after| {
        One(Flaky {
            data: data.clone(),
            reads: Cell::new(0),
            change_after,
        })
    };
    // Unchanged: byte-exact.
    let mut out = Vec::new();
    reassemble(&file[..], &mut getter(u64::MAX), &mut out).unwrap();
    assert_eq!(sha(&out), sha(&tar));
    // Changed during the first pass: nothing of the file is written.
    let mut out = Vec::new();
    let e = reassemble(&file[..], &mut getter(1 << 20), &mut out).unwrap_err();
    assert_eq!(e.to_string(), "file integrity checksum failed for \"big\"");
    assert_eq!(out, tar[..512]);
    // Changed during the second pass: it fails all the same.
    let e = reassemble(
        &file[..],
        &mut getter(data.len() as u64 + (1 << 20)),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "file integrity checksum failed for \"big\"");
}

/// PAX GNU sparse files are recorded as Go's tar-split records them: the headers in a
/// segment, an entry with the real name and size and the CRC of the logical content, then
/// a segment starting with the padding of the *physical* data area, which (1.0 map blocks
/// included) is in no segment. The stream passed on is the input, byte for byte; the
/// reassembled one is not (header + logical content + old padding), as Go's is not.
#[test]
fn pax_sparse_entries_are_recorded_as_go_records_them() {
    let logical = b"\0\0abc\0\0\0\0\0de\0\0\0\0";
    let mut map10 = b"2\n2\n3\n10\n2\n".to_vec();
    map10.resize(512, 0);
    map10.extend_from_slice(b"abcde");
    type Records<'a> = Vec<(&'a [u8], &'a [u8])>;
    let formats: [(&str, Records, Vec<u8>); 2] = [
        (
            "0.1",
            vec![
                (b"GNU.sparse.major", b"0"),
                (b"GNU.sparse.minor", b"1"),
                (b"GNU.sparse.name", b"real"),
                (b"GNU.sparse.size", b"16"),
                (b"GNU.sparse.numblocks", b"2"),
                (b"GNU.sparse.map", b"2,3,10,2"),
            ],
            b"abcde".to_vec(),
        ),
        (
            "1.0",
            vec![
                (b"GNU.sparse.major", b"1"),
                (b"GNU.sparse.minor", b"0"),
                (b"GNU.sparse.name", b"real"),
                (b"GNU.sparse.realsize", b"16"),
            ],
            map10,
        ),
    ];
    for (label, recs, data) in formats {
        let mut b = TarBuilder::new();
        b.pax(
            b'x',
            &recs,
            Some(&H::new(b"s", b'0', data.len() as u64)),
            &data,
        )
        .end();
        let tar = b.out;
        let header_len = tar.len() - 1024 - data.len().div_ceil(512) * 512;
        let mut reference: Option<Vec<u8>> = None;
        for chunk in [1, 7, 512, 4096] {
            let (passed, json) = disassemble(&tar, chunk).unwrap();
            assert_eq!(passed, tar, "{label}: pass-through (chunk {chunk})");
            match &reference {
                None => reference = Some(json),
                Some(r) => assert_eq!(r, &json, "{label}: JSON depends on the read size"),
            }
        }
        let json = reference.unwrap();
        let entries: Vec<_> = Entries::from_json(&json[..])
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(entries[0].kind, EntryKind::Segment);
        assert_eq!(entries[0].payload.as_deref(), Some(&tar[..header_len]));
        assert_eq!(entries[1].kind, EntryKind::File);
        assert_eq!(entries[1].name, b"real");
        assert_eq!(entries[1].size, 16);
        assert_eq!(
            entries[1].payload.as_deref(),
            Some(&crc64_iso(logical).to_be_bytes()[..])
        );
        // The padding of the physical data area, then the end of the archive.
        let pad = (512 - data.len() % 512) % 512;
        assert_eq!(
            entries[2].payload.as_deref(),
            Some(&vec![0u8; pad + 1024][..]),
            "{label}"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real"), logical).unwrap();
        let mut out = Vec::new();
        reassemble(
            &gz(&json)[..],
            &mut DirFileGetter::new(dir.path()),
            &mut out,
        )
        .unwrap();
        let mut want = tar[..header_len].to_vec();
        want.extend_from_slice(logical);
        want.extend(std::iter::repeat_n(0u8, pad + 1024));
        assert_eq!(out, want, "{label}");
    }
}
