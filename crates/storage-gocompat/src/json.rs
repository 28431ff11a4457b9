//! `encoding/json`'s string escaping (Go 1.22 and later, HTML escaping on, as `json.Marshal`
//! and a default `json.Encoder` write it).
//!
//! `"` and `\` are escaped, `\b \f \n \r \t` by name, other control characters as `\u00XX`,
//! `<`, `>` and `&` as `\u003c`, `\u003e`, `\u0026`, and U+2028 / U+2029 as `\u2028` /
//! `\u2029`; everything else, DEL and non-ASCII included, is written as it is. (Go 1.21 and
//! earlier wrote `\b` and `\f` as `\u0008` and `\u000c`, as json-iterator — the writer of
//! containers/storage's record files, see `storage_types::GoFormatter` — still does.)

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` to `out` as a quoted JSON string, escaped as Go's `encoding/json` does.
///
/// ```
/// let mut out = Vec::new();
/// storage_gocompat::json::write_string(&mut out, "a<b\n");
/// assert_eq!(out, br#""a\u003cb\n""#);
/// ```
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        let b = bytes[i];
        let (esc, len): (&[u8], usize) = match b {
            b'"' => (b"\\\"", 1),
            b'\\' => (b"\\\\", 1),
            0x08 => (b"\\b", 1),
            0x0c => (b"\\f", 1),
            b'\n' => (b"\\n", 1),
            b'\r' => (b"\\r", 1),
            b'\t' => (b"\\t", 1),
            b'<' => (b"\\u003c", 1),
            b'>' => (b"\\u003e", 1),
            b'&' => (b"\\u0026", 1),
            // U+2028 / U+2029 are E2 80 A8 / E2 80 A9.
            0xE2 if bytes.get(i + 1) == Some(&0x80) && bytes.get(i + 2) == Some(&0xA8) => {
                (b"\\u2028", 3)
            }
            0xE2 if bytes.get(i + 1) == Some(&0x80) && bytes.get(i + 2) == Some(&0xA9) => {
                (b"\\u2029", 3)
            }
            b if b < 0x20 => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                i += 1;
                start = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        i += len;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `s` as a quoted JSON string ([`write_string`]).
///
/// ```
/// assert_eq!(storage_gocompat::json::string("\"&\""), r#""\"\u0026\"""#);
/// ```
pub fn string(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 2);
    write_string(&mut out, s);
    // Only ASCII escapes were added to valid UTF-8, cut at character boundaries.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `json.NewEncoder(w).Encode(s)`'s string (Go 1.19, whose only difference from Go 1.22
    /// is `\u0008`/`\u000c` for `\b`/`\f`).
    #[test]
    fn escaping_matches_go() {
        let go_1_19 =
            "\"a\\u003cb\\u003e\\u0026\\\"\\\\\\n\\t\\u0008\\u000c\\u0001é\\u2028\\u2029\u{7f}\"";
        let go_1_22 = go_1_19.replace("\\u0008", "\\b").replace("\\u000c", "\\f");
        assert_eq!(
            string("a<b>&\"\\\n\t\u{8}\u{c}\u{1}é\u{2028}\u{2029}\u{7f}"),
            go_1_22
        );
        assert_eq!(string(""), "\"\"");
        assert_eq!(
            string("\u{1f}\u{2027}\u{202a}"),
            "\"\\u001f\u{2027}\u{202a}\""
        );
    }
}
