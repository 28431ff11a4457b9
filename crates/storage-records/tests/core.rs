//! The shared record-store core: indexes, names rules, the lock-guarded cache and the files.

use std::cell::Cell;

use storage_records::{Cache, Loaded, NamesOp, Records, lock_error, names_op};
use storage_types::{Container, ErrorKind, Image};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn image(id: &str, n: &[&str]) -> Image {
    Image {
        id: id.into(),
        names: names(n),
        ..Image::default()
    }
}

#[test]
fn lookup_is_id_then_name_then_unique_prefix() {
    let records = Records::new(vec![
        image("abc1", &["abc2"]),
        image("abc2", &["x"]),
        image("fff", &[]),
    ]);
    // An exact ID wins over a name.
    assert_eq!(records.lookup("abc2"), Some(1));
    assert_eq!(records.lookup("x"), Some(1));
    assert_eq!(records.lookup("ff"), Some(2));
    // An ambiguous prefix finds nothing.
    assert_eq!(records.lookup("abc"), None);
    assert_eq!(records.lookup(""), None);
}

#[test]
fn the_first_record_owns_an_id_and_the_last_a_name() {
    let mut list = vec![
        image("a", &["n", "m"]),
        image("a", &["o"]),
        image("b", &["n"]),
    ];
    let pairs = storage_records::repair_duplicate_names(&mut list);
    assert_eq!(pairs, vec![(0, 2)]);
    assert_eq!(list[0].names, names(&["m"]));
    let records = Records::new(list);
    assert_eq!(records.by_id("a"), Some(0));
    assert_eq!(records.by_name("n"), Some(2));
    // Nothing to repair: nothing reported.
    let mut clean = vec![image("a", &["n", "n"]), image("b", &["m"])];
    assert!(storage_records::repair_duplicate_names(&mut clean).is_empty());
}

#[test]
fn take_names_moves_names_and_reports_the_losers() {
    let mut records = Records::new(vec![
        image("a", &["x", "y"]),
        image("b", &["z"]),
        image("c", &[]),
    ]);
    let losers = records.take_names(2, &names(&["y", "z"]));
    assert_eq!(losers, vec![0, 1]);
    assert_eq!(records.as_slice()[0].names, names(&["x"]));
    assert!(records.as_slice()[1].names.is_empty());
    assert_eq!(records.by_name("y"), Some(2));
    assert_eq!(records.by_name("x"), Some(0));
    let removed = records.remove(0);
    assert_eq!(removed.id, "a");
    assert_eq!(records.by_name("x"), None);
    assert_eq!(records.by_name("z"), Some(1));
}

#[test]
fn names_ops_follow_go() {
    let old = names(&["a", "b"]);
    assert_eq!(
        names_op(&old, &names(&["c", "c"]), NamesOp::Set),
        names(&["c"])
    );
    assert_eq!(
        names_op(&old, &names(&["b", "c"]), NamesOp::Add),
        names(&["b", "c", "a"])
    );
    assert_eq!(
        names_op(&old, &names(&["a"]), NamesOp::Remove),
        names(&["b"])
    );
}

#[test]
fn a_cache_reloads_only_after_another_writer() -> storage_types::Result<()> {
    let tmp = tempfile::tempdir()?;
    let json = tmp.path().join("containers.json");
    let lock =
        storage_lock::LockFile::open(&tmp.path().join("containers.lock")).map_err(lock_error)?;
    let loads = Cell::new(0);
    let load = || -> storage_types::Result<Loaded<Records<Container>, ()>> {
        loads.set(loads.get() + 1);
        Ok(Loaded {
            set: Records::new(storage_io::load_records(&json)?),
            repair: None,
        })
    };
    let ours: Cache<Records<Container>> = Cache::new(lock.clone());
    let theirs: Cache<Records<Container>> = Cache::new(lock);
    assert_eq!(ours.read(load, || Ok(()), "x")?.as_slice().len(), 0);
    assert_eq!(ours.read(load, || Ok(()), "x")?.as_slice().len(), 0);
    assert_eq!(loads.get(), 1, "an unchanged token needs no reload");

    let (mut w, repair) = theirs.write(load)?;
    assert!(repair.is_none());
    w.push(Container {
        id: "c1".into(),
        ..Container::default()
    });
    w.save(|set| {
        let data = storage_types::to_go_json(set.as_slice());
        storage_records::write_file("open", &json, &data, true)
    })?;
    drop(w);
    let before = loads.get();
    assert_eq!(ours.read(load, || Ok(()), "x")?.lookup("c1"), Some(0));
    assert_eq!(loads.get(), before + 1, "another writer's save is seen");
    Ok(())
}

#[test]
fn a_repair_that_does_not_hold_fails_as_inconsistent() -> storage_types::Result<()> {
    let tmp = tempfile::tempdir()?;
    let lock = storage_lock::LockFile::open(&tmp.path().join("x.lock")).map_err(lock_error)?;
    let cache: Cache<Records<Image>> = Cache::new(lock);
    let repairs = Cell::new(0);
    let err = cache
        .read(
            || -> storage_types::Result<Loaded<Records<Image>, ()>> {
                Ok(Loaded {
                    set: Records::default(),
                    repair: Some(()),
                })
            },
            || {
                repairs.set(repairs.get() + 1);
                Ok(())
            },
            "store is inconsistent",
        )
        .err()
        .expect("a second repair in a row fails");
    assert_eq!(repairs.get(), 1);
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("store is inconsistent"), "{err}");
    Ok(())
}

#[test]
fn files_stay_inside_the_store() -> storage_types::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    for bad in ["", "..", "a/b", "."] {
        let err = storage_records::userdata_dir(dir, "image", bad).expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        assert!(storage_records::write_big_data(dir, "image", bad, "k", b"x").is_err());
    }
    let err = storage_records::check_id("container", "../x").expect_err("not a component");
    assert!(
        err.to_string()
            .contains(r#"container ID "../x" cannot be used as a directory name"#),
        "{err}"
    );
    assert_eq!(
        storage_records::write_big_data(dir, "image", "i1", "config", b"abc")?,
        3
    );
    assert_eq!(
        std::fs::read(storage_records::big_data_path(
            dir, "image", "i1", "config"
        )?)?,
        b"abc"
    );
    storage_records::remove_record_dir(dir, "i1")?;
    assert!(!dir.join("i1").exists());
    // Absent is fine; an ID that is not a component is never removed.
    storage_records::remove_record_dir(dir, "i1")?;
    storage_records::remove_record_dir(dir, "..")?;
    assert!(dir.exists());
    let err =
        storage_records::new_id("image", Some("i2".into()), |id| id == "i2").expect_err("taken");
    assert_eq!(err.kind(), ErrorKind::DuplicateId);
    let fresh = storage_records::new_id("image", None, |_| false)?;
    assert_eq!(fresh.len(), 64);
    Ok(())
}

#[test]
fn big_data_keys_and_sizes() {
    let err = storage_records::check_key("", "can't retrieve x").expect_err("empty key");
    assert_eq!(err.kind(), ErrorKind::InvalidBigDataName);
    assert!(err.to_string().contains("can't retrieve x"), "{err}");
    assert!(storage_records::check_key("k", "unused").is_ok());
    // The recorded size wins; the item is read only without one.
    let size = storage_records::size_or_length(Some(7), || panic!("not read"));
    assert_eq!(size.ok(), Some(7));
    assert_eq!(
        storage_records::size_or_length(None, || Ok(vec![0; 5])).ok(),
        Some(5)
    );
    let err =
        storage_records::size_or_length(None, || Err(storage_types::Error::new(ErrorKind::Io)))
            .expect_err("unreadable");
    assert_eq!(err.kind(), ErrorKind::SizeUnknown);
}
