//! Automatic user namespaces through the `Store` (Go's `AutoUserNs`), next to the Go
//! programs sharing the store: Debian's Go `containers-storage` 1.43 (containers with
//! explicit maps) and podman (`--userns=auto`, Go's allocator).
//!
//! Every test runs again in a child process inside a private mount namespace where
//! `/etc/subuid` and `/etc/subgid` are bind mounts of a file the test writes (the allocator
//! reads those fixed paths, in Go too), so the host's files are never touched. Needs root and
//! `unshare`; fails without them when CI=true, skipped loudly otherwise.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use std::process::{Command, Stdio};

use containers_storage::{
    AutoUserNsOptions, ContainerOptions, CreateLayerOptions, NewImage, Store,
};
use storage_config::StoreOptions;
use storage_testsupport::{go_cli, is_root, require};
use storage_types::IdMap;

/// Set in the child process: the body runs there.
const CHILD: &str = "CS_AUTO_USERNS_CHILD";
/// The subordinate ranges every test uses.
const SUBIDS: &str = "# test ranges\ncs-autons:200000:20000\ncs-autons:300000:50000\n";
const USER: &str = "cs-autons";

fn m(c: u32, h: u32, s: u32) -> IdMap {
    IdMap::new(c, h, s)
}

/// In the parent: re-runs test `name` in a private mount namespace with `/etc/subuid` and
/// `/etc/subgid` replaced by [`SUBIDS`] and returns `false`. In the child: returns `true`.
fn in_child(name: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    if !require(is_root(), "root (mount namespace, bind mounts)")
        || !require(
            Path::new("/usr/bin/unshare").exists(),
            "unshare (util-linux)",
        )
    {
        return false;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = dir.path().join("subid");
    std::fs::write(&ids, SUBIDS).expect("write subid");
    let script = r#"mount --bind "$1" /etc/subuid && mount --bind "$1" /etc/subgid && exec "$2" --exact "$3" --nocapture --test-threads=1"#;
    let out = Command::new("/usr/bin/unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&ids)
        .arg(std::env::current_exe().expect("test binary"))
        .arg(name)
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child test {name} failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "child did not run {name}:\n{text}"
    );
    false
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn options(&self, user: &str, max: u32) -> StoreOptions {
        StoreOptions {
            driver: "vfs".into(),
            ..self.options_on("vfs", user, max)
        }
    }

    fn options_on(&self, driver: &str, user: &str, max: u32) -> StoreOptions {
        StoreOptions {
            graph_root: self.dir.path().join("root"),
            run_root: self.dir.path().join("run"),
            driver: driver.into(),
            root_auto_userns_user: user.into(),
            auto_userns_max_size: max,
            ..StoreOptions::default()
        }
    }

    fn open(&self, user: &str, max: u32) -> Store {
        Store::open(&self.options(user, max)).expect("open")
    }

    fn go(&self, args: &[&str]) -> String {
        let go = go_cli().expect("Go containers-storage");
        let o_stdout = storage_testsupport::stdout_of(
            Command::new(go)
                .arg("--graph")
                .arg(self.dir.path().join("root"))
                .arg("--run")
                .arg(self.dir.path().join("run"))
                .args(["--storage-driver", "vfs"])
                .args(args)
                .env_remove("CONTAINERS_STORAGE_CONF")
                .env_remove("STORAGE_OPTS")
                .env_remove("STORAGE_DRIVER")
                .stdin(Stdio::null()),
        );
        String::from_utf8_lossy(&o_stdout).into_owned()
    }
}

/// A base layer with a file owned by 1500 and an `/etc/passwd` (user 2000) and
/// `/etc/group` (group 3000; `nobody`/`nogroup` entries do not count).
fn image_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, id: u64, data: &[u8], dir: bool| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(0o755);
        h.set_uid(id);
        h.set_gid(id);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).expect("entry");
    };
    add("etc/", 0, b"", true);
    add(
        "etc/passwd",
        0,
        b"root:x:0:0::/root:/bin/sh\napp:x:2000:2000::/app:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
        false,
    );
    add(
        "etc/group",
        0,
        b"root:x:0:\nstaff:x:3000:app\nnogroup:x:65534:\n",
        false,
    );
    add("home/", 0, b"", true);
    add("home/f", 1500, b"x", false);
    b.into_inner().expect("tar")
}

fn image(store: &Store) -> String {
    let (layer, _) = store
        .create_layer(
            &CreateLayerOptions::default(),
            Some(Box::new(Cursor::new(image_tar()))),
        )
        .expect("layer");
    store
        .create_image(NewImage {
            layer: layer.id,
            names: vec!["img".into()],
            ..NewImage::default()
        })
        .expect("image")
        .id
}

fn auto(
    store: &Store,
    image: &str,
    opts: AutoUserNsOptions,
) -> storage_types::Result<storage_types::Container> {
    store.create_container(&ContainerOptions {
        image: image.into(),
        auto_userns: true,
        auto_userns_opts: opts,
        ..ContainerOptions::default()
    })
}

fn sized(size: u32) -> AutoUserNsOptions {
    AutoUserNsOptions {
        size,
        ..AutoUserNsOptions::default()
    }
}

#[test]
fn allocates_free_ranges_of_the_configured_user() {
    if !in_child("allocates_free_ranges_of_the_configured_user") {
        return;
    }
    let s = Scratch::new();
    let store = s.open(USER, 0);
    let img = image(&store);
    let layers = store.layers().expect("layers").len();

    // The size is estimated from the image: its layers' uidset (1500) and its /etc/passwd
    // (2000) and /etc/group (3000), each plus one; at least auto-userns-min-size (1024).
    let c1 = auto(&store, &img, AutoUserNsOptions::default()).expect("auto");
    assert_eq!(c1.uidmap, vec![m(0, 200_000, 3001)]);
    assert_eq!(c1.gidmap, vec![m(0, 200_000, 3001)]);
    // vfs cannot shift: the container layer sits on a copy of the image's top layer with
    // the container's maps (recorded in `mapped-layers`); the temporary layer of the
    // estimate is gone.
    assert_eq!(store.layers().expect("layers").len(), layers + 2);
    let mapped = store.image(&img).expect("image").mapped_layers;
    assert_eq!(mapped.len(), 1, "{mapped:?}");
    assert_eq!(store.layer(&mapped[0]).expect("copy").0.uidmap, c1.uidmap);
    // The container's layer is owned by the namespace.
    let l1 = store.layer(&c1.layer).expect("layer").0;
    assert_eq!(l1.uidmap, c1.uidmap);
    let p = store
        .mount(&c1.id, &storage_drivers::MountOpts::default())
        .expect("mount");
    let md = std::fs::metadata(p.join("home/f")).expect("stat");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), 201_500);
    store.unmount(&c1.id, false).expect("unmount");

    // Explicit sizes; the next free range follows.
    let c2 = auto(&store, &img, sized(100)).expect("auto 100");
    assert_eq!(c2.uidmap, vec![m(0, 203_001, 100)]);
    // Without an image: the minimum size.
    let c3 = auto(&store, "", AutoUserNsOptions::default()).expect("no image");
    assert_eq!(c3.uidmap, vec![m(0, 203_101, 1024)]);
    let c4 = auto(
        &store,
        &img,
        AutoUserNsOptions {
            initial_size: 5000,
            ..AutoUserNsOptions::default()
        },
    )
    .expect("initial size");
    assert_eq!(c4.uidmap, vec![m(0, 204_125, 5000)]);
    let c5 = auto(&store, &img, sized(10_000)).expect("sized");
    assert_eq!(c5.uidmap, vec![m(0, 209_125, 10_000)]);
    // A size that does not fit the rest of the first range continues in the next one.
    let c6 = auto(&store, &img, sized(1000)).expect("straddle");
    assert_eq!(c6.uidmap, vec![m(0, 219_125, 875), m(875, 300_000, 125)]);

    // Additional mappings: their container IDs leave the automatic range, their host IDs
    // are not handed out, and they come last.
    let c7 = auto(
        &store,
        &img,
        AutoUserNsOptions {
            size: 10,
            additional_uid_mappings: vec![m(0, 1000, 1)],
            additional_gid_mappings: vec![m(5, 300_125, 1)],
            ..AutoUserNsOptions::default()
        },
    )
    .expect("additional");
    assert_eq!(c7.uidmap, vec![m(1, 300_125, 9), m(0, 1000, 1)]);
    assert_eq!(
        c7.gidmap,
        vec![m(0, 300_126, 5), m(6, 300_131, 4), m(5, 300_125, 1)]
    );

    // A freed range is handed out again (first fit).
    store.delete_container(&c2.id).expect("delete");
    let again = auto(&store, &img, sized(100)).expect("reuse");
    assert_eq!(again.uidmap, vec![m(0, 203_001, 100)]);

    // passwd/group files given by the caller replace the image's.
    let dir = tempfile::tempdir().expect("tempdir");
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "u:x:7000:7000::/:/bin/sh\n").expect("write");
    let c8 = auto(
        &store,
        &img,
        AutoUserNsOptions {
            passwd_file: Some(passwd),
            group_file: Some(dir.path().join("none")),
            ..AutoUserNsOptions::default()
        },
    )
    .expect("passwd file");
    assert_eq!(c8.uidmap.iter().map(|x| x.size).sum::<u32>(), 7001);

    // Too big for auto-userns-max-size.
    let small = s.open(USER, 2000);
    let e = auto(&small, &img, AutoUserNsOptions::default()).expect_err("max size");
    assert_eq!(
        e.to_string(),
        "the container needs a user namespace with size 3001 that is bigger than the maximum value allowed with userns=auto 2000"
    );
    // Not enough IDs left, or none for the user.
    let e = auto(&store, &img, sized(60_000)).expect_err("too many");
    assert_eq!(e.to_string(), "could not find enough available IDs");
    let nobody = s.open("no-such-user", 0);
    let e = auto(&nobody, &img, sized(1)).expect_err("no ranges");
    assert_eq!(e.to_string(), "could not find enough available IDs");
}

/// On overlay with idmapped mounts the allocated maps go to the container record and are
/// applied at mount time: no mapped copy of the image's top layer, a map-less container
/// layer, owners shifted in the mount.
#[test]
fn overlay_shifts_the_allocated_maps() {
    if !in_child("overlay_shifts_the_allocated_maps") {
        return;
    }
    let s = Scratch::new();
    let store = Store::open(&s.options_on("overlay", USER, 0)).expect("open overlay");
    let img = image(&store);
    let top = store.image(&img).expect("image").layer;
    let shifts = store
        .status()
        .expect("status")
        .iter()
        .any(|(k, v)| k == "Supports shifting" && v == "true");
    if !require(
        shifts,
        "overlay with idmapped mounts (root, kernel support)",
    ) {
        return;
    }
    let c = auto(&store, &img, AutoUserNsOptions::default()).expect("auto");
    assert_eq!(c.uidmap, vec![m(0, 200_000, 3001)]);
    let l = store.layer(&c.layer).expect("layer").0;
    assert_eq!(l.parent, top, "a plain child of the top layer");
    assert!(l.uidmap.is_empty() && l.gidmap.is_empty(), "{l:?}");
    assert!(store.image(&img).expect("image").mapped_layers.is_empty());
    let p = store
        .mount(&c.id, &storage_drivers::MountOpts::default())
        .expect("mount");
    let md = std::fs::metadata(p.join("home/f")).expect("stat");
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&md),
            std::os::unix::fs::MetadataExt::gid(&md)
        ),
        (201_500, 201_500)
    );
    store.unmount(&c.id, false).expect("unmount");
    // The next allocation skips the range, as on vfs.
    let c2 = auto(&store, &img, sized(10)).expect("auto");
    assert_eq!(c2.uidmap, vec![m(0, 203_001, 10)]);
    store.shutdown(true).expect("shutdown");
}

/// Containers with maps made by Go 1.43 (explicit `--uidmap`) and by our CLI are "used"
/// for the allocator, and Go reads the maps we allocated.
#[test]
fn ranges_of_go_containers_are_used() {
    if !in_child("ranges_of_go_containers_are_used") {
        return;
    }
    if !require(go_cli().is_some(), "Debian's Go containers-storage") {
        return;
    }
    let s = Scratch::new();
    let store = s.open(USER, 0);
    let img = image(&store);
    drop(store);
    s.go(&[
        "create-container",
        "--uidmap",
        "0:200000:1000",
        "--gidmap",
        "0:200500:1000",
        "img",
    ]);
    let store = s.open(USER, 0);
    let c = auto(&store, &img, sized(600)).expect("auto");
    assert_eq!(c.uidmap, vec![m(0, 201_000, 600)]);
    assert_eq!(c.gidmap, vec![m(0, 200_000, 500), m(500, 201_500, 100)]);
    let g: serde_json::Value =
        serde_json::from_str(&s.go(&["container", "--json", &c.id])).expect("JSON");
    assert_eq!(
        g[0]["uidmap"],
        serde_json::json!([{"container_id": 0, "host_id": 201000, "size": 600}])
    );
    assert_eq!(g[0]["gidmap"].as_array().map(Vec::len), Some(2));
}

/// podman's allocator (Go's `getAutoUserNS`) and ours see each other's ranges as used.
#[test]
fn podman_and_we_share_the_ranges() {
    if !in_child("podman_and_we_share_the_ranges") {
        return;
    }
    let podman = PathBuf::from("/usr/bin/podman");
    if !require(podman.exists(), "podman") {
        return;
    }
    let s = Scratch::new();
    let conf = s.dir.path().join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n[storage.options]\nroot-auto-userns-user = \"{USER}\"\n",
            s.dir.path().join("root").display(),
            s.dir.path().join("run").display()
        ),
    )
    .expect("storage.conf");
    let rootfs = s.dir.path().join("rootfs.tar");
    std::fs::write(&rootfs, image_tar()).expect("tar");
    let pod = |args: &[&str]| -> String {
        let o_stdout = storage_testsupport::stdout_of(
            Command::new(&podman)
                .arg("--tmpdir")
                .arg(s.dir.path().join("podman-tmp"))
                .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"])
                .args(args)
                .env("CONTAINERS_STORAGE_CONF", &conf)
                .stdin(Stdio::null()),
        );
        String::from_utf8_lossy(&o_stdout).trim().to_string()
    };
    pod(&[
        "import",
        "-q",
        &rootfs.display().to_string(),
        "localhost/auto",
    ]);
    // Explicit sizes on both sides: podman's estimate (containers/storage 1.43) differs from
    // 1.60's (it reads the image's /etc/group relative to its working directory and adds no
    // one), which is beside the point here.
    let p1 = pod(&[
        "create",
        "-q",
        "--userns=auto:size=500",
        "localhost/auto",
        "/bin/true",
    ]);
    let store = s.open(USER, 0);
    let ours = auto(&store, "localhost/auto:latest", sized(700)).expect("auto");
    assert_eq!(
        ours.uidmap,
        vec![m(0, 200_500, 700)],
        "after podman's range"
    );
    let p2 = pod(&[
        "create",
        "-q",
        "--userns=auto:size=300",
        "localhost/auto",
        "/bin/true",
    ]);
    let maps = |id: &str| store.container(id).expect("container").uidmap;
    assert_eq!(maps(&p1), vec![m(0, 200_000, 500)]);
    assert_eq!(
        maps(&p2),
        vec![m(0, 201_200, 300)],
        "podman skips our range"
    );
    let _ = store.shutdown(true);
    let _ = pod(&["rm", "-a", "-f"]);
}
