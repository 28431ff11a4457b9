//! Deep overlay chains (130 and 500 layers) mounted with every lower-dir method: the
//! classic data string / new mount API (`lowerdir+`), and, forced through the internal
//! `CONTAINERS_STORAGE_RS_OVERLAY_MOUNT` switch, the legacy fallbacks (relative `l/`
//! lowers for 130 layers, `/proc/self/fd` numbers for 500).
//!
//! The switch is read from the environment, so each method runs in a child process of
//! this test binary (`chain_mounts` below), which keeps the other tests unaffected.

mod common;

use std::path::Path;
use std::process::Command;

use common::{is_root, require};
use storage_drivers::{CreateOpts, Driver, MountOpts, open_driver};

const METHOD_ENV: &str = "CONTAINERS_STORAGE_RS_OVERLAY_MOUNT";

/// The mountinfo super options of the mount at `path`.
fn super_options(path: &Path) -> Option<String> {
    common::mount_field(path, 2)
}

/// Builds a chain of `depth` layers (each adds `f<i>` and rewrites `top`), mounts the
/// top read-write and read-only, checks the content; returns the mount's options.
fn chain(d: &dyn Driver, home: &Path, prefix: &str, depth: usize) -> String {
    let mut parent: Option<String> = None;
    for i in 0..depth {
        let id = format!("{prefix}{i:03}");
        d.create(&id, parent.as_deref(), &CreateOpts::default())
            .unwrap();
        let diff = home.join(&id).join("diff");
        std::fs::write(diff.join(format!("f{i}")), b"x").unwrap();
        std::fs::write(diff.join("top"), i.to_string()).unwrap();
        parent = Some(id);
    }
    let top = parent.unwrap();
    let lower = std::fs::read_to_string(home.join(&top).join("lower")).unwrap();
    assert_eq!(lower.split(':').count(), depth - 1);
    let m = d.get(&top, &MountOpts::default()).unwrap();
    let opts = super_options(&m).unwrap_or_default();
    assert_eq!(
        std::fs::read_to_string(m.join("top")).unwrap(),
        (depth - 1).to_string()
    );
    for i in 0..depth {
        assert!(m.join(format!("f{i}")).exists(), "f{i} via {opts}");
    }
    std::fs::write(m.join("written"), b"w").unwrap();
    d.put(&top).unwrap();
    assert!(home.join(&top).join("diff/written").exists());
    let ro = d
        .get(
            &top,
            &MountOpts {
                options: vec!["ro".into()],
                ..MountOpts::default()
            },
        )
        .unwrap();
    assert!(ro.join("f0").exists() && ro.join("written").exists());
    d.put(&top).unwrap();
    opts
}

/// Runs in a child process with the method switch set (or directly, with the default).
#[test]
fn chain_mounts() {
    if !require(is_root(), "overlay chains need root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let opts = common::options_for(tmp.path(), "overlay", vec![]);
    let mut guard = common::Cleanup::new(tmp.path());
    guard.driver = Some(open_driver("overlay", &opts).unwrap());
    let d = guard.driver.as_deref().unwrap();
    let home = tmp.path().join("graph/overlay");
    let method = std::env::var(METHOD_ENV).unwrap_or_default();
    let o130 = chain(d, &home, "a", 130);
    let o500 = chain(d, &home, "b", 500);
    eprintln!("method={method:?} 130: {:.80}… 500: {:.80}…", o130, o500);
    if method == "legacy" || (method != "newapi" && !kernel_has_lowerdir_plus()) {
        // 130 lowers fit a page only as `l/<short>` relative to the home.
        assert!(o130.contains("lowerdir=l/"), "{o130}");
        // 500 need the `/proc/self/fd` numbers.
        let fds = o500.split("lowerdir=").nth(1).unwrap_or_default();
        assert!(fds.starts_with(|c: char| c.is_ascii_digit()), "{o500}");
    } else {
        // Too long for a page: one `lowerdir+` per lower through the new mount API.
        assert!(o500.contains("lowerdir+="), "{o500}");
        assert!(!o130.contains("lowerdir=l/"), "{o130}");
    }
    if method == "newapi" {
        assert!(o130.contains("lowerdir+="), "{o130}");
    }
    // 500 lowers are the limit (Go 1.60 and the kernel); 501 are refused.
    d.create("deep500", Some("b499"), &CreateOpts::default())
        .unwrap();
    let e = d
        .create("too-deep", Some("deep500"), &CreateOpts::default())
        .unwrap_err();
    assert_eq!(e.message(), "max depth exceeded");
}

#[test]
fn every_lower_dir_method() {
    if !require(is_root(), "overlay chains need root") {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let methods: &[&str] = if kernel_has_lowerdir_plus() {
        &["newapi", "legacy"]
    } else {
        // Without lowerdir+ the default path is the legacy one, and `chain_mounts` (run
        // directly) already asserts it took it; forcing it again would repeat the same mounts.
        eprintln!(
            "this kernel's overlay has no lowerdir+ (Linux < 6.8): chain_mounts covers the \
             legacy method"
        );
        &[]
    };
    for &method in methods {
        let out = Command::new(&exe)
            .args(["--exact", "chain_mounts", "--nocapture", "--test-threads=1"])
            .env(METHOD_ENV, method)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{method}: {text}");
        assert!(text.contains("1 passed"), "{method}: {text}");
        assert!(text.contains(&format!("method=\"{method}\"")), "{text}");
    }
}

/// Whether the running kernel's overlay takes `lowerdir+` (Linux 6.8 and later).
fn kernel_has_lowerdir_plus() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 8)
}
