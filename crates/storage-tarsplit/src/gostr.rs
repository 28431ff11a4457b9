//! Go string helpers: `filepath.Clean`, `strconv.Quote` and `encoding/json` string escaping.

/// Go's `filepath.Clean` on raw bytes (Unix separators).
pub fn clean_path(path: &[u8]) -> Vec<u8> {
    match already_clean(path) {
        Some(clean) => clean.to_vec(),
        None => clean_slow(path),
    }
}

/// [`clean_path`] by Go's algorithm, for every input.
fn clean_slow(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    let rooted = path[0] == b'/';
    let n = path.len();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let (mut r, mut dotdot) = (0usize, 0usize);
    if rooted {
        out.push(b'/');
        r = 1;
        dotdot = 1;
    }
    while r < n {
        if path[r] == b'/' || (path[r] == b'.' && (r + 1 == n || path[r + 1] == b'/')) {
            r += 1;
        } else if path[r] == b'.' && path[r + 1] == b'.' && (r + 2 == n || path[r + 2] == b'/') {
            r += 2;
            if out.len() > dotdot {
                let mut w = out.len() - 1;
                while w > dotdot && out[w] != b'/' {
                    w -= 1;
                }
                out.truncate(w);
            } else if !rooted {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(b'/');
            }
            while r < n && path[r] != b'/' {
                out.push(path[r]);
                r += 1;
            }
        }
    }
    if out.is_empty() {
        return b".".to_vec();
    }
    out
}

/// The common case of [`clean_path`]: `path`, or `path` without one leading `./`, when
/// that is already clean (no empty, `.` or `..` element, no trailing slash).
fn already_clean(path: &[u8]) -> Option<&[u8]> {
    if path.is_empty() {
        return None;
    }
    let p = match path.strip_prefix(b"./") {
        Some(rest) if !rest.is_empty() && rest[0] != b'/' => rest,
        Some(_) => return None,
        None => path,
    };
    if p.ends_with(b"/") && p != b"/" {
        return None;
    }
    let mut elems = p.split(|&b| b == b'/');
    if p[0] == b'/' {
        elems.next();
    }
    if p == b"/" {
        return Some(p);
    }
    for e in elems {
        if e.is_empty() || e == b"." || e == b".." {
            return None;
        }
    }
    Some(p)
}

/// Whether Go's `unicode.IsPrint` would call this (non-ASCII) char printable
/// (approximation: controls, non-ASCII spaces, common format chars and private use are not).
fn go_is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F | 0x2028..=0x202E
        | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF
        | 0xFFFE | 0xFFFF)
}

/// Go's `strconv.Quote` (the `%q` verb) of raw bytes.
pub fn go_quote(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                c if go_is_print(c) => out.push(c),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push_str(&format!("\\U{:08x}", c as u32)),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// Appends `s` as a JSON string the way Go's `json.Encoder` (HTML escaping on) writes it.
pub fn json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            let safe = b >= 0x20 && !matches!(b, b'"' | b'\\' | b'<' | b'>' | b'&');
            if safe {
                i += 1;
                continue;
            }
            out.extend_from_slice(&bytes[start..i]);
            match b {
                b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                _ => out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]),
            }
            i += 1;
            start = i;
            continue;
        }
        // U+2028 / U+2029 are E2 80 A8 / E2 80 A9.
        if b == 0xE2
            && bytes.get(i + 1) == Some(&0x80)
            && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9))
        {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(if bytes[i + 2] == 0xA8 {
                b"\\u2028"
            } else {
                b"\\u2029"
            });
            i += 3;
            start = i;
            continue;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Every path of up to 6 characters over `a`, `.` and `/` (the alphabet that matters to
/// `Clean`), for tests that compare a fast path with the full algorithm.
#[cfg(test)]
pub(crate) fn short_paths() -> Vec<Vec<u8>> {
    let mut paths: Vec<Vec<u8>> = vec![Vec::new()];
    let mut last: Vec<Vec<u8>> = vec![Vec::new()];
    for _ in 0..6 {
        last = last
            .iter()
            .flat_map(|p| {
                [b'a', b'.', b'/'].into_iter().map(move |c| {
                    let mut q = p.clone();
                    q.push(c);
                    q
                })
            })
            .collect();
        paths.extend(last.iter().cloned());
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (i, o) in [
            ("", "."),
            ("./", "."),
            (".", "."),
            ("./f", "f"),
            ("f", "f"),
            ("d/", "d"),
            ("d//e/./", "d/e"),
            ("../escape", "../escape"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("/", "/"),
            ("a/b/..", "a"),
            ("..", ".."),
            ("../..", "../.."),
            ("abc/def/../../..", ".."),
            ("/a/b/../../..", "/"),
            ("a/./b/.../c", "a/b/.../c"),
        ] {
            assert_eq!(
                String::from_utf8_lossy(&clean_path(i.as_bytes())),
                o,
                "clean({i:?})"
            );
        }
    }

    #[test]
    fn clean_fast_path_agrees_with_the_algorithm() {
        let paths = short_paths();
        assert!(paths.len() > 1000);
        let mut fast = 0;
        for p in &paths {
            if already_clean(p).is_some() {
                fast += 1;
            }
            assert_eq!(
                clean_path(p),
                clean_slow(p),
                "{:?}",
                String::from_utf8_lossy(p)
            );
        }
        assert!(fast > 50, "the fast path is taken ({fast})");
    }

    #[test]
    fn quote_matches_go() {
        assert_eq!(go_quote(b"f"), "\"f\"");
        assert_eq!(go_quote(b"./a \"b\"\\"), "\"./a \\\"b\\\"\\\\\"");
        assert_eq!(go_quote(b"\n\x01\x7f"), "\"\\n\\x01\\x7f\"");
        assert_eq!(go_quote(b"\xff\xfeok"), "\"\\xff\\xfeok\"");
        assert_eq!(go_quote("héllo\u{a0}".as_bytes()), "\"héllo\\u00a0\"");
        // Verified against Go's containers-storage `diff` error message.
        assert_eq!(
            go_quote("./wé\"ird\ttab\u{a0}\u{200b}\x7f".as_bytes()),
            r#""./wé\"ird\ttab\u00a0\u200b\x7f""#
        );
    }

    #[test]
    fn json_escaping_matches_go() {
        let mut v = Vec::new();
        json_string(&mut v, "a<b>&\"\\\n\t\x08\x0c\x01é\u{2028}\u{2029}\u{7f}");
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "\"a\\u003cb\\u003e\\u0026\\\"\\\\\\n\\t\\b\\f\\u0001é\\u2028\\u2029\u{7f}\""
        );
    }
}
