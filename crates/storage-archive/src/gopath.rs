//! Go's `path.Clean` / `filepath.Join` semantics on raw bytes (tar names are bytes).

/// Go's `path.Clean`: the shortest lexically equivalent path. `""` → `"."`;
/// leading `..` of a relative path are kept; `/..` is `/`.
pub(crate) fn clean(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    let rooted = path[0] == b'/';
    let n = path.len();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let mut r = 0;
    let mut dotdot = 0;
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
                // backtrack to the previous '/'
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
        out.push(b'.');
    }
    out
}

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
    fn clean_matches_go() {
        let cases: &[(&str, &str)] = &[
            ("", "."),
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("./", "."),
            ("/abc/", "/abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("//abc", "/abc"),
            ("///abc", "/abc"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("/../abc", "/abc"),
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
            ("a/b/../../../x", "../x"),
        ];
        for (input, want) in cases {
            assert_eq!(
                String::from_utf8(clean(input.as_bytes())).unwrap(),
                *want,
                "clean({input:?})"
            );
        }
    }

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
