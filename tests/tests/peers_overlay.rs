//! Real-peer interop on overlay (root only): our image listed, inspected, mounted and run by
//! podman and mounted by Go's containers-storage; an image skopeo writes mounted by us.

use std::ffi::OsStr;
use std::path::Path;

use storage_tests::oci::{OciImage, assert_rootfs, busybox_available, sample_layers};
use storage_tests::peers::{
    Unmounter, first_line, import_image, ours_reads_pulled_image, podman, podman_run,
    podman_run_args, skopeo_copy, skopeo_exports_same_layers, storage_ref,
};
use storage_tests::{Cs, go_cs, is_root, ok, peer, require};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn peers_ready(need: &[&str]) -> bool {
    if !require(is_root(), "root (overlay mounts)") {
        return false;
    }
    for p in need {
        let have = if *p == "go" {
            go_cs().is_some()
        } else {
            peer(p).is_some()
        };
        if !require(have, p) {
            return false;
        }
    }
    true
}

#[test]
fn our_overlay_image_read_by_podman_and_go() {
    if !peers_ready(&["podman", "go"]) {
        return;
    }
    let cs = Cs::new("overlay");
    let _g = Unmounter::new(&cs, true);
    let bb = busybox_available();
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(bb));
    let name = "localhost/ours-overlay:v1";
    let run = |a: &[&OsStr]| cs.ours(a);
    let top = import_image(&run, &img, name);

    // Our own view first.
    let cid = first_line(&ok(&cs.ours(&["create-container", "-n", "ourctr", name])));
    let mp = first_line(&ok(&cs.ours(&["mount", &cid])));
    let ctr = json(&ok(&cs.ours(&["container", "--json", &cid])));
    let layer = ctr[0]["layer"].as_str().unwrap_or_default().to_string();
    let want_mp = cs.graph.join("overlay").join(&layer).join("merged");
    assert_eq!(Path::new(&mp), want_mp, "our overlay mount point");
    assert_rootfs(Path::new(&mp), bb, "our mount of our overlay container");
    ok(&cs.ours(&["unmount", &cid]));

    // podman lists, inspects and mounts it.
    let list = json(&ok(&podman(&cs, &["images", "--format", "json"])));
    assert!(
        list.as_array().is_some_and(|a| a
            .iter()
            .any(|i| i["Id"] == img.image_id() && i["Digest"] == img.manifest_digest.as_str())),
        "podman images: {list}"
    );
    let insp = json(&ok(&podman(&cs, &["image", "inspect", name])));
    let insp = &insp[0];
    assert_eq!(insp["Id"], img.image_id());
    assert_eq!(insp["Digest"], img.manifest_digest.as_str());
    assert_eq!(insp["GraphDriver"]["Name"], "overlay");
    let upper = cs.graph.join("overlay").join(&top).join("diff");
    assert_eq!(
        insp["GraphDriver"]["Data"]["UpperDir"],
        upper.to_string_lossy().as_ref()
    );
    let lowers = insp["GraphDriver"]["Data"]["LowerDir"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        lowers.split(':').count(),
        img.layers.len() - 1,
        "LowerDir {lowers}"
    );
    let layers: Vec<&str> = insp["RootFS"]["Layers"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(layers, img.diff_ids());
    let mp = first_line(&ok(&podman(&cs, &["image", "mount", name])));
    assert_rootfs(
        Path::new(&mp),
        bb,
        "podman image mount of our overlay image",
    );
    ok(&podman(&cs, &["image", "unmount", name]));

    // Go makes a container of it and mounts it: same files.
    let gid = first_line(&ok(&cs.go(&["create-container", "-n", "goctr", name])));
    let mp = first_line(&ok(&cs.go(&["mount", &gid])));
    assert!(mp.ends_with("/merged"), "Go mount point {mp}");
    assert_rootfs(
        Path::new(&mp),
        bb,
        "Go's mount of a container of our overlay image",
    );
    // We see Go's mount count, and Go sees ours.
    assert_eq!(
        ok(&cs.ours(&["mounted", &gid])).trim(),
        format!("{gid} mounted")
    );
    ok(&cs.go(&["unmount", &gid]));
    ok(&cs.go(&["delete-container", &gid]));
    ok(&cs.ours(&["delete-container", &cid]));
    let left = json(&ok(&cs.go(&["containers", "--json"])));
    assert_eq!(left, serde_json::json!([]));

    // skopeo exports it from overlay with the same layers (diffs rebuilt from tar-split).
    skopeo_exports_same_layers(&cs, name, &img);
}

#[test]
fn skopeo_writes_overlay_ours_mounts() {
    if !peers_ready(&["skopeo"]) {
        return;
    }
    let cs = Cs::new("overlay");
    let _g = Unmounter::new(&cs, false);
    let bb = busybox_available();
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(bb));
    let name = "localhost/pulled-overlay:v1";
    ok(&skopeo_copy(&img.reference(), &storage_ref(&cs, name)));
    ours_reads_pulled_image(&cs, &img, name, bb);
}

#[test]
fn podman_runs_our_overlay_image() {
    if !peers_ready(&["podman"])
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
    let name = "localhost/runnable:v1";
    let run = |a: &[&OsStr]| cs.ours(a);
    import_image(&run, &img, name);
    let base = podman_run_args(name);
    let Some(t) = podman_run(&cs, &[&base[..], &["/bin/true"]].concat()) else {
        return;
    };
    ok(&t);
    // The container sees the merged layers: changed file, opaque dir, deletion, owners.
    let script = "cat /etc/motd; ls -A /opq; test ! -e /gone/file && echo gone; stat -c '%u:%g %a' /etc/secret /usr/bin/suid";
    let out = ok(&podman(
        &cs,
        &[&base[..], &["/bin/sh", "-c", script]].concat(),
    ));
    assert_eq!(out, "layer2 motd\nnew\ngone\n1000:1000 600\n0:0 4755\n");
}

/// Tar entries: path → (type byte, mode, uid, gid, sha256 of the data, link name).
type Entries = std::collections::BTreeMap<String, (u8, u32, u64, u64, String, String)>;

/// Entries of a tar stream.
fn tar_entries(data: &[u8]) -> Entries {
    let mut a = tar::Archive::new(data);
    let mut m = std::collections::BTreeMap::new();
    for e in a.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let path = e.path().expect("entry path").to_string_lossy().into_owned();
        let h = e.header().clone();
        let link = e
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).expect("entry body");
        m.insert(
            path,
            (
                h.entry_type().as_byte(),
                h.mode().unwrap_or(0),
                h.uid().unwrap_or(0),
                h.gid().unwrap_or(0),
                storage_tests::tars::sha256(&body),
                link,
            ),
        );
    }
    m
}

#[test]
fn container_changes_shared_on_overlay() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !peers_ready(&["go"]) {
        return;
    }
    let cs = Cs::new("overlay");
    let _g = Unmounter::new(&cs, false);
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(false));
    let run = |a: &[&OsStr]| cs.ours(a);
    import_image(&run, &img, "localhost/changes:v1");
    let cid = first_line(&ok(&cs.ours(&[
        "create-container",
        "-n",
        "c",
        "localhost/changes:v1",
    ])));
    let ctr = json(&ok(&cs.ours(&["container", "--json", &cid])));
    let layer = ctr[0]["layer"].as_str().unwrap_or_default().to_string();

    // Change the container's files through our mount.
    let mp = first_line(&ok(&cs.ours(&["mount", &cid])));
    let root = Path::new(&mp);
    std::fs::write(root.join("etc/new-file"), b"new in container\n").expect("write");
    std::os::unix::fs::chown(root.join("etc/new-file"), Some(1000), Some(1000)).expect("chown");
    std::fs::remove_file(root.join("etc/motd")).expect("rm motd");
    std::fs::remove_dir_all(root.join("data")).expect("rm data");
    ok(&cs.ours(&["unmount", &cid]));

    // The kernel left a 0/0 character device as the whiteout in the container layer.
    let wh = cs.graph.join("overlay").join(&layer).join("diff/etc/motd");
    let md = std::fs::symlink_metadata(&wh).expect("whiteout in diff/");
    assert!(
        md.file_type().is_char_device() && md.rdev() == 0,
        "{} is not a whiteout",
        wh.display()
    );

    // Go mounts the container and sees our changes.
    let gmp = first_line(&ok(&cs.go(&["mount", &cid])));
    let groot = Path::new(&gmp);
    assert_eq!(
        std::fs::read(groot.join("etc/new-file")).ok().as_deref(),
        Some(&b"new in container\n"[..])
    );
    assert_eq!(
        std::fs::metadata(groot.join("etc/new-file"))
            .map(|m| m.uid())
            .ok(),
        Some(1000)
    );
    assert!(!groot.join("etc/motd").exists() && !groot.join("data").exists());
    assert!(groot.join("etc/secret").exists());
    ok(&cs.go(&["unmount", &cid]));

    // Both export the same changes (AUFS whiteouts in the tar).
    let ours_diff = cs.ours(&["diff", "-u", &layer]);
    let go_diff = cs.go(&["diff", "-u", &layer]);
    ok(&ours_diff);
    ok(&go_diff);
    let (o, g) = (tar_entries(&ours_diff.stdout), tar_entries(&go_diff.stdout));
    for want in ["etc/.wh.motd", ".wh.data", "etc/new-file"] {
        assert!(
            o.contains_key(want),
            "our diff lacks {want}: {:?}",
            o.keys()
        );
    }
    // Go 1.43 differs from 1.60 (our target) in two ways: it ORs file-type bits into the mode, and
    // a kernel-shared whiteout inode gives the 2nd whiteout a stale linkname naming the 1st
    // *before* renaming (1.60: after).
    let normalize = |m: &Entries| -> Entries {
        m.iter()
            .map(|(k, (t, mode, u, g, d, link))| {
                let wh = Path::new(k)
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".wh."));
                let link = if wh && *t == b'0' {
                    String::new()
                } else {
                    link.clone()
                };
                (k.clone(), (*t, mode & 0o7777, *u, *g, d.clone(), link))
            })
            .collect()
    };
    assert_eq!(
        normalize(&o),
        normalize(&g),
        "our diff and Go's diff of the container layer"
    );
    for (k, (t, _, _, _, _, link)) in &o {
        if *t == b'0' && !link.is_empty() {
            let target = Path::new(link)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            assert!(
                target.starts_with(".wh."),
                "1.60 names the renamed first whiteout: {k} -> {link}"
            );
        }
    }
    let sorted = |s: String| {
        let mut v: Vec<String> = s.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(
        sorted(ok(&cs.ours(&["changes", &layer]))),
        sorted(ok(&cs.go(&["changes", &layer]))),
        "changes"
    );
}

/// Whether `path` is a mount point (in this mount namespace).
fn is_mount_point(path: &Path) -> bool {
    storage_tests::peers::mounts_under(path)
        .iter()
        .any(|m| m == path)
}

/// Mount count of layer `id` in the store's `mountpoints.json` (0 when absent).
fn mount_count(cs: &Cs, id: &str) -> u64 {
    let p = cs.run.join("overlay-layers/mountpoints.json");
    let v: serde_json::Value = std::fs::read(&p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    v.as_array()
        .and_then(|a| a.iter().find(|m| m["id"] == id))
        .and_then(|m| m["count"].as_u64())
        .unwrap_or(0)
}

#[test]
fn mount_counts_shared_by_ours_go_and_podman() {
    if !peers_ready(&["go", "podman"]) {
        return;
    }
    let cs = Cs::new("overlay");
    let _g = Unmounter::new(&cs, true);
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(false));
    let name = "localhost/counted:v1";
    let run = |a: &[&OsStr]| cs.ours(a);
    let top = import_image(&run, &img, name);
    let cid = first_line(&ok(&cs.ours(&["create-container", "-n", "c", name])));
    let layer = json(&ok(&cs.ours(&["container", "--json", &cid])))[0]["layer"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // A container mounted by us, then by Go: one mount, count 2.
    let a = first_line(&ok(&cs.ours(&["mount", &cid])));
    let b = first_line(&ok(&cs.go(&["mount", &cid])));
    assert_eq!(a, b, "same mount point");
    assert_eq!(mount_count(&cs, &layer), 2);
    ok(&cs.go(&["unmount", &cid]));
    assert_eq!(mount_count(&cs, &layer), 1);
    assert!(
        is_mount_point(Path::new(&a)),
        "Go's unmount took our mount away"
    );
    assert_eq!(
        ok(&cs.ours(&["mounted", &cid])).trim(),
        format!("{cid} mounted")
    );
    assert_rootfs(Path::new(&a), false, "our mount after Go's unmount");
    assert_eq!(
        ok(&cs.ours(&["unmount", &cid])).trim(),
        format!("{cid} mountpoint unmounted")
    );
    assert!(
        !is_mount_point(Path::new(&a)),
        "still mounted after the last unmount"
    );
    assert_eq!(ok(&cs.go(&["mounted", &cid])), "");

    // The image's top layer mounted by us and by podman (image mount) at the same time.
    let ours_mp = first_line(&ok(&cs.ours(&["mount", &top])));
    let podman_mp = first_line(&ok(&podman(&cs, &["image", "mount", name])));
    assert_eq!(
        ours_mp, podman_mp,
        "podman reuses our mount of the top layer"
    );
    assert_eq!(mount_count(&cs, &top), 2);
    ok(&podman(&cs, &["image", "unmount", name]));
    assert_eq!(mount_count(&cs, &top), 1);
    assert!(
        is_mount_point(Path::new(&ours_mp)),
        "podman's unmount took our mount away"
    );
    assert_rootfs(
        Path::new(&ours_mp),
        false,
        "our top-layer mount after podman's unmount",
    );
    ok(&cs.ours(&["unmount", &top]));
    assert_eq!(mount_count(&cs, &top), 0);
    assert!(!is_mount_point(Path::new(&ours_mp)));
}

/// `n` small layers: layer `i` adds `layers/i`, deletes `layers/(i-2)` (a whiteout), and
/// layer `n/2` makes `opq/` opaque (hiding `opq/early` from layer 0) and adds `opq/late`.
fn deep_layers(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut b = tar::Builder::new(Vec::new());
            let mut add = |path: &str, dir: bool, data: &[u8]| {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(if dir {
                    tar::EntryType::Directory
                } else {
                    tar::EntryType::Regular
                });
                h.set_mode(if dir { 0o755 } else { 0o644 });
                h.set_size(data.len() as u64);
                h.set_mtime(1_700_000_000);
                b.append_data(&mut h, path, data).expect("tar");
            };
            add("layers/", true, b"");
            add(&format!("layers/{i}"), false, format!("{i}\n").as_bytes());
            if i >= 2 {
                add(&format!("layers/.wh.{}", i - 2), false, b"");
            }
            if i == 0 {
                add("opq/", true, b"");
                add("opq/early", false, b"early\n");
            }
            if i == n / 2 {
                add("opq/", true, b"");
                add("opq/.wh..wh..opq", false, b"");
                add("opq/late", false, b"late\n");
            }
            b.into_inner().expect("tar")
        })
        .collect()
}

fn check_deep(root: &Path, n: usize, what: &str) {
    let mut names: Vec<String> = std::fs::read_dir(root.join("layers"))
        .unwrap_or_else(|e| panic!("{what}: layers/: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want = vec![(n - 2).to_string(), (n - 1).to_string()];
    want.sort();
    assert_eq!(names, want, "{what}: layers/");
    let opq: Vec<String> = std::fs::read_dir(root.join("opq"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(opq, ["late"], "{what}: opq/");
}

#[test]
fn deep_image_on_overlay_shared() {
    if !peers_ready(&["skopeo", "go", "podman"]) {
        return;
    }
    const N: usize = 80;
    let cs = Cs::new("overlay");
    let _g = Unmounter::new(&cs, true);
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", deep_layers(N));
    let name = "localhost/deep:v1";
    ok(&skopeo_copy(&img.reference(), &storage_ref(&cs, name)));
    // Our container of skopeo's image, mounted by us and by Go.
    let cid = first_line(&ok(&cs.ours(&["create-container", "-n", "deep", name])));
    let mp = first_line(&ok(&cs.ours(&["mount", &cid])));
    check_deep(Path::new(&mp), N, "our mount of an 80-layer container");
    ok(&cs.ours(&["unmount", &cid]));
    let mp = first_line(&ok(&cs.go(&["mount", &cid])));
    check_deep(Path::new(&mp), N, "Go's mount of our 80-layer container");
    ok(&cs.go(&["unmount", &cid]));
    ok(&cs.ours(&["delete-container", &cid]));
    // Our own import of the same image in a second store, mounted by podman.
    let cs2 = Cs::new("overlay");
    let _g2 = Unmounter::new(&cs2, true);
    let run = |a: &[&OsStr]| cs2.ours(a);
    import_image(&run, &img, name);
    let mp = first_line(&ok(&podman(&cs2, &["image", "mount", name])));
    check_deep(
        Path::new(&mp),
        N,
        "podman image mount of our 80-layer image",
    );
    ok(&podman(&cs2, &["image", "unmount", name]));
}
