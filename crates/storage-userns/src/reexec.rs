//! Go's `MaybeReexecUsingUserNamespace`, without a C constructor.
//!
//! The parent starts `/proc/self/exe` again with the same arguments and three private
//! variables (`_Containers-unshare`, `_Containers-pid-pipe`, `_Containers-continue-pipe`).
//! The child, at the start of its `main` ([`finish_reexec`]), calls
//! `unshare(CLONE_NEWUSER)`, writes its PID to the pid pipe and waits for the parent to
//! write its ID maps (with `newuidmap`/`newgidmap`, or the single-ID fallback) and close the
//! continue pipe; then it becomes root of the namespace, enters a new mount namespace and
//! goes on with the program. The parent forwards SIGHUP, SIGINT and SIGTERM and exits with
//! the child's status (128 + the signal when the child was killed).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};

use storage_types::{IdMap, go_quote};

use crate::subid::{map_arguments, namespace_map, sub_id_mappings};
use crate::user::current_user;
use crate::{
    BUILDAH_ISOLATION, Error, ROOTLESS_GID, ROOTLESS_UID, USERNS_CONFIGURED, strerror, sys,
};

/// Set in the child's environment: the namespaces to create (a decimal of `CLONE_*` flags).
pub(crate) const ENV_UNSHARE: &str = "_Containers-unshare";
/// Set in the child's environment: the descriptor the child writes its PID to.
pub(crate) const ENV_PID_PIPE: &str = "_Containers-pid-pipe";
/// Set in the child's environment: the descriptor the child waits on until its maps are set.
pub(crate) const ENV_CONTINUE_PIPE: &str = "_Containers-continue-pipe";

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::new(format!("{what}: {}", storage_types::go_io_error_text(&e)))
}

/// The child's half: see [`crate::finish_reexec`].
pub(crate) fn finish_child() -> Result<bool, Error> {
    let Some(flags) = std::env::var_os(ENV_UNSHARE) else {
        return Ok(false);
    };
    let pid_fd = std::env::var(ENV_PID_PIPE).ok();
    let continue_fd = std::env::var(ENV_CONTINUE_PIPE).ok();
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("_Containers-"))
        .collect();
    for k in names {
        sys::remove_env(&k);
    }
    let flags: i32 = flags
        .to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::new(format!("invalid {ENV_UNSHARE} value {flags:?}")))?;
    let take = |v: Option<String>, name: &str| -> Result<Option<std::fs::File>, Error> {
        match v {
            None => Ok(None),
            Some(s) => s
                .parse::<i32>()
                .ok()
                .and_then(sys::take_fd)
                .map(Some)
                .ok_or_else(|| Error::new(format!("invalid {name} value {s:?}"))),
        }
    };
    let mut pid_pipe = take(pid_fd, ENV_PID_PIPE)?;
    let mut continue_pipe = take(continue_fd, ENV_CONTINUE_PIPE)?;
    let parent = rustix::process::getppid();

    if flags & sys::CLONE_NEWUSER != 0
        && let Err(e) = sys::unshare(sys::CLONE_NEWUSER)
    {
        return Err(Error::new(format!(
            "Error during unshare(CLONE_NEWUSER): {}{}",
            strerror(&e),
            unshare_note(&e)
        )));
    }
    if let Some(mut p) = pid_pipe.take() {
        let pid = rustix::process::getpid().as_raw_nonzero().get();
        p.write_all(pid.to_string().as_bytes())
            .map_err(|e| io_err("writing PID to pipe", e))?;
    }
    if let Some(mut c) = continue_pipe.take() {
        let mut text = Vec::new();
        c.read_to_end(&mut text)
            .map_err(|e| io_err("reading from continue pipe", e))?;
        if !text.is_empty() {
            // The parent could not set the maps up; it reports why and exits 1.
            std::process::exit(1);
        }
    }
    if flags & sys::CLONE_NEWUSER != 0 {
        sys::become_namespace_root()
            .map_err(|e| Error::new(format!("setresuid/setresgid(0): {}", strerror(&e))))?;
    }
    let rest = flags & !sys::CLONE_NEWUSER;
    if rest != 0 {
        sys::unshare(rest).map_err(|e| {
            Error::new(format!(
                "Error during unshare(0x{rest:x}): {}",
                strerror(&e)
            ))
        })?;
    }
    // Changing credentials cleared any parent-death signal: set it now, then make sure the
    // parent did not exit before that.
    sys::kill_me_with_parent().map_err(|e| io_err("prctl(PR_SET_PDEATHSIG)", e))?;
    if rustix::process::getppid() != parent {
        std::process::exit(1);
    }
    Ok(true)
}

/// Go's hint after a failed `unshare(CLONE_NEWUSER)`.
fn unshare_note(e: &std::io::Error) -> String {
    for f in [
        "/proc/sys/user/max_user_namespaces",
        "/proc/sys/kernel/unprivileged_userns_clone",
    ] {
        if std::fs::read_to_string(f).is_ok_and(|v| v.trim() == "0") {
            return format!(": user namespaces are not enabled in {f}");
        }
    }
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    if e.raw_os_error() == Some(libc::EINVAL) && threads > 1 {
        return format!(
            ": the process has {threads} threads; call maybe_reexec() at the start of main, before any thread starts"
        );
    }
    String::new()
}

/// `exec.LookPath`: the first executable `name` in `$PATH`.
fn look_path(name: &str) -> Result<PathBuf, Error> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            Error::new(format!(
                "finding {name}: exec: {}: executable file not found in $PATH (install newuidmap and newgidmap: the uidmap package on Debian and Ubuntu, shadow-utils elsewhere)",
                go_quote(name)
            ))
        })
}

/// Go's `IsSetID`: the mode bit, or the capability in the file's effective set.
fn is_set_id(path: &Path, mode_bit: u32, cap: u32) -> bool {
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & mode_bit != 0) {
        return true;
    }
    let mut buf = [0u8; 64];
    let Ok(n) = rustix::fs::getxattr(path, "security.capability", &mut buf[..]) else {
        return false;
    };
    if n < 8 {
        return false;
    }
    let magic = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let permitted = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    magic & 1 != 0 && cap < 32 && permitted & (1 << cap) != 0
}

fn status_text(s: &ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("signal: {}", strerror_signal(sig)),
        _ => s.to_string(),
    }
}

fn strerror_signal(sig: i32) -> String {
    match sig {
        libc::SIGKILL => "killed".into(),
        libc::SIGTERM => "terminated".into(),
        libc::SIGINT => "interrupt".into(),
        libc::SIGHUP => "hangup".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        n => format!("signal {n}"),
    }
}

fn write_proc(pid: u32, file: &str, text: &str) -> Result<(), Error> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| io_err(&format!("opening {path}"), e))?
        .write_all(text.as_bytes())
        .map_err(|e| io_err(&format!("writing {text:?} to {path}"), e))
}

/// One of the two maps: runs `tool` (`newgidmap` or `newuidmap`); when it fails, warns
/// like Go and writes the single-ID `fallback` map itself.
fn set_map(pid: u32, tool: &str, map: &[IdMap], fallback_id: u32) -> Result<(), Error> {
    let gid = tool == "newgidmap";
    let path = look_path(tool)?;
    let out = Command::new(&path)
        .arg(pid.to_string())
        .args(map_arguments(map))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| io_err(&format!("running {}", path.display()), e))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let text = text.trim_end();
    if gid {
        tracing::warn!("running newgidmap: {}: {text}", status_text(&out.status));
    } else {
        tracing::warn!(
            "Error running newuidmap: {}: {text}",
            status_text(&out.status)
        );
    }
    let (bit, cap, what) = if gid {
        (0o2000, 6, "setgid")
    } else {
        (0o4000, 7, "setuid")
    };
    if !is_set_id(&path, bit, cap) {
        tracing::warn!(
            "{} should be {what} or have filecaps {what}",
            path.display()
        );
    }
    tracing::warn!("Falling back to single mapping");
    if gid {
        write_proc(pid, "setgroups", "deny")?;
        write_proc(pid, "gid_map", &format!("0 {fallback_id} 1\n"))
    } else {
        write_proc(pid, "uid_map", &format!("0 {fallback_id} 1\n"))
    }
}

/// Reads what the child wrote to the pid pipe (empty when it exited first).
fn read_child_pid(mut pipe: std::fs::File) -> Result<Option<u32>, Error> {
    let mut text = String::new();
    pipe.read_to_string(&mut text)
        .map_err(|e| io_err("reading child PID", e))?;
    if text.is_empty() {
        return Ok(None);
    }
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| Error::new(format!("reading child PID: bad PID {text:?}")))
}

fn exit_code(status: &ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    }
}

fn spawn_child(
    pid_w: &OwnedFd,
    continue_r: &OwnedFd,
    blocked: &sys::Blocked,
) -> std::io::Result<Child> {
    let mut args = std::env::args_os();
    let mut arg0 = args
        .next()
        .unwrap_or_else(|| OsString::from("containers-storage"))
        .into_vec();
    arg0.extend_from_slice(b"-in-a-user-namespace");
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(OsString::from_vec(arg0))
        .args(args)
        .env(
            ENV_UNSHARE,
            (sys::CLONE_NEWUSER | sys::CLONE_NEWNS).to_string(),
        )
        .env(ENV_PID_PIPE, pid_w.as_raw_fd().to_string())
        .env(ENV_CONTINUE_PIPE, continue_r.as_raw_fd().to_string())
        .env(USERNS_CONFIGURED, "done")
        .env(
            ROOTLESS_UID,
            rustix::process::geteuid().as_raw().to_string(),
        )
        .env(
            ROOTLESS_GID,
            rustix::process::getegid().as_raw().to_string(),
        );
    if std::env::var_os(BUILDAH_ISOLATION).is_none() {
        cmd.env(BUILDAH_ISOLATION, "rootless");
    }
    blocked.restore_in_child(&mut cmd);
    cmd.spawn()
}

/// The parent's half: builds the maps, starts the child, sets its maps, waits for it and
/// exits with its status. Returns only on a set-up failure (the child is gone by then).
pub(crate) fn run_parent() -> Result<std::convert::Infallible, Error> {
    let me = current_user();
    let (sub_uids, sub_gids) = match sub_id_mappings(&me.name, &me.name) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(
                "Reading allowed ID mappings: reading subuid mappings for user {} and subgid mappings for group {}: {e}",
                go_quote(&me.name),
                go_quote(&me.name)
            );
            (Vec::new(), Vec::new())
        }
    };
    if sub_uids.is_empty() {
        tracing::warn!(
            "Found no UID ranges set aside for user {} in /etc/subuid.",
            go_quote(&me.name)
        );
    }
    if sub_gids.is_empty() {
        tracing::warn!(
            "Found no GID ranges set aside for user {} in /etc/subgid.",
            go_quote(&me.name)
        );
    }
    let uid_map = namespace_map(me.uid, &sub_uids);
    let gid_map = namespace_map(me.gid, &sub_gids);

    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| io_err("creating pipe", e.into()))
    };
    let (pid_r, pid_w) = pipe()?;
    let (continue_r, continue_w) = pipe()?;
    for child_end in [&pid_w, &continue_r] {
        rustix::io::fcntl_setfd(child_end, rustix::io::FdFlags::empty())
            .map_err(|e| io_err("fcntl", e.into()))?;
    }
    let blocked = sys::block_signals().map_err(|e| io_err("blocking signals", e))?;
    let mut child = spawn_child(&pid_w, &continue_r, &blocked)
        .map_err(|e| io_err("starting /proc/self/exe in a user namespace", e))?;
    drop(pid_w);
    drop(continue_r);
    let mut continue_w = std::fs::File::from(continue_w);

    let setup = match read_child_pid(std::fs::File::from(pid_r)) {
        Ok(Some(pid)) => (|| {
            write_proc(pid, "setgroups", "allow")?;
            set_map(
                pid,
                "newgidmap",
                &gid_map,
                rustix::process::getegid().as_raw(),
            )?;
            set_map(
                pid,
                "newuidmap",
                &uid_map,
                rustix::process::geteuid().as_raw(),
            )
        })(),
        // The child stopped before creating its namespace and said why on stderr.
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = setup {
        let _ = continue_w.write_all(e.to_string().as_bytes());
        drop(continue_w);
        let _ = child.wait();
        drop(blocked);
        return Err(e);
    }
    drop(continue_w);

    let status = loop {
        let sig = blocked
            .wait()
            .map_err(|e| io_err("waiting for signals", e))?;
        if sig == libc::SIGCHLD {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => continue,
                Err(e) => return Err(io_err("waiting for the child", e)),
            }
        }
        if let Err(e) = sys::kill(child.id(), sig) {
            tracing::warn!("forwarding signal {sig} to {}: {e}", child.id());
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(exit_code(&status));
}
