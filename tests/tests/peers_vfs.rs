//! Real-peer interop on vfs: an image written by skopeo and read by our CLI, an image written
//! by our CLI and read by podman, skopeo and Go's containers-storage, and both CLIs taking
//! turns on one store (plus the overlay variant of the podman-mutates test, and umoci
//! unpacking exports and the fixture).

use std::ffi::OsStr;
use std::path::Path;

use storage_tests::oci::{OciImage, assert_rootfs, busybox_available, sample_layers};
use storage_tests::peers::{
    Unmounter, diff_digests, first_line, import_image, layer_chain, ours_reads_pulled_image,
    podman, podman_reads_image, skopeo_copy, skopeo_exports_same_layers, storage_ref, umoci_unpack,
};
use storage_tests::{Cs, go_cs, ok, peer, require};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn skopeo_writes_ours_reads() {
    if !require(peer("skopeo").is_some(), "skopeo") {
        return;
    }
    let cs = Cs::new("vfs");
    let _g = Unmounter::new(&cs, false);
    let bb = busybox_available();
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(bb));
    let name = "localhost/pulled:v1";
    ok(&skopeo_copy(&img.reference(), &storage_ref(&cs, name)));
    ours_reads_pulled_image(&cs, &img, name, bb);
}

#[test]
fn ours_writes_podman_skopeo_go_read() {
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
    let name = "localhost/ours:v1";
    let run = |a: &[&OsStr]| cs.ours(a);
    let top = import_image(&run, &img, name);

    podman_reads_image(&cs, &img, name, bb);

    // Go makes a container of it and mounts it.
    let cid = first_line(&ok(&cs.go(&["create-container", "-n", "goctr", name])));
    let mp = first_line(&ok(&cs.go(&["mount", &cid])));
    assert_rootfs(Path::new(&mp), bb, "Go's mount of a container of our image");
    ok(&cs.go(&["unmount", &cid]));
    ok(&cs.go(&["delete-container", &cid]));

    // skopeo exports it with the same layers.
    let exported = skopeo_exports_same_layers(&cs, name, &img);
    // An independent OCI implementation unpacks the export to the same files.
    if peer("umoci").is_some() {
        let rootfs = umoci_unpack(&exported, "x", &cs.dir.path().join("bundle"));
        assert_rootfs(&rootfs, bb, "umoci unpack of skopeo's export of our image");
    } else {
        eprintln!("umoci missing: export not unpacked");
    }
    // The top layer is still ours, unchanged.
    let chain = layer_chain(&ok(&cs.ours(&["layers", "--json"])), &top);
    assert_eq!(diff_digests(&chain), img.diff_ids());
}

#[test]
fn rootfs_check_catches_a_naive_extraction() {
    // Unpacking the layers one over the other without whiteout handling must be reported.
    let dir = tempfile::tempdir().expect("tempdir");
    for tar in sample_layers(false) {
        let mut a = tar::Archive::new(&tar[..]);
        a.set_preserve_permissions(true);
        a.set_preserve_ownerships(storage_tests::is_root());
        a.unpack(dir.path()).expect("unpack");
    }
    let bad = storage_tests::oci::check_rootfs(dir.path(), false).join("\n");
    for want in [
        "gone/file: should have been deleted",
        "gone-dir: should have been deleted",
        "opq/old1: should have been deleted",
        "opq (opaque) holds",
        "whiteout left",
    ] {
        assert!(
            bad.contains(want),
            "check_rootfs missed {want:?}; it said:\n{bad}"
        );
    }
    assert!(
        !bad.contains("etc/motd"),
        "etc/motd is right in a naive extraction too:\n{bad}"
    );
}

fn names_of(cs: &Cs, go: bool, id: &str) -> Vec<String> {
    let args = ["get-names", "--json", id];
    let out = if go { cs.go(&args) } else { cs.ours(&args) };
    serde_json::from_str(&ok(&out)).unwrap_or_else(|e| panic!("get-names --json: {e}"))
}

fn metadata_of(cs: &Cs, go: bool, id: &str) -> String {
    let args = ["metadata", "-q", id];
    let out = if go { cs.go(&args) } else { cs.ours(&args) };
    ok(&out).trim_end().to_string()
}

fn listed(cs: &Cs, go: bool, what: &str) -> Vec<String> {
    let args = [what, "--json"];
    let out = if go { cs.go(&args) } else { cs.ours(&args) };
    let v = json(&ok(&out));
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// One tool (`first`) stores an image and a container; the other lists them, renames, sets
/// metadata and deletes the container; the first sees all of it, then deletes the image.
fn take_turns(first_is_go: bool) {
    let cs = Cs::new("vfs");
    let _g = Unmounter::new(&cs, false);
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(false));
    let (a, b) = (first_is_go, !first_is_go);
    let run = |args: &[&OsStr]| if a { cs.go(args) } else { cs.ours(args) };
    let top = import_image(&run, &img, "localhost/turns:v1");
    let id = img.image_id().to_string();
    let cid = first_line(&ok(&run(&[
        "create-container".as_ref(),
        "-n".as_ref(),
        "c1".as_ref(),
        id.as_ref(),
    ])));

    // Both tools read the same records.
    for (what, id) in [("image", &id), ("container", &cid)] {
        let o = json(&ok(&cs.ours(&[what, "--json", id.as_str()])));
        let g = json(&ok(&cs.go(&[what, "--json", id.as_str()])));
        assert_eq!(o, g, "`{what} --json` of ours and Go");
    }
    // The other tool sees everything.
    assert!(listed(&cs, b, "images").contains(&id));
    assert_eq!(listed(&cs, b, "containers"), vec![cid.clone()]);
    let chain = layer_chain(
        &ok(&if b {
            cs.go(&["layers", "--json"])
        } else {
            cs.ours(&["layers", "--json"])
        }),
        &top,
    );
    assert_eq!(diff_digests(&chain), img.diff_ids());
    let data = if b {
        cs.go(&["get-image-data", &id, "manifest"])
    } else {
        cs.ours(&["get-image-data", &id, "manifest"])
    };
    assert_eq!(ok(&data).as_bytes(), &img.manifest[..]);

    // … and mutates it.
    let other = |args: &[&str]| if b { cs.go(args) } else { cs.ours(args) };
    ok(&other(&["add-names", "-n", "extra", &id]));
    ok(&other(&["set-metadata", "-m", "image meta", &id]));
    ok(&other(&["set-metadata", "-m", "ctr meta", &cid]));
    ok(&other(&[
        "set-image-data",
        "-f",
        &img.config_path.to_string_lossy(),
        &id,
        "extra-item",
    ]));

    let mut names = names_of(&cs, a, &id);
    names.sort();
    assert_eq!(names, ["extra", "localhost/turns:v1"]);
    assert_eq!(metadata_of(&cs, a, &id), "image meta");
    assert_eq!(metadata_of(&cs, a, &cid), "ctr meta");
    let item = if a {
        cs.go(&["get-image-data", &id, "extra-item"])
    } else {
        cs.ours(&["get-image-data", &id, "extra-item"])
    };
    assert_eq!(ok(&item).as_bytes(), &img.config[..]);

    ok(&other(&["delete-container", &cid]));
    assert!(
        listed(&cs, a, "containers").is_empty(),
        "container still listed after the other tool deleted it"
    );

    // The first tool deletes the image and its layers; the other sees an empty store.
    let del = if a {
        cs.go(&["delete-image", &id])
    } else {
        cs.ours(&["delete-image", &id])
    };
    ok(&del);
    assert!(listed(&cs, b, "images").is_empty());
    assert!(listed(&cs, b, "layers").is_empty());
}

#[test]
fn ours_writes_go_mutates() {
    if !require(go_cs().is_some(), "Debian's Go containers-storage") {
        return;
    }
    take_turns(false);
}

#[test]
fn go_writes_ours_mutates() {
    if !require(go_cs().is_some(), "Debian's Go containers-storage") {
        return;
    }
    take_turns(true);
}

#[test]
fn podman_mutates_ours_sees() {
    if !require(peer("podman").is_some(), "podman") {
        return;
    }
    podman_mutates("vfs");
}

#[test]
fn podman_mutates_ours_sees_overlay() {
    if !require(peer("podman").is_some(), "podman")
        || !require(storage_tests::is_root(), "root (overlay mounts)")
    {
        return;
    }
    podman_mutates("overlay");
}

/// podman tags our image, creates a container of it (we mount it and write; podman's mount
/// sees the write), removes the container, untags and removes the image; we see each step.
fn podman_mutates(driver: &str) {
    let cs = Cs::new(driver);
    let _g = Unmounter::new(&cs, true);
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(false));
    let name = "localhost/shared:v1";
    let run = |a: &[&OsStr]| cs.ours(a);
    import_image(&run, &img, name);
    let id = img.image_id();

    // podman tags our image: we see the new name.
    ok(&podman(&cs, &["tag", name, "localhost/tagged:v2"]));
    let names = names_of(&cs, false, id);
    assert!(
        names.iter().any(|n| n == "localhost/tagged:v2"),
        "names {names:?}"
    );
    assert!(names.iter().any(|n| n == name), "names {names:?}");

    // podman creates a container (not run): we list it, mount it and see the image's files.
    let pc = first_line(&ok(&podman(
        &cs,
        &["create", "--name", "pc", name, "/bin/true"],
    )));
    assert_eq!(listed(&cs, false, "containers"), vec![pc.clone()]);
    let ctr = json(&ok(&cs.ours(&["container", "--json", "pc"])));
    assert_eq!(ctr[0]["id"], pc.as_str());
    assert_eq!(ctr[0]["image"], id);
    let mp = first_line(&ok(&cs.ours(&["mount", "pc"])));
    assert_rootfs(Path::new(&mp), false, "our mount of podman's container");
    std::fs::write(Path::new(&mp).join("etc/written-by-ours"), b"hi\n").expect("write");
    ok(&cs.ours(&["unmount", "pc"]));
    // podman mounts the same container and sees our write.
    let pmp = first_line(&ok(&podman(&cs, &["mount", "pc"])));
    assert_eq!(
        std::fs::read(Path::new(&pmp).join("etc/written-by-ours"))
            .ok()
            .as_deref(),
        Some(&b"hi\n"[..])
    );
    ok(&podman(&cs, &["unmount", "pc"]));

    // podman removes the container, untags and removes the image: we see an empty store.
    ok(&podman(&cs, &["rm", "pc"]));
    assert!(listed(&cs, false, "containers").is_empty());
    ok(&podman(&cs, &["untag", id, "localhost/tagged:v2"]));
    assert_eq!(names_of(&cs, false, id), [name]);
    ok(&podman(&cs, &["rmi", name]));
    assert!(listed(&cs, false, "images").is_empty());
    assert!(listed(&cs, false, "layers").is_empty());
}

#[test]
fn concurrent_writers_lose_nothing() {
    if !require(go_cs().is_some(), "Debian's Go containers-storage") {
        return;
    }
    let cs = Cs::new("vfs");
    let _g = Unmounter::new(&cs, false);
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(false));
    let run = |a: &[&OsStr]| cs.ours(a);
    import_image(&run, &img, "localhost/busy:v1");
    let id = img.image_id();
    const N: usize = 8;
    // Both tools create containers and add image data items at the same time.
    std::thread::scope(|s| {
        for go in [false, true] {
            let cs = &cs;
            let cfg = img.config_path.to_string_lossy().into_owned();
            s.spawn(move || {
                let who = if go { "go" } else { "ours" };
                for i in 0..N {
                    let ctr = format!("{who}-ctr-{i}");
                    let key = format!("{who}-item-{i}");
                    let a = ["create-container", "-n", &ctr, id];
                    let b = ["set-image-data", "-f", &cfg, id, &key];
                    for args in [&a[..], &b[..]] {
                        let out = if go { cs.go(args) } else { cs.ours(args) };
                        ok(&out);
                    }
                }
            });
        }
    });
    for reader in [false, true] {
        let ctrs = json(&ok(&if reader {
            cs.go(&["containers", "--json"])
        } else {
            cs.ours(&["containers", "--json"])
        }));
        let mut names: Vec<String> = ctrs
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["names"][0].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let mut want: Vec<String> = (0..N)
            .flat_map(|i| [format!("go-ctr-{i}"), format!("ours-ctr-{i}")])
            .collect();
        want.sort();
        assert_eq!(
            names,
            want,
            "containers seen by {}",
            if reader { "Go" } else { "ours" }
        );
        let keys = ok(&if reader {
            cs.go(&["list-image-data", id])
        } else {
            cs.ours(&["list-image-data", id])
        });
        for i in 0..N {
            for who in ["go", "ours"] {
                let k = format!("{who}-item-{i}");
                assert!(
                    keys.lines().any(|l| l == k),
                    "{k} missing from list-image-data:\n{keys}"
                );
            }
        }
        // Every container has its own layer on top of the image's.
        let layers = listed(&cs, reader, "layers");
        assert_eq!(layers.len(), img.layers.len() + 2 * N);
    }
}

#[test]
fn digest_filled_from_manifest_seen_by_all() {
    if !require(go_cs().is_some(), "Debian's Go containers-storage")
        || !require(peer("podman").is_some(), "podman")
    {
        return;
    }
    let cs = Cs::new("vfs");
    let _g = Unmounter::new(&cs, true);
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(false));
    let mut parent = String::new();
    for l in &img.layers {
        let mut args = vec![
            "import-layer".to_string(),
            "-f".into(),
            l.blob.to_string_lossy().into_owned(),
        ];
        if !parent.is_empty() {
            args.push(parent.clone());
        }
        parent = first_line(&ok(&cs.ours(&args)));
    }
    // No --digest: the first manifest item stored fills it in.
    let id = first_line(&ok(&cs.ours(&[
        "create-image",
        "-i",
        img.image_id(),
        "-n",
        "localhost/nodigest:v1",
        &parent,
    ])));
    let rec = json(&ok(&cs.ours(&["image", "--json", &id])));
    assert!(
        rec[0].get("digest").is_none_or(|d| d.is_null()),
        "digest before any manifest: {rec}"
    );
    let mkey = format!("manifest-{}", img.manifest_digest);
    let mpath = img.manifest_path.to_string_lossy().into_owned();
    let cpath = img.config_path.to_string_lossy().into_owned();
    ok(&cs.ours(&["set-image-data", "-f", &mpath, &id, &mkey]));
    ok(&cs.ours(&["set-image-data", "-f", &cpath, &id, &img.config_digest]));
    let rec = json(&ok(&cs.ours(&["image", "--json", &id])));
    assert_eq!(rec[0]["digest"], img.manifest_digest.as_str());
    assert_eq!(
        first_line(&ok(&cs.go(&[
            "images-by-digest",
            "-q",
            &img.manifest_digest
        ]))),
        id
    );
    let go_rec = json(&ok(&cs.go(&["image", "--json", &id])));
    assert_eq!(go_rec[0]["digest"], img.manifest_digest.as_str());
    // podman needs the plain `manifest` item too (containers/image always writes it).
    ok(&cs.ours(&["set-image-data", "-f", &mpath, &id, "manifest"]));
    let insp = json(&ok(&podman(&cs, &["image", "inspect", &id])));
    assert_eq!(insp[0]["Digest"], img.manifest_digest.as_str());
}

#[test]
fn podman_lists_our_containers_as_external() {
    if !require(peer("podman").is_some(), "podman") {
        return;
    }
    let cs = Cs::new("vfs");
    let _g = Unmounter::new(&cs, true);
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(false));
    let name = "localhost/ext:v1";
    let run = |a: &[&OsStr]| cs.ours(a);
    import_image(&run, &img, name);
    let cid = first_line(&ok(&cs.ours(&["create-container", "-n", "ours-ctr", name])));
    let ps = json(&ok(&podman(
        &cs,
        &["ps", "--all", "--external", "--format", "json"],
    )));
    let e = ps
        .as_array()
        .and_then(|a| a.iter().find(|c| c["Id"] == cid.as_str()))
        .unwrap_or_else(|| panic!("podman ps --external lacks {cid}: {ps}"));
    assert_eq!(e["Names"], serde_json::json!(["ours-ctr"]));
    assert_eq!(e["ImageID"], img.image_id());
    assert_eq!(e["State"], "storage");
    // podman parsed our `created` time.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let created = e["Created"].as_i64().unwrap_or(0);
    assert!(
        (now - created).abs() < 600,
        "podman's Created {created}, now {now}"
    );
    // podman refuses to remove the image while our container uses it…
    let rmi = podman(&cs, &["rmi", name]);
    assert!(
        !rmi.status.success(),
        "podman rmi removed an image our container uses"
    );
    // … and removes our container when asked to (`rm --force` works on external containers).
    ok(&podman(&cs, &["rm", "--force", &cid]));
    assert!(listed(&cs, false, "containers").is_empty());
}

#[test]
fn umoci_unpacks_the_fixture_as_expected() {
    // The hand-written OCI layout is read the same way by an independent implementation.
    if !require(peer("umoci").is_some(), "umoci")
        || !require(storage_tests::is_root(), "root (umoci restores owners)")
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = OciImage::write(
        &dir.path().join("oci"),
        "v1",
        sample_layers(busybox_available()),
    );
    let rootfs = umoci_unpack(&img.dir, "v1", &dir.path().join("bundle"));
    assert_rootfs(&rootfs, busybox_available(), "umoci unpack of the fixture");
}

#[test]
fn shared_base_layers_survive_our_delete_image() {
    if !require(peer("skopeo").is_some(), "skopeo") || !require(peer("podman").is_some(), "podman")
    {
        return;
    }
    let cs = Cs::new("vfs");
    let _g = Unmounter::new(&cs, true);
    // Two images sharing their two base layers (same diff_ids chain → same layer IDs).
    let layers = sample_layers(false);
    let extra = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(6);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, "v2-only", &b"v2 !!\n"[..])
            .expect("tar");
        b.into_inner().expect("tar")
    };
    let v1 = OciImage::write(&cs.dir.path().join("oci1"), "v1", layers.clone());
    let v2 = OciImage::write(
        &cs.dir.path().join("oci2"),
        "v2",
        vec![layers[0].clone(), layers[1].clone(), extra],
    );
    ok(&skopeo_copy(
        &v1.reference(),
        &storage_ref(&cs, "localhost/shared:v1"),
    ));
    ok(&skopeo_copy(
        &v2.reference(),
        &storage_ref(&cs, "localhost/shared:v2"),
    ));
    assert_eq!(
        listed(&cs, false, "layers").len(),
        4,
        "three layers of v1 plus v2's own top"
    );

    // We delete v2: only its own top layer goes.
    let images = json(&ok(&cs.ours(&["images", "--json"])));
    let top_of = |id: &str| {
        images
            .as_array()
            .and_then(|a| a.iter().find(|i| i["id"] == id))
            .and_then(|i| i["layer"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let v2_top = top_of(v2.image_id());
    let del = cs.ours(&["delete-image", "localhost/shared:v2"]);
    ok(&del);
    assert_eq!(
        String::from_utf8_lossy(&del.stderr).trim(),
        format!("localhost/shared:v2: {v2_top}"),
        "delete-image reports exactly v2's own layer"
    );
    assert_eq!(listed(&cs, false, "layers").len(), 3);

    // podman and Go still have a whole v1.
    let mp = first_line(&ok(&podman(
        &cs,
        &["image", "mount", "localhost/shared:v1"],
    )));
    assert_rootfs(
        Path::new(&mp),
        false,
        "podman image mount of v1 after our delete of v2",
    );
    ok(&podman(&cs, &["image", "unmount", "localhost/shared:v1"]));
    if go_cs().is_some() {
        let chain = layer_chain(&ok(&cs.go(&["layers", "--json"])), &top_of(v1.image_id()));
        assert_eq!(diff_digests(&chain), v1.diff_ids());
    }
    // podman removes v1: the store is empty for us.
    ok(&podman(&cs, &["rmi", "localhost/shared:v1"]));
    assert!(listed(&cs, false, "images").is_empty());
    assert!(listed(&cs, false, "layers").is_empty());
}
