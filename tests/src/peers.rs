//! Running the image-level peers (`podman`, `skopeo`) on a scratch [`Cs`] store, and a guard
//! that leaves no mount behind.
//!
//! Peers get a clean environment for storage (`STORAGE_OPTS`, `STORAGE_DRIVER` and
//! `CONTAINERS_STORAGE_CONF` removed, no `--storage-opt`), so every tool sees the same store
//! with its default options.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{Cs, go_cs, ours, peer};
pub use storage_testsupport::{first_line, mounts_under};

fn clean(c: &mut Command) -> &mut Command {
    c.env_remove("STORAGE_OPTS")
        .env_remove("STORAGE_DRIVER")
        .env_remove("CONTAINERS_STORAGE_CONF")
        .stdin(Stdio::null())
}

/// `containers-storage:[DRIVER@GRAPH+RUN]NAME`, the skopeo reference of image `name` in `cs`.
pub fn storage_ref(cs: &Cs, name: &str) -> String {
    format!(
        "containers-storage:[{}@{}+{}]{}",
        cs.driver,
        cs.graph.display(),
        cs.run.display(),
        name
    )
}

/// Runs `skopeo ARGS` (panics if skopeo is missing: check [`peer`] first).
pub fn skopeo<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let bin = peer("skopeo").expect("skopeo");
    let mut c = Command::new(bin);
    clean(&mut c).args(args).output().expect("run skopeo")
}

/// `skopeo copy SRC DST` (quietly).
pub fn skopeo_copy(src: &str, dst: &str) -> Output {
    skopeo(&["copy", "--quiet", src, dst])
}

/// Directory podman uses for its own temporary state for store `cs`.
fn podman_tmp(cs: &Cs) -> PathBuf {
    cs.dir.path().join("podman-tmp")
}

/// A `podman` command on store `cs` (root, run root, driver), with cgroupfs and no events.
pub fn podman_cmd(cs: &Cs) -> Command {
    let bin = peer("podman").expect("podman");
    let mut c = Command::new(bin);
    clean(&mut c)
        .arg("--root")
        .arg(&cs.graph)
        .arg("--runroot")
        .arg(&cs.run)
        .arg("--storage-driver")
        .arg(&cs.driver)
        .arg("--tmpdir")
        .arg(podman_tmp(cs))
        .arg("--cgroup-manager")
        .arg("cgroupfs")
        .arg("--events-backend")
        .arg("none");
    c
}

/// Runs `podman … ARGS` on store `cs`.
pub fn podman<S: AsRef<OsStr>>(cs: &Cs, args: &[S]) -> Output {
    podman_cmd(cs).args(args).output().expect("run podman")
}

/// Runs `podman … ARGS` on store `cs` to run a container; `None` (after a loud message)
/// when this machine cannot run containers at all (no cgroups, no OCI runtime, no conmon).
pub fn podman_run(cs: &Cs, args: &[&str]) -> Option<Output> {
    let out = podman(cs, args);
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success()
        && (err.contains("cgroup") || err.contains("OCI runtime") || err.contains("conmon"))
    {
        eprintln!("SKIPPED: podman cannot run containers on this machine: {err}");
        return None;
    }
    Some(out)
}

/// Waits (up to `limit`) until no process other than this one has `path` in its command line.
fn wait_for_processes_naming(path: &Path, limit: std::time::Duration) {
    let me = std::process::id().to_string();
    let needle = path.as_os_str().as_encoded_bytes().to_vec();
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        let busy = std::fs::read_dir("/proc")
            .map(|rd| {
                rd.filter_map(|e| e.ok()).any(|e| {
                    let name = e.file_name();
                    let pid = name.to_string_lossy();
                    pid.chars().all(|c| c.is_ascii_digit())
                        && pid != me
                        && std::fs::read(e.path().join("cmdline"))
                            .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
                })
            })
            .unwrap_or(false);
        if !busy {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    eprintln!(
        "cleanup: processes still name {} after {limit:?}",
        path.display()
    );
}

/// Unmounts everything when dropped (also when the test panics): our `shutdown -f`, Go's
/// `shutdown -f`, `podman unmount --all` (when podman was used) and finally a lazy unmount of
/// anything still mounted under the store's temporary directory.
pub struct Unmounter<'a> {
    cs: &'a Cs,
    podman: bool,
}

impl<'a> Unmounter<'a> {
    /// A guard for `cs`; `podman` says whether podman may have mounted something there.
    pub fn new(cs: &'a Cs, podman: bool) -> Self {
        Unmounter { cs, podman }
    }
}

impl Drop for Unmounter<'_> {
    fn drop(&mut self) {
        let cs = self.cs;
        if self.podman {
            // conmon runs `podman … container cleanup` asynchronously after a container
            // exits; let such processes (they name our graph root) finish before cleaning up.
            wait_for_processes_naming(&cs.graph, std::time::Duration::from_secs(20));
        }
        if self.podman && peer("podman").is_some() && cs.graph.exists() {
            let _ = podman_cmd(cs)
                .args(["unmount", "--all", "--force"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let global = |bin: &Path| {
            let mut c = Command::new(bin);
            clean(&mut c)
                .arg("--graph")
                .arg(&cs.graph)
                .arg("--run")
                .arg(&cs.run)
                .arg("--storage-driver")
                .arg(&cs.driver)
                .args(["shutdown", "-f"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c
        };
        if cs.graph.exists() {
            let _ = global(ours()).status();
            if let Some(go) = go_cs() {
                let _ = global(&go).status();
            }
        }
        for m in mounts_under(cs.dir.path()).iter().rev() {
            eprintln!("cleanup: lazily unmounting leftover {}", m.display());
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// Stores `img` in a store the way containers/image does, with one CLI (`run` runs our or
/// Go's binary on the store): `import-layer` of each gzip blob onto the previous one,
/// `create-image -i <config hex> --digest <manifest digest> -n NAME TOP`, then `set-image-data`
/// of `manifest`, `manifest-<digest>` and the config under its digest. Returns the top layer.
pub fn import_image(
    run: &dyn Fn(&[&OsStr]) -> Output,
    img: &crate::oci::OciImage,
    name: &str,
) -> String {
    let mut parent: Option<String> = None;
    for l in &img.layers {
        let mut args: Vec<&OsStr> =
            vec!["import-layer".as_ref(), "-f".as_ref(), l.blob.as_os_str()];
        if let Some(p) = &parent {
            args.push(p.as_ref());
        }
        let id = first_line(&crate::ok(&run(&args)));
        assert_eq!(id.len(), 64, "import-layer printed {id:?}");
        parent = Some(id);
    }
    let top = parent.unwrap_or_default();
    let out = run(&[
        "create-image".as_ref(),
        "-i".as_ref(),
        img.image_id().as_ref(),
        "--digest".as_ref(),
        img.manifest_digest.as_ref(),
        "-n".as_ref(),
        name.as_ref(),
        top.as_ref(),
    ]);
    assert_eq!(first_line(&crate::ok(&out)), img.image_id());
    let mkey = format!("manifest-{}", img.manifest_digest);
    for (key, file) in [
        ("manifest", &img.manifest_path),
        (mkey.as_str(), &img.manifest_path),
        (img.config_digest.as_str(), &img.config_path),
    ] {
        crate::ok(&run(&[
            "set-image-data".as_ref(),
            "-f".as_ref(),
            file.as_os_str(),
            img.image_id().as_ref(),
            key.as_ref(),
        ]));
    }
    top
}

/// The layer records of the chain ending at `top` (from a `layers --json` array), base first.
pub fn layer_chain(layers_json: &str, top: &str) -> Vec<serde_json::Value> {
    let all: serde_json::Value = serde_json::from_str(layers_json).expect("layers --json is JSON");
    let all = all.as_array().cloned().unwrap_or_default();
    let mut chain = Vec::new();
    let mut cur = Some(top.to_string());
    while let Some(id) = cur {
        let rec = all
            .iter()
            .find(|l| l["id"] == id.as_str())
            .unwrap_or_else(|| panic!("layer {id} not listed"))
            .clone();
        cur = rec["parent"].as_str().map(str::to_string);
        chain.push(rec);
        assert!(chain.len() <= all.len(), "parent loop in layers");
    }
    chain.reverse();
    chain
}

/// The `diff-digest` of every record of `chain`.
pub fn diff_digests(chain: &[serde_json::Value]) -> Vec<String> {
    chain
        .iter()
        .map(|l| l["diff-digest"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Checks everything our CLI says about a skopeo-written image `name` made from `img`, diffs
/// each layer, mounts the top layer and a container; returns nothing, panics on a mismatch.
pub fn ours_reads_pulled_image(cs: &Cs, img: &crate::oci::OciImage, name: &str, busybox: bool) {
    let images = json(&crate::ok(&cs.ours(&["images", "--json"])));
    let rec = images
        .as_array()
        .and_then(|a| a.iter().find(|i| i["id"] == img.image_id()))
        .unwrap_or_else(|| panic!("image {} not listed: {images}", img.image_id()))
        .clone();
    assert_eq!(rec["digest"], img.manifest_digest.as_str());
    assert!(
        rec["names"]
            .as_array()
            .is_some_and(|n| n.iter().any(|x| x == name)),
        "names of {rec}"
    );
    let top = rec["layer"].as_str().expect("top layer").to_string();
    let plain = crate::ok(&cs.ours(&["image", name]));
    for want in [
        format!("ID: {}", img.image_id()),
        format!("Name: {name}"),
        format!("Top Layer: {top}"),
        format!("Digest: {}", img.manifest_digest),
        "Data: manifest".to_string(),
    ] {
        assert!(
            plain.lines().any(|l| l == want),
            "`image {name}` lacks {want:?}:\n{plain}"
        );
    }
    let listing = crate::ok(&cs.ours(&["images"]));
    for want in [
        img.image_id().to_string(),
        format!("\tname: {name}"),
        format!("\tdigest: {}", img.manifest_digest),
        "\tdata: manifest".to_string(),
    ] {
        assert!(
            listing.lines().any(|l| l == want),
            "`images` lacks {want:?}:\n{listing}"
        );
    }
    if go_cs().is_some() {
        // Go parses the same images.json to the same record.
        let go_rec = json(&crate::ok(&cs.go(&["image", "--json", name])));
        assert_eq!(go_rec[0], rec, "Go's record of the image");
    }
    let by_digest = crate::ok(&cs.ours(&["images-by-digest", "-q", &img.manifest_digest]));
    assert_eq!(first_line(&by_digest), img.image_id());

    // Layers: diff digests are the config's diff_ids, compressed digests the manifest's.
    let chain = layer_chain(&crate::ok(&cs.ours(&["layers", "--json"])), &top);
    assert_eq!(diff_digests(&chain), img.diff_ids());
    for (rec, l) in chain.iter().zip(&img.layers) {
        assert_eq!(rec["compressed-diff-digest"], l.digest.as_str());
        assert_eq!(rec["diff-size"], l.tar.len() as u64);
        let id = rec["id"].as_str().unwrap_or_default();
        let d = cs.ours(&["diff", "-u", id]);
        crate::ok(&d);
        assert_eq!(
            crate::tars::sha256(&d.stdout),
            l.diff_id,
            "our diff -u of layer {id}"
        );
    }

    // Manifest and config bytes.
    let keys = crate::ok(&cs.ours(&["list-image-data", name]));
    let mkey = format!("manifest-{}", img.manifest_digest);
    for k in ["manifest", mkey.as_str(), img.config_digest.as_str()] {
        assert!(
            keys.lines().any(|l| l == k),
            "list-image-data lacks {k}:\n{keys}"
        );
    }
    for (k, want) in [
        ("manifest", &img.manifest),
        (mkey.as_str(), &img.manifest),
        (img.config_digest.as_str(), &img.config),
    ] {
        let got = cs.ours(&["get-image-data", name, k]);
        crate::ok(&got);
        assert_eq!(&got.stdout, want, "get-image-data {name} {k}");
    }

    // The top layer mounted, then a container made from the image.
    let mp = first_line(&crate::ok(&cs.ours(&["mount", &top])));
    crate::oci::assert_rootfs(
        std::path::Path::new(&mp),
        busybox,
        "our mount of the top layer",
    );
    crate::ok(&cs.ours(&["unmount", &top]));
    let cid = first_line(&crate::ok(&cs.ours(&[
        "create-container",
        "-n",
        "reader",
        name,
    ])));
    let mp = first_line(&crate::ok(&cs.ours(&["mount", &cid])));
    crate::oci::assert_rootfs(
        std::path::Path::new(&mp),
        busybox,
        "our mount of a container",
    );
    crate::ok(&cs.ours(&["unmount", &cid]));
    crate::ok(&cs.ours(&["delete-container", &cid]));
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Exports image `name` from `cs` with `skopeo copy … oci:DIR:x` and checks the exported config's
/// `rootfs.diff_ids` and the uncompressed digest of every exported layer blob against `img`.
///
/// Returns the layout directory (tag `x`).
pub fn skopeo_exports_same_layers(cs: &Cs, name: &str, img: &crate::oci::OciImage) -> PathBuf {
    let out = cs.dir.path().join("exported");
    crate::ok(&skopeo_copy(
        &storage_ref(cs, name),
        &format!("oci:{}:x", out.display()),
    ));
    let (manifest, config) = crate::oci::read_layout(&out, "x");
    let ids = strings(&config["rootfs"]["diff_ids"]);
    assert_eq!(ids, img.diff_ids(), "exported config diff_ids");
    let descs = manifest["layers"].as_array().cloned().unwrap_or_default();
    assert_eq!(descs.len(), img.layers.len());
    for (d, l) in descs.iter().zip(&img.layers) {
        let bytes = layer_bytes(&out, d);
        assert_eq!(
            crate::tars::sha256(&bytes),
            l.diff_id,
            "uncompressed exported layer"
        );
    }
    out
}

/// The strings of a JSON array (empty for anything else).
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// podman lists, inspects and mounts image `name` made from `img` in `cs` (its ID, digest,
/// names, diff IDs and size, and the files of the mounted image).
pub fn podman_reads_image(cs: &Cs, img: &crate::oci::OciImage, name: &str, bb: bool) {
    // podman lists and inspects it.
    let list = json(&crate::ok(&podman(cs, &["images", "--format", "json"])));
    let entry = list
        .as_array()
        .and_then(|a| a.iter().find(|i| i["Id"] == img.image_id()))
        .unwrap_or_else(|| panic!("podman images lacks {}: {list}", img.image_id()))
        .clone();
    assert_eq!(entry["Digest"], img.manifest_digest.as_str(), "{entry}");
    assert!(
        entry["Names"]
            .as_array()
            .is_some_and(|n| n.iter().any(|x| x == name)),
        "podman names: {entry}"
    );
    let insp = json(&crate::ok(&podman(cs, &["image", "inspect", name])));
    let insp = &insp[0];
    assert_eq!(insp["Id"], img.image_id());
    assert_eq!(insp["Digest"], img.manifest_digest.as_str());
    assert!(
        insp["RepoTags"]
            .as_array()
            .is_some_and(|n| n.iter().any(|x| x == name)),
        "RepoTags: {insp}"
    );
    let layers = strings(&insp["RootFS"]["Layers"]);
    assert_eq!(layers, img.diff_ids(), "podman RootFS.Layers");
    let total: u64 = img.layers.iter().map(|l| l.tar.len() as u64).sum();
    assert!(
        insp["Size"].as_u64().unwrap_or(0) >= total - 10240 * 3,
        "podman Size: {}",
        insp["Size"]
    );

    // podman mounts the image (through our layer records).
    let mp = first_line(&crate::ok(&podman(cs, &["image", "mount", name])));
    crate::oci::assert_rootfs(Path::new(&mp), bb, "podman image mount of our image");
    crate::ok(&podman(cs, &["image", "unmount", name]));
}

/// The arguments of `podman run --rm IMAGE` that work without cgroups and network, and
/// within the nofile/nproc limits of a process without `CAP_SYS_RESOURCE` (podman asks for
/// higher ones by default; lowering them is always allowed). Append the command.
pub fn podman_run_args(image: &str) -> Vec<&str> {
    vec![
        "run",
        "--rm",
        "--cgroups",
        "disabled",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        image,
    ]
}

/// Uncompressed bytes of an exported layer blob, by media type.
pub fn layer_bytes(dir: &Path, desc: &serde_json::Value) -> Vec<u8> {
    let digest = desc["digest"].as_str().unwrap_or_default();
    let raw = std::fs::read(crate::oci::blob_path(dir, digest)).expect("read exported blob");
    assert_eq!(crate::tars::sha256(&raw), digest, "exported blob digest");
    let mt = desc["mediaType"].as_str().unwrap_or_default();
    if mt.ends_with("gzip") {
        crate::oci::gunzip(&raw)
    } else {
        assert!(mt.ends_with(".tar"), "unexpected layer media type {mt}");
        raw
    }
}

/// A file system of type `mkfs` (e.g. `mkfs.btrfs`) on a loop device, mounted at `at`
/// (e.g. a [`Cs`] graph root before first use). Dropping it unmounts it; declare it
/// *before* the [`Unmounter`] of the store so the store is shut down first.
pub struct LoopFs {
    at: PathBuf,
}

impl LoopFs {
    /// Makes a `size_mib` MiB image file next to `at` and mounts it there; `None` (after a
    /// loud skip, or a panic in CI) when the tool, loop devices or root are missing.
    pub fn new(mkfs: &str, size_mib: u64, at: &Path) -> Option<LoopFs> {
        let tool = ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join(mkfs))
            .find(|p| p.is_file());
        if !crate::require(
            crate::is_root() && tool.is_some(),
            &format!("root and {mkfs} for a loop file system"),
        ) {
            return None;
        }
        let img = at.with_extension("img");
        let f = std::fs::File::create(&img).expect("create fs image");
        f.set_len(size_mib << 20).expect("size fs image");
        drop(f);
        let mk = Command::new(tool.expect("checked"))
            .arg("-q")
            .arg(&img)
            .output()
            .expect("run mkfs");
        assert!(
            mk.status.success(),
            "{mkfs}: {}",
            String::from_utf8_lossy(&mk.stderr)
        );
        std::fs::create_dir_all(at).expect("mount point");
        let m = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(at)
            .output()
            .expect("run mount");
        if !crate::require(
            m.status.success(),
            &format!("mount -o loop: {}", String::from_utf8_lossy(&m.stderr)),
        ) {
            return None;
        }
        Some(LoopFs {
            at: at.to_path_buf(),
        })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // `mount -o loop` sets autoclear: the loop device goes away with the mount.
        if mounts_under(&self.at).contains(&self.at) {
            let ok = Command::new("umount")
                .arg(&self.at)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.at).status();
            }
        }
    }
}

/// Unpacks `DIR:TAG` with `umoci unpack` (an independent OCI implementation) into
/// `bundle`; returns the root filesystem path.
pub fn umoci_unpack(dir: &Path, tag: &str, bundle: &Path) -> PathBuf {
    let bin = peer("umoci").expect("umoci");
    let mut c = Command::new(bin);
    let out = clean(&mut c)
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", dir.display()))
        .arg(bundle)
        .output()
        .expect("run umoci");
    crate::ok(&out);
    bundle.join("rootfs")
}
