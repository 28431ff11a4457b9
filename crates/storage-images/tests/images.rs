//! Integration tests of the image store.

use storage_testsupport as common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use storage_images::{BigDataItem, ImageStore, NamesOp, NewImage};
use storage_types::{Digest, ErrorKind, Image, Timestamp};

fn open(root: &Path) -> ImageStore {
    ImageStore::open(&root.join("G/vfs-images"), &root.join("R/vfs-images")).expect("open store")
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn new_image(id: &str, n: &[&str]) -> NewImage {
    NewImage {
        id: Some(id.to_owned()),
        names: names(n),
        ..NewImage::default()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

#[test]
fn go_written_records_round_trip_and_go_reads_ours() {
    let Some(cli) = common::go_cli() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let go = |args: &[&str], stdin: Option<&[u8]>| common::go(&cli, root, args, stdin);
    let img1 = common::first_line(&go(
        &[
            "create-image",
            "-n",
            "img1",
            "-n",
            "a<b>&c \"q\" é",
            "--digest",
            D1,
            "-m",
            "{\"meta\":1}",
        ],
        None,
    ));
    let img2 = common::first_line(&go(&["create-image", "-n", "img2"], None));
    go(
        &["set-image-data", "img2", "manifest-sha256:aa"],
        Some(b"hello"),
    );
    go(&["set-image-data", "img2", "config.json"], Some(b"cfg"));
    go(&["set-image-data", "img2", "Lower.Key-1"], Some(b"x"));
    go(&["add-names", "-n", "img1", "-n", "extra", "img2"], None);
    let json_path = root.join("G/vfs-images/images.json");
    let original = std::fs::read(&json_path).expect("read images.json");

    let store = open(root);
    {
        let images = store.read().expect("read");
        assert_eq!(images.images().len(), 2);
        let i2 = images.get("img1").expect("img1 moved to the second image");
        assert_eq!(i2.id, img2);
        assert_eq!(images.get(&img1[..5]).expect("prefix").id, img1);
        assert_eq!(
            images.big_data(&img2, "manifest-sha256:aa").expect("data"),
            b"hello"
        );
        assert_eq!(images.big_data_size(&img2, "config.json").expect("size"), 3);
        assert_eq!(
            images
                .big_data_digest(&img2, "config.json")
                .expect("digest"),
            Digest::sha256(b"cfg")
        );
        // The manifest digest became "the" digest.
        assert_eq!(i2.digest, Digest::sha256(b"hello").to_string());
        assert_eq!(images.by_digest(&Digest::sha256(b"hello")).len(), 1);
        assert_eq!(images.by_digest(&D1.parse().expect("digest"))[0].id, img1);
    }
    // Saving without a change reproduces Go's bytes.
    {
        let mut images = store.write().expect("write");
        let md = images.get(&img1).expect("img1").metadata.clone();
        images.set_metadata(&img1, &md).expect("set metadata");
    }
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(&json_path).expect("reread")),
        String::from_utf8_lossy(&original)
    );

    // Our changes are visible to Go.
    let created;
    {
        let mut images = store.write().expect("write");
        images
            .update_names(&img1, &names(&["rust-name"]), NamesOp::Add)
            .expect("add names");
        images
            .set_big_data(&img1, "from-rust", b"rust data", None)
            .expect("set data");
        created = images
            .create(NewImage {
                names: names(&["rust-image"]),
                metadata: "made by rust".into(),
                digest: Some(D1.replace('1', "2")),
                ..NewImage::default()
            })
            .expect("create");
    }
    let listing = go(&["images", "--json"], None);
    let parsed: Vec<Image> = serde_json::from_str(&listing).expect("Go output parses");
    let go1 = parsed
        .iter()
        .find(|i| i.id == img1)
        .expect("img1 listed by Go");
    assert_eq!(go1.names, names(&["rust-name", "a<b>&c \"q\" é"]));
    assert_eq!(go1.big_data_names, names(&["from-rust"]));
    let go3 = parsed
        .iter()
        .find(|i| i.id == created.id)
        .expect("new image listed by Go");
    assert_eq!(go3.names, names(&["rust-image"]));
    assert_eq!(go3.metadata, "made by rust");
    let data = go(&["get-image-data", &img1, "from-rust"], None);
    assert_eq!(data, "rust data");
    let size = go(&["get-image-data-size", &img1, "from-rust"], None);
    assert_eq!(size.trim(), "9");
    let digest = go(&["get-image-data-digest", &img1, "from-rust"], None);
    assert_eq!(digest.trim(), Digest::sha256(b"rust data").to_string());
    // A manifest stored by us feeds Go's digest lookup.
    let m = Digest::sha256(b"{\"schemaVersion\":2}");
    store
        .write()
        .expect("write")
        .set_big_data(
            &created.id,
            "manifest",
            b"{\"schemaVersion\":2}",
            Some(m.clone()),
        )
        .expect("manifest");
    let by_digest = go(&["images-by-digest", "-q", &m.to_string()], None);
    assert_eq!(by_digest.trim(), created.id);

    // And Go's later changes are visible to us (token changed).
    go(&["set-metadata", "-m", "go again", &created.id], None);
    let images = store.read().expect("read");
    assert_eq!(
        images.get(&created.id).expect("created").metadata,
        "go again"
    );
}

#[test]
fn create_validates_names_ids_and_digests() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path());
    let mut images = store.write().expect("write");
    let a = images
        .create(new_image("aaaa", &["x", "y", "x"]))
        .expect("create");
    assert_eq!(a.names, names(&["x", "y"]), "names are de-duplicated");
    assert!(!a.created.is_zero());

    let err = images
        .create(new_image("bbbb", &["z", "y"]))
        .expect_err("name taken");
    assert_eq!(err.kind(), ErrorKind::DuplicateName);
    assert_eq!(
        err.to_string(),
        "image name \"y\" is already associated with image \"aaaa\": that name is already in use"
    );
    let err = images.create(new_image("aaaa", &[])).expect_err("id taken");
    assert_eq!(err.kind(), ErrorKind::DuplicateId);
    assert_eq!(err.to_string(), "that ID is already in use");

    let err = images
        .create(NewImage {
            digest: Some("bogus".into()),
            ..NewImage::default()
        })
        .expect_err("bad digest");
    assert_eq!(
        err.to_string(),
        "validating digests for new image: validating image digest \"bogus\": invalid checksum digest format"
    );
    assert_eq!(images.images().len(), 1, "failed creations leave no record");

    let generated = images.create(NewImage::default()).expect("generated id");
    assert!(storage_types::is_full_id(&generated.id));
    let when = Timestamp::parse("2024-01-01T00:00:00+02:00").expect("time");
    let dated = images
        .create(NewImage {
            created: Some(when),
            ..NewImage::default()
        })
        .expect("dated");
    assert_eq!(dated.created, when);
    drop(images);
    let json = std::fs::read_to_string(store.json_path()).expect("json");
    assert!(
        json.contains("\"created\":\"2024-01-01T00:00:00+02:00\""),
        "{json}"
    );
    assert_eq!(mode(&store.json_path()), 0o600);
}

#[test]
fn names_move_between_images_and_feed_history() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path());
    let mut images = store.write().expect("write");
    images
        .create(new_image("one", &["test", "test2"]))
        .expect("one");
    images.create(new_image("two", &["test3"])).expect("two");

    let result = images
        .update_names("two", &names(&["test2"]), NamesOp::Add)
        .expect("add");
    assert_eq!(result, names(&["test2", "test3"]), "given names go first");
    let two = images.get("two").expect("two");
    assert_eq!(two.names_history, names(&["test3", "test2"]));
    assert_eq!(
        images.get("one").expect("one").names,
        names(&["test"]),
        "name silently taken"
    );
    assert_eq!(images.get("test2").expect("by name").id, "two");

    images
        .update_names("two", &names(&["b", "a", "b"]), NamesOp::Set)
        .expect("set");
    let two = images.get("two").expect("two");
    assert_eq!(two.names, names(&["b", "a"]));
    assert_eq!(two.names_history, names(&["a", "b", "test3", "test2"]));
    assert!(images.lookup_image("test3").is_none());

    images
        .update_names("two", &names(&["a"]), NamesOp::Remove)
        .expect("remove");
    assert_eq!(images.get("two").expect("two").names, names(&["b"]));
    let err = images
        .update_names("nope", &[], NamesOp::Add)
        .expect_err("unknown");
    assert_eq!(err.kind(), ErrorKind::ImageUnknown);
    assert_eq!(
        err.to_string(),
        "locating image with ID \"nope\": image not known"
    );

    // Saved even when nothing changes: the token moves.
    let lock = store.dir().join("images.lock");
    drop(images);
    let before = std::fs::read(&lock).expect("lock");
    store
        .write()
        .expect("write")
        .update_names("two", &[], NamesOp::Add)
        .expect("noop");
    assert_ne!(std::fs::read(&lock).expect("lock"), before);
}

#[test]
fn lookup_order_id_name_prefix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path());
    let mut images = store.write().expect("write");
    images.create(new_image("abc123", &[])).expect("a");
    images.create(new_image("abd456", &["abc123x"])).expect("b");
    images.create(new_image("ffff", &["abc"])).expect("c");
    assert_eq!(images.get("abc").expect("name shadows prefix").id, "ffff");
    assert_eq!(images.get("abc1").expect("prefix").id, "abc123");
    assert!(images.get("ab").is_err(), "ambiguous prefix");
    assert_eq!(images.get("abc123x").expect("name").id, "abd456");
    assert!(images.exists("abd"));
    assert!(!images.exists("zz"));
}

#[test]
fn big_data_files_sizes_digests_and_manifest_digests() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path());
    let mut images = store.write().expect("write");
    let id = images.create(new_image("img", &["n"])).expect("create").id;
    images
        .set_big_data(&id, "config.json", b"cfg", None)
        .expect("config");
    images
        .set_big_data(&id, "Manifest", b"capital", None)
        .expect("not a manifest key");
    images
        .set_big_data(&id, "lower.case-key.1", b"0123456789", None)
        .expect("encoded");
    images
        .set_big_data(&id, "???", b"q", None)
        .expect("trailing slash vanishes");
    let err = images
        .set_big_data(&id, "manifest", b"m", None)
        .expect_err("manifest needs digest");
    assert_eq!(err.kind(), ErrorKind::DigestUnknown);
    let err = images
        .set_big_data(&id, "", b"m", None)
        .expect_err("empty key");
    assert_eq!(err.kind(), ErrorKind::InvalidBigDataName);
    assert!(images.get(&id).expect("img").digest.is_empty());

    let m = Digest::sha256(b"manifest bytes");
    images
        .set_big_data(
            &id,
            "manifest-sha256:abcd",
            b"manifest bytes",
            Some(m.clone()),
        )
        .expect("manifest");
    let image = images.get(&id).expect("img");
    assert_eq!(image.digest, m.to_string(), "digest auto-filled");
    assert_eq!(
        images.digests(&id).expect("digests"),
        std::slice::from_ref(&m)
    );
    assert_eq!(images.by_digest(&m).len(), 1);
    // A second manifest digest is added to the list, the first stays "the" digest.
    let m2: Digest = D1.parse().expect("digest");
    images
        .set_big_data(&id, "manifest", b"other", Some(m2.clone()))
        .expect("manifest 2");
    assert_eq!(images.digests(&id).expect("digests").len(), 2);
    assert_eq!(images.get(&id).expect("img").digest, m.to_string());
    assert_eq!(images.by_digest(&m2)[0].id, id);

    let dir = store.dir().join(&id);
    for file in [
        "config.json",
        "=TWFuaWZlc3Q=",
        "=bG93ZXIuY2FzZS1rZXkuMQ==",
        "=Pz8",
        "=bWFuaWZlc3Qtc2hhMjU2OmFiY2Q=",
        "manifest",
    ] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(std::fs::read(dir.join("=Pz8")).expect("???"), b"q");
    assert_eq!(
        images.big_data_size(&id, "lower.case-key.1").expect("size"),
        10
    );
    assert_eq!(
        images.big_data_digest(&id, "config.json").expect("digest"),
        Digest::sha256(b"cfg")
    );
    assert_eq!(
        images.big_data_names(&id).expect("names"),
        names(&[
            "config.json",
            "Manifest",
            "lower.case-key.1",
            "???",
            "manifest-sha256:abcd",
            "manifest"
        ])
    );

    // Go's error texts for missing items.
    let err = images.big_data(&id, "nosuch").expect_err("missing");
    assert_eq!(
        err.to_string(),
        format!(
            "locating item named \"nosuch\" for image with ID \"{id}\" (consider removing the image to resolve the issue): file does not exist"
        )
    );
    assert_eq!(
        images
            .big_data_size(&id, "nosuch")
            .expect_err("size")
            .to_string(),
        "size is not known"
    );
    assert_eq!(
        images
            .big_data_digest(&id, "nosuch")
            .expect_err("digest")
            .to_string(),
        "could not compute digest of item"
    );

    // Setting the same bytes again does not save (token unchanged).
    drop(images);
    let lock = store.dir().join("images.lock");
    let before = std::fs::read(&lock).expect("lock");
    store
        .write()
        .expect("write")
        .set_big_data(&id, "config.json", b"cfg", None)
        .expect("same");
    assert_eq!(std::fs::read(&lock).expect("lock"), before);
    store
        .write()
        .expect("write")
        .set_big_data(&id, "config.json", b"cfg2", None)
        .expect("new");
    assert_ne!(std::fs::read(&lock).expect("lock"), before);

    // The on-disk record carries sizes and digests (sorted keys).
    let json = std::fs::read_to_string(store.json_path()).expect("json");
    assert!(
        json.contains("\"big-data-sizes\":{\"???\":1,\"Manifest\":7,\"config.json\":4,"),
        "{json}"
    );
}

#[test]
fn initial_big_data_and_failed_creation_cleanup() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path());
    let mut images = store.write().expect("write");
    let m = Digest::sha256(b"mf");
    let image = images
        .create(NewImage {
            id: Some("withdata".into()),
            big_data: vec![
                BigDataItem {
                    key: "manifest".into(),
                    data: b"mf".to_vec(),
                    digest: Some(m.clone()),
                },
                BigDataItem {
                    key: "cfg".into(),
                    data: b"c".to_vec(),
                    digest: None,
                },
            ],
            ..NewImage::default()
        })
        .expect("create");
    assert_eq!(image.digest, m.to_string());
    assert_eq!(
        image.big_data_digests["cfg"],
        Digest::sha256(b"c").to_string()
    );
    // A big-data key Go cannot store makes the creation fail and roll back.
    let err = images
        .create(NewImage {
            id: Some("bad".into()),
            names: names(&["bad-name"]),
            big_data: vec![BigDataItem {
                key: "???a".into(),
                data: b"x".to_vec(),
                digest: None,
            }],
            ..NewImage::default()
        })
        .expect_err("unstorable key");
    assert_eq!(err.kind(), ErrorKind::InvalidBigDataName);
    assert!(!images.exists("bad"));
    assert!(!images.exists("bad-name"));
    assert!(!store.dir().join("bad").exists());
}

#[test]
fn token_changes_are_seen_and_unchanged_tokens_do_not_reload() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = open(tmp.path());
    let b = open(tmp.path());
    a.write()
        .expect("write")
        .create(new_image("one", &["n1"]))
        .expect("create");
    assert_eq!(
        b.read().expect("read").get("n1").expect("seen by b").id,
        "one"
    );

    // Change the file behind the stores' back without a new token: the cached
    // copy stays in use (no reload without a token change).
    let json = std::fs::read(a.json_path()).expect("json");
    std::fs::write(a.json_path(), b"[]").expect("tamper");
    assert!(
        b.read().expect("read").exists("one"),
        "no reload while the token is unchanged"
    );
    std::fs::write(a.json_path(), &json).expect("restore");

    // A write through `a` (new token) is seen by `b`.
    a.write()
        .expect("write")
        .set_metadata("one", "meta")
        .expect("meta");
    assert_eq!(
        b.read().expect("read").get("one").expect("one").metadata,
        "meta"
    );
    // The token is written before the data: the lock holds 64 bytes.
    assert_eq!(
        std::fs::read(a.dir().join("images.lock"))
            .expect("lock")
            .len(),
        64
    );
}

#[test]
fn damaged_files_give_clear_errors_and_are_never_overwritten() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path());
    {
        let mut images = store.write().expect("write");
        images.create(new_image("one", &["n1"])).expect("one");
        images.create(new_image("two", &["n2"])).expect("two");
    }
    let path = store.json_path();
    let good = std::fs::read(&path).expect("json");

    // Truncated.
    let truncated = &good[..good.len() - 20];
    tamper(&store, truncated);
    let other = open_err(tmp.path());
    assert!(
        other.starts_with(&format!("loading {}: ", path.display())),
        "{other}"
    );
    assert!(other.contains("line 1 column"), "{other}");
    assert!(store.write().is_err(), "writes refused on a damaged file");
    assert!(store.read().is_err());
    assert_eq!(
        std::fs::read(&path).expect("json"),
        truncated,
        "damaged file left alone"
    );

    // Invalid digest.
    let bad = String::from_utf8(good.clone()).expect("utf8").replacen(
        "\"id\":\"two\"",
        "\"id\":\"two\",\"digest\":\"sha256:bogus\"",
        1,
    );
    tamper(&store, bad.as_bytes());
    let err = store.read().err().expect("invalid digest fails the load");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(
        err.to_string()
            .contains("validating image digest \"sha256:bogus\""),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).expect("json"), bad.as_bytes());

    // Not JSON at all.
    tamper(&store, b"\x00\x01garbage");
    assert!(store.read().is_err());

    // Empty file = empty store.
    tamper(&store, b"");
    assert!(store.read().expect("empty is fine").images().is_empty());
    tamper(&store, b"null");
    assert!(store.read().expect("null is fine").images().is_empty());

    // Duplicate names: the later record wins, fixed and saved under the lock,
    // the other records are kept.
    let dup = String::from_utf8(good)
        .expect("utf8")
        .replace("\"names\":[\"n2\"]", "\"names\":[\"n1\",\"n2\"]");
    tamper(&store, dup.as_bytes());
    {
        let images = store.read().expect("repaired");
        assert_eq!(images.images().len(), 2);
        assert!(images.get("one").expect("one kept").names.is_empty());
        assert_eq!(images.get("n1").expect("n1").id, "two");
    }
    let saved = std::fs::read_to_string(&path).expect("json");
    assert!(saved.contains("{\"id\":\"one\",\"created\""), "{saved}");

    // A read-only store refuses to load duplicate names.
    let ro_dir = tmp.path().join("ro/vfs-images");
    std::fs::create_dir_all(&ro_dir).expect("mkdir");
    std::fs::write(ro_dir.join("images.json"), &dup).expect("dup");
    let ro_err = ImageStore::open_read_only(&ro_dir, &tmp.path().join("R/vfs-images"))
        .expect_err("ro dup names");
    assert_eq!(
        ro_err.to_string(),
        "read-only image store assigns the same name to multiple images"
    );
}

/// Replaces `images.json` like another process would: new data, new token.
fn tamper(store: &ImageStore, data: &[u8]) {
    std::fs::write(store.json_path(), data).expect("write images.json");
    let token: Vec<u8> = (0..64).map(|i| i ^ data.len() as u8 ^ 0x5a).collect();
    std::fs::write(store.dir().join("images.lock"), token).expect("write token");
}

fn open_err(root: &Path) -> String {
    ImageStore::open(&root.join("G/vfs-images"), &root.join("R/vfs-images"))
        .expect_err("open must fail")
        .to_string()
}

#[test]
fn read_only_store_refuses_writes_and_pull_up_copies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ro_dir = tmp.path().join("ais/vfs-images");
    let m = Digest::sha256(b"mf");
    {
        let rw = ImageStore::open(&ro_dir, &tmp.path().join("run")).expect("prepare");
        let mut images = rw.write().expect("write");
        images
            .create(NewImage {
                id: Some("roimg".into()),
                names: names(&["shared"]),
                layer: "toplayer".into(),
                metadata: "md".into(),
                big_data: vec![BigDataItem {
                    key: "manifest".into(),
                    data: b"mf".to_vec(),
                    digest: Some(m.clone()),
                }],
                ..NewImage::default()
            })
            .expect("create");
        images
            .update_names("roimg", &names(&["shared", "old"]), NamesOp::Set)
            .expect("names");
    }
    let lock_before = std::fs::read(ro_dir.join("images.lock")).expect("lock");
    let json_before = std::fs::read(ro_dir.join("images.json")).expect("json");
    // Drop the first store's lock registration by using a fresh path view: the
    // lock registry is per path, so open read-only through a symlinked dir.
    let alias = tmp.path().join("alias");
    std::os::unix::fs::symlink(tmp.path().join("ais"), &alias).expect("symlink");
    let ro = ImageStore::open_read_only(&alias.join("vfs-images"), &tmp.path().join("run"));
    let ro = match ro {
        Ok(Some(ro)) => ro,
        Ok(None) => panic!("not a read-only file system"),
        Err(e) => panic!("open read-only: {e}"),
    };
    assert!(ro.is_read_only());
    assert_eq!(
        ro.read_only_error("save data items associated with images")
            .to_string(),
        format!(
            "not allowed to save data items associated with images at \"{}\": called a write method on a read-only store",
            alias.join("vfs-images/images.json").display()
        )
    );
    let err = ro.write().err().expect("read-only");
    assert_eq!(err.kind(), ErrorKind::StoreIsReadOnly);
    assert!(
        err.to_string()
            .ends_with("called a write method on a read-only store"),
        "{err}"
    );
    let view = ro.read().expect("read");
    let image = view.get("old").expect("found");
    assert!(image.read_only);
    let options = view.pull_up_options("roimg").expect("pull-up options");
    drop(view);
    assert_eq!(
        std::fs::read(ro_dir.join("images.lock")).expect("lock"),
        lock_before
    );
    assert_eq!(
        std::fs::read(ro_dir.join("images.json")).expect("json"),
        json_before
    );

    // Pull the image up into a read-write store.
    let rw = open(tmp.path());
    let mut images = rw.write().expect("write");
    let copy = images.create(options).expect("pull up");
    assert_eq!(copy.id, "roimg");
    assert_eq!(copy.names, names(&["shared", "old"]));
    assert_eq!(copy.names_history, image_history());
    assert_eq!(copy.layer, "toplayer");
    assert_eq!(copy.metadata, "md");
    assert_eq!(copy.digest, m.to_string());
    assert_eq!(images.big_data("roimg", "manifest").expect("copied"), b"mf");
    assert_eq!(
        images.big_data_digest("roimg", "manifest").expect("digest"),
        m
    );
}

fn image_history() -> Vec<String> {
    names(&["old", "shared"])
}

#[test]
fn delete_wipe_mapped_layers_flags_and_dirs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path());
    let mut images = store.write().expect("write");
    images.create(new_image("one", &["n1"])).expect("one");
    images.create(new_image("two", &["n2"])).expect("two");
    images.set_big_data("one", "k", b"v", None).expect("data");
    images.add_mapped_layer("one", "mapped1").expect("map");
    images.add_mapped_layer("one", "mapped2").expect("map");
    images.remove_mapped_layer("one", "mapped1").expect("unmap");
    assert_eq!(
        images.get("one").expect("one").mapped_layers,
        names(&["mapped2"])
    );
    images
        .set_flag("one", "f", serde_json::json!(true))
        .expect("flag");
    assert_eq!(
        images.get("one").expect("one").flags["f"],
        serde_json::json!(true)
    );
    images.clear_flag("one", "f").expect("clear");
    assert!(images.get("one").expect("one").flags.is_empty());
    drop(images);

    let dir = store.image_dir("one").expect("image dir");
    assert_eq!(dir, store.dir().join("one/userdata"));
    assert_eq!(mode(&dir), 0o700);
    let run = store.image_run_dir("one").expect("run dir");
    assert_eq!(run, tmp.path().join("R/vfs-images/one/userdata"));
    assert!(run.is_dir());
    assert!(store.image_dir("../x").is_err());

    let mut images = store.write().expect("write");
    images.delete("n1").expect("delete by name");
    assert!(!store.dir().join("one").exists(), "data dir removed");
    assert!(!images.exists("one"));
    assert_eq!(
        images.delete("one").expect_err("gone").kind(),
        ErrorKind::ImageUnknown
    );
    images.wipe().expect("wipe");
    assert!(images.images().is_empty());
    drop(images);
    assert_eq!(std::fs::read(store.json_path()).expect("json"), b"[]");
}

fn run(cmd: &str, args: &[&str]) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Unmounts on drop so a failing test leaves no mount behind.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let path = self.0.to_string_lossy().into_owned();
        if !run("umount", &[&path]) {
            eprintln!("could not unmount {path}");
        }
    }
}

#[test]
fn read_only_file_system_without_lock_file_is_skipped() {
    let need = |why: &str| {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("this test needs {why} in CI");
        }
        eprintln!("SKIPPING read_only_file_system test: needs {why}");
    };
    if !storage_testsupport::is_root() {
        return need("root");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mnt_s = mnt.to_string_lossy().into_owned();
    if !run("mount", &["-t", "tmpfs", "tmpfs", &mnt_s]) {
        return need("permission to mount tmpfs");
    }
    let _guard = Mounted(mnt.clone());
    let record = b"[{\"id\":\"roimage\",\"names\":[\"ro\"],\"created\":\"0001-01-01T00:00:00Z\"}]";
    for store in ["nolock", "withlock"] {
        let dir = mnt.join(store).join("vfs-images");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("images.json"), record).expect("json");
    }
    std::fs::write(mnt.join("withlock/vfs-images/images.lock"), b"").expect("lock");
    assert!(
        run("mount", &["-o", "remount,ro", &mnt_s]),
        "remount read-only"
    );

    let run_dir = tmp.path().join("run");
    let skipped = ImageStore::open_read_only(&mnt.join("nolock/vfs-images"), &run_dir)
        .expect("EROFS is not an error");
    assert!(
        skipped.is_none(),
        "a store whose lock cannot be created is skipped"
    );
    let store = ImageStore::open_read_only(&mnt.join("withlock/vfs-images"), &run_dir)
        .expect("open")
        .expect("an existing lock file can be opened");
    let images = store.read().expect("read");
    assert_eq!(images.get("ro").expect("ro").id, "roimage");
    assert!(images.get("ro").expect("ro").created.is_zero());
}

#[test]
fn concurrent_threads_share_one_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = std::sync::Arc::new(open(tmp.path()));
    let mut handles = Vec::new();
    for t in 0..4 {
        let store = std::sync::Arc::clone(&store);
        handles.push(std::thread::spawn(move || {
            for i in 0..10 {
                let name = format!("t{t}-i{i}");
                let id = store
                    .write()
                    .expect("write")
                    .create(new_image(&format!("id-{name}"), &[&name]))
                    .expect("create")
                    .id;
                let images = store.read().expect("read");
                assert_eq!(images.get(&name).expect("own image visible").id, id);
            }
        }));
    }
    for h in handles {
        h.join().expect("thread");
    }
    assert_eq!(store.read().expect("read").images().len(), 40);
    let fresh = ImageStore::open(store.dir(), &tmp.path().join("R/vfs-images")).expect("reopen");
    assert_eq!(fresh.read().expect("read").images().len(), 40);
}

#[test]
fn go_waits_for_our_read_guard_and_we_see_its_write() {
    let Some(cli) = common::go_cli() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let id = common::first_line(&common::go(
        &cli,
        root,
        &["create-image", "-n", "img"],
        None,
    ));
    let store = open(root);
    let guard = store.read().expect("read");
    assert_eq!(guard.get("img").expect("img").metadata, "");
    let mut child = std::process::Command::new(&cli)
        .arg("--graph")
        .arg(root.join("G"))
        .arg("--run")
        .arg(root.join("R"))
        .args([
            "--storage-driver",
            "vfs",
            "set-metadata",
            "-m",
            "from go",
            &id,
        ])
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "Go must wait for our shared lock"
    );
    drop(guard);
    assert!(child.wait().expect("wait").success());
    assert_eq!(
        store.read().expect("read").get(&id).expect("img").metadata,
        "from go"
    );
}

#[test]
fn duplicate_names_are_repaired_exactly_like_go() {
    let Some(cli) = common::go_cli() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let damaged = "[{\"id\":\"aaaa\",\"names\":[\"n1\",\"n3\"],\"created\":\"2026-11-27T21:39:47.964336689Z\"},\
{\"id\":\"bbbb\",\"names\":[\"n1\",\"n2\"],\"created\":\"2026-11-27T21:39:48.02841432Z\"},\
{\"id\":\"cccc\",\"names\":[\"n3\"],\"created\":\"0001-01-01T00:00:00Z\"}]";
    common::assert_repaired_like_go(
        &cli,
        tmp.path(),
        "vfs-images/images.json",
        damaged,
        &["images", "--json"],
        |root| drop(open(root)),
    );
}
