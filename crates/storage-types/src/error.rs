//! The error type shared by every crate of the project.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// What went wrong, in the categories the Go library exposes as sentinel errors.
///
/// Each kind that has a Go sentinel error carries Go's exact wording (see
/// [`ErrorKind::go_text`]); callers compare kinds, never message text.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `ErrLayerUnknown`: "layer not known".
    LayerUnknown,
    /// `ErrImageUnknown`: "image not known".
    ImageUnknown,
    /// `ErrContainerUnknown`: "container not known".
    ContainerUnknown,
    /// `ErrDuplicateID`: "that ID is already in use".
    DuplicateId,
    /// `ErrDuplicateName`: "that name is already in use".
    DuplicateName,
    /// `ErrLayerHasChildren`: "layer has children".
    LayerHasChildren,
    /// `ErrLayerUsedByImage`: "layer is in use by an image".
    LayerUsedByImage,
    /// `ErrLayerUsedByContainer`: "layer is in use by a container".
    LayerUsedByContainer,
    /// `ErrImageUsedByContainer`: "image is in use by a container".
    ImageUsedByContainer,
    /// `ErrNotALayer`: "identifier is not a layer".
    NotALayer,
    /// `ErrNotAnImage`: "identifier is not an image".
    NotAnImage,
    /// `ErrNotAContainer`: "identifier is not a container".
    NotAContainer,
    /// `ErrNotALayerImageOrContainer`: "identifier is not a layer, image, or container".
    NotALayerImageOrContainer,
    /// `ErrStoreIsReadOnly`: "called a write method on a read-only store".
    StoreIsReadOnly,
    /// `ErrLayerNotMounted`: "layer is not mounted".
    LayerNotMounted,
    /// `ErrParentIsContainer`: "would-be parent layer is a container".
    ParentIsContainer,
    /// `ErrInvalidBigDataName`: "not a valid name for a big data item".
    InvalidBigDataName,
    /// `ErrDigestUnknown`: "could not compute digest of item".
    DigestUnknown,
    /// `ErrSizeUnknown`: "size is not known".
    SizeUnknown,
    /// `graphdriver.ErrNotSupported`: "driver not supported".
    NotSupported,
    /// Malformed input from a caller (bad digest, bad ID map, …).
    InvalidInput,
    /// Malformed on-disk data (a records file that does not parse, …).
    Corrupt,
    /// An operating-system error (see [`Error::io`]).
    Io,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Go's message for this kind (the text of the sentinel error), or a generic
    /// description for the kinds Go has no sentinel for.
    pub fn go_text(self) -> &'static str {
        match self {
            ErrorKind::LayerUnknown => "layer not known",
            ErrorKind::ImageUnknown => "image not known",
            ErrorKind::ContainerUnknown => "container not known",
            ErrorKind::DuplicateId => "that ID is already in use",
            ErrorKind::DuplicateName => "that name is already in use",
            ErrorKind::LayerHasChildren => "layer has children",
            ErrorKind::LayerUsedByImage => "layer is in use by an image",
            ErrorKind::LayerUsedByContainer => "layer is in use by a container",
            ErrorKind::ImageUsedByContainer => "image is in use by a container",
            ErrorKind::NotALayer => "identifier is not a layer",
            ErrorKind::NotAnImage => "identifier is not an image",
            ErrorKind::NotAContainer => "identifier is not a container",
            ErrorKind::NotALayerImageOrContainer => {
                "identifier is not a layer, image, or container"
            }
            ErrorKind::StoreIsReadOnly => "called a write method on a read-only store",
            ErrorKind::LayerNotMounted => "layer is not mounted",
            ErrorKind::ParentIsContainer => "would-be parent layer is a container",
            ErrorKind::InvalidBigDataName => "not a valid name for a big data item",
            ErrorKind::DigestUnknown => "could not compute digest of item",
            ErrorKind::SizeUnknown => "size is not known",
            ErrorKind::NotSupported => "driver not supported",
            ErrorKind::InvalidInput => "invalid argument",
            ErrorKind::Corrupt => "corrupt data",
            ErrorKind::Io => "input/output error",
            ErrorKind::Other => "error",
        }
    }
}

/// An error: a [`ErrorKind`] plus the full message (Go's wording, including any
/// context prefixes, e.g. `"creating layer: layer not known"`).
///
/// `Display` is Go's whole text, the cause's text included (that is what the CLI prints
/// and what Go prints); [`std::error::Error::source`] gives the cause itself (the
/// `io::Error`, the archive or lock error, …) when there is one, for programs that
/// want to inspect it. Two errors are equal when kind, message and errno are.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    errno: Option<i32>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        (self.kind, &self.message, self.errno) == (other.kind, &other.message, other.errno)
    }
}

impl Eq for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `Result` with the shared [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error of `kind` whose message is Go's text for it.
    pub fn new(kind: ErrorKind) -> Self {
        Error {
            kind,
            message: kind.go_text().to_owned(),
            errno: None,
            source: None,
        }
    }

    /// An error of `kind` with a custom message.
    pub fn msg(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            errno: None,
            source: None,
        }
    }

    /// An error of `kind` whose message is `cause`'s text and whose
    /// [`source`](std::error::Error::source) is `cause`.
    pub fn wrap<E: std::error::Error + Send + Sync + 'static>(kind: ErrorKind, cause: E) -> Self {
        Error::msg(kind, cause.to_string()).with_source(cause)
    }

    /// Keeps `cause` as this error's [`source`](std::error::Error::source); the message
    /// is not changed.
    #[must_use]
    pub fn with_source<E: std::error::Error + Send + Sync + 'static>(mut self, cause: E) -> Self {
        self.source = Some(Arc::new(cause));
        self
    }

    /// Prefixes the message like Go's `fmt.Errorf("prefix: %w", err)`; the kind is kept.
    #[must_use]
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }

    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The full message (same as `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// An OS error on a path, worded like Go's `*os.PathError`:
    /// `Error::io("open", "/x", ENOENT)` → `"open /x: no such file or directory"`.
    /// The kind is [`ErrorKind::Io`]; the errno stays available via [`Error::raw_os_error`].
    pub fn io(op: &str, path: &Path, err: std::io::Error) -> Self {
        Error {
            kind: ErrorKind::Io,
            message: format!("{op} {}: {}", path.display(), go_io_error_text(&err)),
            errno: err.raw_os_error(),
            source: Some(Arc::new(err)),
        }
    }

    /// The errno of the underlying OS error, if this error came from one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.errno
    }

    /// Whether this is an OS "no such file or directory" error.
    pub fn is_not_found(&self) -> bool {
        self.errno == Some(libc_enoent())
    }
}

fn libc_enoent() -> i32 {
    2
}

impl From<std::io::Error> for Error {
    /// An [`ErrorKind::Io`] error with Go's wording of the errno (no path).
    fn from(err: std::io::Error) -> Self {
        Error {
            kind: ErrorKind::Io,
            message: go_io_error_text(&err),
            errno: err.raw_os_error(),
            source: Some(Arc::new(err)),
        }
    }
}

/// Go's text for an I/O error: for OS errors the lower-case `strerror` Go's
/// `syscall.Errno` prints (`"no such file or directory"`, no `"(os error 2)"`);
/// for other errors their own message.
pub fn go_io_error_text(err: &std::io::Error) -> String {
    let Some(code) = err.raw_os_error() else {
        // Custom errors (e.g. `io::Error::other("…")`) or simple kinds.
        if let Some(inner) = err.get_ref() {
            return inner.to_string();
        }
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            return "unexpected EOF".to_owned();
        }
        return err.to_string();
    };
    if let Some(text) = errno_text(code) {
        return text.to_owned();
    }
    // Fall back to the C library's text with a lower-case first letter, which is
    // what Go's table holds for the rest.
    let full = err.to_string();
    let text = full
        .strip_suffix(&format!(" (os error {code})"))
        .unwrap_or(&full);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("errno {code}"),
    }
}

/// Go's `syscall` error strings (linux table) for the errno values the store meets.
fn errno_text(code: i32) -> Option<&'static str> {
    Some(match code {
        1 => "operation not permitted",
        2 => "no such file or directory",
        3 => "no such process",
        4 => "interrupted system call",
        5 => "input/output error",
        6 => "no such device or address",
        7 => "argument list too long",
        8 => "exec format error",
        9 => "bad file descriptor",
        10 => "no child processes",
        11 => "resource temporarily unavailable",
        12 => "cannot allocate memory",
        13 => "permission denied",
        14 => "bad address",
        15 => "block device required",
        16 => "device or resource busy",
        17 => "file exists",
        18 => "invalid cross-device link",
        19 => "no such device",
        20 => "not a directory",
        21 => "is a directory",
        22 => "invalid argument",
        23 => "too many open files in system",
        24 => "too many open files",
        25 => "inappropriate ioctl for device",
        26 => "text file busy",
        27 => "file too large",
        28 => "no space left on device",
        29 => "illegal seek",
        30 => "read-only file system",
        31 => "too many links",
        32 => "broken pipe",
        34 => "numerical result out of range",
        35 => "resource deadlock avoided",
        36 => "file name too long",
        37 => "no locks available",
        38 => "function not implemented",
        39 => "directory not empty",
        40 => "too many levels of symbolic links",
        61 => "no data available",
        75 => "value too large for defined data type",
        95 => "operation not supported",
        110 => "connection timed out",
        111 => "connection refused",
        116 => "stale NFS file handle",
        117 => "structure needs cleaning",
        122 => "disk quota exceeded",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_carry_go_text() {
        assert_eq!(
            Error::new(ErrorKind::LayerUnknown).to_string(),
            "layer not known"
        );
        assert_eq!(
            Error::new(ErrorKind::NotALayerImageOrContainer).to_string(),
            "identifier is not a layer, image, or container"
        );
        let e = Error::new(ErrorKind::DuplicateName).context("creating image");
        assert_eq!(e.to_string(), "creating image: that name is already in use");
        assert_eq!(e.kind(), ErrorKind::DuplicateName);
    }

    #[test]
    fn io_errors_use_go_wording() {
        let err = std::fs::File::open("/nonexistent/x").expect_err("must not exist");
        let e = Error::io("open", Path::new("/nonexistent/x"), err);
        assert_eq!(
            e.to_string(),
            "open /nonexistent/x: no such file or directory"
        );
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.is_not_found());
        let e = Error::from(std::io::Error::from_raw_os_error(39));
        assert_eq!(e.to_string(), "directory not empty");
        assert_eq!(e.raw_os_error(), Some(39));
        let cause = std::error::Error::source(&e).expect("the io::Error is kept");
        assert_eq!(
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error),
            Some(39)
        );
        let wrapped = Error::wrap(ErrorKind::Corrupt, e.clone()).context("loading");
        assert_eq!(wrapped.to_string(), "loading: directory not empty");
        assert!(std::error::Error::source(&wrapped).is_some_and(|c| c.is::<Error>()));
        // Fallback path: lower-cased C library text.
        let text = go_io_error_text(&std::io::Error::from_raw_os_error(71));
        assert!(text.starts_with("protocol error"), "{text}");
        assert_eq!(go_io_error_text(&std::io::Error::other("boom")), "boom");
    }
}
