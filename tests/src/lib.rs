//! Shared helpers for the cross-crate tests of containers-storage-rs.
//!
//! **Use it for:** the tests of this workspace only. **Not for:** library users: nothing here is
//! a stable API.
//!
//! The tests in `tests/tests/` drive our `containers-storage` binary and the reference peers
//! (Debian's Go `containers-storage`, `podman`, `skopeo`, `umoci`) on scratch stores in
//! temporary directories.
//!
//! * [`ours`] builds (once per test process) and returns the path of our binary, so a test never
//!   runs a stale one.
//! * [`peer`] finds a peer program; when it is missing the test fails if `CI=true` and is skipped
//!   (loudly, on stderr) otherwise — see [`require`].
//! * [`Cs`] is a scratch store (graph root, run root, driver) that runs either binary on it;
//!   dropping it unmounts what is left mounted in it and removes it.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod fs;
pub mod oci;
pub mod peers;
pub mod rootless;
pub mod tars;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
pub use storage_testsupport::{in_ci, is_root, require};

/// The workspace root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of our `containers-storage` binary, built with cargo the first time it is asked for.
pub fn ours() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "storage-cli",
                "--bin",
                "containers-storage",
            ])
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build for containers-storage");
        assert!(status.success(), "cargo build of containers-storage failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        let bin = target.join("debug").join("containers-storage");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
}

/// Finds a peer program on `PATH` (e.g. Debian's Go `containers-storage` is `/usr/bin/containers-storage`).
pub fn peer(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Debian's Go `containers-storage` (1.43), if installed.
pub fn go_cs() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/containers-storage");
    p.is_file().then_some(p)
}

/// Driver options of the stores that have some, by graph root (see [`Cs::set_storage_opts`]).
static STORAGE_OPTS: Mutex<BTreeMap<PathBuf, Vec<String>>> = Mutex::new(BTreeMap::new());

/// A scratch store: graph root, run root and driver, in a temporary directory.
pub struct Cs {
    /// Keeps the temporary directory alive.
    pub dir: tempfile::TempDir,
    /// Graph root.
    pub graph: PathBuf,
    /// Run root.
    pub run: PathBuf,
    /// Driver name.
    pub driver: String,
}

/// Unmounts whatever is still mounted under the store's directory, deepest first, so that
/// removing it succeeds and no mount outlives the test: the overlay driver's private bind
/// mount of its home stays until `shutdown` (as with Go's binary), and so do the layers a
/// test mounted and did not unmount.
impl Drop for Cs {
    fn drop(&mut self) {
        let mut roots = vec![self.dir.path()];
        // A few tests keep the graph root elsewhere (on a file system of their own).
        if !self.graph.starts_with(self.dir.path()) {
            roots.push(&self.graph);
        }
        for root in roots {
            let left = storage_testsupport::mounts_under(root);
            if !left.is_empty() {
                eprintln!("cleanup: unmounting what the test left mounted: {left:?}");
                storage_testsupport::unmount_all_under(root);
            }
        }
        self.set_storage_opts(&[]);
    }
}

impl Cs {
    /// A new empty store using `driver`.
    pub fn new(driver: &str) -> Cs {
        let dir = tempfile::Builder::new()
            .prefix("cs-test-")
            .tempdir()
            .expect("tempdir");
        let graph = dir.path().join("root");
        let run = dir.path().join("run");
        Cs {
            dir,
            graph,
            run,
            driver: driver.to_string(),
        }
    }

    /// Sets the driver options given as `--storage-opt OPT` to every command either binary
    /// runs on this store (e.g. `overlay.mount_program=/usr/bin/fuse-overlayfs`); an empty
    /// slice clears them. Kept beside the store (keyed by its graph root) rather than in a
    /// field, so `Cs { .. }` literals stay valid.
    pub fn set_storage_opts(&self, opts: &[&str]) {
        let mut map = STORAGE_OPTS.lock().unwrap_or_else(|e| e.into_inner());
        if opts.is_empty() {
            map.remove(&self.graph);
        } else {
            map.insert(
                self.graph.clone(),
                opts.iter().map(|o| o.to_string()).collect(),
            );
        }
    }

    /// The driver options set with [`Cs::set_storage_opts`] (none by default).
    pub fn storage_opts(&self) -> Vec<String> {
        STORAGE_OPTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&self.graph)
            .cloned()
            .unwrap_or_default()
    }

    /// The global options selecting this store: `--graph`, `--run`, `--storage-driver` and one
    /// `--storage-opt` per driver option.
    pub fn global_args(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec![
            "--graph".into(),
            self.graph.clone().into(),
            "--run".into(),
            self.run.clone().into(),
            "--storage-driver".into(),
            self.driver.clone().into(),
        ];
        for o in self.storage_opts() {
            v.push("--storage-opt".into());
            v.push(o.into());
        }
        v
    }

    fn command(&self, bin: &Path, args: &[&OsStr]) -> Command {
        let mut c = Command::new(bin);
        c.args(self.global_args())
            .args(args)
            .env_remove("STORAGE_OPTS")
            .env_remove("STORAGE_DRIVER")
            .env_remove("CONTAINERS_STORAGE_CONF")
            .stdin(Stdio::null());
        c
    }

    /// A command running our binary with `args` on this store (to spawn it).
    pub fn ours_command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
        self.command(ours(), &args)
    }

    /// Runs our binary with `args` on this store.
    pub fn ours<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
        self.command(ours(), &args).output().expect("run ours")
    }

    /// Runs Debian's Go binary with `args` on this store.
    pub fn go<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let go = go_cs().expect("Go containers-storage");
        self.command(&go, &args).output().expect("run go")
    }

    /// Runs our binary with `args` on this store, killing it and panicking when it has not
    /// finished after `limit` (a guard against a command that blocks forever, not a
    /// measurement: give it minutes).
    pub fn ours_bounded<S: AsRef<OsStr>>(&self, args: &[S], limit: std::time::Duration) -> Output {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let mut child = self
            .command(ours(), &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ours");
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            panic!("no pipes to the child");
        };
        let drain = |r: &mut dyn std::io::Read| {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        };
        let out = std::thread::spawn(move || drain(&mut stdout));
        let err = std::thread::spawn(move || drain(&mut stderr));
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for ours") {
                break s;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} still running after {limit:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        }
    }

    /// Runs our binary with a file as standard input.
    pub fn ours_stdin<S: AsRef<OsStr>>(&self, args: &[S], stdin: &Path) -> Output {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let f = std::fs::File::open(stdin).expect("open stdin file");
        self.command(ours(), &args)
            .stdin(f)
            .output()
            .expect("run ours")
    }
}

/// Asserts success and returns stdout as a string.
#[track_caller]
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// sha256 of a byte slice as `sha256:<hex>`, computed by the system's `sha256sum`.
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    let s = String::from_utf8_lossy(&out.stdout);
    format!("sha256:{}", s.split_whitespace().next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The overlay driver leaves its home bind-mounted (as Go's does) and a mounted layer
    /// stays mounted after our binary exits: dropping the scratch store must unmount both and
    /// remove its directory, so no mount outlives a test.
    #[test]
    fn dropping_an_overlay_store_leaves_no_mount() {
        if !require(is_root(), "overlay mounts need root") {
            return;
        }
        let cs = Cs::new("overlay");
        let layer = ok(&cs.ours(&["create-layer"])).trim().to_string();
        let merged = ok(&cs.ours(&["mount", &layer])).trim().to_string();
        let dir = cs.dir.path().to_path_buf();
        let left = storage_testsupport::mounts_under(&dir);
        // Without these two mounts the test would prove nothing.
        assert!(
            left.contains(&cs.graph.join("overlay")),
            "overlay home not bind-mounted: {left:?}"
        );
        assert!(
            left.contains(&PathBuf::from(&merged)),
            "layer not mounted at {merged}: {left:?}"
        );
        drop(cs);
        let left = storage_testsupport::mounts_under(&dir);
        assert!(left.is_empty(), "mounts left behind: {left:?}");
        assert!(!dir.exists(), "{} not removed", dir.display());
    }
}
