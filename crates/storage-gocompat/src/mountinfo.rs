//! Fields of `/proc/self/mountinfo`, decoded as Go's `mountinfo` package decodes them.

/// Decodes the octal escapes (`\040` for a space, `\011` for a tab, `\012`, `\134`) the
/// kernel writes in mountinfo fields. The three bytes after `\` are taken as bytes, never as
/// a `str` slice (which could split a multi-byte character); an escape that is not three
/// octal digits of a byte value stays as it is.
///
/// ```
/// use storage_gocompat::mountinfo::unescape;
/// assert_eq!(unescape(r"/mnt/with\040space"), b"/mnt/with space");
/// assert_eq!(unescape(r"/a\777b"), br"/a\777b");
/// ```
pub fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = bytes.get(i + 1..i + 4)
            && oct.iter().all(|b| (b'0'..=b'7').contains(b))
            && let Ok(b) = u8::try_from(
                u32::from(oct[0] - b'0') * 64
                    + u32::from(oct[1] - b'0') * 8
                    + u32::from(oct[2] - b'0'),
            )
        {
            out.push(b);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The mount points (fifth field, decoded) listed in mountinfo text.
///
/// ```
/// let text = "36 35 98:0 /mnt1 /mnt\\040x rw,noatime master:1 - ext3 /dev/root rw\n";
/// let points: Vec<Vec<u8>> = storage_gocompat::mountinfo::mount_points(text).collect();
/// assert_eq!(points, vec![b"/mnt x".to_vec()]);
/// ```
pub fn mount_points(text: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4).map(unescape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_never_splits_characters() {
        assert_eq!(unescape(r"/mnt/a\040b\134c"), b"/mnt/a b\\c");
        assert_eq!(unescape(r"/end\04"), br"/end\04");
        assert_eq!(unescape("/a\\040b"), b"/a b");
        assert_eq!(unescape("/plain"), b"/plain");
        // A backslash followed by a multi-byte character used to panic (str slice
        // inside the character).
        assert_eq!(unescape("/x\\12\u{e9}"), "/x\\12\u{e9}".as_bytes());
        assert_eq!(unescape("/x\\\u{e9}\u{e9}"), "/x\\\u{e9}\u{e9}".as_bytes());
        // Octal above a byte's range is not an escape.
        assert_eq!(unescape(r"\777"), br"\777");
    }

    #[test]
    fn parses_escaped_mount_points() {
        let text = "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 98:0 / /proc rw - proc proc rw\n";
        let points: Vec<Vec<u8>> = mount_points(text).collect();
        assert_eq!(points, vec![b"/mnt/a b".to_vec(), b"/proc".to_vec()]);
    }
}
