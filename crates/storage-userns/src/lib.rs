//! Entering the rootless user's user namespace, as Go's `pkg/unshare` does for podman,
//! buildah and `containers-storage`.
//!
//! **Use it for:** making a program work on a rootless podman user's own store
//! (`~/.local/share/containers/storage`): call [`maybe_reexec`] at the start of `main`, then
//! open the store as usual. Also: knowing whether the process is rootless ([`is_rootless`],
//! [`rootless_uid`]), and the subordinate ID ranges of `/etc/subuid` and `/etc/subgid`
//! ([`sub_id_mappings`]). **Not for:** stores, configuration or drivers (it knows nothing
//! of them), or ID-mapped containers (that is `storage_types::IdMap` and the store).
//!
//! A rootless user's store holds files owned by many IDs: the user's own UID stands for
//! root of the namespace, and the ranges `/etc/subuid` and `/etc/subgid` give the user
//! stand for the other IDs. Only inside that namespace can a process create such files,
//! chown them, and mount overlay or fuse-overlayfs. [`maybe_reexec`] does what Go's
//! `MaybeReexecUsingUserNamespace` does:
//!
//! * as root (effective UID 0 outside any rootless namespace) it returns [`Namespace::Root`];
//! * inside a namespace already configured (`podman unshare`, a process started by podman,
//!   or the re-executed copy of this program: effective UID 0 and
//!   `_CONTAINERS_ROOTLESS_UID` > 0) it returns [`Namespace::Inside`] without doing anything;
//! * otherwise it runs the program again (`/proc/self/exe`, same arguments) in a new user
//!   namespace whose maps are `0 <uid> 1` plus the user's subordinate ranges from ID 1
//!   (set with `newuidmap`/`newgidmap`; with a warning, only the user's own ID when the
//!   ranges or the tools' privileges are missing), with a new mount namespace, as UID 0,
//!   and with the environment Go sets (`_CONTAINERS_USERNS_CONFIGURED=done`,
//!   `_CONTAINERS_ROOTLESS_UID`, `_CONTAINERS_ROOTLESS_GID`, `BUILDAH_ISOLATION=rootless`),
//!   so podman, buildah and this crate recognise it. It forwards SIGHUP, SIGINT and SIGTERM
//!   to that copy and exits with its status (128 + the signal if it was killed): in the
//!   original process the function does not return, except with a set-up error.
//!
//! Warnings (missing ranges, the single-ID fallback) are logged with `tracing`.
//!
//! ```
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // First thing in main, before any thread starts: for a rootless user this runs the
//!     // program again inside the user's namespace (and exits with its status).
//!     let ns = storage_userns::maybe_reexec()?;
//!     // From here on, as root or inside the namespace, open the store as usual, e.g.
//!     // `Store::open(&storage_config::load_default_options()?.0)`.
//!     match ns {
//!         storage_userns::Namespace::Root => assert!(!storage_userns::is_rootless() || storage_userns::rootless_uid() == 0),
//!         storage_userns::Namespace::Inside => assert!(storage_userns::rootless_uid() > 0),
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Limits: real root with Go's `-U` (which makes Go re-execute itself until the kernel's
//! nesting limit) is simply [`Namespace::Root`] here; no `libsubid`; the mount namespace's
//! propagation is left as the kernel sets it (shared mounts become slaves), like Go's.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod reexec;
mod subid;
mod sys;
mod user;

pub use subid::{
    SUBGID_FILE, SUBUID_FILE, SubIdRange, map_arguments, namespace_map, parse_subid,
    sub_id_mappings, sub_id_mappings_in,
};
pub use user::{User, current_user};

/// Set (to `done`) in a configured rootless namespace: podman, buildah and this crate treat
/// the process as rootless and do not set a namespace up again.
pub const USERNS_CONFIGURED: &str = "_CONTAINERS_USERNS_CONFIGURED";
/// The rootless user's UID, inside the namespace where the process runs as UID 0.
pub const ROOTLESS_UID: &str = "_CONTAINERS_ROOTLESS_UID";
/// The rootless user's GID, inside the namespace.
pub const ROOTLESS_GID: &str = "_CONTAINERS_ROOTLESS_GID";
/// Tells buildah started from inside the namespace to use rootless isolation.
pub const BUILDAH_ISOLATION: &str = "BUILDAH_ISOLATION";

/// A set-up failure of the namespace (one line, saying what is missing and what to do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    fn new(msg: impl Into<String>) -> Self {
        Error(msg.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// C's `strerror` text of an OS error (`Operation not permitted`).
fn strerror(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Where [`maybe_reexec`] leaves the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// Real root: no user namespace is needed.
    Root,
    /// Inside the rootless user's namespace, as its UID 0 (set up by this call's re-exec,
    /// by `podman unshare`, or by a parent process).
    Inside,
}

fn env_number(key: &str) -> Option<u32> {
    let v = std::env::var(key).ok().filter(|v| !v.is_empty())?;
    // Go's `strconv.Atoi` with the error ignored: garbage is 0.
    Some(v.trim().parse().unwrap_or(0))
}

/// Go's `GetRootlessUID`: `$_CONTAINERS_ROOTLESS_UID` when set (garbage counts as 0),
/// else the real UID.
pub fn rootless_uid() -> u32 {
    env_number(ROOTLESS_UID).unwrap_or_else(|| rustix::process::getuid().as_raw())
}

/// The rootless user's GID: `$_CONTAINERS_ROOTLESS_GID`, else `$_CONTAINERS_ROOTLESS_UID`,
/// else the effective GID.
pub fn rootless_gid() -> u32 {
    env_number(ROOTLESS_GID)
        .or_else(|| env_number(ROOTLESS_UID))
        .unwrap_or_else(|| rustix::process::getegid().as_raw())
}

/// Whether the process has `CAP_SYS_ADMIN` in its effective set.
pub fn has_cap_sys_admin() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 21) != 0)
}

/// Whether `/proc/self/uid_map` is not the initial namespace's full identity map
/// (Go's `userns.RunningInUserNS`).
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(s) => {
            let f: Vec<&str> = s.split_whitespace().collect();
            !(f.len() == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
        }
        Err(_) => false,
    }
}

/// Go's `unshare.IsRootless()`: the rootless UID is not 0, or
/// `_CONTAINERS_USERNS_CONFIGURED` is set, or the process lacks `CAP_SYS_ADMIN`, or not all
/// IDs are mapped (`/proc/self/uid_map` lacks `4294967295`).
pub fn is_rootless() -> bool {
    rootless_uid() != 0
        || std::env::var_os(USERNS_CONFIGURED).is_some_and(|v| !v.is_empty())
        || !has_cap_sys_admin()
        || !std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| m.contains("4294967295"))
}

/// What [`maybe_reexec`] does for a process with effective UID `euid` and rootless UID
/// `rootless_uid` (Go's test: UID 0 with a rootless UID means "already inside").
///
/// ```
/// use storage_userns::{Decision, decide};
/// assert_eq!(decide(1001, 1001), Decision::Reexec);
/// assert_eq!(decide(0, 1001), Decision::Inside);
/// assert_eq!(decide(0, 0), Decision::Root);
/// ```
pub fn decide(euid: u32, rootless_uid: u32) -> Decision {
    match (euid, rootless_uid) {
        (0, 0) => Decision::Root,
        (0, _) => Decision::Inside,
        _ => Decision::Reexec,
    }
}

/// See [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Real root: nothing to do.
    Root,
    /// Already in a configured namespace: nothing to do.
    Inside,
    /// Run the program again in a new namespace.
    Reexec,
}

/// The child's half of the re-exec, for programs that must enter the namespace before
/// deciding whether to re-execute (the CLI parses its arguments first, like Go's): when
/// this process is the copy [`maybe_reexec`] started, creates the namespaces, waits for the
/// parent to set the maps, becomes UID 0 and returns `Ok(true)`; otherwise returns
/// `Ok(false)` at once. Call it first thing in `main`, while the process has one thread.
///
/// Errors are one line, e.g. `Error during unshare(CLONE_NEWUSER): Operation not
/// permitted: user namespaces are not enabled in /proc/sys/user/max_user_namespaces`; the
/// caller prints it and exits 1 (the parent then exits 1 too).
pub fn finish_reexec() -> Result<bool, Error> {
    reexec::finish_child()
}

/// Enters the rootless user's namespace when needed (see the crate documentation).
///
/// Call it at the start of `main`, before any thread starts. As root, or already inside a
/// configured namespace, it returns at once. For a rootless user it runs the program again
/// inside the namespace and **exits** with that run's status; it returns only with a
/// set-up error, e.g. `finding newgidmap: exec: "newgidmap": executable file not found in
/// $PATH (install newuidmap and newgidmap: …)` (Go exits 1 there).
pub fn maybe_reexec() -> Result<Namespace, Error> {
    if finish_reexec()? {
        return Ok(Namespace::Inside);
    }
    match decide(rustix::process::geteuid().as_raw(), rootless_uid()) {
        Decision::Root => Ok(Namespace::Root),
        Decision::Inside => Ok(Namespace::Inside),
        Decision::Reexec => match reexec::run_parent()? {},
    }
}
