//! Records written by Go's containers-storage must load and save back
//! byte-identically.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use storage_types::{
    Container, ErrorKind, Image, Layer, MountPoint, Timestamp, parse_images, parse_records,
    to_go_json,
};

const LAYERS: &[u8] = include_bytes!("fixtures/layers.json");
const IMAGES: &[u8] = include_bytes!("fixtures/images.json");
const CONTAINERS: &[u8] = include_bytes!("fixtures/containers.json");
const MOUNTPOINTS: &[u8] = include_bytes!("fixtures/mountpoints.json");

fn round_trip<T: DeserializeOwned + Serialize>(data: &[u8], name: &str) -> Vec<T> {
    let recs: Vec<T> = parse_records(data, Path::new(name)).expect(name);
    let out = to_go_json(&recs);
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(data),
        "{name} did not round-trip"
    );
    recs
}

fn check_set(layers: &[u8], images: &[u8], containers: &[u8], mountpoints: &[u8]) {
    let ls: Vec<Layer> = round_trip(layers, "layers.json");
    let _: Vec<Image> = round_trip(images, "images.json");
    let cs: Vec<Container> = round_trip(containers, "containers.json");
    let ms: Vec<MountPoint> = round_trip(mountpoints, "mountpoints.json");

    // Images also go through digest recomputation without changing their bytes.
    let imgs = parse_images(images, Path::new("images.json")).expect("images validate");
    assert_eq!(to_go_json(&imgs), images);

    // Sanity of what the generating script built.
    assert!(ls.len() >= 5 && imgs.len() == 2 && cs.len() == 2 && ms.len() == 2);
    let base = &ls[0];
    assert_eq!(base.names, ["base-layer"]);
    assert_eq!(base.uidset, [0, 1000]);
    assert_eq!(base.compression, 2);
    assert!(base.diff_digest().is_some() && base.known_size() == Some(base.diff_size));
    assert!(
        ls[1]
            .big_data_names
            .contains(&"zstd-chunked-manifest".to_owned())
    );
    assert!(ls[1].known_size().is_none());
    let img = &imgs[0];
    assert_eq!(img.digests.len(), 2, "explicit digest + manifest digest");
    assert!(img.metadata.contains("<>&\"é\n"));
    let img2 = &imgs[1];
    assert_eq!(img2.names, ["test3", "test2"]);
    assert_eq!(img2.names_history, ["test2", "test3"]);
    assert_eq!(img2.digest, img2.big_data_digests["manifest-sha256:aa"]);
    assert_eq!(cs[1].uidmap[0].host_id, 100000);
    assert_eq!(cs[0].mount_label(), "");
    assert_eq!(ms.iter().map(|m| m.count).sum::<i32>(), 3);
}

#[test]
fn committed_go_fixtures_round_trip() {
    check_set(LAYERS, IMAGES, CONTAINERS, MOUNTPOINTS);
}

#[test]
fn freshly_generated_go_records_round_trip() {
    let bin = Path::new("/usr/bin/containers-storage");
    if !bin.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: Go's containers-storage is required at {}",
            bin.display()
        );
        eprintln!(
            "SKIPPED freshly_generated_go_records_round_trip: {} not installed",
            bin.display()
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generate.sh");
    let out = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("sh")
        .arg(&script)
        .arg(out.path())
        .arg(bin)
        .status()
        .expect("run generate.sh");
    assert!(status.success(), "generate.sh failed");
    let read = |n: &str| std::fs::read(out.path().join(n)).expect(n);
    check_set(
        &read("layers.json"),
        &read("images.json"),
        &read("containers.json"),
        &read("mountpoints.json"),
    );
}

#[test]
fn unknown_keys_survive_and_missing_created_is_zero() {
    let data = br#"[{"id":"l1","future":{"b":1,"a":[true,null]},"created":"2024-01-01T00:00:00Z","zz":"x\u003c"},{"id":"l2"}]"#;
    let ls: Vec<Layer> = parse_records(data, Path::new("layers.json")).expect("parse");
    assert!(ls[1].created.is_zero());
    assert_eq!(
        to_go_json(&ls),
        br#"[{"id":"l1","created":"2024-01-01T00:00:00Z","future":{"a":[true,null],"b":1},"zz":"x\u003c"},{"id":"l2","created":"0001-01-01T00:00:00Z"}]"#
    );
    let cs: Vec<Container> =
        parse_records(br#"[{"id":"c","extra":1}]"#, Path::new("c.json")).expect("parse");
    // image and layer are always written, even empty.
    assert_eq!(
        to_go_json(&cs),
        br#"[{"id":"c","image":"","layer":"","created":"0001-01-01T00:00:00Z","extra":1}]"#
    );
    let ms: Vec<MountPoint> =
        parse_records(br#"[{"id":"m","path":"","count":0}]"#, Path::new("m.json")).expect("parse");
    assert_eq!(to_go_json(&ms), br#"[{"id":"m","path":"","count":0}]"#);
}

#[test]
fn nulls_and_empty_values_are_omitted_like_go() {
    let data = br#"[{"id":"l","names":null,"parent":"","compressed-size":0,"flags":{},"uidmap":[],"created":null,"diff-size":-1,"toc-digest":"sha256:x"}]"#;
    let ls: Vec<Layer> = parse_records(data, Path::new("layers.json")).expect("parse");
    assert_eq!(
        to_go_json(&ls),
        br#"[{"id":"l","created":"0001-01-01T00:00:00Z","toc-digest":"sha256:x","diff-size":-1}]"#
    );
    // Invalid layer digests do not prevent loading.
    assert!(ls[0].toc_digest().is_none());
    assert_eq!(ls[0].known_size(), Some(-1));
}

#[test]
fn offsets_are_preserved() {
    let data = br#"[{"id":"i","created":"2024-01-01T00:00:00.5+02:00"}]"#;
    let imgs = parse_images(data, Path::new("images.json")).expect("parse");
    assert_eq!(imgs[0].created.offset_seconds(), 7200);
    assert_eq!(
        imgs[0].created,
        Timestamp::parse("2024-01-01T00:00:00.5+02:00").expect("ts")
    );
    assert_eq!(to_go_json(&imgs), data);
}

#[test]
fn invalid_image_digests_fail_the_load() {
    let bad = br#"[{"id":"i","digest":"bogus","created":"2024-01-01T00:00:00Z"}]"#;
    let e = parse_images(bad, Path::new("/G/vfs-images/images.json")).expect_err("bad digest");
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert_eq!(
        e.to_string(),
        "loading /G/vfs-images/images.json: validating image digest \"bogus\": invalid checksum digest format"
    );
    let bad = br#"[{"id":"i","big-data-digests":{"manifest-x":"sha256:abc","other":"junk"}}]"#;
    let e = parse_images(bad, Path::new("images.json")).expect_err("bad manifest digest");
    assert!(
        e.to_string().ends_with(
            "validating digest \"sha256:abc\" for big data item \"manifest-x\": invalid checksum digest length"
        ),
        "{e}"
    );
    // Non-manifest keys are not validated; the digest is auto-filled and deduplicated.
    let d = format!("sha256:{}", "a".repeat(64));
    let json = format!(
        r#"[{{"id":"i","big-data-digests":{{"manifest":"{d}","manifest-sha256:x":"{d}","other":"junk"}}}}]"#
    );
    let imgs = parse_images(json.as_bytes(), Path::new("images.json")).expect("valid");
    assert_eq!(imgs[0].digest, d);
    assert_eq!(imgs[0].digests.len(), 1);
    let mut img = Image {
        digest: "sha256:short".into(),
        ..Default::default()
    };
    assert!(img.validate_digests().is_err());
    img.digest.clear();
    img.add_names_to_history(&["a".into(), "b".into()]);
    img.add_names_to_history(&["a".into()]);
    assert_eq!(img.names_history, ["a", "b"]);
}

#[test]
fn html_sensitive_names_are_escaped() {
    let img = Image {
        id: "x".into(),
        names: vec!["a<b>&c \"q\" é".into()],
        metadata: "line1\nline2".into(),
        ..Default::default()
    };
    assert_eq!(
        to_go_json(&[img]),
        r#"[{"id":"x","names":["a\u003cb\u003e\u0026c \"q\" é"],"metadata":"line1\nline2","created":"0001-01-01T00:00:00Z"}]"#
            .as_bytes()
    );
}

/// Records we encode are accepted by Go, and Go's re-encoding of them (after a
/// no-op metadata update) is byte-identical to ours.
#[test]
fn go_rewrites_our_records_identically() {
    use std::collections::BTreeMap;
    use storage_types::{IdMap, generate_id};

    let bin = Path::new("/usr/bin/containers-storage");
    if !bin.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: Go's containers-storage is required at {}",
            bin.display()
        );
        eprintln!(
            "SKIPPED go_rewrites_our_records_identically: {} not installed",
            bin.display()
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let g = dir.path().join("g");
    let r = dir.path().join("r");
    let cs = |args: &[&str]| {
        storage_testsupport::stdout_of(
            std::process::Command::new(bin)
                .arg("--graph")
                .arg(&g)
                .arg("--run")
                .arg(&r)
                .args(["--storage-driver", "vfs"])
                .args(args),
        )
    };
    cs(&["layers"]);

    let weird = "w <>&\"\\ \u{1}\u{7f}\u{8}\u{c}\r\n\t \u{2028}\u{2029} é 中 😀";
    let map = vec![IdMap::new(0, 100000, 65536)];
    let mut flags = BTreeMap::new();
    flags.insert(
        "b".to_owned(),
        serde_json::json!({"z": [1, "x<"], "a": null}),
    );
    flags.insert("a".to_owned(), serde_json::json!(true));
    let lid = generate_id();
    let layer = Layer {
        id: lid.clone(),
        names: vec![weird.to_owned(), "n2".to_owned()],
        metadata: "m".to_owned(),
        mount_label: "label".to_owned(),
        created: Timestamp::now(),
        diff_digest: dg('a'),
        compressed_diff_digest: dg('b'),
        compressed_size: 12,
        diff_size: 1024,
        compression: 3,
        uidset: vec![0, 5],
        gidset: vec![0],
        flags: flags.clone(),
        uidmap: map.clone(),
        gidmap: map.clone(),
        big_data_names: vec!["k1".to_owned(), "K2".to_owned()],
        ..Default::default()
    };
    let iid = generate_id();
    let mut sizes = BTreeMap::new();
    sizes.insert("manifest".to_owned(), 3);
    sizes.insert("Z".to_owned(), 4);
    let mut digests = BTreeMap::new();
    digests.insert("manifest".to_owned(), dg('c'));
    digests.insert("Z".to_owned(), dg('e'));
    let image = Image {
        id: iid.clone(),
        digest: dg('f'),
        names: vec![weird.to_owned()],
        names_history: vec![weird.to_owned(), "old".to_owned()],
        layer: lid.clone(),
        mapped_layers: vec!["m1".to_owned()],
        metadata: weird.to_owned(),
        big_data_names: vec!["manifest".to_owned(), "Z".to_owned()],
        big_data_sizes: sizes.clone(),
        big_data_digests: digests.clone(),
        created: Timestamp::parse("2024-01-01T00:00:00.123+02:00").expect("ts"),
        flags: flags.clone(),
        ..Default::default()
    };
    let cid = generate_id();
    let container = Container {
        id: cid.clone(),
        names: vec![weird.to_owned()],
        image: iid.clone(),
        layer: lid.clone(),
        metadata: "cm".to_owned(),
        big_data_names: vec!["Z".to_owned()],
        big_data_sizes: [("Z".to_owned(), 4)].into_iter().collect(),
        big_data_digests: [("Z".to_owned(), dg('e'))].into_iter().collect(),
        created: Timestamp::now(),
        uidmap: map.clone(),
        gidmap: map,
        flags,
        ..Default::default()
    };
    let files = [
        (g.join("vfs-layers/layers.json"), to_go_json(&[layer]), lid),
        (g.join("vfs-images/images.json"), to_go_json(&[image]), iid),
        (
            g.join("vfs-containers/containers.json"),
            to_go_json(&[container]),
            cid,
        ),
    ];
    for (path, data, _) in &files {
        std::fs::write(path, data).expect("write records");
    }
    for (path, data, id) in &files {
        let meta = if path.ends_with("layers.json") {
            "m"
        } else if path.ends_with("images.json") {
            weird
        } else {
            "cm"
        };
        use std::os::unix::fs::MetadataExt;
        let before = std::fs::metadata(path).expect("stat").ino();
        cs(&["set-metadata", "-m", meta, id]);
        let after = std::fs::metadata(path).expect("stat").ino();
        assert_ne!(before, after, "Go did not rewrite {}", path.display());
        let rewritten = std::fs::read(path).expect("read rewritten");
        assert_eq!(
            String::from_utf8_lossy(&rewritten),
            String::from_utf8_lossy(data),
            "Go re-encoded {} differently",
            path.display()
        );
    }
}

fn dg(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}
