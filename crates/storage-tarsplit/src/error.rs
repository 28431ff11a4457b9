//! The crate error type, with Go's wording.

use std::io;

use crate::gostr::go_quote;

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
    /// An old-GNU sparse member (type `S`): Go's extractor refuses it too, with the text
    /// kept here (`unhandled tar header type 83`). PAX sparse files (formats 0.0, 0.1 and
    /// 1.0) are expanded by the reader, as Go's are, and never give this error.
    #[error("{}", sparse_text(*.typeflag, .name, *.pax_format))]
    Sparse {
        /// The member's typeflag (`S`).
        typeflag: u8,
        /// The member's name.
        name: Vec<u8>,
        /// A PAX sparse format (`0.0`, `0.1`, `1.0`); the reader now always gives `None`
        /// (the old `S` type), PAX sparse files being expanded.
        pax_format: Option<&'static str>,
    },
    /// A PAX sparse file whose map references more data than its data area holds.
    #[error("archive/tar: sparse file references non-existent data")]
    SparseMissingData,
    /// A PAX sparse file whose data area holds more data than its map references.
    #[error("archive/tar: sparse file contains unreferenced data")]
    SparseUnreferencedData,
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
            Error::Sparse {
                typeflag,
                name,
                pax_format,
            } => Error::Sparse {
                typeflag: *typeflag,
                name: name.clone(),
                pax_format: *pax_format,
            },
            Error::SparseMissingData => Error::SparseMissingData,
            Error::SparseUnreferencedData => Error::SparseUnreferencedData,
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

/// The text of [`Error::Sparse`].
fn sparse_text(typeflag: u8, name: &[u8], pax_format: Option<&str>) -> String {
    match pax_format {
        Some(v) => format!(
            "{} is a GNU sparse file in PAX format {v}: sparse files are not supported",
            go_quote(name)
        ),
        None => format!(
            "unhandled tar header type {typeflag} ({} {}): sparse files are not supported",
            typeflag_text(typeflag),
            go_quote(name)
        ),
    }
}

/// A tar typeflag for messages: the character and what it stands for, e.g. `'7',
/// contiguous file` or `'\x01', unknown type`.
pub fn typeflag_text(t: u8) -> String {
    let what = match t {
        b'0' | 0 => "regular file",
        b'1' => "hard link",
        b'2' => "symbolic link",
        b'3' => "character device",
        b'4' => "block device",
        b'5' => "directory",
        b'6' => "FIFO",
        b'7' => "contiguous file",
        b'x' => "PAX header",
        b'g' => "PAX global header",
        b'L' => "GNU long name",
        b'K' => "GNU long link name",
        b'S' => "old GNU sparse file",
        b'D' => "GNU dump directory",
        b'M' => "GNU multi-volume continuation",
        b'N' => "old GNU long file names",
        b'V' => "GNU volume label",
        b'X' => "Solaris extended header",
        b'I' => "star inode-only entry",
        b'A'..=b'Z' => "vendor extension",
        _ => "unknown type",
    };
    let c = if t.is_ascii_graphic() {
        format!("'{}'", t as char)
    } else {
        format!("'\\x{t:02x}'")
    };
    format!("{c}, {what}")
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
