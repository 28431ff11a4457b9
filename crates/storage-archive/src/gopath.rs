//! Names inside the layer root, from tar member names (bytes), by Go's `path.Clean`.

pub(crate) use storage_gocompat::path::clean;

/// The path a name designates inside a chroot at the layer root, relative to that
/// root, without any `..` (they are clamped at the root) and without a leading `/`.
/// The root itself is `""`.
pub(crate) fn in_root(name: &[u8]) -> Vec<u8> {
    let mut rooted = Vec::with_capacity(name.len() + 1);
    rooted.push(b'/');
    rooted.extend_from_slice(name);
    let mut c = clean(&rooted);
    c.remove(0);
    c
}

/// Splits a root-relative path (as returned by [`in_root`]) into parent and base.
/// The root (`""`) has parent `""` and base `"."`.
pub(crate) fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    if rel.is_empty() {
        return (b"", b".");
    }
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

/// Joins two root-relative paths.
pub(crate) fn join(dir: &[u8], base: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + base.len() + 1);
    p.extend_from_slice(dir);
    if !dir.is_empty() && !base.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(base);
    p
}

/// How Go prints a path inside the chroot: `/` + the root-relative path.
pub(crate) fn display(rel: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_root_clamps() {
        assert_eq!(in_root(b"../escape"), b"escape");
        assert_eq!(in_root(b"a/b/../../../x"), b"x");
        assert_eq!(in_root(b"/abs/file"), b"abs/file");
        assert_eq!(in_root(b"./"), b"");
        assert_eq!(in_root(b"."), b"");
        assert_eq!(in_root(b"/"), b"");
        assert_eq!(in_root(b"a/./b/"), b"a/b");
    }

    #[test]
    fn split_and_join() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(split(b""), (&b""[..], &b"."[..]));
        assert_eq!(join(b"a", b"b"), b"a/b");
        assert_eq!(join(b"", b"b"), b"b");
        assert_eq!(join(b"a", b""), b"a");
        assert_eq!(display(b"a/b"), "/a/b");
        assert_eq!(display(b""), "/");
    }
}
