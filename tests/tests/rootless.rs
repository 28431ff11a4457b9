//! Rootless: our CLI and the library on a rootless podman user's own store, as that user,
//! with no wrapper (issue 20).
//!
//! Every test runs commands as the test users of `storage_tests::rootless` (created on first
//! use, with subordinate ranges; see that module for the host conditions), in a session with
//! its own `HOME` and `XDG_RUNTIME_DIR`, so the store is the user's default one
//! (`$HOME/.local/share/containers/storage`) and no store option is given to any tool.
//! Without root, `useradd`, `newuidmap`, podman or skopeo the tests fail in CI and are
//! skipped loudly elsewhere.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use storage_tests::oci::{BUSYBOX, OciImage, busybox_available};
use storage_tests::peers::{diff_digests, first_line, import_image, layer_chain};
use storage_tests::rootless::{Session, TestUser, USER_PATH, users};
use storage_tests::tars::{TarBuilder, sha256};
use storage_tests::{ok, peer, require};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A session of the user with (or without) subordinate ranges; `None` (a loud skip, or a
/// panic in CI) when the users cannot be made or a peer in `peers` is missing.
fn session(with_ranges: bool, peers: &[&str]) -> Option<Session> {
    let users = match users() {
        Ok(u) => u,
        Err(e) => {
            require(false, &format!("rootless test users: {e}"));
            return None;
        }
    };
    for p in peers {
        if !require(peer(p).is_some(), &format!("{p} is installed")) {
            return None;
        }
    }
    Some(Session::new(if with_ranges {
        &users.with_ranges
    } else {
        &users.without_ranges
    }))
}

/// Owners (container IDs) of the files of [`owned_layers`]: root, the first ID of the first
/// subordinate range, an ordinary user, the last ID of the first range and the first and a
/// later ID of the second range (laid out after the first: the ranges are sorted by start).
const OWNED: [(&str, u64); 6] = [
    ("etc/root", 0),
    ("etc/one", 1),
    ("etc/user", 1000),
    ("etc/top", 65536),
    ("etc/second", 65537),
    ("etc/high", 66000),
];

/// Two layers: files owned by the IDs of [`OWNED`] (plus busybox when the host has it, so
/// the image can run), a character device (which extraction in a user namespace skips, as
/// Go's does), an `opq/` directory and `gone`; then a layer that deletes `gone`
/// and makes `opq/` opaque with a new file owned by 1000.
fn owned_layers() -> Vec<Vec<u8>> {
    let mut base = TarBuilder::new();
    if busybox_available() {
        let bb = std::fs::read(BUSYBOX).expect("read busybox");
        base = base
            .dir("bin/", 0o755)
            .file("bin/busybox", 0o755, &bb)
            .symlink("bin/true", "busybox")
            .symlink("bin/sh", "busybox");
    }
    base = base.dir("etc/", 0o755);
    for (path, id) in OWNED {
        base = base.file_owned(path, 0o640, id, id, path.as_bytes());
    }
    let base = base
        .dir("dev/", 0o755)
        .char_device("dev/console", 5, 1)
        .file("gone", 0o644, b"to be deleted\n")
        .dir("opq/", 0o755)
        .file("opq/old", 0o644, b"old\n")
        .finish();
    let top = TarBuilder::new()
        .file(".wh.gone", 0o644, b"")
        .dir("opq/", 0o755)
        .file("opq/.wh..wh..opq", 0o644, b"")
        .file_owned("opq/new", 0o600, 1000, 1000, b"new\n")
        .finish();
    vec![base, top]
}

/// What `stat -c '%u:%g %n'` prints for the files of [`OWNED`] under `$p`, then the list of
/// `opq/` and whether `gone` is gone — inside the user namespace (container IDs).
const INSIDE_SCRIPT: &str = "cd \"$p\" && stat -c '%u:%g %n' etc/root etc/one etc/user etc/top etc/second etc/high opq/new && ls -A opq && test ! -e gone && echo gone-is-gone";

fn inside_expected() -> String {
    let mut s: String = OWNED
        .iter()
        .map(|(p, id)| format!("{id}:{id} {p}\n"))
        .collect();
    s.push_str("1000:1000 opq/new\nnew\ngone-is-gone\n");
    s
}

/// Checks the host owners of the files of [`OWNED`] in a layer directory: container ID `c`
/// is stored as the host ID the user's namespace maps it to.
fn assert_host_owners(dir: &Path, user: &TestUser) {
    for (path, id) in OWNED {
        let m = std::fs::symlink_metadata(dir.join(path))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(path).display()));
        let want = user.host_id(user.uid, id as u32).expect("mapped");
        let want_gid = user.host_id(user.gid, id as u32).expect("mapped");
        assert_eq!(
            (m.uid(), m.gid()),
            (want, want_gid),
            "host owner of {path} (container ID {id})"
        );
    }
}

/// The namespace's `uid_map` for `user`, as `cat /proc/self/uid_map` prints it, squeezed.
fn expected_uid_map(user: &TestUser) -> String {
    format!("0 {} 1\n1 400000 65536\n65537 500000 1000\n", user.uid)
}

fn squeeze(map: &str) -> String {
    map.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
        .collect()
}

/// The image record (from `images --json`) with ID `id`.
fn image_record(s: &Session, id: &str) -> serde_json::Value {
    let images = json(&ok(&s.ours(&["images", "--json"])));
    images
        .as_array()
        .and_then(|a| a.iter().find(|i| i["id"] == id))
        .unwrap_or_else(|| panic!("image {id} not listed by ours: {images}"))
        .clone()
}

/// `$CS unshare sh -c SCRIPT` as the user: the script runs inside our namespace (as its
/// root), where `$CS mount` leaves its mounts for the script to read.
fn ours_inside(s: &Session, script: &str) -> Output {
    s.command(s.ours_bin())
        .args(["unshare", "sh", "-c", script])
        .env("CS", s.ours_bin())
        .output()
        .expect("run ours unshare")
}

/// Writes an OCI layout of [`owned_layers`] under the session and has skopeo, as the user,
/// copy it into the user's default store as `name`.
fn pull_owned(s: &Session, dir: &str, name: &str) -> OciImage {
    let img = OciImage::write(&s.dir.path().join(dir), "v1", owned_layers());
    ok(&s.skopeo(&[
        "copy",
        "--quiet",
        &img.reference(),
        &format!("containers-storage:{name}"),
    ]));
    img
}

/// Mounts container `ctr` with our CLI inside its namespace and checks the files' owners
/// and the layers' merge there, and (overlay) that the mount's line in mountinfo has
/// `marker`.
fn assert_ours_mount_inside(s: &Session, ctr: &str, marker: Option<&str>) {
    let (grep, counted) = match marker {
        Some(m) => (
            format!("grep -c \" $p .*{m}\" /proc/self/mountinfo;"),
            "1\n",
        ),
        None => (String::new(), ""),
    };
    let script = format!(
        "set -e; p=$($CS mount {ctr}); {INSIDE_SCRIPT}; {grep} $CS unmount {ctr} >/dev/null"
    );
    let out = ours_inside(s, &script);
    assert_eq!(
        stdout(&out),
        format!("{}{counted}", inside_expected()),
        "stderr: {}",
        stderr(&out)
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The directory holding layer `id`'s own files on `driver`.
fn layer_dir(s: &Session, driver: &str, id: &str) -> std::path::PathBuf {
    match driver {
        "vfs" => s.graph_root().join("vfs/dir").join(id),
        _ => s.graph_root().join("overlay").join(id).join("diff"),
    }
}

/// Uses `driver` for the session's store (the user's storage.conf, which podman reads too).
fn use_driver(s: &Session, driver: &str) {
    if driver == "vfs" {
        s.write_storage_conf("[storage]\ndriver = \"vfs\"\n");
    }
}

/// Podman, inside its namespace, mounts image `name` and sees the owners we expect.
fn assert_podman_mount_inside(s: &Session, name: &str) {
    let podman = "podman --cgroup-manager cgroupfs --events-backend none";
    let script = format!(
        "set -e; p=$({podman} image mount {name}); {INSIDE_SCRIPT}; {podman} image unmount {name} >/dev/null"
    );
    let out = s.podman(&["unshare", "sh", "-c", &script]);
    assert_eq!(stdout(&out), inside_expected(), "stderr: {}", stderr(&out));
}

/// Our CLI, with no option, lists, diffs and mounts what podman (skopeo) stored on
/// `driver`; podman's view is unchanged afterwards.
fn ours_reads_what_podman_pulled(driver: &str) {
    let Some(s) = session(true, &["podman", "skopeo"]) else {
        return;
    };
    use_driver(&s, driver);
    let name = "localhost/pulled:v1";
    let img = pull_owned(&s, "oci", name);
    let podman_images = ok(&s.podman(&["images", "--format", "json"]));
    let podman_inspect = ok(&s.podman(&["image", "inspect", name]));

    // Listed, with Go's record, by our CLI given no option at all.
    let rec = image_record(&s, img.image_id());
    assert!(
        rec["names"]
            .as_array()
            .is_some_and(|n| n.iter().any(|x| x == name))
    );
    let top = rec["layer"].as_str().expect("top layer").to_string();
    let listing = ok(&s.ours(&["images"]));
    assert!(listing.lines().any(|l| l == img.image_id()), "{listing}");
    let status = stderr(&s.ours(&["status"]));
    assert!(
        status.contains(&format!("Driver Name: {driver}\n")),
        "{status}"
    );

    // Every layer's diff reproduces its diff ID.
    let chain = layer_chain(&ok(&s.ours(&["layers", "--json"])), &top);
    assert_eq!(diff_digests(&chain), img.diff_ids());
    for rec in &chain {
        let id = rec["id"].as_str().unwrap_or_default();
        let d = s.ours(&["diff", "-u", id]);
        ok(&d);
        assert_eq!(sha256(&d.stdout), rec["diff-digest"].as_str().unwrap_or(""));
    }

    // A container of it, mounted, with the files' owners as the namespace shows them.
    ok(&s.ours(&["create-container", "-n", "ctr", name]));
    let marker = (driver == "overlay").then_some("userxattr");
    assert_ours_mount_inside(&s, "ctr", marker);

    // On disk: host IDs from the user's ranges; for overlay, native with Go's markers.
    let graph = s.graph_root();
    if driver == "overlay" {
        assert_eq!(
            std::fs::read_to_string(graph.join("overlay/.has-mount-program")).unwrap(),
            "false"
        );
        assert!(s.run_root().join("overlay/overlay-true").exists());
    }
    let base = layer_dir(&s, driver, chain[0]["id"].as_str().unwrap());
    assert_host_owners(&base, &s.user);
    // Go skipped the device node (a user namespace cannot make one); the diff above still
    // had it.
    assert!(base.join("dev").is_dir() && !base.join("dev/console").exists());
    assert_eq!(ok(&s.ours(&["check"])), "");

    ok(&s.ours(&["delete-container", "ctr"]));
    // Go's view is unchanged.
    assert_eq!(
        ok(&s.podman(&["images", "--format", "json"])),
        podman_images
    );
    assert_eq!(ok(&s.podman(&["image", "inspect", name])), podman_inspect);
}

#[test]
fn ours_reads_what_podman_pulled_overlay() {
    ours_reads_what_podman_pulled("overlay");
}

#[test]
fn ours_reads_what_podman_pulled_vfs() {
    ours_reads_what_podman_pulled("vfs");
}

/// Podman lists, inspects and mounts what our CLI stored (on `driver`), and runs it where
/// the host lets rootless containers run.
fn podman_reads_what_ours_stored(driver: &str) {
    let Some(s) = session(true, &["podman"]) else {
        return;
    };
    use_driver(&s, driver);
    let img = OciImage::write(&s.dir.path().join("oci"), "v1", owned_layers());
    let name = "localhost/ours:v1";
    let top = import_image(&|a| s.ours(a), &img, name);
    ok(&s.ours(&["create-container", "-n", "ours-ctr", name]));
    let status = stderr(&s.ours(&["status"]));
    assert!(
        status.contains(&format!("Driver Name: {driver}\n")),
        "{status}"
    );
    if driver == "overlay" {
        // No idmapped lowers in a user namespace, cached as Go caches it (status asks).
        assert!(status.contains("Supports shifting: false\n"), "{status}");
        assert!(
            s.run_root()
                .join("overlay/idmapped-lower-dir-false")
                .exists()
        );
    }

    // Our layers on disk: host owners from the user's ranges; the whiteout and the opaque
    // directory in the driver's format.
    let chain = layer_chain(&ok(&s.ours(&["layers", "--json"])), &top);
    let ids: Vec<&str> = chain.iter().map(|l| l["id"].as_str().unwrap()).collect();
    let base_dir = layer_dir(&s, driver, ids[0]);
    assert!(base_dir.join("dev").is_dir() && !base_dir.join("dev/console").exists());
    assert_host_owners(&base_dir, &s.user);
    let upper = layer_dir(&s, driver, ids[1]);
    if driver == "vfs" {
        assert!(!upper.join("gone").exists());
    } else {
        let wh = std::fs::symlink_metadata(upper.join("gone")).unwrap();
        assert_eq!(wh.rdev(), 0, "whiteout is a 0/0 character device");
        let mut v = [0u8; 8];
        let n = rustix::fs::getxattr(upper.join("opq"), "user.overlay.opaque", &mut v[..])
            .expect("user.overlay.opaque on the opaque directory");
        assert_eq!(&v[..n], b"y");
    }

    let listed = ok(&s.podman(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]));
    assert!(
        listed.contains(&format!("{name} {}", &img.image_id()[..12])),
        "{listed}"
    );
    let layers = ok(&s.podman(&[
        "image",
        "inspect",
        name,
        "--format",
        "{{json .RootFS.Layers}}",
    ]));
    assert_eq!(json(&layers), serde_json::json!(img.diff_ids()));
    let ctrs = ok(&s.podman(&["ps", "-a", "--external", "--format", "{{.Names}}"]));
    assert!(ctrs.lines().any(|l| l == "ours-ctr"), "{ctrs}");

    // Go reads the files with the owners we gave them.
    assert_podman_mount_inside(&s, name);

    // A container podman creates is ours to see.
    ok(&s.podman(&["create", "--name", "pod-ctr", name, "/bin/true"]));
    let ours_ctrs = ok(&s.ours(&["containers"]));
    assert!(
        ours_ctrs.lines().any(|l| l == "\tname: pod-ctr"),
        "{ours_ctrs}"
    );
    if busybox_available() {
        let run = s.podman(&[
            "run",
            "--rm",
            "--cgroups=disabled",
            "--network=none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            name,
            "/bin/sh",
            "-c",
            "stat -c '%u:%g %n' /etc/second /opq/new",
        ]);
        let err = stderr(&run);
        if !run.status.success()
            && (err.contains("cgroup") || err.contains("OCI runtime") || err.contains("conmon"))
        {
            eprintln!("SKIPPED (host): podman cannot run rootless containers here: {err}");
        } else {
            assert_eq!(
                ok(&run),
                "65537:65537 /etc/second\n1000:1000 /opq/new\n",
                "{err}"
            );
        }
    }
    ok(&s.podman(&["rm", "pod-ctr"]));
    assert_eq!(ok(&s.ours(&["check"])), "");
}

#[test]
fn podman_reads_what_ours_stored_overlay() {
    podman_reads_what_ours_stored("overlay");
}

#[test]
fn podman_reads_what_ours_stored_vfs() {
    podman_reads_what_ours_stored("vfs");
}

#[test]
fn podman_and_ours_share_the_store_in_turn_and_at_once() {
    let Some(s) = session(true, &["podman", "skopeo"]) else {
        return;
    };
    pull_owned(&s, "a", "localhost/a:v1");
    let layer_tar = s.dir.path().join("layer.tar");
    std::fs::write(&layer_tar, &owned_layers()[0]).unwrap();
    // In turn.
    let b = OciImage::write(
        &s.dir.path().join("b"),
        "v1",
        vec![owned_layers()[0].clone()],
    );
    import_image(&|a| s.ours(a), &b, "localhost/b:v1");
    ok(&s.podman(&["tag", "localhost/a:v1", "localhost/a:turn"]));
    let listing = ok(&s.ours(&["images"]));
    assert!(listing.contains("\tname: localhost/a:turn\n"), "{listing}");
    // At once: podman tags and creates containers while we create layers, import layers
    // and create containers.
    const N: usize = 4;
    let layer_tar = layer_tar.to_str().unwrap().to_string();
    std::thread::scope(|scope| {
        let podman_tags = scope.spawn(|| {
            for i in 0..N {
                ok(&s.podman(&["tag", "localhost/a:v1", &format!("localhost/a:t{i}")]));
            }
        });
        let podman_ctrs = scope.spawn(|| {
            for i in 0..N {
                ok(&s.podman(&["create", "--name", &format!("p{i}"), "localhost/a:v1"]));
            }
        });
        let ours_layers = scope.spawn(|| {
            for i in 0..N {
                ok(&s.ours(&["create-layer", "-n", &format!("l{i}")]));
                ok(&s.ours(&["import-layer", "-n", &format!("i{i}"), "-f", &layer_tar]));
            }
        });
        let ours_ctrs = scope.spawn(|| {
            for i in 0..N {
                ok(&s.ours(&["create-container", "-n", &format!("o{i}"), "localhost/a:v1"]));
            }
        });
        for h in [podman_tags, podman_ctrs, ours_layers, ours_ctrs] {
            h.join().expect("worker");
        }
    });
    // Nothing lost, in either view.
    let images = ok(&s.ours(&["images"]));
    let layers = ok(&s.ours(&["layers"]));
    let ctrs = ok(&s.ours(&["containers"]));
    let pod_images = ok(&s.podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    let pod_ctrs = ok(&s.podman(&["ps", "-a", "--external", "--format", "{{.Names}}"]));
    for i in 0..N {
        assert!(
            images.contains(&format!("\tname: localhost/a:t{i}\n")),
            "{images}"
        );
        assert!(
            pod_images.contains(&format!("localhost/a:t{i}\n")),
            "{pod_images}"
        );
        for n in [format!("l{i}"), format!("i{i}")] {
            assert!(layers.contains(&format!("\tname: {n}\n")), "{layers}");
        }
        for n in [format!("p{i}"), format!("o{i}")] {
            assert!(ctrs.contains(&format!("\tname: {n}\n")), "{ctrs}");
            assert!(pod_ctrs.lines().any(|l| l == n), "{pod_ctrs}");
        }
    }
    assert!(pod_images.contains("localhost/b:v1\n"), "{pod_images}");
    assert_eq!(ok(&s.ours(&["check"])), "");
    for i in 0..N {
        ok(&s.podman(&["rm", &format!("p{i}"), &format!("o{i}")]));
    }
    assert_eq!(ok(&s.ours(&["check"])), "");
}

#[test]
fn fuse_overlayfs_as_mount_program() {
    let Some(s) = session(true, &["podman", "fuse-overlayfs"]) else {
        return;
    };
    if !require(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse exists (the fuse module)",
    ) {
        return;
    }
    s.write_storage_conf(
        "[storage]\ndriver = \"overlay\"\n[storage.options.overlay]\nmount_program = \"/usr/bin/fuse-overlayfs\"\n",
    );
    let img = OciImage::write(&s.dir.path().join("oci"), "v1", owned_layers());
    let name = "localhost/fuse:v1";
    let top = import_image(&|a| s.ours(a), &img, name);
    let graph = s.graph_root();
    assert_eq!(
        std::fs::read_to_string(graph.join("overlay/.has-mount-program")).unwrap(),
        "true"
    );
    // AUFS-style whiteouts, kept as files for fuse-overlayfs.
    let upper = graph.join("overlay").join(&top).join("diff");
    assert!(upper.join(".wh.gone").is_file());
    assert!(upper.join("opq/.wh..wh..opq").is_file());
    ok(&s.ours(&["create-container", "-n", "fctr", name]));
    assert_ours_mount_inside(&s, "fctr", Some("fuse-overlayfs"));
    assert_podman_mount_inside(&s, name);

    // /dev/fuse not accessible (a root-only file over it, for this command only): one
    // line saying what to do, exit 1, no mount counted.
    let blocked = s.dir.path().join("no-fuse");
    std::fs::write(&blocked, "").unwrap();
    let out = s
        .command_with_binds(
            &[(blocked.as_path(), "/dev/fuse")],
            s.ours_bin().to_str().unwrap(),
            &["mount", "fctr"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot open /dev/fuse: permission denied: the user must be able to read and write /dev/fuse"),
        "{err}"
    );
    let mounts = std::fs::read_to_string(s.run_root().join("overlay-layers/mountpoints.json"))
        .unwrap_or_default();
    assert!(!mounts.contains("\"count\":1"), "{mounts}");
    assert_eq!(ok(&s.ours(&["check"])), "");
}

#[test]
fn inside_podman_unshare_no_second_namespace() {
    let Some(s) = session(true, &["podman", "skopeo"]) else {
        return;
    };
    pull_owned(&s, "oci", "localhost/in:v1");
    let bin = s.ours_bin().to_str().unwrap().to_string();
    let probe = "cat /proc/self/uid_map; readlink /proc/self/ns/user /proc/self/ns/mnt; echo $_CONTAINERS_USERNS_CONFIGURED $_CONTAINERS_ROOTLESS_UID $_CONTAINERS_ROOTLESS_GID $BUILDAH_ISOLATION";
    let podman_view = ok(&s.podman(&["unshare", "sh", "-c", probe]));
    let ours_in_podman = ok(&s.podman(&["unshare", &bin, "unshare", "sh", "-c", probe]));
    // The same namespaces: ours did not set up a second one.
    assert_eq!(ours_in_podman, podman_view);
    assert_eq!(
        squeeze(podman_view.split("user:").next().unwrap()),
        expected_uid_map(&s.user)
    );
    // Same results inside and outside.
    assert_eq!(
        ok(&s.podman(&["unshare", &bin, "images"])),
        ok(&s.ours(&["images"]))
    );
    let status_inside = stderr(&s.podman(&["unshare", &bin, "status"]));
    let status_outside = stderr(&s.ours(&["status"]));
    assert_eq!(status_inside, status_outside);
    assert!(status_inside.starts_with(&format!(
        "Root: {}\nRun Root: {}\n",
        s.graph_root().display(),
        s.run_root().display()
    )));
    // Our own namespace carries Go's environment and the same maps.
    let ours_view = ok(&ours_inside(&s, probe));
    assert_eq!(
        squeeze(ours_view.split("user:").next().unwrap()),
        expected_uid_map(&s.user)
    );
    assert!(
        ours_view.ends_with(&format!("done {} {} rootless\n", s.user.uid, s.user.gid)),
        "{ours_view}"
    );
    // A mount made in podman's namespace stays there while it lives.
    ok(&s.ours(&["create-container", "-n", "pctr", "localhost/in:v1"]));
    let path = first_line(&ok(&s.podman(&["unshare", &bin, "mount", "pctr"])));
    let listed = ok(&s.podman(&["unshare", "ls", "-A", &format!("{path}/opq")]));
    assert_eq!(listed, "new\n");
    ok(&s.podman(&["unshare", &bin, "unmount", "pctr"]));
}

#[test]
fn single_mapping_fallback_and_chown_errors() {
    let Some(s) = session(false, &[]) else {
        return;
    };
    // No ranges: Go's three warnings, then the user's own ID only.
    let out = ok_with_stderr(&s.ours(&["unshare", "cat", "/proc/self/uid_map"]));
    assert_eq!(squeeze(&out.0), format!("0 {} 1\n", s.user.uid));
    let name = s.user.name;
    for want in [
        format!(
            "Reading allowed ID mappings: reading subuid mappings for user \\\"{name}\\\" and subgid mappings for group \\\"{name}\\\": no subuid ranges found for user \\\"{name}\\\" in /etc/subuid"
        ),
        format!("Found no UID ranges set aside for user \\\"{name}\\\" in /etc/subuid."),
        format!("Found no GID ranges set aside for user \\\"{name}\\\" in /etc/subgid."),
    ] {
        assert!(out.1.contains(&want), "missing {want}:\n{}", out.1);
    }
    // A file owned by an ID the namespace lacks: Go's error, nothing stored.
    s.write_storage_conf("[storage]\ndriver = \"vfs\"\n");
    let tar = s.dir.path().join("one.tar");
    std::fs::write(
        &tar,
        TarBuilder::new()
            .dir("etc/", 0o755)
            .file_owned("etc/one", 0o644, 1, 1, b"1\n")
            .finish(),
    )
    .unwrap();
    let tar = tar.to_str().unwrap();
    let out = s.ours(&["import-layer", "-f", tar]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("potentially insufficient UIDs or GIDs available in user namespace (requested 1:1 for /etc/one): Check /etc/subuid and /etc/subgid if configured locally and run \"podman system migrate\": lchown /etc/one: invalid argument"), "{}", stderr(&out));
    assert_eq!(ok(&s.ours(&["layers"])), "");
    // ignore_chown_errors: stored, owned by the namespace's root (the user).
    s.write_storage_conf(
        "[storage]\ndriver = \"vfs\"\n[storage.options.vfs]\nignore_chown_errors = \"true\"\n",
    );
    let id = first_line(&ok(&s.ours(&["import-layer", "-f", tar])));
    let f = s.graph_root().join("vfs/dir").join(&id).join("etc/one");
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!((m.uid(), m.gid()), (s.user.uid, s.user.gid));
    let rec = json(&ok(&s.ours(&["layer", "--json", &id])));
    assert_eq!(rec[0]["uidset"], serde_json::json!([0, 1]));
    // Go's check ignores owners when chown errors are ignored.
    assert_eq!(ok(&s.ours(&["check"])), "");
}

fn ok_with_stderr(o: &Output) -> (String, String) {
    (ok(o), stderr(o))
}

#[test]
fn tools_without_privileges_fall_back_with_warnings() {
    let Some(s) = session(true, &[]) else {
        return;
    };
    // newuidmap/newgidmap that are not setuid: they fail, Go's warnings, single mapping.
    let tools = s.dir.path().join("tools");
    std::fs::create_dir(&tools).unwrap();
    for t in ["newuidmap", "newgidmap"] {
        let src = peer(t).expect(t);
        std::fs::copy(&src, tools.join(t)).unwrap();
        std::fs::set_permissions(
            tools.join(t),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    let out = s
        .command(s.ours_bin())
        .env("PATH", format!("{}:{USER_PATH}", tools.display()))
        .args(["unshare", "cat", "/proc/self/uid_map", "/proc/self/gid_map"])
        .output()
        .unwrap();
    let (maps, err) = ok_with_stderr(&out);
    assert_eq!(
        squeeze(&maps),
        format!("0 {} 1\n0 {} 1\n", s.user.uid, s.user.gid)
    );
    let t = tools.display();
    for want in [
        "level=warning msg=\"running newgidmap: exit status 1: newgidmap: ".to_string(),
        format!("{t}/newgidmap should be setgid or have filecaps setgid"),
        "Error running newuidmap: exit status 1: newuidmap: ".to_string(),
        format!("{t}/newuidmap should be setuid or have filecaps setuid"),
        "msg=\"Falling back to single mapping\"".to_string(),
    ] {
        assert!(err.contains(&want), "missing {want}:\n{err}");
    }

    // An unreadable /etc/subuid (for this command only): warned, single mapping.
    let locked = s.dir.path().join("subuid");
    std::fs::write(&locked, "").unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = s
        .command_with_binds(
            &[(locked.as_path(), "/etc/subuid")],
            s.ours_bin().to_str().unwrap(),
            &["unshare", "cat", "/proc/self/uid_map"],
        )
        .output()
        .unwrap();
    let (map, err) = ok_with_stderr(&out);
    assert_eq!(squeeze(&map), format!("0 {} 1\n", s.user.uid));
    assert!(
        err.contains("open /etc/subuid: permission denied")
            && err.contains("Found no UID ranges set aside for user"),
        "{err}"
    );
}

#[test]
fn set_up_errors_are_one_line_and_write_nothing() {
    let Some(s) = session(true, &[]) else {
        return;
    };
    let graph = s.graph_root();
    // newuidmap/newgidmap missing.
    let out = s
        .command(s.ours_bin())
        .env("PATH", "/nonexistent")
        .arg("images")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("level=error msg=\"finding newgidmap: exec: \\\"newgidmap\\\": executable file not found in $PATH (install newuidmap and newgidmap"),
        "{err}"
    );
    assert!(!graph.exists(), "nothing written");

    // XDG_RUNTIME_DIR names a directory that does not exist.
    let missing = s.dir.path().join("no-such-runtime-dir");
    let out = s
        .command(s.ours_bin())
        .env("XDG_RUNTIME_DIR", &missing)
        .arg("images")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        format!(
            "error initializing: XDG_RUNTIME_DIR: lstat {}: no such file or directory: create the directory (owned by user {}, mode 0700) or unset XDG_RUNTIME_DIR\n",
            missing.display(),
            s.user.uid
        )
    );
    assert!(!graph.exists(), "nothing written");

    // No XDG_RUNTIME_DIR, no /run/user/UID, and a TMPDIR where nothing can be created.
    if !Path::new(&format!("/run/user/{}", s.user.uid)).exists() {
        let out = s
            .command(s.ours_bin())
            .env_remove("XDG_RUNTIME_DIR")
            .env("TMPDIR", "/nonexistent")
            .arg("images")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stdout(&out).starts_with(&format!(
                "error initializing: cannot find a runtime directory for rootless user {}: XDG_RUNTIME_DIR is not set",
                s.user.uid
            )),
            "{}",
            stdout(&out)
        );
        assert!(!graph.exists(), "nothing written");
    }

    // Usage errors never re-execute (no warnings of the namespace set-up).
    let out = s
        .command(s.ours_bin())
        .env("PATH", "/nonexistent")
        .args(["layers", "extra"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("layers: too many arguments ([extra]).\n"));
    assert!(!stderr(&out).contains("newgidmap"), "{}", stderr(&out));
    // `--unshare` defaults to true for a rootless user; `--unshare=false` opts out.
    let help = s.ours(&["--help"]);
    assert!(stdout(&help).contains("Run in a user namespace (default true)"));
    let out = s.ours(&["--unshare=false", "unshare", "cat", "/proc/self/uid_map"]);
    assert_eq!(squeeze(&ok(&out)), "0 0 4294967295\n");
    assert!(
        !graph.exists() || graph.read_dir().is_ok(),
        "store readable by root"
    );
}

/// The PIDs whose parent is `pid` (from `/proc/*/stat`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|st| {
                st.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

#[test]
fn exit_status_and_signals_pass_through() {
    let Some(s) = session(true, &[]) else {
        return;
    };
    // The command's own status is not passed on (Go's `unshare`): exit 1 with the error.
    let out = s.ours(&["unshare", "sh", "-c", "exit 3"]);
    assert_eq!(
        (out.status.code(), stderr(&out)),
        (Some(1), "exit status 3\n".into())
    );
    ok(&s.ours(&["unshare", "true"]));
    // The copy in the namespace killed by a signal: 128 + the signal.
    let out = s.ours(&["unshare", "sh", "-c", "kill -TERM $PPID; sleep 1"]);
    assert_eq!(out.status.code(), Some(128 + 15), "{}", stderr(&out));
    // SIGTERM to the original process is forwarded to the copy.
    let mut child = s
        .command(s.ours_bin())
        .args(["unshare", "sleep", "2"])
        .spawn()
        .unwrap();
    let pid = child.id();
    // The copy must be inside its namespace (not still waiting for its maps) before the
    // signal, or it would die before it reads them; its child, sleep, shows it is.
    let mut waited = 0;
    let grandchild = loop {
        if let Some(g) = children_of(pid).into_iter().flat_map(children_of).next() {
            break g;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        waited += 1;
        assert!(waited < 500, "the command in the namespace did not start");
    };
    assert!(grandchild > 0);
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(child.wait().unwrap().code(), Some(128 + 15));
}

#[test]
fn library_user_enters_the_namespace_and_opens_the_store() {
    let Some(s) = session(true, &["skopeo"]) else {
        return;
    };
    let img = pull_owned(&s, "oci", "localhost/lib:v1");
    let bin = storage_tests::rootless::executable_copy(
        Path::new(env!("CARGO_BIN_EXE_rootless_store")),
        s.dir.path(),
    );
    let tar = s.dir.path().join("owned.tar");
    std::fs::write(&tar, &owned_layers()[0]).unwrap();
    let out = s.command(&bin).arg("import").arg(&tar).output().unwrap();
    let text = ok(&out);
    let lines: BTreeMap<&str, Vec<&str>> = text.lines().fold(BTreeMap::new(), |mut m, l| {
        if let Some((k, v)) = l.split_once(": ") {
            m.entry(k).or_insert_with(Vec::new).push(v);
        }
        m
    });
    assert_eq!(lines["namespace"], ["Inside"]);
    assert_eq!(
        lines["uid_map"],
        [expected_uid_map(&s.user)
            .trim_end()
            .replace('\n', ", ")
            .as_str()]
    );
    assert_eq!(
        lines["graph root"],
        [s.graph_root().display().to_string().as_str()]
    );
    assert_eq!(
        lines["image"],
        [format!("{} localhost/lib:v1", img.image_id()).as_str()]
    );
    let layer = lines["layer"][0];
    assert_host_owners(
        &s.graph_root().join("overlay").join(layer).join("diff"),
        &s.user,
    );
    // The CLI sees the library's layer.
    assert!(ok(&s.ours(&["layers"])).lines().any(|l| l == layer));

    // As root: no namespace, the store the configuration names.
    let conf = s.dir.path().join("root.conf");
    let root_store = s.dir.path().join("root-store");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/g\"\nrunroot = \"{0}/r\"\n",
            root_store.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(&bin)
        .env("CONTAINERS_STORAGE_CONF", &conf)
        .env_remove("_CONTAINERS_ROOTLESS_UID")
        .env_remove("_CONTAINERS_USERNS_CONFIGURED")
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(text.starts_with("namespace: Root\n"), "{text}");
    assert!(text.contains(&format!("graph root: {}/g\n", root_store.display())));
}

/// Keeps `PathBuf` in use for the helpers above on every configuration.
#[allow(dead_code)]
fn _unused(_: PathBuf) {}
