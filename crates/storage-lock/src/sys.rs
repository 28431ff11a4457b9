//! The only module that talks to the kernel through `unsafe`: opening lock
//! files with Go's exact flags and taking/releasing whole-file OFD record locks.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Which kind of record lock to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `F_RDLCK`: shared with other readers.
    Shared,
    /// `F_WRLCK`: exclusive.
    Exclusive,
}

/// `open(path, flags | O_CLOEXEC, 0644)`, retrying on EINTR.
pub(crate) fn open(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    loop {
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
        // open(2) does not retain the pointer.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                flags | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        };
        if fd >= 0 {
            // SAFETY: open(2) just returned this descriptor; nothing else owns it.
            return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn flock_struct(l_type: libc::c_int) -> libc::flock {
    // SAFETY: `libc::flock` is a plain C struct for which all-zero bytes are a
    // valid value (l_pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    // The constants are small (0..=2) and always fit the C `short` fields.
    fl.l_type = l_type as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0;
    fl
}

fn fcntl_lock(file: &File, cmd: libc::c_int, l_type: libc::c_int) -> io::Result<()> {
    let fl = flock_struct(l_type);
    loop {
        // SAFETY: the descriptor is owned by `file` and open for the duration of
        // the call; `fl` is a valid flock struct the kernel only reads.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &fl as *const libc::flock) };
        if r == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn l_type(kind: Kind) -> libc::c_int {
    match kind {
        Kind::Shared => libc::F_RDLCK,
        Kind::Exclusive => libc::F_WRLCK,
    }
}

/// Blocking whole-file OFD lock (`F_OFD_SETLKW`, start 0, len 0).
pub(crate) fn lock_wait(file: &File, kind: Kind) -> io::Result<()> {
    fcntl_lock(file, libc::F_OFD_SETLKW, l_type(kind))
}

/// Non-blocking whole-file OFD lock (`F_OFD_SETLK`). `Ok(false)` when another
/// open file description (any process, including this one) holds a
/// conflicting lock.
pub(crate) fn lock_try(file: &File, kind: Kind) -> io::Result<bool> {
    match fcntl_lock(file, libc::F_OFD_SETLK, l_type(kind)) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Explicit `F_UNLCK` (closing the last descriptor of the open file
/// description releases the lock as well).
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    fcntl_lock(file, libc::F_OFD_SETLK, libc::F_UNLCK)
}
