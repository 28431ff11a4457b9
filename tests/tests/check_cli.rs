//! `check`, `gc` and `dedup` through our CLI: output channels, exit statuses, JSON shapes,
//! repair, and a store whose `images.json` was cut short.

use std::process::Output;

use storage_tests::tars::sample_layer;
use storage_tests::{Cs, go_cs, ok, require};

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn first_line(o: &Output) -> String {
    ok(o).lines().next().unwrap_or_default().trim().to_string()
}

fn import(cs: &Cs) -> String {
    let tar = cs.dir.path().join("layer.tar");
    std::fs::write(&tar, sample_layer()).expect("write tar");
    first_line(&cs.ours(&["import-layer", "-f", &tar.display().to_string()]))
}

const CLEAN_JSON: &str =
    "{\"Layers\":{},\"ROLayers\":{},\"Images\":{},\"ROImages\":{},\"Containers\":{}}\n";

#[test]
fn clean_store_is_silent() {
    let cs = Cs::new("vfs");
    let l = import(&cs);
    ok(&cs.ours(&["create-image", &l]));
    let o = cs.ours(&["check"]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert_eq!(out(&o), "");
    assert_eq!(err(&o), "");
    let o = cs.ours(&["check", "--json"]);
    assert_eq!(out(&o), CLEAN_JSON);
    assert!(o.status.success());
    let o = cs.ours(&["check", "-q", "-m", "1h30m"]);
    assert!(o.status.success());
    let o = cs.ours(&["check", "extra"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).starts_with("check: too many arguments ([extra]).\n"));
}

#[test]
fn unaccounted_layer_is_reported_then_repaired() {
    let cs = Cs::new("vfs");
    let id = first_line(&cs.ours(&["create-storage-layer"]));
    let o = cs.ours(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        out(&o),
        format!(
            "layer {id}:\n layer {id}: layer in lower level storage driver not accounted for\n"
        )
    );
    assert_eq!(
        err(&o),
        "1 layer errors, 0 read-only layer errors, 0 image errors, 0 read-only image errors, 0 container errors\n"
    );
    let o = cs.ours(&["check", "--json"]);
    assert_eq!(
        out(&o),
        format!(
            "{{\"Layers\":{{\"{id}\":[{{}}]}},\"ROLayers\":{{}},\"Images\":{{}},\"ROImages\":{{}},\"Containers\":{{}}}}\n"
        )
    );
    let o = cs.ours(&["check", "-r"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(!cs.graph.join("vfs/dir").join(&id).exists());
    let o = cs.ours(&["check"]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
}

#[test]
fn unreferenced_layers_count_with_a_zero_max_age() {
    let cs = Cs::new("vfs");
    let l = first_line(&cs.ours(&["create-layer"]));
    assert!(cs.ours(&["check"]).status.success());
    let o = cs.ours(&["check", "-m", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).contains(&format!(
            " layer {l}: layer not referenced by any images or containers\n"
        )),
        "{}",
        out(&o)
    );
    let o = cs.ours(&["check", "-m", "bogus"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("bogus"));
    // Repair deletes it (Go does the same with user-created layers).
    assert!(cs.ours(&["check", "-r", "-m", "0"]).status.success());
    assert_eq!(ok(&cs.ours(&["layers", "-q"])), "");
}

#[test]
fn damaged_containers_are_removed_only_with_force() {
    let cs = Cs::new("vfs");
    let l = import(&cs);
    let img = first_line(&cs.ours(&["create-image", &l]));
    let data = cs.dir.path().join("data");
    std::fs::write(&data, b"some configuration").expect("write");
    ok(&cs.ours(&[
        "set-image-data",
        "-f",
        &data.display().to_string(),
        &img,
        "config",
    ]));
    let ctr = first_line(&cs.ours(&["create-container", &img]));
    assert!(cs.ours(&["check"]).status.success());
    std::fs::remove_file(cs.graph.join("vfs-images").join(&img).join("config")).expect("rm");

    let o = cs.ours(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    let report = out(&o);
    let missing = format!(" image {img}: data item \"config\": image data item is missing\n");
    assert!(
        report.contains(&format!("image {img}:\n{missing}")),
        "{report}"
    );
    assert!(
        report.contains(&format!("container {ctr}:\n{missing}")),
        "{report}"
    );
    assert_eq!(
        err(&o),
        "0 layer errors, 0 read-only layer errors, 1 image errors, 0 read-only image errors, 1 container errors\n"
    );

    // Without -f the image cannot go: its container still uses it.
    let o = cs.ours(&["check", "-r"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains(&format!("deleting image {img}")),
        "{}",
        err(&o)
    );
    assert!(ok(&cs.ours(&["containers", "--json"])).contains(&ctr));

    let o = cs.ours(&["check", "-f"]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(!ok(&cs.ours(&["containers", "--json"])).contains(&ctr));
    assert_eq!(ok(&cs.ours(&["images", "-q"])), "");
    let o = cs.ours(&["check"]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
}

#[test]
fn truncated_images_json_is_reported_and_salvaged() {
    let cs = Cs::new("vfs");
    let mut images = Vec::new();
    for n in 0..3 {
        let l = first_line(&cs.ours(&["create-layer", "-n", &format!("l{n}")]));
        images.push(first_line(&cs.ours(&[
            "create-image",
            "-n",
            &format!("i{n}"),
            &l,
        ])));
    }
    let json = cs.graph.join("vfs-images/images.json");
    let data = std::fs::read(&json).expect("read");
    let cut = String::from_utf8_lossy(&data)
        .find(&format!("{{\"id\":\"{}\"", images[2]))
        .expect("third record")
        + 30;
    std::fs::write(&json, &data[..cut]).expect("truncate");

    let o = cs.ours(&["images"]);
    assert_eq!(o.status.code(), Some(1));
    let o = cs.ours(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).starts_with(&format!("file {}:\n ", json.display())),
        "{}",
        out(&o)
    );
    assert!(err(&o).contains("damaged record files"), "{}", err(&o));
    // Nothing was changed by looking.
    assert_eq!(std::fs::read(&json).expect("read"), &data[..cut]);

    let o = cs.ours(&["check", "-r"]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(err(&o).contains("kept 2 records"), "{}", err(&o));
    let listed = ok(&cs.ours(&["images", "-q"]));
    assert!(listed.contains(&images[0]) && listed.contains(&images[1]));
    assert!(!listed.contains(&images[2]));
    let backups: Vec<_> = std::fs::read_dir(cs.graph.join("vfs-images"))
        .expect("dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("images.json.damaged-")
        })
        .collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(
        std::fs::read(backups[0].path()).expect("backup"),
        &data[..cut]
    );
    assert!(cs.ours(&["check"]).status.success());
    if require(go_cs().is_some(), "Go containers-storage") {
        let o = cs.go(&["images"]);
        assert!(o.status.success(), "{}", err(&o));
        assert!(out(&o).contains(&images[1]));
    }
}

#[test]
fn gc_and_dedup_outputs() {
    let cs = Cs::new("vfs");
    let o = cs.ours(&["gc"]);
    assert!(o.status.success());
    assert_eq!(out(&o), "");
    assert_eq!(out(&cs.ours(&["gc", "--json"])), "\"\"\n");
    let id = first_line(&cs.ours(&["create-storage-layer"]));
    ok(&cs.ours(&["gc"]));
    assert!(!cs.graph.join("vfs/dir").join(&id).exists());

    let o = cs.ours(&["dedup"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "Deduplicated 0 bytes\n");
    assert_eq!(out(&cs.ours(&["dedup", "-j"])), "{\"Deduped\":0}\n");
    let o = cs.ours(&["dedup", "--hash-method", "bogus"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err(&o), "invalid hash method: bogus\n");
    for m in ["size", "crc", "sha256"] {
        assert!(cs.ours(&["dedup", "--hash-method", m]).status.success());
    }
}

#[test]
fn read_only_store_damage_is_reported_but_never_repaired() {
    let ro = Cs::new("vfs");
    let l = import(&ro);
    let img = first_line(&ro.ours(&["create-image", "-n", "roimg", &l]));
    let cs = Cs::new("vfs");
    let opt = format!("vfs.imagestore={}", ro.graph.display());
    let with_ro = |args: &[&str]| {
        let mut v = vec!["--storage-opt", opt.as_str()];
        v.extend_from_slice(args);
        cs.ours(&v)
    };
    let o = with_ro(&["check"]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    std::fs::write(
        ro.graph.join("vfs/dir").join(&l).join("etc/hello.txt"),
        b"HELLO\n",
    )
    .expect("edit");
    let o = with_ro(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    let report = out(&o);
    assert!(
        report.contains(&format!("read-only layer {l}:\n read-only layer {l}: ")),
        "{report}"
    );
    assert!(
        report.contains(&format!("read-only image {img}:\n")),
        "{report}"
    );
    assert_eq!(
        err(&o),
        "0 layer errors, 1 read-only layer errors, 0 image errors, 1 read-only image errors, 0 container errors\n"
    );
    let before = std::fs::read(ro.graph.join("vfs-images/images.json")).expect("read");
    let o = with_ro(&["check", "-r"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        err(&o),
        "1 read-only layer errors, 1 read-only image errors, 0 container errors\n"
    );
    assert_eq!(
        std::fs::read(ro.graph.join("vfs-images/images.json")).expect("read"),
        before
    );
    assert!(ro.graph.join("vfs/dir").join(&l).exists());
}

/// A loop-mounted XFS (or btrfs) file system, unmounted on drop.
struct LoopMount(tempfile::TempDir);

impl LoopMount {
    fn new() -> Option<LoopMount> {
        let dir = tempfile::Builder::new()
            .prefix("cs-dedup-cli-")
            .tempdir()
            .ok()?;
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&mnt).ok()?;
        let run = |c: &mut std::process::Command| c.output().is_ok_and(|o| o.status.success());
        if !run(std::process::Command::new("truncate")
            .arg("-s")
            .arg("400M")
            .arg(&img))
        {
            return None;
        }
        let made = ["mkfs.xfs", "mkfs.btrfs"]
            .iter()
            .any(|m| run(std::process::Command::new(m).arg("-q").arg("-f").arg(&img)));
        if !made
            || !run(std::process::Command::new("mount")
                .arg("-o")
                .arg("loop")
                .arg(&img)
                .arg(&mnt))
        {
            return None;
        }
        Some(LoopMount(dir))
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path().join("mnt"))
            .status();
    }
}

#[test]
fn dedup_reports_bytes_shared_on_a_reflink_file_system() {
    if !require(storage_tests::is_root(), "root to loop-mount a file system") {
        return;
    }
    let mnt = LoopMount::new();
    if !require(mnt.is_some(), "mkfs.xfs/mkfs.btrfs and a loop device") {
        return;
    }
    let Some(mnt) = mnt else { return };
    let dir = tempfile::Builder::new()
        .prefix("store-")
        .tempdir_in(mnt.0.path().join("mnt"))
        .expect("tempdir");
    let cs = Cs {
        graph: dir.path().join("root"),
        run: dir.path().join("run"),
        driver: "vfs".into(),
        dir,
    };
    // Two images whose layers carry the same 300 KB file.
    let a = import(&cs);
    let b = import(&cs);
    ok(&cs.ours(&["create-image", &a]));
    ok(&cs.ours(&["create-image", &b]));
    let before =
        std::fs::read(cs.graph.join("vfs/dir").join(&b).join("usr/bin/tool")).expect("read");
    let o = cs.ours(&["dedup", "--hash-method", "sha256"]);
    assert!(o.status.success(), "{}", err(&o));
    let n: u64 = out(&o)
        .trim()
        .strip_prefix("Deduplicated ")
        .and_then(|r| r.strip_suffix(" bytes"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {:?}", out(&o)));
    assert!(n >= 300_000, "deduplicated only {n} bytes");
    // Go 1.57+: the same total on every run over the unchanged (now shared) store, and for
    // every hash method; `-j` gives it as `Deduped`.
    for method in ["sha256", "crc", "size"] {
        let o = cs.ours(&["dedup", "--hash-method", method]);
        assert_eq!(out(&o), format!("Deduplicated {n} bytes\n"), "{method}");
    }
    assert_eq!(
        out(&cs.ours(&["dedup", "-j"])),
        format!("{{\"Deduped\":{n}}}\n")
    );
    let after =
        std::fs::read(cs.graph.join("vfs/dir").join(&b).join("usr/bin/tool")).expect("read");
    assert_eq!(before, after);
    assert!(cs.ours(&["check"]).status.success());
    drop(cs);
    drop(mnt);
}

#[test]
fn missing_container_data_and_missing_image_layers() {
    let cs = Cs::new("vfs");
    let l = import(&cs);
    let img = first_line(&cs.ours(&["create-image", &l]));
    let ctr = first_line(&cs.ours(&["create-container", &img]));
    let data = cs.dir.path().join("data");
    std::fs::write(&data, b"container state").expect("write");
    ok(&cs.ours(&[
        "set-container-data",
        "-f",
        &data.display().to_string(),
        &ctr,
        "state",
    ]));
    assert!(cs.ours(&["check"]).status.success());
    std::fs::remove_file(cs.graph.join("vfs-containers").join(&ctr).join("state")).expect("rm");
    let o = cs.ours(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        out(&o),
        format!(
            "container {ctr}:\n container {ctr}: data item \"state\": container data item is missing\n"
        )
    );
    // Without -f the container stays and the status says so.
    let o = cs.ours(&["check", "-r"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        err(&o),
        "0 read-only layer errors, 0 read-only image errors, 1 container errors\n"
    );
    let o = cs.ours(&["check", "-r", "-f"]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(!ok(&cs.ours(&["containers", "--json"])).contains(&ctr));

    // An image whose top layer was deleted without safety checks.
    ok(&cs.ours(&["delete", &l]));
    let o = cs.ours(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        out(&o),
        format!("image {img}:\n image {img}: layer {l}: image layer is missing\n")
    );
    assert!(cs.ours(&["check", "-r"]).status.success());
    assert_eq!(ok(&cs.ours(&["images", "-q"])), "");
    assert!(cs.ours(&["check"]).status.success());
}
