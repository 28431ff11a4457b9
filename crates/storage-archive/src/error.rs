//! The crate's error type. Messages follow Go's wording.

use std::io;

use storage_types::{ErrorKind, go_io_error_text};

/// An error while decompressing, digesting or extracting a layer diff.
///
/// `Display` gives Go's text: OS errors as `*os.PathError` (`"lchown /a: operation not
/// permitted"`, paths shown as seen from inside the layer root), stream errors as Go's
/// readers word them (`"unexpected EOF"`, `"archive/tar: invalid tar header"`,
/// `"gzip: invalid header"`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An OS error on a path inside the layer (`"{op} {path}: {errno text}"`).
    #[error("{op} {path}: {}", go_io_error_text(.source))]
    Path {
        /// The operation, named like Go's (`open`, `mkdir`, `lchown`, …).
        op: &'static str,
        /// The path as seen from inside the layer root (`/a/b`).
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// A bare OS error, printed as Go prints a `syscall.Errno` (`"file exists"`).
    #[error("{}", go_io_error_text(.0))]
    Os(io::Error),
    /// Reading the input, or decompressing it, failed (`"unexpected EOF"`, `"gzip: invalid header"`).
    #[error("{}", go_io_error_text(.0))]
    Read(io::Error),
    /// The tar stream is malformed.
    #[error(transparent)]
    Tar(#[from] storage_tarsplit::Error),
    /// A tar entry's owner is outside the layer's ID mapping.
    #[error("container ID {0} cannot be mapped to a host ID")]
    Unmappable(i64),
    /// `lchown` failed (and chown errors are not ignored).
    #[error("failed to Lchown \"{path}\" for UID {uid}, GID {gid}{hint}: lchown {path}: {}", go_io_error_text(.source))]
    Lchown {
        /// The path inside the layer.
        path: String,
        /// The host UID.
        uid: i64,
        /// The host GID.
        gid: i64,
        /// Go's hint for `EINVAL` in a user namespace (or empty).
        hint: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// An entry type the extractor does not handle (`%d` of the type byte, like Go).
    #[error("unhandled tar header type {0}")]
    UnhandledType(u8),
    /// The same path appears twice in the tar (tar-split rejects this in Go).
    #[error("duplicates of file paths not supported")]
    DuplicatePath,
    /// A hard link into `.wh..wh.plnk/` names a file that was not in the tar.
    #[error("invalid aufs hardlink")]
    InvalidAufsHardlink,
    /// The decompressor thread died unexpectedly.
    #[error("decompression thread failed")]
    Thread,
}

impl Error {
    /// The errno of the underlying OS error, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Path { source, .. } | Error::Lchown { source, .. } => source.raw_os_error(),
            Error::Os(e) | Error::Read(e) => e.raw_os_error(),
            _ => None,
        }
    }

    pub(crate) fn path(op: &'static str, rel: &[u8], err: impl Into<io::Error>) -> Self {
        Error::Path {
            op,
            path: crate::gopath::display(rel),
            source: err.into(),
        }
    }
}

impl From<Error> for storage_types::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Path { .. } | Error::Os(_) | Error::Lchown { .. } => ErrorKind::Io,
            Error::Read(_) | Error::Tar(_) | Error::DuplicatePath | Error::InvalidAufsHardlink => {
                ErrorKind::InvalidInput
            }
            Error::Unmappable(_) | Error::UnhandledType(_) => ErrorKind::InvalidInput,
            Error::Thread => ErrorKind::Other,
        };
        storage_types::Error::msg(kind, e.to_string())
    }
}
