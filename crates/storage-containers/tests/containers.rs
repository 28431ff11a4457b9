//! Integration tests of the container store.

use storage_testsupport as common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;
use storage_containers::{ContainerStore, NamesOp, NewContainer};
use storage_types::{Container, Digest, ErrorKind, IdMap};

fn open(root: &Path, transient: bool) -> ContainerStore {
    ContainerStore::open(
        &root.join("G/vfs-containers"),
        &root.join("R/vfs-containers"),
        transient,
    )
    .expect("open store")
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn new_ctr(id: &str, n: &[&str], layer: &str) -> NewContainer {
    NewContainer {
        id: Some(id.to_owned()),
        names: names(n),
        layer: layer.to_owned(),
        ..NewContainer::default()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

/// Replaces a records file like another process would: new data, new token.
fn tamper(store: &ContainerStore, path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write records");
    let token: Vec<u8> = (0..64).map(|i| i ^ data.len() as u8 ^ 0xa5).collect();
    std::fs::write(store.lock_path(), token).expect("write token");
}

#[test]
fn go_written_records_round_trip_and_go_reads_ours() {
    let Some(cli) = common::go_cli() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let go = |args: &[&str], stdin: Option<&[u8]>| common::go(&cli, root, args, stdin);
    go(&["create-image", "-n", "img"], None);
    let c1 = common::first_line(&go(
        &["create-container", "-n", "c1", "-m", "ctr-meta", "img"],
        None,
    ));
    let c2 = common::first_line(&go(
        &[
            "create-container",
            "--volatile",
            "--uidmap",
            "0:100000:65536",
            "--gidmap",
            "0:100000:65536",
            "-n",
            "c2",
            "",
        ],
        None,
    ));
    go(&["set-container-data", "c1", "config.json"], Some(b"data"));
    go(&["set-container-data", "c1", "ConfigX"], Some(b"data"));
    go(&["add-names", "-n", "c1-alias", "c1"], None);
    let json_path = root.join("G/vfs-containers/containers.json");
    let original = std::fs::read(&json_path).expect("read containers.json");

    let store = open(root, false);
    let layer1;
    {
        let ctrs = store.read().expect("read");
        assert_eq!(ctrs.containers().len(), 2);
        let first = ctrs.get("c1-alias").expect("by name");
        assert_eq!(first.id, c1);
        layer1 = first.layer.clone();
        assert_eq!(ctrs.get(&layer1).expect("by layer").id, c1);
        let second = ctrs.get(&c2).expect("c2");
        assert_eq!(second.uidmap, vec![IdMap::new(0, 100_000, 65_536)]);
        assert!(second.is_volatile(), "Volatile flag");
        assert!(
            !ctrs.is_volatile(&c2).expect("c2"),
            "1.43 keeps it in containers.json"
        );
        assert_eq!(ctrs.big_data(&c1, "ConfigX").expect("data"), b"data");
        assert_eq!(
            ctrs.big_data_digest(&c1, "config.json").expect("digest"),
            Digest::sha256(b"data")
        );
    }
    {
        let mut ctrs = store.write().expect("write");
        let md = ctrs.get(&c1).expect("c1").metadata.clone();
        ctrs.set_metadata(&c1, &md).expect("same metadata");
    }
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(&json_path).expect("reread")),
        String::from_utf8_lossy(&original),
        "rewrite is byte-identical"
    );

    let ours;
    {
        let mut ctrs = store.write().expect("write");
        ctrs.update_names(&c1, &names(&["rusty"]), NamesOp::Add)
            .expect("names");
        ctrs.set_big_data(&c1, "from-rust", b"rust").expect("data");
        ours = ctrs
            .create(NewContainer {
                names: names(&["rust-ctr"]),
                layer: "rustlayer".into(),
                metadata: "rust meta".into(),
                ..NewContainer::default()
            })
            .expect("create");
        ctrs.create(NewContainer {
            names: names(&["rust-volatile"]),
            layer: "rustlayer2".into(),
            volatile: true,
            ..NewContainer::default()
        })
        .expect("create volatile");
    }
    let listing = go(&["containers", "--json"], None);
    let parsed: Vec<Container> = serde_json::from_str(&listing).expect("Go output parses");
    let go1 = parsed.iter().find(|c| c.id == c1).expect("c1 listed");
    // 1.43's add-names appended "c1-alias"; ours puts the new name first.
    assert_eq!(go1.names, names(&["rusty", "c1", "c1-alias"]));
    assert_eq!(
        go1.big_data_names,
        names(&["config.json", "ConfigX", "from-rust"])
    );
    let go3 = parsed
        .iter()
        .find(|c| c.id == ours.id)
        .expect("ours listed");
    assert_eq!(go3.metadata, "rust meta");
    assert_eq!(go3.flags.get("MountLabel"), Some(&json!("")));
    assert_eq!(go3.flags.get("ProcessLabel"), Some(&json!("")));
    assert!(
        !parsed
            .iter()
            .any(|c| c.names.contains(&"rust-volatile".to_owned())),
        "1.43 does not read volatile-containers.json"
    );
    assert_eq!(go(&["get-container-data", &c1, "from-rust"], None), "rust");

    // Go's change is picked up (token changed).
    go(&["set-metadata", "-m", "from go", &ours.id], None);
    assert_eq!(
        store
            .read()
            .expect("read")
            .get(&ours.id)
            .expect("ours")
            .metadata,
        "from go"
    );
}

#[test]
fn create_rules_names_maps_labels() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path(), false);
    let mut ctrs = store.write().expect("write");
    let c = ctrs
        .create(new_ctr("c1id", &["dc", "dc"], "l1"))
        .expect("create");
    assert_eq!(c.names, names(&["dc"]));
    assert_eq!(c.image, "");
    assert_eq!(c.flags.get("MountLabel"), Some(&json!("")));
    assert!(!c.created.is_zero());

    let err = ctrs
        .create(new_ctr("c2id", &["dc"], "l2"))
        .expect_err("name taken");
    assert_eq!(err.kind(), ErrorKind::DuplicateName);
    assert_eq!(
        err.to_string(),
        "the container name \"dc\" is already in use by c1id. You have to remove that container to be able to reuse that name: that name is already in use"
    );
    assert_eq!(
        ctrs.create(new_ctr("c1id", &[], "l3"))
            .expect_err("id")
            .kind(),
        ErrorKind::DuplicateId
    );

    let mut overlapping = new_ctr("c4", &[], "l4");
    overlapping.uid_map = vec![IdMap::new(0, 1000, 10), IdMap::new(5, 2000, 10)];
    let err = ctrs.create(overlapping).expect_err("overlap");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("conflicts with other mappings"),
        "{err}"
    );
    let mut host_overlap = new_ctr("c5", &[], "l5");
    host_overlap.gid_map = vec![IdMap::new(0, 1000, 10), IdMap::new(100, 1009, 1)];
    assert!(ctrs.create(host_overlap).is_err());
    let mut fine = new_ctr("c6", &[], "l6");
    fine.uid_map = vec![IdMap::new(0, 1000, 10), IdMap::new(10, 1010, 10)];
    ctrs.create(fine).expect("adjacent ranges are fine");

    let mut lone = new_ctr("c7", &[], "l7");
    lone.flags.insert(
        "MountLabel".into(),
        json!("system_u:object_r:container_file_t:s0"),
    );
    assert_eq!(
        ctrs.create(lone).expect_err("lone label").kind(),
        ErrorKind::InvalidInput
    );
    let mut labelled = new_ctr("c8", &[], "l8");
    labelled.flags.insert("MountLabel".into(), json!("m"));
    labelled.flags.insert("ProcessLabel".into(), json!("p"));
    labelled.mount_opts = Some(names(&["nodev"]));
    labelled.image = "imageid".into();
    let c8 = ctrs.create(labelled).expect("labels");
    assert_eq!(c8.mount_label(), "m");
    assert_eq!(c8.process_label(), "p");
    assert_eq!(c8.mount_opts(), names(&["nodev"]));
    assert_eq!(c8.image, "imageid");
    assert!(!c8.is_volatile());
    assert_eq!(
        ctrs.containers().len(),
        3,
        "failed creations leave nothing behind"
    );
    drop(ctrs);
    let json = std::fs::read_to_string(store.json_path()).expect("json");
    assert!(
        json.contains(
            "\"flags\":{\"MountLabel\":\"m\",\"MountOpts\":[\"nodev\"],\"ProcessLabel\":\"p\"}"
        ),
        "{json}"
    );
    assert!(
        json.starts_with(
            "[{\"id\":\"c1id\",\"names\":[\"dc\"],\"image\":\"\",\"layer\":\"l1\",\"created\":"
        ),
        "{json}"
    );
    assert_eq!(mode(store.json_path()), 0o600);
    assert!(
        !store.volatile_json_path().exists(),
        "no volatile file without volatile containers"
    );
}

#[test]
fn lookup_and_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path(), false);
    let mut ctrs = store.write().expect("write");
    ctrs.create(new_ctr("abc1", &["one"], "layer-a"))
        .expect("a");
    ctrs.create(new_ctr("abd2", &["two"], "layer-b"))
        .expect("b");
    assert_eq!(ctrs.get("layer-b").expect("layer").id, "abd2");
    assert_eq!(ctrs.get("abc").expect("prefix").id, "abc1");
    assert!(ctrs.get("ab").is_err());
    let err = ctrs.get("nope").expect_err("unknown");
    assert_eq!(err.to_string(), "container not known");

    let got = ctrs
        .update_names("abd2", &names(&["one"]), NamesOp::Add)
        .expect("steal");
    assert_eq!(got, names(&["one", "two"]));
    assert!(ctrs.get("abc1").expect("a").names.is_empty());
    ctrs.update_names("abd2", &names(&["two"]), NamesOp::Remove)
        .expect("remove");
    assert_eq!(ctrs.get("abd2").expect("b").names, names(&["one"]));
    ctrs.update_names("abd2", &names(&["x", "y"]), NamesOp::Set)
        .expect("set");
    assert_eq!(ctrs.get("y").expect("y").id, "abd2");
    assert!(!ctrs.exists("one"));
}

#[test]
fn volatile_and_transient_paths() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    {
        let store = open(root, false);
        let mut ctrs = store.write().expect("write");
        ctrs.create(new_ctr("stable", &["s"], "ls"))
            .expect("stable");
        let mut v = new_ctr("vol", &["v"], "lv");
        v.volatile = true;
        let vol = ctrs.create(v).expect("volatile");
        assert!(vol.is_volatile());
        drop(ctrs);
        let g = root.join("G/vfs-containers");
        assert!(g.join("containers.lock").exists());
        let stable = std::fs::read_to_string(g.join("containers.json")).expect("stable");
        let volatile =
            std::fs::read_to_string(g.join("volatile-containers.json")).expect("volatile");
        assert!(stable.contains("\"stable\"") && !stable.contains("\"vol\""));
        assert!(volatile.contains("\"id\":\"vol\"") && volatile.contains("\"Volatile\":true"));
        // Deleting the volatile one rewrites only its file.
        let before = std::fs::read(g.join("containers.json")).expect("stable");
        store.write().expect("write").delete("v").expect("delete");
        assert_eq!(
            std::fs::read(g.join("containers.json")).expect("stable"),
            before
        );
        assert_eq!(
            std::fs::read(g.join("volatile-containers.json")).expect("volatile"),
            b"[]"
        );
    }

    let troot = root.join("transient");
    let store = open(&troot, true);
    let mut ctrs = store.write().expect("write");
    let c = ctrs.create(new_ctr("t1", &["t"], "lt")).expect("create");
    assert!(c.is_volatile(), "transient containers are volatile");
    ctrs.set_big_data("t1", "k1", b"v").expect("data");
    drop(ctrs);
    let g = troot.join("G/vfs-containers");
    let r = troot.join("R/vfs-containers");
    assert!(r.join("containers.lock").exists());
    assert!(r.join("volatile-containers.json").exists());
    assert!(!g.join("containers.lock").exists());
    assert!(!g.join("containers.json").exists());
    assert!(
        g.join("t1/k1").exists(),
        "big data stays under the graph root"
    );
    let ctrs = store.read().expect("read");
    assert_eq!(ctrs.container_dir("t").expect("dir"), g.join("t1/userdata"));
    assert_eq!(
        ctrs.container_run_dir("t").expect("run dir"),
        r.join("t1/userdata")
    );
    assert_eq!(mode(&r.join("t1/userdata")), 0o700);
    assert_eq!(store.lock_path(), r.join("containers.lock"));
}

#[test]
fn big_data_refill_and_delete_dirs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path(), false);
    let mut ctrs = store.write().expect("write");
    ctrs.create(new_ctr("c", &["n"], "l")).expect("create");
    ctrs.set_big_data("n", "config.json", b"abc").expect("data");
    ctrs.set_big_data("n", "ConfigX", b"xyz").expect("data");
    assert_eq!(
        ctrs.big_data_names("c").expect("names"),
        names(&["config.json", "ConfigX"])
    );
    let dir = store.dir().join("c");
    assert_eq!(
        std::fs::read(dir.join("=Q29uZmlnWA==")).expect("encoded"),
        b"xyz"
    );
    assert_eq!(mode(&dir.join("config.json")), 0o600);
    let err = ctrs.big_data("c", "missing").expect_err("missing");
    assert_eq!(
        err.to_string(),
        format!(
            "open {}: no such file or directory",
            dir.join("missing").display()
        )
    );
    assert_eq!(
        ctrs.big_data_size("c", "missing").expect_err("size").kind(),
        ErrorKind::SizeUnknown
    );
    assert_eq!(
        ctrs.big_data_digest("c", "missing")
            .expect_err("digest")
            .kind(),
        ErrorKind::DigestUnknown
    );
    drop(ctrs);

    // Another writer dropped the recorded size and digest: Go refills them.
    let json = std::fs::read_to_string(store.json_path()).expect("json");
    let stripped = json
        .replace(",\"big-data-sizes\":{\"ConfigX\":3,\"config.json\":3}", "")
        .replace(
            &format!(",\"config.json\":\"{}\"", Digest::sha256(b"abc")),
            "",
        );
    assert_ne!(stripped, json);
    tamper(&store, store.json_path(), stripped.as_bytes());
    {
        let ctrs = store.read().expect("read");
        assert_eq!(
            ctrs.big_data_size("c", "config.json").expect("from file"),
            3
        );
        assert!(
            ctrs.get("c").expect("c").big_data_sizes.is_empty(),
            "reads do not refill"
        );
    }
    let mut ctrs = store.write().expect("write");
    assert_eq!(ctrs.big_data_size("c", "config.json").expect("refilled"), 3);
    assert_eq!(
        ctrs.big_data_digest("c", "config.json").expect("refilled"),
        Digest::sha256(b"abc")
    );
    assert_eq!(ctrs.big_data_size("c", "ConfigX").expect("refilled"), 3);
    drop(ctrs);
    assert_eq!(
        std::fs::read_to_string(store.json_path()).expect("json"),
        json,
        "refilled and saved"
    );

    let ctrs = store.read().expect("read");
    let userdata = ctrs.container_dir("c").expect("dir");
    let rundata = ctrs.container_run_dir("c").expect("run dir");
    assert!(ctrs.container_dir("nope").is_err());
    drop(ctrs);
    let mut ctrs = store.write().expect("write");
    ctrs.delete("l").expect("delete by layer ID");
    assert!(!userdata.exists() && !dir.exists());
    assert!(!rundata.exists() && !store.run_dir().join("c").exists());
    assert_eq!(
        ctrs.delete("c").expect_err("gone").kind(),
        ErrorKind::ContainerUnknown
    );
    ctrs.create(new_ctr("w1", &[], "lw1")).expect("w1");
    ctrs.create(new_ctr("w2", &[], "lw2")).expect("w2");
    ctrs.set_flag("w1", "x", json!(1)).expect("flag");
    assert_eq!(ctrs.get("w1").expect("w1").flags["x"], json!(1));
    ctrs.clear_flag("w1", "x").expect("clear");
    ctrs.wipe().expect("wipe");
    assert!(ctrs.containers().is_empty());
}

#[test]
fn damaged_files_duplicates_and_tokens() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path(), false);
    {
        let mut ctrs = store.write().expect("write");
        ctrs.create(new_ctr("a", &["na"], "la")).expect("a");
        ctrs.create(new_ctr("b", &["nb"], "lb")).expect("b");
        let mut v = new_ctr("v", &["nv"], "lv");
        v.volatile = true;
        ctrs.create(v).expect("v");
    }
    let other = open(tmp.path(), false);
    assert!(other.read().expect("read").exists("nv"));
    store
        .write()
        .expect("write")
        .set_metadata("a", "new")
        .expect("meta");
    assert_eq!(
        other.read().expect("read").get("a").expect("a").metadata,
        "new",
        "token change seen"
    );

    let path = store.json_path().to_owned();
    let good = std::fs::read(&path).expect("json");
    let truncated = &good[..good.len() / 2];
    tamper(&store, &path, truncated);
    let err = store.read().err().expect("truncated fails");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(
        err.to_string()
            .starts_with(&format!("loading {}", path.display())),
        "{err}"
    );
    assert!(store.write().is_err());
    assert_eq!(
        std::fs::read(&path).expect("json"),
        truncated,
        "never overwritten"
    );

    let bad_volatile =
        b"[{\"id\":\"v\",\"image\":\"\",\"layer\":\"lv\",\"created\":\"yesterday\"}]";
    tamper(&store, store.volatile_json_path(), bad_volatile);
    tamper(&store, &path, &good);
    assert!(
        store.read().is_err(),
        "a bad time in the volatile file fails the load"
    );

    // Duplicate names across files: the later record keeps the name; the
    // same ID in the volatile file is ignored.
    let dup_volatile = "[{\"id\":\"v\",\"names\":[\"na\",\"nv\"],\"image\":\"\",\"layer\":\"lv\",\"created\":\"2026-11-27T19:55:58.532080079Z\"},{\"id\":\"a\",\"image\":\"\",\"layer\":\"zz\",\"created\":\"2026-11-27T19:55:58.532080079Z\"}]";
    tamper(&store, store.volatile_json_path(), dup_volatile.as_bytes());
    {
        let ctrs = store.read().expect("repaired");
        assert_eq!(
            ctrs.containers().len(),
            3,
            "no record lost, duplicate ID dropped"
        );
        assert_eq!(ctrs.get("na").expect("na").id, "v");
        assert!(ctrs.get("a").expect("a").names.is_empty());
        assert_eq!(
            ctrs.get("a").expect("a").layer,
            "la",
            "first occurrence of an ID wins"
        );
    }
    let stable = std::fs::read_to_string(&path).expect("json");
    assert!(
        stable.starts_with("[{\"id\":\"a\",\"image\""),
        "repair saved: {stable}"
    );
    let volatile = std::fs::read_to_string(store.volatile_json_path()).expect("volatile");
    assert!(
        !volatile.contains("\"zz\""),
        "duplicate ID dropped on save: {volatile}"
    );
}

#[test]
fn concurrent_threads_share_one_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = std::sync::Arc::new(open(tmp.path(), false));
    let mut handles = Vec::new();
    for t in 0..4 {
        let store = std::sync::Arc::clone(&store);
        handles.push(std::thread::spawn(move || {
            for i in 0..10 {
                let name = format!("t{t}-i{i}");
                let mut new = new_ctr(&format!("id-{name}"), &[&name], &format!("layer-{name}"));
                new.volatile = i % 2 == 0;
                store.write().expect("write").create(new).expect("create");
                let ctrs = store.read().expect("read");
                assert!(ctrs.exists(&format!("layer-{name}")));
            }
        }));
    }
    for h in handles {
        h.join().expect("thread");
    }
    assert_eq!(store.read().expect("read").containers().len(), 40);
    let fresh = ContainerStore::open(store.dir(), store.run_dir(), false).expect("reopen");
    let ctrs = fresh.read().expect("read");
    assert_eq!(ctrs.containers().len(), 40);
    assert_eq!(
        ctrs.containers().iter().filter(|c| c.is_volatile()).count(),
        20
    );
}

#[test]
fn duplicate_names_are_repaired_exactly_like_go() {
    let Some(cli) = common::go_cli() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let damaged = "[{\"id\":\"c1\",\"names\":[\"x\",\"z\"],\"image\":\"\",\"layer\":\"l1\",\"created\":\"2026-11-27T19:55:58.532080079Z\"},\
{\"id\":\"c2\",\"names\":[\"x\",\"y\"],\"image\":\"i\",\"layer\":\"l2\",\"created\":\"2026-11-27T19:55:58.532080079Z\",\"flags\":{\"MountLabel\":\"\",\"ProcessLabel\":\"\"}},\
{\"id\":\"c3\",\"names\":[\"z\"],\"image\":\"\",\"layer\":\"l3\",\"created\":\"2026-11-27T19:55:58Z\"}]";
    common::assert_repaired_like_go(
        &cli,
        tmp.path(),
        "vfs-containers/containers.json",
        damaged,
        &["containers", "--json"],
        |root| drop(open(root, false)),
    );
}
