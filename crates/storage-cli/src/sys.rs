//! The libc calls of the CLI that need `unsafe`. The rest of the crate is checked by
//! `#![deny(unsafe_code)]`.

/// Restores the default SIGPIPE disposition (Rust starts programs with it ignored).
/// Called first thing in `main`, before any other thread exists.
pub(crate) fn default_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_DFL has no memory-safety requirements and
    // happens before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
