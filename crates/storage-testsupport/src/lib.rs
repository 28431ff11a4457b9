//! Helpers shared by the tests of every crate of containers-storage-rs (a dev-dependency
//! only; it depends on none of the project's crates, so any crate's tests can use it).
//!
//! * Peers and privileges: [`in_ci`], [`require`], [`is_root`], [`go_cli`]. A test whose
//!   peer program or privilege is missing fails with `CI=true` and is skipped loudly
//!   (on stderr) elsewhere.
//! * Debian's Go `containers-storage` on a scratch vfs store: [`go`], [`first_line`].
//! * Data: [`sha256`], [`gzip`], [`zstd()`], [`xz`], [`bzip2()`], [`prng_bytes`].
//! * The file system: [`list_dir`], [`mounts_under`], [`unmount_all_under`], [`xattr`] helpers,
//!   [`LoopFs`] (a scratch btrfs or xfs file system on a loop device).
//! * [`per_driver!`]: one test per storage driver, named after the driver.
//!
//! ```
//! use storage_testsupport::{first_line, require, sha256};
//! assert_eq!(first_line("abc\ndef\n"), "abc");
//! assert!(require(true, "nothing"));
//! assert_eq!(
//!     sha256(b""),
//!     "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
//! );
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian's Go `containers-storage` (1.43) is installed.
pub const GO_CLI: &str = "/usr/bin/containers-storage";

/// Whether the tests run in CI (`CI=true`), where a missing peer or privilege is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `true` when `ok`; otherwise panics in CI and returns `false` after a loud message
/// elsewhere. Use as `if !require(cond, "why") { return; }`.
pub fn require(ok: bool, why: &str) -> bool {
    if ok {
        return true;
    }
    assert!(!in_ci(), "required for this test in CI: {why}");
    eprintln!("SKIPPING (not in CI): {why}");
    false
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Debian's Go `containers-storage`, or `None` (through [`require`]) when it is not
/// installed. `GO_CONTAINERS_STORAGE` names another binary.
pub fn go_cli() -> Option<PathBuf> {
    let path =
        PathBuf::from(std::env::var("GO_CONTAINERS_STORAGE").unwrap_or_else(|_| GO_CLI.to_owned()));
    let found = path.is_file();
    require(
        found,
        &format!("Go containers-storage at {}", path.display()),
    )
    .then_some(path)
}

/// Runs the Go CLI `cli` on the vfs store `<root>/G` + `<root>/R` with `args` (and
/// `stdin`), asserts that it succeeds and returns its stdout.
pub fn go(cli: &Path, root: &Path, args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut child = Command::new(cli)
        .arg("--graph")
        .arg(root.join("G"))
        .arg("--run")
        .arg(root.join("R"))
        .arg("--storage-driver")
        .arg("vfs")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn containers-storage");
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

/// Runs `cmd` (stdin from `/dev/null` unless set), asserts that it exits with 0 (the
/// panic shows the command, its stdout and stderr) and returns its stdout.
pub fn stdout_of(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Checks that we repair a damaged records file exactly as Go does: `damaged` is written
/// to `G/<file>` (e.g. `vfs-images/images.json`) of two scratch stores under `tmp`; Go's
/// CLI `cli` loads the one with `args` (a listing), `ours` the other (given its root, as
/// for [`go`]); then both files must have changed the same way.
pub fn assert_repaired_like_go(
    cli: &Path,
    tmp: &Path,
    file: &str,
    damaged: &str,
    args: &[&str],
    ours: impl FnOnce(&Path),
) {
    let go_root = tmp.join("go");
    let rust_root = tmp.join("rust");
    for root in [&go_root, &rust_root] {
        let path = root.join("G").join(file);
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
        std::fs::write(&path, damaged).expect("write");
    }
    go(cli, &go_root, args, None);
    ours(&rust_root);
    let go_bytes = std::fs::read(go_root.join("G").join(file)).expect("Go's file");
    let rust_bytes = std::fs::read(rust_root.join("G").join(file)).expect("our file");
    assert_ne!(go_bytes, damaged.as_bytes(), "Go repaired the file");
    assert_eq!(
        String::from_utf8_lossy(&rust_bytes),
        String::from_utf8_lossy(&go_bytes)
    );
}

/// Sets the access and modification times of `path` (not following a symbolic link).
pub fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    let ts = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nanos as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("utimensat");
}

/// The first line of a command's output, trimmed (the new ID of `create-*`).
pub fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_owned()
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// gzip of `data` with a fixed header (the same bytes every time).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// zstd of `data` (level 3).
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

/// xz of `data` (preset 6).
pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).expect("xz");
    e.finish().expect("xz")
}

/// bzip2 of `data`.
pub fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(data).expect("bzip2");
    e.finish().expect("bzip2")
}

/// `n` pseudo-random bytes from `seed` (xorshift: the same bytes for the same seed).
pub fn prng_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// The owner (uid, gid) of `p` itself, not following a final symlink; panics with the path
/// when it cannot be read.
pub fn owner(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (md.uid(), md.gid())
}

/// The names in a directory, sorted (empty when it is missing).
pub fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(p) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Mount points under `dir` (from `/proc/self/mountinfo`), sorted (so the deepest of a
/// chain comes last).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = storage_gocompat::mountinfo::mount_points(&info)
        .map(|m| PathBuf::from(std::ffi::OsString::from_vec(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort();
    v
}

/// Unmounts every mount point under `root`, deepest first: a plain unmount, else a lazy
/// one (a test's clean-up; failures are ignored).
pub fn unmount_all_under(root: &Path) {
    for m in mounts_under(root).iter().rev() {
        if rustix::mount::unmount(m, rustix::mount::UnmountFlags::empty()).is_err() {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// A scratch file system (`mkfs.btrfs`, `mkfs.xfs`, …) in a sparse image file, mounted on
/// a loop device; everything below it is unmounted and the file system detached on drop.
pub struct LoopFs {
    mnt: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// Runs `c`; its stderr is the error when it fails.
fn run_ok(c: &mut Command) -> Result<(), String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{c:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

impl LoopFs {
    /// Formats a sparse image of `size_mib` MiB with `mkfs` in a new temporary directory and
    /// mounts it (needs root). The error says which step failed (no tool, no loop device, no
    /// kernel support): callers decide with [`require`].
    pub fn new(mkfs: &str, size_mib: u64) -> Result<LoopFs, String> {
        let dir = tempfile::Builder::new()
            .prefix("cs-loopfs-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let mut fs = LoopFs::new_in(dir.path(), mkfs, size_mib)?;
        fs._dir = Some(dir);
        Ok(fs)
    }

    /// [`LoopFs::new`] with the image at `<dir>/fs.img`, mounted on `<dir>/mnt`.
    pub fn new_in(dir: &Path, mkfs: &str, size_mib: u64) -> Result<LoopFs, String> {
        let img = dir.join("fs.img");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| format!("mkdir {}: {e}", mnt.display()))?;
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(size_mib << 20))
            .map_err(|e| format!("create {}: {e}", img.display()))?;
        run_ok(Command::new(mkfs).arg("-q").arg(&img))?;
        run_ok(
            Command::new("mount")
                .arg("-o")
                .arg("loop")
                .arg(&img)
                .arg(&mnt),
        )?;
        Ok(LoopFs { mnt, _dir: None })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let mnt = self.mnt.clone();
        for m in mounts_under(&mnt).iter().rev() {
            if m != &mnt {
                let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
            }
        }
        // `mount -o loop` devices are auto-cleared once the last unmount happens.
        if rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::empty()).is_err() {
            let _ = rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// Extended attributes of test files (not following symlinks).
pub mod xattr {
    use std::path::Path;

    /// Sets `name` on `path`; panics on failure.
    pub fn set(path: &Path, name: &str, value: &[u8]) {
        rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
            .expect("lsetxattr");
    }

    /// The value of `name` on `path` (up to 64 KiB, the kernel's limit), `None` when absent.
    pub fn get(path: &Path, name: impl AsRef<std::ffi::OsStr>) -> Option<Vec<u8>> {
        let name = name.as_ref();
        let mut buf = vec![0u8; 65536];
        let n = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
        buf.truncate(n);
        Some(buf)
    }
}

/// Turns a driver name written as an identifier (`fuse_overlayfs`) into the name the
/// store takes (`fuse-overlayfs`); used by [`per_driver!`].
pub fn driver_name(ident: &'static str) -> &'static str {
    match ident {
        "fuse_overlayfs" => "fuse-overlayfs",
        other => other,
    }
}

/// Generates `mod $name { #[test] fn vfs(); #[test] fn overlay(); … }`, each calling
/// `$name(driver)`, so that a failure names the driver. Without a list the drivers are
/// `vfs`, `overlay` and `btrfs`; `per_driver!(name: vfs, fuse_overlayfs)` picks them
/// (`fuse_overlayfs` passes `"fuse-overlayfs"`).
///
/// ```
/// fn works_on(driver: &str) {
///     assert!(!driver.is_empty());
/// }
/// // In a test file: `works_on::vfs` and `works_on::fuse_overlayfs`, two tests.
/// storage_testsupport::per_driver!(works_on: vfs, fuse_overlayfs);
/// ```
#[macro_export]
macro_rules! per_driver {
    ($name:ident) => {
        $crate::per_driver!($name: vfs, overlay, btrfs);
    };
    ($name:ident: $($driver:ident),+ $(,)?) => {
        mod $name {
            $(
                #[test]
                pub fn $driver() {
                    super::$name($crate::driver_name(stringify!($driver)))
                }
            )+
        }
    };
}
