//! ID-mapped layers and containers as Go 1.60 makes them, through our CLI, on every driver:
//! vfs, btrfs and overlay without shifting (`_CONTAINERS_OVERLAY_DISABLE_IDMAP=yes`) re-own
//! content into mapped copies; overlay with idmapped mounts (root, this kernel) and
//! fuse-overlayfs (contiguous maps) keep layers map-less and shift at mount time.
//!
//! Debian's Go 1.43 shares each store: it lists, mounts and diffs what we wrote, and where
//! both versions agree it creates containers that reuse our mapped copies (and we reuse its).
//! Where 1.43 and 1.60 differ the test follows 1.60 and says so in a comment.

use std::path::{Path, PathBuf};

use std::process::{Command, Output, Stdio};
use storage_testsupport::owner;

use serde_json::Value;
use storage_tests::fs::DriverStore;
use storage_tests::peers::first_line;
use storage_tests::tars::TarBuilder;
use storage_tests::{go_cs, ours, require};
use storage_testsupport::per_driver;

per_driver!(mapped_layers_and_containers: vfs, overlay, btrfs, fuse_overlayfs);
per_driver!(parent_owners: vfs, overlay, btrfs);

/// Overlay without idmapped mounts behaves like vfs (mapped copies), the 1.60 switch.
#[test]
fn mapped_layers_and_containers_overlay_without_idmap() {
    let Some(cs) = DriverStore::new("overlay") else {
        return;
    };
    let t = T::new(&cs, &[("_CONTAINERS_OVERLAY_DISABLE_IDMAP", "yes")]);
    assert_eq!(t.mode, Mode::Copy, "the variable turns shifting off");
    scenario(&t);
}

/// Containers from an image in a read-only additional image store whose top layer has
/// maps: no copy can be added to the image, so the container layer itself is re-owned.
#[test]
fn containers_from_a_read_only_image_store() {
    let Some(ro) = DriverStore::new("vfs") else {
        return;
    };
    let Some(main) = DriverStore::new("vfs") else {
        return;
    };
    if !require(storage_tests::is_root(), "root (chown to mapped IDs)") {
        return;
    }
    let r = T::new(&ro, &[]);
    let (b, u) = r.base_and_mapped();
    r.ours(&["create-image", "-n", "img", &u]);
    let records = |cs: &DriverStore| {
        ["vfs-images/images.json", "vfs-layers/layers.json"]
            .map(|f| std::fs::read(cs.graph.join(f)).unwrap_or_default())
    };
    let before = records(&ro);
    main.set_storage_opts(&[&format!("vfs.imagestore={}", ro.graph.display())]);
    let m = T::new(&main, &[]);

    // 1.58+ MountImage needs a map-less copy it cannot add to a read-only image.
    let (code, _, err) = m.exec(false, &["mount", "-r", "img"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot create an image with canonical UID/GID mappings in a read-only store"),
        "{err}"
    );

    // Without maps: the container layer inherits the top layer's maps (no map-less copy
    // can be added to a read-only image); the record has none.
    let c0 = first_line(&m.ours(&["create-container", "img"]));
    let l0 = m.layer_of(&c0);
    assert_eq!(l0["parent"], u.as_str());
    assert_eq!(l0["uidmap"], map_json(100_000));
    let rec = json(&m.ours(&["container", "--json", &c0]))[0].clone();
    assert!(rec.get("uidmap").is_none());
    m.with_mount(false, &c0, |p| {
        assert_files(p, 100_000, 200_000, "container without maps")
    });
    // With maps: the container layer gets them (no copy anywhere).
    let c3 = first_line(&m.ours(&map_args("create-container", 300_000, 300_000, "img")));
    let l3 = m.layer_of(&c3);
    assert_eq!(l3["parent"], u.as_str());
    assert_eq!(l3["uidmap"], map_json(300_000));
    m.with_mount(false, &c3, |p| {
        assert_files(p, 300_000, 300_000, "our mount of the mapped container")
    });
    if require(go_cs().is_some(), "Debian's Go containers-storage") {
        m.with_mount(true, &c3, |p| {
            assert_files(p, 300_000, 300_000, "Go's mount of our mapped container")
        });
    }
    assert_eq!(records(&ro), before, "the read-only store was not written");
    assert_eq!(m.mapped_layers(false, "img"), Vec::<String>::new());
    let _ = b;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The driver cannot shift: layers and copies are re-owned on disk.
    Copy,
    /// The driver shifts at mount time: layers stay map-less.
    Shift,
}

/// One store and the environment every command of ours gets.
struct T<'a> {
    cs: &'a DriverStore,
    env: Vec<(&'static str, &'static str)>,
    mode: Mode,
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn map_json(host: u32) -> Value {
    serde_json::json!([{"container_id": 0, "host_id": host, "size": 6}])
}

fn map_args(cmd: &str, uid: u32, gid: u32, arg: &str) -> Vec<String> {
    vec![
        cmd.to_string(),
        "--uidmap".into(),
        format!("0:{uid}:6"),
        "--gidmap".into(),
        format!("0:{gid}:6"),
        arg.to_string(),
    ]
}

/// The base layer's files seen with container root at `uid`/`gid` on the host: `fN` owned
/// `N:N` and `d` `3:4` in container terms.
#[track_caller]
fn assert_files(root: &Path, uid: u32, gid: u32, what: &str) {
    for n in 1..=5u32 {
        assert_eq!(
            owner(&root.join(format!("f{n}"))),
            (uid + n, gid + n),
            "{what}: f{n}"
        );
    }
    assert_eq!(owner(&root.join("d")), (uid + 3, gid + 4), "{what}: d");
    assert_eq!(owner(&root.join("etc")), (uid, gid), "{what}: etc");
}

/// `./` 0:0, `etc/` 0:0, `d/` 3:4, `fN` owned `N:N` (N=1..5), plus `extra` entries.
fn base_tar(extra: &[(&str, u64)]) -> Vec<u8> {
    let mut t = TarBuilder::new()
        .dir("./", 0o755)
        .dir("etc/", 0o755)
        .dir_owned("d/", 0o755, 3, 4);
    for n in 1..=5u64 {
        t = t.file_owned(&format!("f{n}"), 0o644, n, n, format!("{n}\n").as_bytes());
    }
    for (name, id) in extra {
        t = t.file_owned(name, 0o644, *id, *id, b"x\n");
    }
    t.finish()
}

/// Name, uid and gid of every entry of a tar.
fn tar_entries(data: &[u8]) -> Vec<(String, u64, u64)> {
    let mut a = tar::Archive::new(data);
    let mut v: Vec<(String, u64, u64)> = a
        .entries()
        .expect("tar")
        .map(|e| {
            let e = e.expect("entry");
            let h = e.header();
            (
                e.path().expect("path").display().to_string(),
                h.uid().expect("uid"),
                h.gid().expect("gid"),
            )
        })
        .collect();
    v.sort();
    v
}

impl<'a> T<'a> {
    fn new(cs: &'a DriverStore, env: &[(&'static str, &'static str)]) -> T<'a> {
        let mut t = T {
            cs,
            env: env.to_vec(),
            mode: Mode::Copy,
        };
        // Whether this driver shifts here (kernel idmapped mounts, a mount program) is the
        // driver's own report; what each mode must produce is asserted below.
        // `status` prints on stderr, as Go's does.
        let (code, out, status) = t.exec(false, &["status"]);
        assert_eq!(code, 0, "status: {out}{status}");
        if status.contains("Supports shifting: true") {
            t.mode = Mode::Shift;
        }
        t
    }

    fn exec<S: AsRef<std::ffi::OsStr>>(&self, go: bool, args: &[S]) -> (i32, String, String) {
        let bin: PathBuf = if go {
            go_cs().expect("Go containers-storage")
        } else {
            ours().to_path_buf()
        };
        let mut c = Command::new(bin);
        c.args(self.cs.global_args())
            .args(args)
            .env_remove("STORAGE_OPTS")
            .env_remove("STORAGE_DRIVER")
            .env_remove("CONTAINERS_STORAGE_CONF")
            .stdin(Stdio::null());
        if !go {
            c.envs(self.env.iter().copied());
        }
        let o: Output = c.output().expect("run");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    #[track_caller]
    fn run<S: AsRef<std::ffi::OsStr>>(&self, go: bool, args: &[S]) -> String {
        let (code, out, err) = self.exec(go, args);
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            code,
            0,
            "{} {}: {shown:?}\n{out}{err}",
            self.cs.driver,
            if go { "Go" } else { "ours" }
        );
        out
    }

    #[track_caller]
    fn ours<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        self.run(false, args)
    }

    fn layer(&self, id: &str) -> Value {
        json(&self.ours(&["layer", "--json", id]))[0].clone()
    }

    fn layer_of(&self, container: &str) -> Value {
        let c = json(&self.ours(&["container", "--json", container]));
        self.layer(c[0]["layer"].as_str().expect("layer"))
    }

    fn mapped_layers(&self, go: bool, image: &str) -> Vec<String> {
        let v = json(&self.run(go, &["image", "--json", image]));
        v[0]["mapped-layers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn layer_count(&self) -> usize {
        json(&self.ours(&["layers", "--json"]))
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Mounts `what` with one tool (`-r` for images), runs `f` on the mount point, unmounts.
    fn with_mount<R>(&self, go: bool, what: &str, f: impl FnOnce(&Path) -> R) -> R {
        let image = what == "img";
        let args: Vec<&str> = if image {
            vec!["mount", "-r", what]
        } else {
            vec!["mount", what]
        };
        let mp = PathBuf::from(first_line(&self.run(go, &args)));
        let r = f(&mp);
        self.run(go, &["unmount", what]);
        r
    }

    fn import(&self, tar: &[u8], name: &str, extra: &[&str]) -> (i32, String, String) {
        let f = self.cs.dir.path().join(format!("{name}.tar"));
        std::fs::write(&f, tar).expect("write tar");
        let mut args: Vec<String> = vec!["import-layer".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["-f".into(), f.display().to_string()]);
        self.exec(false, &args)
    }

    /// The base layer `B` and `U` = `create-layer --uidmap 0:100000:6 --gidmap 0:200000:6 B`.
    fn base_and_mapped(&self) -> (String, String) {
        let (code, out, err) = self.import(&base_tar(&[]), "base", &[]);
        assert_eq!(code, 0, "{out}{err}");
        let b = first_line(&out);
        let u = first_line(&self.ours(&map_args("create-layer", 100_000, 200_000, &b)));
        (b, u)
    }
}

fn mapped_layers_and_containers(driver: &str) {
    let Some(cs) = DriverStore::new(driver) else {
        return;
    };
    if !require(storage_tests::is_root(), "root (chown to mapped IDs)") {
        return;
    }
    let t = T::new(&cs, &[]);
    let expected = match driver {
        // Kernel idmapped mounts for root on this kernel; fuse-overlayfs shifts contiguous
        // maps itself.
        "overlay" | "fuse-overlayfs" => Mode::Shift,
        _ => Mode::Copy,
    };
    assert_eq!(t.mode, expected, "{driver}: shifting");
    scenario(&t);
}

/// The go160 checklist on one store.
fn scenario(t: &T<'_>) {
    let driver = t.cs.driver.as_str();
    let fuse = t.cs.uses_mount_program();
    let go = require(go_cs().is_some(), "Debian's Go containers-storage");
    let vfs_dir = t.cs.graph.join("vfs/dir");
    let (b, u) = t.base_and_mapped();
    let base = t.layer(&b);
    assert_eq!(base["uidset"], serde_json::json!([0, 1, 2, 3, 4, 5]));
    assert!(base.get("uidmap").is_none());

    // Checklist 1 and 8: the maps are recorded (content re-owned) unless the driver shifts.
    let ul = t.layer(&u);
    assert_eq!(ul["parent"], b.as_str());
    assert!(
        ul.get("uidset").is_none(),
        "a layer without diff has no uidset"
    );
    match t.mode {
        Mode::Copy => {
            assert_eq!(ul["uidmap"], map_json(100_000));
            assert_eq!(ul["gidmap"], map_json(200_000));
            t.with_mount(false, &u, |p| {
                assert_files(p, 100_000, 200_000, "the mapped layer");
                // 1.47+: vfs re-owns the layer's root dir too (1.43 left 0:0); btrfs'
                // naive re-owning skips it; overlay's new upper belongs to the new root.
                let root = if driver == "btrfs" {
                    (0, 0)
                } else {
                    (100_000, 200_000)
                };
                assert_eq!(owner(p), root, "root dir of the mapped layer");
            });
        }
        Mode::Shift => {
            assert!(ul.get("uidmap").is_none() && ul.get("gidmap").is_none());
            t.with_mount(false, &u, |p| assert_files(p, 0, 0, "a shifted layer"));
        }
    }
    // Checklist 5: 1.55+ vfs never re-owns <G>/vfs/dir (1.43 chowned it to 100000:200000).
    if driver == "vfs" {
        assert_eq!(owner(&vfs_dir), (0, 0), "<G>/vfs/dir");
    }
    if go {
        // Go lists our layer with the same record and sees the same (no) changes.
        let g = json(&t.run(true, &["layer", "--json", &u]))[0].clone();
        assert_eq!(
            g["uidmap"],
            ul.get("uidmap").cloned().unwrap_or(Value::Null)
        );
        assert_eq!(t.run(true, &["changes", &u]), t.ours(&["changes", &u]));
        t.with_mount(true, &u, |p| match t.mode {
            Mode::Copy => assert_files(p, 100_000, 200_000, "Go's mount of our layer"),
            Mode::Shift => assert_files(p, 0, 0, "Go's mount of our layer"),
        });
    }

    // Checklist 4: only --uidmap on an unmapped parent keeps gids unchanged.
    let u1 = first_line(&t.ours(&["create-layer", "--uidmap", "0:100000:6", &b]));
    let l1 = t.layer(&u1);
    assert!(l1.get("gidmap").is_none());
    match t.mode {
        Mode::Copy => {
            assert_eq!(l1["uidmap"], map_json(100_000));
            t.with_mount(false, &u1, |p| {
                assert_eq!(owner(&p.join("f2")), (100_002, 2));
                assert_eq!(owner(&p.join("d")), (100_003, 4));
            });
        }
        Mode::Shift => assert!(l1.get("uidmap").is_none()),
    }

    // Checklist 2: an owner the new maps cannot represent becomes the overflow ID (no error).
    let (code, out, err) = t.import(&base_tar(&[("f7", 7)]), "base7", &[]);
    assert_eq!(code, 0, "{out}{err}");
    let b7 = first_line(&out);
    let u7 = first_line(&t.ours(&map_args("create-layer", 100_000, 200_000, &b7)));
    t.with_mount(false, &u7, |p| match t.mode {
        Mode::Copy => {
            assert_eq!(owner(&p.join("f7")), (65534, 65534));
            assert_eq!(owner(&p.join("f5")), (100_005, 200_005));
        }
        Mode::Shift => assert_eq!(owner(&p.join("f7")), (7, 7)),
    });
    // Checklist 3: applying a tar whose owner the layer's maps cannot represent fails.
    let tar7 = base_tar(&[("f7", 7)]);
    let (code, out, err) = t.import(&tar7, "bad", &["--uidmap", "0:100000:6"]);
    match t.mode {
        Mode::Copy => {
            assert_eq!(code, 1, "{out}{err}");
            assert!(
                err.contains("container ID 7 cannot be mapped to a host ID"),
                "{err}"
            );
        }
        // The layer gets no maps, so nothing needs mapping.
        Mode::Shift => assert_eq!(code, 0, "{out}{err}"),
    }

    // An image on the mapped layer.
    t.ours(&["create-image", "-n", "img", &u]);
    let layers = t.layer_count();
    // Checklist 6: `mount -r IMAGE` (1.58+ MountImage) mounts a map-less copy of the top
    // layer, made once. (1.43 on vfs: "vfs driver does not support mount options"; on
    // overlay it mounted the mapped top layer itself.)
    t.with_mount(false, "img", |p| {
        assert_files(p, 0, 0, "mount -r of the image");
        assert_eq!(owner(p), (0, 0), "root dir of the image mount");
    });
    let mapped = t.mapped_layers(false, "img");
    let c0 = match t.mode {
        Mode::Copy => {
            assert_eq!(mapped.len(), 1, "one canonical copy");
            let c0 = t.layer(&mapped[0]);
            assert_eq!(c0["parent"], b.as_str(), "same parent as the top layer");
            assert!(c0.get("uidmap").is_none() && c0.get("gidmap").is_none());
            assert!(c0.get("names").is_none());
            assert_eq!(t.layer_count(), layers + 1);
            Some(mapped[0].clone())
        }
        Mode::Shift => {
            assert!(mapped.is_empty(), "a map-less top layer fits: {mapped:?}");
            None
        }
    };
    t.with_mount(false, "img", |p| assert_files(p, 0, 0, "second mount -r"));
    assert_eq!(t.mapped_layers(false, "img"), mapped, "reused");
    let layers = t.layer_count();

    // Checklist 6: a container without maps sits on the canonical copy too.
    let ctr0 = first_line(&t.ours(&["create-container", "img"]));
    let l0 = t.layer_of(&ctr0);
    assert_eq!(l0["parent"], c0.as_deref().unwrap_or(&u));
    assert!(l0.get("uidmap").is_none());
    assert_eq!(t.layer_count(), layers + 1, "only the container layer");
    t.with_mount(false, &ctr0, |p| {
        assert_files(p, 0, 0, "container without maps")
    });

    // Checklist 7: each new map pair adds one copy, reused by the next container.
    let ctr3 = first_line(&t.ours(&map_args("create-container", 300_000, 300_000, "img")));
    let c3rec = json(&t.ours(&["container", "--json", &ctr3]))[0].clone();
    assert_eq!(
        c3rec["uidmap"],
        map_json(300_000),
        "the record keeps the maps"
    );
    let l3 = t.layer_of(&ctr3);
    let after = t.mapped_layers(false, "img");
    match t.mode {
        Mode::Copy => {
            assert_eq!(after.len(), mapped.len() + 1);
            let c3 = t.layer(&after[after.len() - 1]);
            assert_eq!(c3["parent"], b.as_str());
            assert_eq!(c3["uidmap"], map_json(300_000));
            assert_eq!(l3["parent"], c3["id"]);
            assert_eq!(l3["uidmap"], map_json(300_000));
        }
        Mode::Shift => {
            assert_eq!(after, mapped, "no copies when the driver shifts");
            assert_eq!(l3["parent"], u.as_str());
            assert!(l3.get("uidmap").is_none(), "the layer is map-less");
        }
    }
    t.with_mount(false, &ctr3, |p| {
        assert_files(p, 300_000, 300_000, "our mount of the mapped container")
    });
    let layers = t.layer_count();
    let again = first_line(&t.ours(&map_args("create-container", 300_000, 300_000, "img")));
    assert_eq!(t.mapped_layers(false, "img"), after, "the copy is reused");
    assert_eq!(t.layer_count(), layers + 1);
    // The top layer's own maps need no copy.
    let own = first_line(&t.ours(&map_args("create-container", 100_000, 200_000, "img")));
    assert_eq!(t.mapped_layers(false, "img"), after);
    let lown = t.layer_of(&own);
    match t.mode {
        Mode::Copy => assert_eq!(lown["parent"], u.as_str()),
        Mode::Shift => assert_eq!(lown["parent"], u.as_str()),
    }
    t.with_mount(false, &own, |p| {
        assert_files(p, 100_000, 200_000, "container with the top layer's maps")
    });

    // 1.59+: only a mount program needs contiguous maps (1.43 refused to shift any
    // non-contiguous map and always made a copy).
    let split = [
        "--uidmap",
        "0:500000:3:3:600000:3",
        "--gidmap",
        "0:500000:3:3:600000:3",
    ];
    let mut args = vec!["create-container"];
    args.extend(split);
    args.push("img");
    let before = t.mapped_layers(false, "img");
    let ctrs = first_line(&t.ours(&args));
    let copies = t.mapped_layers(false, "img").len() - before.len();
    let shifts = t.mode == Mode::Shift && !fuse;
    assert_eq!(copies, usize::from(!shifts), "copies for a split map");
    t.with_mount(false, &ctrs, |p| {
        assert_eq!(owner(&p.join("f2")), (500_002, 500_002));
        assert_eq!(owner(&p.join("f4")), (600_001, 600_001));
    });

    if !go {
        return;
    }
    // Go 1.43 reads everything we wrote.
    for what in ["layers", "images", "containers"] {
        json(&t.run(true, &[what, "--json"]));
    }
    assert_eq!(t.mapped_layers(true, "img"), t.mapped_layers(false, "img"));
    let g = json(&t.run(true, &["container", "--json", &ctr3]))[0].clone();
    assert_eq!(g["uidmap"], map_json(300_000));
    if t.env.is_empty() {
        // Go mounts our mapped container with the same owners. (Not with overlay's
        // shifting switched off for us only: 1.43 would shift the mapped copy once more.
        // Not with a mount program either: 1.43 gave fuse-overlayfs an idmapped lower *and*
        // a malformed `uidmapping=:0:300000:6`, so every owner showed as 65534; 1.46+ passes
        // the maps to the program only, as we do.)
        if !fuse {
            t.with_mount(true, &ctr3, |p| {
                assert_files(p, 300_000, 300_000, "Go's mount of our mapped container")
            });
        }
        // And where 1.43 and 1.60 agree, Go's containers reuse our copies.
        let layers = t.layer_count();
        let gc0 = first_line(&t.run(true, &["create-container", "img"]));
        let gc3 = first_line(&t.run(true, &map_args("create-container", 300_000, 300_000, "img")));
        assert_eq!(
            t.layer_count(),
            layers + 2,
            "Go made only its container layers"
        );
        assert_eq!(t.layer_of(&gc0)["parent"], l0["parent"]);
        assert_eq!(t.layer_of(&gc3)["parent"], l3["parent"]);
    }
    // Both tools diff a mapped container the same way (canonical owners where copied).
    t.with_mount(false, &ctr3, |p| {
        let f = p.join("new");
        std::fs::write(&f, b"new\n").expect("write into the container");
        std::os::unix::fs::lchown(&f, Some(300_005), Some(300_005)).expect("chown");
    });
    let layer3 = l3["id"].as_str().expect("id").to_string();
    let diff = |go: bool| {
        let out = t.cs.dir.path().join(if go { "go.tar" } else { "ours.tar" });
        let o = out.display().to_string();
        t.run(go, &["diff", "-u", "-f", &o, &layer3]);
        tar_entries(&std::fs::read(&out).expect("diff output"))
    };
    let ours_entries = diff(false);
    assert_eq!(diff(true), ours_entries, "Go's diff of our container layer");
    let new = ours_entries
        .iter()
        .find(|e| e.0 == "new")
        .expect("new file in the diff");
    if t.mode == Mode::Copy {
        assert_eq!((new.1, new.2), (5, 5), "container-side owner in the diff");
    }
    let _ = again;
}

/// Checklist 9 and the 1.60 output of `layer-parent-owners` / `container-parent-owners`.
fn parent_owners(driver: &str) {
    let Some(cs) = DriverStore::new(driver) else {
        return;
    };
    if !require(storage_tests::is_root(), "root (chown to mapped IDs)") {
        return;
    }
    let t = T::new(&cs, &[]);
    let go = require(go_cs().is_some(), "Debian's Go containers-storage");
    let (b, u) = t.base_and_mapped();
    t.ours(&["create-image", "-n", "img", &u]);
    let ctr0 = first_line(&t.ours(&["create-container", "img"]));
    let ctr3 = first_line(&t.ours(&map_args("create-container", 300_000, 300_000, "img")));

    // An unmapped layer: `ID:` only, exit 0, mounted or not (1.43 agrees).
    let want = format!("ID: {b}\n");
    assert_eq!(t.ours(&["layer-parent-owners", &b]), want);
    if go {
        assert_eq!(t.run(true, &["layer-parent-owners", &b]), want);
    }
    // A container without maps: both lists, empty.
    let want0 = format!("ID: {ctr0}\nUIDs: []\nGIDs: []\n");
    assert_eq!(t.ours(&["container-parent-owners", &ctr0]), want0);
    assert_eq!(
        t.ours(&["container-parent-owners", "--json", &ctr0]),
        format!("{{\"ID\":\"{ctr0}\",\"UIDs\":null,\"GIDs\":null}}\n")
    );
    if go {
        assert_eq!(t.run(true, &["container-parent-owners", &ctr0]), want0);
    }

    if t.mode == Mode::Shift {
        // The mapped container's layer has no maps: nothing is reported (the container's
        // own maps do not count).
        assert_eq!(
            t.ours(&["container-parent-owners", &ctr3]),
            format!("ID: {ctr3}\nUIDs: []\nGIDs: []\n")
        );
        return;
    }
    // A mapped layer that is not mounted: what was resolved before is printed, then the
    // error (1.43 agrees).
    for tool in [false, true] {
        if tool && !go {
            continue;
        }
        let (code, out, err) = t.exec(tool, &["layer-parent-owners", &b, &u]);
        assert_eq!((code, out.as_str()), (1, want.as_str()), "tool go={tool}");
        assert_eq!(err, "LayerParentOwner: layer is not mounted\n");
        let (code, out, err) = t.exec(tool, &["container-parent-owners", &ctr3]);
        assert_eq!((code, out.as_str()), (1, ""));
        assert_eq!(err, "ContainerParentOwner: layer is not mounted\n");
    }
    // Mounted, on a root-owned tree: only root is unmapped. (1.43 on vfs reported the
    // owner `<G>/vfs/dir` had been chowned to as well.)
    let mp = first_line(&t.ours(&["mount", &u]));
    assert!(Path::new(&mp).is_dir());
    // An unknown argument is skipped but fails the command (1.43 agrees).
    let (code, out, _) = t.exec(false, &["layer-parent-owners", &u, "nosuchlayer", &b]);
    assert_eq!(
        (code, out),
        (1, format!("ID: {u}\nUIDs: [0]\nGIDs: [0]\nID: {b}\n"))
    );
    assert_eq!(
        t.ours(&["layer-parent-owners", "--json", &u, &b]),
        format!(
            "{{\"ID\":\"{u}\",\"UIDs\":[0],\"GIDs\":[0]}}\n{{\"ID\":\"{b}\",\"UIDs\":null,\"GIDs\":null}}\n"
        ),
        "one JSON object per line"
    );
    t.ours(&["unmount", &u]);
    t.ours(&["mount", &ctr3]);
    assert_eq!(
        t.ours(&["container-parent-owners", &ctr3]),
        format!("ID: {ctr3}\nUIDs: [0]\nGIDs: [0]\n")
    );
    t.ours(&["unmount", &ctr3]);
}
