//! Image and container records on every driver (vfs, overlay, btrfs): one CLI scenario from
//! layers to `wipe`, and after every step Debian's Go `containers-storage` (1.43), run on the
//! same store with the same driver, must list exactly the same layers, images and containers.
//! One test function per driver: `scenario::vfs`, `scenario::overlay`, `scenario::btrfs`, and
//! `scenario::fuse_overlayfs` (overlay through `overlay.mount_program`, for both tools).

use std::path::{Path, PathBuf};
use storage_testsupport::per_driver;

use storage_tests::fs::DriverStore;
use storage_tests::peers::{first_line, mounts_under};
use storage_tests::tars::{TarBuilder, sha256};
use storage_tests::{Cs, go_cs, ok, require};

per_driver!(scenario: vfs, overlay, btrfs, fuse_overlayfs);
per_driver!(go_writes_ours_reads: vfs, overlay, btrfs, fuse_overlayfs);
per_driver!(mapped_containers_like_go: vfs, overlay, btrfs, fuse_overlayfs);

mod read_only_image_store_containers {
    #[test]
    fn vfs() {
        super::read_only_image_store_containers("vfs")
    }
    #[test]
    fn overlay() {
        super::read_only_image_store_containers("overlay")
    }
    #[test]
    fn fuse_overlayfs() {
        super::read_only_image_store_containers("fuse-overlayfs")
    }
}

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// Asserts that Go and we list the same records (byte for byte, in JSON).
#[track_caller]
fn same_records(cs: &Cs, step: &str) {
    for what in ["layers", "images", "containers"] {
        let ours = ok(&cs.ours(&[what, "--json"]));
        let go = ok(&cs.go(&[what, "--json"]));
        // An empty list is `null` in 1.60 (our target) and `[]` for 1.43's `layers`.
        let parse = |s: &str, who: &str| -> serde_json::Value {
            match serde_json::from_str(s) {
                Ok(serde_json::Value::Null) => serde_json::Value::Array(Vec::new()),
                Ok(v) => v,
                Err(e) => panic!("{step}: {who} {what} --json is not JSON ({e}): {s}"),
            }
        };
        assert_eq!(
            parse(&ours, "our"),
            parse(&go, "Go's"),
            "{} after {step}: {what} listed differently by Go",
            cs.driver
        );
    }
}

/// Runs a read-only command with both tools; the outputs must be equal. Returns ours.
#[track_caller]
fn both(cs: &Cs, args: &[&str]) -> String {
    let ours = ok(&cs.ours(args));
    let go = ok(&cs.go(args));
    assert_eq!(
        ours,
        go,
        "{}: `{}` differs from Go",
        cs.driver,
        args.join(" ")
    );
    ours
}

/// `changes LAYER REFERENCE` by both tools, as sorted lines.
#[track_caller]
fn changes_between(cs: &Cs, layer: &str, reference: &str) -> Vec<String> {
    let sorted = |s: String| {
        let mut v: Vec<String> = s.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    let ours = sorted(ok(&cs.ours(&["changes", layer, reference])));
    let go = sorted(ok(&cs.go(&["changes", layer, reference])));
    assert_eq!(
        ours, go,
        "{}: changes of {layer} against {reference} differ from Go's",
        cs.driver
    );
    ours
}

/// `changes LAYER` by both tools, as sorted lines (Go's naive walk order is random).
#[track_caller]
fn changes(cs: &Cs, layer: &str) -> Vec<String> {
    let sorted = |s: String| {
        let mut v: Vec<String> = s.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    let ours = sorted(ok(&cs.ours(&["changes", layer])));
    let go = sorted(ok(&cs.go(&["changes", layer])));
    assert_eq!(
        ours, go,
        "{}: changes of {layer} differ from Go's",
        cs.driver
    );
    ours
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write input file");
    p
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Base layer: files, a dir that the child makes opaque, a file the child deletes.
fn base_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/hello.txt", 0o644, b"hello\n")
        .file("etc/gone.txt", 0o644, b"to be deleted\n")
        .dir("opq/", 0o755)
        .file("opq/old1", 0o644, b"old 1\n")
        .file("opq/old2", 0o644, b"old 2\n")
        .dir("keep/", 0o755)
        .file("keep/k", 0o644, b"kept\n")
        .finish()
}

/// Child layer: a whiteout, an opaque directory with a new file, a changed file.
fn child_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/.wh.gone.txt", 0o644, b"")
        .file("etc/hello.txt", 0o644, b"hello again\n")
        .dir("opq/", 0o755)
        .file("opq/.wh..wh..opq", 0o644, b"")
        .file("opq/new", 0o644, b"new\n")
        .finish()
}

fn names(list: &str) -> Vec<String> {
    let mut v: Vec<String> = list.lines().map(|l| l.trim().to_string()).collect();
    v.sort();
    v
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The per-layer directories of the store's driver (`vfs/dir/*`, `overlay/*` but `l`,
/// `btrfs/subvolumes/*`).
fn layer_dirs(cs: &Cs) -> Vec<String> {
    let home = cs.graph.join(&cs.driver);
    let dir = match cs.driver.as_str() {
        "vfs" => home.join("dir"),
        "btrfs" => home.join("subvolumes"),
        _ => home,
    };
    entries(&dir)
}

fn tar_names(data: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(data);
    let mut v: Vec<String> = a
        .entries()
        .expect("diff is a tar")
        .map(|e| {
            e.expect("tar entry")
                .path()
                .expect("entry path")
                .display()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// Name, type, permissions, owner, size, mtime (0 for whiteouts, which get the time of the
/// export) and content of each entry of a tar.
type Header = (String, u8, u32, u64, u64, u64, u64, Vec<u8>);

fn tar_headers(data: &[u8]) -> Vec<Header> {
    use std::io::Read;
    let mut a = tar::Archive::new(data);
    let mut v = Vec::new();
    for e in a.entries().expect("diff is a tar") {
        let mut e = e.expect("tar entry");
        let name = e.path().expect("entry path").display().to_string();
        let h = e.header().clone();
        let mut body = Vec::new();
        e.read_to_end(&mut body).expect("entry data");
        let wh = name
            .rsplit('/')
            .next()
            .is_some_and(|b| b.starts_with(".wh."));
        v.push((
            name,
            h.entry_type().as_byte(),
            h.mode().expect("mode") & 0o7777,
            h.uid().expect("uid"),
            h.gid().expect("gid"),
            h.size().expect("size"),
            if wh { 0 } else { h.mtime().expect("mtime") },
            body,
        ));
    }
    v.sort();
    v
}

fn scenario(driver: &str) {
    if !require(
        go_cs().is_some(),
        "Debian's Go containers-storage (/usr/bin/containers-storage)",
    ) {
        return;
    }
    let Some(cs) = DriverStore::new(driver) else {
        return;
    };
    let tmp = cs.dir.path();

    // Layers: base by us, child by us.
    let base = write(tmp, "base.tar", &base_tar());
    let child = write(tmp, "child.tar", &child_tar());
    let l1 = first_line(&ok(&cs.ours(&["import-layer", "-f", &s(&base)])));
    let l2 = first_line(&ok(&cs.ours(&["import-layer", "-f", &s(&child), &l1])));
    same_records(&cs, "import-layer");

    // create-image with names, digest and metadata.
    let img = first_line(&ok(&cs.ours(&[
        "create-image",
        "-n",
        "localhost/matrix:one",
        "-n",
        "localhost/matrix:two",
        "--digest",
        DIGEST,
        "-m",
        "{\"image\":\"meta\"}",
        &l2,
    ])));
    same_records(&cs, "create-image");
    let shown: serde_json::Value =
        serde_json::from_str(&both(&cs, &["image", "--json", &img])).expect("image --json is JSON");
    assert_eq!(shown[0]["layer"], l2.as_str());
    assert_eq!(shown[0]["digest"], DIGEST);
    assert_eq!(shown[0]["metadata"], "{\"image\":\"meta\"}");
    both(&cs, &["images"]);
    both(&cs, &["image", "localhost/matrix:two"]);
    let by_digest = both(&cs, &["images-by-digest", "-q", DIGEST]);
    assert_eq!(by_digest.trim(), img, "images-by-digest");

    // Image data: set by us, read by both.
    let manifest = br#"{"schemaVersion":2,"layers":[]}"#;
    let mf = write(tmp, "manifest", manifest);
    ok(&cs.ours(&["set-image-data", "-f", &s(&mf), &img, "manifest"]));
    let cfg = write(tmp, "config", b"{\"config\":{}}\n");
    ok(&cs.ours(&["set-image-data", "-f", &s(&cfg), &img, "config-blob"]));
    same_records(&cs, "set-image-data");
    assert_eq!(
        names(&both(&cs, &["list-image-data", &img])),
        ["config-blob", "manifest"]
    );
    let out = tmp.join("got");
    for bin in ["ours", "go"] {
        let args = ["get-image-data", "-f", &s(&out), &img, "manifest"];
        ok(&if bin == "ours" {
            cs.ours(&args)
        } else {
            cs.go(&args)
        });
        assert_eq!(std::fs::read(&out).expect("data file"), manifest, "{bin}");
    }
    assert_eq!(
        both(&cs, &["get-image-data-size", &img, "manifest"]).trim(),
        manifest.len().to_string()
    );
    assert_eq!(
        both(&cs, &["get-image-data-digest", &img, "manifest"]).trim(),
        sha256(manifest)
    );

    // A container from the image.
    let ctr = first_line(&ok(&cs.ours(&[
        "create-container",
        "-n",
        "matrix-ctr",
        "-m",
        "ctr meta",
        &img,
    ])));
    same_records(&cs, "create-container");
    let c: serde_json::Value = serde_json::from_str(&both(&cs, &["container", "--json", &ctr]))
        .expect("container --json is JSON");
    let cl = c[0]["layer"].as_str().expect("container layer").to_string();
    assert_eq!(c[0]["image"], img.as_str());
    assert_eq!(c[0]["metadata"], "ctr meta");
    both(&cs, &["containers"]);

    // Mount: the image's files with the whiteout and the opaque dir applied; write a file.
    let mnt = PathBuf::from(ok(&cs.ours(&["mount", &ctr])).trim());
    same_records(&cs, "mount");
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/hello.txt")).expect("etc/hello.txt"),
        "hello again\n"
    );
    assert_eq!(entries(&mnt.join("etc")), ["hello.txt"], "whiteout applied");
    assert_eq!(entries(&mnt.join("opq")), ["new"], "opaque dir applied");
    assert_eq!(
        std::fs::read_to_string(mnt.join("keep/k")).expect("keep/k"),
        "kept\n"
    );
    std::fs::write(mnt.join("etc/written"), b"by the container\n").expect("write in container");
    std::fs::remove_file(mnt.join("keep/k")).expect("delete in container");
    // A directory replaced in the container (overlay makes it opaque).
    std::fs::remove_dir_all(mnt.join("opq")).expect("rm -r opq in container");
    std::fs::create_dir(mnt.join("opq")).expect("mkdir opq in container");
    std::fs::write(mnt.join("opq/fresh"), b"fresh\n").expect("write opq/fresh");
    ok(&cs.ours(&["unmount", &ctr]));
    assert!(
        mounts_under(&mnt).is_empty(),
        "{driver}: {} still mounted",
        mnt.display()
    );
    same_records(&cs, "unmount");

    // changes and diff of the container layer show the write and the deletion.
    let mut changes = changes(&cs, &cl);
    assert!(
        changes.contains(&"Add \"/opq/fresh\"".to_string()),
        "{driver}: {changes:?}"
    );
    changes.retain(|c| !c.contains("/opq"));
    assert_eq!(
        changes,
        [
            "Add \"/etc/written\"",
            "Delete \"/keep/k\"",
            "Modify \"/etc\"",
            "Modify \"/keep\"",
        ],
        "{driver}: changes of the container layer"
    );
    let ours = cs.ours(&["diff", "-u", &cl]);
    ok(&ours);
    let go = cs.go(&["diff", "-u", &cl]);
    ok(&go);
    let got = tar_names(&ours.stdout);
    // Not byte-exact: 1.43 ORs the file-type bits into the mode and fills uname/gname,
    // 1.60 does neither. Everything else must agree.
    assert_eq!(
        tar_headers(&ours.stdout),
        tar_headers(&go.stdout),
        "{driver}: diff entries vs Go's"
    );
    assert!(got.iter().any(|n| n.ends_with("etc/written")), "{got:?}");
    assert!(got.iter().any(|n| n.ends_with("keep/.wh.k")), "{got:?}");
    assert!(got.iter().any(|n| n.ends_with("opq/fresh")), "{got:?}");
    if driver == "overlay" {
        assert!(
            got.iter().any(|n| n.ends_with("opq/.wh..wh..opq")),
            "overlay: opaque dir exported as AUFS opaque marker: {got:?}"
        );
    } else if driver == "fuse-overlayfs" {
        // fuse-overlayfs does not make the replaced directory opaque: it whites out the
        // lower's entries one by one (Go exports the same, compared above).
        assert!(
            got.iter().any(|n| n.ends_with("opq/.wh.new")),
            "{driver}: lower entry of the replaced dir whited out: {got:?}"
        );
    }

    both(&cs, &["diffsize", &cl]);
    // Against another layer (the image's base), the driver's generic diff.
    let mut vs_base = changes_between(&cs, &cl, &l1);
    vs_base.retain(|c| c.contains("/etc") || c.contains("/opq"));
    for want in [
        "Add \"/opq/fresh\"",
        "Delete \"/opq/old1\"",
        "Delete \"/etc/gone.txt\"",
    ] {
        assert!(
            vs_base.contains(&want.to_string()),
            "{driver}: {want} missing from {vs_base:?}"
        );
    }

    // Container data and dirs.
    let cd = write(tmp, "cdata", b"container data\n");
    ok(&cs.ours(&["set-container-data", "-f", &s(&cd), &ctr, "state"]));
    same_records(&cs, "set-container-data");
    assert_eq!(names(&both(&cs, &["list-container-data", &ctr])), ["state"]);
    for bin in ["ours", "go"] {
        let args = ["get-container-data", "-f", &s(&out), &ctr, "state"];
        ok(&if bin == "ours" {
            cs.ours(&args)
        } else {
            cs.go(&args)
        });
        assert_eq!(
            std::fs::read(&out).expect("data file"),
            b"container data\n",
            "{bin}"
        );
    }
    let dir = both(&cs, &["get-container-dir", &ctr]);
    assert!(Path::new(dir.trim()).is_dir(), "container dir {dir}");
    let rdir = both(&cs, &["get-container-run-dir", &ctr]);
    assert!(Path::new(rdir.trim()).is_dir(), "container run dir {rdir}");

    // Names and metadata on every kind.
    for (id, kind) in [(&l1, "layer"), (&img, "image"), (&ctr, "container")] {
        let n = format!("added-{kind}");
        ok(&cs.ours(&["add-names", "-n", &n, id]));
        same_records(&cs, &format!("add-names on a {kind}"));
        assert!(both(&cs, &["get-names", id]).contains(&n), "{kind} names");
        let n2 = format!("set-{kind}");
        ok(&cs.ours(&["set-names", "-n", &n2, id]));
        same_records(&cs, &format!("set-names on a {kind}"));
        let got = both(&cs, &["get-names", id]);
        assert!(got.contains(&n2) && !got.contains(&n), "{kind}: {got}");
        let m = format!("{kind} metadata");
        ok(&cs.ours(&["set-metadata", "-m", &m, id]));
        same_records(&cs, &format!("set-metadata on a {kind}"));
        assert_eq!(both(&cs, &["metadata", "-q", id]).trim(), m, "{kind}");
    }

    // Deletion: the container, then the image with its now-unused layers.
    ok(&cs.ours(&["delete-container", &ctr]));
    same_records(&cs, "delete-container");
    assert!(!cs.ours(&["exists", "-c", &ctr]).status.success());
    ok(&cs.ours(&["delete-image", &img]));
    same_records(&cs, "delete-image");
    assert_eq!(
        ok(&cs.ours(&["layers", "-q"])).trim(),
        "",
        "{driver}: the image's layers went with it"
    );
    let leftovers: Vec<String> = layer_dirs(&cs)
        .into_iter()
        .filter(|e| e.len() == 64)
        .collect();
    assert!(leftovers.is_empty(), "{driver} dirs left: {leftovers:?}");

    // wipe.
    let l = first_line(&ok(&cs.ours(&["import-layer", "-f", &s(&base)])));
    let i = first_line(&ok(&cs.ours(&["create-image", "-n", "wiped", &l])));
    let c1 = first_line(&ok(&cs.ours(&["create-container", &i])));
    let c2 = first_line(&ok(&cs.ours(&["create-container", &i])));
    same_records(&cs, "re-create");
    // Wipe while one container is mounted by us and one by Go.
    let m1 = PathBuf::from(ok(&cs.ours(&["mount", &c1])).trim());
    let m2 = PathBuf::from(ok(&cs.go(&["mount", &c2])).trim());
    ok(&cs.ours(&["wipe"]));
    same_records(&cs, "wipe");
    for m in [&m1, &m2] {
        assert!(
            mounts_under(m).is_empty(),
            "{driver}: {} still mounted after wipe",
            m.display()
        );
    }
    let left: Vec<String> = layer_dirs(&cs)
        .into_iter()
        .filter(|e| e.len() == 64)
        .collect();
    assert!(left.is_empty(), "{driver}: dirs left after wipe: {left:?}");
    assert_eq!(ok(&cs.ours(&["layers", "-q"])).trim(), "");
    assert_eq!(ok(&cs.ours(&["images", "-q"])).trim(), "");
    assert_eq!(ok(&cs.ours(&["containers"])).trim(), "");
}

/// The other direction: Go makes the records, we read them and mount its container.
fn go_writes_ours_reads(driver: &str) {
    if !require(
        go_cs().is_some(),
        "Debian's Go containers-storage (/usr/bin/containers-storage)",
    ) {
        return;
    }
    let Some(cs) = DriverStore::new(driver) else {
        return;
    };
    let tmp = cs.dir.path();
    let base = write(tmp, "base.tar", &base_tar());
    let child = write(tmp, "child.tar", &child_tar());
    let l1 = first_line(&ok(&cs.go(&["import-layer", "-f", &s(&base)])));
    let l2 = first_line(&ok(&cs.go(&["import-layer", "-f", &s(&child), &l1])));
    let img = first_line(&ok(&cs.go(&[
        "create-image",
        "-n",
        "localhost/by-go:1",
        "--digest",
        DIGEST,
        "-m",
        "go meta",
        &l2,
    ])));
    let mf = write(tmp, "manifest", b"{}");
    ok(&cs.go(&["set-image-data", "-f", &s(&mf), &img, "manifest"]));
    let ctr = first_line(&ok(&cs.go(&["create-container", "-n", "go-ctr", &img])));
    same_records(&cs, "Go's records");
    both(&cs, &["images-by-digest", DIGEST]);
    both(&cs, &["list-image-data", &img]);

    // Our mount of Go's container.
    let mnt = PathBuf::from(ok(&cs.ours(&["mount", &ctr])).trim());
    assert_eq!(entries(&mnt.join("etc")), ["hello.txt"], "whiteout applied");
    assert_eq!(entries(&mnt.join("opq")), ["new"], "opaque dir applied");
    std::fs::write(mnt.join("ours"), b"x\n").expect("write in Go's container");
    ok(&cs.ours(&["unmount", &ctr]));
    same_records(&cs, "our mount of Go's container");
    let c: serde_json::Value = serde_json::from_str(&ok(&cs.go(&["container", "--json", &ctr])))
        .expect("container --json");
    let cl = c[0]["layer"].as_str().expect("container layer").to_string();
    let changes = changes(&cs, &cl);
    assert_eq!(
        changes,
        ["Add \"/ours\""],
        "{driver}: changes of Go's container layer"
    );

    // We delete what Go made; Go sees an empty store.
    ok(&cs.ours(&["delete-container", &ctr]));
    ok(&cs.ours(&["delete-image", &img]));
    same_records(&cs, "our deletions of Go's records");
    assert_eq!(ok(&cs.ours(&["layers", "-q"])).trim(), "");
}

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

/// Containers with ID maps: each tool in its own store on the driver, the same steps; the
/// layer trees (IDs masked), the image's `mapped-layers` and the owners seen through the
/// mounts must agree. Without mount-time shifting the top layer gets one mapped copy.
fn mapped_containers_like_go(driver: &str) {
    use std::os::unix::fs::MetadataExt;
    if !require(
        go_cs().is_some(),
        "Debian's Go containers-storage (/usr/bin/containers-storage)",
    ) {
        return;
    }
    let mut results = Vec::new();
    for go in [false, true] {
        let Some(cs) = DriverStore::new(driver) else {
            return;
        };
        let tar = write(cs.dir.path(), "base.tar", &base_tar());
        let run = |args: &[&str]| ok(&if go { cs.go(args) } else { cs.ours(args) });
        run(&["import-layer", "-i", "base", "-f", &s(&tar)]);
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
        let md = std::fs::metadata(Path::new(mp.trim()).join("etc/hello.txt"))
            .expect("etc/hello.txt in the mapped container");
        let owner = (md.uid(), md.gid());
        run(&["unmount", "c1"]);
        let image: serde_json::Value =
            serde_json::from_str(&run(&["image", "--json", "img"])).expect("image --json");
        let mapped = image[0]["mapped-layers"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0);
        let tree = mask_ids(&run(&["layers", "-t"]));
        // The other tool reads the store the same way.
        if !go {
            same_records(&cs, "mapped containers");
        }
        results.push((owner, mapped, tree));
    }
    let who = |i: usize| if i == 0 { "ours" } else { "Go's" };
    // Through fuse-overlayfs, 1.43 shifts twice: it makes idmapped bind mounts of the lowers
    // (`<id>/mapped/0`) *and* passes `uidmapping=:0:101000:65536` to the mount program, so
    // the files show up as 65534 (nobody). 1.60 (our target) only
    // passes the mapping to the mount program; Go's owners are not compared there.
    let go_shifts_twice = driver == "fuse-overlayfs";
    for (i, (owner, mapped, _)) in results.iter().enumerate() {
        if i == 0 || !go_shifts_twice {
            assert_eq!(
                *owner,
                (101000, 101000),
                "{driver}: {} mapped container's owners",
                who(i)
            );
        }
        if driver == "vfs" || driver == "btrfs" {
            assert_eq!(*mapped, 1, "{driver}: {} mapped copies", who(i));
        }
    }
    if go_shifts_twice {
        assert_eq!(
            results[1].0,
            (65534, 65534),
            "{driver}: Go 1.43's double shift"
        );
        assert_eq!(
            (&results[0].1, &results[0].2),
            (&results[1].1, &results[1].2),
            "{driver}: ours vs Go's"
        );
    } else {
        assert_eq!(results[0], results[1], "{driver}: ours vs Go's");
    }
}

/// A container from an image in a read-only image store (`<driver>.imagestore`): both tools
/// list the same records, and each mounts the container over the store's layers. btrfs has
/// no image store option (neither in Go), so this runs on vfs and overlay (also through
/// fuse-overlayfs).
fn read_only_image_store_containers(driver: &str) {
    if !require(
        go_cs().is_some(),
        "Debian's Go containers-storage (/usr/bin/containers-storage)",
    ) {
        return;
    }
    let (Some(ais), Some(cs)) = (DriverStore::new(driver), DriverStore::new(driver)) else {
        return;
    };
    let base = write(ais.dir.path(), "base.tar", &base_tar());
    let child = write(ais.dir.path(), "child.tar", &child_tar());
    let l1 = first_line(&ok(&ais.ours(&["import-layer", "-f", &s(&base)])));
    let l2 = first_line(&ok(&ais.ours(&["import-layer", "-f", &s(&child), &l1])));
    let img = first_line(&ok(&ais.ours(&["create-image", "-n", "ro/image", &l2])));
    let opt = format!("{}.imagestore={}", cs.driver, ais.graph.display());
    let with = |args: &[&str]| -> Vec<String> {
        let mut v = vec!["--storage-opt".to_string(), opt.clone()];
        v.extend(args.iter().map(|a| a.to_string()));
        v
    };
    let ours = |args: &[&str]| ok(&cs.ours(&with(args)));
    let go = |args: &[&str]| ok(&cs.go(&with(args)));
    for args in [
        &["images", "--json"][..],
        &["image", &img],
        &["layers", "--json"],
    ] {
        assert_eq!(ours(args), go(args), "{driver}: {args:?}");
    }
    let ctr = first_line(&ours(&["create-container", "-n", "on-ro", &img]));
    assert_eq!(
        ours(&["containers", "--json"]),
        go(&["containers", "--json"]),
        "{driver}: containers"
    );
    // Both tools mount it (Go by ID) and see the image's files through the read-only layers.
    for (who, mount) in [("ours", true), ("Go", false)] {
        let mp = if mount {
            ours(&["mount", &ctr])
        } else {
            go(&["mount", &ctr])
        };
        let mp = PathBuf::from(mp.trim());
        assert_eq!(entries(&mp.join("etc")), ["hello.txt"], "{driver}: {who}");
        assert_eq!(entries(&mp.join("opq")), ["new"], "{driver}: {who}");
        std::fs::write(mp.join(format!("by-{who}")), who).expect("write in container");
        if mount {
            ours(&["unmount", &ctr]);
        } else {
            go(&["unmount", &ctr]);
        }
        assert!(mounts_under(&mp).is_empty(), "{driver}: {who} left a mount");
    }
    let c: serde_json::Value =
        serde_json::from_str(&ours(&["container", "--json", &ctr])).expect("container --json");
    let cl = c[0]["layer"].as_str().expect("container layer").to_string();
    let changes_ours = ours(&["changes", &cl]);
    let mut got: Vec<&str> = changes_ours.lines().collect();
    got.sort();
    assert_eq!(got, ["Add \"/by-Go\"", "Add \"/by-ours\""], "{driver}");
    // The read-only store is untouched; deleting the container leaves its layers alone.
    ours(&["delete-container", &ctr]);
    assert_eq!(
        ours(&["layers", "--json"]),
        go(&["layers", "--json"]),
        "{driver}: layers after delete-container"
    );
    assert_eq!(ok(&ais.ours(&["images", "-q"])).trim(), img);
    assert_eq!(ok(&ais.ours(&["containers"])).trim(), "");
}
