//! Every committed corpus file (the seeds, and the inputs of crashes found, kept as
//! regressions) replayed through its target; the seeds regenerated and compared with the
//! committed ones (`STORAGE_FUZZ_WRITE_SEEDS=1` writes them instead).

use std::io::Write;
use std::path::{Path, PathBuf};

use storage_fuzz::{REASSEMBLE_TREE, Scratch, TARGETS, find};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    v.sort();
    v
}

#[test]
fn every_corpus_file_passes_its_target() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut scratch = Scratch::new(tmp.path());
    let mut total = 0;
    for t in TARGETS {
        let inputs = files(&corpus_dir().join(t.name));
        assert!(!inputs.is_empty(), "no corpus for {}", t.name);
        for input in inputs {
            let data = std::fs::read(&input).expect("corpus file");
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (t.run)(&mut scratch, &data)
            }));
            assert!(r.is_ok(), "{} fails on {}", t.name, input.display());
            total += 1;
        }
    }
    eprintln!("{total} corpus inputs replayed");
}

#[test]
fn corpus_directories_are_targets() {
    for dir in files(&corpus_dir()) {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(find(name).is_some(), "{} is no target", dir.display());
    }
}

#[test]
fn seeds_are_committed() {
    let write = std::env::var_os("STORAGE_FUZZ_WRITE_SEEDS").is_some();
    let mut missing = Vec::new();
    for (target, name, data) in seeds() {
        assert!(find(target).is_some(), "{target}");
        assert!(data.len() <= 16 * 1024, "seed {target}/{name} is large");
        let path = corpus_dir().join(target).join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, &data).expect("write seed");
        } else if std::fs::read(&path).ok().as_deref() != Some(&data[..]) {
            missing.push(path.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "seeds missing or different (STORAGE_FUZZ_WRITE_SEEDS=1 writes them): {missing:?}"
    );
}

// ---- The seed generator ----

type Seed = (&'static str, String, Vec<u8>);

fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    // Raw bytes: the tar crate refuses `..` and absolute names, which are the point here.
    assert!(name.len() < 100, "{name}");
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

/// A tar of `(name, type, content or link target)` entries, ustar headers.
fn tar_of(entries: &[(&str, char, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let kind = tar::EntryType::new(*kind as u8);
        if kind.is_symlink() || kind.is_hard_link() {
            let mut h = header(name, kind, 0);
            h.set_link_name(std::str::from_utf8(data).expect("utf8"))
                .expect("link");
            h.set_cksum();
            b.append(&h, &[][..]).expect("append");
        } else {
            let h = header(name, kind, data.len() as u64);
            b.append(&h, *data).expect("append");
        }
    }
    b.into_inner().expect("tar")
}

/// A tar with one PAX header (`path`, an xattr) and one GNU long name.
fn tar_extended() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("path", &b"pax/long/name/from/the/extended/header"[..]),
        ("SCHILY.xattr.user.k", &b"v"[..]),
        ("mtime", &b"1700000000.5"[..]),
    ])
    .expect("pax");
    b.append(&header("short", tar::EntryType::Regular, 3), &b"pax"[..])
        .expect("append");
    let mut gnu = tar::Header::new_gnu();
    gnu.set_entry_type(tar::EntryType::Regular);
    gnu.set_size(4);
    gnu.set_mode(0o600);
    let long = format!("{}/file", "d".repeat(120));
    b.append_data(&mut gnu, long, &b"long"[..]).expect("gnu");
    b.into_inner().expect("tar")
}

fn tars() -> Vec<(String, Vec<u8>)> {
    let plain = tar_of(&[
        ("dir/", '5', b""),
        ("dir/file", '0', b"hello\n"),
        ("dir/link", '2', b"file"),
        ("dir/hard", '1', b"dir/file"),
        ("fifo", '6', b""),
        ("empty", '0', b""),
    ]);
    let mut junk = plain.clone();
    junk.extend_from_slice(b"trailing junk after the end marker");
    let mut truncated = plain.clone();
    truncated.truncate(1100);
    vec![
        ("plain".into(), plain),
        ("extended".into(), tar_extended()),
        ("junk".into(), junk),
        ("truncated".into(), truncated),
        ("end-marker-only".into(), vec![0; 1024]),
        ("empty".into(), Vec::new()),
    ]
}

/// Tars that try to reach the canary beside the root (`<root>/../canary/file`).
fn escaping_tars() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "dotdot-write".into(),
            tar_of(&[("../canary/file", '0', b"x")]),
        ),
        (
            "symlink-then-write".into(),
            tar_of(&[("l", '2', b"../canary"), ("l/file", '0', b"x")]),
        ),
        (
            "absolute-symlink".into(),
            tar_of(&[("a", '2', b"/"), ("a/../canary/file", '0', b"x")]),
        ),
        (
            "hardlink-out".into(),
            tar_of(&[("h", '1', b"../canary/file")]),
        ),
        (
            "whiteout-out".into(),
            tar_of(&[("d/", '5', b""), ("d/.wh...", '0', b"")]),
        ),
        (
            "opaque-and-whiteouts".into(),
            tar_of(&[
                ("d/", '5', b""),
                ("d/x", '0', b"1"),
                ("d/.wh..wh..opq", '0', b""),
                (".wh.d", '0', b""),
                ("/abs", '0', b"absolute"),
            ]),
        ),
    ]
}

fn tar_split_json(tar: &[u8]) -> Vec<u8> {
    let mut d = storage_tarsplit::Disassembler::new(tar, Vec::new());
    std::io::copy(&mut d, &mut std::io::sink()).expect("disassemble");
    d.finish().expect("finish")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn seeds() -> Vec<Seed> {
    let mut out: Vec<Seed> = Vec::new();
    for (name, tar) in tars() {
        out.push(("tar_reader", name.clone(), tar.clone()));
        out.push(("tarsplit_roundtrip", name.clone(), tar.clone()));
        // Every format for the plain tar, the naive one for the others but the trivial ones.
        let formats: &[(u8, &str)] = match name.as_str() {
            "plain" => &[(0, "apply"), (1, "overlay"), (2, "aufs")],
            "end-marker-only" | "empty" => &[],
            _ => &[(0, "apply")],
        };
        for &(sel, fmt) in formats {
            let mut input = vec![sel];
            input.extend_from_slice(&tar);
            out.push(("unpack", format!("{fmt}-{name}"), input));
        }
    }
    for (name, tar) in escaping_tars() {
        for (sel, fmt) in [(0u8, "apply"), (1, "overlay")] {
            let mut input = vec![sel];
            input.extend_from_slice(&tar);
            out.push(("unpack", format!("{fmt}-{name}"), input));
        }
    }
    // Reassembly: a tar of the target's directory, and hostile names.
    let tree: Vec<(&str, char, &[u8])> =
        REASSEMBLE_TREE.iter().map(|(n, c)| (*n, '0', *c)).collect();
    let json = tar_split_json(&tar_of(&tree));
    out.push(("tarsplit_reassemble", "tree".into(), json.clone()));
    out.push(("tarsplit_reassemble", "tree-gz".into(), gzip(&json)));
    let hostile = [
        (
            "dotdot",
            r#"{"type":1,"name":"../canary/file","size":5,"payload":"AAAAAAAAAAA=","position":0}"#,
        ),
        (
            "abs-dotdot",
            r#"{"type":1,"name":"/../../canary/file","size":5,"payload":null,"position":0}"#,
        ),
        (
            "name-raw",
            r#"{"type":1,"name_raw":"Li4vY2FuYXJ5L2ZpbGU=","size":5,"payload":null,"position":0}"#,
        ),
        (
            "link-on-the-path",
            r#"{"type":1,"name":"up/file","size":57,"payload":null,"position":0}"#,
        ),
        (
            "link-in-place",
            r#"{"type":1,"name":"d/cf","size":57,"payload":null,"position":0}"#,
        ),
        (
            "absolute-link",
            r#"{"type":1,"name":"root/canary/file","size":57,"payload":null,"position":0}"#,
        ),
        (
            "dir-as-file",
            r#"{"type":2,"payload":"aGVsbG8=","position":0}
{"type":1,"name":"d","size":1,"payload":null,"position":1}"#,
        ),
    ];
    for (name, text) in hostile {
        out.push(("tarsplit_reassemble", name.into(), text.as_bytes().to_vec()));
    }
    // Decompression: one small tar in every format, and bad streams.
    let tar = tar_of(&[("f", '0', b"some content\n")]);
    out.push(("decompress", "plain".into(), tar.clone()));
    out.push(("decompress", "gzip".into(), gzip(&tar)));
    out.push((
        "decompress",
        "zstd".into(),
        zstd::encode_all(&tar[..], 3).expect("zstd"),
    ));
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(&tar).expect("bzip2");
    out.push(("decompress", "bzip2".into(), bz.finish().expect("bzip2")));
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&tar).expect("xz");
    out.push(("decompress", "xz".into(), xz.finish().expect("xz")));
    let mut cut = gzip(&tar);
    cut.truncate(cut.len() / 2);
    out.push(("decompress", "gzip-truncated".into(), cut));
    out.push((
        "decompress",
        "gzip-magic-only".into(),
        vec![0x1f, 0x8b, 0x08],
    ));
    // Records: the storage-types fixtures (written by Go) and small edge cases.
    let fixtures: [(&str, &[u8]); 4] = [
        (
            "layers",
            include_bytes!("../../crates/storage-types/tests/fixtures/layers.json"),
        ),
        (
            "images",
            include_bytes!("../../crates/storage-types/tests/fixtures/images.json"),
        ),
        (
            "containers",
            include_bytes!("../../crates/storage-types/tests/fixtures/containers.json"),
        ),
        (
            "mountpoints",
            include_bytes!("../../crates/storage-types/tests/fixtures/mountpoints.json"),
        ),
    ];
    for (name, data) in fixtures {
        out.push(("records", name.into(), data.to_vec()));
    }
    // The stores' loading: the fixtures together, and names shared between records.
    let mut together = Vec::new();
    for (i, (_, data)) in fixtures.iter().enumerate() {
        if i > 0 {
            together.push(0);
        }
        together.extend_from_slice(data);
    }
    assert_eq!(storage_fuzz::STORE_FILES.len(), fixtures.len());
    out.push(("store_load", "fixtures".into(), together));
    let id = |c: char| c.to_string().repeat(64);
    let shared = format!(
        r#"[{{"id":"{a}","names":["n","m"]}},{{"id":"{b}","parent":"{a}","names":["n"],"flags":{{"incomplete":true}}}}]{nul}[{{"id":"{c}","layer":"{a}","names":["i","i"]}},{{"id":"{d}","layer":"{a}","names":["i"]}}]{nul}[{{"id":"{e}","layer":"{a}","image":"{c}","names":["i"]}}]{nul}[{{"id":"{a}","path":"/mnt","count":2}},{{"id":"n","path":"/x","count":1}}]"#,
        a = id('a'),
        b = id('b'),
        c = id('c'),
        d = id('d'),
        e = id('e'),
        nul = '\0'
    );
    out.push(("store_load", "shared-names".into(), shared.into_bytes()));
    out.push((
        "store_load",
        "dotdot-ids".into(),
        br#"[{"id":"../../canary","flags":{"incomplete":true}},{"id":"..","names":["x"]}]"#
            .to_vec(),
    ));
    for (name, text) in [
        ("null", "null"),
        ("empty-list", "[]"),
        (
            "odd",
            r#"[{"id":"x","names":["a\u003c"],"created":"2024-02-29T23:59:59.999999999-07:00","flags":{"n":1e21,"b":true},"unknown":[1,{"k":null}],"metadata":"m\ud83d\ude00"}]"#,
        ),
    ] {
        out.push(("records", name.into(), text.as_bytes().to_vec()));
    }
    // storage.conf.
    for (name, text) in [
        ("minimal", "[storage]\ndriver = \"vfs\"\n"),
        (
            "full",
            "[storage]\ndriver = \"overlay\"\nrunroot = \"/run/containers/$UID\"\n\
             graphroot = \"${HOME}/g\"\nimagestore = \"/is\"\nrootless_storage_path = \"$HOME/r\"\n\
             transient_store = true\ndriver_priority = [\"overlay\", \"vfs\"]\n\
             [storage.options]\nadditionalimagestores = [\"/a\"]\nsize = \"10G\"\n\
             force_mask = 0o700\npull_options = {enable_partial_images = \"true\"}\n\
             [storage.options.overlay]\nmount_program = \"/usr/bin/fuse-overlayfs\"\n\
             mountopt = \"nodev\"\n[storage.options.thinpool]\nautoextend_percent = \"20\"\n",
        ),
        ("unknown-keys", "[storage]\ndrivr = 1\n[other]\nx = 2\n"),
        ("bad-toml", "[storage\ndriver = \"vfs\"\n"),
        ("wrong-type", "[storage]\ndriver = 3\n"),
    ] {
        out.push(("storage_conf", name.into(), text.as_bytes().to_vec()));
    }
    // Command lines (NUL-separated).
    for (name, args) in [
        (
            "layers",
            &["--graph", "/g", "--run=/r", "-s", "vfs", "layers", "--json"][..],
        ),
        (
            "storage-opt",
            &["--storage-opt", "a=b", "--storage-opt=c", "-D", "status"],
        ),
        ("combined-short", &["-Dg", "/g", "images", "-j"]),
        ("help", &["--help"]),
        (
            "bool-value",
            &[
                "--debug=false",
                "--transient-store=1",
                "containers",
                "--json=true",
            ],
        ),
        ("dashdash", &["--", "-x"]),
        (
            "create-layer",
            &[
                "create-layer",
                "-n",
                "name",
                "--label",
                "k=v",
                "--",
                "parent",
            ],
        ),
        ("bad", &["-graph=", "--nope", "x"]),
        ("deprecated", &["-help"]),
    ] {
        out.push(("cli_flags", name.into(), args.join("\0").into_bytes()));
    }
    out
}
