//! Compression detection (Go's `archive.DetectCompression`).

/// A compression algorithm, with the integer values Go stores in `layers.json`
/// (`compression` key, omitted when [`Compression::None`]).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Not compressed (also: anything whose magic is not recognised).
    #[default]
    None = 0,
    /// bzip2 (`BZh`).
    Bzip2 = 1,
    /// gzip (`1F 8B 08`).
    Gzip = 2,
    /// xz (`FD 37 7A 58 5A 00`).
    Xz = 3,
    /// zstd (`28 B5 2F FD`).
    Zstd = 4,
}

impl Compression {
    /// The integer Go records (`0..=4`).
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The inverse of [`Compression::as_i32`]; `None` for unknown values.
    pub fn from_i32(v: i32) -> Option<Compression> {
        Some(match v {
            0 => Compression::None,
            1 => Compression::Bzip2,
            2 => Compression::Gzip,
            3 => Compression::Xz,
            4 => Compression::Zstd,
            _ => return None,
        })
    }

    /// Go's file extension for a tar with this compression (`tar`, `tar.gz`, …).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Bzip2 => "tar.bz2",
            Compression::Gzip => "tar.gz",
            Compression::Xz => "tar.xz",
            Compression::Zstd => "tar.zst",
        }
    }
}

/// Detects the compression of a stream from its first bytes (magic numbers at
/// offset 0; anything else, including an empty or too-short head, is
/// [`Compression::None`]).
pub fn detect_compression(head: &[u8]) -> Compression {
    const MAGICS: [(Compression, &[u8]); 4] = [
        (Compression::Bzip2, &[0x42, 0x5A, 0x68]),
        (Compression::Gzip, &[0x1F, 0x8B, 0x08]),
        (Compression::Xz, &[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]),
        (Compression::Zstd, &[0x28, 0xB5, 0x2F, 0xFD]),
    ];
    MAGICS
        .iter()
        .find(|(_, magic)| head.starts_with(magic))
        .map_or(Compression::None, |(c, _)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_magics() {
        assert_eq!(detect_compression(b""), Compression::None);
        assert_eq!(detect_compression(b"BZ"), Compression::None);
        assert_eq!(detect_compression(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(
            detect_compression(&[0x1f, 0x8b, 0x08, 0]),
            Compression::Gzip
        );
        assert_eq!(
            detect_compression(&[0x1f, 0x8b, 0x07, 0]),
            Compression::None
        );
        assert_eq!(
            detect_compression(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00]),
            Compression::Xz
        );
        assert_eq!(
            detect_compression(&[0xfd, 0x37, 0x7a, 0x58, 0x5a]),
            Compression::None
        );
        assert_eq!(
            detect_compression(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(detect_compression(b"ustar\0"), Compression::None);
        for v in 0..5 {
            assert_eq!(Compression::from_i32(v).map(Compression::as_i32), Some(v));
        }
        assert_eq!(Compression::from_i32(5), None);
        assert_eq!(Compression::Zstd.extension(), "tar.zst");
    }
}
