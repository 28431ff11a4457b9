//! `import-image` and `export-image` against the reference: the same OCI layout imported by
//! skopeo into one store and by us into another gives the same records and layer contents;
//! podman, Go's containers-storage and skopeo read what we imported; what we export is read
//! by skopeo and umoci and comes back as the same image.
//!
//! Debian's skopeo 1.9 (containers/image 5.23) differs from containers/image HEAD, which we
//! follow, on exactly two points for these images:
//! 5.23 writes the metadata `{"signatures-sizes":{"<manifest digest>":[]}}` and a 0-byte
//! `signature-<manifest hex>` item for unsigned images, HEAD writes `{}` and no item. The
//! comparison checks both sides of those two points explicitly; everything else must be equal.

use std::path::Path;

use storage_tests::oci::{OciImage, assert_rootfs, busybox_available, sample_layers};
use storage_tests::peers::{
    Unmounter, diff_digests, first_line, layer_chain, ours_reads_pulled_image, podman,
    podman_reads_image, podman_run, podman_run_args, skopeo_copy, skopeo_exports_same_layers,
    storage_ref, umoci_unpack,
};
use storage_tests::{Cs, go_cs, is_root, ok, peer, require};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The image record `id` and its layer chain (base first), as our CLI lists them.
fn records(cs: &Cs, id: &str) -> (serde_json::Value, Vec<serde_json::Value>) {
    let images = json(&ok(&cs.ours(&["images", "--json"])));
    let image = images
        .as_array()
        .and_then(|a| a.iter().find(|i| i["id"] == id))
        .unwrap_or_else(|| panic!("image {id} not listed: {images}"))
        .clone();
    let top = image["layer"].as_str().expect("top layer").to_string();
    let chain = layer_chain(&ok(&cs.ours(&["layers", "--json"])), &top);
    (image, chain)
}

/// Imports `img` with skopeo into a store and with our CLI into another, then compares.
fn same_records_as_skopeo(gzip: bool) {
    if !require(peer("skopeo").is_some(), "skopeo") {
        return;
    }
    let theirs = Cs::new("vfs");
    let ours = Cs::new("vfs");
    let _g1 = Unmounter::new(&theirs, false);
    let _g2 = Unmounter::new(&ours, false);
    let img = OciImage::write_with(
        &ours.dir.path().join("oci"),
        "v1",
        sample_layers(false),
        gzip,
    );
    let name = "localhost/same:v1";
    ok(&skopeo_copy(&img.reference(), &storage_ref(&theirs, name)));
    let out = ok(&ours.ours(&["import-image", "--name", name, &img.reference()]));
    assert_eq!(out, format!("{}\n\t{name}\n", img.image_id()));
    let our_layers = assert_same_records(&theirs, &ours, img.image_id(), &img.manifest_digest);
    for (i, b) in our_layers.iter().enumerate() {
        if gzip {
            assert_eq!(b["compression"], 2, "layer {i}");
            assert_eq!(b["compressed-diff-digest"], img.layers[i].digest.as_str());
        } else {
            assert!(b.get("compression").is_none(), "layer {i}");
            assert_eq!(b["compressed-diff-digest"], b["diff-digest"]);
        }
    }
    assert_eq!(diff_digests(&our_layers), img.diff_ids());
}

/// Image `id` in skopeo's store `theirs` and in our store `ours` (its image manifest
/// `manifest_digest`): records equal field by field except the two documented 5.23-vs-HEAD
/// differences and the layers' creation times; layer contents and big data byte for byte.
/// Returns our layer records, base first.
fn assert_same_records(
    theirs: &Cs,
    ours: &Cs,
    id: &str,
    manifest_digest: &str,
) -> Vec<serde_json::Value> {
    let (their_image, their_layers) = records(theirs, id);
    let (our_image, our_layers) = records(ours, id);
    let mhex = manifest_digest.trim_start_matches("sha256:");
    let sig = format!("signature-{mhex}");
    // The two documented 5.23-vs-HEAD differences, each side checked.
    assert_eq!(
        their_image["metadata"],
        format!("{{\"signatures-sizes\":{{\"{manifest_digest}\":[]}}}}")
    );
    assert_eq!(our_image["metadata"], "{}");
    assert_eq!(their_image["big-data-sizes"][&sig], 0);
    assert!(our_image["big-data-sizes"].get(&sig).is_none());
    let fields: Vec<String> = their_image
        .as_object()
        .expect("record")
        .keys()
        .chain(our_image.as_object().expect("record").keys())
        .cloned()
        .collect();
    for key in fields {
        let (mut a, b) = (their_image[&key].clone(), our_image[&key].clone());
        match key.as_str() {
            "metadata" => continue,
            "big-data-names" => {
                a.as_array_mut()
                    .expect("names")
                    .retain(|n| n.as_str() != Some(&sig));
            }
            "big-data-sizes" | "big-data-digests" => {
                a.as_object_mut().expect("map").remove(&sig);
            }
            _ => {}
        }
        assert_eq!(a, b, "image field {key}: skopeo vs ours");
    }
    // Layer records: equal but for the creation time.
    assert_eq!(their_layers.len(), our_layers.len());
    for (i, (a, b)) in their_layers.iter().zip(&our_layers).enumerate() {
        let strip = |v: &serde_json::Value| {
            let mut v = v.clone();
            let o = v.as_object_mut().expect("layer record");
            assert!(
                o.remove("created").is_some(),
                "layer {i} has no created time"
            );
            v
        };
        assert_eq!(strip(a), strip(b), "layer {i}: skopeo vs ours");
    }
    // Layer contents byte for byte, and every big-data item.
    for (a, b) in their_layers.iter().zip(&our_layers) {
        let id = b["id"].as_str().expect("id");
        assert_eq!(a["id"], id);
        let da = theirs.ours(&["diff", "-u", id]);
        let db = ours.ours(&["diff", "-u", id]);
        ok(&da);
        ok(&db);
        assert!(da.stdout == db.stdout, "diff of layer {id} differs");
    }
    for key in our_image["big-data-names"].as_array().expect("names") {
        let key = key.as_str().expect("key");
        let a = theirs.ours(&["get-image-data", id, key]);
        let b = ours.ours(&["get-image-data", id, key]);
        ok(&a);
        ok(&b);
        assert!(a.stdout == b.stdout, "big data {key} differs");
    }
    our_layers
}

#[test]
fn same_records_as_skopeo_gzip_layers() {
    same_records_as_skopeo(true);
}

#[test]
fn same_records_as_skopeo_plain_layers() {
    same_records_as_skopeo(false);
}

#[test]
fn index_pulls_match_skopeo() {
    // Checklist 13: an index of two instances; each platform's image stored with the index
    // before its own manifest, `digest` = the index's. The second image shares the first's
    // base layer, so reuse is compared too.
    if !require(peer("skopeo").is_some(), "skopeo") {
        return;
    }
    let theirs = Cs::new("vfs");
    let ours = Cs::new("vfs");
    let _g1 = Unmounter::new(&theirs, false);
    let _g2 = Unmounter::new(&ours, false);
    let base = ours.dir.path();
    let layers = sample_layers(false);
    let host = OciImage::write(&base.join("host"), "h", layers[..1].to_vec());
    let other = OciImage::write(&base.join("other"), "o", layers[..2].to_vec());
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let other_arch = if host_arch == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let dir = base.join("multi");
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    for img in [&host, &other] {
        for e in std::fs::read_dir(img.dir.join("blobs/sha256")).expect("blobs") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), dir.join("blobs/sha256").join(e.file_name())).expect("copy");
        }
    }
    let entry = |img: &OciImage, arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.manifest_digest, "size": img.manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        })
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&other, other_arch), entry(&host, host_arch)],
    }))
    .expect("index");
    let index_digest = storage_tests::tars::sha256(&index);
    let index_hex = index_digest.trim_start_matches("sha256:");
    std::fs::write(dir.join("blobs/sha256").join(index_hex), &index).expect("write index");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": index_digest, "size": index.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"},
    }]});
    std::fs::write(dir.join("index.json"), top.to_string()).expect("index.json");
    let src = format!("oci:{}:multi", dir.display());

    ok(&skopeo_copy(
        &src,
        &storage_ref(&theirs, "localhost/multi:host"),
    ));
    ok(&storage_tests::peers::skopeo(&[
        "--override-arch",
        other_arch,
        "copy",
        "--quiet",
        &src,
        &storage_ref(&theirs, "localhost/multi:other"),
    ]));
    ok(&ours.ours(&["import-image", "-n", "localhost/multi:host", &src]));
    let platform = format!("linux/{other_arch}");
    ok(&ours.ours(&[
        "import-image",
        "--platform",
        &platform,
        "-n",
        "localhost/multi:other",
        &src,
    ]));
    for img in [&host, &other] {
        assert_same_records(&theirs, &ours, img.image_id(), &img.manifest_digest);
        let (image, _) = records(&ours, img.image_id());
        assert_eq!(image["digest"], index_digest.as_str());
        assert_eq!(
            image["big-data-names"][1],
            format!("manifest-{index_digest}")
        );
        assert_eq!(
            image["big-data-names"][2],
            format!("manifest-{}", img.manifest_digest)
        );
    }
}

#[test]
fn podman_go_and_skopeo_read_our_import() {
    if !require(peer("podman").is_some(), "podman")
        || !require(peer("skopeo").is_some(), "skopeo")
        || !require(go_cs().is_some(), "Debian's Go containers-storage")
    {
        return;
    }
    let cs = Cs::new("vfs");
    let _g = Unmounter::new(&cs, true);
    let bb = busybox_available();
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(bb));
    let name = "localhost/imported:v1";
    ok(&cs.ours(&["import-image", "-n", name, &img.reference()]));
    // Everything our CLI says about it (the checks made of skopeo's own pulls).
    ours_reads_pulled_image(&cs, &img, name, bb);

    podman_reads_image(&cs, &img, name, bb);
    let insp = json(&ok(&podman(&cs, &["image", "inspect", name])));
    assert_eq!(insp[0]["Created"], "2026-01-01T00:00:00Z");

    // Go's CLI mounts the image's top layer.
    let top = json(&ok(&cs.go(&["image", "--json", name])))[0]["layer"]
        .as_str()
        .expect("top")
        .to_string();
    let mp = first_line(&ok(&cs.go(&["mount", &top])));
    assert_rootfs(Path::new(&mp), bb, "Go's mount of our import");
    ok(&cs.go(&["unmount", &top]));

    // skopeo copies it out with the same diff IDs (and umoci unpacks that).
    let exported = skopeo_exports_same_layers(&cs, name, &img);
    if require(peer("umoci").is_some(), "umoci") {
        let rootfs = umoci_unpack(&exported, "x", &cs.dir.path().join("bundle"));
        assert_rootfs(&rootfs, bb, "umoci unpack of skopeo's export of our import");
    }
}

#[test]
fn podman_runs_an_image_we_imported() {
    if !require(is_root(), "root (overlay mounts)")
        || !require(peer("podman").is_some(), "podman")
        || !require(
            busybox_available(),
            "a static /bin/busybox to ship in the image",
        )
    {
        return;
    }
    let cs = Cs::new("overlay");
    let _g = Unmounter::new(&cs, true);
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(true));
    let name = "localhost/runnable-import:v1";
    ok(&cs.ours(&["import-image", "-n", name, &img.reference()]));
    let mut base = podman_run_args(name);
    base.extend([
        "/bin/sh",
        "-c",
        "cat /etc/motd; ls -A /opq; stat -c '%u:%g %a' /etc/secret",
    ]);
    let Some(out) = podman_run(&cs, &base) else {
        return;
    };
    assert_eq!(ok(&out), "layer2 motd\nnew\n1000:1000 600\n");
}

/// Member name → content of a tar file (symlinks as `-> target`).
fn members(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut a = tar::Archive::new(std::fs::File::open(path).expect("open archive"));
    let mut m = std::collections::BTreeMap::new();
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").to_string_lossy().into_owned();
        let mut body = Vec::new();
        if let Ok(Some(l)) = e.link_name() {
            body = format!("-> {}", l.display()).into_bytes();
        } else {
            std::io::Read::read_to_end(&mut e, &mut body).expect("read member");
        }
        m.insert(name, body);
    }
    m
}

#[test]
fn our_exports_are_read_by_skopeo_and_umoci() {
    if !require(peer("skopeo").is_some(), "skopeo") {
        return;
    }
    let cs = Cs::new("vfs");
    let _g = Unmounter::new(&cs, false);
    let img = OciImage::write_with(
        &cs.dir.path().join("oci"),
        "v1",
        sample_layers(false),
        false,
    );
    let name = "localhost/roundtrip:v1";
    ok(&cs.ours(&["import-image", "-n", name, &img.reference()]));
    let work = cs.dir.path();

    // Plain layers out of plain layers: the manifest is the one imported.
    let plain = work.join("plain");
    let out = ok(&cs.ours(&["export-image", name, &format!("oci:{}:x", plain.display())]));
    assert_eq!(out.trim(), img.manifest_digest);
    // --json, and a destination given as a bare path with --format.
    let bare = work.join("bare.tar");
    let j = json(&ok(&cs.ours(&[
        "export-image",
        "--json",
        "--format",
        "oci-archive",
        name,
        &bare.to_string_lossy(),
    ])));
    assert_eq!(j["id"], img.image_id());
    assert_eq!(j["manifest-digest"], img.manifest_digest.as_str());
    assert_eq!(j["config-digest"], img.config_digest.as_str());
    let ids: Vec<String> = j["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["diff-id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, img.diff_ids());
    let again = Cs::new("vfs");
    let back = json(&ok(&again.ours(&[
        "import-image",
        "--json",
        &format!("oci-archive:{}", bare.display()),
    ])));
    assert_eq!(back["id"], img.image_id());
    assert_eq!(back["digest"], img.manifest_digest.as_str());
    for (what, dest) in [
        ("plain", format!("oci:{}:x", plain.display())),
        ("gzip", format!("oci:{}:x", work.join("gzip").display())),
        ("zstd", format!("oci:{}:x", work.join("zstd").display())),
        (
            "oci-archive",
            format!("oci-archive:{}:x", work.join("a.tar").display()),
        ),
        (
            "docker-archive",
            format!("docker-archive:{}:{name}", work.join("d.tar").display()),
        ),
    ] {
        if what != "plain" {
            let compress = match what {
                "gzip" | "oci-archive" => "gzip",
                "zstd" => "zstd",
                _ => "none",
            };
            ok(&cs.ours(&["export-image", "--compress", compress, name, &dest]));
        }
        // skopeo reads our export into a fresh store: the same image ID and layers.
        let other = Cs::new("vfs");
        let _g = Unmounter::new(&other, false);
        ok(&skopeo_copy(
            &dest,
            &storage_ref(&other, "localhost/back:1"),
        ));
        let (image, chain) = records(&other, img.image_id());
        assert_eq!(diff_digests(&chain), img.diff_ids(), "{what}");
        assert!(
            image["names"]
                .as_array()
                .is_some_and(|n| n.iter().any(|x| x == "localhost/back:1"))
        );
        // We read it back too.
        let again = Cs::new("vfs");
        let back = ok(&again.ours(&["import-image", &dest]));
        assert_eq!(first_line(&back), img.image_id(), "{what}");
        if what != "docker-archive" && what != "oci-archive" && what != "zstd" {
            // umoci (no zstd support) unpacks the OCI layouts to the image's files.
            if require(peer("umoci").is_some(), "umoci") {
                let dir = work.join(what);
                let rootfs = umoci_unpack(&dir, "x", &work.join(format!("bundle-{what}")));
                assert_rootfs(
                    &rootfs,
                    false,
                    &format!("umoci unpack of our {what} export"),
                );
            }
        }
    }

    // The docker-archive holds what skopeo's own docker-archive of the image holds.
    let theirs = work.join("theirs.tar");
    ok(&skopeo_copy(
        &storage_ref(&cs, name),
        &format!("docker-archive:{}:{name}", theirs.display()),
    ));
    assert_eq!(members(&work.join("d.tar")), members(&theirs));
}

#[test]
fn cli_errors_are_one_line_and_leave_nothing() {
    let cs = Cs::new("vfs");
    let _g = Unmounter::new(&cs, false);
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(false));
    std::fs::remove_file(&img.layers[1].blob).expect("remove a blob");
    for (args, want) in [
        (
            vec!["import-image".to_string(), img.reference()],
            "is missing from the image layout",
        ),
        (
            vec![
                "import-image".into(),
                format!("oci:{}:nope", img.dir.display()),
            ],
            "no image named \"nope\"",
        ),
        (
            vec!["import-image".into(), "docker://x".into()],
            "unknown transport \"docker\"",
        ),
        (
            vec![
                "import-image".into(),
                "--platform".into(),
                "linux".into(),
                img.reference(),
            ],
            "invalid platform",
        ),
        (
            vec![
                "export-image".into(),
                "nosuchimage".into(),
                "oci:/tmp/x".into(),
            ],
            "image not known",
        ),
    ] {
        let out = cs.ours(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    for what in ["layers", "images"] {
        let list = json(&ok(&cs.ours(&[what, "--json"])));
        assert!(
            list.is_null() || list.as_array().is_some_and(|a| a.is_empty()),
            "{what} left: {list}"
        );
    }
}
