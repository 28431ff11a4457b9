//! Content digests (`algo:hex`), validated like `github.com/opencontainers/go-digest`.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, ErrorKind, Result};

/// go-digest's `ErrDigestInvalidFormat` text.
pub const INVALID_FORMAT: &str = "invalid checksum digest format";
/// go-digest's `ErrDigestInvalidLength` text.
pub const INVALID_LENGTH: &str = "invalid checksum digest length";
/// go-digest's `ErrDigestUnsupported` text.
pub const UNSUPPORTED: &str = "unsupported digest algorithm";

/// A validated digest such as `sha256:<64 lower-case hex>`.
///
/// Accepted algorithms are the ones a Go build of the store has available:
/// `sha256` (64 hex digits), `sha384` (96) and `sha512` (128), lower-case hex only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    full: String,
    colon: usize,
}

impl Digest {
    /// The sha256 digest of `data`.
    pub fn sha256(data: &[u8]) -> Digest {
        let hash = Sha256::digest(data);
        Digest::from_sha256_bytes(&hash)
    }

    fn from_sha256_bytes(hash: &[u8]) -> Digest {
        Digest {
            full: format!("sha256:{}", hex::encode(hash)),
            colon: 6,
        }
    }

    /// Validates `s` exactly like go-digest's `Digest.Validate` and returns Go's
    /// error text on failure (`invalid checksum digest format`,
    /// `invalid checksum digest length`, `unsupported digest algorithm`).
    pub fn validate(s: &str) -> std::result::Result<(), &'static str> {
        let Some(i) = s.find(':') else {
            return Err(INVALID_FORMAT);
        };
        if i == 0 || i + 1 == s.len() {
            return Err(INVALID_FORMAT);
        }
        let (algo, encoded) = (&s[..i], &s[i + 1..]);
        let size = match algo {
            "sha256" => 32,
            "sha384" => 48,
            "sha512" => 64,
            _ => {
                return Err(if matches_digest_regexp(s) {
                    UNSUPPORTED
                } else {
                    INVALID_FORMAT
                });
            }
        };
        if encoded.len() != size * 2 {
            return Err(INVALID_LENGTH);
        }
        if encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(())
        } else {
            Err(INVALID_FORMAT)
        }
    }

    /// The algorithm part (`sha256`).
    pub fn algorithm(&self) -> &str {
        &self.full[..self.colon]
    }

    /// The encoded (hex) part.
    pub fn encoded(&self) -> &str {
        &self.full[self.colon + 1..]
    }

    /// The whole `algo:hex` string.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

/// go-digest's `DigestRegexpAnchored`:
/// `^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`.
fn matches_digest_regexp(s: &str) -> bool {
    let Some((algo, enc)) = s.split_once(':') else {
        return false;
    };
    if enc.is_empty()
        || !enc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
    {
        return false;
    }
    let alnum = |b: u8| b.is_ascii_digit() || b.is_ascii_lowercase();
    let mut prev_sep = true; // at start a component is required
    for b in algo.bytes() {
        if alnum(b) {
            prev_sep = false;
        } else if b".+_-".contains(&b) && !prev_sep {
            prev_sep = true;
        } else {
            return false;
        }
    }
    !prev_sep
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest> {
        match Digest::validate(s) {
            Ok(()) => Ok(Digest {
                full: s.to_owned(),
                colon: s.find(':').unwrap_or(0),
            }),
            Err(text) => Err(Error::msg(ErrorKind::InvalidInput, text)),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Streaming sha256: write bytes into it, then [`Sha256Digester::finish`].
#[derive(Default, Clone)]
pub struct Sha256Digester {
    hasher: Sha256,
    written: u64,
}

impl Sha256Digester {
    /// A fresh digester.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.written += data.len() as u64;
    }

    /// Number of bytes fed so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// The digest of everything written.
    pub fn finish(self) -> Digest {
        Digest::from_sha256_bytes(&self.hasher.finalize())
    }
}

impl Write for Sha256Digester {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_matches_go_digest() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert!(ok.parse::<Digest>().is_ok());
        assert!(
            format!("sha384:{}", "0".repeat(96))
                .parse::<Digest>()
                .is_ok()
        );
        assert!(
            format!("sha512:{}", "f".repeat(128))
                .parse::<Digest>()
                .is_ok()
        );
        let cases = [
            ("bogus", INVALID_FORMAT),
            (":abc", INVALID_FORMAT),
            ("sha256:", INVALID_FORMAT),
            ("sha256:abc", INVALID_LENGTH),
            ("md5:abc", UNSUPPORTED),
            ("a.b:x", UNSUPPORTED),
            ("Sha256:abc", INVALID_FORMAT),
            ("a..b:x", INVALID_FORMAT),
        ];
        for (input, text) in cases {
            let err = input.parse::<Digest>().expect_err(input);
            assert_eq!(err.to_string(), text, "{input}");
        }
        let upper = format!("sha256:{}", "A".repeat(64));
        assert_eq!(
            upper.parse::<Digest>().expect_err("upper").to_string(),
            INVALID_FORMAT
        );
    }

    #[test]
    fn sha256_and_streaming_agree() {
        let d = Digest::sha256(b"hello\n");
        assert_eq!(
            d.to_string(),
            "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.encoded().len(), 64);
        let mut s = Sha256Digester::new();
        s.write_all(b"hel")
            .and_then(|()| s.write_all(b"lo\n"))
            .expect("in-memory write");
        assert_eq!(s.bytes_written(), 6);
        assert_eq!(s.finish(), d);
        let json = serde_json::to_string(&d).expect("serialize");
        let back: Digest = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }
}
