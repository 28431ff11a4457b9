//! Go's `path.Clean` and `path.Join` (on Unix also `filepath.Clean` and `filepath.Join`),
//! on bytes (tar member names are bytes), strings and [`Path`]s.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Go's `path.Clean`: the shortest path lexically equivalent to `path`. Repeated and
/// trailing slashes go, `.` elements go, `..` removes the element before it (at the root
/// it is dropped; a relative path keeps leading `..`); an empty result is `.`.
///
/// ```
/// use storage_gocompat::path::clean;
/// assert_eq!(clean(b"a//b/./../c/"), b"a/c");
/// assert_eq!(clean(b"/../x"), b"/x");
/// assert_eq!(clean(b"a/../.."), b"..");
/// assert_eq!(clean(b""), b".");
/// ```
pub fn clean(path: &[u8]) -> Vec<u8> {
    match already_clean(path) {
        Some(clean) => clean.to_vec(),
        None => clean_slow(path),
    }
}

/// [`clean`] of a string.
pub fn clean_str(path: &str) -> String {
    // Cleaning only removes whole elements and separators, so UTF-8 stays UTF-8.
    String::from_utf8(clean(path.as_bytes()))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// [`clean`] of a [`Path`] (Go's `filepath.Clean` on Unix).
pub fn clean_path(path: &Path) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&clean(path.as_os_str().as_bytes())))
}

/// Go's `path.Join`: the non-empty elements joined with `/`, then [`clean`]ed; empty when
/// every element is empty.
///
/// ```
/// use storage_gocompat::path::join;
/// assert_eq!(join(&[b"a", b"", b"/b/", b"../c"]), b"a/c");
/// assert_eq!(join(&[b"/", b"..", b"x"]), b"/x");
/// assert_eq!(join(&[b"", b""]), b"");
/// ```
pub fn join(elems: &[&[u8]]) -> Vec<u8> {
    let Some(first) = elems.iter().position(|e| !e.is_empty()) else {
        return Vec::new();
    };
    let mut joined = Vec::new();
    for (i, e) in elems[first..].iter().enumerate() {
        if i > 0 {
            joined.push(b'/');
        }
        joined.extend_from_slice(e);
    }
    clean(&joined)
}

/// [`join`] of strings (Go's `path.Join`, and `filepath.Join` on Unix).
pub fn join_str(elems: &[&str]) -> String {
    let bytes: Vec<&[u8]> = elems.iter().map(|e| e.as_bytes()).collect();
    String::from_utf8(join(&bytes))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Every path of up to `max_len` bytes over `a`, `.` and `/`, the alphabet that matters to
/// [`clean`]: for tests that compare a shortcut of cleaning (like one that joins a clean root
/// with a name) with the algorithm itself.
///
/// ```
/// let paths = storage_gocompat::path::sample_paths(2);
/// assert_eq!(paths.len(), 1 + 3 + 9);
/// ```
pub fn sample_paths(max_len: usize) -> Vec<Vec<u8>> {
    let mut paths: Vec<Vec<u8>> = vec![Vec::new()];
    let mut last: Vec<Vec<u8>> = vec![Vec::new()];
    for _ in 0..max_len {
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

/// [`clean`] by Go's algorithm, for every input.
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
                // Back to the previous '/'.
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

/// The common case of [`clean`]: `path`, or `path` without one leading `./`, when that is
/// already clean (no empty, `.` or `..` element, no trailing slash).
fn already_clean(path: &[u8]) -> Option<&[u8]> {
    if path.is_empty() {
        return None;
    }
    let p = match path.strip_prefix(b"./") {
        Some(rest) if !rest.is_empty() && rest[0] != b'/' => rest,
        Some(_) => return None,
        None => path,
    };
    if p == b"/" {
        return Some(p);
    }
    if p.ends_with(b"/") {
        return None;
    }
    let mut elems = p.split(|&b| b == b'/');
    if p[0] == b'/' {
        elems.next();
    }
    for e in elems {
        if e.is_empty() || e == b"." || e == b".." {
            return None;
        }
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's `path.Clean` test table (`path/path_test.go`) and a few outputs printed by Go.
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
            ("./f", "f"),
            ("a/./b/.../c", "a/b/.../c"),
            ("a//b/./../c/", "a/c"),
            ("/../..", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(clean_str(input), *want, "clean({input:?})");
        }
        assert_eq!(
            clean_path(Path::new("/a/./b/../c//")),
            PathBuf::from("/a/c")
        );
    }

    #[test]
    fn join_matches_go() {
        assert_eq!(join_str(&["", ""]), "");
        assert_eq!(join_str(&["a", "", "/b/", "../c"]), "a/c");
        assert_eq!(join_str(&["/", "..", "x"]), "/x");
        assert_eq!(join_str(&["", "a"]), "a");
        assert_eq!(join_str(&["", "/"]), "/");
        assert_eq!(join_str(&["a", "b/c"]), "a/b/c");
    }

    #[test]
    fn fast_path_agrees_with_the_algorithm() {
        let paths = sample_paths(6);
        assert!(paths.len() > 1000);
        let mut fast = 0;
        for p in &paths {
            if already_clean(p).is_some() {
                fast += 1;
            }
            assert_eq!(clean(p), clean_slow(p), "{:?}", String::from_utf8_lossy(p));
        }
        assert!(fast > 50, "the fast path is taken ({fast})");
    }
}
