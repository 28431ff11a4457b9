//! storage.conf loading: search order, environment overrides, errors, warnings, rootless roots.

use std::path::{Path, PathBuf};

use storage_config::{ConfigError, Environment, load_options};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
    /// A root environment whose system/override files live in the fixture.
    fn env(&self) -> Environment {
        Environment::empty().with_config_files(
            &self.path("usr/storage.conf"),
            &self.path("etc/storage.conf"),
        )
    }
}

fn conf(driver: &str, graph: &str, run: &str) -> String {
    format!("[storage]\ndriver = \"{driver}\"\ngraphroot = \"{graph}\"\nrunroot = \"{run}\"\n")
}

#[test]
fn builtin_defaults_without_any_file() {
    let f = Fixture::new();
    let (o, w) = load_options(&f.env()).unwrap();
    assert_eq!(o.graph_root, Path::new("/var/lib/containers/storage"));
    assert_eq!(o.run_root, Path::new("/run/containers/storage"));
    assert_eq!(o.driver, "");
    assert!(o.driver_options.is_empty());
    assert!(w.is_empty());
}

#[test]
fn search_order_system_override_xdg_env() {
    let f = Fixture::new();
    f.write("usr/storage.conf", &conf("vfs", "/sys-g", "/sys-r"));
    let (o, _) = load_options(&f.env()).unwrap();
    assert_eq!(o.graph_root, Path::new("/sys-g"));

    f.write("etc/storage.conf", &conf("vfs", "/etc-g", "/etc-r"));
    let (o, _) = load_options(&f.env()).unwrap();
    assert_eq!(o.graph_root, Path::new("/etc-g"));

    f.write(
        "xdg/containers/storage.conf",
        &conf("vfs", "/xdg-g", "/xdg-r"),
    );
    let xdg = f.path("xdg");
    let env = f.env().with_var("XDG_CONFIG_HOME", xdg.to_str().unwrap());
    let (o, _) = load_options(&env).unwrap();
    assert_eq!(o.graph_root, Path::new("/xdg-g"));
    assert_eq!(o.run_root, Path::new("/xdg-r"));

    let explicit = f.write("explicit.conf", "[storage]\ndriver = \"vfs\"\n");
    let env = env.with_var("CONTAINERS_STORAGE_CONF", explicit.to_str().unwrap());
    let (o, _) = load_options(&env).unwrap();
    // Empty roots are filled with the built-in defaults.
    assert_eq!(o.graph_root, Path::new("/var/lib/containers/storage"));
    assert_eq!(o.run_root, Path::new("/run/containers/storage"));
}

#[test]
fn missing_explicit_file_is_a_stat_error() {
    let f = Fixture::new();
    let missing = f.path("nonexist.conf");
    let env = f
        .env()
        .with_var("CONTAINERS_STORAGE_CONF", missing.to_str().unwrap());
    let err = load_options(&env).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("stat {}: no such file or directory", missing.display())
    );
}

#[test]
fn storage_driver_and_storage_opts_env() {
    let f = Fixture::new();
    let p = f.write(
        "c.conf",
        "[storage]\ndriver = \"vfs\"\ngraphroot = \"/g\"\nrunroot = \"/r\"\n[storage.options]\nmountopt = \"nodev\"\n",
    );
    let env = f
        .env()
        .with_var("CONTAINERS_STORAGE_CONF", p.to_str().unwrap());
    let (o, _) = load_options(&env).unwrap();
    assert_eq!(o.driver_options, vec!["vfs.mountopt=nodev"]);

    let env2 = env.clone().with_var("STORAGE_DRIVER", "overlay");
    let (o, _) = load_options(&env2).unwrap();
    assert_eq!(o.driver, "overlay");
    // Generic keys keep the driver name as written in the file.
    assert_eq!(o.driver_options, vec!["vfs.mountopt=nodev"]);

    let env3 = env
        .clone()
        .with_var("STORAGE_OPTS", "vfs.ignore_chown_errors=true,x.y=z");
    let (o, _) = load_options(&env3).unwrap();
    assert_eq!(
        o.driver_options,
        vec!["vfs.ignore_chown_errors=true", "x.y=z"]
    );

    let env4 = env.with_var("STORAGE_OPTS", "");
    let (o, _) = load_options(&env4).unwrap();
    assert!(o.driver_options.is_empty());
}

#[test]
fn overlay2_is_rewritten_with_a_warning() {
    let f = Fixture::new();
    let p = f.write(
        "c.conf",
        "[storage]\ndriver = \"overlay2\"\n[storage.options]\nsize = \"5G\"\n[storage.options.overlay]\nmountopt = \"nodev\"\n",
    );
    let env = f
        .env()
        .with_var("CONTAINERS_STORAGE_CONF", p.to_str().unwrap());
    let (o, w) = load_options(&env).unwrap();
    assert_eq!(o.driver, "overlay");
    assert_eq!(
        o.driver_options,
        vec!["overlay2.size=5G", "overlay.mountopt=nodev"]
    );
    assert!(
        w.iter()
            .any(|w| w.contains("overlay2 to the equivalent overlay")),
        "{w:?}"
    );
}

#[test]
fn generic_options_and_tables() {
    let f = Fixture::new();
    let p = f.write(
        "c.conf",
        r#"[storage]
driver = "vfs"
driver_priority = ["vfs", "overlay"]
imagestore = "/is"
transient_store = true
[storage.options]
additionalimagestores = ["/a", "/b"]
ignore_chown_errors = "true"
force_mask = 0o700
root-auto-userns-user = "containers"
auto-userns-max-size = 4096
pull_options = {enable_partial_images = "false"}
[storage.options.vfs]
ignore_chown_errors = "false"
[storage.options.overlay]
mountopt = "nodev"
"#,
    );
    let env = f
        .env()
        .with_var("CONTAINERS_STORAGE_CONF", p.to_str().unwrap());
    let (o, w) = load_options(&env).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        o.driver_options,
        vec![
            "vfs.imagestore=/a",
            "vfs.imagestore=/b",
            "vfs.ignore_chown_errors=true",
            "vfs.force_mask=700",
            "vfs.ignore_chown_errors=false",
        ]
    );
    assert_eq!(o.driver_priority, vec!["vfs", "overlay"]);
    assert_eq!(o.image_store.as_deref(), Some(Path::new("/is")));
    assert!(o.transient_store);
    assert_eq!(o.root_auto_userns_user, "containers");
    assert_eq!(o.auto_userns_max_size, 4096);
    assert_eq!(o.pull_options.unwrap()["enable_partial_images"], "false");
}

/// Go lists the keys it did not decode in file order (observed with Debian's 1.43 CLI).
#[test]
fn unknown_keys_warn_in_go_wording() {
    let f = Fixture::new();
    let p = f.write(
        "c.conf",
        "[storage]\ndriver = \"vfs\"\nbogus = 1\n[storage.options.thinpool]\nbasesize = \"10G\"\n[foo]\na = 1\n",
    );
    let env = f
        .env()
        .with_var("CONTAINERS_STORAGE_CONF", p.to_str().unwrap());
    let (o, w) = load_options(&env).unwrap();
    assert_eq!(o.driver, "vfs");
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(
        w[0],
        format!(
            "Failed to decode the keys [\"storage.bogus\" \"storage.options.thinpool.basesize\" \"foo\" \"foo.a\"] from \"{}\"",
            p.display()
        )
    );
}

#[test]
fn malformed_file_names_file_and_line() {
    let f = Fixture::new();
    let p = f.write(
        "bad.conf",
        "[storage]\ndriver = \"vfs\"\nrunroot = \ngraphroot=\"/g\"\n",
    );
    let env = f
        .env()
        .with_var("CONTAINERS_STORAGE_CONF", p.to_str().unwrap());
    let err = load_options(&env).unwrap_err();
    match &err {
        ConfigError::Parse { path, line, .. } => {
            assert_eq!(path, &p);
            assert_eq!(*line, 3);
        }
        other => panic!("unexpected error {other:?}"),
    }
    // Go's text has no path; its warning names the file.
    assert_eq!(
        err.to_string(),
        r#"toml: line 3 (last key "storage.runroot"): expected value but found '\n' instead"#
    );
    assert_eq!(
        err.go_warning().unwrap(),
        format!("Failed to read {} {err}", p.display())
    );
}

#[test]
fn type_error_names_the_line() {
    let f = Fixture::new();
    let p = f.write(
        "t.conf",
        "[storage]\ndriver = \"vfs\"\n[storage.options]\nsize = 5\n",
    );
    let env = f
        .env()
        .with_var("CONTAINERS_STORAGE_CONF", p.to_str().unwrap());
    let err = load_options(&env).unwrap_err();
    match &err {
        ConfigError::Parse { line, .. } => assert_eq!(*line, 4),
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        r#"toml: line 4 (last key "storage.options.size"): incompatible types: TOML value has type int64; destination has type string"#
    );
}

#[test]
fn uid_and_env_expansion_and_imagestore_check() {
    let f = Fixture::new();
    let p = f.write(
        "c.conf",
        "[storage]\ndriver = \"vfs\"\ngraphroot = \"/g/$UID/${STORE}/x/../y\"\nrunroot = \"$RUNBASE/r\"\n",
    );
    let env = f
        .env()
        .with_var("CONTAINERS_STORAGE_CONF", p.to_str().unwrap())
        .with_var("STORE", "s1")
        .with_var("RUNBASE", "/rb");
    let (o, _) = load_options(&env).unwrap();
    assert_eq!(o.graph_root, Path::new("/g/0/s1/y"));
    assert_eq!(o.run_root, Path::new("/rb/r"));

    let p2 = f.write(
        "is.conf",
        "[storage]\ngraphroot = \"/same\"\nimagestore = \"/same\"\n",
    );
    let env = f
        .env()
        .with_var("CONTAINERS_STORAGE_CONF", p2.to_str().unwrap());
    assert_eq!(
        load_options(&env).unwrap_err().to_string(),
        "imagestore /same must either be not set or be a different than graphroot"
    );
}

#[test]
fn rootless_defaults() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("runtime")).unwrap();
    let runtime = f.path("runtime");
    let env = f
        .env()
        .with_rootless_uid(1000)
        .with_var("XDG_RUNTIME_DIR", runtime.to_str().unwrap())
        .with_var("HOME", "/home/u");
    let (o, _) = load_options(&env).unwrap();
    let runtime = std::fs::canonicalize(&runtime).unwrap();
    assert_eq!(o.run_root, runtime.join("containers"));
    assert_eq!(
        o.graph_root,
        Path::new("/home/u/.local/share/containers/storage")
    );

    let env2 = env.clone().with_var("XDG_DATA_HOME", "/data");
    let (o, _) = load_options(&env2).unwrap();
    assert_eq!(o.graph_root, Path::new("/data/containers/storage"));

    // The system file's rootless_storage_path is used (with $UID expanded).
    f.write(
        "usr/storage.conf",
        "[storage]\ndriver = \"overlay\"\nrootless_storage_path = \"/rl/$UID\"\n[storage.options.overlay]\nmountopt = \"nodev\"\n",
    );
    let (o, _) = load_options(&env).unwrap();
    assert_eq!(o.graph_root, Path::new("/rl/1000"));
    assert_eq!(o.driver, "overlay");
    // Only ignore_chown_errors options are inherited by rootless overlay.
    assert!(o.driver_options.is_empty(), "{:?}", o.driver_options);

    // A per-user file replaces everything.
    let home = f.path("home");
    f.write(
        "home/.config/containers/storage.conf",
        "[storage]\ndriver = \"vfs\"\n",
    );
    let env3 = env.with_var("HOME", home.to_str().unwrap());
    let (o, _) = load_options(&env3).unwrap();
    assert_eq!(o.driver, "vfs");
    assert_eq!(o.run_root, runtime.join("containers"));
    assert_eq!(o.graph_root, Path::new("/rl/1000"));
}

#[test]
fn config_json_shape() {
    let f = Fixture::new();
    let p = f.write(
        "c.conf",
        "[storage]\ndriver = \"overlay\"\ngraphroot = \"/g\"\nrunroot = \"/r\"\n[storage.options]\npull_options = {use_hard_links = \"false\", enable_partial_images = \"false\"}\n[storage.options.overlay]\nmountopt = \"nodev\"\n",
    );
    let env = f
        .env()
        .with_var("CONTAINERS_STORAGE_CONF", p.to_str().unwrap());
    let (o, _) = load_options(&env).unwrap();
    assert_eq!(
        o.to_go_json(),
        r#"{"runroot":"/r","root":"/g","RootlessStoragePath":"","driver":"overlay","driver-options":["overlay.mountopt=nodev"],"PullOptions":{"enable_partial_images":"false","use_hard_links":"false"}}"#
    );
}

/// Hostile values never panic: numbers out of range, odd bytes, unterminated `${`,
/// a lone `$` at the end of a path all give an error naming the line or a plain value.
#[test]
fn hostile_values_are_errors_not_panics() {
    let f = Fixture::new();
    for (i, (body, bad_line)) in [
        ("[storage.options]\nauto-userns-max-size = -1\n", 2),
        ("[storage.options]\nauto-userns-min-size = 99999999999\n", 2),
        ("[storage.options]\nforce_mask = 4294967296\n", 2),
        (
            "[storage]\ndriver = \"vfs\"\n\n\ngraphroot = [\"\\u00e9\"]\n",
            5,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let p = f.write(&format!("h{i}.conf"), body);
        let env = f
            .env()
            .with_var("CONTAINERS_STORAGE_CONF", p.to_str().unwrap());
        match load_options(&env).unwrap_err() {
            ConfigError::Parse { line, .. } => assert_eq!(line, bad_line, "{body}"),
            other => panic!("unexpected error {other:?} for {body}"),
        }
    }
    let p = f.write(
        "odd.conf",
        "[storage]\ndriver = \"vfs\"\ngraphroot = \"/g/\u{e9}${\u{e9}\"\nrunroot = \"/r/$\"\n",
    );
    let env = f
        .env()
        .with_var("CONTAINERS_STORAGE_CONF", p.to_str().unwrap());
    let (o, _) = load_options(&env).unwrap();
    assert!(o.graph_root.starts_with("/g"), "{:?}", o.graph_root);
    assert_eq!(o.run_root, Path::new("/r/$"));
}

#[test]
fn rootless_runtime_dir_fallbacks_and_errors() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("tmp")).unwrap();
    // The directory must belong to the effective user (root inside the user namespace).
    let me = std::fs::metadata(f.path("tmp")).unwrap().uid();
    let mut env = f
        .env()
        .with_rootless_uid(4_000_000_001)
        .with_var("HOME", "/home/u")
        .with_var("TMPDIR", f.path("tmp").to_str().unwrap());
    env.euid = me;
    let (o, _) = load_options(&env).unwrap();
    let fallback = f.path("tmp/storage-run-4000000001");
    assert_eq!(o.run_root, fallback.join("containers"));
    let m = std::fs::metadata(&fallback).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o700);

    // Owned by someone else: refused, with what to do.
    env.euid = me.wrapping_add(1);
    let err = load_options(&env).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "cannot find a runtime directory for rootless user 4000000001: XDG_RUNTIME_DIR is not set, /run/user/4000000001 is missing or not owned by the user, and {} cannot be used: set XDG_RUNTIME_DIR to a directory owned by the user with mode 0700",
            fallback.display()
        )
    );

    // XDG_RUNTIME_DIR naming a missing directory is an error.
    let missing = f.path("no-runtime");
    let env = env.with_var("XDG_RUNTIME_DIR", missing.to_str().unwrap());
    let err = load_options(&env).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "XDG_RUNTIME_DIR: lstat {}: no such file or directory: create the directory (owned by user 4000000001, mode 0700) or unset XDG_RUNTIME_DIR",
            missing.display()
        )
    );
}

#[test]
fn rootless_driver_guess_looks_for_fuse_overlayfs() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("run")).unwrap();
    let bin = f.write("bin/fuse-overlayfs", "#!/bin/sh\n");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    // No driver configured, no prior store, an old kernel: vfs without fuse-overlayfs.
    let env = f
        .env()
        .with_rootless_uid(1000)
        .with_var("HOME", f.path("home").to_str().unwrap())
        .with_var("XDG_RUNTIME_DIR", f.path("run").to_str().unwrap())
        .with_var("PATH", "/nonexistent");
    assert_eq!(load_options(&env).unwrap().0.driver, "vfs");
    let env = env.with_var("PATH", f.path("bin").to_str().unwrap());
    assert_eq!(load_options(&env).unwrap().0.driver, "overlay");
}
