//! The only module of the crate that uses `unsafe`: the system calls that enter a user
//! namespace, switch to its root, wait for signals, and change the process environment.
//!
//! Every function here is meant for a process that has a single thread (the re-executed
//! program at the start of `main`, or the parent waiting for it): the kernel refuses
//! `unshare(CLONE_NEWUSER)` in a multi-threaded process, and changing the environment while
//! another thread reads it is undefined behaviour.
#![allow(unsafe_code)]

use std::io;

/// `CLONE_NEWUSER`.
pub(crate) const CLONE_NEWUSER: i32 = libc::CLONE_NEWUSER;
/// `CLONE_NEWNS`.
pub(crate) const CLONE_NEWNS: i32 = libc::CLONE_NEWNS;

fn check(r: libc::c_int) -> io::Result<()> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `unshare(flags)`.
pub(crate) fn unshare(flags: i32) -> io::Result<()> {
    // SAFETY: unshare(2) takes a plain integer and touches no memory of ours; the flags
    // used by this crate (CLONE_NEWUSER, CLONE_NEWNS) do not change the sharing of memory
    // or file descriptors with other threads, and callers run single-threaded.
    check(unsafe { libc::unshare(flags) })
}

/// `setresgid(0, 0, 0)` then `setresuid(0, 0, 0)`: become root of the new namespace.
pub(crate) fn become_namespace_root() -> io::Result<()> {
    // SAFETY: plain integer arguments; glibc applies the change to every thread.
    check(unsafe { libc::setresgid(0, 0, 0) })?;
    // SAFETY: as above.
    check(unsafe { libc::setresuid(0, 0, 0) })
}

/// Asks the kernel to send SIGKILL to this process when its parent exits.
pub(crate) fn kill_me_with_parent() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only.
    check(unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    })
}

/// The signals the parent forwards, plus SIGCHLD (the child's exit).
pub(crate) const FORWARDED: [i32; 3] = [libc::SIGHUP, libc::SIGINT, libc::SIGTERM];

/// A set of blocked signals; dropping it restores the previous mask.
pub(crate) struct Blocked {
    set: libc::sigset_t,
    old: libc::sigset_t,
}

/// Blocks SIGHUP, SIGINT, SIGTERM and SIGCHLD, so that they stay pending until
/// [`Blocked::wait`] takes them. A child inherits the mask: start it with
/// [`Blocked::restore_in_child`].
pub(crate) fn block_signals() -> io::Result<Blocked> {
    // SAFETY: sigset_t is a plain bitmask; zeroed is a valid value that sigemptyset
    // initialises properly before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for sig in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
        // SAFETY: `set` is a valid sigset_t and `sig` a valid signal number.
        unsafe { libc::sigaddset(&mut set, *sig) };
    }
    // SAFETY: both pointers are valid sigset_t values owned by this frame.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(Blocked { set, old })
}

impl Blocked {
    /// Waits for one of the blocked signals and returns its number.
    pub(crate) fn wait(&self) -> io::Result<i32> {
        loop {
            // SAFETY: `self.set` is an initialised sigset_t; a null siginfo pointer is allowed.
            let r = unsafe { libc::sigwaitinfo(&self.set, std::ptr::null_mut()) };
            if r >= 0 {
                return Ok(r);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Blocked {
    /// Makes `cmd`'s process start with the mask this process had before
    /// [`block_signals`].
    pub(crate) fn restore_in_child(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let old = self.old;
        // SAFETY: the closure runs in the forked child before exec and only calls
        // pthread_sigmask, which is async-signal-safe, on a copy of a valid sigset_t.
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                if r != 0 {
                    return Err(io::Error::from_raw_os_error(r));
                }
                Ok(())
            });
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by block_signals; the pointer is valid.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// `kill(pid, sig)`.
pub(crate) fn kill(pid: u32, sig: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill(2) takes integers only.
    check(unsafe { libc::kill(pid, sig) })
}

/// Removes an environment variable of this process.
///
/// Only called while the process has a single thread (see the module documentation).
pub(crate) fn remove_env(key: &str) {
    // SAFETY: the process is single-threaded at this point (the re-executed program at the
    // start of `main`), so no other thread can read the environment concurrently.
    unsafe { std::env::remove_var(key) };
}

/// Takes ownership of the inherited descriptor `fd` (named in the environment by the
/// parent), after checking that it is open; marks it close-on-exec.
pub(crate) fn take_fd(fd: i32) -> Option<std::fs::File> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return None;
    }
    // SAFETY: F_GETFD only queries the descriptor table; an invalid fd yields EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags == -1 {
        return None;
    }
    // SAFETY: as above; sets FD_CLOEXEC so the program's own children do not inherit it.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    // SAFETY: the parent passed this open descriptor to this process for it to own; the
    // caller takes it at most once (the variable naming it is removed before).
    Some(unsafe { std::fs::File::from_raw_fd(fd) })
}
