//! ID-mapped containers of a skopeo-written image, made by our CLI and Go's in turn on one
//! store: mapped top layers (vfs), owners seen through both tools' mounts (vfs, overlay).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use storage_tests::oci::{OciImage, sample_layers};
use storage_tests::peers::{Unmounter, first_line, skopeo_copy, storage_ref};
use storage_tests::{Cs, go_cs, is_root, ok, peer, require};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Owners (uid, gid) of a few files of the sample image under `root`, shifted by `base`.
fn check_owners(root: &Path, base: u32, what: &str) {
    for (rel, cuid) in [
        ("etc/motd", 0),
        ("etc/secret", 1000),
        ("home/user", 1000),
        ("added/x", 1000),
    ] {
        let md = std::fs::symlink_metadata(root.join(rel))
            .unwrap_or_else(|e| panic!("{what}: {rel}: {e}"));
        assert_eq!(
            (md.uid(), md.gid()),
            (base + cuid, base + cuid),
            "{what}: owner of {rel}"
        );
    }
    let motd = std::fs::read(root.join("etc/motd")).unwrap_or_default();
    assert_eq!(motd, b"layer2 motd\n", "{what}: content of etc/motd");
    assert!(
        !root.join("gone/file").exists(),
        "{what}: gone/file is back"
    );
}

fn mapped_layers(cs: &Cs, go: bool, id: &str) -> Vec<String> {
    let args = ["image", "--json", id];
    let v = json(&ok(&if go { cs.go(&args) } else { cs.ours(&args) }));
    v[0]["mapped-layers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn idmapped(driver: &str) {
    let cs = Cs::new(driver);
    let _g = Unmounter::new(&cs, false);
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(false));
    let name = "localhost/mapped:v1";
    ok(&skopeo_copy(&img.reference(), &storage_ref(&cs, name)));
    let id = img.image_id();
    let maps = |b: u32| {
        let m = format!("0:{b}:65536");
        vec!["--uidmap".to_string(), m.clone(), "--gidmap".to_string(), m]
    };
    let create = |go: bool, ctr: &str, base: u32| {
        let mut args = vec!["create-container".to_string(), "-n".into(), ctr.into()];
        args.extend(maps(base));
        args.push(name.into());
        first_line(&ok(&if go { cs.go(&args) } else { cs.ours(&args) }))
    };

    // Ours creates a mapped container; Go mounts it and sees shifted owners.
    let c1 = create(false, "ours-mapped", 100_000);
    let rec = json(&ok(&cs.go(&["container", "--json", &c1])));
    assert_eq!(
        rec[0]["uidmap"],
        serde_json::json!([{"container_id":0,"host_id":100000,"size":65536}])
    );
    let mp = first_line(&ok(&cs.go(&["mount", &c1])));
    check_owners(
        Path::new(&mp),
        100_000,
        "Go's mount of our mapped container",
    );
    ok(&cs.go(&["unmount", &c1]));
    let mp = first_line(&ok(&cs.ours(&["mount", &c1])));
    check_owners(Path::new(&mp), 100_000, "our mount of our mapped container");
    ok(&cs.ours(&["unmount", &c1]));

    let after_ours = mapped_layers(&cs, false, id);
    assert_eq!(
        mapped_layers(&cs, true, id),
        after_ours,
        "Go reads the same mapped-layers"
    );
    if driver == "vfs" {
        assert_eq!(
            after_ours.len(),
            1,
            "vfs cannot shift: one mapped copy of the top layer"
        );
    }
    let layers_before = json(&ok(&cs.go(&["layers", "--json"])))
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);

    // Go creates one with the same maps: it reuses the mapped top layer we made.
    let c2 = create(true, "go-same", 100_000);
    let layers_after = json(&ok(&cs.ours(&["layers", "--json"])))
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(
        layers_after,
        layers_before + 1,
        "Go made only its container layer"
    );
    assert_eq!(mapped_layers(&cs, false, id), after_ours);
    let mp = first_line(&ok(&cs.ours(&["mount", &c2])));
    check_owners(
        Path::new(&mp),
        100_000,
        "our mount of Go's mapped container",
    );
    ok(&cs.ours(&["unmount", &c2]));

    // Go creates one with other maps; ours mounts it, then ours reuses Go's mapped layer.
    let c3 = create(true, "go-other", 200_000);
    let mp = first_line(&ok(&cs.ours(&["mount", &c3])));
    check_owners(
        Path::new(&mp),
        200_000,
        "our mount of Go's other mapped container",
    );
    ok(&cs.ours(&["unmount", &c3]));
    let with_go = mapped_layers(&cs, false, id);
    let before = json(&ok(&cs.ours(&["layers", "--json"])))
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let c4 = create(false, "ours-other", 200_000);
    let after = json(&ok(&cs.go(&["layers", "--json"])))
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(after, before + 1, "we made only our container layer");
    assert_eq!(mapped_layers(&cs, true, id), with_go);
    let mp = first_line(&ok(&cs.go(&["mount", &c4])));
    check_owners(
        Path::new(&mp),
        200_000,
        "Go's mount of our other mapped container",
    );
    ok(&cs.go(&["unmount", &c4]));

    // Deleting the image after its containers removes the mapped layers too (either tool).
    for c in [&c1, &c2, &c3, &c4] {
        ok(&cs.ours(&["delete-container", c]));
    }
    ok(&cs.go(&["delete-image", id]));
    let left = json(&ok(&cs.ours(&["layers", "--json"])));
    assert!(
        left.as_array().is_none_or(Vec::is_empty),
        "layers left: {left}"
    );
}

#[test]
fn idmapped_containers_vfs() {
    if !require(peer("skopeo").is_some(), "skopeo")
        || !require(go_cs().is_some(), "Debian's Go containers-storage")
        || !require(is_root(), "root (chown to mapped IDs)")
    {
        return;
    }
    idmapped("vfs");
}

#[test]
fn idmapped_containers_overlay() {
    if !require(peer("skopeo").is_some(), "skopeo")
        || !require(go_cs().is_some(), "Debian's Go containers-storage")
        || !require(is_root(), "root (overlay mounts)")
    {
        return;
    }
    idmapped("overlay");
}
