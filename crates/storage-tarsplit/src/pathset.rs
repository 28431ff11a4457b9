//! A set of paths that costs 16 bytes per path however long the path is.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

/// A set of byte-string paths kept as 128-bit keyed hashes.
///
/// Unpacking and tar-split recording must remember every path of a layer (duplicates are
/// refused, opaque directories keep only what this layer unpacked). Keeping the paths
/// themselves made memory grow with the layer (~100 bytes per entry per set); this keeps two
/// independent SipHash values under keys drawn at random per set, so memory per entry is
/// fixed and two different paths are taken for equal with probability 2^-128 per pair — not
/// something a crafted archive can aim at, since the keys are not known in advance.
///
/// ```
/// let mut s = storage_tarsplit::PathSet::default();
/// assert!(s.insert(b"etc/passwd"));
/// assert!(!s.insert(b"etc/passwd"));
/// assert!(s.contains(b"etc/passwd") && !s.contains(b"etc/group"));
/// ```
#[derive(Default)]
pub struct PathSet {
    keys: (RandomState, RandomState),
    set: HashSet<u128>,
}

impl PathSet {
    fn key(&self, path: &[u8]) -> u128 {
        let a = self.keys.0.hash_one(path);
        let b = self.keys.1.hash_one(path);
        (u128::from(a) << 64) | u128::from(b)
    }

    /// Adds `path`; false when it was already there.
    pub fn insert(&mut self, path: &[u8]) -> bool {
        let k = self.key(path);
        self.set.insert(k)
    }

    /// Whether `path` was added.
    pub fn contains(&self, path: &[u8]) -> bool {
        self.set.contains(&self.key(path))
    }

    /// How many paths were added.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether no path was added.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::PathSet;

    #[test]
    fn distinct_paths_stay_distinct() {
        let mut s = PathSet::default();
        for i in 0..100_000u32 {
            assert!(s.insert(format!("d{}/f{i}", i % 97).as_bytes()));
        }
        assert_eq!(s.len(), 100_000);
        assert!(!s.insert(b"d5/f5"));
        assert!(s.contains(b"d0/f0") && !s.contains(b"d1/f0"));
        // Prefixes and empty paths are different paths.
        assert!(s.insert(b"") && s.insert(b"d0") && !s.is_empty());
    }
}
