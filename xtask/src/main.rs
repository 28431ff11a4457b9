//! Project automation for containers-storage-rs, run as `cargo xtask <task>`.
//!
//! * `cargo xtask demo` — the main job on a built-in default: a throwaway store under
//!   `target/demo`, a generated multi-layer image applied, a container created and mounted, its
//!   files listed.
//! * `cargo xtask ci` — every test: installs the Debian packages the tests use (when root),
//!   then `cargo fmt --check`, `cargo clippy -D warnings`, `cargo test --workspace` and every
//!   fuzz target for 15 s.
//! * `cargo xtask vm-test` — the tests as root inside a qemu VM booted on Debian 12's own kernel
//!   (XFS project quotas, btrfs, overlay), and `--power-cut` crash-consistency runs; see
//!   [`vmtest`].
//! * `cargo xtask soak [--minutes N]` — 16 processes of ours, Go's and podman on one store
//!   (vfs, overlay), then every committed item verified (see `soak/mod.rs`).
//! * `cargo xtask bench [--quick] …` — ours side by side with Go's `containers-storage` and
//!   GNU tar & co. (see `bench/mod.rs`); results in `target/bench/latest.{json,md}`.
//! * `cargo xtask man [--out DIR]` — the man pages, generated from the CLI's command table
//!   (default `target/man/`); `cargo xtask completions [--out DIR]` — the bash, zsh and fish
//!   completion scripts (default `target/completions/`); `cargo xtask install [--prefix DIR]
//!   [--binary PATH]` — the release binary, the man pages and the completions where Debian
//!   puts them (default prefix `/usr/local`); see [`docs`].
//! * `cargo xtask fuzz [TARGET] [--time S]` — the `storage-fuzz` targets under libFuzzer on
//!   the stable toolchain, in `target/fuzz` (see [`fuzz`]).

#![deny(unsafe_code)]

mod bench;
mod demo;
mod docs;
mod fuzz;
mod soak;
#[allow(unsafe_code)]
mod sys;
mod vmtest;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Debian packages the tests use as peers or tools.
const PACKAGES: &[&str] = &[
    "containers-storage",
    "podman",
    "skopeo",
    "umoci",
    "bats",
    "btrfs-progs",
    "xfsprogs",
    "fuse-overlayfs",
    // newuidmap/newgidmap for the rootless tests (a user namespace with subordinate IDs).
    "uidmap",
    "pigz",
    "zstd",
    "xz-utils",
    "bzip2",
    "strace",
    "qemu-system-x86",
    "busybox-static",
    "dmsetup",
    // `script` (a terminal for the progress-bar tests); essential on Debian, listed anyway.
    "bsdutils",
    // The man page and shell completion tests.
    "man-db",
    "bash-completion",
    "zsh",
    "fish",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run(&workspace_root()),
        Some("ci") => ci(&args[1..]),
        Some("bench") => bench::run(&workspace_root(), &args[1..]),
        Some("install-deps") => install_deps(true),
        Some("man") => docs::man(&workspace_root(), &args[1..]),
        Some("completions") => docs::completions(&workspace_root(), &args[1..]),
        Some("install") => docs::install(&workspace_root(), &args[1..]),
        Some("vm-test") => return vmtest::main(&workspace_root(), &args[1..]),
        Some("fuzz") => fuzz::main(&workspace_root(), &args[1..]),
        Some("soak") => soak::run(&workspace_root(), &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  demo          run the demo on a throwaway store under target/demo\n  \
                 ci            install test dependencies (root) and run every test\n  \
                 bench         benchmark ours against Go's containers-storage and GNU tar\n  \
                 install-deps  install the Debian packages the tests use (root)\n  \
                 man           write the man pages to target/man (--out DIR)\n  \
                 completions   write the bash, zsh and fish completions to target/completions\n  \
                 install       install the binary, man pages and completions\n                \
                 ([--prefix DIR] (default /usr/local) [--binary PATH])\n  \
                 vm-test       run the tests as root in a qemu VM on Debian 12's kernel\n                \
                 (see cargo xtask vm-test --help)\n  \
                 fuzz          run the fuzz targets under libFuzzer (see cargo xtask fuzz --help)\n  \
                 soak          mixed-writer soak: ours, Go and podman on one store (--help)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The target directory: `$CARGO_TARGET_DIR`, else `target/` in the workspace.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Builds our `containers-storage` in release mode and returns its path.
pub fn build_release_cli(root: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .args(["build", "--release", "-p", "storage-cli"])
        .current_dir(root))?;
    Ok(target_dir(root).join("release").join("containers-storage"))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Runs a command, failing with a message that names it when it does not succeed.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    eprintln!("+ {shown}");
    let status = cmd.status().map_err(|e| format!("{shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed: {status}"))
    }
}

fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect()
}

fn install_deps(force: bool) -> Result<(), String> {
    let missing = missing_packages();
    if missing.is_empty() {
        eprintln!("xtask: all test packages are installed");
        return Ok(());
    }
    if !is_root() {
        let msg = format!(
            "missing Debian packages (run as root to install): {}",
            missing.join(" ")
        );
        if force || std::env::var("CI").as_deref() == Ok("true") {
            return Err(msg);
        }
        eprintln!("xtask: WARNING: {msg}; tests that need them will skip");
        return Ok(());
    }
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn ci(_args: &[String]) -> Result<(), String> {
    install_deps(false)?;
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo)
        .args(["fmt", "--all", "--check"])
        .current_dir(&root))?;
    run(Command::new(&cargo)
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(&root))?;
    // The library documentation builds without a warning (broken links, bad HTML, …).
    run(Command::new(&cargo)
        .args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .current_dir(&root))?;
    run(Command::new(&cargo)
        .args(["test", "--workspace", "--no-fail-fast"])
        .current_dir(&root))?;
    // A build without the optional codecs and drivers (Cargo features) compiles cleanly
    // and refuses what it leaves out.
    run(Command::new(&cargo)
        .args([
            "clippy",
            "-p",
            "containers-storage",
            "--no-default-features",
        ])
        .args(["--features", "vfs", "--", "-D", "warnings"])
        .current_dir(&root))?;
    for krate in ["storage-archive", "storage-drivers"] {
        run(Command::new(&cargo)
            .args(["test", "-p", krate, "--no-default-features", "--lib"])
            .current_dir(&root))?;
    }
    // Every fuzz target for a bounded time (9 targets: about 2.5 minutes, plus the
    // instrumented build in target/fuzz).
    fuzz::main(&root, &["--time".into(), "15".into()])?;
    // The privileged driver and layer-store tests again, inside a VM on Debian 12's own
    // kernel (6.1: no `lowerdir+`, XFS project quotas), then the power-cut test. The whole
    // workspace in the VM takes ~30 minutes under TCG; these take ~3 + ~7.
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    run(Command::new(&me)
        .args(["vm-test", "-p", "storage-drivers", "-p", "storage-layers"])
        .current_dir(&root))?;
    run(Command::new(&me)
        .args(["vm-test", "--power-cut", "5"])
        .current_dir(&root))?;
    // I/O faults (device-mapper error/flakey targets, a full file system) in the VM.
    run(Command::new(&me)
        .args(["vm-test", "-p", "storage-tests", "faults"])
        .current_dir(&root))?;
    // The mixed-writer soak: ours, Go's and podman on one store, a minute per driver.
    run(Command::new(&me)
        .args(["soak", "--minutes", "1"])
        .current_dir(&root))?;
    Ok(())
}
