//! Go's `strconv.Quote` (the `%q` verb of `fmt`), the quoting of names in Go's error texts.

use std::fmt::Write as _;

/// Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII
/// space (Go's table, Unicode 13).
pub fn is_print(c: char) -> bool {
    let c = u32::from(c);
    if c < 0x100 {
        return (0x20..=0x7e).contains(&c) || ((0xa1..=0xff).contains(&c) && c != 0xad);
    }
    let table = &crate::print_table::PRINTABLE;
    // The first range whose last code point is at or after `c`.
    let (mut lo, mut hi) = (0, table.len() / 2);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if table[2 * mid + 1] < c {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo < table.len() / 2 && table[2 * lo] <= c
}

/// Go's `strconv.Quote(s)`: `"` and `\` escaped, `\a \b \f \n \r \t \v` by name, other
/// non-printable characters as `\x`, `\u` or `\U` escapes, printable Unicode as it is.
///
/// ```
/// use storage_gocompat::strconv::quote;
/// assert_eq!(quote("plain"), r#""plain""#);
/// assert_eq!(quote("a \"b\"\n\u{1}é\u{a0}"), r#""a \"b\"\n\x01é\u00a0""#);
/// ```
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    // Nearly every name: printable ASCII without quotes or backslashes.
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(s);
    } else {
        push_quoted(&mut out, s);
    }
    out.push('"');
    out
}

/// Go's `strconv.Quote` of a string holding arbitrary bytes (a tar member name, a file
/// name): bytes that are not UTF-8 become `\x` escapes, as in Go.
///
/// ```
/// assert_eq!(storage_gocompat::strconv::quote_bytes(b"a\xffb"), r#""a\xffb""#);
/// ```
pub fn quote_bytes(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for chunk in s.utf8_chunks() {
        push_quoted(&mut out, chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

fn push_quoted(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_print(c) => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs and `strconv.Quote`'s outputs, printed by a Go program (Go 1.19).
    #[test]
    fn quote_matches_go() {
        let cases: &[(&[u8], &str)] = &[
            (b"f", r#""f""#),
            (b"./a \"b\"\\", r#""./a \"b\"\\""#),
            (b"\n\x01\x7f", r#""\n\x01\x7f""#),
            (b"\xff\xfeok", r#""\xff\xfeok""#),
            ("héllo\u{a0}".as_bytes(), r#""héllo\u00a0""#),
            (
                "./wé\"ird\ttab\u{a0}\u{200b}\x7f".as_bytes(),
                r#""./wé\"ird\ttab\u00a0\u200b\x7f""#,
            ),
            (b"\x07\x08\x0c\x0b\r", r#""\a\b\f\v\r""#),
            (
                "\u{85}\u{2028}\u{2029}\u{feff}".as_bytes(),
                r#""\u0085\u2028\u2029\ufeff""#,
            ),
            (
                "😀\u{e0001}\u{10ffff}".as_bytes(),
                r#""😀\U000e0001\U0010ffff""#,
            ),
            ("\u{1F9FF}\u{378}".as_bytes(), r#""🧿\u0378""#),
            (b"a\x80b\xc3", r#""a\x80b\xc3""#),
            ("\u{ad}\u{61c}".as_bytes(), r#""\u00ad\u061c""#),
        ];
        for (input, want) in cases {
            assert_eq!(quote_bytes(input), *want, "{input:?}");
            if let Ok(s) = std::str::from_utf8(input) {
                assert_eq!(quote(s), *want, "{s:?}");
            }
        }
    }

    #[test]
    fn print_table_edges() {
        for (c, p) in [
            (' ', true),
            ('~', true),
            ('\u{7f}', false),
            ('\u{a0}', false),
            ('\u{a1}', true),
            ('\u{ad}', false),
            ('\u{100}', true),
            ('\u{377}', true),
            ('\u{378}', false),
            ('\u{3000}', false),
            ('\u{e000}', false),
            ('\u{1f600}', true),
            ('\u{10ffff}', false),
        ] {
            assert_eq!(is_print(c), p, "{c:?}");
        }
    }
}
