//! The in-memory records of a layer store and everything that only reads them.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use storage_archive::Compression;
use storage_archive::changes::Change;
use storage_drivers::LayerMaps;
use storage_lock::Token;
use storage_types::{Digest, Error, ErrorKind, Layer, MountPoint, Result};

use crate::{Ctx, Entry, Location, NameIndex, mtime};

/// Options of [`Layers::diff`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DiffOptions {
    /// Output compression; `None` = the compression the layer was applied with (none for
    /// created layers). Bzip2 and Xz are refused, as in Go.
    pub compression: Option<Compression>,
}

/// The records of a layer store, as seen under a lock guard ([`crate::LayersRead`] or
/// [`crate::LayersWrite`] dereference to this type).
pub struct Layers {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) by_id: HashMap<String, usize>,
    pub(crate) by_name: NameIndex,
    pub(crate) loaded: bool,
    pub(crate) last_write: Token,
    pub(crate) mounts_last_write: Token,
    pub(crate) mtimes: [Option<SystemTime>; 3],
    /// Locations whose file must be saved to persist a load-time repair.
    pub(crate) dirty: u8,
}

impl Layers {
    pub(crate) fn empty(ctx: Arc<Ctx>) -> Layers {
        Layers {
            ctx,
            entries: Vec::new(),
            by_id: HashMap::new(),
            by_name: HashMap::new(),
            loaded: false,
            last_write: Token::default(),
            mounts_last_write: Token::default(),
            mtimes: [None; 3],
            dirty: 0,
        }
    }

    /// Loads the record files. Returns whether a repair needing the exclusive lock is pending
    /// (read-write stores only: incomplete layers or duplicate names).
    pub(crate) fn load(&mut self, token: Token) -> Result<bool> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen: HashMap<String, ()> = HashMap::new();
        let mut mtimes = [None; 3];
        for loc in Location::ALL {
            let Some(path) = &self.ctx.json_paths[loc as usize] else {
                continue;
            };
            mtimes[loc as usize] = mtime(path);
            let data = match std::fs::read(path) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("open", path, e)),
            };
            let layers: Vec<Layer> = storage_types::parse_records(&data, path)?;
            for mut layer in layers {
                layer.read_only = self.ctx.read_only;
                if seen.insert(layer.id.clone(), ()).is_some() {
                    continue;
                }
                entries.push(Entry {
                    layer,
                    location: loc,
                    mount_point: None,
                    mount_count: 0,
                });
            }
        }
        // Keep mount data of layers that are still there until mountpoints.json is re-read.
        for e in &mut entries {
            if let Some(old) = self
                .by_id
                .get(&e.layer.id)
                .and_then(|&i| self.entries.get(i))
            {
                e.mount_point = old.mount_point.clone();
                e.mount_count = old.mount_count;
            }
        }
        self.entries = entries;
        self.dirty = 0;
        self.reindex(true)?;
        self.last_write = token;
        self.mtimes = mtimes;
        self.loaded = true;
        if self.ctx.read_only {
            return Ok(false);
        }
        Ok(self.dirty != 0 || self.entries.iter().any(|e| e.layer.is_incomplete()))
    }

    /// Appends the record of a new layer (not mounted) and re-indexes.
    pub(crate) fn push_new(&mut self, layer: Layer, location: Location) -> Result<()> {
        self.entries.push(Entry {
            layer,
            location,
            mount_point: None,
            mount_count: 0,
        });
        self.reindex(false)
    }

    /// Rebuilds the ID and name indexes. With `repair`, a name found on two records is taken
    /// away from the earlier one (later wins) and the location marked dirty; a read-only store
    /// fails instead.
    pub(crate) fn reindex(&mut self, repair: bool) -> Result<()> {
        self.by_id.clear();
        self.by_name.clear();
        for i in 0..self.entries.len() {
            self.by_id.insert(self.entries[i].layer.id.clone(), i);
            let names = self.entries[i].layer.names.clone();
            for name in names {
                if let Some(&prev) = self.by_name.get(&name)
                    && prev != i
                {
                    if self.ctx.read_only && repair {
                        return Err(Error::msg(
                            ErrorKind::DuplicateName,
                            "read-only layer store assigns the same name to multiple layers",
                        ));
                    }
                    self.entries[prev].layer.names.retain(|n| n != &name);
                    self.dirty |= self.entries[prev].location.bit();
                }
                self.by_name.insert(name, i);
            }
        }
        Ok(())
    }

    /// Reads `mountpoints.json` (Go's `loadMounts`).
    pub(crate) fn load_mounts(&mut self, token: Token) -> Result<()> {
        let path = self.ctx.mounts_path();
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let records: Vec<MountPoint> = storage_types::parse_records(&data, &path)?;
        for e in &mut self.entries {
            e.mount_point = None;
            e.mount_count = 0;
        }
        for m in records {
            if m.path.is_empty() {
                continue;
            }
            if let Some(i) = self.lookup_index(&m.id) {
                self.entries[i].mount_point = Some(PathBuf::from(m.path));
                self.entries[i].mount_count = i64::from(m.count);
            }
        }
        self.mounts_last_write = token;
        Ok(())
    }

    /// Resolves an ID, name or unique ID prefix to an index.
    pub(crate) fn lookup_index(&self, key: &str) -> Option<usize> {
        if let Some(&i) = self.by_id.get(key) {
            return Some(i);
        }
        if let Some(&i) = self.by_name.get(key) {
            return Some(i);
        }
        if key.is_empty() {
            return None;
        }
        let mut found = None;
        for (i, e) in self.entries.iter().enumerate() {
            let id = &e.layer.id;
            if !id.is_empty() && !id.contains(' ') && id.starts_with(key) {
                if found.is_some() {
                    return None;
                }
                found = Some(i);
            }
        }
        found
    }

    pub(crate) fn index_or_unknown(&self, key: &str) -> Result<usize> {
        self.lookup_index(key)
            .ok_or_else(|| Error::new(ErrorKind::LayerUnknown))
    }

    /// Temporary tar-split files left by an interrupted write: `(layer ID, path)` of every
    /// `.tmp-<id>.tar-split.gz<digits>` in the store's directories. Writers of those files
    /// hold the layers lock exclusively for as long as the file exists (Go 1.43 and 1.60
    /// alike), so under any guard of a read-write store each one is abandoned. Empty for a
    /// read-only store (its files are not ours).
    pub fn leftover_temporaries(&self) -> Vec<(String, PathBuf)> {
        if self.ctx.read_only {
            return Vec::new();
        }
        self.ctx.tar_split_temporaries()
    }

    /// Whether this view belongs to a read-only store.
    pub fn is_read_only(&self) -> bool {
        self.ctx.read_only
    }

    /// All layer records, in file order (stable, image store, volatile).
    pub fn layers(&self) -> Vec<Layer> {
        self.entries.iter().map(|e| e.layer.clone()).collect()
    }

    /// Iterates over the records without copying them.
    pub fn iter(&self) -> impl Iterator<Item = &Layer> + '_ {
        self.entries.iter().map(|e| &e.layer)
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store holds no layers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Looks a layer up by ID, name or unique ID prefix.
    pub fn lookup(&self, key: &str) -> Option<&Layer> {
        self.lookup_index(key).map(|i| &self.entries[i].layer)
    }

    /// Like [`lookup`](Self::lookup), returning a copy or `layer not known`.
    pub fn get(&self, key: &str) -> Result<Layer> {
        self.lookup(key)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::LayerUnknown))
    }

    /// Whether `key` resolves to a layer.
    pub fn exists(&self, key: &str) -> bool {
        self.lookup_index(key).is_some()
    }

    /// `Size()` of a layer: `diff-size` if a diff or TOC digest is recorded, else -1 (unknown).
    pub fn size(&self, key: &str) -> Result<i64> {
        let l = &self.entries[self.index_or_unknown(key)?].layer;
        Ok(l.known_size().unwrap_or(-1))
    }

    /// The mount count recorded for a layer (as of the last load; no reload of mount data).
    pub fn mounted(&self, key: &str) -> Result<i64> {
        Ok(self.entries[self.index_or_unknown(key)?].mount_count)
    }

    /// The recorded mount point of a layer, if it is mounted.
    pub fn mount_point(&self, key: &str) -> Result<Option<PathBuf>> {
        let e = &self.entries[self.index_or_unknown(key)?];
        Ok(e.mount_point.clone().filter(|_| e.mount_count > 0))
    }

    /// Layers with a positive mount count: `(id, mount point, count)`.
    pub fn mounts(&self) -> Vec<(String, PathBuf, i64)> {
        self.entries
            .iter()
            .filter(|e| e.mount_count > 0)
            .filter_map(|e| Some((e.layer.id.clone(), e.mount_point.clone()?, e.mount_count)))
            .collect()
    }

    /// Whether some layer of this store has the layer `id` (a full ID) as parent.
    pub fn has_children(&self, id: &str) -> bool {
        self.entries
            .iter()
            .any(|e| layer_parent(&e.layer) == Some(id))
    }

    /// The layers of this store whose parent is `id` (a full ID).
    pub fn children(&self, id: &str) -> Vec<&Layer> {
        self.entries
            .iter()
            .map(|e| &e.layer)
            .filter(|l| layer_parent(l) == Some(id))
            .collect()
    }

    /// The path of a layer's tar-split file (whether or not it exists).
    pub fn tar_split_path(&self, id: &str) -> PathBuf {
        self.ctx.tar_split_path(id)
    }

    /// Opens a layer big-data item.
    pub fn big_data(&self, key: &str, name: &str) -> Result<File> {
        if name.is_empty() {
            return Err(Error::new(ErrorKind::InvalidBigDataName)
                .context("can't retrieve layer big data value for empty name"));
        }
        let i = self.lookup_index(key).ok_or_else(|| {
            Error::new(ErrorKind::LayerUnknown).context(format!(
                "locating layer with ID {}",
                storage_types::go_quote(key)
            ))
        })?;
        let id = &self.entries[i].layer.id;
        let path = self
            .ctx
            .data_dir(id)
            .join(storage_types::big_data_file_name(name)?);
        File::open(&path).map_err(|e| Error::io("open", &path, e))
    }

    /// Names of a layer's big-data items.
    pub fn big_data_names(&self, key: &str) -> Result<Vec<String>> {
        Ok(self.entries[self.index_or_unknown(key)?]
            .layer
            .big_data_names
            .clone())
    }

    fn by_digest(&self, d: &Digest, pick: impl Fn(&Layer) -> &str) -> Result<Vec<Layer>> {
        let found: Vec<Layer> = self
            .iter()
            .filter(|l| pick(l) == d.as_str())
            .cloned()
            .collect();
        if found.is_empty() {
            return Err(Error::new(ErrorKind::LayerUnknown));
        }
        Ok(found)
    }

    /// Layers whose `compressed-diff-digest` is `d` (`layer not known` if none).
    pub fn layers_by_compressed_digest(&self, d: &Digest) -> Result<Vec<Layer>> {
        self.by_digest(d, |l| l.compressed_diff_digest.as_str())
    }

    /// Layers whose `diff-digest` is `d` (`layer not known` if none).
    pub fn layers_by_uncompressed_digest(&self, d: &Digest) -> Result<Vec<Layer>> {
        self.by_digest(d, |l| l.diff_digest.as_str())
    }

    /// Layers whose `toc-digest` is `d` (`layer not known` if none).
    pub fn layers_by_toc_digest(&self, d: &Digest) -> Result<Vec<Layer>> {
        self.by_digest(d, |l| l.toc_digest.as_str())
    }

    /// Go's `findParentAndLayer`: resolves `to`, and `from` (default: the parent of `to`;
    /// an unresolvable `from` falls back to the parent as well).
    /// `from` with its ID maps, for the drivers' `*_mapped` comparisons: Go compares owners
    /// through each layer's own maps, so a mapped container layer on an unmapped image layer
    /// does not show every file as changed. A layer outside this store counts as unmapped.
    fn with_maps<'a>(&'a self, from: Option<&'a str>) -> Option<(&'a str, LayerMaps<'a>)> {
        from.map(|id| (id, self.lookup(id).map(maps_of).unwrap_or_default()))
    }

    fn parent_and_layer(&self, from: Option<&str>, to: &str) -> Result<(Option<String>, &Layer)> {
        let layer = &self.entries[self.index_or_unknown(to)?].layer;
        let parent = layer_parent(layer).map(str::to_string);
        let from = match from.filter(|f| !f.is_empty()) {
            None => parent,
            Some(f) => match self.lookup(f) {
                Some(l) => Some(l.id.clone()),
                None => parent.map(|p| self.lookup(&p).map_or(p.clone(), |l| l.id.clone())),
            },
        };
        Ok((from, layer))
    }

    /// Writes the tar stream of the changes of layer `to` relative to `from` (default: its
    /// parent) to `out`. When `from` is the parent and a tar-split file exists, the original
    /// tar is reassembled byte for byte; otherwise the driver computes a diff. The output is
    /// compressed as [`DiffOptions::compression`] says.
    pub fn diff(
        &self,
        from: Option<&str>,
        to: &str,
        opts: &DiffOptions,
        out: &mut dyn Write,
    ) -> Result<()> {
        let (from, layer) = self.parent_and_layer(from, to)?;
        let compression = match opts.compression {
            Some(c) => c,
            None => Compression::from_i32(layer.compression).unwrap_or_default(),
        };
        let mut out = CompressedWriter::new(compression, out)?;
        let ts_path = self.ctx.tar_split_path(&layer.id);
        let tar_split = if from.as_deref() == layer_parent(layer) {
            match File::open(&ts_path) {
                Ok(f) => Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io("open", &ts_path, e)),
            }
        } else {
            None
        };
        match tar_split {
            Some(f) => {
                let mut getter = self.ctx.driver.diff_getter(&layer.id)?;
                storage_tarsplit::reassemble(f, &mut *getter, &mut out).map_err(tarsplit_error)?;
            }
            None => {
                self.ctx.driver.diff_mapped(
                    &layer.id,
                    maps_of(layer),
                    self.with_maps(from.as_deref()),
                    &mut out,
                )?;
            }
        }
        out.finish()
    }

    /// The changes of layer `to` relative to `from` (default: its parent).
    pub fn changes(&self, from: Option<&str>, to: &str) -> Result<Vec<Change>> {
        let (from, layer) = self.parent_and_layer(from, to)?;
        self.ctx
            .driver
            .changes_mapped(&layer.id, maps_of(layer), self.with_maps(from.as_deref()))
    }

    /// Size of the changes of layer `to` relative to `from` (default: its parent).
    pub fn diff_size(&self, from: Option<&str>, to: &str) -> Result<i64> {
        let (from, layer) = self.parent_and_layer(from, to)?;
        self.ctx
            .driver
            .diff_size_mapped(&layer.id, maps_of(layer), self.with_maps(from.as_deref()))
    }

    /// Go's `LayerParentOwners`: host UIDs and GIDs owning the directories above the
    /// layer's mount point that the layer's ID maps cannot represent, each sorted ascending.
    pub fn layer_parent_owners(&self, key: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        use std::os::unix::fs::MetadataExt;
        let e = &self.entries[self.index_or_unknown(key)?];
        let l = &e.layer;
        if l.uidmap.is_empty() && l.gidmap.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mount = match &e.mount_point {
            Some(p) if e.mount_count > 0 && p.exists() => p.clone(),
            _ => return Err(Error::new(ErrorKind::LayerNotMounted)),
        };
        // Go checks (uid, root gid) and (root uid, gid) pairs: container root must be mapped.
        storage_types::root_pair(&l.uidmap, &l.gidmap).map_err(|e| {
            e.context(format!(
                "reading root ID values for layer {}",
                storage_types::go_quote(&l.id)
            ))
        })?;
        let (mut uids, mut gids) = (Vec::new(), Vec::new());
        let mut dir = mount.parent();
        while let Some(d) = dir {
            if d == Path::new("/") || d.as_os_str().is_empty() {
                break;
            }
            for md in [std::fs::metadata(d), std::fs::symlink_metadata(d)] {
                let md = md
                    .map_err(|err| Error::io("stat", d, err).context("read directory ownership"))?;
                if storage_types::to_container(&l.uidmap, md.uid()).is_none() {
                    uids.push(md.uid());
                }
                if storage_types::to_container(&l.gidmap, md.gid()).is_none() {
                    gids.push(md.gid());
                }
            }
            dir = d.parent();
        }
        uids.sort_unstable();
        uids.dedup();
        gids.sort_unstable();
        gids.dedup();
        Ok((uids, gids))
    }
}

/// The parent of a record, `None` for a base layer.
pub(crate) fn layer_parent(l: &Layer) -> Option<&str> {
    Some(l.parent.as_str()).filter(|p| !p.is_empty())
}

pub(crate) fn tarsplit_error(e: storage_tarsplit::Error) -> Error {
    Error::wrap(ErrorKind::Other, e)
}

/// The output side of `diff`: raw, gzip or zstd.
enum CompressedWriter<'a> {
    Plain(&'a mut dyn Write),
    Gzip(crate::pgzip::ParallelGzWriter<&'a mut dyn Write>),
    #[cfg(feature = "zstd")]
    Zstd(zstd::Encoder<'static, &'a mut dyn Write>),
}

impl<'a> CompressedWriter<'a> {
    fn new(c: Compression, out: &'a mut dyn Write) -> Result<Self> {
        Ok(match c {
            Compression::None => CompressedWriter::Plain(out),
            Compression::Gzip => {
                // Blocks deflated on worker threads, like Go's pgzip. Level 3 gives about the
                // size Go's pgzip default gives (small-file bench tree: 22.7 MB vs Go's
                // 22.4 MB; zlib level 6: 21.5 MB at 2.5x the CPU time).
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
                CompressedWriter::Gzip(
                    crate::pgzip::ParallelGzWriter::new(out, flate2::Compression::new(3), threads)
                        .map_err(|e| Error::wrap(ErrorKind::Io, e))?,
                )
            }
            #[cfg(feature = "zstd")]
            Compression::Zstd => CompressedWriter::Zstd(
                zstd::Encoder::new(out, 3).map_err(|e| Error::wrap(ErrorKind::Io, e))?,
            ),
            // Go writes neither bzip2 nor xz (nor zstd in a build without it).
            #[allow(unreachable_patterns)]
            other => {
                return Err(Error::msg(
                    ErrorKind::NotSupported,
                    format!("unsupported compression format {}", other.extension()),
                ));
            }
        })
    }

    fn finish(self) -> Result<()> {
        let io = |e: std::io::Error| Error::wrap(ErrorKind::Io, e);
        match self {
            CompressedWriter::Plain(w) => w.flush().map_err(io),
            CompressedWriter::Gzip(g) => g.finish().and_then(|w| w.flush()).map_err(io),
            #[cfg(feature = "zstd")]
            CompressedWriter::Zstd(z) => z.finish().and_then(|w| w.flush()).map_err(io),
        }
    }
}

impl Write for CompressedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            CompressedWriter::Plain(w) => w.write(buf),
            CompressedWriter::Gzip(w) => w.write(buf),
            #[cfg(feature = "zstd")]
            CompressedWriter::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            CompressedWriter::Plain(w) => w.flush(),
            CompressedWriter::Gzip(w) => w.flush(),
            #[cfg(feature = "zstd")]
            CompressedWriter::Zstd(w) => w.flush(),
        }
    }
}

/// The ID maps recorded in a layer record.
fn maps_of(layer: &Layer) -> LayerMaps<'_> {
    LayerMaps {
        uid: &layer.uidmap,
        gid: &layer.gidmap,
    }
}
