//! `Check` and `Repair` (Go's `check.go`).
//!
//! [`Store::check`] looks at every layer, image and container of the read-write and
//! read-only stores and returns a [`CheckReport`] of what is damaged; [`Store::repair`]
//! removes what the report names, the way Go does (damaged containers only on request,
//! damaged images with their unused layers, then damaged layers deepest first and layers
//! the driver has but no record names).
//!
//! Beyond Go: temporary tar-split files an interrupted apply left
//! (`.tmp-<id>.tar-split.gz<digits>`, [`LAYER_TEMPORARY_LEFT`]) are reported as errors of
//! the layer ID they name (Go's report has no other place for them); `repair` removes the
//! files and leaves a layer whose only findings they were.
//!
//! Limits: the content comparison of mounted layers checks presence, type, permissions,
//! ownership (not for ID-mapped layers) and the size of regular files, not timestamps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use storage_archive::Compression;
use storage_drivers::{Driver, MountOpts};
use storage_layers::{DiffOptions, LayerStore, Layers};
use storage_types::{Digest, Error, ErrorKind, Layer, Result, Sha256Digester, Timestamp};

use crate::Store;

mod tree;

use tree::*;

/// Go's `ErrLayerUnaccounted`.
pub const LAYER_UNACCOUNTED: &str = "layer in lower level storage driver not accounted for";
/// Go's `ErrLayerUnreferenced`.
pub const LAYER_UNREFERENCED: &str = "layer not referenced by any images or containers";
/// Go's `ErrLayerIncorrectContentDigest`.
pub const LAYER_INCORRECT_DIGEST: &str = "layer content incorrect digest";
/// Go's `ErrLayerIncorrectContentSize`.
pub const LAYER_INCORRECT_SIZE: &str = "layer content incorrect size";
/// Go's `ErrLayerContentModified`.
pub const LAYER_CONTENT_MODIFIED: &str = "layer content modified";
/// Go's `ErrLayerDataMissing`.
pub const LAYER_DATA_MISSING: &str = "layer data item is missing";
/// Go's `ErrLayerMissing`.
pub const LAYER_MISSING: &str = "layer is missing";
/// Go's `ErrImageLayerMissing`.
pub const IMAGE_LAYER_MISSING: &str = "image layer is missing";
/// Go's `ErrImageDataMissing`.
pub const IMAGE_DATA_MISSING: &str = "image data item is missing";
/// Go's `ErrImageDataIncorrectSize`.
pub const IMAGE_DATA_INCORRECT_SIZE: &str = "image data item has incorrect size";
/// Go's `ErrContainerImageMissing`.
pub const CONTAINER_IMAGE_MISSING: &str = "image missing";
/// Go's `ErrContainerDataMissing`.
pub const CONTAINER_DATA_MISSING: &str = "container data item is missing";
/// Go's `ErrContainerDataIncorrectSize`.
pub const CONTAINER_DATA_INCORRECT_SIZE: &str = "container data item has incorrect size";

/// Not in Go (whose check does not look for them): a temporary tar-split file that an
/// interrupted apply left in the layer store's directory. Reported as an error of the layer
/// it was written for; `repair` removes the file, not the layer.
pub const LAYER_TEMPORARY_LEFT: &str = "temporary file left behind by an interrupted write";

/// Go's default maximum age of unreferenced layers (24 hours).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// What [`Store::check`] looks at (Go's `CheckQuick()` / `CheckEverything()`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Skip the layer digests and the comparison of mounted content (Go's `CheckQuick`).
    pub quick: bool,
    /// Layers referenced by no image or container and older than this are reported;
    /// `None` means Go's default of 24 hours.
    pub max_age: Option<Duration>,
}

/// What [`Store::repair`] may remove besides damaged images and layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairOptions {
    /// Also delete damaged containers (CLI `check -f`).
    pub remove_containers: bool,
}

/// The findings of [`Store::check`]: object ID → error messages (Go's `CheckReport`).
///
/// Plain data: how it is shown (Go's text and JSON renderings, the summary) is the
/// caller's business; the `containers-storage` CLI prints it as Go's does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Damaged read-write layers (and driver layers without a record).
    pub layers: BTreeMap<String, Vec<String>>,
    /// Damaged read-only layers.
    pub ro_layers: BTreeMap<String, Vec<String>>,
    /// Damaged read-write images (including those with damaged layers).
    pub images: BTreeMap<String, Vec<String>>,
    /// Damaged read-only images.
    pub ro_images: BTreeMap<String, Vec<String>>,
    /// Damaged containers (including those with damaged images or layers).
    pub containers: BTreeMap<String, Vec<String>>,
    /// Parent of every layer record seen (read-write and read-only).
    layer_parents: HashMap<String, String>,
    /// Driver layers without a record, with their position in the driver's listing.
    unaccounted: HashMap<String, usize>,
    /// Layers whose only finding can be a leftover temporary file, with those files.
    temporaries: BTreeMap<String, Vec<std::path::PathBuf>>,
}

impl CheckReport {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.layers.is_empty()
            && self.ro_layers.is_empty()
            && self.images.is_empty()
            && self.ro_images.is_empty()
            && self.containers.is_empty()
    }

    /// Whether layer `id` was reported as a driver layer without record.
    pub fn is_unaccounted(&self, id: &str) -> bool {
        self.unaccounted.contains_key(id)
    }

    fn depth(&self, id: &str) -> usize {
        let mut d = 0;
        let mut seen = HashSet::new();
        let mut cur = self.layer_parents.get(id).cloned().unwrap_or_default();
        while !cur.is_empty() && seen.insert(cur.clone()) {
            d += 1;
            cur = self.layer_parents.get(&cur).cloned().unwrap_or_default();
        }
        d
    }
}

/// Adds the findings `found` to `dest`.
fn merge(dest: &mut BTreeMap<String, Vec<String>>, found: BTreeMap<String, Vec<String>>) {
    for (id, errs) in found {
        dest.entry(id).or_default().extend(errs);
    }
}

fn push(map: &mut BTreeMap<String, Vec<String>>, id: &str, err: String) {
    let errs = map.entry(id.to_string()).or_default();
    if !errs.contains(&err) {
        errs.push(err);
    }
}

/// One entry of a layer's diff, as needed to rebuild the expected tree.
#[derive(Debug, Clone)]
struct DiffEntry {
    path: String,
    typeflag: u8,
    mode: u32,
    uid: i64,
    gid: i64,
    size: i64,
    linkname: String,
}

/// Counts and digests what is written, and forwards it.
struct TeeCounter<W: Write> {
    inner: W,
    digester: Sha256Digester,
    count: u64,
}

impl<W: Write> Write for TeeCounter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(written) = buf.get(..n) {
            self.digester.update(written);
        }
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Regenerates the uncompressed diff of `id`, returning its digest, length and headers.
fn digest_diff(
    layers: &Layers,
    id: &str,
) -> std::result::Result<(Digest, u64, Vec<DiffEntry>), String> {
    let (reader, writer) = std::io::pipe().map_err(|e| e.to_string())?;
    let parser = std::thread::spawn(move || -> std::result::Result<Vec<DiffEntry>, String> {
        let mut tr = storage_tarsplit::TarReader::new(std::io::BufReader::new(reader));
        let mut out = Vec::new();
        loop {
            match tr.next_header() {
                Ok(Some(h)) => out.push(DiffEntry {
                    path: String::from_utf8_lossy(&h.name).into_owned(),
                    typeflag: h.typeflag,
                    mode: (h.mode & 0o7777) as u32,
                    uid: h.uid,
                    gid: h.gid,
                    size: h.size,
                    linkname: String::from_utf8_lossy(&h.linkname).into_owned(),
                }),
                Ok(None) => break,
                Err(e) => {
                    let mut rest = tr.into_inner();
                    let _ = std::io::copy(&mut rest, &mut std::io::sink());
                    return Err(e.to_string());
                }
            }
        }
        // Consume any trailer after the end-of-archive marker.
        let mut rest = tr.into_inner();
        std::io::copy(&mut rest, &mut std::io::sink())
            .map_err(|e| format!("consume any trailer after the EOF marker: {e}"))?;
        Ok(out)
    });
    let mut tee = TeeCounter {
        inner: writer,
        digester: Sha256Digester::new(),
        count: 0,
    };
    let opts = DiffOptions {
        compression: Some(Compression::None),
    };
    let result = layers.diff(None, id, &opts, &mut tee);
    let TeeCounter {
        inner,
        digester,
        count,
    } = tee;
    drop(inner);
    let headers = parser
        .join()
        .unwrap_or_else(|_| Err("diff parser failed".to_string()));
    result.map_err(|e| e.to_string())?;
    let headers = headers?;
    Ok((digester.finish(), count, headers))
}

/// Whether a big-data error means the item is gone (Go: `errors.Is(err, os.ErrNotExist)`).
fn missing(e: &Error) -> bool {
    e.is_not_found() || e.to_string().ends_with("file does not exist")
}

/// The big-data items of an image or container that are missing, unreadable or not of their
/// recorded size: `(name, message)`, the message `texts.0` (missing), `texts.1` (size) or
/// the read error. `read` returns an item's length.
fn big_data_errors<'a>(
    names: &'a [String],
    sizes: &BTreeMap<String, i64>,
    read: impl Fn(&str) -> Result<usize>,
    texts: (&str, &str),
) -> Vec<(&'a str, String)> {
    let mut out = Vec::new();
    for key in names {
        match read(key) {
            Err(e) if missing(&e) => out.push((key.as_str(), texts.0.to_string())),
            Err(e) => out.push((key.as_str(), e.to_string())),
            Ok(len) if len as i64 != sizes.get(key).copied().unwrap_or(0) => {
                out.push((key.as_str(), texts.1.to_string()))
            }
            Ok(_) => {}
        }
    }
    out
}

/// Reads a layer big-data item to the end.
fn read_layer_data(layers: &Layers, id: &str, name: &str) -> Result<()> {
    let mut f = layers.big_data(id, name)?;
    std::io::copy(&mut f, &mut std::io::sink())
        .map_err(|e| Error::io("read", Path::new(name), e))?;
    Ok(())
}

/// Per layer store: the records and what we learned about them.
struct LayerScan {
    layers: Vec<Layer>,
    read_only: bool,
}

impl Store {
    /// Go's `Store.Check`: reports damaged layers, images and containers.
    /// Nothing is modified; read-write layers are mounted (read-only) to compare their
    /// content unless `opts.quick`.
    pub fn check(&self, opts: &CheckOptions) -> Result<CheckReport> {
        let (driver, rw, ros): (Arc<dyn Driver>, Arc<LayerStore>, Vec<Arc<LayerStore>>) = {
            let g = self.graph()?;
            (
                g.state.driver.clone(),
                g.state.layers.clone(),
                g.state.ro_layers.clone(),
            )
        };
        let mut report = CheckReport::default();
        let mut headers_by_layer: HashMap<String, Vec<DiffEntry>> = HashMap::new();
        let mut scans = Vec::new();
        let mut stores: Vec<(&Arc<LayerStore>, bool)> = vec![(&rw, false)];
        stores.extend(ros.iter().map(|s| (s, true)));
        for (store, read_only) in stores {
            let guard = store.read()?;
            let layers: &Layers = &guard;
            let desc = if read_only { "read-only " } else { "" };
            let list: Vec<Layer> = layers
                .layers()
                .into_iter()
                .filter(|l| !report.layer_parents.contains_key(&l.id))
                .collect();
            let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
            // Seen under the layers lock, which their writers hold while they exist: each
            // one was left by a writer that is gone.
            for (id, path) in layers.leftover_temporaries() {
                push(
                    &mut found,
                    &id,
                    format!("layer {id}: {}: {LAYER_TEMPORARY_LEFT}", path.display()),
                );
                report.temporaries.entry(id).or_default().push(path);
            }
            for layer in &list {
                report
                    .layer_parents
                    .insert(layer.id.clone(), layer.parent.clone());
                let id = &layer.id;
                for name in &layer.big_data_names {
                    if let Err(e) = read_layer_data(layers, id, name) {
                        let msg = if missing(&e) {
                            LAYER_DATA_MISSING.to_string()
                        } else {
                            e.to_string()
                        };
                        push(
                            &mut found,
                            id,
                            format!(
                                "{desc}layer {id}: data item {}: {msg}",
                                storage_types::go_quote(name)
                            ),
                        );
                    }
                }
                if opts.quick || layer.diff_digest.is_empty() {
                    continue;
                }
                if let Err(e) = Digest::validate(&layer.diff_digest) {
                    push(&mut found, id, format!("{desc}layer {id}: {e}"));
                    continue;
                }
                match digest_diff(layers, id) {
                    Err(e) => push(&mut found, id, format!("{desc}layer {id}: {e}")),
                    Ok((digest, count, headers)) => {
                        let mut ok = true;
                        if digest.as_str() != layer.diff_digest {
                            ok = false;
                            push(
                                &mut found,
                                id,
                                format!("{desc}layer {id}: {LAYER_INCORRECT_DIGEST}"),
                            );
                        }
                        if layer.diff_size != -1 && count != layer.diff_size as u64 {
                            ok = false;
                            push(
                                &mut found,
                                id,
                                format!(
                                    "{desc}layer {id}: read {count} bytes instead of {} bytes: {LAYER_INCORRECT_SIZE}",
                                    layer.diff_size
                                ),
                            );
                        }
                        if ok {
                            headers_by_layer.insert(id.clone(), headers);
                        }
                    }
                }
            }
            let rules = ContentRules::for_options(self.driver_options());
            if !read_only {
                // Mountability and content: only where we can be sure it works.
                for layer in &list {
                    let id = &layer.id;
                    let mopts = MountOpts {
                        mount_label: layer.mount_label.clone(),
                        options: vec!["ro".to_string()],
                        ..MountOpts::default()
                    };
                    let mount_point = match driver.get(id, &mopts) {
                        Ok(p) => p,
                        Err(e) => {
                            push(&mut found, id, format!("layer {id}: {e}"));
                            continue;
                        }
                    };
                    if !opts.quick && !layer.diff_digest.is_empty() {
                        for diff in
                            compare_content(layer, &list, &headers_by_layer, &mount_point, rules)
                        {
                            push(
                                &mut found,
                                id,
                                format!("layer {id}: {diff}, {LAYER_CONTENT_MODIFIED}"),
                            );
                        }
                    }
                    if let Err(e) = driver.put(id) {
                        push(&mut found, id, format!("layer {id}: {e}"));
                    }
                }
            }
            // Dangling parents.
            for layer in &list {
                if layer.parent.is_empty() {
                    continue;
                }
                let known = list.iter().any(|l| l.id == layer.parent)
                    || report.layer_parents.contains_key(&layer.parent)
                    || scans
                        .iter()
                        .any(|s: &LayerScan| s.layers.iter().any(|l| l.id == layer.parent));
                if !known {
                    push(
                        &mut found,
                        &layer.id,
                        format!("{desc}layer {}: {LAYER_MISSING}", layer.parent),
                    );
                }
            }
            let dest = if read_only {
                &mut report.ro_layers
            } else {
                &mut report.layers
            };
            merge(dest, found);
            scans.push(LayerScan {
                layers: list,
                read_only,
            });
        }
        // A parent living in a later (read-only) store is not missing after all.
        for map in [&mut report.layers, &mut report.ro_layers] {
            for errs in map.values_mut() {
                errs.retain(|e| {
                    if !e.ends_with(LAYER_MISSING) || e.contains(IMAGE_LAYER_MISSING) {
                        return true;
                    }
                    let parent = e
                        .trim_start_matches("read-only ")
                        .trim_start_matches("layer ")
                        .split(':')
                        .next()
                        .unwrap_or("");
                    !report.layer_parents.contains_key(parent)
                });
            }
            map.retain(|_, errs| !errs.is_empty());
        }

        // Images.
        let mut referenced: HashSet<String> = HashSet::new();
        let mut image_ids: HashSet<String> = HashSet::new();
        let mut image_stores: Vec<(&storage_images::ImageStore, bool)> =
            vec![(&self.images, false)];
        image_stores.extend(self.ro_images.iter().map(|s| (s, true)));
        for (store, read_only) in image_stores {
            let images = store.read()?;
            let desc = if read_only { "read-only " } else { "" };
            let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for image in images.images() {
                if !image_ids.insert(image.id.clone()) {
                    continue;
                }
                let id = &image.id;
                let item = |key: &str| images.big_data(id, key).map(|data| data.len());
                for (key, msg) in big_data_errors(
                    &image.big_data_names,
                    &image.big_data_sizes,
                    item,
                    (IMAGE_DATA_MISSING, IMAGE_DATA_INCORRECT_SIZE),
                ) {
                    push(
                        &mut found,
                        id,
                        format!(
                            "{desc}image {id}: data item {}: {msg}",
                            storage_types::go_quote(key)
                        ),
                    );
                }
                let mut tops = vec![image.layer.clone()];
                tops.extend(image.mapped_layers.iter().cloned());
                let mut examined = HashSet::new();
                for top in tops {
                    if top.is_empty() || !examined.insert(top.clone()) {
                        continue;
                    }
                    let errs = walk_chain(&report, &top, &mut referenced, |layer| {
                        format!("{desc}image {id}: layer {layer}: {IMAGE_LAYER_MISSING}")
                    });
                    for e in errs {
                        push(&mut found, id, e);
                    }
                }
            }
            let dest = if read_only {
                &mut report.ro_images
            } else {
                &mut report.images
            };
            merge(dest, found);
        }

        // Containers.
        {
            let containers = self.containers.read()?;
            let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for c in containers.containers() {
                let id = &c.id;
                let item = |key: &str| containers.big_data(id, key).map(|data| data.len());
                for (key, msg) in big_data_errors(
                    &c.big_data_names,
                    &c.big_data_sizes,
                    item,
                    (CONTAINER_DATA_MISSING, CONTAINER_DATA_INCORRECT_SIZE),
                ) {
                    push(
                        &mut found,
                        id,
                        format!(
                            "container {id}: data item {}: {msg}",
                            storage_types::go_quote(key)
                        ),
                    );
                }
                if !c.image.is_empty() {
                    if !image_ids.contains(&c.image) {
                        push(
                            &mut found,
                            id,
                            format!(
                                "container {id}: image {}: {CONTAINER_IMAGE_MISSING}",
                                c.image
                            ),
                        );
                    } else {
                        let image_errs: Vec<String> = report
                            .images
                            .get(&c.image)
                            .into_iter()
                            .chain(report.ro_images.get(&c.image))
                            .flatten()
                            .cloned()
                            .collect();
                        for e in image_errs {
                            push(&mut found, id, e);
                        }
                    }
                }
                if !c.layer.is_empty() {
                    let errs = walk_chain(&report, &c.layer, &mut referenced, |layer| {
                        format!("container {id}: layer {layer}: {LAYER_MISSING}")
                    });
                    for e in errs {
                        push(&mut found, id, e);
                    }
                }
            }
            merge(&mut report.containers, found);
        }

        // Unreferenced layers of the read-write store.
        let max_age = opts.max_age.unwrap_or(DEFAULT_MAX_AGE);
        let now = Timestamp::now().unix_nanos();
        for scan in scans.iter().filter(|s| !s.read_only) {
            for layer in &scan.layers {
                if referenced.contains(&layer.id) {
                    continue;
                }
                let old = layer.created.is_zero()
                    || layer.created.unix_nanos() + max_age.as_nanos() as i128 <= now;
                if old {
                    push(
                        &mut report.layers,
                        &layer.id,
                        format!("layer {}: {LAYER_UNREFERENCED}", layer.id),
                    );
                }
            }
        }

        // Driver layers without a record.
        match driver.list_layers() {
            Ok(list) => {
                for (i, id) in list.into_iter().enumerate() {
                    if !report.layer_parents.contains_key(&id) {
                        push(
                            &mut report.layers,
                            &id,
                            format!("layer {id}: {LAYER_UNACCOUNTED}"),
                        );
                        report.unaccounted.insert(id, i + 1);
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::NotSupported => {}
            Err(e) => return Err(e),
        }
        Ok(report)
    }

    /// Go's `Store.Repair`: removes what `report` names and returns the
    /// errors met on the way (an empty list means success).
    pub fn repair(&self, report: &CheckReport, opts: &RepairOptions) -> Vec<Error> {
        let mut errs = Vec::new();
        if opts.remove_containers {
            for id in report.containers.keys() {
                if let Err(e) = self.repair_delete_container(id)
                    && e.kind() != ErrorKind::ContainerUnknown
                {
                    errs.push(e.context(format!("deleting container {id}")));
                }
            }
        }
        for id in report.images.keys() {
            if let Err(e) = self.repair_delete_image(id)
                && e.kind() != ErrorKind::ImageUnknown
            {
                errs.push(e.context(format!("deleting image {id}")));
            }
        }
        let mut order: Vec<&String> = report.layers.keys().collect();
        order.sort_by(|a, b| {
            let (ua, ub) = (report.unaccounted.get(*a), report.unaccounted.get(*b));
            match (ua, ub) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => std::cmp::Ordering::Greater,
                (None, Some(_)) => std::cmp::Ordering::Less,
                (None, None) => report.depth(b).cmp(&report.depth(a)),
            }
        });
        let (driver, rw) = match self.graph() {
            Ok(g) => (g.state.driver.clone(), g.state.layers.clone()),
            Err(e) => {
                errs.push(e);
                return errs;
            }
        };
        if !report.temporaries.is_empty() {
            let removed = rw.write().and_then(|mut w| w.remove_leftover_temporaries());
            if let Err(e) = removed {
                errs.push(e);
            }
        }
        for id in order {
            // A layer whose only findings were leftover temporary files is fine now.
            let only_temporaries = report
                .layers
                .get(id)
                .is_some_and(|errs| errs.iter().all(|e| e.ends_with(LAYER_TEMPORARY_LEFT)));
            if only_temporaries {
                continue;
            }
            if report.is_unaccounted(id) {
                if let Err(e) = driver.remove(id)
                    && !e.is_not_found()
                {
                    errs.push(Error::msg(
                        e.kind(),
                        format!("deleting storage layer {id}: {e}"),
                    ));
                }
                continue;
            }
            let result = (|| -> Result<()> {
                let mut w = rw.write()?;
                if w.lookup(id).is_none() {
                    return Ok(());
                }
                loop {
                    match w.unmount(id, true) {
                        Ok(true) => continue,
                        Ok(false) => break,
                        Err(e) if e.kind() == ErrorKind::LayerNotMounted => break,
                        Err(e) => return Err(e),
                    }
                }
                drop(w);
                self.delete_layer(id)
            })();
            if let Err(e) = result {
                errs.push(e.context(format!("deleting layer {id}")));
            }
        }
        errs
    }

    /// Go's `DeleteContainer` for repair: the record, its layer and its directories.
    fn repair_delete_container(&self, id: &str) -> Result<()> {
        let rw = self.layer_store()?;
        let mut w = rw.write()?;
        let _images = self.images.read()?;
        let mut containers = self.containers.write()?;
        let Some(c) = containers.lookup_container(id).cloned() else {
            return Err(Error::new(ErrorKind::ContainerUnknown));
        };
        if !c.layer.is_empty() && w.lookup(&c.layer).is_some() {
            w.delete_unchecked(&c.layer)?;
        }
        containers.delete(&c.id)
    }

    /// Go's `DeleteImage(id, commit=true)` for repair: refuses when a container uses the
    /// image, deletes the record, then its top (and mapped) layer chains as long as nothing
    /// else uses them.
    fn repair_delete_image(&self, id: &str) -> Result<()> {
        let rw = self.layer_store()?;
        let mut w = rw.write()?;
        let mut images = self.images.write()?;
        let containers = self.containers.read()?;
        let Some(image) = images.lookup_image(id).cloned() else {
            return Err(Error::new(ErrorKind::ImageUnknown));
        };
        if containers.containers().iter().any(|c| c.image == image.id) {
            return Err(Error::new(ErrorKind::ImageUsedByContainer));
        }
        let mut used: HashSet<String> = HashSet::new();
        for other in images.images().iter().filter(|i| i.id != image.id) {
            used.insert(other.layer.clone());
            used.extend(other.mapped_layers.iter().cloned());
        }
        for ro in &self.ro_images {
            if let Ok(r) = ro.read() {
                for other in r.images() {
                    used.insert(other.layer.clone());
                    used.extend(other.mapped_layers.iter().cloned());
                }
            }
        }
        used.extend(containers.containers().iter().map(|c| c.layer.clone()));
        drop(containers);
        let mut to_remove: Vec<String> = Vec::new();
        let mut layer = image.layer.clone();
        while !layer.is_empty() && !used.contains(&layer) {
            let Some(rec) = w.lookup(&layer).cloned() else {
                break;
            };
            let blocked = w
                .children(&rec.id)
                .iter()
                .any(|c| !to_remove.contains(&c.id));
            if blocked {
                break;
            }
            to_remove.push(rec.id.clone());
            layer = rec.parent.clone();
        }
        for m in &image.mapped_layers {
            if !used.contains(m) && w.lookup(m).is_some() {
                to_remove.push(m.clone());
            }
        }
        images.delete(&image.id)?;
        for l in to_remove {
            if w.lookup(&l).is_some() {
                w.delete_unchecked(&l)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, t: u8) -> DiffEntry {
        DiffEntry {
            path: path.into(),
            typeflag: t,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 1,
            linkname: String::new(),
        }
    }

    #[test]
    fn whiteouts_and_opaque_dirs_apply_in_order() {
        let lower = vec![e("a/", b'5'), e("a/x", b'0'), e("a/y", b'0'), e("b", b'0')];
        let upper = vec![e("a/.wh..wh..opq", b'0'), e("a/z", b'0'), e(".wh.b", b'0')];
        let t = expected_tree(&[&lower, &upper]);
        let keys: Vec<&str> = t.keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, vec!["a", "a/z"]);
    }
}
