//! Image and container operations of the store (Go's `store.go`), using the layer store for
//! the layers they refer to.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use storage_containers::NewContainer;
use storage_images::NewImage;
use storage_layers::CreateLayerOptions;
use storage_types::{Container, Digest, Error, ErrorKind, FastSet, IdMap, Image, Result, go_quote};

use crate::Store;
use crate::auto_userns::AutoUserNsOptions;
use crate::idmaps::Wanted;

/// What to create with [`Store::create_container`].
#[derive(Debug, Clone, Default)]
pub struct ContainerOptions {
    /// The ID (`None`: generated).
    pub id: Option<String>,
    /// Names.
    pub names: Vec<String>,
    /// Image name or ID; empty: no image.
    pub image: String,
    /// Opaque metadata.
    pub metadata: String,
    /// UID map of the container (and its layer).
    pub uid_map: Vec<IdMap>,
    /// GID map.
    pub gid_map: Vec<IdMap>,
    /// Force "no UID map".
    pub host_uid_mapping: bool,
    /// Force "no GID map".
    pub host_gid_mapping: bool,
    /// Allocate an automatic user namespace (Go's `AutoUserNs`): the maps come from the
    /// configured user's subordinate IDs, replacing `uid_map`/`gid_map`.
    pub auto_userns: bool,
    /// How the automatic user namespace is sized and completed.
    pub auto_userns_opts: AutoUserNsOptions,
    /// Volatile container.
    pub volatile: bool,
}

impl Store {
    /// Every image: the read-write store's, then the read-only stores' (with
    /// `read_only` set). As in Go, an image pulled up from a read-only store by a rename is
    /// listed twice: the read-write record with its names, then the read-only one.
    pub fn images_list(&self) -> Result<Vec<Image>> {
        self.with_images(|images| images.iter().map(|i| (*i).clone()).collect())
    }

    /// The images of [`Store::images_list`], lent to `f` instead of copied (the stores stay
    /// read-locked while `f` runs): listing 1000 images copies none of them.
    pub fn with_images<R>(&self, f: impl FnOnce(&[&Image]) -> R) -> Result<R> {
        let sets = self
            .rw_images()
            .chain(self.ro_images.iter())
            .map(|s| s.read())
            .collect::<Result<Vec<_>>>()?;
        let total = sets.iter().map(|s| s.images().len()).sum();
        let mut seen: FastSet<&str> = FastSet::default();
        seen.reserve(total);
        let mut out: Vec<&Image> = Vec::with_capacity(total);
        let read_write = self.rw_images().count();
        for (n, set) in sets.iter().enumerate() {
            // A read-only store loads its records with `read_only` set; its records are all
            // listed (the read-write stores of a split image store can share records).
            for i in set.images() {
                if n >= read_write || seen.insert(i.id.as_str()) {
                    out.push(i);
                }
            }
        }
        Ok(f(&out))
    }

    /// Go's `Store.Image`: the image named by `key` (read-write stores first). As in Go
    /// 1.46+, a read-only store's record is skipped when the primary store has a record with
    /// its ID: that record is the image "pulled up" by a rename, and a name it no longer has
    /// must not resolve through the read-only copy. (The other lookups — existence, names,
    /// metadata, big data, [`Store::create_container`] — still see the read-only record, as
    /// in Go.)
    pub fn image(&self, key: &str) -> Result<Image> {
        self.find_image(key, true)
            .map_err(|e| e.context(format!("locating image with ID {}", go_quote(key))))
    }

    /// The image named by `key`, read-write stores first; with `shadow`, skipping read-only
    /// records whose ID the primary store has too.
    fn find_image(&self, key: &str, shadow: bool) -> Result<Image> {
        for store in self.rw_images() {
            if let Some(i) = store.read()?.lookup_image(key) {
                return Ok(i.clone());
            }
        }
        for ro in &self.ro_images {
            if let Some(i) = ro.read()?.lookup_image(key) {
                if shadow
                    && self
                        .images
                        .read()?
                        .lookup_image(&i.id)
                        .is_some_and(|rw| rw.id == i.id)
                {
                    continue;
                }
                let mut i = i.clone();
                i.read_only = true;
                return Ok(i);
            }
        }
        Err(Error::new(ErrorKind::ImageUnknown))
    }

    /// Images whose digest list contains `digest`.
    pub fn images_by_digest(&self, digest: &Digest) -> Result<Vec<Image>> {
        let mut out: Vec<Image> = Vec::new();
        for store in self.rw_images() {
            for i in store.read()?.by_digest(digest) {
                if !out.iter().any(|x| x.id == i.id) {
                    out.push(i.clone());
                }
            }
        }
        for ro in &self.ro_images {
            for i in ro.read()?.by_digest(digest) {
                if !out.iter().any(|x| x.id == i.id) {
                    let mut i = i.clone();
                    i.read_only = true;
                    out.push(i);
                }
            }
        }
        Ok(out)
    }

    /// Runs `f` on the image store holding `key` (read-write first).
    fn with_image_set<T>(
        &self,
        key: &str,
        f: impl Fn(&storage_images::ImageSet, &str) -> Result<T>,
    ) -> Result<T> {
        for store in self.rw_images() {
            let rw = store.read()?;
            if let Some(i) = rw.lookup_image(key) {
                let id = i.id.clone();
                return f(&rw, &id);
            }
        }
        for ro in &self.ro_images {
            let r = ro.read()?;
            if let Some(i) = r.lookup_image(key) {
                let id = i.id.clone();
                return f(&r, &id);
            }
        }
        Err(Error::new(ErrorKind::ImageUnknown)
            .context(format!("locating image with ID {}", go_quote(key))))
    }

    /// The data item names of an image.
    pub fn image_big_data_names(&self, key: &str) -> Result<Vec<String>> {
        self.with_image_set(key, |s, id| s.big_data_names(id))
    }

    /// The bytes of an image data item.
    pub fn image_big_data(&self, key: &str, item: &str) -> Result<Vec<u8>> {
        self.with_image_set(key, |s, id| s.big_data(id, item))
    }

    /// The size of an image data item.
    pub fn image_big_data_size(&self, key: &str, item: &str) -> Result<i64> {
        self.with_image_set(key, |s, id| s.big_data_size(id, item))
    }

    /// The digest of an image data item.
    pub fn image_big_data_digest(&self, key: &str, item: &str) -> Result<Digest> {
        self.with_image_set(key, |s, id| s.big_data_digest(id, item))
    }

    /// Stores an image data item (manifest keys get the sha256 of the bytes as digest).
    pub fn set_image_big_data(&self, key: &str, item: &str, data: &[u8]) -> Result<()> {
        for store in self.rw_images() {
            let mut w = store.write()?;
            if w.lookup_image(key).is_some() {
                return w.set_big_data(key, item, data, Some(Digest::sha256(data)));
            }
        }
        for ro in &self.ro_images {
            if ro.read()?.lookup_image(key).is_some() {
                return Err(Error::new(ErrorKind::StoreIsReadOnly).context(format!(
                    "not allowed to save data items associated with images at {}",
                    go_quote(&ro.dir().to_string_lossy())
                )));
            }
        }
        Err(Error::new(ErrorKind::ImageUnknown)
            .context(format!("locating image with ID {}", go_quote(key))))
    }

    /// Go's `CreateImage`: `new.layer` may be a layer name or ID (resolved here).
    pub fn create_image(&self, mut new: NewImage) -> Result<Image> {
        if !new.layer.is_empty() {
            new.layer = self.layer(&new.layer)?.0.id;
        }
        // An ID that names a read-only image: that image is pulled up (its data, digest,
        // times and flags copied); its names are added after the caller's.
        let mut ro_names = Vec::new();
        if let Some(id) = new.id.clone().filter(|i| !i.is_empty())
            && self.images.read()?.lookup_image(&id).is_none()
        {
            for ro in &self.ro_images {
                let r = ro.read()?;
                let Some(i) = r.images().iter().find(|i| i.id == id) else {
                    continue;
                };
                let pulled = r.pull_up_options(&i.id.clone())?;
                ro_names = pulled.names.clone();
                if new.metadata.is_empty() {
                    new.metadata = pulled.metadata;
                }
                new.created = pulled.created;
                if new.digest.is_none() {
                    new.digest = pulled.digest.filter(|d| !d.is_empty());
                }
                new.names_history = pulled.names_history;
                new.flags = pulled.flags;
                new.big_data = pulled.big_data;
                break;
            }
        }
        let mut w = self.images.write()?;
        let image = w.create(new)?;
        if ro_names.is_empty() {
            return Ok(image);
        }
        let mut names = image.names.clone();
        names.extend(ro_names);
        w.update_names(&image.id, &names, storage_images::NamesOp::Set)?;
        w.get(&image.id).cloned()
    }

    /// The layers of a layer's ancestry plus its own size, summed (Go's `ImageSize`).
    pub fn image_size(&self, key: &str) -> Result<i64> {
        let image = self.find_image(key, false)?;
        let mut queue: Vec<String> = std::iter::once(image.layer.clone())
            .chain(image.mapped_layers.iter().cloned())
            .filter(|l| !l.is_empty())
            .collect();
        let mut visited = HashSet::new();
        let mut size = 0i64;
        while let Some(id) = queue.pop() {
            if !visited.insert(id.clone()) {
                continue;
            }
            let (layer, _) = self
                .layer(&id)
                .map_err(|e| e.context(format!("locating layer with ID {}", go_quote(&id))))?;
            let n = match layer.known_size() {
                Some(n) if !layer.diff_digest.is_empty() => n,
                _ => self.diff_size(None, &layer.id).map_err(|e| {
                    e.context(format!(
                        "size/digest of layer with ID {} could not be calculated",
                        go_quote(&id)
                    ))
                })?,
            };
            size += n;
            if !layer.parent.is_empty() {
                queue.push(layer.parent.clone());
            }
        }
        for item in &image.big_data_names {
            size += self.image_big_data_size(&image.id, item)?;
        }
        Ok(size)
    }

    /// Go's `DeleteImage(id, commit)`: returns the layers that are (or would be) removed
    /// with the image, top first.
    pub fn delete_image(&self, key: &str, commit: bool) -> Result<Vec<String>> {
        let layers = self.layer_store()?;
        let mut l = layers.write()?;
        let mut stores = Vec::new();
        for store in self.rw_images() {
            stores.push(store.write()?);
        }
        let containers = self.containers.write()?;
        let Some((home, image)) = stores
            .iter()
            .enumerate()
            .find_map(|(n, s)| s.lookup_image(key).map(|i| (n, i.clone())))
        else {
            return Err(Error::new(ErrorKind::NotAnImage));
        };
        if let Some(c) = containers.containers().iter().find(|c| c.image == image.id) {
            return Err(Error::new(ErrorKind::ImageUsedByContainer)
                .context(format!("image used by {}", c.id)));
        }
        let mut remove: Vec<String> = image.mapped_layers.clone();
        let others: HashSet<String> = stores[home]
            .images()
            .iter()
            .filter(|i| i.id != image.id)
            .flat_map(|i| std::iter::once(i.layer.clone()).chain(i.mapped_layers.iter().cloned()))
            .collect();
        let container_layers: HashSet<String> = containers
            .containers()
            .iter()
            .map(|c| c.layer.clone())
            .collect();
        let mut removing: BTreeSet<String> = remove.iter().cloned().collect();
        let mut next = image.layer.clone();
        while !next.is_empty() {
            let Some(layer) = l.lookup(&next).cloned() else {
                break;
            };
            if container_layers.contains(&layer.id) || others.contains(&layer.id) {
                break;
            }
            let mut parents_of_children: Vec<String> = vec![layer.id.clone()];
            if layer.id == image.layer {
                parents_of_children.extend(image.mapped_layers.iter().cloned());
            }
            let has_other_child = parents_of_children.iter().any(|p| {
                l.children(p)
                    .iter()
                    .any(|c| !removing.contains(&c.id) && c.id != layer.id)
            });
            if has_other_child {
                break;
            }
            removing.insert(layer.id.clone());
            remove.push(layer.id.clone());
            next = layer.parent.clone();
        }
        if commit {
            stores[home].delete(&image.id)?;
            drop(stores);
            drop(containers);
            for id in &remove {
                if l.lookup(id).is_some() {
                    l.delete_unchecked(id)?;
                }
            }
        }
        Ok(remove)
    }

    /// Every container record.
    pub fn containers_list(&self) -> Result<Vec<Container>> {
        Ok(self.containers.read()?.containers().to_vec())
    }

    /// The container named by `key`.
    pub fn container(&self, key: &str) -> Result<Container> {
        self.containers
            .read()?
            .lookup_container(key)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::ContainerUnknown))
    }

    /// Go's `CreateContainer`: a read-write layer, then the record.
    ///
    /// The layer's parent is the image's top layer or the copy of it that fits the
    /// container's maps: the first of the top layer and the image's `mapped-layers` whose maps
    /// equal the container's (a map-less one fits any maps the driver can shift at mount
    /// time); else, for an image in a read-write store, a new copy with those maps (same
    /// parent as the top layer, re-owned content, read-only, recorded in `mapped-layers`) —
    /// so a container *without* maps on an image whose top layer has maps gets the map-less
    /// copy. For an image in a read-only store the container layer itself is re-owned.
    ///
    /// The record keeps the requested maps (`host_*` → none), or the maps allocated for an
    /// automatic user namespace (`auto_userns`): the lowest free host IDs among the
    /// subordinate IDs of the configured user that no container record (ours or Go's) uses.
    /// `userns.lock` is held whenever maps or an automatic namespace are requested.
    pub fn create_container(&self, opts: &ContainerOptions) -> Result<Container> {
        let mut uid_map = if opts.host_uid_mapping {
            Vec::new()
        } else {
            opts.uid_map.clone()
        };
        let mut gid_map = if opts.host_gid_mapping {
            Vec::new()
        } else {
            opts.gid_map.clone()
        };
        let _userns = if opts.auto_userns || !uid_map.is_empty() || !gid_map.is_empty() {
            Some(
                self.userns_lock()
                    .lock()
                    .map_err(|e| Error::wrap(ErrorKind::Io, e))?,
            )
        } else {
            None
        };
        if let Some(id) = opts.id.as_deref().filter(|i| !i.is_empty())
            && self.containers.read()?.lookup_container(id).is_some()
        {
            return Err(Error::new(ErrorKind::DuplicateId));
        }
        let rw = self.layer_store()?;
        let ro_stores = self.read_only_layer_stores()?;
        let mut w = rw.write()?;
        let ro = ro_stores
            .iter()
            .map(|s| s.read())
            .collect::<Result<Vec<_>>>()?;
        let image = match opts.image.as_str() {
            "" => None,
            key => Some(self.image_and_home(key)?),
        };
        if opts.auto_userns {
            (uid_map, gid_map) = self.auto_userns_maps(
                &mut w,
                &ro,
                image.as_ref().map(|(i, _)| i),
                &opts.auto_userns_opts,
            )?;
        }
        let parent = match &image {
            Some((i, home)) if !i.layer.is_empty() => {
                let want = Wanted {
                    host_uid: opts.host_uid_mapping,
                    host_gid: opts.host_gid_mapping,
                    uid: uid_map.clone(),
                    gid: gid_map.clone(),
                };
                Some(Self::image_top_layer_for_mapping(
                    &mut w, &ro, i, *home, &want,
                )?)
            }
            _ => None,
        };
        drop(ro);
        let volatile = opts.volatile || self.is_transient();
        // Maps not given are the parent's (or the store's defaults without one).
        let (layer, _) = w.create_with_parent(
            parent.as_ref(),
            &CreateLayerOptions {
                writeable: true,
                volatile,
                uid_map: uid_map.clone(),
                gid_map: gid_map.clone(),
                host_uid_mapping: opts.host_uid_mapping,
                host_gid_mapping: opts.host_gid_mapping,
                ..CreateLayerOptions::default()
            },
            None,
        )?;
        let result = self.containers.write().and_then(|mut c| {
            c.create(NewContainer {
                id: opts.id.clone().filter(|i| !i.is_empty()),
                names: opts.names.clone(),
                image: image.map(|(i, _)| i.id).unwrap_or_default(),
                layer: layer.id.clone(),
                metadata: opts.metadata.clone(),
                uid_map,
                gid_map,
                volatile,
                ..NewContainer::default()
            })
        });
        if result.is_err() {
            let _ = w.delete_unchecked(&layer.id);
        }
        result
    }

    /// Go's `DeleteContainer`: the container's layer, data and userdata dirs, then the record.
    pub fn delete_container(&self, key: &str) -> Result<()> {
        let layers = self.layer_store()?;
        let mut l = layers.write()?;
        let mut images = Vec::new();
        for store in self.rw_images() {
            images.push(store.write()?);
        }
        let mut containers = self.containers.write()?;
        let Some(c) = containers.lookup_container(key).cloned() else {
            return Err(Error::new(ErrorKind::NotAContainer));
        };
        if l.lookup(&c.layer).is_some() {
            l.delete_unchecked(&c.layer)?;
        }
        for dir in [
            self.containers.dir().join(&c.id),
            self.containers.run_dir().join(&c.id),
        ] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &dir, e)),
            }
        }
        containers.delete(&c.id)
    }

    /// Go's `Delete`: no safety checks. A container (layer, dirs, record), else an image
    /// (record and data only), else a layer.
    pub fn delete_any(&self, key: &str) -> Result<()> {
        if self.containers.read()?.lookup_container(key).is_some() {
            let c = self.container(key)?;
            let layers = self.layer_store()?;
            if layers.write()?.lookup(&c.layer).is_none() {
                return Err(Error::new(ErrorKind::NotALayer));
            }
            return self.delete_container(key);
        }
        for store in self.rw_images() {
            let mut images = store.write()?;
            if let Some(i) = images.lookup_image(key).cloned() {
                return images.delete(&i.id);
            }
        }
        let layers = self.layer_store()?;
        let mut l = layers.write()?;
        if let Some(layer) = l.lookup(key).cloned() {
            return l.delete_unchecked(&layer.id);
        }
        Err(Error::new(ErrorKind::LayerUnknown))
    }

    /// Runs `f` with the container store's read view and the container's full ID.
    fn with_container<T>(
        &self,
        key: &str,
        f: impl FnOnce(&storage_containers::ContainerSet, &str) -> Result<T>,
    ) -> Result<T> {
        let r = self.containers.read()?;
        let Some(c) = r.lookup_container(key) else {
            return Err(Error::new(ErrorKind::ContainerUnknown));
        };
        let id = c.id.clone();
        f(&r, &id)
    }

    /// The data item names of a container.
    pub fn container_big_data_names(&self, key: &str) -> Result<Vec<String>> {
        self.with_container(key, |s, id| s.big_data_names(id))
    }

    /// The bytes of a container data item.
    pub fn container_big_data(&self, key: &str, item: &str) -> Result<Vec<u8>> {
        self.with_container(key, |s, id| s.big_data(id, item))
    }

    /// The size of a container data item (recorded on first computation, like Go).
    pub fn container_big_data_size(&self, key: &str, item: &str) -> Result<i64> {
        let mut w = self.containers.write()?;
        let Some(c) = w.lookup_container(key).cloned() else {
            return Err(Error::new(ErrorKind::ContainerUnknown));
        };
        w.big_data_size(&c.id, item)
    }

    /// The digest of a container data item (recorded on first computation, like Go).
    pub fn container_big_data_digest(&self, key: &str, item: &str) -> Result<Digest> {
        let mut w = self.containers.write()?;
        let Some(c) = w.lookup_container(key).cloned() else {
            return Err(Error::new(ErrorKind::ContainerUnknown));
        };
        w.big_data_digest(&c.id, item)
    }

    /// Stores a container data item.
    pub fn set_container_big_data(&self, key: &str, item: &str, data: &[u8]) -> Result<()> {
        let mut w = self.containers.write()?;
        let Some(c) = w.lookup_container(key).cloned() else {
            return Err(Error::new(ErrorKind::ContainerUnknown));
        };
        w.set_big_data(&c.id, item, data)
    }

    /// `<G>/<drv>-containers/<id>/userdata`, created on demand.
    pub fn container_dir(&self, key: &str) -> Result<PathBuf> {
        self.with_container(key, |s, id| s.container_dir(id))
    }

    /// `<R>/<drv>-containers/<id>/userdata`, created on demand.
    pub fn container_run_dir(&self, key: &str) -> Result<PathBuf> {
        self.with_container(key, |s, id| s.container_run_dir(id))
    }

    /// `<IS or G>/<drv>-images/<key>/userdata`, created on demand (1.60 uses `key` verbatim).
    pub fn image_dir(&self, key: &str) -> Result<PathBuf> {
        self.images.image_dir(key)
    }

    /// `<R>/<drv>-images/<key>/userdata`, created on demand (1.60 uses `key` verbatim).
    pub fn image_run_dir(&self, key: &str) -> Result<PathBuf> {
        self.images.image_run_dir(key)
    }

    /// Go's `ContainerSize`: layer diff size + data item sizes + bytes under the userdata
    /// directories.
    pub fn container_size(&self, key: &str) -> Result<i64> {
        let c = self.container(key)?;
        let mut size = self.diff_size(None, &c.layer)?;
        for item in &c.big_data_names {
            size += self.container_big_data_size(&c.id, item)?;
        }
        for dir in [
            self.containers.dir().join(&c.id),
            self.containers.run_dir().join(&c.id),
        ] {
            size += dir_size(&dir.join("userdata"));
        }
        Ok(size)
    }

    /// Go's `ContainerParentOwners`.
    pub fn container_parent_owners(&self, key: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let c = self.container(key)?;
        self.layer_parent_owners(&c.layer)
    }
}

fn dir_size(path: &std::path::Path) -> i64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    let mut total = 0i64;
    for e in entries.flatten() {
        let Ok(md) = e.path().symlink_metadata() else {
            continue;
        };
        if md.is_dir() {
            total += dir_size(&e.path());
        } else {
            total += i64::try_from(md.len()).unwrap_or(0);
        }
    }
    total
}
