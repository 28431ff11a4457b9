//! Import and export through the library on scratch vfs stores, without peers: reuse rules
//!, platform choice from an index, and every kind of bad input
//! failing with a clear error and nothing left in the store.

use std::io::Write;
use std::path::{Path, PathBuf};

use containers_storage::Store;
use containers_storage::oci::testing::{tar_of, write_layout_from_files};
use containers_storage::oci::{
    Compression, ExportOptions, ImageRef, ImportOptions, Platform, export_image, import_image,
};
use containers_storage::types::Digest;

fn open(dir: &Path) -> Store {
    Store::open(&containers_storage::config::StoreOptions {
        graph_root: dir.join("root"),
        run_root: dir.join("run"),
        driver: "vfs".into(),
        ..Default::default()
    })
    .expect("open store")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Three layer tars: files owned by uid 1000+i.
fn tars() -> Vec<Vec<u8>> {
    (0..3)
        .map(|i| {
            tar_of(&[(
                format!("f{i}").as_str(),
                format!("layer {i}\n").into_bytes(),
            )])
            .unwrap()
        })
        .collect()
}

/// Writes `layers` (as given: plain or compressed bytes) as an OCI layout `dir:tag`.
fn layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) -> ImageRef {
    std::fs::create_dir_all(dir).unwrap();
    let mut files = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let p = dir.join(format!(
            "../{}-{tag}-{i}.layer",
            dir.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&p, l).unwrap();
        files.push(p);
    }
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    write_layout_from_files(dir, tag, &refs).unwrap();
    ImageRef::parse(&format!("oci:{}:{tag}", dir.display())).unwrap()
}

fn named(names: &[&str]) -> ImportOptions {
    ImportOptions {
        names: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn layers_json_mtime(dir: &Path) -> std::time::SystemTime {
    std::fs::metadata(dir.join("root/vfs-layers/layers.json"))
        .unwrap()
        .modified()
        .unwrap()
}

fn assert_empty(store: &Store) {
    assert!(store.layers().unwrap().is_empty(), "layers left behind");
    assert!(
        store.images_list().unwrap().is_empty(),
        "images left behind"
    );
}

#[test]
fn layer_ids_follow_the_diff_id_chain() {
    // The worked example of containers/image's layer IDs (observed with skopeo).
    let parent = "bb22a48b749901a39979c5811b30142247c25fa0e64a1bcb1eeccbc4616d2176";
    let d: Digest = "sha256:089ecce5af19bb17324185119167a33041837b460d3e99d6e9db3fb4e4fa6e76"
        .parse()
        .unwrap();
    assert_eq!(
        containers_storage::oci::layer_id(Some(parent), &d),
        "c85b0ef436782e8c2596d434c1a5a2104044cc6a07ba764a22cd2bca666a3daf"
    );
    assert_eq!(containers_storage::oci::layer_id(None, &d), d.encoded());
}

#[test]
fn reimport_reuses_and_renames() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let src = layout(&tmp.path().join("plain"), "v1", &tars());
    let first = import_image(&store, &src, &named(&["localhost/a:1"])).unwrap();
    assert!(first.created && first.layers.iter().all(|l| !l.reused));
    // Plain tars: compressed digest = diff digest, no compression recorded (checklist 1).
    for l in &first.layers {
        let (rec, _) = store.layer(&l.id).unwrap();
        assert_eq!(rec.compressed_diff_digest, rec.diff_digest);
        assert_eq!(rec.compressed_size, rec.diff_size);
        assert_eq!(rec.compression, 0);
    }
    let images_json = tmp.path().join("root/vfs-images/images.json");
    let before = std::fs::read(&images_json).unwrap();
    let mtime = layers_json_mtime(tmp.path());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = import_image(&store, &src, &named(&["localhost/a:1"])).unwrap();
    assert!(!again.created && again.layers.iter().all(|l| l.reused));
    assert_eq!(again.image.id, first.image.id);
    // Checklist 8: layers.json untouched, images.json the same bytes.
    assert_eq!(layers_json_mtime(tmp.path()), mtime);
    assert_eq!(std::fs::read(&images_json).unwrap(), before);

    // Checklist 9: a new name goes first; another image loses it.
    let other = layout(&tmp.path().join("other"), "v1", &tars()[..1]);
    import_image(&store, &other, &named(&["localhost/b:1"])).unwrap();
    let renamed = import_image(&store, &src, &named(&["localhost/b:1"])).unwrap();
    assert_eq!(renamed.image.names, ["localhost/b:1", "localhost/a:1"]);
    let b = store.images_list().unwrap();
    let other_img = b.iter().find(|i| i.id != renamed.image.id).unwrap();
    assert!(other_img.names.is_empty(), "{:?}", other_img.names);
    assert_eq!(store.images_list().unwrap().len(), 2);
}

#[test]
fn gzip_blobs_of_known_tars_reuse_layers_and_add_a_manifest() {
    // Checklist 10: the same config with gzip instead of plain layers.
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let t = tars();
    let plain = layout(&tmp.path().join("plain"), "v1", &t);
    let gz: Vec<Vec<u8>> = t.iter().map(|x| gzip(x)).collect();
    let zipped = layout(&tmp.path().join("gz"), "v1", &gz);
    let a = import_image(&store, &plain, &named(&["localhost/x:1"])).unwrap();
    let records: Vec<_> = a
        .layers
        .iter()
        .map(|l| store.layer(&l.id).unwrap().0)
        .collect();
    let mtime = layers_json_mtime(tmp.path());
    let b = import_image(&store, &zipped, &ImportOptions::default()).unwrap();
    assert_eq!(b.image.id, a.image.id, "same config, same image");
    assert!(b.layers.iter().all(|l| l.reused));
    assert_eq!(layers_json_mtime(tmp.path()), mtime);
    for (l, old) in b.layers.iter().zip(&records) {
        assert_eq!(&store.layer(&l.id).unwrap().0, old, "layer record changed");
    }
    let img = store.image(&a.image.id).unwrap();
    assert_eq!(
        img.digest,
        a.manifest_digest.to_string(),
        "digest stays the first"
    );
    let m2 = format!("manifest-{}", b.manifest_digest);
    assert_eq!(img.big_data_names.last().unwrap(), &m2);
    assert_eq!(
        store.image_big_data(&img.id, "manifest").unwrap(),
        store.image_big_data(&img.id, &m2).unwrap()
    );
    assert_eq!(img.digests.len(), 2);
}

#[test]
fn known_content_under_a_new_parent_is_copied_from_the_store() {
    // Checklists 11/12 (HEAD): layer 0 of image Y is layer 1 of image X. Y's base is a new
    // chain ID; its content comes from X's layer, so no compression is recorded, and the
    // gzip blob digest is kept only where the stored layer had it.
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let t = tars();
    let x = layout(&tmp.path().join("x"), "v1", &[t[0].clone(), gzip(&t[1])]);
    let y = layout(&tmp.path().join("y"), "v1", &[t[1].clone(), t[2].clone()]);
    let ix = import_image(&store, &x, &ImportOptions::default()).unwrap();
    let iy = import_image(&store, &y, &ImportOptions::default()).unwrap();
    assert!(!iy.layers[0].reused);
    let base = store.layer(&iy.layers[0].id).unwrap().0;
    assert_eq!(base.parent, "");
    assert_eq!(base.diff_digest, ix.layers[1].diff_id.to_string());
    assert_eq!(base.compression, 0);
    // The blob (plain tar) has the diff digest: the stored layer matched by diff-digest has
    // a gzip compressed digest, not this blob's, so D and the diff size are recorded.
    assert_eq!(base.compressed_diff_digest, base.diff_digest);
    assert_eq!(base.compressed_size, base.diff_size);
    // Same content, byte for byte.
    let diff = |id: &str| {
        let mut v = Vec::new();
        let plain = containers_storage::DiffOptions {
            compression: Some(Compression::None),
        };
        store.diff(None, id, &plain, &mut v).unwrap();
        v
    };
    assert_eq!(diff(&base.id), diff(&ix.layers[1].id));
}

#[test]
fn platform_is_chosen_from_an_index() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let t = tars();
    // Two single-arch layouts; their blobs copied into a third one with an index of both.
    let host = Platform::host();
    let dir = tmp.path().join("multi");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descs = Vec::new();
    for (name, layers) in [("a", &t[..1]), ("b", &t[1..2])] {
        let single = tmp.path().join(name);
        layout(&single, name, layers);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(single.join("index.json")).unwrap()).unwrap();
        descs.push(index["manifests"][0].clone());
        for entry in std::fs::read_dir(single.join("blobs/sha256")).unwrap() {
            let e = entry.unwrap();
            std::fs::copy(e.path(), dir.join("blobs/sha256").join(e.file_name())).unwrap();
        }
    }
    let (a_desc, b_desc) = (descs[0].clone(), descs[1].clone());
    let plat = |d: &serde_json::Value, arch: &str| {
        serde_json::json!({
            "mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"],
            "platform": {"os": "linux", "architecture": arch},
        })
    };
    let other_arch = if host.architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let idx = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [plat(&b_desc, other_arch), plat(&a_desc, &host.architecture)],
    }))
    .unwrap();
    let idx_digest = Digest::sha256(&idx);
    std::fs::write(dir.join("blobs/sha256").join(idx_digest.encoded()), &idx).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": idx_digest.to_string(), "size": idx.len(),
                "annotations": {"org.opencontainers.image.ref.name": "multi"},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    let src = ImageRef::parse(&format!("oci:{}:multi", dir.display())).unwrap();
    let mine = import_image(&store, &src, &ImportOptions::default()).unwrap();
    let a_manifest: Digest = a_desc["digest"].as_str().unwrap().parse().unwrap();
    assert_eq!(mine.manifest_digest, a_manifest, "the host's instance");
    // Checklist 13: the index first, then the instance; digest = the index's.
    let names = &mine.image.big_data_names;
    assert_eq!(names[1], format!("manifest-{idx_digest}"));
    assert_eq!(names[2], format!("manifest-{a_manifest}"));
    assert_eq!(mine.image.digest, idx_digest.to_string());
    let other = import_image(
        &store,
        &src,
        &ImportOptions {
            platform: Some(Platform::parse(&format!("linux/{other_arch}")).unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_ne!(other.image.id, mine.image.id);
    assert_eq!(other.image.digest, idx_digest.to_string());
    let err = import_image(
        &store,
        &src,
        &ImportOptions {
            platform: Some(Platform::parse("linux/s390x").unwrap()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no image found in image index for architecture \"s390x\", variant \"\", OS \"linux\""
    );
}

#[test]
fn export_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let src = layout(&tmp.path().join("plain"), "v1", &tars());
    let imported = import_image(&store, &src, &named(&["localhost/rt:1"])).unwrap();
    for (transport, compression) in [
        ("oci", Compression::None),
        ("oci", Compression::Gzip),
        ("oci", Compression::Zstd),
        ("oci-archive", Compression::Gzip),
        ("docker-archive", Compression::None),
    ] {
        let what = format!("{transport} {compression:?}");
        let path = tmp.path().join(format!("out-{transport}-{compression:?}"));
        let dest =
            ImageRef::parse(&format!("{transport}:{}:localhost/rt:1", path.display())).unwrap();
        let opts = ExportOptions {
            compression,
            ..Default::default()
        };
        let out = export_image(&store, "localhost/rt:1", &dest, &opts).unwrap();
        assert_eq!(out.image_id, imported.image.id, "{what}");
        let diff_ids: Vec<_> = out.layers.iter().map(|l| l.diff_id.clone()).collect();
        let want: Vec<_> = imported.layers.iter().map(|l| l.diff_id.clone()).collect();
        assert_eq!(diff_ids, want, "{what}");
        if transport == "oci" && compression == Compression::None {
            // Plain input exported plain: the manifest is the one imported (checklist 15).
            assert_eq!(out.manifest_digest, imported.manifest_digest);
        } else if transport != "docker-archive" {
            assert_ne!(out.manifest_digest, imported.manifest_digest, "{what}");
        }
        // Re-imported into a fresh store: the same image ID and layers.
        let other = tempfile::tempdir().unwrap();
        let s2 = open(other.path());
        let back = import_image(&s2, &dest, &ImportOptions::default()).unwrap();
        assert_eq!(back.image.id, imported.image.id, "{what}");
        let ids: Vec<_> = back.layers.iter().map(|l| l.id.clone()).collect();
        let want: Vec<_> = imported.layers.iter().map(|l| l.id.clone()).collect();
        assert_eq!(ids, want, "{what}");
        if transport == "docker-archive" {
            assert_eq!(
                back.image.names,
                ["localhost/rt:1"],
                "RepoTags become names"
            );
            assert_eq!(back.manifest_digest, out.manifest_digest);
        }
        s2.shutdown(true).unwrap();
    }
    store.shutdown(true).unwrap();
}

// ------------------------------------------------------------------ bad input

/// Imports `src` into a fresh store, expecting an error containing `want`; the store must
/// be left empty.
fn fails(tmp: &Path, src: &ImageRef, want: &str) -> String {
    let dir = tempfile::tempdir_in(tmp).unwrap();
    let store = open(dir.path());
    let err = import_image(&store, src, &named(&["localhost/bad:1"]))
        .expect_err("import of bad input succeeded")
        .to_string();
    assert!(err.contains(want), "error {err:?} lacks {want:?}");
    assert!(!err.contains('\n'), "error on several lines: {err:?}");
    assert_empty(&store);
    err
}

fn manifest_of(dir: &Path) -> (PathBuf, serde_json::Value) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let d: Digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let p = dir.join("blobs/sha256").join(d.encoded());
    let m = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    (p, m)
}

/// Replaces the layout's manifest by `m` (and index.json's descriptor).
fn set_manifest(dir: &Path, m: &serde_json::Value) {
    let bytes = serde_json::to_vec(m).unwrap();
    let d = Digest::sha256(&bytes);
    std::fs::write(dir.join("blobs/sha256").join(d.encoded()), &bytes).unwrap();
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"] = d.to_string().into();
    index["manifests"][0]["size"] = bytes.len().into();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

fn blob(dir: &Path, d: &serde_json::Value) -> PathBuf {
    let d: Digest = d.as_str().unwrap().parse().unwrap();
    dir.join("blobs/sha256").join(d.encoded())
}

#[test]
fn bad_layouts_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tars();
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        let r = layout(&dir, "v1", &t);
        (dir, r)
    };

    // A missing layer blob: found before anything is applied.
    let (dir, r) = fresh("missing");
    let (_, m) = manifest_of(&dir);
    std::fs::remove_file(blob(&dir, &m["layers"][2]["digest"])).unwrap();
    fails(tmp.path(), &r, "is missing from the image layout");

    // A corrupted layer blob (same size): its digest is wrong, found while applying; the
    // two layers applied before it are removed again.
    let (dir, r) = fresh("corrupt");
    let (_, m) = manifest_of(&dir);
    let p = blob(&dir, &m["layers"][2]["digest"]);
    let mut data = std::fs::read(&p).unwrap();
    data[600] ^= 1;
    std::fs::write(&p, data).unwrap();
    fails(tmp.path(), &r, "layer 2 (blob sha256:");
    let err = fails(tmp.path(), &r, "digest mismatch");
    assert!(
        err.contains(m["layers"][2]["digest"].as_str().unwrap()),
        "{err}"
    );

    // A truncated blob: the size differs from the descriptor's.
    let (dir, r) = fresh("short");
    let (_, m) = manifest_of(&dir);
    let p = blob(&dir, &m["layers"][1]["digest"]);
    let data = std::fs::read(&p).unwrap();
    std::fs::write(&p, &data[..1000]).unwrap();
    fails(tmp.path(), &r, "has 1000 bytes, the manifest says");

    // A corrupted config.
    let (dir, r) = fresh("config");
    let (_, m) = manifest_of(&dir);
    let p = blob(&dir, &m["config"]["digest"]);
    let mut data = std::fs::read(&p).unwrap();
    data[2] ^= 1;
    std::fs::write(&p, data).unwrap();
    fails(tmp.path(), &r, "config sha256:");

    // A config whose diff IDs do not match the layers (HEAD refuses, 5.23 accepts).
    let (dir, r) = fresh("diffid");
    let (_, mut m) = manifest_of(&dir);
    let p = blob(&dir, &m["config"]["digest"]);
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    config["rootfs"]["diff_ids"][1] = format!("sha256:{}", "0".repeat(64)).into();
    let cbytes = serde_json::to_vec(&config).unwrap();
    let cd = Digest::sha256(&cbytes);
    std::fs::write(dir.join("blobs/sha256").join(cd.encoded()), &cbytes).unwrap();
    m["config"]["digest"] = cd.to_string().into();
    m["config"]["size"] = cbytes.len().into();
    set_manifest(&dir, &m);
    fails(tmp.path(), &r, "uncompressed digest mismatch");

    // An unknown layer media type.
    let (dir, r) = fresh("mediatype");
    let (_, mut m) = manifest_of(&dir);
    m["layers"][1]["mediaType"] = "application/vnd.example.layer+foo".into();
    set_manifest(&dir, &m);
    fails(
        tmp.path(),
        &r,
        "unsupported layer MIME type \"application/vnd.example.layer+foo\"",
    );

    // An encrypted layer.
    let (dir, r) = fresh("encrypted");
    let (_, mut m) = manifest_of(&dir);
    m["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted".into();
    set_manifest(&dir, &m);
    fails(tmp.path(), &r, "unsupported layer MIME type");

    // An unknown manifest media type.
    let (dir, r) = fresh("manifesttype");
    let (_, mut m) = manifest_of(&dir);
    m["mediaType"] = "application/vnd.example.manifest".into();
    set_manifest(&dir, &m);
    fails(tmp.path(), &r, "unsupported manifest MIME type");

    // A config that is not an image config (an artifact).
    let (dir, r) = fresh("artifact");
    let (_, mut m) = manifest_of(&dir);
    m["config"]["mediaType"] = "application/vnd.example.config".into();
    set_manifest(&dir, &m);
    fails(tmp.path(), &r, "artifact with type");

    // A blob that is a symbolic link to a file outside the layout.
    let (dir, r) = fresh("outside");
    let (_, m) = manifest_of(&dir);
    let p = blob(&dir, &m["layers"][0]["digest"]);
    let outside = tmp.path().join("secret");
    std::fs::write(&outside, std::fs::read(&p).unwrap()).unwrap();
    std::fs::remove_file(&p).unwrap();
    std::os::unix::fs::symlink(&outside, &p).unwrap();
    fails(tmp.path(), &r, "points outside of");

    // No such reference, and a layout with two images but no reference.
    let (dir, _) = fresh("noref");
    let r = ImageRef::parse(&format!("oci:{}:nope", dir.display())).unwrap();
    fails(tmp.path(), &r, "no image named \"nope\"");
    let (_, m) = manifest_of(&dir);
    let _ = m;
    let r = ImageRef::parse(&format!("oci:{}", tmp.path().join("nothing").display())).unwrap();
    fails(tmp.path(), &r, "nothing");
}

/// Tars the layout at `dir` (with extra hostile members) into `out`.
fn tar_dir(dir: &Path, out: &Path, extra: &[(&str, &[u8])]) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    for (name, data) in extra {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        // `append_data` refuses `..`: write the name into the header by hand.
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.append_dir_all(".", dir).unwrap();
    b.finish().unwrap();
}

#[test]
fn bad_archives_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tars();
    let dir = tmp.path().join("layout");
    layout(&dir, "v1", &t);
    let good = tmp.path().join("good.tar");
    tar_dir(&dir, &good, &[]);
    let r = ImageRef::parse(&format!("oci-archive:{}:v1", good.display())).unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = open(s.path());
    import_image(&store, &r, &ImportOptions::default()).expect("the good archive imports");
    // The same archive gzipped (containers/image decompresses archives too).
    let gz = tmp.path().join("good.tar.gz");
    std::fs::write(&gz, gzip(&std::fs::read(&good).unwrap())).unwrap();
    let r = ImageRef::parse(&format!("oci-archive:{}:v1", gz.display())).unwrap();
    let again = import_image(&store, &r, &ImportOptions::default()).expect("gzipped archive");
    assert!(again.layers.iter().all(|l| l.reused));
    store.shutdown(true).unwrap();

    // Truncated in the middle of a member.
    let data = std::fs::read(&good).unwrap();
    let cut = tmp.path().join("cut.tar");
    std::fs::write(&cut, &data[..data.len() / 2]).unwrap();
    let r = ImageRef::parse(&format!("oci-archive:{}:v1", cut.display())).unwrap();
    fails(tmp.path(), &r, "cut.tar");

    // A member climbing out of the archive: refused, and nothing is written anywhere.
    let evil = tmp.path().join("evil.tar");
    tar_dir(&dir, &evil, &[("../../escaped", b"x")]);
    let r = ImageRef::parse(&format!("oci-archive:{}:v1", evil.display())).unwrap();
    fails(tmp.path(), &r, "points outside of the archive");
    assert!(!tmp.path().join("../escaped").exists());

    // A docker-archive whose manifest.json names a layer outside the archive.
    let d = tmp.path().join("docker");
    std::fs::create_dir_all(&d).unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::sha256(&t[0]).to_string()]},
    }))
    .unwrap();
    std::fs::write(d.join("c.json"), &config).unwrap();
    std::fs::write(
        d.join("manifest.json"),
        br#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["../../etc/passwd"]}]"#,
    )
    .unwrap();
    let archive = tmp.path().join("docker.tar");
    tar_dir(&d, &archive, &[]);
    let r = ImageRef::parse(&format!("docker-archive:{}", archive.display())).unwrap();
    fails(tmp.path(), &r, "points outside of");

    // A docker-archive whose layer does not match the config's diff ID.
    std::fs::write(d.join("l.tar"), &t[1]).unwrap();
    std::fs::write(
        d.join("manifest.json"),
        br#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["l.tar"]}]"#,
    )
    .unwrap();
    tar_dir(&d, &archive, &[]);
    fails(tmp.path(), &r, "digest mismatch");

    // Not an archive at all.
    let junk = tmp.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tar file").unwrap();
    let r = ImageRef::parse(&format!("oci-archive:{}", junk.display())).unwrap();
    fails(tmp.path(), &r, "junk.tar");
}

#[test]
fn export_into_an_existing_layout_keeps_its_other_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let t = tars();
    let src = layout(&tmp.path().join("src"), "v1", &t[..2]);
    import_image(&store, &src, &named(&["localhost/e:1"])).unwrap();
    // A layout with an entry tagged v1 (another image) and an untagged one with a platform.
    let dir = tmp.path().join("dest");
    layout(&dir, "v1", &t[2..]);
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let old = index["manifests"][0].clone();
    let mut extra = old.clone();
    extra["annotations"] = serde_json::json!({"x": "<y>"});
    extra["platform"] = serde_json::json!({
        "architecture": "arm64", "os": "linux", "os.version": "1", "variant": "v8",
    });
    index["manifests"].as_array_mut().unwrap().push(extra);
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();

    let dest = ImageRef::parse(&format!("oci:{}:v1", dir.display())).unwrap();
    let out = export_image(&store, "localhost/e:1", &dest, &ExportOptions::default()).unwrap();
    let got = std::fs::read_to_string(dir.join("index.json")).unwrap();
    // The older v1 entry lost its name; the extra entry kept everything; the new entry is
    // last. Go's form: fields in Go's order, map keys sorted, HTML characters escaped.
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    let m = v["manifests"].as_array().unwrap();
    assert_eq!(m.len(), 3, "{got}");
    assert!(m[0].get("annotations").is_none(), "{got}");
    assert_eq!(m[1]["platform"]["os.version"], "1", "{got}");
    assert!(
        got.contains(
            r#""platform":{"architecture":"arm64","os":"linux","os.version":"1","variant":"v8"}"#
        ),
        "{got}"
    );
    assert_eq!(m[1]["annotations"]["x"], "<y>", "{got}");
    assert!(got.contains(r#""x":"\u003cy\u003e""#), "{got}");
    assert_eq!(m[2]["digest"], out.manifest_digest.to_string());
    assert_eq!(
        m[2]["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    assert!(got.starts_with(
        r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"#
    ));
    store.shutdown(true).unwrap();
}
