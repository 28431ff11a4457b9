//! Helpers shared by the integration tests: running Debian's Go
//! `containers-storage` 1.43 against a temporary store.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Go CLI, or `None` (after a loud message) when it is not installed.
/// With `CI=true` a missing binary fails the test.
pub fn go_cli() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/containers-storage");
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "Go containers-storage is required in CI but {} is missing",
            path.display()
        );
    }
    eprintln!(
        "SKIPPING: Go containers-storage not found at {}",
        path.display()
    );
    None
}

/// Runs the Go CLI on the store `<root>/G` + `<root>/R` (vfs) and returns stdout.
pub fn go(cli: &Path, root: &Path, args: &[&str], stdin: Option<&[u8]>) -> String {
    use std::io::Write;
    let mut cmd = Command::new(cli);
    cmd.arg("--graph")
        .arg(root.join("G"))
        .arg("--run")
        .arg(root.join("R"))
        .arg("--storage-driver")
        .arg("vfs")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn containers-storage");
    if let (Some(mut input), Some(data)) = (child.stdin.take(), stdin) {
        input.write_all(data).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait containers-storage");
    assert!(
        out.status.success(),
        "containers-storage {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8 output")
}

/// The first line of `create-*` output (the new ID).
pub fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_owned()
}
