//! Name/ID lookup and name-uniqueness helpers shared by the
//! layer, image and container stores.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use crate::records::{Container, Image, Layer};

/// A record with an ID and names.
pub trait Named {
    /// The record's ID.
    fn id(&self) -> &str;
    /// The record's names.
    fn names(&self) -> &[String];
    /// Mutable access to the names.
    fn names_mut(&mut self) -> &mut Vec<String>;
}

macro_rules! impl_named {
    ($($t:ty),*) => {$(
        impl Named for $t {
            fn id(&self) -> &str { &self.id }
            fn names(&self) -> &[String] { &self.names }
            fn names_mut(&mut self) -> &mut Vec<String> { &mut self.names }
        }
    )*};
}
impl_named!(Layer, Image, Container);

/// Result of a prefix search in an [`IdIndex`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixMatch<'a> {
    /// Exactly one ID starts with the prefix.
    Unique(&'a str),
    /// No ID starts with it (or the prefix was empty).
    NotFound,
    /// Several IDs start with it (treated as "not found" by lookups).
    Ambiguous,
}

/// Go's truncindex: resolves unique ID prefixes. IDs that are empty or contain
/// a space are not indexed.
#[derive(Debug, Clone, Default)]
pub struct IdIndex {
    ids: BTreeSet<String>,
}

impl IdIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// An index of the given IDs.
    pub fn from_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut idx = Self::new();
        for id in ids {
            idx.insert(id);
        }
        idx
    }

    /// Adds an ID; returns false (and does nothing) for empty IDs or IDs with a space.
    pub fn insert(&mut self, id: &str) -> bool {
        if id.is_empty() || id.contains(' ') {
            return false;
        }
        self.ids.insert(id.to_owned());
        true
    }

    /// Removes an ID.
    pub fn remove(&mut self, id: &str) {
        self.ids.remove(id);
    }

    /// Finds the ID starting with `prefix`.
    pub fn get(&self, prefix: &str) -> PrefixMatch<'_> {
        if prefix.is_empty() || prefix.contains(' ') {
            return PrefixMatch::NotFound;
        }
        let mut it = self
            .ids
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|id| id.starts_with(prefix));
        match (it.next(), it.next()) {
            (None, _) => PrefixMatch::NotFound,
            (Some(id), None) => PrefixMatch::Unique(id),
            (Some(_), Some(_)) => PrefixMatch::Ambiguous,
        }
    }

    /// The ID `prefix` designates, if exactly one ID starts with it (Go's `truncindex.Get`
    /// as lookups use it: no match and ambiguity are both "not found").
    pub fn unique(&self, prefix: &str) -> Option<&str> {
        match self.get(prefix) {
            PrefixMatch::Unique(id) => Some(id),
            PrefixMatch::NotFound | PrefixMatch::Ambiguous => None,
        }
    }
}

/// A hash map for the stores' in-memory indexes (ID → record, name → record).
///
/// Keys are IDs and names the store's own writers chose; a fast non-keyed hash
/// (FxHash) instead of SipHash, which showed up in profiles of every CLI call
/// that loads 1000 records.
pub type FastMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;

/// A hash set with the hash of [`FastMap`].
pub type FastSet<K> = std::collections::HashSet<K, rustc_hash::FxBuildHasher>;

/// The one ID among `ids` that starts with `prefix` (Go's `truncindex.Get` as lookups
/// use it): `None` for no match, for several distinct matching IDs, and for an empty
/// prefix or one with a space. Empty IDs and IDs with a space never match; the same ID
/// listed twice counts once.
///
/// A scan instead of an [`IdIndex`]: a prefix lookup happens once per call at most,
/// after the exact ID and name lookups missed, so building a sorted index at every load
/// would cost more than it saves.
pub fn unique_prefix<'a>(ids: impl IntoIterator<Item = &'a str>, prefix: &str) -> Option<&'a str> {
    if prefix.is_empty() || prefix.contains(' ') {
        return None;
    }
    let mut found: Option<&'a str> = None;
    for id in ids {
        if id.is_empty() || id.contains(' ') || !id.starts_with(prefix) {
            continue;
        }
        match found {
            Some(f) if f != id => return None,
            _ => found = Some(id),
        }
    }
    found
}

/// Finds the record `key` designates: exact ID, then exact name, then
/// unique ID prefix (ambiguous or no match → `None`). Returns its index.
pub fn find<T: Named>(records: &[T], key: &str) -> Option<usize> {
    find_with(records, key, |_| false)
}

/// Container lookup: like [`find`], with Go's extra step between names and
/// prefixes — a container's exact layer ID also designates it.
pub fn find_container(records: &[Container], key: &str) -> Option<usize> {
    find_with(records, key, |c| c.layer == key)
}

fn find_with<T: Named>(records: &[T], key: &str, extra: impl Fn(&T) -> bool) -> Option<usize> {
    if let Some(i) = records.iter().position(|r| r.id() == key) {
        return Some(i);
    }
    if let Some(i) = records
        .iter()
        .position(|r| r.names().iter().any(|n| n == key))
    {
        return Some(i);
    }
    if let Some(i) = records.iter().position(extra) {
        return Some(i);
    }
    if key.is_empty() || key.contains(' ') {
        return None;
    }
    let mut hits = records
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.id().is_empty() && !r.id().contains(' ') && r.id().starts_with(key));
    match (hits.next(), hits.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

/// De-duplicates names keeping the first occurrence (Go's `dedupeStrings`).
pub fn dedup_names(names: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .iter()
        .filter(|n| seen.insert(n.as_str()))
        .cloned()
        .collect()
}

/// Load-time repair: when several records carry the same name, the
/// **later** record keeps it. Mirrors Go exactly, including its quirk that a
/// record listing a name twice loses that name. Returns whether anything changed
/// (a read-write store then saves; a read-only one reports duplicate names).
pub fn repair_duplicate_names<T: Named>(records: &mut [T]) -> bool {
    let mut owner: HashMap<String, usize> = HashMap::new();
    let mut changed = false;
    for i in 0..records.len() {
        let names = records[i].names().to_vec();
        for name in names {
            if let Some(&prev) = owner.get(&name) {
                records[prev].names_mut().retain(|n| n != &name);
                changed = true;
            }
            owner.insert(name, i);
        }
    }
    changed
}

/// Takes each of `names` away from every record except `owner` (how
/// `SetNames`/`AddNames` move names). Returns the indices of records that
/// lost a name.
pub fn take_names_from_others<T: Named>(
    records: &mut [T],
    owner: usize,
    names: &[String],
) -> Vec<usize> {
    let mut changed = Vec::new();
    for (i, r) in records.iter_mut().enumerate() {
        if i == owner {
            continue;
        }
        let before = r.names().len();
        r.names_mut().retain(|n| !names.contains(n));
        if r.names().len() != before {
            changed.push(i);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(id: &str, names: &[&str]) -> Layer {
        Layer {
            id: id.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn lookup_order_and_prefixes() {
        let ls = vec![
            layer("7707b9c3", &["base"]),
            layer("7708aaaa", &[]),
            layer("abc", &["7707"]),
            layer("with space", &[]),
            layer("abcd", &[]),
        ];
        assert_eq!(find(&ls, "7707b9c3"), Some(0));
        assert_eq!(find(&ls, "base"), Some(0));
        // A name shadows an ID prefix.
        assert_eq!(find(&ls, "7707"), Some(2));
        assert_eq!(find(&ls, "7707b"), Some(0));
        // Ambiguous prefix: not found.
        assert_eq!(find(&ls, "770"), None);
        // A full ID that is a prefix of another ID is still found exactly.
        assert_eq!(find(&ls, "abc"), Some(2));
        assert_eq!(find(&ls, "abcd"), Some(4));
        // IDs with spaces: exact only.
        assert_eq!(find(&ls, "with space"), Some(3));
        assert_eq!(find(&ls, "with"), None);
        assert_eq!(find(&ls, ""), None);
        assert_eq!(find(&ls, "zzz"), None);

        let cs = vec![Container {
            id: "c1".into(),
            layer: "l1".into(),
            ..Default::default()
        }];
        assert_eq!(find_container(&cs, "l1"), Some(0));
        assert_eq!(find(&cs, "l1"), None);
    }

    #[test]
    fn truncindex() {
        let mut idx = IdIndex::from_ids(["7707b9c3", "7708aaaa", "abc", "abcd", "with space"]);
        assert_eq!(idx.get("7707"), PrefixMatch::Unique("7707b9c3"));
        assert_eq!(idx.get("77"), PrefixMatch::Ambiguous);
        assert_eq!(idx.get("abc"), PrefixMatch::Ambiguous);
        assert_eq!(idx.get("with"), PrefixMatch::NotFound);
        assert_eq!(idx.get(""), PrefixMatch::NotFound);
        assert!(!idx.insert(""));
        idx.remove("abcd");
        assert_eq!(idx.get("ab"), PrefixMatch::Unique("abc"));
        assert_eq!(idx.unique("ab"), Some("abc"));
        assert_eq!(idx.unique("77"), None, "ambiguous is not found");
        assert_eq!(idx.unique("zz"), None);
    }

    #[test]
    fn unique_prefix_agrees_with_the_index() {
        let ids = [
            "7707b9c3",
            "7708aaaa",
            "abc",
            "abcd",
            "with space",
            "",
            "dup1",
            "dup1",
        ];
        let idx = IdIndex::from_ids(ids);
        for p in [
            "7707", "77", "7", "abc", "abcd", "ab", "with", "", "zz", "dup", "dup1", "a b",
        ] {
            assert_eq!(unique_prefix(ids, p), idx.unique(p), "prefix {p:?}");
        }
        assert_eq!(
            unique_prefix(ids, "dup"),
            Some("dup1"),
            "one ID listed twice"
        );
        assert_eq!(unique_prefix(ids, "7707"), Some("7707b9c3"));
        assert_eq!(unique_prefix(ids, "77"), None, "ambiguous is not found");
    }

    #[test]
    fn name_helpers() {
        let names: Vec<String> = ["a", "b", "a", "c", "b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(dedup_names(&names), vec!["a", "b", "c"]);

        let mut ls = vec![
            layer("1", &["x", "y"]),
            layer("2", &["y", "z"]),
            layer("3", &["x"]),
        ];
        assert!(repair_duplicate_names(&mut ls));
        assert_eq!(ls[0].names, Vec::<String>::new());
        assert_eq!(ls[1].names, vec!["y", "z"]);
        assert_eq!(ls[2].names, vec!["x"]);
        assert!(!repair_duplicate_names(&mut ls));
        let mut twice = vec![layer("1", &["a", "a", "b"])];
        assert!(repair_duplicate_names(&mut twice));
        assert_eq!(twice[0].names, vec!["b"]);

        let mut ls = vec![
            layer("1", &["x", "y"]),
            layer("2", &["z"]),
            layer("3", &["q"]),
        ];
        let moved = take_names_from_others(&mut ls, 1, &["y".to_string(), "z".to_string()]);
        assert_eq!(moved, vec![0]);
        assert_eq!(ls[0].names, vec!["x"]);
        assert_eq!(ls[1].names, vec!["z"]);
    }
}
