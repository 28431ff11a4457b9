//! `open_diff`: compression detection, digests and sizes (checked against the
//! `sha256sum` of fixtures made with the real `gzip`/`bzip2`/`xz`/`zstd` tools),
//! owner sets, error wording on damaged input, and thread shutdown.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Entry, tar};
use storage_archive::{Compression, UnpackOptions, open_diff, open_diff_recording, unpack};

fn sample_tar() -> Vec<u8> {
    let big: Vec<u8> = (0..400_000u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761)).to_le_bytes())
        .collect();
    tar(&[
        Entry::dir("d/").owner(3, 30),
        Entry::file("d/big", &big).owner(1000, 1000),
        Entry::file("d/.wh.gone", b"").owner(77, 77),
        Entry::file("small", b"hello").owner(0, 5),
        Entry::symlink("l", "small").owner(2, 2),
    ])
}

fn tool(cmd: &str, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    out.status.success().then_some(out.stdout)
}

fn sha256sum(data: &[u8]) -> String {
    let out = tool("sha256sum", &[], data).expect("sha256sum");
    let text = String::from_utf8(out).expect("utf8");
    format!("sha256:{}", text.split_whitespace().next().expect("digest"))
}

#[test]
fn digests_and_sizes_match_sha256sum_for_every_compression() {
    let raw = sample_tar();
    let raw_digest = sha256sum(&raw);
    let cases: &[(&str, &[&str], Compression)] = &[
        ("cat", &[], Compression::None),
        ("gzip", &["-c"], Compression::Gzip),
        ("bzip2", &["-c"], Compression::Bzip2),
        ("xz", &["-c"], Compression::Xz),
        ("zstd", &["-c", "-q"], Compression::Zstd),
    ];
    for (cmd, args, want) in cases {
        let Some(blob) = tool(cmd, args, &raw) else {
            assert!(common::require(false, cmd));
            continue;
        };
        let mut r = open_diff(Box::new(std::io::Cursor::new(blob.clone()))).expect("open");
        assert_eq!(r.compression(), *want, "{cmd}");
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        assert_eq!(out, raw, "{cmd}: decompressed bytes");
        let stats = r.finish().expect("finish");
        assert_eq!(stats.compression, *want);
        assert_eq!(
            stats.compressed_digest.to_string(),
            sha256sum(&blob),
            "{cmd}"
        );
        assert_eq!(stats.compressed_size, blob.len() as i64, "{cmd}");
        assert_eq!(stats.uncompressed_digest.to_string(), raw_digest, "{cmd}");
        assert_eq!(stats.uncompressed_size, raw.len() as i64, "{cmd}");
        assert_eq!(stats.uidset, vec![0, 2, 3, 1000], "{cmd}");
        assert_eq!(stats.gidset, vec![2, 5, 30, 1000], "{cmd}");
    }
}

#[test]
fn concatenated_gzip_members_and_trailing_junk_in_plain_tars() {
    let raw = sample_tar();
    let (a, b) = raw.split_at(5000);
    let mut blob = tool("gzip", &["-c"], a).expect("gzip");
    blob.extend(tool("gzip", &["-c"], b).expect("gzip"));
    let mut r = open_diff(Box::new(std::io::Cursor::new(blob))).expect("open");
    let mut out = Vec::new();
    r.read_to_end(&mut out).expect("read");
    assert_eq!(out, raw);
    r.finish().expect("finish");

    // Junk after the end of a plain tar counts in the digest; finish() drains what
    // the consumer left unread.
    let mut junk = raw.clone();
    junk.extend_from_slice(&[0x55; 3000]);
    let r = open_diff(Box::new(std::io::Cursor::new(junk.clone()))).expect("open");
    let stats = r.finish().expect("finish");
    assert_eq!(stats.uncompressed_size, junk.len() as i64);
    assert_eq!(stats.uncompressed_digest.to_string(), sha256sum(&junk));
    assert_eq!(stats.compressed_digest, stats.uncompressed_digest);
}

#[test]
fn empty_input_and_a_zero_block_are_empty_tars() {
    for input in [Vec::new(), vec![0u8; 1024]] {
        let mut r = open_diff(Box::new(std::io::Cursor::new(input.clone()))).expect("open");
        assert_eq!(r.compression(), Compression::None);
        let tmp = tempfile::tempdir().expect("tmp");
        let n = unpack(&mut r, tmp.path(), &UnpackOptions::default()).expect("unpack");
        assert_eq!(n, 0);
        let stats = r.finish().expect("finish");
        assert_eq!(stats.uncompressed_size, input.len() as i64);
        assert!(stats.uidset.is_empty());
        assert_eq!(std::fs::read_dir(tmp.path()).expect("ls").count(), 0);
    }
}

fn unpack_error(blob: Vec<u8>) -> String {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut r = match open_diff(Box::new(std::io::Cursor::new(blob))) {
        Ok(r) => r,
        Err(e) => return e.to_string(),
    };
    match unpack(&mut r, tmp.path(), &UnpackOptions::default()) {
        Ok(_) => match r.finish() {
            Ok(_) => "no error".into(),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

#[test]
fn damaged_input_gives_go_worded_errors() {
    let raw = sample_tar();
    // Garbage that is not a tar.
    assert_eq!(unpack_error(b"garbage-garbage".to_vec()), "unexpected EOF");
    let mut junk = vec![0x41u8; 2048];
    junk[0] = b'x';
    assert_eq!(unpack_error(junk), "archive/tar: invalid tar header");
    // A truncated plain tar.
    assert_eq!(
        unpack_error(raw[..raw.len() / 2].to_vec()),
        "unexpected EOF"
    );
    // gzip header then garbage.
    let mut g = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];
    g.extend_from_slice(&[0xff; 200]);
    let e = unpack_error(g);
    assert!(e.starts_with("flate: corrupt input before offset "), "{e}");
    let mut g = vec![0x1f, 0x8b, 0x08, 0xff];
    g.extend_from_slice(&[0x00; 20]);
    let e = unpack_error(g);
    assert_eq!(e, "gzip: invalid header");
    // Truncated compressed streams.
    for (cmd, args) in [
        ("gzip", &["-c"][..]),
        ("zstd", &["-c", "-q"][..]),
        ("xz", &["-c"][..]),
        ("bzip2", &["-c"][..]),
    ] {
        let blob = tool(cmd, args, &raw).expect(cmd);
        let cut = blob[..blob.len() / 2].to_vec();
        assert_eq!(unpack_error(cut), "unexpected EOF", "{cmd} cut in half");
    }
    // Valid compression around something that is not a tar.
    let not_tar = tool("bzip2", &["-c"], &[0x41u8; 5000]).expect("bzip2");
    assert_eq!(unpack_error(not_tar), "archive/tar: invalid tar header");
    // Corrupted bytes in the middle of a zstd stream.
    let mut z = tool("zstd", &["-c", "-q"], &raw).expect("zstd");
    let mid = z.len() / 2;
    for b in &mut z[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let e = unpack_error(z);
    assert!(e.starts_with("zstd: "), "{e}");
}

struct Tracked {
    data: std::io::Cursor<Vec<u8>>,
    dropped: Arc<AtomicBool>,
}

impl Read for Tracked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.data.read(buf)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[test]
fn dropping_the_reader_early_stops_the_thread() {
    let raw: Vec<u8> = vec![7u8; 64 << 20];
    let dropped = Arc::new(AtomicBool::new(false));
    let input = Tracked {
        data: std::io::Cursor::new(raw),
        dropped: Arc::clone(&dropped),
    };
    let mut r = open_diff(Box::new(input)).expect("open");
    let mut buf = [0u8; 4096];
    r.read_exact(&mut buf).expect("read");
    drop(r);
    let start = Instant::now();
    while !dropped.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "producer thread still holds the input"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The record Go's layer store writes for the same blobs: digests, sizes,
/// compression, uidset/gidset must equal our `DiffStats`.
#[test]
fn stats_match_the_layer_records_go_writes() {
    if !common::require(common::have_go(), "Go's containers-storage (run as root)") {
        return;
    }
    // A PAX global header first (Go's logger sees it, with uid 0), then the
    // sample, then junk after the end-of-archive blocks (digested too).
    let mut raw = tar(&[Entry::file("pax_global_header", b"")
        .typeflag(b'g')
        .owner(0, 0)]);
    raw.truncate(512);
    raw.extend(sample_tar());
    raw.extend_from_slice(b"trailing junk after the end of the archive");
    let cases: &[(&str, &[&str])] = &[
        ("cat", &[]),
        ("gzip", &["-c"]),
        ("bzip2", &["-c"]),
        ("xz", &["-c"]),
        ("zstd", &["-c", "-q"]),
    ];
    for (cmd, args) in cases {
        let blob = tool(cmd, args, &raw).expect(cmd);
        let r = open_diff(Box::new(std::io::Cursor::new(blob.clone()))).expect("open");
        let ours = r.finish().expect("finish");

        let tmp = tempfile::tempdir().expect("tmp");
        let file = tmp.path().join("blob");
        std::fs::write(&file, &blob).expect("write");
        let g = tmp.path().join("G");
        let _ = storage_testsupport::stdout_of(
            Command::new(common::GO_CLI)
                .arg("--graph")
                .arg(&g)
                .arg("--run")
                .arg(tmp.path().join("R"))
                .args(["--storage-driver", "vfs", "import-layer", "-f"])
                .arg(&file),
        );
        let json = std::fs::read(g.join("vfs-layers/layers.json")).expect("layers.json");
        let layers: serde_json::Value = serde_json::from_slice(&json).expect("json");
        let l = &layers[0];
        assert_eq!(
            l["compressed-diff-digest"],
            ours.compressed_digest.to_string(),
            "{cmd}"
        );
        assert_eq!(l["compressed-size"], ours.compressed_size, "{cmd}");
        assert_eq!(
            l["diff-digest"],
            ours.uncompressed_digest.to_string(),
            "{cmd}"
        );
        assert_eq!(l["diff-size"], ours.uncompressed_size, "{cmd}");
        let compression = l
            .get("compression")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        assert_eq!(compression, i64::from(ours.compression.as_i32()), "{cmd}");
        let ids = |k: &str| -> Vec<u32> {
            l[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_u64())
                        .map(|v| v as u32)
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(ids("uidset"), ours.uidset, "{cmd}");
        assert_eq!(ids("gidset"), ours.gidset, "{cmd}");
    }
}

/// Files larger than the writeback chunk (8 MiB) are written in chunks whose writeback is
/// started early (`fadvise`); the content must come out exact, at odd sizes too, and the
/// page cache drop must not lose or reorder anything.
#[test]
fn large_files_unpack_exactly_with_early_writeback() {
    let big: Vec<u8> = (0..(20u32 << 20) + 12_345)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let exact: Vec<u8> = vec![0x5a; 16 << 20];
    let bytes = common::tar(&[
        common::Entry::file("big", &big),
        common::Entry::file("exact", &exact),
        common::Entry::file("small", b"after"),
    ]);
    let tmp = tempfile::tempdir().expect("tmp");
    let size = storage_archive::unpack(
        &mut &bytes[..],
        tmp.path(),
        &storage_archive::UnpackOptions::default(),
    )
    .expect("unpack");
    assert_eq!(size, (big.len() + exact.len() + 5) as i64);
    assert!(std::fs::read(tmp.path().join("big")).expect("big") == big);
    assert!(std::fs::read(tmp.path().join("exact")).expect("exact") == exact);
    assert_eq!(
        std::fs::read(tmp.path().join("small")).expect("small"),
        b"after"
    );
}

#[test]
fn recording_yields_the_stream_and_the_same_tar_split_as_a_disassembler() {
    let raw = sample_tar();
    let mut want = storage_tarsplit::Disassembler::new(&raw[..], Vec::new());
    std::io::copy(&mut want, &mut std::io::sink()).expect("disassemble");
    let want = want.finish().expect("finish");

    let mut r = open_diff_recording(
        Box::new(std::io::Cursor::new(raw.clone())),
        Vec::<u8>::new(),
    )
    .expect("open");
    let mut out = Vec::new();
    r.read_to_end(&mut out).expect("read");
    assert_eq!(out, raw);
    let (stats, lines) = r.finish_recording().expect("finish");
    assert_eq!(lines, want, "tar-split lines");
    assert_eq!(stats.uncompressed_digest.to_string(), sha256sum(&raw));
    assert_eq!(stats.uidset, vec![0, 2, 3, 1000]);
    assert_eq!(stats.gidset, vec![2, 5, 30, 1000]);
}

#[test]
fn recording_reports_a_duplicate_path_to_the_reader() {
    let raw = tar(&[
        Entry::file("a", b"one"),
        Entry::file("b", b"two"),
        Entry::file("./a", b"three"),
    ]);
    let mut r =
        open_diff_recording(Box::new(std::io::Cursor::new(raw)), Vec::<u8>::new()).expect("open");
    let mut out = Vec::new();
    let err = r.read_to_end(&mut out).expect_err("duplicate");
    assert_eq!(err.to_string(), "duplicates of file paths not supported");
    assert!(r.finish_recording().is_err());
}

/// A tar-split writer that says when it is dropped.
struct DropFlag(Arc<AtomicBool>);

impl Write for DropFlag {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The layer store removes the tar-split temporary file when its writer drops; a process
/// that exits right after a failed apply must not leave it behind, so dropping the reader
/// returns only once the helper thread has let go of the writer.
#[test]
fn dropping_a_recording_reader_releases_the_writer_before_it_returns() {
    // Mid-stream: the producer is blocked on a full channel.
    let big = tar(&[Entry::file("big", &vec![3u8; 32 << 20])]);
    let flag = Arc::new(AtomicBool::new(false));
    let mut r = open_diff_recording(
        Box::new(std::io::Cursor::new(big)),
        DropFlag(Arc::clone(&flag)),
    )
    .expect("open");
    let mut buf = [0u8; 4096];
    r.read_exact(&mut buf).expect("read");
    std::thread::sleep(Duration::from_millis(50));
    drop(r);
    assert!(flag.load(Ordering::SeqCst), "writer still held mid-stream");

    // After a stream error: the producer has sent the error and is ending.
    let good = tar(&[Entry::file("f", &vec![5u8; 1 << 20])]);
    let zst = tool("zstd", &["-c", "-q"], &good).expect("zstd");
    let cut = zst[..zst.len() / 2].to_vec();
    for _ in 0..20 {
        let flag = Arc::new(AtomicBool::new(false));
        let mut r = open_diff_recording(
            Box::new(std::io::Cursor::new(cut.clone())),
            DropFlag(Arc::clone(&flag)),
        )
        .expect("open");
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err(), "cut zstd read to the end");
        drop(r);
        assert!(
            flag.load(Ordering::SeqCst),
            "writer still held after an error"
        );
    }
}
