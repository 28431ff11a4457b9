//! Records with their ID and name indexes, and the names rules the stores share.

use std::collections::BTreeMap;

use storage_types::{Container, FastMap, Image, Named};

/// What the shared core needs to see of a record: its ID and names ([`Named`]) and its
/// big-data bookkeeping.
pub trait Record: Named {
    /// The big-data bookkeeping fields.
    fn big_data_fields(&mut self) -> BigDataFields<'_>;

    /// Records a stored big-data item: its key (appended to the names once), size and
    /// digest. Returns whether anything changed.
    fn note_big_data(&mut self, key: &str, size: i64, digest: String) -> bool {
        let fields = self.big_data_fields();
        let mut changed = fields.sizes.insert(key.to_owned(), size) != Some(size);
        changed |= fields.digests.insert(key.to_owned(), digest.clone()) != Some(digest);
        if !fields.names.iter().any(|k| k == key) {
            fields.names.push(key.to_owned());
            changed = true;
        }
        changed
    }
}

/// The big-data bookkeeping of a record (`big-data-names`, `-sizes`, `-digests`).
pub struct BigDataFields<'a> {
    /// Keys in insertion order.
    pub names: &'a mut Vec<String>,
    /// Byte length of each item.
    pub sizes: &'a mut BTreeMap<String, i64>,
    /// Digest of each item.
    pub digests: &'a mut BTreeMap<String, String>,
}

macro_rules! record {
    ($t:ty) => {
        impl Record for $t {
            fn big_data_fields(&mut self) -> BigDataFields<'_> {
                BigDataFields {
                    names: &mut self.big_data_names,
                    sizes: &mut self.big_data_sizes,
                    digests: &mut self.big_data_digests,
                }
            }
        }
    };
}
record!(Image);
record!(Container);

/// Records in file order with their indexes: the first record with an ID owns it, the
/// last record with a name owns the name (after [`repair_duplicate_names`] there is one).
pub struct Records<R> {
    items: Vec<R>,
    by_id: FastMap<String, usize>,
    by_name: FastMap<String, usize>,
}

impl<R> Default for Records<R> {
    fn default() -> Self {
        Records {
            items: Vec::new(),
            by_id: FastMap::default(),
            by_name: FastMap::default(),
        }
    }
}

impl<R: Record> Records<R> {
    /// The records, indexed.
    pub fn new(items: Vec<R>) -> Records<R> {
        let mut records = Records {
            items,
            ..Records::default()
        };
        records.reindex();
        records
    }

    /// Rebuilds the indexes (after IDs or names changed through [`Records::items_mut`]).
    pub fn reindex(&mut self) {
        self.by_id.clear();
        self.by_name.clear();
        for n in 0..self.items.len() {
            self.index(n);
        }
    }

    fn index(&mut self, n: usize) {
        let record = &self.items[n];
        self.by_id.entry(record.id().to_owned()).or_insert(n);
        for name in record.names() {
            self.by_name.insert(name.clone(), n);
        }
    }

    /// The records, in file order.
    pub fn as_slice(&self) -> &[R] {
        &self.items
    }

    /// The records to change in place; call [`Records::reindex`] after changing an ID or
    /// names.
    pub fn items_mut(&mut self) -> &mut [R] {
        &mut self.items
    }

    /// Appends a record and indexes it; returns its position.
    pub fn push(&mut self, record: R) -> usize {
        self.items.push(record);
        let n = self.items.len() - 1;
        self.index(n);
        n
    }

    /// Removes the record at `n` and re-indexes.
    pub fn remove(&mut self, n: usize) -> R {
        let record = self.items.remove(n);
        self.reindex();
        record
    }

    /// The position of the record with exactly this ID.
    pub fn by_id(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The position of the record with this name.
    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The position of the record whose ID `prefix` begins uniquely.
    pub fn by_prefix(&self, prefix: &str) -> Option<usize> {
        let full = storage_types::unique_prefix(self.items.iter().map(|r| r.id()), prefix)?;
        self.by_id(full)
    }

    /// Go's lookup: exact ID, then name, then unique ID prefix.
    pub fn lookup(&self, key: &str) -> Option<usize> {
        self.by_id(key)
            .or_else(|| self.by_name(key))
            .or_else(|| self.by_prefix(key))
    }

    /// Gives the record at `n` the names `names`, taking them from every other record that
    /// had one of them, and re-indexes. Returns the positions of the other records that
    /// lost a name.
    pub fn take_names(&mut self, n: usize, names: &[String]) -> Vec<usize> {
        let changed = storage_types::take_names_from_others(&mut self.items, n, names);
        if let Some(record) = self.items.get_mut(n) {
            *record.names_mut() = names.to_vec();
        }
        self.reindex();
        changed
    }
}

/// Go's load-time repair: a name held by several records stays with the last of them.
/// Returns the pairs `(loser, winner)` of positions whose names changed hands (empty:
/// nothing to save).
pub fn repair_duplicate_names<R: Record>(records: &mut [R]) -> Vec<(usize, usize)> {
    // Borrowed names first, removals after: no copy of every name for the common case
    // of no duplicates.
    let mut taken: Vec<(usize, usize, String)> = Vec::new();
    {
        let mut owner: FastMap<&str, usize> = FastMap::default();
        for (n, record) in records.iter().enumerate() {
            for name in record.names() {
                if let Some(other) = owner.insert(name, n)
                    && other != n
                {
                    taken.push((other, n, name.clone()));
                }
            }
        }
    }
    let mut pairs = Vec::with_capacity(taken.len());
    for (other, n, name) in taken {
        records[other].names_mut().retain(|x| *x != name);
        pairs.push((other, n));
    }
    pairs
}

/// How a store's `update_names` changes the names of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamesOp {
    /// Replace the names.
    Set,
    /// Put the given names first (Go 1.60), then the old ones.
    Add,
    /// Remove the given names.
    Remove,
}

/// The names after `op` with `given` on a record named `old`, de-duplicated (first
/// occurrence kept).
pub fn names_op(old: &[String], given: &[String], op: NamesOp) -> Vec<String> {
    let result: Vec<String> = match op {
        NamesOp::Set => given.to_vec(),
        NamesOp::Add => given.iter().chain(old).cloned().collect(),
        NamesOp::Remove => old.iter().filter(|n| !given.contains(n)).cloned().collect(),
    };
    storage_types::dedup_names(&result)
}
