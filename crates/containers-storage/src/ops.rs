//! Store operations across the layer, image and container stores (Go's `store.go`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use storage_drivers::{Change, CreateOpts, MountOpts};
use storage_layers::{CreateLayerOptions, DiffOptions};
use storage_types::{Error, ErrorKind, Layer, Result};

use crate::Store;

/// What kind of record an identifier names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A layer (read-write or read-only store).
    Layer,
    /// An image (read-write or read-only store).
    Image,
    /// A container.
    Container,
}

/// How [`Store::update_names`] changes the names (the one type of the image and container
/// stores too).
pub use storage_images::NamesOp;

impl Store {
    /// Every layer: the read-write store's, then the read-only stores' (with `true`).
    pub fn layers(&self) -> Result<Vec<(Layer, bool)>> {
        let mut out: Vec<(Layer, bool)> = Vec::new();
        let rw = self.layer_store()?;
        {
            let l = rw.write()?;
            out.extend(l.layers().into_iter().map(|x| (x, false)));
        }
        for ro in self.read_only_layer_stores()? {
            let l = ro.read()?;
            for layer in l.layers() {
                if !out.iter().any(|(x, _)| x.id == layer.id) {
                    out.push((layer, true));
                }
            }
        }
        Ok(out)
    }

    /// The layer named by `key` (ID, name or unique prefix), read-write store first; the flag
    /// says whether it lives in a read-only store.
    pub fn layer(&self, key: &str) -> Result<(Layer, bool)> {
        let rw = self.layer_store()?;
        if let Some(l) = rw.write()?.lookup(key) {
            return Ok((l.clone(), false));
        }
        for ro in self.read_only_layer_stores()? {
            if let Some(l) = ro.read()?.lookup(key) {
                return Ok((l.clone(), true));
            }
        }
        Err(Error::new(ErrorKind::LayerUnknown))
    }

    /// Go's `PutLayer`/`CreateLayer`: creates a layer (child of `opts.parent`, which may live
    /// in a read-only store but must not be a container's layer) and applies `diff` if given.
    ///
    /// A diff is extracted outside the store lock into a staging directory and committed
    /// under the layers lock in a short step (see [`Store::prepare_staged_layer`]), so
    /// readers of the store never wait for a layer's data. Layers that cannot be staged
    /// (from a template, with storage options, or whose content must be re-owned to ID maps
    /// other than the parent's) are created under the lock, as Go does.
    pub fn create_layer(
        &self,
        opts: &CreateLayerOptions,
        diff: Option<Box<dyn Read + Send>>,
    ) -> Result<(Layer, i64)> {
        match diff {
            Some(diff) => match self.create_layer_staged(opts, diff)? {
                Ok(done) => Ok(done),
                Err(diff) => self.create_layer_classic(opts, Some(diff)),
            },
            None => self.create_layer_classic(opts, None),
        }
    }

    /// [`Store::create_layer`] entirely under the layers lock (Go's way).
    pub(crate) fn create_layer_classic(
        &self,
        opts: &CreateLayerOptions,
        diff: Option<Box<dyn Read + Send>>,
    ) -> Result<(Layer, i64)> {
        let rw = self.layer_store()?;
        let ro_stores = self.read_only_layer_stores()?;
        let mut w = rw.write()?;
        let parent = match opts.parent.as_deref().filter(|p| !p.is_empty()) {
            None => None,
            Some(p) => Some(self.parent_layer(p, w.lookup(p).cloned(), &ro_stores)?),
        };
        w.create_with_parent(parent.as_ref(), opts, diff)
    }

    /// Go's `DeleteLayer`: refuses when the layer has children, is an image's top layer or a
    /// container's layer (an ID-mapped copy is not protected; it is removed from the images'
    /// `mapped-layers`).
    pub fn delete_layer(&self, key: &str) -> Result<()> {
        let rw = self.layer_store()?;
        let mut w = rw.write()?;
        let mut image_views = Vec::new();
        for store in self.rw_images() {
            image_views.push(store.read()?);
        }
        let containers = self.containers.read()?;
        let Some(layer) = w.lookup(key).cloned() else {
            return Err(Error::new(ErrorKind::NotALayer));
        };
        let id = layer.id.clone();
        if let Some(child) = w.children(&id).first() {
            return Err(Error::new(ErrorKind::LayerHasChildren)
                .context(format!("used by layer {}", child.id)));
        }
        for image in image_views.iter().flat_map(|v| v.images()) {
            if image.layer == id {
                return Err(Error::new(ErrorKind::LayerUsedByImage)
                    .context(format!("layer {id} used by image {}", image.id)));
            }
        }
        for c in containers.containers() {
            if c.layer == id {
                return Err(Error::new(ErrorKind::LayerUsedByContainer)
                    .context(format!("layer {id} used by container {}", c.id)));
            }
        }
        drop(containers);
        let users: Vec<String> = image_views
            .iter()
            .flat_map(|v| v.images())
            .filter(|i| i.mapped_layers.contains(&id))
            .map(|i| i.id.clone())
            .collect();
        drop(image_views);
        w.delete_unchecked(&id)?;
        // Go forgets a deleted mapped copy in every image that lists it.
        for store in self.rw_images() {
            let mut images = store.write()?;
            for image in &users {
                if images.lookup_image(image).is_some() {
                    images.remove_mapped_layer(image, &id)?;
                }
            }
        }
        Ok(())
    }

    /// Applies a (possibly compressed) tar stream to layer `key` (Go's `ApplyDiff`).
    ///
    /// When the layer's own content is empty (a layer just made by `create_layer`, on
    /// overlay, or a base layer on vfs) or the driver copies it cheaply (btrfs snapshots),
    /// the diff is extracted into a staging directory outside the store lock and the
    /// layer's content replaced by it under the lock. Otherwise (vfs layers on a parent,
    /// layers with content, mounted layers) it is applied in place under the lock, as Go
    /// does.
    pub fn apply_diff(&self, key: &str, diff: Box<dyn Read + Send>) -> Result<i64> {
        let diff = match self.apply_diff_staged(key, diff)? {
            Ok(size) => return Ok(size),
            Err(diff) => diff,
        };
        let rw = self.layer_store()?;
        let mut w = rw.write()?;
        if w.lookup(key).is_none() {
            return Err(Error::new(ErrorKind::LayerUnknown));
        }
        w.apply_diff(key, diff)
    }

    /// Writes the diff of layer `to` against `from` (default: its parent), holding
    /// `storage.lock` like Go.
    pub fn diff(
        &self,
        from: Option<&str>,
        to: &str,
        opts: &DiffOptions,
        out: &mut dyn Write,
    ) -> Result<()> {
        let g = self.graph()?;
        let rw = g.state.layers.clone();
        let ros = g.state.ro_layers.clone();
        let l = rw.write()?;
        if l.lookup(to).is_some() {
            return l.diff(from, to, opts, out);
        }
        drop(l);
        for ro in ros {
            let r = ro.read()?;
            if r.lookup(to).is_some() {
                return r.diff(from, to, opts, out);
            }
        }
        Err(Error::new(ErrorKind::LayerUnknown))
    }

    /// The changes of layer `to` against `from` (default: its parent).
    pub fn changes(&self, from: Option<&str>, to: &str) -> Result<Vec<Change>> {
        let g = self.graph()?;
        let rw = g.state.layers.clone();
        let ros = g.state.ro_layers.clone();
        let l = rw.write()?;
        if l.lookup(to).is_some() {
            return l.changes(from, to);
        }
        drop(l);
        for ro in ros {
            let r = ro.read()?;
            if r.lookup(to).is_some() {
                return r.changes(from, to);
            }
        }
        Err(Error::new(ErrorKind::LayerUnknown))
    }

    /// The size of the changes of layer `to` against `from` (default: its parent).
    pub fn diff_size(&self, from: Option<&str>, to: &str) -> Result<i64> {
        let rw = self.layer_store()?;
        let l = rw.write()?;
        if l.lookup(to).is_some() {
            return l.diff_size(from, to);
        }
        drop(l);
        for ro in self.read_only_layer_stores()? {
            let r = ro.read()?;
            if r.lookup(to).is_some() {
                return r.diff_size(from, to);
            }
        }
        Err(Error::new(ErrorKind::LayerUnknown))
    }

    /// Resolves a container to its layer and mount options; other keys pass through.
    fn mount_target(&self, key: &str, opts: &MountOpts) -> Result<(String, MountOpts)> {
        let containers = self.containers.read()?;
        if let Some(c) = containers.lookup_container(key) {
            let mut o = opts.clone();
            if o.uid_map.is_empty() {
                o.uid_map = c.uidmap.clone();
            }
            if o.gid_map.is_empty() {
                o.gid_map = c.gidmap.clone();
            }
            if c.flags
                .get("Volatile")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
            {
                o.volatile = true;
            }
            return Ok((c.layer.clone(), o));
        }
        Ok((key.to_string(), opts.clone()))
    }

    /// Go's `Mount`: mounts a layer (or a container's layer) and bumps its mount count.
    pub fn mount(&self, key: &str, opts: &MountOpts) -> Result<PathBuf> {
        let (layer, opts) = self.mount_target(key, opts)?;
        let g = self.graph()?;
        let rw = g.state.layers.clone();
        let mut w = rw.write()?;
        if w.lookup(&layer).is_none() {
            drop(w);
            for ro in g.state.ro_layers.iter() {
                if ro.read()?.lookup(&layer).is_some() {
                    return Err(Error::new(ErrorKind::StoreIsReadOnly));
                }
            }
            return Err(Error::new(ErrorKind::LayerUnknown));
        }
        w.mount(&layer, &opts)
    }

    /// Go's `Unmount`: returns whether the layer is still mounted.
    pub fn unmount(&self, key: &str, force: bool) -> Result<bool> {
        let (layer, _) = self.mount_target(key, &MountOpts::default())?;
        let g = self.graph()?;
        let rw = g.state.layers.clone();
        let mut w = rw.write()?;
        if w.lookup(&layer).is_none() {
            return Err(Error::new(ErrorKind::LayerUnknown));
        }
        w.unmount(&layer, force)
    }

    /// Go's `Mounted`: the mount count of a layer (or a container's layer).
    pub fn mounted(&self, key: &str) -> Result<i64> {
        let (layer, _) = self.mount_target(key, &MountOpts::default())?;
        let rw = self.layer_store()?;
        let w = rw.write()?;
        w.mounted(&layer)
    }

    /// The names of the big-data items of a layer.
    pub fn layer_big_data_names(&self, key: &str) -> Result<Vec<String>> {
        let rw = self.layer_store()?;
        let w = rw.write()?;
        if w.lookup(key).is_some() {
            return w.big_data_names(key);
        }
        drop(w);
        for ro in self.read_only_layer_stores()? {
            let r = ro.read()?;
            if r.lookup(key).is_some() {
                return r.big_data_names(key);
            }
        }
        Err(Error::new(ErrorKind::LayerUnknown))
    }

    /// The contents of a layer's big-data item.
    pub fn layer_big_data(&self, key: &str, name: &str) -> Result<Vec<u8>> {
        let read = |f: std::fs::File| -> Result<Vec<u8>> {
            let mut data = Vec::new();
            let mut f = f;
            f.read_to_end(&mut data)
                .map_err(|e| Error::io("read", std::path::Path::new(name), e))?;
            Ok(data)
        };
        let not_found = |id: &str, e: Error| {
            if e.is_not_found() {
                Error::msg(
                    ErrorKind::Io,
                    format!(
                        "locating item named {} for layer with ID {}: file does not exist",
                        storage_types::go_quote(name),
                        storage_types::go_quote(id)
                    ),
                )
            } else {
                e
            }
        };
        let rw = self.layer_store()?;
        let w = rw.write()?;
        if let Some(l) = w.lookup(key) {
            let id = l.id.clone();
            return read(w.big_data(key, name).map_err(|e| not_found(&id, e))?);
        }
        drop(w);
        for ro in self.read_only_layer_stores()? {
            let r = ro.read()?;
            if let Some(l) = r.lookup(key) {
                let id = l.id.clone();
                return read(r.big_data(key, name).map_err(|e| not_found(&id, e))?);
            }
        }
        Err(Error::new(ErrorKind::LayerUnknown))
    }

    /// Stores a big-data item of a layer.
    pub fn set_layer_big_data(&self, key: &str, name: &str, data: &mut dyn Read) -> Result<()> {
        let rw = self.layer_store()?;
        let mut w = rw.write()?;
        w.set_big_data(key, name, data)
    }

    /// Go's `LayerParentOwners`.
    pub fn layer_parent_owners(&self, key: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let rw = self.layer_store()?;
        let w = rw.write()?;
        if w.lookup(key).is_none() {
            return Err(Error::new(ErrorKind::LayerUnknown));
        }
        w.layer_parent_owners(key)
    }

    /// The layer IDs the driver has (Go's `driver.ListLayers`).
    pub fn driver_layers(&self) -> Result<Vec<String>> {
        self.with_driver(|d| d.list_layers())
    }

    /// Creates a layer only in the driver, without a record (1.60 `create-storage-layer`).
    pub fn create_driver_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
        writeable: bool,
    ) -> Result<()> {
        self.with_driver(|d| {
            if writeable {
                d.create_read_write(id, parent, opts)
            } else {
                d.create(id, parent, opts)
            }
        })
    }

    /// What `key` names: a layer, else an image, else a container (Go's lookup order).
    pub fn kind_of(&self, key: &str) -> Result<Option<RecordKind>> {
        Ok(self.kinds_of(key)?.first().copied())
    }

    /// Every kind of record `key` resolves as (layers, images, containers).
    pub fn kinds_of(&self, key: &str) -> Result<Vec<RecordKind>> {
        let mut kinds = Vec::new();
        if self.layer(key).is_ok() {
            kinds.push(RecordKind::Layer);
        }
        if self.image_record(key)?.is_some() {
            kinds.push(RecordKind::Image);
        }
        if self.containers.read()?.lookup_container(key).is_some() {
            kinds.push(RecordKind::Container);
        }
        Ok(kinds)
    }

    pub(crate) fn image_record(&self, key: &str) -> Result<Option<storage_types::Image>> {
        for store in self.rw_images() {
            if let Some(i) = store.read()?.lookup_image(key) {
                return Ok(Some(i.clone()));
            }
        }
        for ro in &self.ro_images {
            if let Some(i) = ro.read()?.lookup_image(key) {
                return Ok(Some(i.clone()));
            }
        }
        Ok(None)
    }

    /// Go's `Names`: the names of the layer, image or container `key`.
    pub fn names(&self, key: &str) -> Result<Vec<String>> {
        if let Ok((l, _)) = self.layer(key) {
            return Ok(l.names);
        }
        if let Some(i) = self.image_record(key)? {
            // Go resolves the key to an ID first: the names are those of the record that
            // ID finds, the read-write copy of a pulled-up image although the key was a
            // name only its read-only record still has.
            return Ok(self.image_record(&i.id)?.map_or(i.names, |r| r.names));
        }
        if let Some(c) = self.containers.read()?.lookup_container(key) {
            return Ok(c.names.clone());
        }
        Err(Error::new(ErrorKind::LayerUnknown))
    }

    /// Go's `AddNames`/`SetNames`/`RemoveNames`: names move away from other records of the
    /// same kind. Returns the resulting names.
    pub fn update_names(&self, key: &str, names: &[String], op: NamesOp) -> Result<Vec<String>> {
        let names = storage_types::dedup_names(names);
        let rw = self.layer_store()?;
        {
            let mut w = rw.write()?;
            if let Some(l) = w.lookup(key).cloned() {
                match op {
                    NamesOp::Set => w.set_names(&l.id, &names)?,
                    NamesOp::Add => w.add_names(&l.id, &names)?,
                    NamesOp::Remove => w.remove_names(&l.id, &names)?,
                }
                return Ok(w.get(&l.id)?.names);
            }
        }
        for ro in self.read_only_layer_stores()? {
            if ro.read()?.lookup(key).is_some() {
                return Err(Error::new(ErrorKind::StoreIsReadOnly));
            }
        }
        for store in self.rw_images() {
            let mut images = store.write()?;
            if images.lookup_image(key).is_some() {
                return images.update_names(key, &names, op);
            }
        }
        for ro in &self.ro_images {
            let pulled = {
                let r = ro.read()?;
                match r.lookup_image(key) {
                    Some(i) => Some(r.pull_up_options(&i.id.clone())?),
                    None => None,
                }
            };
            if let Some(mut new) = pulled {
                // Go copies ("pulls up") the read-only image into the read-write store with
                // the same ID, then renames the copy.
                new.digest = new.digest.filter(|d| !d.is_empty());
                let mut images = self.images.write()?;
                let copy = images.create(new)?;
                return images.update_names(&copy.id, &names, op);
            }
        }
        let mut containers = self.containers.write()?;
        if containers.lookup_container(key).is_some() {
            return containers.update_names(key, &names, op);
        }
        Err(Error::new(ErrorKind::LayerUnknown))
    }

    /// Go's `Metadata`: the metadata string of the layer, image or container `key`.
    pub fn metadata(&self, key: &str) -> Result<String> {
        if let Ok((l, _)) = self.layer(key) {
            return Ok(l.metadata);
        }
        if let Some(i) = self.image_record(key)? {
            return Ok(i.metadata);
        }
        if let Some(c) = self.containers.read()?.lookup_container(key) {
            return Ok(c.metadata.clone());
        }
        Err(Error::new(ErrorKind::NotALayerImageOrContainer))
    }

    /// Go's `SetMetadata`.
    pub fn set_metadata(&self, key: &str, metadata: &str) -> Result<()> {
        let rw = self.layer_store()?;
        {
            let mut w = rw.write()?;
            if let Some(l) = w.lookup(key).cloned() {
                return w.set_metadata(&l.id, metadata);
            }
        }
        for store in self.rw_images() {
            let mut images = store.write()?;
            if let Some(i) = images.lookup_image(key).cloned() {
                return images.set_metadata(&i.id, metadata);
            }
        }
        let mut containers = self.containers.write()?;
        if let Some(c) = containers.lookup_container(key).cloned() {
            return containers.set_metadata(&c.id, metadata);
        }
        Err(Error::new(ErrorKind::NotALayerImageOrContainer))
    }

    /// Which images use each layer as (mapped) top layer, and which containers use each layer:
    /// `(images by layer ID, containers by layer ID)` with (ID, names) pairs.
    pub fn layer_users(&self) -> Result<LayerUsers> {
        let mut users = LayerUsers::default();
        let mut add_images = |list: &[storage_types::Image]| {
            for i in list {
                let mut layers = vec![i.layer.clone()];
                layers.extend(i.mapped_layers.iter().cloned());
                for l in layers.into_iter().filter(|l| !l.is_empty()) {
                    users
                        .images
                        .entry(l)
                        .or_default()
                        .push((i.id.clone(), i.names.clone()));
                }
            }
        };
        for store in self.rw_images() {
            add_images(store.read()?.images());
        }
        for ro in &self.ro_images {
            add_images(ro.read()?.images());
        }
        for c in self.containers.read()?.containers() {
            users
                .containers
                .entry(c.layer.clone())
                .or_default()
                .push((c.id.clone(), c.names.clone()));
        }
        Ok(users)
    }
}

/// Images and containers using layers (see [`Store::layer_users`]).
#[derive(Debug, Default, Clone)]
pub struct LayerUsers {
    /// Layer ID → images (ID, names) whose top or mapped layer it is.
    pub images: BTreeMap<String, Vec<(String, Vec<String>)>>,
    /// Layer ID → containers (ID, names) whose layer it is.
    pub containers: BTreeMap<String, Vec<(String, Vec<String>)>>,
}

impl Store {
    /// The recorded mount point of a layer (or a container's layer), if mounted.
    pub fn mount_point(&self, key: &str) -> Result<Option<PathBuf>> {
        let (layer, _) = self.mount_target(key, &MountOpts::default())?;
        let rw = self.layer_store()?;
        let w = rw.write()?;
        w.mount_point(&layer)
    }
}
