//! The crate error type, with Go's wording.

use std::io;

use storage_gocompat::strconv::quote_bytes as go_quote;

/// Errors of the tar reader, the tar-split recorder and reassembly.
///
/// The `Display` texts are the ones Go's `archive/tar` and `tar-split` produce.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Malformed header (bad checksum, bad number, bad PAX record…).
    #[error("archive/tar: invalid tar header")]
    InvalidHeader,
    /// PAX or GNU long-name data larger than 1 MiB.
    #[error("archive/tar: header field too long")]
    FieldTooLong,
    /// The stream ended inside a header or an entry.
    #[error("unexpected EOF")]
    UnexpectedEof,
    /// A GNU sparse member (old `S` type or PAX sparse records); Go's extractor
    /// does not support them. The value is the member's typeflag.
    #[error("unhandled tar header type {0}")]
    Sparse(u8),
    /// Two members whose cleaned names are equal.
    #[error("duplicates of file paths not supported")]
    DuplicatePath,
    /// The content read back during reassembly does not match the recorded CRC-64.
    #[error("file integrity checksum failed for {}", go_quote(.0))]
    ChecksumMismatch(Vec<u8>),
    /// A tar-split JSON entry could not be decoded.
    #[error("{0}")]
    Json(String),
    /// An I/O error of the underlying reader or writer.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// A copy of this error (I/O errors keep their kind and message), used for
    /// sticky errors.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::InvalidHeader => Error::InvalidHeader,
            Error::FieldTooLong => Error::FieldTooLong,
            Error::UnexpectedEof => Error::UnexpectedEof,
            Error::Sparse(t) => Error::Sparse(*t),
            Error::DuplicatePath => Error::DuplicatePath,
            Error::ChecksumMismatch(n) => Error::ChecksumMismatch(n.clone()),
            Error::Json(s) => Error::Json(s.clone()),
            Error::Io(e) => Error::Io(io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// Converts an I/O error, unwrapping one of ours that travelled through an
    /// `io::Error` (for example through a `Read` impl).
    pub(crate) fn from_io(e: io::Error) -> Error {
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            let kind = e.kind();
            match e.into_inner().map(|b| b.downcast::<Error>()) {
                Some(Ok(ours)) => return *ours,
                Some(Err(other)) => return Error::Io(io::Error::new(kind, other)),
                None => return Error::Io(io::Error::from(kind)),
            }
        }
        Error::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            Error::UnexpectedEof => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            Error::InvalidHeader | Error::FieldTooLong | Error::Json(_) => {
                io::Error::new(io::ErrorKind::InvalidData, e)
            }
            other => io::Error::other(other),
        }
    }
}
