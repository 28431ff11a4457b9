//! Go's `truncindex`: lookup of IDs by unique prefix.

use std::collections::BTreeSet;

/// The set of IDs that can be found by a unique prefix.
///
/// Like Go's `truncindex`, empty IDs and IDs containing a space are not
/// indexed (they can still be found by their exact value elsewhere).
#[derive(Debug, Default, Clone)]
pub(crate) struct TruncIndex {
    ids: BTreeSet<String>,
}

impl TruncIndex {
    /// Builds an index of `ids`, skipping the ones that cannot be indexed.
    pub(crate) fn new<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut index = TruncIndex::default();
        for id in ids {
            index.add(id);
        }
        index
    }

    /// Adds `id` (ignored when it cannot be indexed).
    pub(crate) fn add(&mut self, id: &str) {
        if !id.is_empty() && !id.contains(' ') {
            self.ids.insert(id.to_owned());
        }
    }

    /// The only indexed ID that starts with `prefix`; `None` when there is no
    /// match, several matches, or the prefix is empty.
    pub(crate) fn get(&self, prefix: &str) -> Option<&str> {
        if prefix.is_empty() || prefix.contains(' ') {
            return None;
        }
        let mut matches = self
            .ids
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|id| id.starts_with(prefix));
        let first = matches.next()?;
        if first == prefix {
            // An exact ID always wins, even if it is the prefix of another one.
            return Some(first);
        }
        match matches.next() {
            None => Some(first),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let index = TruncIndex::new(["abc1", "abc2", "def", "has space", ""]);
        assert_eq!(index.get("d"), Some("def"));
        assert_eq!(index.get("abc1"), Some("abc1"));
        assert_eq!(index.get("abc"), None, "ambiguous");
        assert_eq!(index.get("x"), None);
        assert_eq!(index.get(""), None);
        assert_eq!(index.get("has"), None, "IDs with spaces are not indexed");
        let index = TruncIndex::new(["ab", "abc"]);
        assert_eq!(index.get("ab"), Some("ab"));
        assert_eq!(index.get("abc"), Some("abc"));
    }
}
