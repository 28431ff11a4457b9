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
    Os(#[source] io::Error),
    /// Reading the input, or decompressing it, failed (`"unexpected EOF"`, `"gzip: invalid header"`).
    #[error("{}", go_io_error_text(.0))]
    Read(#[source] io::Error),
    /// The tar stream is malformed.
    #[error(transparent)]
    Tar(#[from] storage_tarsplit::Error),
    /// A tar entry's owner is outside the layer's ID mapping.
    #[error("container ID {0} cannot be mapped to a host ID")]
    Unmappable(i64),
    /// `lchown` failed (and chown errors are not ignored).
    #[error("failed to Lchown \"{path}\" for UID {uid}, GID {gid}: lchown {path}: {}", go_io_error_text(.source))]
    Lchown {
        /// The path inside the layer.
        path: String,
        /// The host UID.
        uid: i64,
        /// The host GID.
        gid: i64,
        /// The OS error.
        source: io::Error,
    },
    /// `lchown` failed with `EINVAL` in a user namespace: the ID is not mapped there (Go's
    /// `idtools.SafeLchown` text, which says what to do).
    #[error("potentially insufficient UIDs or GIDs available in user namespace (requested {uid}:{gid} for {path}): Check /etc/subuid and /etc/subgid if configured locally and run \"podman system migrate\": lchown {path}: {}", go_io_error_text(.source))]
    InsufficientIds {
        /// The path inside the layer.
        path: String,
        /// The host UID.
        uid: i64,
        /// The host GID.
        gid: i64,
        /// The OS error.
        source: io::Error,
    },
    /// An entry type the extractor does not handle: Go's text (`%d` of the type byte) and
    /// what the byte is.
    #[error("unhandled tar header type {} ({})", .0, storage_tarsplit::typeflag_text(*.0))]
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
            Error::Path { source, .. }
            | Error::Lchown { source, .. }
            | Error::InsufficientIds { source, .. } => source.raw_os_error(),
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
    /// Keeps the message (Go's text), the cause (as the source) and, for OS errors, the
    /// errno.
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Path { .. }
            | Error::Os(_)
            | Error::Lchown { .. }
            | Error::InsufficientIds { .. } => ErrorKind::Io,
            Error::Read(_)
            | Error::Tar(_)
            | Error::DuplicatePath
            | Error::InvalidAufsHardlink
            | Error::Unmappable(_)
            | Error::UnhandledType(_) => ErrorKind::InvalidInput,
            Error::Thread => ErrorKind::Other,
        };
        match e {
            Error::Path { op, path, source } => {
                storage_types::Error::io(op, std::path::Path::new(&path), source)
            }
            Error::Os(source) => storage_types::Error::from(source),
            other => storage_types::Error::wrap(kind, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_go_worded() {
        let e = Error::path("open", b"a/b", io::Error::from_raw_os_error(2));
        assert_eq!(e.to_string(), "open /a/b: no such file or directory");
        assert_eq!(e.raw_os_error(), Some(2));
        let s: storage_types::Error = e.into();
        assert_eq!(s.to_string(), "open /a/b: no such file or directory");
        assert_eq!(s.raw_os_error(), Some(2));
        assert_eq!(
            Error::Os(io::Error::from_raw_os_error(17)).to_string(),
            "file exists"
        );
        assert_eq!(
            Error::Unmappable(70000).to_string(),
            "container ID 70000 cannot be mapped to a host ID"
        );
        assert_eq!(
            Error::UnhandledType(b'7').to_string(),
            "unhandled tar header type 55 ('7', contiguous file)"
        );
        assert_eq!(
            Error::UnhandledType(1).to_string(),
            "unhandled tar header type 1 ('\\x01', unknown type)"
        );
        let lchown = Error::Lchown {
            path: "/f".into(),
            uid: 5,
            gid: 6,
            source: io::Error::from_raw_os_error(1),
        };
        assert_eq!(
            lchown.to_string(),
            "failed to Lchown \"/f\" for UID 5, GID 6: lchown /f: operation not permitted"
        );
        let s: storage_types::Error = Error::DuplicatePath.into();
        assert_eq!(s.kind(), ErrorKind::InvalidInput);
        assert_eq!(s.to_string(), "duplicates of file paths not supported");
    }
}
