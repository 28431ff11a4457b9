//! Go's texts for OS errors: `syscall.Errno.Error()` and the `*PathError` wording.

use std::fmt;
use std::io;
use std::path::Path;

/// Go's text for errno `code` (`syscall.Errno(code).Error()`): `no such file or
/// directory`, `permission denied`, …, or `errno <code>` for a number Go's table lacks.
///
/// ```
/// assert_eq!(storage_gocompat::syscall::errno_text(13), "permission denied");
/// assert_eq!(storage_gocompat::syscall::errno_text(41), "errno 41");
/// ```
pub fn errno_text(code: i32) -> String {
    match crate::errno_table::table(code) {
        Some(text) => text.to_owned(),
        None => format!("errno {code}"),
    }
}

/// Go's text for an I/O error: for an OS error the `syscall.Errno` text (never Rust's
/// `No such file or directory (os error 2)`); for an error made from a message, that
/// message; an unexpected end of input is Go's `unexpected EOF`.
///
/// ```
/// let e = std::io::Error::from_raw_os_error(2);
/// assert_eq!(storage_gocompat::syscall::io_error_text(&e), "no such file or directory");
/// let e = std::io::Error::other("custom");
/// assert_eq!(storage_gocompat::syscall::io_error_text(&e), "custom");
/// ```
pub fn io_error_text(err: &io::Error) -> String {
    if let Some(code) = err.raw_os_error() {
        return errno_text(code);
    }
    if let Some(inner) = err.get_ref() {
        return inner.to_string();
    }
    if err.kind() == io::ErrorKind::UnexpectedEof {
        return "unexpected EOF".to_owned();
    }
    err.to_string()
}

/// Displays an I/O error as [`io_error_text`] words it (for `format!` and `#[error]`).
///
/// ```
/// use storage_gocompat::syscall::GoIoError;
/// let e = std::io::Error::from_raw_os_error(17);
/// assert_eq!(format!("mkdir /x: {}", GoIoError(&e)), "mkdir /x: file exists");
/// ```
pub struct GoIoError<'a>(pub &'a io::Error);

impl fmt::Display for GoIoError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&io_error_text(self.0))
    }
}

/// Go's `*PathError` text: `<op> <path>: <error>`.
///
/// ```
/// let e = std::io::Error::from_raw_os_error(2);
/// assert_eq!(
///     storage_gocompat::syscall::path_error_text("open", std::path::Path::new("/x"), &e),
///     "open /x: no such file or directory"
/// );
/// ```
pub fn path_error_text(op: &str, path: &Path, err: &io::Error) -> String {
    format!("{op} {}: {}", path.display(), io_error_text(err))
}

/// An [`io::Error`] of the same kind whose message is Go's `*PathError` text
/// ([`path_error_text`]).
pub fn path_error(op: &str, path: &Path, err: &io::Error) -> io::Error {
    io::Error::new(err.kind(), path_error_text(op, path, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's texts (printed by `syscall.Errno(n).Error()`, Go 1.19 linux/amd64) for the
    /// numbers whose glibc wording differs, and the holes of the table.
    #[test]
    fn errno_texts_are_gos() {
        for (code, text) in [
            (1, "operation not permitted"),
            (2, "no such file or directory"),
            (11, "resource temporarily unavailable"),
            (28, "no space left on device"),
            (41, "errno 41"),
            (58, "errno 58"),
            (95, "operation not supported"),
            (116, "stale NFS file handle"),
            (132, "operation not possible due to RF-kill"),
            (133, "errno 133"),
            (-1, "errno -1"),
        ] {
            assert_eq!(errno_text(code), text, "{code}");
        }
    }

    #[test]
    fn io_errors_in_gos_words() {
        let e = std::fs::File::open("/nonexistent/x").expect_err("must not exist");
        assert_eq!(io_error_text(&e), "no such file or directory");
        assert_eq!(
            path_error("open", Path::new("/nonexistent/x"), &e).to_string(),
            "open /nonexistent/x: no such file or directory"
        );
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(io_error_text(&eof), "unexpected EOF");
        let msg = io::Error::new(io::ErrorKind::InvalidData, "bad data");
        assert_eq!(io_error_text(&msg), "bad data");
    }
}
