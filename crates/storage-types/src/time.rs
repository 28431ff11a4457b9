//! `Timestamp`: Go `time.Time` as it appears in the JSON records.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};
use storage_gocompat::date::{civil_from_days, days_from_civil, days_in_month};

/// Seconds from 0001-01-01T00:00:00Z (Go's zero time) to the Unix epoch.
const ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// A point in time with a UTC offset, serialized exactly like Go's
/// `time.Time.MarshalJSON`: RFC 3339 with nanoseconds, trailing zeros of the
/// fraction trimmed, `Z` for a zero offset, `±hh:mm` otherwise.
///
/// The offset read from a file is kept and written back unchanged. The
/// [`Default`] value is Go's zero time, written as `0001-01-01T00:00:00Z`.
/// Ordering and equality consider the instant first, then the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
    offset: i32,
}

impl Default for Timestamp {
    fn default() -> Self {
        Timestamp {
            secs: ZERO_TIME_UNIX,
            nanos: 0,
            offset: 0,
        }
    }
}

impl Timestamp {
    /// The current time in UTC.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Go's zero time (`0001-01-01T00:00:00Z`).
    pub fn zero() -> Self {
        Self::default()
    }

    /// Whether this is Go's zero time (`time.Time.IsZero`).
    pub fn is_zero(&self) -> bool {
        self.secs == ZERO_TIME_UNIX && self.nanos == 0
    }

    /// From Unix seconds + nanoseconds (UTC); `nanos` above 999 999 999 carry over.
    pub fn from_unix(secs: i64, nanos: u32) -> Self {
        let secs = secs.saturating_add(i64::from(nanos / 1_000_000_000));
        Timestamp {
            secs,
            nanos: nanos % 1_000_000_000,
            offset: 0,
        }
    }

    /// From nanoseconds since the Unix epoch (UTC).
    pub fn from_unix_nanos(n: i128) -> Self {
        let secs = n.div_euclid(1_000_000_000);
        let nanos = n.rem_euclid(1_000_000_000) as u32;
        Timestamp {
            secs: secs.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            nanos,
            offset: 0,
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self) -> i128 {
        i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos)
    }

    /// Seconds since the Unix epoch.
    pub fn unix_secs(&self) -> i64 {
        self.secs
    }

    /// Sub-second nanoseconds.
    pub fn subsec_nanos(&self) -> u32 {
        self.nanos
    }

    /// The UTC offset in seconds this timestamp is displayed with.
    pub fn offset_seconds(&self) -> i32 {
        self.offset
    }

    /// The same instant displayed with another UTC offset (seconds east of UTC).
    #[must_use]
    pub fn with_offset(self, offset_seconds: i32) -> Self {
        Timestamp {
            offset: offset_seconds,
            ..self
        }
    }

    /// From a `SystemTime` (UTC).
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self::from_unix_nanos(d.as_nanos() as i128),
            Err(e) => Self::from_unix_nanos(-(e.duration().as_nanos() as i128)),
        }
    }

    /// To a `SystemTime` (the offset is irrelevant); the Unix epoch for instants
    /// `SystemTime` cannot represent.
    pub fn to_system_time(&self) -> SystemTime {
        let nanos = Duration::from_nanos(u64::from(self.nanos));
        let t = if self.secs >= 0 {
            UNIX_EPOCH.checked_add(Duration::from_secs(self.secs.unsigned_abs()))
        } else {
            UNIX_EPOCH.checked_sub(Duration::from_secs(self.secs.unsigned_abs()))
        };
        t.and_then(|t| t.checked_add(nanos)).unwrap_or(UNIX_EPOCH)
    }

    /// Parses RFC 3339 (`2006-01-02T15:04:05.999999999Z07:00`, any number of
    /// fraction digits, `Z` or `±hh:mm`), like Go's JSON decoding of `time.Time`.
    pub fn parse(s: &str) -> Result<Self> {
        parse_rfc3339(s.as_bytes()).ok_or_else(|| {
            Error::msg(
                ErrorKind::InvalidInput,
                format!("parsing time {}: not an RFC 3339 time", crate::go_quote(s)),
            )
        })
    }
}

fn parse_rfc3339(b: &[u8]) -> Option<Timestamp> {
    fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
        let s = b.get(at..at + n)?;
        s.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    }
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let min = digits(b, 14, 2)?;
    let sec = digits(b, 17, 2)?;
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't'))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let year = i64::from(year);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 59
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset: i32 = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(&sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let h = digits(b, i + 1, 2)?;
            let m = digits(b, i + 4, 2)?;
            if h > 23 || m > 59 {
                return None;
            }
            let off = (h * 3600 + m * 60) as i32;
            if sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let local = days_from_civil(year, month, day) * 86_400
        + i64::from(hour) * 3600
        + i64::from(min) * 60
        + i64::from(sec);
    Some(Timestamp {
        secs: local - i64::from(offset),
        nanos,
        offset,
    })
}

impl Timestamp {
    /// The [`Display`](fmt::Display) text written into `buf` without `fmt` machinery (this
    /// runs for every record of a listing); `None` for a year outside 0..=9999.
    fn format_fast<'b>(&self, buf: &'b mut [u8; 40]) -> Option<&'b str> {
        fn put(buf: &mut [u8], at: &mut usize, mut v: u32, width: usize) {
            for i in (0..width).rev() {
                buf[*at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
            *at += width;
        }
        let local = self.secs.saturating_add(i64::from(self.offset));
        let days = local.div_euclid(86_400);
        let rem = local.rem_euclid(86_400) as u32;
        let (y, mo, d) = civil_from_days(days);
        let y = u32::try_from(y).ok().filter(|y| *y <= 9999)?;
        if self.nanos >= 1_000_000_000 || self.offset.unsigned_abs() / 3600 > 99 {
            return None;
        }
        let mut at = 0;
        put(buf, &mut at, y, 4);
        for (sep, v) in [
            (b'-', mo),
            (b'-', d),
            (b'T', rem / 3600),
            (b':', rem % 3600 / 60),
            (b':', rem % 60),
        ] {
            buf[at] = sep;
            at += 1;
            put(buf, &mut at, v, 2);
        }
        if self.nanos != 0 {
            buf[at] = b'.';
            at += 1;
            let mut n = self.nanos;
            let mut width = 9;
            while n.is_multiple_of(10) {
                n /= 10;
                width -= 1;
            }
            put(buf, &mut at, n, width);
        }
        if self.offset == 0 {
            buf[at] = b'Z';
            at += 1;
        } else {
            buf[at] = if self.offset < 0 { b'-' } else { b'+' };
            at += 1;
            let a = self.offset.unsigned_abs();
            put(buf, &mut at, a / 3600, 2);
            buf[at] = b':';
            at += 1;
            put(buf, &mut at, a % 3600 / 60, 2);
        }
        std::str::from_utf8(&buf[..at]).ok()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.format_fast(&mut [0u8; 40]) {
            return f.write_str(s);
        }
        let local = self.secs.saturating_add(i64::from(self.offset));
        let days = local.div_euclid(86_400);
        let rem = local.rem_euclid(86_400);
        let (y, mo, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )?;
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        if self.offset == 0 {
            f.write_str("Z")
        } else {
            let sign = if self.offset < 0 { '-' } else { '+' };
            let a = self.offset.unsigned_abs();
            write!(f, "{sign}{:02}:{:02}", a / 3600, a % 3600 / 60)
        }
    }
}

impl std::str::FromStr for Timestamp {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Timestamp::parse(s)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Timestamp::from_system_time(t)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.format_fast(&mut [0u8; 40]) {
            Some(text) => s.serialize_str(text),
            None => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // Go: a JSON null leaves the zero time. The text is parsed where it lies (no copy).
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time string or null")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Timestamp, E> {
                Timestamp::parse(s).map_err(E::custom)
            }
            fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Timestamp, E> {
                Ok(Timestamp::default())
            }
            fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Timestamp, E> {
                Ok(Timestamp::default())
            }
            fn visit_some<D2: Deserializer<'de>>(
                self,
                d: D2,
            ) -> std::result::Result<Timestamp, D2::Error> {
                d.deserialize_str(V)
            }
        }
        d.deserialize_option(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_go_strings() {
        for s in [
            "2026-11-27T19:58:10.9766284Z",
            "2026-11-27T19:51:24.608657069Z",
            "2024-01-01T00:00:00+02:00",
            "2024-01-01T00:00:00.5-07:30",
            "0001-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999999Z",
            "2000-02-29T12:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let t = Timestamp::parse(s).expect(s);
            assert_eq!(t.to_string(), s);
        }
        assert!(
            Timestamp::parse("0001-01-01T00:00:00Z")
                .expect("zero")
                .is_zero()
        );
        assert_eq!(Timestamp::default().to_string(), "0001-01-01T00:00:00Z");
        // +00:00 is written as Z, fraction zeros trimmed, long fractions truncated.
        let t = Timestamp::parse("2024-01-01T00:00:00.1234567891+00:00").expect("parse");
        assert_eq!(t.to_string(), "2024-01-01T00:00:00.123456789Z");
        assert_eq!(
            Timestamp::parse("2024-01-01T00:00:00.500Z")
                .expect("parse")
                .to_string(),
            "2024-01-01T00:00:00.5Z"
        );
    }

    #[test]
    fn fast_text_agrees_with_the_formatter() {
        // The hand-written digits against the `write!` path they replace, over seconds,
        // fractions and offsets (and the cases left to `write!`).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = (x % 400_000_000_000) as i64 - 100_000_000_000;
            let nanos = match i % 4 {
                0 => 0,
                1 => (x >> 20) as u32 % 1_000_000_000,
                2 => ((x >> 20) as u32 % 1000) * 1_000_000,
                _ => 100_000_000,
            };
            let offset = match i % 3 {
                0 => 0,
                1 => ((x >> 40) % 100_000) as i32 - 50_000,
                _ => -(((x >> 40) % 1440) as i32) * 60,
            };
            let t = Timestamp {
                secs,
                nanos,
                offset,
            };
            let mut want = String::new();
            {
                use std::fmt::Write as _;
                let local = t.secs.saturating_add(i64::from(t.offset));
                let (y, mo, d) = civil_from_days(local.div_euclid(86_400));
                let rem = local.rem_euclid(86_400);
                write!(
                    want,
                    "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
                    rem / 3600,
                    rem % 3600 / 60,
                    rem % 60
                )
                .unwrap();
                if t.nanos != 0 {
                    write!(want, ".{}", format!("{:09}", t.nanos).trim_end_matches('0')).unwrap();
                }
                if t.offset == 0 {
                    want.push('Z');
                } else {
                    let a = t.offset.unsigned_abs();
                    let sign = if t.offset < 0 { '-' } else { '+' };
                    write!(want, "{sign}{:02}:{:02}", a / 3600, a % 3600 / 60).unwrap();
                }
            }
            assert_eq!(t.to_string(), want, "{secs} {nanos} {offset}");
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{want}\""));
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00+0200",
            "2024-01-01T00:00:00Zjunk",
        ] {
            assert!(Timestamp::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn conversions_and_order() {
        let a = Timestamp::parse("2024-01-01T02:00:00+02:00").expect("a");
        let b = Timestamp::parse("2024-01-01T00:00:00.000000001Z").expect("b");
        assert_eq!(a.unix_secs(), 1_704_067_200);
        assert_eq!(a.offset_seconds(), 7200);
        assert!(a < b);
        assert_eq!(b.unix_nanos(), 1_704_067_200_000_000_001);
        assert_eq!(Timestamp::from_unix_nanos(b.unix_nanos()), b);
        let st = b.to_system_time();
        assert_eq!(Timestamp::from_system_time(st), b);
        assert_eq!(Timestamp::from_unix(-1, 5).unix_nanos(), -999_999_995);
        let zero = Timestamp::zero();
        assert_eq!(Timestamp::from_unix_nanos(zero.unix_nanos()), zero);
        assert_eq!(a.with_offset(0).to_string(), "2024-01-01T00:00:00Z");
        let huge = Timestamp::from_unix(i64::MAX, 0);
        let _ = huge.to_system_time();
        let _ = huge.to_string();
        let _ = Timestamp::from_unix(i64::MIN, 0).to_string();
        let now = Timestamp::now();
        assert!(now > b && now.offset_seconds() == 0);
        let j: Timestamp = serde_json::from_str("null").expect("null");
        assert!(j.is_zero());
        // In place, escaped (the parser copies it), inside a record, and a wrong type.
        let j: Timestamp =
            serde_json::from_str("\"2024-01-01T02:00:00\\u002b02:00\"").expect("esc");
        assert_eq!(j, a);
        let r: std::collections::BTreeMap<String, Timestamp> =
            serde_json::from_str(r#"{"created":"2024-01-01T02:00:00+02:00","z":null}"#)
                .expect("map");
        assert_eq!(r["created"], a);
        assert!(r["z"].is_zero());
        assert!(serde_json::from_str::<Timestamp>("17").is_err());
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
        assert_eq!(
            serde_json::to_string(&a).expect("ser"),
            "\"2024-01-01T02:00:00+02:00\""
        );
    }
    #[test]
    fn extreme_instants_never_panic() {
        for t in [
            Timestamp::from_unix(i64::MAX, u32::MAX),
            Timestamp::from_unix(i64::MIN, 0).with_offset(i32::MIN),
            Timestamp::from_unix(i64::MAX, 0).with_offset(i32::MAX),
            Timestamp::from_unix_nanos(i128::MAX),
            Timestamp::from_unix_nanos(i128::MIN),
        ] {
            let text = t.to_string();
            assert!(text.contains('T'), "{text}");
            let _ = t.to_system_time();
            let _ = t.unix_nanos();
        }
        assert_eq!(
            Timestamp::from_unix(0, u32::MAX).subsec_nanos(),
            294_967_295
        );
        for bad in [
            "10000-01-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00\u{e9}",
            "",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }
}
