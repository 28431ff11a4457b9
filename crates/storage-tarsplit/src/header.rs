//! The tar member model shared by the reader and the writer (Go's `tar.Header`).

/// Type flags of tar members (`Header::typeflag`).
pub mod typeflag {
    /// A regular file.
    pub const REG: u8 = b'0';
    /// A hard link to an earlier member (`linkname`).
    pub const LINK: u8 = b'1';
    /// A symbolic link (`linkname`).
    pub const SYMLINK: u8 = b'2';
    /// A character device.
    pub const CHAR: u8 = b'3';
    /// A block device.
    pub const BLOCK: u8 = b'4';
    /// A directory.
    pub const DIR: u8 = b'5';
    /// A FIFO.
    pub const FIFO: u8 = b'6';
    /// PAX records for the next member.
    pub const XHEADER: u8 = b'x';
    /// Global PAX records.
    pub const XGLOBAL: u8 = b'g';
    /// GNU long name of the next member.
    pub const GNU_LONGNAME: u8 = b'L';
    /// GNU long link name of the next member.
    pub const GNU_LONGLINK: u8 = b'K';
}

/// A timestamp as stored in a tar header (seconds since the epoch + nanoseconds, normalized
/// so that `nanos < 1_000_000_000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct TarTime {
    /// Seconds since the Unix epoch (may be negative).
    pub secs: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nanos: u32,
}

impl TarTime {
    /// Go's `time.Unix(secs, nsecs)` normalization.
    pub(crate) fn unix(secs: i64, nsecs: i64) -> TarTime {
        let mut s = secs;
        let mut n = nsecs;
        if !(0..1_000_000_000).contains(&n) {
            s = s.wrapping_add(n.div_euclid(1_000_000_000));
            n = n.rem_euclid(1_000_000_000);
        }
        TarTime {
            secs: s,
            nanos: n as u32,
        }
    }
}

/// One tar member in Go's `tar.Header` terms: what [`TarReader`](crate::TarReader) yields
/// and what [`TarWriter`](crate::TarWriter) writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// Member name: PAX `path` / GNU long name / USTAR `prefix/name` applied, NUL-trimmed, not cleaned.
    pub name: Vec<u8>,
    /// Link target (PAX `linkpath` / GNU long link applied).
    pub linkname: Vec<u8>,
    /// Type flag, normalized like Go: `\0` becomes `0`, or `5` when the name ends with `/`.
    pub typeflag: u8,
    /// Permission and mode bits as stored.
    pub mode: i64,
    /// Owner user ID.
    pub uid: i64,
    /// Owner group ID.
    pub gid: i64,
    /// Content size from the header (for link/dir/device/fifo types, no content is read
    /// whatever this says).
    pub size: i64,
    /// Modification time.
    pub mtime: TarTime,
    /// Access time (PAX `atime`, GNU or STAR header field), if present.
    pub atime: Option<TarTime>,
    /// Change time (PAX `ctime`, GNU or STAR header field), if present.
    pub ctime: Option<TarTime>,
    /// Owner user name.
    pub uname: Vec<u8>,
    /// Owner group name.
    pub gname: Vec<u8>,
    /// Device major number.
    pub devmajor: i64,
    /// Device minor number.
    pub devminor: i64,
    /// Extended attributes from PAX `SCHILY.xattr.<name>` records, in record order
    /// (empty values included, like Go 1.60's extractor which reads `PAXRecords`).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// All PAX records of this entry (a repeated key keeps its first position and last value).
    pub pax: Vec<(String, Vec<u8>)>,
}

/// Go's `isHeaderOnlyType`: members of these types have no content.
pub(crate) fn header_only(typeflag: u8) -> bool {
    matches!(typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
}

impl TarTime {
    /// Go's `time.Time.Round(time.Second)`: whole seconds, half a second and more rounded up.
    pub fn round_to_second(self) -> i64 {
        if self.nanos >= 500_000_000 {
            self.secs.saturating_add(1)
        } else {
            self.secs
        }
    }
}
