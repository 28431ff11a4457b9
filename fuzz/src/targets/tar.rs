//! The tar reader and tar-split targets.

use std::collections::HashMap;
use std::io::{self, Read};

use storage_tarsplit::{
    DirFileGetter, Entries, FileContent, FileGetter, Header, TarReader, crc64_iso, reassemble,
    reassemble_entries,
};

use crate::Scratch;

/// A reader handing out the bytes in pieces of varying, small sizes (a pipe, a socket).
struct ShortReads<'a> {
    data: &'a [u8],
    turn: usize,
}

impl Read for ShortReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        const SIZES: [usize; 7] = [1, 3, 511, 512, 513, 7, 4096];
        let n = SIZES[self.turn % SIZES.len()]
            .min(buf.len())
            .min(self.data.len());
        self.turn += 1;
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Go's `isHeaderOnlyType`: members whose content is never read.
fn header_only(typeflag: u8) -> bool {
    matches!(typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
}

/// What a reader yields for a stream: per member the header, the content's length and CRC
/// (or the read error), and the error that ended the stream, if any.
type Members = (Vec<(Header, Result<(usize, u64), String>)>, Option<String>);

fn read_members<R: Read>(mut tr: TarReader<R>, limit: usize) -> Members {
    let mut members = Vec::new();
    loop {
        let h = match tr.next_header() {
            Ok(Some(h)) => h,
            Ok(None) => return (members, None),
            Err(e) => return (members, Some(e.to_string())),
        };
        // Every member takes at least one 512-byte header block.
        assert!(
            members.len() < limit,
            "{} members from {} blocks",
            members.len() + 1,
            limit
        );
        let mut content = Vec::new();
        let got = tr
            .read_to_end(&mut content)
            .map(|n| (n, crc64_iso(&content)))
            .map_err(|e| e.to_string());
        if let Ok((n, _)) = &got {
            let expected = if header_only(h.typeflag) { 0 } else { h.size };
            assert!(
                h.size < 0 || *n as i64 == expected,
                "member {:?} (type {}) has size {} but {n} content bytes were read",
                String::from_utf8_lossy(&h.name),
                h.typeflag as char,
                h.size
            );
        }
        members.push((h, got));
    }
}

/// `TarReader`: the same stream read from one buffer and through short reads yields the
/// same members, contents and errors; a member's content is as long as its header says.
pub(crate) fn tar_reader(_: &mut Scratch, data: &[u8]) {
    let limit = data.len() / 512 + 1;
    let whole = read_members(TarReader::new(data), limit);
    let short = read_members(TarReader::new(ShortReads { data, turn: 0 }), limit);
    assert_eq!(whole, short, "whole-buffer and short reads disagree");
}

/// File contents by member name, for reassembly.
struct Contents(HashMap<Vec<u8>, Vec<u8>>);

impl FileGetter for Contents {
    fn open(&mut self, name: &[u8]) -> io::Result<Box<dyn FileContent + '_>> {
        match self.0.get(name) {
            Some(c) => Ok(Box::new(&c[..])),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "not a member")),
        }
    }
}

/// The tar-split `Disassembler` passes the input through unchanged; when it accepts the
/// whole stream, reassembling its JSON with the members' contents gives the input back,
/// byte for byte (through the gzip path too, for one input in four).
pub(crate) fn tarsplit_roundtrip(_: &mut Scratch, data: &[u8]) {
    let mut d = storage_tarsplit::Disassembler::new(data, Vec::new());
    let mut passed = Vec::new();
    let read = d.read_to_end(&mut passed);
    assert!(
        data.starts_with(&passed),
        "the disassembler changed the bytes it passed through"
    );
    if read.is_err() {
        return;
    }
    assert_eq!(passed.len(), data.len(), "bytes missing at the end");
    let Ok(json) = d.finish() else {
        return;
    };
    // The contents, as a tar reader gives them (the disassembler accepted the stream, so
    // the reader must too).
    let mut tr = TarReader::new(data);
    let mut files = HashMap::new();
    while let Some(h) = tr
        .next_header()
        .unwrap_or_else(|e| panic!("the disassembler accepted what the reader refuses: {e}"))
    {
        let mut content = Vec::new();
        tr.read_to_end(&mut content)
            .unwrap_or_else(|e| panic!("the reader refuses content the disassembler read: {e}"));
        files.insert(h.name, content);
    }
    let mut out = Vec::new();
    let mut getter = Contents(files);
    let n = if data.len().is_multiple_of(4) {
        let mut gz = storage_tarsplit::gzip_writer(Vec::new());
        io::Write::write_all(&mut gz, &json).expect("gzip to memory");
        let gz = gz.finish().expect("gzip to memory");
        reassemble(&gz[..], &mut getter, &mut out)
    } else {
        reassemble_entries(Entries::from_json(&json[..]), &mut getter, &mut out)
    }
    .unwrap_or_else(|e| {
        panic!(
            "reassembling what was disassembled: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(n, out.len() as u64, "reported size");
    assert!(out == data, "reassembled bytes differ from the input");
}

/// The files of the directory the reassembly target reads: (name, content).
pub(crate) const TREE: &[(&str, &[u8])] = &[
    ("a", b"hello\n"),
    ("d/b", b"a file in a directory\n"),
    ("d/e/c", b""),
    ("d/e/f", &[0x5a; 1500]),
];

/// Symbolic links of that directory (name, target): out to the canary, relative and
/// absolute, in a directory on the way and in place of a file; the reader follows none.
pub(crate) const LINKS: &[(&str, &str)] = &[
    ("up", "../canary"),
    ("d/cf", "../../canary/file"),
    ("root", "/"),
];

fn populate(root: &std::path::Path) {
    for (name, content) in TREE {
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("scratch tree");
        }
        std::fs::write(&path, content).expect("scratch tree");
    }
    for (name, target) in LINKS {
        std::os::unix::fs::symlink(target, root.join(name)).expect("scratch link");
    }
}

/// Reassembly of a hostile tar-split stream (JSON lines, or gzip when it starts with gzip's
/// magic) from a directory through `DirFileGetter`: the byte count it reports is what it
/// wrote, and nothing beside the directory is opened (`../canary/file`, `/x/../../canary`,
/// `up/file` through the link `up -> ../canary`…).
pub(crate) fn tarsplit_reassemble(scratch: &mut Scratch, data: &[u8]) {
    let fence = scratch.fence("tarsplit_reassemble");
    if !fence.root().join(TREE[0].0).exists() {
        populate(fence.root());
        fence.check();
    }
    let mut getter = DirFileGetter::new(fence.root());
    let mut out = Vec::new();
    let r = if data.starts_with(&[0x1f, 0x8b]) {
        reassemble(data, &mut getter, &mut out)
    } else {
        reassemble_entries(Entries::from_json(data), &mut getter, &mut out)
    };
    if let Ok(n) = r {
        assert_eq!(n, out.len() as u64, "reported size");
    }
    fence.check();
}
