//! Image and container commands end to end, sharing one store with Go's binary (vfs).

mod common;
use common::*;

#[test]
fn images_listing_and_data_match_go() {
    if !go_available() {
        return;
    }
    let s = store();
    s.go_ok(&["create-layer", "-i", "base"]);
    s.ok(&["create-layer", "-i", "top", "base"]);
    assert_eq!(
        s.ok(&[
            "create-image",
            "-i",
            "img",
            "-n",
            "myimage",
            "-n",
            "other",
            "top"
        ]),
        "img\n\tmyimage\n\tother\n"
    );
    let m = s.file("manifest.json", b"{\"schemaVersion\":2}");
    s.ok(&["set-image-data", "-f", &m, "img", "manifest"]);
    let o = s.exec(
        OURS,
        &["set-image-data", "img", "big-item-1"],
        Some(b"0123456789"),
    );
    assert_eq!(o.code, 0, "{o:?}");
    s.go_ok(&["create-image", "-i", "empty"]);
    // Listings, records and sizes agree with Go.
    for args in [
        &["images"][..],
        &["images", "-q"],
        &["images", "--json"],
        &["image", "img", "empty"],
        &["image", "--json", "img"],
        &["list-image-data", "img"],
        &["get-image-data", "img", "big-item-1"],
        &["get-image-data-size", "img", "manifest"],
        &["get-image-data-digest", "img", "manifest"],
    ] {
        assert_eq!(s.ok(args), s.go_ok(args), "{args:?}");
    }
    let listing = s.ok(&["images"]);
    assert!(
        listing.starts_with("img\n\tname: myimage\n\tname: other\n\tdigest: sha256:"),
        "{listing}"
    );
    assert!(
        listing.contains("\tdata: manifest\n\tdata: big-item-1\n"),
        "{listing}"
    );
    assert!(
        s.ok(&["image", "img"])
            .contains(&format!("Size: {}\n", 19 + 10))
    );
    let digest = s.ok(&["get-image-data-digest", "img", "manifest"]);
    let by = s.ok(&["images-by-digest", "-q", digest.trim()]);
    assert_eq!(by, "img\n");
    assert_eq!(
        s.ok(&[
            "images-by-digest",
            "--json",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000"
        ]),
        "[]\n"
    );
    let o = s.ours(&["images-by-digest", "bogus"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (1, "invalid checksum digest format\n")
    );
    let o = s.ours(&["get-image-data", "nosuchimage", "x"]);
    assert_eq!(
        o.stderr,
        "locating image with ID \"nosuchimage\": image not known\n"
    );
    let o = s.ours(&["get-image-data", "img", "nosuch"]);
    assert_eq!(
        o.stderr,
        "locating item named \"nosuch\" for image with ID \"img\" (consider removing the image to resolve the issue): file does not exist\n"
    );
    let o = s.ours(&["get-image-data-size", "img", "nosuch"]);
    assert_eq!(o.stderr, "size is not known\n");
    let o = s.ours(&["get-image-data-digest", "img", "nosuch"]);
    assert_eq!(o.stderr, "could not compute digest of item\n");
    let o = s.ours(&["image", "img", "nosuch"]);
    assert_eq!(o.code, 1);
    // Image dirs (1.60: the argument verbatim).
    assert_eq!(
        s.ok(&["get-image-dir", "img"]),
        format!("{}/vfs-images/img/userdata\n", s.graph)
    );
    assert_eq!(
        s.ok(&["get-image-run-dir", "img"]),
        format!("{}/vfs-images/img/userdata\n", s.run)
    );
    assert!(Path::new(&format!("{}/vfs-images/img/userdata", s.run)).is_dir());
}

#[test]
fn create_image_errors() {
    let s = store();
    s.ok(&["create-image", "-i", "i1", "-n", "dimg"]);
    let o = s.ours(&["create-image", "-i", "i1"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (1, "that ID is already in use\n")
    );
    let o = s.ours(&["create-image", "-n", "dimg"]);
    assert_eq!(
        o.stderr,
        "image name \"dimg\" is already associated with image \"i1\": that name is already in use\n"
    );
    let o = s.ours(&["create-image", "nosuchlayer"]);
    assert_eq!(o.stderr, "layer not known\n");
    let o = s.ours(&["create-image", "-d", "bogus"]);
    assert_eq!(
        o.stderr,
        "validating digests for new image: validating image digest \"bogus\": invalid checksum digest format\n"
    );
    let json = s.ok(&["create-image", "--json", "-i", "i2", "-m", "meta"]);
    assert!(
        json.starts_with("{\"id\":\"i2\",\"metadata\":\"meta\","),
        "{json}"
    );
}

#[test]
fn containers_and_deletion_match_go() {
    if !go_available() {
        return;
    }
    let s = store();
    s.ok(&["create-layer", "-i", "base"]);
    s.ok(&["create-layer", "-i", "top", "base"]);
    s.go_ok(&["create-image", "-i", "img", "-n", "myimage", "top"]);
    assert_eq!(
        s.ok(&["create-container", "-i", "ctr", "-n", "myctr", "img"]),
        "ctr\n\tmyctr\n"
    );
    let o = s.ours(&["create-container", "-n", "myctr", "img"]);
    assert_eq!(
        o.stderr,
        "the container name \"myctr\" is already in use by ctr. You have to remove that container to be able to reuse that name: that name is already in use\n"
    );
    let o = s.ours(&["create-container", "nosuch"]);
    assert_eq!(
        o.stderr,
        "locating image with ID \"nosuch\": image not known\n"
    );
    assert_eq!(
        s.layers_count(),
        3,
        "the failed creations left no layer behind"
    );
    s.exec(OURS, &["set-container-data", "ctr", "k1"], Some(b"abc"));
    for args in [
        &["containers"][..],
        &["containers", "--json"],
        &["container", "ctr"],
        &["container", "--json", "ctr"],
        &["list-container-data", "ctr"],
        &["get-container-data", "ctr", "k1"],
        &["get-container-data-size", "ctr", "k1"],
        &["get-container-data-digest", "ctr", "k1"],
        &["layers"],
    ] {
        assert_eq!(s.ok(args), s.go_ok(args), "{args:?}");
    }
    assert_eq!(
        s.ok(&["get-container-dir", "myctr"]),
        format!("{}/vfs-containers/ctr/userdata\n", s.graph)
    );
    assert_eq!(
        s.ok(&["get-container-run-dir", "ctr"]),
        format!("{}/vfs-containers/ctr/userdata\n", s.run)
    );
    let o = s.ours(&["get-container-dir", "nosuch"]);
    assert_eq!(o.stderr, "container not known\n");
    assert_eq!(
        s.ok(&["container-parent-owners", "ctr"]),
        "ID: ctr\nUIDs: []\nGIDs: []\n"
    );

    // The image is in use.
    let o = s.ours(&["delete-image", "img"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (
            1,
            "img: image used by ctr: image is in use by a container\n"
        )
    );
    let o = s.ours(&["delete-container", "--json", "ctr", "nosuch"]);
    assert_eq!(
        o.stdout,
        "{\"ctr\":\"\",\"nosuch\":\"identifier is not a container\"}\n"
    );
    assert!(!Path::new(&format!("{}/vfs-containers/ctr", s.graph)).exists());
    assert_eq!(s.go_ok(&["containers", "--json"]).trim(), "[]");
    // -t only reports.
    let o = s.ours(&["delete-image", "-t", "img"]);
    assert_eq!((o.code, o.stderr.as_str()), (0, "img: top\nimg: base\n"));
    assert_eq!(s.layers_count(), 2);
    let o = s.ours(&["delete-image", "--json", "img"]);
    assert_eq!(
        o.stdout,
        "{\"img\":{\"deleted-layers\":[\"top\",\"base\"]}}\n"
    );
    assert_eq!(s.go_ok(&["layers"]), "");
    let o = s.ours(&["delete-image", "img"]);
    assert_eq!(o.stderr, "img: identifier is not an image\n");
}

#[test]
fn delete_without_checks() {
    let s = store();
    s.ok(&["create-layer", "-i", "a"]);
    s.ok(&["create-layer", "-i", "b", "a"]);
    s.ok(&["create-image", "-i", "img", "b"]);
    // A parent layer goes away although a child uses it.
    assert_eq!(s.ok(&["delete", "a"]), "");
    assert_eq!(s.ok(&["layers", "-t"]), "a\n└─b\n  image: img\n");
    // An image record goes, its layers stay.
    assert_eq!(s.ok(&["delete", "img"]), "");
    assert_eq!(s.ok(&["layers", "-q"]), "b\n");
    let o = s.ours(&["delete", "nosuch"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (1, "nosuch: layer not known\n")
    );
}

impl Store {
    fn layers_count(&self) -> usize {
        self.ok(&["layers", "-q"]).lines().count()
    }
}

#[test]
fn read_only_image_stores_and_pull_up() {
    if !go_available() {
        return;
    }
    let ais = store();
    ais.ok(&["create-layer", "-i", "rol", "-n", "rolname"]);
    ais.ok(&["create-image", "-i", "roimg", "-n", "roname", "rol"]);
    assert_eq!(
        ais.exec(OURS, &["set-image-data", "roimg", "item"], Some(b"x\n"))
            .code,
        0
    );
    let s = store();
    let opt = format!("vfs.imagestore={}", ais.graph);
    let with = |args: &[&str]| -> Vec<String> {
        let mut v = vec!["--storage-opt".to_string(), opt.clone()];
        v.extend(args.iter().map(|a| a.to_string()));
        v
    };
    let run = |bin: &str, args: &[&str]| -> Out {
        let v = with(args);
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        s.exec(bin, &refs, None)
    };
    for args in [
        &["images"][..],
        &["image", "roimg"],
        &["layer", "rol"],
        &["layers"],
        &["layers", "-t"],
    ] {
        let ours = run(OURS, args);
        assert_eq!(ours, run(GO, args), "{args:?}");
        assert_eq!(ours.code, 0, "{args:?}");
    }
    assert!(
        run(OURS, &["image", "roimg"])
            .stdout
            .ends_with("Read Only: true\n")
    );
    assert_eq!(
        run(OURS, &["layer", "rol"]).stdout,
        "ID: rol\nName: rolname\nRead Only: true\n"
    );
    // Renaming pulls the image up into the read-write store.
    assert_eq!(run(OURS, &["add-names", "-n", "newname", "roimg"]).code, 0);
    assert!(Path::new(&format!("{}/vfs-images/roimg/item", s.graph)).exists());
    let image = run(OURS, &["image", "roimg"]).stdout;
    assert_eq!(
        image,
        "ID: roimg\nName: newname\nName: roname\nTop Layer: rol\nData: item\nSize: 2\n"
    );
    assert_eq!(run(GO, &["image", "roimg"]).stdout, image);
    // The read-only store is untouched.
    assert_eq!(ais.ok(&["get-names", "roimg"]), "roname\n");
    // Read-only layers cannot be mounted or deleted.
    assert_eq!(run(OURS, &["mount", "rol"]).code, 1);
    assert_eq!(
        run(OURS, &["delete-layer", "rol"]).stderr,
        "rol: identifier is not a layer\n"
    );
}

/// Replaces 64-hex IDs by `ID`.
fn mask_ids(s: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in s.chars() {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            run.push(c);
            continue;
        }
        out.push_str(if run.len() == 64 { "ID" } else { &run });
        run.clear();
        out.push(c);
    }
    out.push_str(if run.len() == 64 { "ID" } else { &run });
    out
}

#[test]
fn mapped_containers_get_a_mapped_copy_of_the_top_layer_like_go() {
    use std::os::unix::fs::MetadataExt;
    if !go_available() {
        return;
    }
    let mut trees = Vec::new();
    for bin in [OURS, GO] {
        let s = store();
        let src = s.tmp.path().join("src/etc");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("hello.txt"), "hi").unwrap();
        let tar = s.tmp.path().join("a.tar").to_string_lossy().into_owned();
        let st = Command::new("tar")
            .args([
                "-C",
                &s.tmp.path().join("src").to_string_lossy(),
                "-cf",
                &tar,
                "etc",
            ])
            .status()
            .unwrap();
        assert!(st.success());
        let run = |args: &[&str]| {
            let o = s.exec(bin, args, None);
            assert_eq!(o.code, 0, "{bin} {args:?}: {o:?}");
            o.stdout
        };
        run(&["import-layer", "-i", "base", "-f", &tar]);
        run(&["create-image", "-i", "img", "base"]);
        for c in ["c1", "c2"] {
            run(&[
                "create-container",
                "-i",
                c,
                "--uidmap",
                "0:101000:65536",
                "--gidmap",
                "0:101000:65536",
                "img",
            ]);
        }
        let mp = run(&["mount", "c1"]);
        let md = std::fs::metadata(Path::new(mp.trim()).join("etc/hello.txt")).unwrap();
        assert_eq!((md.uid(), md.gid()), (101000, 101000), "{bin}");
        run(&["unmount", "c1"]);
        let image = run(&["image", "--json", "img"]);
        assert_eq!(
            image.matches("\"mapped-layers\":[\"").count(),
            1,
            "{bin}: {image}"
        );
        trees.push(mask_ids(&run(&["layers", "-t"])));
    }
    assert_eq!(trees[0], trees[1]);
    assert_eq!(
        trees[0],
        "(base)\n├─base\n│ image: img\n└─ID\n  image: img\n  ├─ID\n  │ container: c1\n  └─ID\n    container: c2\n"
    );
}
