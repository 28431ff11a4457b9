//! A store written by skopeo used read-only as an additional image store
//! (`additionalimagestores` in storage.conf) by our CLI and Go's, side by side.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use storage_tests::oci::{OciImage, assert_rootfs, busybox_available, sample_layers};
use storage_tests::peers::{Unmounter, first_line, skopeo_copy, storage_ref};
use storage_tests::{Cs, go_cs, is_root, ok, ours, peer, require};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Runs `bin` with `conf` as CONTAINERS_STORAGE_CONF and no store flags: with `--graph`,
/// `--run` or `--storage-driver` given, both CLIs drop the additional image stores of the
/// file (they travel as `DRIVER.imagestore` driver options).
fn with_conf<S: AsRef<OsStr>>(bin: &Path, conf: &Path, args: &[S]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("STORAGE_OPTS")
        .env_remove("STORAGE_DRIVER")
        .env("CONTAINERS_STORAGE_CONF", conf)
        .stdin(Stdio::null())
        .output()
        .expect("run")
}

type Run<'a> = &'a dyn Fn(&[&str]) -> Output;

/// The record files of a store (to prove a read-only store was not written).
fn snapshot(cs: &Cs) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    for (d, f) in [("images", "images.json"), ("layers", "layers.json")] {
        let p = cs.graph.join(format!("{}-{d}", cs.driver)).join(f);
        v.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
    }
    v
}

fn ro_store(driver: &str) {
    let ro = Cs::new(driver);
    let main = Cs::new(driver);
    let _g1 = Unmounter::new(&main, false);
    let _g2 = Unmounter::new(&ro, false);
    let bb = busybox_available();
    let img = OciImage::write(&ro.dir.path().join("oci"), "v1", sample_layers(bb));
    let name = "localhost/readonly:v1";
    ok(&skopeo_copy(&img.reference(), &storage_ref(&ro, name)));
    // Go closes the store cleanly after skopeo (no lingering mounts in the RO store).
    let before = snapshot(&ro);

    let conf = main.dir.path().join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"{driver}\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n\n[storage.options]\nadditionalimagestores = [\"{}\"]\n",
            main.graph.display(),
            main.run.display(),
            ro.graph.display()
        ),
    )
    .expect("write storage.conf");
    let go = go_cs().expect("go");
    let o: Run = &|args| with_conf(ours(), &conf, args);
    let g: Run = &|args| with_conf(&go, &conf, args);

    // Both list the read-only image.
    for (who, run) in [("ours", o), ("Go", g)] {
        let out = run(&["image", name]);
        let plain = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{who}: `image {name}` failed: {}{plain}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            plain
                .lines()
                .any(|l| l == format!("ID: {}", img.image_id())),
            "{who}: {plain}"
        );
        assert!(
            plain.lines().any(|l| l == "Read Only: true"),
            "{who} `image` lacks Read Only:\n{plain}"
        );
    }

    // A container of the RO image made by us, mounted by Go, and the reverse.
    let c1 = first_line(&ok(&o(&["create-container", "-n", "from-ours", name])));
    let c2 = first_line(&ok(&g(&["create-container", "-n", "from-go", name])));
    for (mounter, unmounter, c) in [(g, g, &c1), (o, o, &c2), (o, o, &c1)] {
        let mp = first_line(&ok(&mounter(&["mount", c])));
        assert_rootfs(
            Path::new(&mp),
            bb,
            &format!("container {c} of a read-only image"),
        );
        ok(&unmounter(&["unmount", c]));
    }
    for run in [o, g] {
        let ctrs = json(&ok(&run(&["containers", "--json"])));
        assert_eq!(ctrs.as_array().map(|a| a.len()), Some(2), "{ctrs}");
    }

    // Renaming pulls the image up into the main store; Go finds it by the new name.
    ok(&o(&["add-names", "-n", "localhost/pulled-up:v1", name]));
    let rec = json(&ok(&g(&["image", "--json", "localhost/pulled-up:v1"])));
    assert_eq!(rec[0]["id"], img.image_id());
    let main_images =
        std::fs::read(main.graph.join(format!("{driver}-images/images.json"))).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&main_images).contains(img.image_id()),
        "pulled-up image not in the main images.json"
    );
    ok(&o(&["delete-container", &c1]));
    ok(&g(&["delete-container", &c2]));
    // The read-only store was not written to.
    assert_eq!(snapshot(&ro), before, "the additional image store changed");
}

#[test]
fn skopeo_store_as_additional_image_store_vfs() {
    if !require(peer("skopeo").is_some(), "skopeo")
        || !require(go_cs().is_some(), "Debian's Go containers-storage")
    {
        return;
    }
    ro_store("vfs");
}

#[test]
fn skopeo_store_as_additional_image_store_overlay() {
    if !require(is_root(), "root (overlay mounts)")
        || !require(peer("skopeo").is_some(), "skopeo")
        || !require(go_cs().is_some(), "Debian's Go containers-storage")
    {
        return;
    }
    ro_store("overlay");
}
