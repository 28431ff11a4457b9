//! Layers shared with Debian's Go `containers-storage`: byte-exact diffs both ways and the same
//! digests and sizes in `layers --json`, on every driver (one test function per driver:
//! `<test>::vfs`, `<test>::overlay`, `<test>::btrfs`, `<test>::fuse_overlayfs` — overlay with
//! `overlay.mount_program=/usr/bin/fuse-overlayfs` for both tools).

use storage_tests::fs::DriverStore;
use storage_tests::tars::{compress_with, sample_layer, sha256};
use storage_tests::{Cs, go_cs, ok, require};
use storage_testsupport::per_driver;

per_driver!(applied_by_ours_diffed_by_go_and_back: vfs, overlay, btrfs, fuse_overlayfs);
per_driver!(applied_by_go_diffed_by_ours: vfs, overlay, btrfs, fuse_overlayfs);
per_driver!(both_tools_record_the_same_digests: vfs, overlay, btrfs, fuse_overlayfs);

const FIELDS: &[&str] = &[
    "compressed-diff-digest",
    "compressed-size",
    "diff-digest",
    "diff-size",
    "compression",
    "uidset",
    "gidset",
];

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

fn layer_json(cs: &Cs, go: bool, id: &str) -> serde_json::Value {
    let args = ["layers", "--json"];
    let out = if go { cs.go(&args) } else { cs.ours(&args) };
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).expect("layers --json is JSON");
    v.as_array()
        .expect("array")
        .iter()
        .find(|l| l["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("layer {id} not listed"))
}

/// Writes the sample layer in each compression; returns (file, compression code) pairs.
fn variants(dir: &std::path::Path, tar: &[u8]) -> Vec<(std::path::PathBuf, i64)> {
    let plain = dir.join("layer.tar");
    std::fs::write(&plain, tar).unwrap();
    let mut v = vec![(plain, 0)];
    for (tool, ext, code) in [
        ("gzip", "gz", 2),
        ("bzip2", "bz2", 1),
        ("xz", "xz", 3),
        ("zstd", "zst", 4),
    ] {
        let p = dir.join(format!("layer.tar.{ext}"));
        compress_with(tool, tar, &p);
        v.push((p, code));
    }
    v
}

fn applied_by_ours_diffed_by_go_and_back(driver: &str) {
    if !require(
        go_cs().is_some(),
        "Debian's Go containers-storage (/usr/bin/containers-storage)",
    ) {
        return;
    }
    let tar = sample_layer();
    let want = sha256(&tar);
    let Some(cs) = DriverStore::new(driver) else {
        return;
    };
    for (file, code) in variants(cs.dir.path(), &tar) {
        let id = first_line(&ok(&cs.ours(&[
            "import-layer".as_ref(),
            "-f".as_ref(),
            file.as_os_str(),
        ])));
        let rec = layer_json(&cs, false, &id);
        assert_eq!(rec["diff-digest"], want, "{}", file.display());
        assert_eq!(rec["diff-size"], tar.len() as i64);
        assert_eq!(rec["compression"].as_i64().unwrap_or(0), code);
        assert_eq!(
            rec["compressed-diff-digest"],
            sha256(&std::fs::read(&file).unwrap())
        );
        // Go reads our store and reproduces the original bytes from our tar-split.
        let go_diff = cs.go(&["diff", "-u", &id]);
        ok(&go_diff);
        assert_eq!(
            sha256(&go_diff.stdout),
            want,
            "Go's diff of our {}",
            file.display()
        );
        // And so do we.
        let our_diff = cs.ours(&["diff", "-u", &id]);
        ok(&our_diff);
        assert_eq!(
            sha256(&our_diff.stdout),
            want,
            "our diff of {}",
            file.display()
        );
        // Go sees the same record.
        let go_rec = layer_json(&cs, true, &id);
        for f in FIELDS {
            assert_eq!(go_rec[f], rec[f], "field {f} of {}", file.display());
        }
    }
}

fn applied_by_go_diffed_by_ours(driver: &str) {
    if !require(
        go_cs().is_some(),
        "Debian's Go containers-storage (/usr/bin/containers-storage)",
    ) {
        return;
    }
    let tar = sample_layer();
    let want = sha256(&tar);
    let Some(cs) = DriverStore::new(driver) else {
        return;
    };
    for (file, _) in variants(cs.dir.path(), &tar) {
        let id = first_line(&ok(&cs.go(&[
            "import-layer".as_ref(),
            "-f".as_ref(),
            file.as_os_str(),
        ])));
        let out = cs.ours(&["diff", "-u", &id]);
        ok(&out);
        assert_eq!(
            sha256(&out.stdout),
            want,
            "our diff of Go's {}",
            file.display()
        );
        let ours = layer_json(&cs, false, &id);
        let go = layer_json(&cs, true, &id);
        for f in FIELDS {
            assert_eq!(ours[f], go[f], "field {f} of {}", file.display());
        }
    }
}

fn both_tools_record_the_same_digests(driver: &str) {
    if !require(
        go_cs().is_some(),
        "Debian's Go containers-storage (/usr/bin/containers-storage)",
    ) {
        return;
    }
    let tar = sample_layer();
    let (Some(a), Some(b)) = (DriverStore::new(driver), DriverStore::new(driver)) else {
        return;
    };
    for (file, _) in variants(a.dir.path(), &tar) {
        let ours = first_line(&ok(&a.ours(&[
            "import-layer".as_ref(),
            "-f".as_ref(),
            file.as_os_str(),
        ])));
        let go = first_line(&ok(&b.go(&[
            "import-layer".as_ref(),
            "-f".as_ref(),
            file.as_os_str(),
        ])));
        let ours = layer_json(&a, false, &ours);
        let go = layer_json(&b, true, &go);
        for f in FIELDS {
            assert_eq!(ours[f], go[f], "field {f} of {}", file.display());
        }
    }
}
