//! Applying layer tars (all compressions), the recorded digests, byte-exact diffs through
//! tar-split, and failure cleanup — on every driver (`<test>::vfs`, `<test>::overlay`,
//! `<test>::btrfs`; overlay and btrfs need root, btrfs a loop device), temp dirs.

mod common;

use storage_testsupport::per_driver;

per_driver!(apply_records_digests_and_diff_reproduces_the_tar);
per_driver!(child_layers_diff_against_their_parent);
per_driver!(modified_content_fails_the_checksum);
per_driver!(bad_input_leaves_no_half_layer);

use std::io::Read;

use common::{Scratch, bzip2, gzip, list_dir, reader, sample_tar, sha256, xz, zstd};
use storage_archive::Compression;
use storage_layers::{CreateLayerOptions, DiffOptions};
use storage_types::ErrorKind;

fn diff_bytes(
    s: &storage_layers::Layers,
    id: &str,
    c: Option<Compression>,
) -> storage_types::Result<Vec<u8>> {
    let mut out = Vec::new();
    s.diff(None, id, &DiffOptions { compression: c }, &mut out)?;
    Ok(out)
}

fn apply_records_digests_and_diff_reproduces_the_tar(driver: &str) {
    let Some(s) = Scratch::with_driver(driver) else {
        return;
    };
    let store = s.store();
    let tar = sample_tar("one");
    let variants: Vec<(&str, Vec<u8>, i32)> = vec![
        ("plain", tar.clone(), 0),
        ("gzip", gzip(&tar), 2),
        ("zstd", zstd(&tar), 4),
        ("xz", xz(&tar), 3),
        ("bzip2", bzip2(&tar), 1),
    ];
    let mut w = store.write().unwrap();
    let mut ids = Vec::new();
    for (name, blob, code) in &variants {
        let opts = CreateLayerOptions {
            names: vec![name.to_string()],
            ..Default::default()
        };
        let (l, size) = w.create(&opts, Some(reader(blob.clone()))).unwrap();
        assert!(size >= 0, "{name}: driver size {size}");
        assert!(!l.is_incomplete());
        assert_eq!(l.compressed_diff_digest, sha256(blob), "{name}");
        assert_eq!(l.compressed_size, blob.len() as i64, "{name}");
        assert_eq!(l.diff_digest, sha256(&tar), "{name}");
        assert_eq!(l.diff_size, tar.len() as i64, "{name}");
        assert_eq!(l.compression, *code, "{name}");
        assert_eq!(l.uidset, vec![0, 1000], "{name}");
        assert_eq!(l.gidset, vec![0, 1000], "{name}");
        assert_eq!(
            std::fs::read(s.content_dir(&l.id).join("etc/hello.txt")).unwrap(),
            b"hello one\n"
        );
        ids.push(l.id);
    }
    drop(w);

    // Another instance, uncompressed diffs: byte for byte the applied tar.
    let other = s.store();
    let r = other.read().unwrap();
    for ((name, _, code), id) in variants.iter().zip(&ids) {
        assert!(r.tar_split_path(id).is_file(), "{name}: tar-split written");
        let got = diff_bytes(&r, id, Some(Compression::None)).unwrap();
        assert_eq!(sha256(&got), sha256(&tar), "{name}: diff digest");
        assert_eq!(r.size(id).unwrap(), tar.len() as i64);
        // Default compression = the applied one; bzip2/xz cannot be produced (Go's words).
        match code {
            0 => assert_eq!(diff_bytes(&r, id, None).unwrap(), tar),
            2 => {
                let gz = diff_bytes(&r, id, None).unwrap();
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_end(&mut plain)
                    .unwrap();
                assert_eq!(plain, tar);
            }
            4 => assert_eq!(
                zstd::decode_all(&diff_bytes(&r, id, None).unwrap()[..]).unwrap(),
                tar
            ),
            1 => assert_eq!(
                diff_bytes(&r, id, None).unwrap_err().to_string(),
                "unsupported compression format tar.bz2"
            ),
            _ => assert_eq!(
                diff_bytes(&r, id, None).unwrap_err().to_string(),
                "unsupported compression format tar.xz"
            ),
        }
    }
    // Lookups by digest.
    let d: storage_types::Digest = sha256(&tar).parse().unwrap();
    assert_eq!(r.layers_by_uncompressed_digest(&d).unwrap().len(), 5);
    let d: storage_types::Digest = sha256(&variants[1].1).parse().unwrap();
    assert_eq!(r.layers_by_compressed_digest(&d).unwrap()[0].id, ids[1]);
    let none: storage_types::Digest = sha256(b"nothing").parse().unwrap();
    assert_eq!(
        r.layers_by_compressed_digest(&none).unwrap_err().kind(),
        ErrorKind::LayerUnknown
    );
    // The tar-split files are gzip JSON lines in Go's shape.
    let mut lines = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(r.tar_split_path(&ids[0])).unwrap())
        .read_to_string(&mut lines)
        .unwrap();
    assert!(
        lines
            .lines()
            .any(|l| l.contains(r#""type":1,"name":"etc/hello.txt","size":10"#)),
        "{lines}"
    );
}

fn child_layers_diff_against_their_parent(driver: &str) {
    let Some(s) = Scratch::with_driver(driver) else {
        return;
    };
    let store = s.store();
    let mut w = store.write().unwrap();
    let base_tar = sample_tar("base");
    let (base, _) = w
        .create(
            &CreateLayerOptions::default(),
            Some(reader(base_tar.clone())),
        )
        .unwrap();
    let child_tar = sample_tar("child");
    let opts = CreateLayerOptions {
        parent: Some(base.id.clone()),
        ..Default::default()
    };
    let (child, _) = w.create(&opts, Some(reader(gzip(&child_tar)))).unwrap();
    assert_eq!(child.diff_digest, sha256(&child_tar));
    // The child sees its parent's files overwritten by its own.
    assert_eq!(
        std::fs::read(s.content_dir(&child.id).join("etc/hello.txt")).unwrap(),
        b"hello child\n"
    );
    let got = diff_bytes(&w, &child.id, Some(Compression::None)).unwrap();
    assert_eq!(got, child_tar);
    // Against another reference the driver computes the diff instead.
    let mut naive = Vec::new();
    w.diff(
        Some(&child.id),
        &child.id,
        &DiffOptions {
            compression: Some(Compression::None),
        },
        &mut naive,
    )
    .unwrap();
    assert_ne!(naive, child_tar);
    // Changes and sizes come from the driver.
    assert_eq!(
        w.diff_size(None, &base.id).unwrap(),
        // Go's ChangesSize: every non-directory, symlinks included (their target length).
        ("hello base\n".len() + "owned by 1000 base\n".len() + "hello.txt".len()) as i64
    );
    assert!(!w.changes(None, &child.id).unwrap().is_empty());
    // apply_diff on an existing empty layer.
    let (empty, _) = w.create(&CreateLayerOptions::default(), None).unwrap();
    w.apply_diff(&empty.id, reader(zstd(&base_tar))).unwrap();
    let l = w.get(&empty.id).unwrap();
    assert_eq!(
        (l.diff_digest.clone(), l.compression),
        (sha256(&base_tar), 4)
    );
    assert_eq!(
        diff_bytes(&w, &empty.id, Some(Compression::None)).unwrap(),
        base_tar
    );
}

fn modified_content_fails_the_checksum(driver: &str) {
    let Some(s) = Scratch::with_driver(driver) else {
        return;
    };
    let store = s.store();
    let mut w = store.write().unwrap();
    let (l, _) = w
        .create(
            &CreateLayerOptions::default(),
            Some(reader(sample_tar("x"))),
        )
        .unwrap();
    std::fs::write(s.content_dir(&l.id).join("etc/hello.txt"), b"HELLO x\n").unwrap();
    let e = diff_bytes(&w, &l.id, Some(Compression::None)).unwrap_err();
    assert!(
        e.to_string()
            .contains(r#"file integrity checksum failed for "etc/hello.txt""#),
        "{e}"
    );
}

fn bad_input_leaves_no_half_layer(driver: &str) {
    let Some(s) = Scratch::with_driver(driver) else {
        return;
    };
    let store = s.store();
    let tar = sample_tar("t");
    let mut truncated_gz = gzip(&tar);
    truncated_gz.truncate(truncated_gz.len() / 2);
    let junk: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8 + 1).collect();
    let mut w = store.write().unwrap();
    w.create(
        &CreateLayerOptions {
            names: vec!["keep".into()],
            ..Default::default()
        },
        None,
    )
    .unwrap();
    let before_json = std::fs::read(s.layer_dir().join("layers.json")).unwrap();
    let before_dirs = s.driver_entries();
    for (what, blob) in [
        ("junk", junk),
        ("truncated tar", tar[..700].to_vec()),
        ("truncated gzip", truncated_gz),
        ("duplicate paths", duplicate_paths_tar()),
    ] {
        let opts = CreateLayerOptions {
            names: vec!["bad".into()],
            ..Default::default()
        };
        let e = w.create(&opts, Some(reader(blob))).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("unexpected EOF")
                || msg.contains("invalid tar header")
                || what == "duplicate paths",
            "{what}: {msg}"
        );
        assert_eq!(w.len(), 1, "{what}: record gone");
        assert!(w.lookup("bad").is_none());
        // The driver's staging root of deferred deletions stays, empty, as Go leaves it.
        let after: Vec<String> = s
            .driver_entries()
            .into_iter()
            .filter(|e| e != "tempdirs")
            .collect();
        assert_eq!(after, before_dirs, "{what}: {driver} dirs gone");
        assert_eq!(
            list_dir(&s.layer_dir()),
            vec!["layers.json", "layers.lock"],
            "{what}: no tar-split/temp files"
        );
        assert_eq!(
            std::fs::read(s.layer_dir().join("layers.json")).unwrap(),
            before_json,
            "{what}"
        );
    }
    // A failed apply_diff on an existing layer records nothing.
    let (l, _) = w.create(&CreateLayerOptions::default(), None).unwrap();
    assert!(
        w.apply_diff(&l.id, reader(b"garbage garbage".repeat(100)))
            .is_err()
    );
    let rec = w.get(&l.id).unwrap();
    assert!(rec.diff_digest.is_empty() && !rec.is_incomplete());
    assert!(!w.tar_split_path(&l.id).exists());
}

/// A tar naming the same file twice: tar-split refuses it (as Go's does).
fn duplicate_paths_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for body in [&b"a"[..], &b"b"[..]] {
        let mut h = tar::Header::new_gnu();
        h.set_path("f").unwrap();
        h.set_mode(0o644);
        h.set_size(1);
        h.set_cksum();
        b.append(&h, body).unwrap();
    }
    b.into_inner().unwrap()
}
