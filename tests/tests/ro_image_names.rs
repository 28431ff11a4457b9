//! Names on images that live in a read-only image store (`additionalimagestores`), as Go
//! 1.46+ handles them: a rename "pulls the image up" into the read-write store (a copy of the
//! record with its big data, the read-only names first given to the copy), the rename then
//! applies to the copy, the read-only store is never written, and `Store.Image` (CLI `image`,
//! `exists -i`, the image-data commands) no longer resolves a name through the read-only
//! record once the copy exists. Where Debian's Go 1.43 differs (it did not shadow, and its
//! pull-up dropped names), the test follows 1.60 and says so.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use storage_tests::{Cs, go_cs, ok, ours, require};

/// Runs `bin` on the main store of `conf` (no store flags: with them, both CLIs drop the
/// additional image stores of the file).
fn run(bin: &Path, conf: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("STORAGE_OPTS")
        .env_remove("STORAGE_DRIVER")
        .env("CONTAINERS_STORAGE_CONF", conf)
        .stdin(Stdio::null())
        .output()
        .expect("run")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A read-only store with image `ro1`/`ro2` (big data `k`), a main store using it, and the
/// configuration file naming both.
struct Setup {
    ro: Cs,
    main: Cs,
    conf: std::path::PathBuf,
    image: String,
    layer: String,
}

impl Setup {
    fn new() -> Setup {
        let ro = Cs::new("vfs");
        let main = Cs::new("vfs");
        let tar = ro.dir.path().join("l.tar");
        std::fs::write(&tar, storage_tests::tars::sample_layer()).unwrap();
        let layer = ok(&ro.ours_stdin(&["import-layer"], &tar));
        let layer = layer.lines().next().unwrap_or_default().to_string();
        let image = ok(&ro.ours(&["create-image", "-n", "ro1", "-n", "ro2", &layer]));
        let image = image.split_whitespace().next().unwrap().to_string();
        let data = ro.dir.path().join("data");
        std::fs::write(&data, b"hello").unwrap();
        ok(&ro.ours(&["set-image-data", "-f", data.to_str().unwrap(), &image, "k"]));
        let conf = main.dir.path().join("storage.conf");
        std::fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n\n[storage.options]\nadditionalimagestores = [\"{}\"]\n",
                main.graph.display(),
                main.run.display(),
                ro.graph.display()
            ),
        )
        .unwrap();
        Setup {
            ro,
            main,
            conf,
            image,
            layer,
        }
    }

    fn ours(&self, args: &[&str]) -> Output {
        run(ours(), &self.conf, args)
    }

    fn go(&self, args: &[&str]) -> Option<Output> {
        go_cs().map(|g| run(&g, &self.conf, args))
    }

    /// The read-only store's record files.
    fn ro_files(&self) -> Vec<Vec<u8>> {
        ["vfs-images/images.json", "vfs-layers/layers.json"]
            .iter()
            .map(|f| std::fs::read(self.ro.graph.join(f)).unwrap_or_default())
            .collect()
    }

    /// The read-write store's records.
    fn rw_images(&self) -> serde_json::Value {
        let p = self.main.graph.join("vfs-images/images.json");
        serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|_| b"[]".to_vec())).unwrap()
    }
}

#[test]
fn renaming_a_read_only_image_pulls_it_up_and_shadows_removed_names() {
    require(go_cs().is_some(), "Debian's Go containers-storage");
    let s = Setup::new();
    let before = s.ro_files();
    // Add: the copy gets the new name first, then the read-only names, and the big data
    // with its digest.
    ok(&s.ours(&["add-names", "-n", "x", "ro1"]));
    let rw = s.rw_images();
    assert_eq!(rw.as_array().map(Vec::len), Some(1), "{rw}");
    assert_eq!(rw[0]["id"], s.image.as_str());
    assert_eq!(rw[0]["names"], serde_json::json!(["x", "ro1", "ro2"]));
    assert_eq!(rw[0]["layer"], s.layer.as_str());
    assert_eq!(rw[0]["big-data-names"], serde_json::json!(["k"]));
    assert_eq!(
        rw[0]["big-data-digests"]["k"],
        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert!(rw[0].get("mapped-layers").is_none(), "{rw}");
    assert_eq!(s.ro_files(), before, "the read-only store was written");
    // Both records are listed (the same in Go 1.43).
    let listing = ok(&s.ours(&["images"]));
    assert_eq!(listing.matches(&s.image).count(), 2, "{listing}");
    if let Some(g) = s.go(&["images"]) {
        assert_eq!(ok(&g), listing);
    }

    ok(&s.ours(&["remove-names", "-n", "ro2", "ro1"]));
    assert_eq!(s.rw_images()[0]["names"], serde_json::json!(["x", "ro1"]));
    // `image ro2`: the read-only record is shadowed by its copy (1.43 showed it).
    let o = s.ours(&["image", "ro2"]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(1), ""));
    assert_eq!(
        ok(&s.ours(&["image", "ro1"])).lines().next(),
        Some(format!("ID: {}", s.image).as_str())
    );
    // `exists ro2`: the name still exists (through the read-only record), also in 1.43.
    let o = s.ours(&["exists", "ro2"]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "ro2: true\n")
    );
    if let Some(g) = s.go(&["exists", "ro2"]) {
        assert_eq!((g.status.code(), stdout(&g)), (Some(0), stdout(&o)));
    }
    // `exists -i ro2`: true, but not as an image (1.43: exit 0).
    let o = s.ours(&["exists", "-i", "ro2"]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(1), "ro2: true\n")
    );
    // `get-names ro2`: the names of the record its ID finds, the copy's (also 1.43).
    let o = s.ours(&["get-names", "ro2"]);
    assert_eq!(ok(&o), "x\nro1\n");
    if let Some(g) = s.go(&["get-names", "ro2"]) {
        assert_eq!(ok(&g), ok(&o));
    }
    // The image-data commands resolve with `Store.Image` too.
    let o = s.ours(&["list-image-data", "ro2"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "locating image with ID \"ro2\": image not known\n"
    );
    assert_eq!(ok(&s.ours(&["list-image-data", "x"])), "k\n");
    // A container can still be made from the read-only record.
    ok(&s.ours(&["create-container", "ro2"]));
    assert_eq!(s.ro_files(), before, "the read-only store was written");
    // Go 1.43 reads what we wrote.
    if let Some(g) = s.go(&["image", "x"]) {
        assert!(
            ok(&g).contains(&format!("ID: {}", s.image)),
            "{}",
            stdout(&g)
        );
    }
}

#[test]
fn pull_up_fails_when_a_read_only_name_belongs_to_a_read_write_image() {
    let s = Setup::new();
    let before = s.ro_files();
    let other = ok(&s.ours(&["create-image", "-n", "ro2", &s.layer]));
    let other = other.split_whitespace().next().unwrap().to_string();
    // `ro1` resolves to the read-only image; its name `ro2` is taken in the read-write store.
    let o = s.ours(&["set-names", "-n", "y", "ro1"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "image name \"ro2\" is already associated with image \"{other}\": that name is already in use\n"
        )
    );
    let rw = s.rw_images();
    assert_eq!(
        rw.as_array().map(Vec::len),
        Some(1),
        "no copy was made: {rw}"
    );
    assert_eq!(rw[0]["id"], other.as_str());
    assert_eq!(s.ro_files(), before);
}
