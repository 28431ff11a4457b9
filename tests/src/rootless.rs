//! Running our CLI, podman and skopeo as an unprivileged user with subordinate ID ranges,
//! the way a rootless podman user runs them.
//!
//! [`users`] creates (once, idempotently, under a lock shared by every test process) two
//! system users: [`USER`], with the subordinate ranges [`SUBID_RANGES`] in `/etc/subuid`
//! and `/etc/subgid`, and [`USER_NOSUBID`], with none. It also makes `/dev/fuse` readable
//! and writable by everyone (mode 0666, as udev does on a desktop; the device is root-only
//! on this project's test machine, and fuse-overlayfs needs it). It needs root, `useradd`
//! and `newuidmap`/`newgidmap` (Debian package `uidmap`).
//!
//! A [`Session`] is one rootless "login" of such a user: its own `HOME` and
//! `XDG_RUNTIME_DIR` in a temporary directory (so the user's default store,
//! `$HOME/.local/share/containers/storage`, and podman's pause process belong to the test),
//! commands started with the user's UID and GID, no supplementary groups, and a clean
//! environment (`HOME`, `USER`, `LOGNAME`, `PATH`, `XDG_RUNTIME_DIR`). No systemd login
//! session is needed. Dropping it kills the session's podman pause process (by its PID
//! file) and removes everything, stores included.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The test user with subordinate ranges.
pub const USER: &str = "csrs-rootless";
/// The test user without subordinate ranges (the single-ID fallback).
pub const USER_NOSUBID: &str = "csrs-nosubid";
/// [`USER`]'s ranges (start, length) in file order: the namespace lays them out sorted by
/// start, so container IDs 1..=65536 are host 400000.., and 65537..=66536 host 500000...
pub const SUBID_RANGES: [(u32, u32); 2] = [(500_000, 1000), (400_000, 65536)];

/// The `PATH` of the user's commands.
pub const USER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A test user.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Login name.
    pub name: &'static str,
    /// UID.
    pub uid: u32,
    /// Primary GID.
    pub gid: u32,
}

impl TestUser {
    /// The host ID that container ID `id` of this user's namespace stands for (the user's
    /// own ID for 0, then [`SUBID_RANGES`] sorted by start).
    pub fn host_id(&self, own: u32, id: u32) -> Option<u32> {
        if id == 0 {
            return Some(own);
        }
        let mut ranges = SUBID_RANGES.to_vec();
        ranges.sort();
        let mut first = 1u32;
        for (start, len) in ranges {
            if id >= first && id < first + len {
                return Some(start + (id - first));
            }
            first += len;
        }
        None
    }
}

/// Both test users.
#[derive(Debug, Clone)]
pub struct Users {
    /// [`USER`].
    pub with_ranges: TestUser,
    /// [`USER_NOSUBID`].
    pub without_ranges: TestUser,
}

fn passwd_entry(name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn ensure_user(name: &'static str) -> Result<TestUser, String> {
    if passwd_entry(name).is_none() {
        let out = Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", "-K", "SUB_UID_COUNT=0"])
            .args(["-K", "SUB_GID_COUNT=0", name])
            .output()
            .map_err(|e| format!("running useradd: {e}"))?;
        if !out.status.success() && passwd_entry(name).is_none() {
            return Err(format!(
                "useradd {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let (uid, gid) = passwd_entry(name).ok_or_else(|| format!("user {name} missing"))?;
    Ok(TestUser { name, uid, gid })
}

/// Makes `file`'s lines for `user` exactly `ranges` (in that order), keeping every other
/// line; rewrites the file atomically only when they differ.
fn ensure_ranges(file: &str, user: &TestUser, ranges: &[(u32, u32)]) -> Result<(), String> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("reading {file}: {e}")),
    };
    let uid = user.uid.to_string();
    let is_user = |l: &str| {
        let first = l.split(':').next().unwrap_or("");
        first == user.name || first == uid
    };
    let current: Vec<&str> = text.lines().filter(|l| is_user(l)).collect();
    let wanted: Vec<String> = ranges
        .iter()
        .map(|(s, n)| format!("{}:{s}:{n}", user.name))
        .collect();
    if current == wanted {
        return Ok(());
    }
    let mut out: String = text
        .lines()
        .filter(|l| !is_user(l))
        .map(|l| format!("{l}\n"))
        .collect();
    for w in &wanted {
        out.push_str(w);
        out.push('\n');
    }
    let tmp = format!("{file}.csrs-tmp");
    std::fs::write(&tmp, out).map_err(|e| format!("writing {tmp}: {e}"))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("chmod {tmp}: {e}"))?;
    std::fs::rename(&tmp, file).map_err(|e| format!("renaming {tmp}: {e}"))
}

fn setup() -> Result<Users, String> {
    if !crate::is_root() {
        return Err("creating the rootless test users needs root".into());
    }
    for tool in ["useradd", "newuidmap", "newgidmap", "setpriv", "unshare"] {
        if crate::peer(tool).is_none()
            && !Path::new("/usr/sbin").join(tool).exists()
            && !Path::new("/sbin").join(tool).exists()
        {
            return Err(format!(
                "{tool} is missing (newuidmap/newgidmap: Debian package uidmap)"
            ));
        }
    }
    // One process at a time edits /etc/passwd, /etc/subuid and /etc/subgid.
    let lock = storage_lock::LockFile::open(Path::new("/tmp/csrs-rootless-users.lock"))
        .map_err(|e| format!("opening the setup lock: {e}"))?;
    let _guard = lock
        .lock()
        .map_err(|e| format!("taking the setup lock: {e}"))?;
    let with_ranges = ensure_user(USER)?;
    let without_ranges = ensure_user(USER_NOSUBID)?;
    for file in ["/etc/subuid", "/etc/subgid"] {
        ensure_ranges(file, &with_ranges, &SUBID_RANGES)?;
        ensure_ranges(file, &without_ranges, &[])?;
    }
    // fuse-overlayfs opens /dev/fuse as the user; udev makes it 0666 on a desktop.
    if let Ok(m) = std::fs::metadata("/dev/fuse")
        && m.mode() & 0o666 != 0o666
    {
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666))
            .map_err(|e| format!("chmod 0666 /dev/fuse: {e}"))?;
    }
    Ok(Users {
        with_ranges,
        without_ranges,
    })
}

/// The test users, created on first use (see the module documentation); `Err` says what
/// is missing.
pub fn users() -> Result<&'static Users, String> {
    static USERS: OnceLock<Result<Users, String>> = OnceLock::new();
    USERS.get_or_init(setup).as_ref().map_err(Clone::clone)
}

/// Whether every user may execute `path`: the file and each directory above it have the
/// "others" execute bit.
fn executable_by_others(path: &Path) -> bool {
    let file_ok = std::fs::metadata(path).is_ok_and(|m| m.mode() & 0o005 == 0o005);
    file_ok
        && path
            .ancestors()
            .skip(1)
            .all(|d| std::fs::metadata(d).is_ok_and(|m| m.mode() & 0o001 != 0))
}

/// A rootless session of a test user (see the module documentation).
pub struct Session {
    /// The user.
    pub user: TestUser,
    /// The session's directory (mode 0755, owned by root).
    pub dir: tempfile::TempDir,
    /// `HOME` (owned by the user).
    pub home: PathBuf,
    /// `XDG_RUNTIME_DIR` (owned by the user, mode 0700).
    pub runtime: PathBuf,
    /// Our binary, at a path the user can execute.
    bin: PathBuf,
}

fn chown(path: &Path, user: &TestUser) {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// Makes `src` executable by `user`: itself when it already is, else a copy in `dir`.
pub fn executable_copy(src: &Path, dir: &Path) -> PathBuf {
    if executable_by_others(src) {
        return src.to_path_buf();
    }
    let name = src.file_name().expect("binary file name");
    let dst = dir.join(name);
    std::fs::copy(src, &dst).expect("copy binary for the test user");
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dst
}

impl Session {
    /// A new session of `user`.
    pub fn new(user: &TestUser) -> Session {
        let dir = tempfile::Builder::new()
            .prefix("csrs-rootless-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod session dir");
        let home = dir.path().join("home");
        let runtime = dir.path().join("run");
        for d in [&home, &runtime] {
            std::fs::create_dir(d).expect("mkdir");
            chown(d, user);
        }
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700))
            .expect("chmod runtime dir");
        let bin = executable_copy(crate::ours(), dir.path());
        Session {
            user: user.clone(),
            dir,
            home,
            runtime,
            bin,
        }
    }

    /// Our binary, as the user runs it.
    pub fn ours_bin(&self) -> &Path {
        &self.bin
    }

    /// The user's default graph root, `$HOME/.local/share/containers/storage`.
    pub fn graph_root(&self) -> PathBuf {
        self.home.join(".local/share/containers/storage")
    }

    /// The user's default run root, `$XDG_RUNTIME_DIR/containers`.
    pub fn run_root(&self) -> PathBuf {
        self.runtime.join("containers")
    }

    /// Writes the user's `storage.conf` (`$HOME/.config/containers/storage.conf`), which
    /// podman and our CLI both read.
    pub fn write_storage_conf(&self, text: &str) {
        let mut dir = self.home.clone();
        for part in [".config", "containers"] {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).expect("mkdir");
                chown(&dir, &self.user);
            }
        }
        let f = dir.join("storage.conf");
        std::fs::write(&f, text).expect("write storage.conf");
        chown(&f, &self.user);
    }

    /// The user's environment.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HOME", self.home.display().to_string()),
            ("USER", self.user.name.to_string()),
            ("LOGNAME", self.user.name.to_string()),
            ("PATH", USER_PATH.to_string()),
            ("XDG_RUNTIME_DIR", self.runtime.display().to_string()),
            ("LANG", "C".to_string()),
        ]
    }

    /// `prog` as the user (UID, GID, no supplementary groups, the user's environment, in
    /// `HOME`, standard input from /dev/null).
    pub fn command<P: AsRef<OsStr>>(&self, prog: P) -> Command {
        let mut c = Command::new(prog);
        c.uid(self.user.uid)
            .gid(self.user.gid)
            .env_clear()
            .envs(self.env())
            .current_dir(&self.home)
            .stdin(Stdio::null());
        c
    }

    /// `prog ARGS` as the user in a private mount namespace (made by root with `unshare`)
    /// where each `(source, target)` of `binds` is bind-mounted first: the way to show one
    /// command a different `/etc/subuid` or `/dev/fuse` without changing the host's.
    pub fn command_with_binds<S: AsRef<OsStr>>(
        &self,
        binds: &[(&Path, &str)],
        prog: &str,
        args: &[S],
    ) -> Command {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(concat!(
                "n=$1; shift; while [ \"$n\" -gt 0 ]; do ",
                "mount --bind \"$1\" \"$2\" || exit 97; shift 2; n=$((n-1)); done; ",
                "u=$1; g=$2; shift 2; ",
                "exec setpriv --reuid=\"$u\" --regid=\"$g\" --clear-groups -- \"$@\""
            ))
            .arg("sh")
            .arg(binds.len().to_string());
        for (src, dst) in binds {
            c.arg(src).arg(dst);
        }
        c.arg(self.user.uid.to_string())
            .arg(self.user.gid.to_string())
            .arg(prog)
            .args(args)
            .env_clear()
            .envs(self.env())
            .current_dir(&self.home)
            .stdin(Stdio::null());
        c
    }

    /// Runs our binary as the user, with no store options (the user's defaults).
    pub fn ours<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.command(&self.bin)
            .args(args)
            .output()
            .expect("run ours as the user")
    }

    /// Runs podman as the user (cgroupfs, no events: there is no systemd session).
    pub fn podman<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.command("podman")
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .args(args)
            .output()
            .expect("run podman as the user")
    }

    /// Runs skopeo as the user.
    pub fn skopeo<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.command("skopeo")
            .args(args)
            .output()
            .expect("run skopeo as the user")
    }

    /// Runs `sh -c SCRIPT` as the user (`$CS` is our binary).
    pub fn sh(&self, script: &str) -> Output {
        self.command("sh")
            .arg("-c")
            .arg(script)
            .env("CS", &self.bin)
            .output()
            .expect("run sh as the user")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Podman keeps the namespace (and its mounts) in a pause process per
        // XDG_RUNTIME_DIR; this session started it, so this session ends it.
        let pid_file = self.runtime.join("libpod/tmp/pause.pid");
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            let pid = pid.trim();
            let owner = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Uid:"))
                        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
                });
            if !pid.is_empty() && owner.as_deref() == Some(&self.user.uid.to_string()) {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
                for _ in 0..50 {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
    }
}
