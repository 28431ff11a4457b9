//! Layer commands end to end, sharing one store with Go's binary (vfs driver).

mod common;
use common::*;

#[test]
fn create_layer_outputs_and_go_sees_it() {
    if !go_available() {
        return;
    }
    let s = store();
    let base = first_line(&s.go_ok(&["create-layer", "-n", "base"]));
    let out = s.ok(&["create-layer", "-n", "top", "-n", "top2", &base]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].len(), 64);
    assert_eq!(&lines[1..], &["\ttop", "\ttop2"]);
    let top = lines[0].to_string();
    // Go reads our record.
    let go_layer = s.go_ok(&["layer", "top"]);
    assert_eq!(
        go_layer,
        format!("ID: {top}\nParent: {base}\nName: top\nName: top2\n")
    );
    assert_eq!(s.ok(&["layer", "top"]), go_layer);
    // The JSON record is what Go prints for it.
    assert_eq!(
        s.ok(&["layer", "--json", &top]),
        s.go_ok(&["layer", "--json", &top])
    );
    let json = s.ok(&["create-layer", "--json", "-i", "layerC"]);
    assert!(
        json.starts_with("{\"id\":\"layerC\",\"created\":\""),
        "{json}"
    );
    // Listings agree.
    assert_eq!(s.ok(&["layers"]), s.go_ok(&["layers"]));
    assert_eq!(s.ok(&["layers", "--json"]), s.go_ok(&["layers", "--json"]));
    assert_eq!(s.ok(&["layers", "-q"]), format!("{base}\n{top}\nlayerC\n"));
}

#[test]
fn create_layer_errors() {
    let s = store();
    let o = s.ours(&["create-layer", "nosuch"]);
    assert_eq!((o.code, o.stderr.as_str()), (1, "layer not known\n"));
    let o = s.ours(&["create-layer", "--uidmap", "bogus"]);
    assert_eq!(
        o.stderr,
        "initializing ID mappings: uid setting is malformed expected [\"uint32:uint32:uint32\"]: [\"bogus\"]\n"
    );
    let o = s.ours(&["create-layer", "--hostuidmap", "--uidmap", "0:100000:65536"]);
    assert_eq!(o.stderr, "host uid map specified along with UID mapping\n");
    let o = s.ours(&["create-layer", "--subuidmap", "nosuchuser"]);
    // Go's idtools: a missing file is an error of its own.
    let want = if std::path::Path::new("/etc/subuid").exists() {
        "no subuid ranges found for user \"nosuchuser\" in /etc/subuid\n"
    } else {
        "open /etc/subuid: no such file or directory\n"
    };
    assert_eq!(o.stderr, want);
    s.ok(&["create-layer", "-n", "n1", "-i", "l1"]);
    let o = s.ours(&["create-layer", "-i", "l1"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (1, "that ID is already in use\n")
    );
    let o = s.ours(&["create-layer", "-n", "n1"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (1, "that name is already in use\n")
    );
    let out = s.ok(&[
        "create-layer",
        "--uidmap",
        "0:100000:65536",
        "--gidmap",
        "0:200000:65536",
        "-i",
        "mapped",
    ]);
    assert_eq!(out, "mapped\n");
    assert_eq!(
        s.ok(&["layer", "mapped"]),
        "ID: mapped\nUID mapping: (container=0, host=100000, size=65536)\nGID mapping: (container=0, host=200000, size=65536)\n"
    );
}

#[test]
fn layers_listing_with_images_containers_and_tree() {
    if !go_available() {
        return;
    }
    let s = store();
    s.go_ok(&["create-layer", "-i", "base", "-n", "basename"]);
    s.ok(&["create-layer", "-i", "top", "base"]);
    s.go_ok(&["create-image", "-i", "img", "-n", "myimage", "top"]);
    let ctr = s.go_ok(&["create-container", "-i", "ctr", "-n", "myctr", "img"]);
    assert!(ctr.starts_with("ctr"), "{ctr}");
    let ours = s.ok(&["layers"]);
    assert_eq!(ours, s.go_ok(&["layers"]));
    assert!(
        ours.starts_with("base\n\tname: basename\ntop\n\timage: img\n\t\tname: myimage\n"),
        "{ours}"
    );
    assert!(
        ours.contains("\tcontainer: ctr\n\t\tname: myctr\n"),
        "{ours}"
    );
    // Mount the container's layer: the tree shows the mount point.
    let mp = s.ok(&["mount", "ctr"]);
    let tree = s.ok(&["layers", "-t"]);
    assert_eq!(tree, s.go_ok(&["layers", "-t"]));
    let clayer = tree
        .lines()
        .find(|l| l.starts_with("    └─"))
        .map(|l| l.trim_start_matches("    └─").to_string())
        .unwrap();
    assert_eq!(
        tree,
        format!(
            "(base)\n└─base\n  name: basename\n  └─top\n    image: img\n    image name: myimage\n    └─{clayer}\n      mount: {}\n      container: ctr\n      container name: myctr\n",
            mp.trim_end()
        )
    );
    assert_eq!(s.ok(&["unmount", "ctr"]), "ctr mountpoint unmounted\n");
    // --json wins over -t and -q.
    assert_eq!(
        s.ok(&["layers", "-t", "-q", "--json"]),
        s.go_ok(&["layers", "--json"])
    );
}

#[test]
fn empty_listings() {
    let s = store();
    assert_eq!(s.ok(&["layers"]), "");
    assert_eq!(s.ok(&["layers", "--json"]), "null\n");
    assert_eq!(s.ok(&["storage-layers", "--json"]), "[]\n");
    let o = s.ours(&["layer", "nosuch"]);
    assert_eq!(
        o,
        Out {
            stdout: String::new(),
            stderr: String::new(),
            code: 1
        }
    );
    let o = s.ours(&["layer", "--json", "nosuch"]);
    assert_eq!((o.stdout.as_str(), o.code), ("[]\n", 1));
}

#[test]
fn import_diff_changes_diffsize_match_go() {
    if !go_available() {
        return;
    }
    let s = store();
    let a = s.tar("a.tar", &[("f1", "one"), ("f2", "two")]);
    let out = s.ok(&["import-layer", "-f", &a, "-n", "la"]);
    let la = first_line(&out);
    assert_eq!(out, format!("{la}\n\tla\n"));
    // Byte-exact diff of an applied layer.
    let diff = s.path("out.tar");
    s.ok(&["diff", "-f", &diff, "la"]);
    assert_eq!(std::fs::read(&diff).unwrap(), std::fs::read(&a).unwrap());
    // Go reproduces it too from our tar-split.
    let godiff = s.path("go.tar");
    s.go_ok(&["diff", "-f", &godiff, "la"]);
    assert_eq!(std::fs::read(&godiff).unwrap(), std::fs::read(&a).unwrap());
    assert_eq!(s.ok(&["diffsize", "la"]), "6\n");
    assert_eq!(s.ok(&["diffsize", "la"]), s.go_ok(&["diffsize", "la"]));
    // A child created by Go, filled by us through stdin.
    let lb = first_line(&s.go_ok(&["create-layer", "-n", "lb", "la"]));
    let b = s.tar("b.tar", &[("f3", "three")]);
    let o = s.exec(
        OURS,
        &["applydiff", "lb"],
        Some(&std::fs::read(&b).unwrap()),
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(s.ok(&["changes", "lb"]), "Add \"/f3\"\n");
    assert_eq!(s.ok(&["changes", "lb"]), s.go_ok(&["changes", "lb"]));
    assert_eq!(
        s.ok(&["changes", "--json", "lb"]),
        "[{\"Path\":\"/f3\",\"Kind\":1}]\n"
    );
    assert_eq!(
        s.ok(&["layer", "--json", &lb]),
        s.go_ok(&["layer", "--json", &lb])
    );
    // Gzip output decompresses to the same tar.
    let gz = s.path("b.tar.gz");
    s.ok(&["diff", "-c", "-f", &gz, "lb"]);
    let st = Command::new("gzip").args(["-t", &gz]).status().unwrap();
    assert!(st.success());
    let o = s.ours(&["diff", "-x", "lb"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (1, "unsupported compression format tar.xz\n")
    );
    let o = s.ours(&["applydiff", "-f", "/nonexistent/x.tar", "lb"]);
    assert_eq!(
        o.stderr,
        "open /nonexistent/x.tar: no such file or directory\n"
    );
    let o = s.ours(&["changes", "nosuch"]);
    assert_eq!((o.code, o.stderr.as_str()), (1, "layer not known\n"));
}

#[test]
fn mount_counts_are_shared_with_go() {
    if !go_available() {
        return;
    }
    let s = store();
    s.ok(&["create-layer", "-i", "lay1"]);
    let mp = format!("{}/vfs/dir/lay1\n", s.graph);
    assert_eq!(s.ok(&["mount", "lay1"]), mp);
    assert_eq!(s.go_ok(&["mount", "lay1"]), mp);
    assert_eq!(s.ok(&["mounted", "lay1"]), "lay1 mounted\n");
    let mounts = std::fs::read_to_string(format!("{}/vfs-layers/mountpoints.json", s.run)).unwrap();
    assert!(mounts.contains("\"count\":2"), "{mounts}");
    assert_eq!(s.go_ok(&["unmount", "lay1"]), "");
    assert_eq!(s.ok(&["unmount", "lay1"]), "lay1 mountpoint unmounted\n");
    assert_eq!(s.go_ok(&["mounted", "lay1"]), "");
    assert_eq!(s.ok(&["mounted", "lay1"]), "");
    let o = s.ours(&["mount", "nosuch"]);
    assert_eq!(
        o,
        Out {
            stdout: "\n".into(),
            stderr: "layer not known while mounting nosuch\n".into(),
            code: 1
        }
    );
    let o = s.ours(&["mount", "--json", "lay1"]);
    assert_eq!(
        o.stdout,
        format!(
            "[{{\"id\":\"lay1\",\"mountpoint\":\"{}/vfs/dir/lay1\",\"error\":\"\"}}]\n",
            s.graph
        )
    );
    // Shutdown refuses while mounted, -f unmounts (and still reports the mount).
    let o = s.ours(&["shutdown"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (
            1,
            "shutdown: a layer is mounted: layer is in use by a container\n"
        )
    );
    let o = s.ours(&["shutdown", "-f"]);
    assert_eq!(o.code, 1);
    assert_eq!(
        std::fs::read_to_string(format!("{}/vfs-layers/mountpoints.json", s.run)).unwrap(),
        "[]"
    );
    assert_eq!(s.ours(&["shutdown"]).code, 0);
    // --option is not a flag of mount.
    let o = s.ours(&["mount", "--option", "nosuid", "lay1"]);
    assert_eq!(o.code, 125);
}

#[test]
fn names_metadata_exists() {
    if !go_available() {
        return;
    }
    let s = store();
    s.go_ok(&["create-layer", "-i", "l1", "-n", "n1"]);
    s.ok(&["create-layer", "-i", "l2", "-n", "n2"]);
    // 1.60 prepends added names.
    assert_eq!(
        s.ok(&["add-names", "--json", "-n", "a", "-n", "b", "l1"]),
        "[\"a\",\"b\",\"n1\"]\n"
    );
    assert_eq!(s.ok(&["get-names", "l1"]), "a\nb\nn1\n");
    assert_eq!(s.go_ok(&["get-names", "l1"]), "a\nb\nn1\n");
    // Names move between layers.
    s.ok(&["set-names", "-n", "b", "-n", "z", "l2"]);
    assert_eq!(s.ok(&["get-names", "--json", "l1"]), "[\"a\",\"n1\"]\n");
    assert_eq!(s.go_ok(&["get-names", "l2"]), "b\nz\n");
    s.ok(&["remove-names", "-n", "a", "l1"]);
    assert_eq!(s.ok(&["get-names", "l1"]), "n1\n");
    let o = s.ours(&["get-names", "nosuch"]);
    assert_eq!((o.code, o.stderr.as_str()), (1, "layer not known\n"));
    // Images and containers created by Go are found too.
    s.go_ok(&["create-image", "-i", "img1", "-n", "imgname", "l1"]);
    s.ok(&["add-names", "-n", "extra", "img1"]);
    assert_eq!(s.go_ok(&["get-names", "img1"]), "extra\nimgname\n");

    s.ok(&["set-metadata", "-m", "hello\n", "l1"]);
    s.go_ok(&["set-metadata", "-m", "imgmeta", "img1"]);
    let o = s.ours(&["metadata", "l1", "img1", "nosuch"]);
    assert_eq!(
        o,
        Out {
            stdout: "l1: hello\nimg1: imgmeta\nnosuch: \n".into(),
            stderr: String::new(),
            code: 1
        }
    );
    assert_eq!(s.ok(&["metadata", "-q", "l1"]), "hello\n");
    assert_eq!(
        s.ok(&["metadata", "--json", "img1", "l1"]),
        "{\"img1\":\"imgmeta\",\"l1\":\"hello\"}\n"
    );
    let o = s.ours(&["set-metadata", "l1"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (1, "no new metadata provided\n")
    );
    let o = s.ours(&["set-metadata", "-m", "x", "nosuch"]);
    assert_eq!(o.stderr, "identifier is not a layer, image, or container\n");

    assert_eq!(s.ok(&["exists", "l1", "img1"]), "l1: true\nimg1: true\n");
    let o = s.ours(&["exists", "-l", "img1"]);
    assert_eq!((o.stdout.as_str(), o.code), ("img1: true\n", 1));
    let o = s.ours(&["exists", "-q", "nosuch"]);
    assert_eq!((o.stdout.as_str(), o.code), ("", 1));
    assert_eq!(
        s.ok(&["exists", "-i", "--json", "img1"]),
        "{\"img1\":true}\n"
    );
}

#[test]
fn layer_data_items() {
    if !go_available() {
        return;
    }
    let s = store();
    s.ok(&["create-layer", "-i", "lay1"]);
    let o = s.exec(
        OURS,
        &["set-layer-data", "lay1", "big-item-1"],
        Some(b"payload"),
    );
    assert_eq!(o.code, 0, "{o:?}");
    let file = s.path("item");
    std::fs::write(&file, b"datafile contents").unwrap();
    s.ok(&["set-layer-data", "-f", &file, "lay1", "datafile"]);
    assert!(Path::new(&format!("{}/vfs-layers/lay1/=YmlnLWl0ZW0tMQ==", s.graph)).exists());
    assert!(Path::new(&format!("{}/vfs-layers/lay1/datafile", s.graph)).exists());
    assert_eq!(s.ok(&["list-layer-data", "lay1"]), "big-item-1\ndatafile\n");
    assert_eq!(
        s.go_ok(&["list-layer-data", "lay1"]),
        "big-item-1\ndatafile\n"
    );
    assert_eq!(
        s.go_ok(&["get-layer-data", "lay1", "big-item-1"]),
        "payload"
    );
    assert_eq!(
        s.ok(&["get-layer-data", "lay1", "datafile"]),
        "datafile contents"
    );
    let o = s.ours(&["get-layer-data", "lay1", "nosuch"]);
    assert_eq!(
        o.stderr,
        "locating item named \"nosuch\" for layer with ID \"lay1\": file does not exist\n"
    );
    let o = s.ours(&["get-layer-data", "nosuch", "x"]);
    assert_eq!(o.stderr, "layer not known\n");
    let o = s.ours(&["set-layer-data", "-f", "/nonexistent", "lay1", "x"]);
    assert_eq!(o.stderr, "open /nonexistent: no such file or directory\n");
    assert_eq!(
        s.ok(&["list-layer-data", "--json", "lay1"]),
        "[\"big-item-1\",\"datafile\"]\n"
    );
}

#[test]
fn delete_layer_safety_checks_and_wipe() {
    if !go_available() {
        return;
    }
    let s = store();
    s.ok(&["create-layer", "-i", "a"]);
    s.ok(&["create-layer", "-i", "b", "a"]);
    s.go_ok(&["create-image", "-i", "img", "b"]);
    s.go_ok(&["create-layer", "-i", "c"]);
    s.go_ok(&["create-image", "-i", "img2", "c"]);
    s.go_ok(&["create-container", "-i", "ctr", "img2"]);
    let ctr_layer = s.go_ok(&["container", "--json", "ctr"]);
    let o = s.ours(&["delete-layer", "a"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (1, "a: used by layer b: layer has children\n")
    );
    let o = s.ours(&["delete-layer", "b"]);
    assert_eq!(
        o.stderr,
        "b: layer b used by image img: layer is in use by an image\n"
    );
    let o = s.ours(&["delete-layer", "--json", "nosuch"]);
    assert_eq!(
        (o.stdout.as_str(), o.code),
        ("{\"nosuch\":\"identifier is not a layer\"}\n", 1)
    );
    let needle = "\"layer\":\"";
    let i = ctr_layer.find(needle).unwrap() + needle.len();
    let cl = &ctr_layer[i..i + 64];
    let o = s.ours(&["delete-layer", cl]);
    assert_eq!(
        o.stderr,
        format!("{cl}: layer {cl} used by container ctr: layer is in use by a container\n")
    );
    s.ok(&["create-layer", "-i", "free"]);
    assert_eq!(s.ok(&["delete-layer", "free"]), "");
    assert!(!Path::new(&format!("{}/vfs/dir/free", s.graph)).exists());

    // Wipe removes Go's containers and images and every layer.
    s.ok(&["mount", "a"]);
    assert_eq!(s.ok(&["wipe"]), "");
    assert_eq!(s.go_ok(&["layers"]), "");
    let images = s.go_ok(&["images", "--json"]);
    assert!(matches!(images.trim(), "null" | "[]"), "{images}");
    let containers = s.go_ok(&["containers", "--json"]);
    assert!(matches!(containers.trim(), "null" | "[]"), "{containers}");
    assert_eq!(s.ok(&["storage-layers"]), "");
    assert_eq!(
        std::fs::read_dir(format!("{}/vfs/dir", s.graph))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn storage_layers_and_create_storage_layer() {
    let s = store();
    s.ok(&["create-layer", "-i", "rec"]);
    assert_eq!(s.ok(&["create-storage-layer", "-i", "leak"]), "leak\n");
    assert_eq!(
        s.ok(&["create-storage-layer", "--json", "-i", "leak2", "leak"]),
        "\"leak2\"\n"
    );
    let mut ids: Vec<String> = s
        .ok(&["storage-layers"])
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["leak", "leak2", "rec"]);
    assert_eq!(s.ok(&["layers", "-q"]), "rec\n");
    // Wipe also removes driver layers without records.
    s.ok(&["wipe"]);
    assert_eq!(s.ok(&["storage-layers"]), "");
}

#[test]
fn argument_count_errors_use_command_usage() {
    let s = store();
    let o = s.ours(&["layer"]);
    assert_eq!(o.code, 1);
    assert!(o.stdout.starts_with(
        "layer: more arguments required.\nUsage: containers-storage layer [options [...]] layerNameOrID [...]\n\nExamine a layer\n\nOptions:\n"
    ), "{o:?}");
    let o = s.ours(&["get-layer-data", "a", "b", "c"]);
    assert!(
        o.stdout
            .starts_with("get-layer-data: too many arguments ([a b c]).\n"),
        "{o:?}"
    );
    if go_available() {
        let g = s.go(&["layer"]);
        let ours = s.ours(&["layer"]);
        assert_eq!((ours.stdout, ours.code), (g.stdout, g.code));
    }
    // Aliases work.
    assert_eq!(s.ok(&["createlayer", "-i", "al"]), "al\n");
    assert_eq!(s.ok(&["getnames", "al"]), "");
}

#[test]
fn copy_into_and_between_layers() {
    use std::os::unix::fs::MetadataExt;
    let s = store();
    s.ok(&["create-layer", "-i", "l1"]);
    s.ok(&[
        "create-layer",
        "-i",
        "l2",
        "--uidmap",
        "0:100000:65536",
        "--gidmap",
        "0:200000:65536",
    ]);
    let src = s.tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("f"), "a").unwrap();
    std::fs::write(src.join("sub/g"), "b").unwrap();
    std::os::unix::fs::chown(src.join("f"), Some(5), Some(6)).unwrap();
    let src_s = src.to_string_lossy().into_owned();
    assert_eq!(s.ok(&["copy", &src_s, "l1:/dst"]), "");
    let l1 = Path::new(&s.graph).join("vfs/dir/l1");
    assert_eq!(std::fs::read_to_string(l1.join("dst/sub/g")).unwrap(), "b");
    let md = std::fs::metadata(l1.join("dst/f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (5, 6));
    // Layer to layer: owners go through the source's and the target's maps.
    s.ok(&["copy", "l1:/dst/f", "l2:/x/"]);
    let md = std::fs::metadata(Path::new(&s.graph).join("vfs/dir/l2/x/f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (100005, 200006));
    s.ok(&["copy", "-o", "7:8", "l1:/dst/f", "l2:/y"]);
    let md = std::fs::metadata(Path::new(&s.graph).join("vfs/dir/l2/y")).unwrap();
    assert_eq!((md.uid(), md.gid()), (100007, 200008));
    // Nothing stays mounted.
    assert_eq!(s.ok(&["mounted", "l1", "l2"]), "");
    let o = s.ours(&["copy", "nol:/a", "l1:/z"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (1, "error finding layer \"nol\": layer not known\n")
    );
    let o = s.ours(&["copy", "-o", "x", &src_s, "l1:/q"]);
    assert_eq!(
        o.stderr,
        "bad UID: strconv.ParseUint: parsing \"x\": invalid syntax\n"
    );
    let o = s.ours(&["copy", "/nonexistent", "l1:/z"]);
    assert_eq!(
        o.stderr,
        format!(
            "error copying \"/nonexistent\" to \"{}/z\": stat /nonexistent: no such file or directory\n",
            l1.display()
        )
    );
}

#[test]
fn diff_into_a_closed_pipe_dies_quietly_like_go() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let s = store();
    let big = "x".repeat(4 << 20);
    let tar = s.tar("big.tar", &[("big", big.as_str())]);
    s.ok(&["import-layer", "-i", "big", "-f", &tar]);
    let mut child = Command::new(OURS)
        .args([
            "--graph",
            &s.graph,
            "--run",
            &s.run,
            "--storage-driver",
            "vfs",
            "diff",
            "big",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 10];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(13), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
