//! `import-layers` (ours: a chain of layer tars prepared in parallel, committed in order) on
//! every driver: the records and the byte-exact diffs are those of the same tars imported one
//! by one with `import-layer`; a broken layer in the middle keeps the earlier layers, creates
//! none of the later ones, leaves no staging data and fails with one clear line and exit
//! status 1; Go 1.43 lists and diffs the result; a progress bar per layer only on a terminal.

use std::path::{Path, PathBuf};

use serde_json::Value;
use storage_tests::fs::DriverStore;
use storage_tests::tars::{TarBuilder, compress_with};
use storage_tests::{Cs, go_cs, ok, ours, peer, require};
use storage_testsupport::{per_driver, sha256};

per_driver!(import_layers_equals_one_by_one_imports);
per_driver!(broken_middle_layer_keeps_earlier_layers_only);
per_driver!(bad_arguments_import_nothing: vfs);
per_driver!(progress_bars_only_on_a_terminal: vfs);

/// The uncompressed tar of layer `k` of a test chain: a small-file layer, then growing
/// content, a file owned by another user, and a whiteout of an earlier layer's file.
fn layer_tar(k: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..(60_000 * (k + 1)))
        .map(|i| (i * 13 + k) as u8)
        .collect();
    let mut t = TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/conf", 0o644, format!("layer {k}\n").as_bytes())
        .file_owned(&format!("home/u{k}"), 0o600, 1000 + k as u64, 100, b"own")
        .file(&format!("data/l{k}"), 0o644, &body);
    if k > 0 {
        t = t.file(&format!("data/.wh.l{}", k - 1), 0o644, b"");
    }
    t.finish()
}

/// Writes layer `k` of the chain as `dir/layer<k>.<ext>`, compressed with `tool` (or plain).
fn write_layer(dir: &Path, k: usize, tool: Option<&str>) -> PathBuf {
    let tar = layer_tar(k);
    match tool {
        None => {
            let p = dir.join(format!("layer{k}.tar"));
            std::fs::write(&p, tar).expect("write tar");
            p
        }
        Some(t) => {
            let p = dir.join(format!("layer{k}.tar.{t}"));
            compress_with(t, &tar, &p);
            p
        }
    }
}

fn ids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| !l.starts_with('\t') && !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn layer_json(cs: &Cs, id: &str) -> Value {
    let v: Value = serde_json::from_str(&ok(&cs.ours(&["layer", "--json", id]))).expect("JSON");
    match v {
        Value::Array(mut a) if a.len() == 1 => a.remove(0),
        other => other,
    }
}

/// A layer record without what differs between two imports of the same tar.
fn comparable(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        for k in ["id", "parent", "created", "names"] {
            m.remove(k);
        }
    }
    v
}

/// The uncompressed diff (`diff -u`) of layer `id`, by Go's binary when `go`.
fn diff_bytes(cs: &Cs, id: &str, go: bool) -> Vec<u8> {
    let out = if go {
        cs.go(&["diff", "-u", id])
    } else {
        cs.ours(&["diff", "-u", id])
    };
    assert!(
        out.status.success(),
        "diff {id} (go: {go}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Staging directories of the driver (ordinary and staged applies).
fn staging_leftovers(ds: &DriverStore) -> Vec<PathBuf> {
    let home = ds.home();
    let mut v = Vec::new();
    for root in [home.join("staging"), home.join("tempdirs").join("staging")] {
        if let Ok(rd) = std::fs::read_dir(&root) {
            v.extend(rd.flatten().map(|e| e.path()));
        }
    }
    v
}

fn import_layers_equals_one_by_one_imports(driver: &str) {
    let Some(chain) = DriverStore::new(driver) else {
        return;
    };
    let Some(single) = DriverStore::new(driver) else {
        return;
    };
    let work = chain.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let tools = [None, Some("gzip"), Some("zstd"), Some("xz"), None];
    let files: Vec<PathBuf> = tools
        .iter()
        .enumerate()
        .map(|(k, t)| write_layer(&work, k, *t))
        .collect();
    let file_args: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();

    // Both stores start with the same base layer, named.
    for cs in [&chain, &single] {
        ok(&cs.ours(&["import-layer", "-n", "base", "-f", &file_args[0]]));
    }
    let mut args = vec![
        "import-layers",
        "--parent",
        "base",
        "-n",
        "top",
        "-n",
        "top2",
    ];
    args.extend(file_args[1..].iter().map(String::as_str));
    let out = ok(&chain.ours(&args));
    let chain_ids = ids(&out);
    assert_eq!(chain_ids.len(), 4, "{out}");
    // Names: only the top layer, printed after its ID.
    let expected_tail = format!("{}\n\ttop\n\ttop2\n", chain_ids[3]);
    assert!(out.ends_with(&expected_tail), "{out}");
    assert_eq!(out.lines().count(), 6, "{out}");

    let mut single_ids = Vec::new();
    let mut parent = "base".to_string();
    for (k, f) in file_args[1..].iter().enumerate() {
        let mut a = vec!["import-layer", "-f", f.as_str()];
        if k == 3 {
            a.extend(["-n", "top", "-n", "top2"]);
        }
        a.push(&parent);
        let id = ids(&ok(&single.ours(&a)))[0].clone();
        parent = id.clone();
        single_ids.push(id);
    }

    let base_id = ids(&ok(&chain.ours(&["layers", "-q"])))
        .into_iter()
        .find(|i| !chain_ids.contains(i))
        .expect("the base layer");
    for k in 0..4 {
        let a = layer_json(&chain, &chain_ids[k]);
        let b = layer_json(&single, &single_ids[k]);
        let want_parent = if k == 0 { &base_id } else { &chain_ids[k - 1] };
        assert_eq!(a["parent"].as_str(), Some(want_parent.as_str()), "{a}");
        assert_eq!(a["names"], b["names"], "layer {k}");
        assert_eq!(comparable(a.clone()), comparable(b), "layer {k} records");
        assert_eq!(
            a["diff-digest"].as_str(),
            Some(sha256(&layer_tar(k + 1)).as_str()),
            "layer {k}"
        );
        let ours = diff_bytes(&chain, &chain_ids[k], false);
        assert_eq!(
            ours,
            diff_bytes(&single, &single_ids[k], false),
            "layer {k} diffs like the one imported alone"
        );
        assert!(ours == layer_tar(k + 1), "layer {k} diffs back to its tar");
    }
    assert!(
        staging_leftovers(&chain).is_empty(),
        "{:?}",
        staging_leftovers(&chain)
    );
    ok(&chain.ours(&["check"]));

    // Go 1.43 sees the same chain, complete, and diffs it byte for byte.
    if !require(
        go_cs().is_some(),
        "Go containers-storage (/usr/bin/containers-storage)",
    ) {
        return;
    }
    let listed = ok(&chain.go(&["layers"]));
    for id in &chain_ids {
        assert!(listed.contains(id.as_str()), "Go lists {id}:\n{listed}");
    }
    for (k, id) in chain_ids.iter().enumerate() {
        assert_eq!(
            diff_bytes(&chain, id, true),
            diff_bytes(&chain, id, false),
            "Go's diff of layer {k}"
        );
    }
}

fn broken_middle_layer_keeps_earlier_layers_only(driver: &str) {
    let Some(ds) = DriverStore::new(driver) else {
        return;
    };
    let work = ds.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let mut files: Vec<PathBuf> = (0..5)
        .map(|k| write_layer(&work, k, Some("gzip")))
        .collect();
    let broken = std::fs::read(&files[2]).expect("read");
    files[2] = work.join("broken.tar.gz");
    std::fs::write(&files[2], &broken[..broken.len() / 2]).expect("write");
    let mut args = vec!["import-layers".to_string(), "--jobs".into(), "3".into()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    let out = ds.ours(&args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one error line: {stderr}");
    assert!(
        stderr.contains("importing layer 3 of 5 (")
            && stderr.contains("broken.tar.gz")
            && stderr.contains("(2 committed, 2 not applied)"),
        "{stderr}"
    );
    let printed = ids(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(printed.len(), 2, "the committed layers are printed");
    let listed = ids(&ok(&ds.ours(&["layers", "-q"])));
    let mut a = listed.clone();
    a.sort();
    let mut b = printed.clone();
    b.sort();
    assert_eq!(a, b, "only the two layers before the broken one exist");
    assert_eq!(
        layer_json(&ds, &printed[1])["parent"].as_str(),
        Some(printed[0].as_str())
    );
    assert!(
        staging_leftovers(&ds).is_empty(),
        "{:?}",
        staging_leftovers(&ds)
    );
    ok(&ds.ours(&["check"]));

    // A missing file: nothing is imported at all.
    let out = ds.ours(&[
        "import-layers".to_string(),
        files[0].display().to_string(),
        work.join("absent.tar").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("absent.tar: no such file or directory"),
        "{stderr}"
    );
    assert_eq!(ids(&ok(&ds.ours(&["layers", "-q"]))).len(), 2);

    // -q prints the IDs only; --json one record per line.
    let q = ok(&ds.ours(&[
        "import-layers".to_string(),
        "-q".into(),
        "-n".into(),
        "named".into(),
        files[0].display().to_string(),
        files[1].display().to_string(),
    ]));
    assert_eq!(q.lines().count(), 2, "{q}");
    assert!(q.lines().all(|l| l.len() == 64), "{q}");
    let j = ok(&ds.ours(&[
        "import-layers".to_string(),
        "--json".into(),
        files[0].display().to_string(),
        files[1].display().to_string(),
    ]));
    let recs: Vec<Value> = j
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON record per line"))
        .collect();
    assert_eq!(recs.len(), 2, "{j}");
    assert_eq!(recs[1]["parent"], recs[0]["id"]);

    if require(
        go_cs().is_some(),
        "Go containers-storage (/usr/bin/containers-storage)",
    ) {
        let listed = ok(&ds.go(&["layers"]));
        for id in &printed {
            assert!(listed.contains(id.as_str()), "{listed}");
        }
    }
}

/// An unknown parent, a name in use, a bad `--jobs`: nothing is imported, one error line,
/// exit status 1.
fn bad_arguments_import_nothing(driver: &str) {
    let Some(ds) = DriverStore::new(driver) else {
        return;
    };
    let work = ds.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let a = write_layer(&work, 0, None).display().to_string();
    let b = write_layer(&work, 1, Some("gzip")).display().to_string();
    ok(&ds.ours(&["create-layer", "-n", "taken"]));
    let before = ok(&ds.ours(&["layers", "--json"]));
    for (args, want) in [
        (
            vec!["import-layers", "--parent", "nope", a.as_str(), b.as_str()],
            "importing layer 1 of 2 (".to_string() + &a + "): layer not known (1 not applied)",
        ),
        (
            vec!["import-layers", "-n", "taken", a.as_str(), b.as_str()],
            "importing layer 2 of 2 (".to_string()
                + &b
                + "): that name is already in use (1 not applied)",
        ),
        (
            vec!["import-layers", "--jobs", "x", a.as_str()],
            "invalid value \"x\" for --jobs: not a number of layers".to_string(),
        ),
    ] {
        let out = ds.ours(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim_end(),
            want,
            "{args:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        assert_eq!(ok(&ds.ours(&["layers", "--json"])), before, "{args:?}");
    }
    assert!(staging_leftovers(&ds).is_empty());
}

/// One progress bar per layer on stderr when it is a terminal (run under `script`), none
/// otherwise.
fn progress_bars_only_on_a_terminal(driver: &str) {
    let Some(ds) = DriverStore::new(driver) else {
        return;
    };
    let work = ds.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let files: Vec<String> = (0..2)
        .map(|k| write_layer(&work, k, Some("gzip")).display().to_string())
        .collect();
    let plain = ds.ours(&["import-layers", &files[0], &files[1]]);
    assert!(plain.status.success(), "{plain:?}");
    assert!(plain.stderr.is_empty(), "no bars off a terminal: {plain:?}");

    let script = peer("script");
    if !require(script.is_some(), "script (util-linux) for a terminal") {
        return;
    }
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let mut words = vec![quote(ours().as_os_str())];
    words.extend(ds.global_args().iter().map(|a| quote(a)));
    words.push("import-layers".into());
    words.extend(files.iter().map(|f| quote(f.as_ref())));
    let out = std::process::Command::new(script.expect("script"))
        .args(["-q", "-e", "-c", &words.join(" "), "/dev/null"])
        .env_remove("STORAGE_OPTS")
        .env_remove("STORAGE_DRIVER")
        .env_remove("CONTAINERS_STORAGE_CONF")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script");
    assert!(out.status.success(), "{out:?}");
    let tty = String::from_utf8_lossy(&out.stdout);
    for (k, f) in files.iter().enumerate() {
        let name = Path::new(f).file_name().expect("name").to_string_lossy();
        assert!(
            tty.contains(&format!("layer {}/2 {name}", k + 1)),
            "a bar for layer {k}: {tty:?}"
        );
    }
    assert!(tty.matches(" done").count() >= 2, "{tty:?}");
    assert_eq!(ids(&ok(&ds.ours(&["layers", "-q"]))).len(), 4);
}
