//! ID-mapped containers on overlay, end to end and next to Go's binary: where the driver can
//! shift IDs at mount time (root, idmapped mounts) `create-container --uidmap/--gidmap` makes
//! no mapped copy and a map-less container layer, and the maps are applied when mounting; with
//! shifting disabled (`_CONTAINERS_OVERLAY_DISABLE_IDMAP=yes`, or the driver's cached
//! `idmapped-lower-dir-false` probe that Go 1.43 also honours) the chown path stays. The store
//! files have the shape Go 1.43 writes for the same commands, and each tool mounts the other's
//! containers with the same owners. Needs root and Go's binary: the tests fail without them
//! when CI=true and are skipped (loudly) otherwise.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use std::process::{Command, Stdio};
use storage_testsupport::owner;

use serde_json::Value;

const OURS: &str = env!("CARGO_BIN_EXE_containers-storage");
const GO: &str = "/usr/bin/containers-storage";
const MAP: &str = "0:100000:65536";

fn can_run() -> bool {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    // /proc/self belongs to the effective user.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    for (ok, why) in [
        (root, "overlay stores need root"),
        (
            Path::new(GO).exists(),
            "Go's containers-storage is not installed",
        ),
    ] {
        if !ok {
            assert!(!ci, "{why} (required in CI)");
            eprintln!("SKIPPED: {why}");
            return false;
        }
    }
    true
}

/// One overlay store (graph + run root) in a scratch dir; on drop both tools shut it down and
/// anything still mounted below the scratch dir is detached.
struct Store {
    tmp: tempfile::TempDir,
    env: Vec<(&'static str, &'static str)>,
}

impl Store {
    fn new(env: &[(&'static str, &'static str)]) -> Store {
        Store {
            tmp: tempfile::tempdir().unwrap(),
            env: env.to_vec(),
        }
    }

    fn graph(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    fn run(&self) -> PathBuf {
        self.tmp.path().join("run")
    }

    /// Makes the overlay driver of both tools believe idmapped mounts are unusable.
    fn cache_no_idmap_probe(&self) {
        let d = self.run().join("overlay");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("idmapped-lower-dir-false"), b"").unwrap();
    }

    fn exec(&self, bin: &str, args: &[&str]) -> (i32, String, String) {
        let o = Command::new(bin)
            .arg0("containers-storage")
            .arg("--graph")
            .arg(self.graph())
            .arg("--run")
            .arg(self.run())
            .args(["--storage-driver", "overlay"])
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(self.env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn ok(&self, go: bool, args: &[&str]) -> String {
        let (bin, who) = if go { (GO, "go") } else { (OURS, "ours") };
        let (code, out, err) = self.exec(bin, args);
        assert_eq!(code, 0, "{who} {args:?}: {out}{err}");
        out
    }

    fn json(&self, file: &str) -> Value {
        let p = self.graph().join(file);
        let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_slice(&data).unwrap()
    }

    /// import-layer + create-image `img` + create-container with [`MAP`] for both IDs, all by
    /// one tool; returns the container ID.
    fn image_and_container(&self, go: bool, tar: &str) -> String {
        let layer = first_line(&self.ok(go, &["import-layer", "-f", tar]));
        self.ok(go, &["create-image", "-i", "img", &layer]);
        self.container(go)
    }

    fn container(&self, go: bool) -> String {
        let out = self.ok(
            go,
            &["create-container", "--uidmap", MAP, "--gidmap", MAP, "img"],
        );
        first_line(&out)
    }

    /// Mounts `id` with one tool, returns the owners of `etc/hello` and `etc/owned`, unmounts.
    fn owners_in_mount(&self, go: bool, id: &str) -> [(u32, u32); 2] {
        let m = PathBuf::from(first_line(&self.ok(go, &["mount", id])));
        let owners = ["etc/hello", "etc/owned"].map(|f| owner(&m.join(f)));
        self.ok(go, &["unmount", id]);
        owners
    }

    fn layer_dir(&self, id: &str) -> PathBuf {
        self.graph().join("overlay").join(id)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.exec(OURS, &["shutdown"]);
        let _ = self.exec(GO, &["shutdown"]);
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.tmp.path().to_string_lossy().into_owned();
        let mut points: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").args(["-l", p]).status();
        }
    }
}

/// Writes a layer tar into `dir` (shared by the stores of a test, so that digests match): `etc/` and `etc/hello` owned by 0, `etc/owned` by 1000:1000.
fn layer_tar(dir: &Path) -> String {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hello"), "hello\n").unwrap();
    std::fs::write(src.join("etc/owned"), "owned\n").unwrap();
    let out = dir.join("layer.tar");
    for (mode, owner, files) in [
        ("-cf", "0", &["etc", "etc/hello"][..]),
        ("-rf", "1000", &["etc/owned"][..]),
    ] {
        let st = Command::new("tar")
            .arg("-C")
            .arg(&src)
            .args(["--no-recursion", "--numeric-owner"])
            .arg(format!("--owner={owner}"))
            .arg(format!("--group={owner}"))
            .arg(mode)
            .arg(&out)
            .args(files)
            .status()
            .unwrap();
        assert!(st.success(), "tar {mode}");
    }
    out.to_string_lossy().into_owned()
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// layers.json + images.json + the container's maps with random IDs replaced by their order
/// of appearance in layers.json and timestamps dropped: what must match Go byte for byte.
fn shape(s: &Store) -> Value {
    let mut layers = s.json("overlay-layers/layers.json");
    let mut images = s.json("overlay-images/images.json");
    let containers = s.json("overlay-containers/containers.json");
    let ids: Vec<String> = layers
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["id"].as_str().map(str::to_string))
        .collect();
    let label = |v: &mut Value| {
        if let Some(i) = v.as_str().and_then(|s| ids.iter().position(|x| x == s)) {
            *v = Value::String(format!("L{i}"));
        }
    };
    for rec in layers
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .chain(images.as_array_mut().unwrap().iter_mut())
    {
        let o = rec.as_object_mut().unwrap();
        o.remove("created");
        for k in ["id", "parent", "layer"] {
            if let Some(v) = o.get_mut(k) {
                label(v);
            }
        }
        if let Some(Value::Array(m)) = o.get_mut("mapped-layers") {
            m.iter_mut().for_each(label);
        }
    }
    let maps: Vec<Value> = containers
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mut layer = c["layer"].clone();
            label(&mut layer);
            serde_json::json!([layer, c["uidmap"], c["gidmap"]])
        })
        .collect();
    serde_json::json!({"layers": layers, "images": images, "containers": maps})
}

const SHIFTED: [(u32, u32); 2] = [(100000, 100000), (101000, 101000)];

#[test]
fn mapped_containers_shift_at_mount_time_like_go() {
    if !can_run() {
        return;
    }
    let tars = tempfile::tempdir().unwrap();
    let tar = layer_tar(tars.path());
    let ours = Store::new(&[]);
    // `status` reports on stderr, like Go's.
    let (code, out, err) = ours.exec(OURS, &["status"]);
    assert_eq!(code, 0);
    let status = out + &err;
    if !status.contains("Supports shifting: true") {
        let ci = std::env::var("CI").as_deref() == Ok("true");
        assert!(
            !ci,
            "overlay cannot shift IDs here (required in CI): {status}"
        );
        eprintln!("SKIPPED: overlay cannot shift IDs at mount time here: {status}");
        return;
    }
    let ctr = ours.image_and_container(false, &tar);
    let v = shape(&ours);
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "no mapped copy: {v:#}");
    assert!(
        layers
            .iter()
            .all(|l| l.get("uidmap").is_none() && l.get("gidmap").is_none()),
        "no maps on any layer: {v:#}"
    );
    assert!(v["images"][0].get("mapped-layers").is_none(), "{v:#}");
    assert_eq!(v["containers"][0][0], "L1");
    assert_eq!(v["containers"][0][1][0]["host_id"], 100000, "{v:#}");

    // Shifted in our mount and in Go's; canonical on disk.
    assert_eq!(ours.owners_in_mount(false, &ctr), SHIFTED);
    assert_eq!(ours.owners_in_mount(true, &ctr), SHIFTED);
    let base = ours.json("overlay-layers/layers.json")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let diff = ours.layer_dir(&base).join("diff");
    assert_eq!(owner(&diff.join("etc/hello")), (0, 0));
    assert_eq!(owner(&diff.join("etc/owned")), (1000, 1000));

    // Go 1.43 writes the same shape for the same commands.
    let go = Store::new(&[]);
    let go_ctr = go.image_and_container(true, &tar);
    assert_eq!(shape(&ours), shape(&go));
    // And we mount Go's container with the same owners.
    assert_eq!(go.owners_in_mount(false, &go_ctr), SHIFTED);

    // A second container by Go on our image reuses the map-less top layer too.
    let second = ours.container(true);
    let v = shape(&ours);
    assert_eq!(v["layers"].as_array().unwrap().len(), 3, "{v:#}");
    assert!(v["images"][0].get("mapped-layers").is_none(), "{v:#}");
    assert_eq!(ours.owners_in_mount(false, &second), SHIFTED);

    // `create-layer --uidmap/--gidmap` makes map-less layers too, in both tools.
    for (store, go) in [(&ours, false), (&go, true)] {
        let args = ["create-layer", "--uidmap", MAP, "--gidmap", MAP];
        let id = first_line(&store.ok(go, &args));
        let rec: Value = serde_json::from_str(&store.ok(!go, &["layer", "--json", &id])).unwrap();
        let keys: Vec<&String> = rec[0].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["created", "id"], "go={go}: {rec}");
    }
}

#[test]
fn without_shifting_the_chown_path_stays() {
    if !can_run() {
        return;
    }
    let tars = tempfile::tempdir().unwrap();
    let tar = layer_tar(tars.path());
    // Ours with the environment switch.
    let env = Store::new(&[("_CONTAINERS_OVERLAY_DISABLE_IDMAP", "yes")]);
    let (_, out, err) = env.exec(OURS, &["status"]);
    let status = out + &err;
    assert!(status.contains("Supports shifting: false"), "{status}");
    let ctr = env.image_and_container(false, &tar);
    let v = shape(&env);
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "base, mapped copy, container layer: {v:#}");
    assert_eq!(v["images"][0]["mapped-layers"], serde_json::json!(["L1"]));
    for l in &layers[1..] {
        assert_eq!(l["uidmap"][0]["host_id"], 100000, "{v:#}");
        assert_eq!(l["gidmap"][0]["host_id"], 100000, "{v:#}");
    }
    assert_eq!(v["containers"][0][0], "L2");
    assert_eq!(env.owners_in_mount(false, &ctr), SHIFTED);
    // The base layer is untouched; the mapped copy's content is re-owned.
    let ids: Vec<String> = env
        .json("overlay-layers/layers.json")
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        owner(&env.layer_dir(&ids[0]).join("diff/etc/owned")),
        (1000, 1000)
    );
    let copy = PathBuf::from(first_line(&env.ok(false, &["mount", &ids[1]])));
    assert_eq!(owner(&copy.join("etc/owned")), (101000, 101000));
    env.ok(false, &["unmount", &ids[1]]);

    // Go 1.43 has no such switch; its cached idmapped probe turns shifting off the same way,
    // for our tool as well. Both write the shape ours wrote above.
    let go = Store::new(&[]);
    go.cache_no_idmap_probe();
    let go_ctr = go.image_and_container(true, &tar);
    let probe = Store::new(&[]);
    probe.cache_no_idmap_probe();
    let probe_ctr = probe.image_and_container(false, &tar);
    assert_eq!(shape(&env), shape(&go));
    assert_eq!(shape(&probe), shape(&go));
    // Each tool mounts the other's containers with the same owners.
    assert_eq!(probe.owners_in_mount(true, &probe_ctr), SHIFTED);
    assert_eq!(go.owners_in_mount(false, &go_ctr), SHIFTED);
}
