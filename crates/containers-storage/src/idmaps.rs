//! Layers with the ID maps a container or a read-only image mount needs (Go's
//! `imageTopLayerForMapping`, `MountImage`, `UnmountImage`).
//!
//! A container's layer sits on its image's top layer *or on a copy of it* whose content is
//! owned the way the container's maps say: the image's `mapped-layers` list such copies
//! (made once, reused by every later container with the same maps). A container without maps
//! on an image whose top layer has maps gets the map-less ("canonical") copy, which is also
//! what `MountImage` mounts. A driver that shifts IDs at mount time (overlay with idmapped
//! mounts) needs no copies: a map-less layer fits every request.

use std::path::PathBuf;

use storage_drivers::MountOpts;
use storage_images::ImageStore;
use storage_layers::{CreateLayerOptions, LayersRead, LayersWrite};
use storage_types::{Error, ErrorKind, IdMap, Image, Layer, Result, go_quote};

use crate::Store;

/// The maps wanted for a layer made from an image's top layer (Go's `IDMappingOptions`
/// without the automatic part): `host_*` asks for no map of that kind; otherwise the map
/// given (empty: none).
#[derive(Debug, Clone, Default)]
pub(crate) struct Wanted {
    pub host_uid: bool,
    pub host_gid: bool,
    pub uid: Vec<IdMap>,
    pub gid: Vec<IdMap>,
}

impl Wanted {
    /// No maps at all (Go's `HostUIDMapping` + `HostGIDMapping`).
    fn canonical() -> Wanted {
        Wanted {
            host_uid: true,
            host_gid: true,
            ..Wanted::default()
        }
    }

    /// Go's `layerMatchesMappingOptions`.
    fn fits(&self, shift: bool, l: &Layer) -> bool {
        if shift && l.uidmap.is_empty() && l.gidmap.is_empty() {
            return true;
        }
        if (self.host_uid && !l.uidmap.is_empty()) || (self.host_gid && !l.gidmap.is_empty()) {
            return false;
        }
        l.uidmap == self.uid && l.gidmap == self.gid
    }
}

/// `key` in the primary layer store, then in the read-only ones.
fn find_layer(w: &LayersWrite<'_>, ro: &[LayersRead<'_>], key: &str) -> Option<Layer> {
    std::iter::once(w.lookup(key))
        .chain(ro.iter().map(|r| r.lookup(key)))
        .flatten()
        .next()
        .cloned()
}

impl Store {
    /// The image named by `key` (read-write image stores first, then the read-only ones,
    /// without shadowing) and the read-write store holding it (`None`: a read-only store).
    pub(crate) fn image_and_home(&self, key: &str) -> Result<(Image, Option<&ImageStore>)> {
        for store in self.rw_images() {
            if let Some(i) = store.read()?.lookup_image(key) {
                return Ok((i.clone(), Some(store)));
            }
        }
        for store in &self.ro_images {
            if let Some(i) = store.read()?.lookup_image(key) {
                return Ok((i.clone(), None));
            }
        }
        Err(Error::new(ErrorKind::ImageUnknown)
            .context(format!("locating image with ID {}", go_quote(key))))
    }

    /// Go's `imageTopLayerForMapping`: the first of the image's top layer and its
    /// `mapped-layers` (looked up in the primary, then each read-only layer store; a candidate
    /// whose parent is in no store is skipped) that fits `want` — equal maps, or no maps when
    /// the driver can shift `want` at mount time. Without one, an image of a read-write store
    /// whose first candidate is in the primary layer store gets a new read-only copy of that
    /// candidate with the wanted maps (none if the driver shifts), same parent, added to its
    /// `mapped-layers`; otherwise the first candidate is returned as is.
    pub(crate) fn image_top_layer_for_mapping(
        w: &mut LayersWrite<'_>,
        ro: &[LayersRead<'_>],
        image: &Image,
        home: Option<&ImageStore>,
        want: &Wanted,
    ) -> Result<Layer> {
        let shift = w.can_use_shifting(&want.uid, &want.gid);
        let candidates: Vec<&String> = std::iter::once(&image.layer)
            .chain(image.mapped_layers.iter())
            .collect();
        let mut first: Option<(Layer, Option<Layer>, bool)> = None;
        for store in 0..=ro.len() {
            for c in &candidates {
                let found = match store {
                    0 => w.lookup(c),
                    n => ro[n - 1].lookup(c),
                };
                let Some(layer) = found.cloned() else {
                    continue;
                };
                let parent = if layer.parent.is_empty() {
                    None
                } else {
                    match find_layer(w, ro, &layer.parent) {
                        Some(p) => Some(p),
                        None => continue,
                    }
                };
                if want.fits(shift, &layer) {
                    return Ok(layer);
                }
                if first.is_none() {
                    first = Some((layer, parent, store == 0));
                }
            }
        }
        let Some((top, parent, in_primary)) = first else {
            return Err(Error::new(ErrorKind::LayerUnknown));
        };
        let Some(home) = home.filter(|_| in_primary) else {
            return Ok(top);
        };
        let opts = if shift {
            Wanted::canonical()
        } else {
            want.clone()
        };
        let (copy, _) = w
            .create_with_parent(
                parent.as_ref(),
                &CreateLayerOptions {
                    template: Some(top.id.clone()),
                    mount_label: top.mount_label.clone(),
                    // The maps as given: an empty one means none, not the parent's.
                    host_uid_mapping: opts.host_uid || opts.uid.is_empty(),
                    host_gid_mapping: opts.host_gid || opts.gid.is_empty(),
                    uid_map: opts.uid,
                    gid_map: opts.gid,
                    ..CreateLayerOptions::default()
                },
                None,
            )
            .map_err(|e| {
                e.context(format!(
                    "creating an ID-mapped copy of layer {}",
                    go_quote(&top.id)
                ))
            })?;
        let added = home
            .write()
            .and_then(|mut images| images.add_mapped_layer(&image.id, &copy.id));
        if let Err(e) = added {
            let e = match w.delete_unchecked(&copy.id) {
                Ok(()) => e,
                Err(e2) => e.context(format!("deleting layer {}: {e2}", go_quote(&copy.id))),
            };
            return Err(e.context(format!(
                "registering ID-mapped layer with image {}",
                go_quote(&image.id)
            )));
        }
        Ok(copy)
    }

    /// Go's `MountImage` (1.58+): mounts, read-only, the image's first map-less layer among
    /// its top layer and `mapped-layers`, making that canonical copy first when the top layer
    /// has maps (see [`Store::create_container`] for how copies are made and reused). Only
    /// `ro` may be given as an option. An image that would need a copy but lives in a
    /// read-only store fails with `cannot create an image with canonical UID/GID mappings in
    /// a read-only store`.
    pub fn mount_image(&self, key: &str, opts: &MountOpts) -> Result<PathBuf> {
        if opts.options.iter().any(|o| o == "rw") {
            return Err(Error::msg(
                ErrorKind::InvalidInput,
                "must mount images read-only",
            ));
        }
        let g = self.graph()?;
        let rw = g.state.layers.clone();
        let ro_stores = g.state.ro_layers.clone();
        let mut w = rw.write()?;
        let ro = ro_stores
            .iter()
            .map(|s| s.read())
            .collect::<Result<Vec<_>>>()?;
        let (image, home) = self.image_and_home(key)?;
        let layer =
            Self::image_top_layer_for_mapping(&mut w, &ro, &image, home, &Wanted::canonical())?;
        if !layer.uidmap.is_empty() || !layer.gidmap.is_empty() {
            return Err(Error::msg(
                ErrorKind::StoreIsReadOnly,
                "cannot create an image with canonical UID/GID mappings in a read-only store",
            ));
        }
        drop(ro);
        let mut o = opts.clone();
        o.uid_map.clear();
        o.gid_map.clear();
        if !o.options.iter().any(|x| x == "ro") {
            o.options.push("ro".into());
        }
        if w.lookup(&layer.id).is_none() {
            return Err(Error::new(ErrorKind::LayerUnknown));
        }
        w.mount(&layer.id, &o)
    }

    /// Go's `UnmountImage`: unmounts the first map-less layer of the image's `mapped-layers`
    /// (the one [`Store::mount_image`] mounted), else its top layer. Returns whether it is
    /// still mounted.
    pub fn unmount_image(&self, key: &str, force: bool) -> Result<bool> {
        let Some(image) = self.image_record(key)? else {
            return Err(Error::new(ErrorKind::ImageUnknown)
                .context(format!("locating image with ID {}", go_quote(key))));
        };
        let g = self.graph()?;
        let rw = g.state.layers.clone();
        let mut w = rw.write()?;
        let canonical = image
            .mapped_layers
            .iter()
            .filter_map(|id| w.lookup(id))
            .find(|l| l.uidmap.is_empty() && l.gidmap.is_empty())
            .map(|l| l.id.clone());
        w.unmount(canonical.as_deref().unwrap_or(&image.layer), force)
    }
}
