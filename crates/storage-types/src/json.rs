//! Go-compatible JSON encoding and records-file loading.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::ser::{CharEscape, Formatter};

use crate::error::{Error, ErrorKind, Result};

/// A compact serde_json formatter escaping strings the way Go does
/// (json-iterator "compatible" mode and `encoding/json` with HTML escaping):
/// `<` `>` `&` U+2028 U+2029 as `\u003c` … `\u2029`; control characters other
/// than `\n` `\r` `\t` as `\u00XX`; other non-ASCII as raw UTF-8.
#[derive(Debug, Default, Clone, Copy)]
pub struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // Byte scan: '<' '>' '&' and the UTF-8 of U+2028/U+2029 (E2 80 A8/A9) are all
        // that Go escapes beyond what serde_json does; they are rare, so runs are copied
        // whole.
        let bytes = fragment.as_bytes();
        // Branch-free test over fixed-size chunks (vectorised), then the exact scan only
        // for the rare fragment that has a candidate byte.
        let candidate = |b: u8| (b == b'<') | (b == b'>') | (b == b'&') | (b == 0xE2);
        let chunks = bytes.chunks_exact(32);
        let tail = chunks.remainder();
        let any = chunks
            .map(|c| c.iter().fold(false, |acc, &b| acc | candidate(b)))
            .fold(false, |acc, x| acc | x)
            || tail.iter().any(|&b| candidate(b));
        if !any {
            return writer.write_all(bytes);
        }
        let (mut start, mut i) = (0, 0);
        while i < bytes.len() {
            let (esc, len): (&[u8], usize) = match bytes[i] {
                b'<' => (b"\\u003c", 1),
                b'>' => (b"\\u003e", 1),
                b'&' => (b"\\u0026", 1),
                0xE2 if bytes.get(i + 1) == Some(&0x80) => match bytes.get(i + 2) {
                    Some(0xA8) => (b"\\u2028", 3),
                    Some(0xA9) => (b"\\u2029", 3),
                    _ => {
                        i += 1;
                        continue;
                    }
                },
                _ => {
                    i += 1;
                    continue;
                }
            };
            writer.write_all(&bytes[start..i])?;
            writer.write_all(esc)?;
            i += len;
            start = i;
        }
        writer.write_all(&bytes[start..])
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let s: &[u8] = match char_escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"/",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::Backspace => b"\\u0008",
            CharEscape::FormFeed => b"\\u000c",
            CharEscape::AsciiControl(b) => {
                let buf = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ];
                return writer.write_all(&buf);
            }
        };
        writer.write_all(s)
    }
}

/// Serializes `v` as Go would (compact, Go string escaping, map keys sorted when
/// the map type is sorted — use `BTreeMap`s). Errors only for values serde_json
/// cannot represent at all (e.g. maps with non-string keys).
pub fn try_to_go_json<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    v.serialize(&mut ser)
        .map_err(|e| Error::msg(ErrorKind::InvalidInput, format!("encoding JSON: {e}")))?;
    Ok(out)
}

/// Like [`try_to_go_json`] for values that cannot fail to serialize (all the
/// record types of this crate). Should serialization fail anyway, the result is
/// `null`.
pub fn to_go_json<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    try_to_go_json(v).unwrap_or_else(|_| b"null".to_vec())
}

/// [`to_go_json`] plus a newline: what Go's `json.Encoder` prints (CLI `--json`).
pub fn to_go_json_line<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    let mut out = to_go_json(v);
    out.push(b'\n');
    out
}

/// Parses the contents of a records file (a JSON array). Empty data (or `null`)
/// is an empty list. Errors read `loading <path>: <what> at line L column C`.
pub fn parse_records<T: DeserializeOwned>(data: &[u8], path: &Path) -> Result<Vec<T>> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    // One pass validates the UTF-8 of the whole file, so that the parser need not check every
    // string on its own (most of a record is strings).
    let parsed = match std::str::from_utf8(data) {
        Ok(text) => serde_json::from_str::<Option<Vec<T>>>(text),
        Err(_) => {
            // Go replaces invalid UTF-8 by U+FFFD instead of failing; if that does not parse
            // either, the error is the one the raw bytes give.
            let lossy = String::from_utf8_lossy(data);
            serde_json::from_str::<Option<Vec<T>>>(&lossy)
                .or_else(|_| serde_json::from_slice::<Option<Vec<T>>>(data))
        }
    };
    parsed.map(Option::unwrap_or_default).map_err(|e| {
        Error::msg(
            ErrorKind::Corrupt,
            format!("loading {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn escapes_like_go() {
        let s = "a<b>&c \"q\" é\u{2028}\u{2029}\u{8}\u{c}\u{7f}\u{1}\n\t\r\\/";
        let got = String::from_utf8(to_go_json(s)).expect("utf8");
        assert_eq!(
            got,
            r#""a\u003cb\u003e\u0026c \"q\" é\u2028\u2029\u0008\u000c"#.to_owned()
                + "\u{7f}"
                + r#"\u0001\n\t\r\\/""#
        );
        // Candidates past the first 32-byte chunk and in the tail are found.
        let long = format!("{}<{}\u{2028}", "x".repeat(40), "y".repeat(33));
        assert_eq!(
            to_go_json(long.as_str()),
            format!("\"{}\\u003c{}\\u2028\"", "x".repeat(40), "y".repeat(33)).into_bytes()
        );
        assert_eq!(
            to_go_json("x".repeat(64).as_str()),
            format!("\"{}\"", "x".repeat(64)).into_bytes()
        );
        // Neighbours of U+2028/U+2029 in UTF-8 stay raw.
        assert_eq!(
            to_go_json("\u{2027}\u{20ac}\u{202a}x\u{2029}"),
            "\"\u{2027}\u{20ac}\u{202a}x\\u2029\"".as_bytes()
        );
        let mut m = BTreeMap::new();
        m.insert("b".to_owned(), 1);
        m.insert("B".to_owned(), 2);
        m.insert("a".to_owned(), 3);
        assert_eq!(to_go_json(&m), br#"{"B":2,"a":3,"b":1}"#);
        assert_eq!(to_go_json_line(&vec![1, 2]), b"[1,2]\n");
        let bad: BTreeMap<Vec<u8>, i32> = [(vec![1u8], 1)].into_iter().collect();
        assert!(try_to_go_json(&bad).is_err());
    }

    #[test]
    fn numbers_in_kept_keys_survive_saving() {
        // Found by the `records` fuzz target: a number too long for an integer, in a key
        // kept as is, was parsed to a neighbour of the nearest f64 and saved as
        // 2.0222222222222225e+62, which loaded as …223e+62: load → save changed the record.
        // Parsing must round correctly, as Go's strconv does, for saving to be stable.
        let big = format!("20{}0000", "2".repeat(57));
        let input = format!(
            r#"[{{"id":"x","path":"","count":0,"gidmap":[{{"host_id":{big}}}],"flags":{{"f":0.1e-5,"g":{big}}}}}]"#
        );
        let path = Path::new("mountpoints.json");
        let once: Vec<crate::MountPoint> = parse_records(input.as_bytes(), path).expect("parse");
        let saved = to_go_json(&once);
        let twice: Vec<crate::MountPoint> = parse_records(&saved, path).expect("parse");
        let text = String::from_utf8(saved).expect("utf8");
        assert_eq!(String::from_utf8_lossy(&to_go_json(&twice)), text);
        // The nearest f64 (what Go's ParseFloat gives), printed the way Go prints it.
        let nearest: f64 = big.parse().expect("f64");
        assert_eq!(nearest, 2.0222222222222223e62);
        assert!(
            text.contains(r#""host_id":2.0222222222222223e+62"#),
            "{text}"
        );
        let layers: Vec<crate::Layer> = parse_records(
            br#"[{"id":"l","flags":{"n":2.0222222222222225e+62}}]"#,
            path,
        )
        .expect("parse");
        assert!(String::from_utf8_lossy(&to_go_json(&layers)).contains("2.0222222222222225e+62"));
    }
}
