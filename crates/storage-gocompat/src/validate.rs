//! The shapes of identifiers: generated IDs, and names used as one path component.

/// Whether `s` has the shape of a generated ID: 64 lower-case hexadecimal digits.
///
/// ```
/// use storage_gocompat::validate::is_full_id;
/// assert!(is_full_id(&"0a".repeat(32)));
/// assert!(!is_full_id(&"0A".repeat(32)));
/// assert!(!is_full_id("0a"));
/// ```
pub fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `s` can name one entry of a directory: not empty, not `.` or `..`, and without
/// `/` or NUL. IDs of layers, images and containers become such names (`<dir>/<id>`); Go
/// does not check them, and a `/` or `..` would reach outside the store's directory.
///
/// ```
/// use storage_gocompat::validate::is_path_component;
/// assert!(is_path_component("abc"));
/// assert!(is_path_component("..."));
/// for bad in ["", ".", "..", "a/b", "a\0"] {
///     assert!(!is_path_component(bad));
/// }
/// ```
pub fn is_path_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0'])
}
