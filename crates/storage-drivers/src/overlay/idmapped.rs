//! Mount-time ID shifting helpers of the overlay driver (Go's `pkg/idmap`): which maps
//! fuse-overlayfs can take, and where the idmapped view of a lower is rooted. The user
//! namespace and the idmapped mount themselves are in `crate::sys::idmap`.

use std::path::Path;

use storage_types::IdMap;

/// Go's `IsContiguous`: sorted by container ID, each range continues the previous one
/// on both sides.
pub(crate) fn is_contiguous(maps: &[IdMap]) -> bool {
    let mut v = maps.to_vec();
    v.sort_by_key(|m| m.container_id);
    v.windows(2).all(|w| {
        w[0].container_id.checked_add(w[0].size) == Some(w[1].container_id)
            && w[0].host_id.checked_add(w[0].size) == Some(w[1].host_id)
    })
}

/// Splits a lower path into its mapping root and the path below it (Go: the parent of
/// the `l` dir for `…/l/<short>[/..]` paths, else the parent dir).
pub(crate) fn mapping_root(lower: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let s = lower.to_string_lossy();
    if let Some(i) = s.rfind("/l/") {
        return (
            std::path::PathBuf::from(&s[..i]),
            std::path::PathBuf::from(&s[i + 1..]),
        );
    }
    match (lower.parent(), lower.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), std::path::PathBuf::from(n)),
        _ => (lower.to_path_buf(), std::path::PathBuf::from(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: u32, h: u32, s: u32) -> IdMap {
        IdMap::new(c, h, s)
    }

    #[test]
    fn contiguity() {
        assert!(is_contiguous(&[]));
        assert!(is_contiguous(&[m(0, 1000, 1)]));
        assert!(!is_contiguous(&[m(1, 100_000, 65535), m(0, 1000, 1)]));
        assert!(is_contiguous(&[m(0, 100, 10), m(10, 110, 5)]));
    }

    #[test]
    fn mapping_roots() {
        assert_eq!(
            mapping_root(Path::new("/h/overlay/l/ABC")),
            ("/h/overlay".into(), "l/ABC".into())
        );
        assert_eq!(
            mapping_root(Path::new("/h/overlay/l/ABC/../diff1")),
            ("/h/overlay".into(), "l/ABC/../diff1".into())
        );
        assert_eq!(
            mapping_root(Path::new("/h/overlay/x/diff1")),
            ("/h/overlay/x".into(), "diff1".into())
        );
    }
}
