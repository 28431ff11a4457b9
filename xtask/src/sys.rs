//! The system calls of xtask that need `unsafe` (the benchmark's `sync` and `wait4`).
//! The rest of xtask is checked by `#![deny(unsafe_code)]`.

use std::io;

/// `sync(2)`: all dirty data of all file systems is written back.
pub fn sync_all() {
    // SAFETY: sync(2) takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::sync() };
}

/// Waits for `pid` and returns its raw wait status and resource usage.
///
/// Std's `Child::wait` does not return rusage.
pub fn wait4(pid: libc::pid_t) -> io::Result<(i32, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a plain C struct of integers; all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid, writable and live for the whole call; `pid`
        // is a child this process spawned and has not reaped (std never waits on it for us).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
