//! Mounting and unmounting layers, with their counts in `mountpoints.json`.

use super::*;

impl LayersWrite<'_> {
    /// Mounts layer `key` through the driver and bumps its count in `mountpoints.json`
    /// (Go's layer-store `Mount`). A layer already mounted at its recorded path only gets its
    /// count bumped; a stale count is incremented, not reset. ID maps in `opts` that differ
    /// from the layer's are shifted by the driver at mount time when it can (see
    /// [`can_use_shifting`](Self::can_use_shifting)); otherwise they fail with `cannot mount
    /// layer <id>: shifting not enabled`.
    pub fn mount(&mut self, key: &str, opts: &MountOpts) -> Result<PathBuf> {
        let mguard = self.lock_mounts()?;
        let i = self.state.index_or_unknown(key)?;
        let e = &self.state.entries[i];
        if e.mount_count > 0
            && let Some(mp) = e.mount_point.clone()
            && storage_drivers::is_mounted(&mp)
        {
            self.state.entries[i].mount_count += 1;
            if let Some(g) = &mguard {
                self.save_mounts(g)?;
            }
            return Ok(mp);
        }
        let layer = &self.state.entries[i].layer;
        let mut o = opts.clone();
        if o.mount_label.is_empty() {
            o.mount_label = layer.mount_label.clone();
        }
        let driver = self.state.ctx.driver.clone();
        if !o.uid_map.is_empty() || !o.gid_map.is_empty() {
            let differ = o.uid_map != layer.uidmap || o.gid_map != layer.gidmap;
            if differ && !driver.supports_shifting(&o.uid_map, &o.gid_map) {
                return Err(Error::msg(
                    ErrorKind::InvalidInput,
                    format!("cannot mount layer {}: shifting not enabled", layer.id),
                ));
            }
            // Go's `DisableShifting`: the driver shifts only what the store may shift. Maps
            // equal to the layer's describe content that is already owned so: shifting it
            // again would map the IDs twice.
            if !differ || !can_use_shifting(driver.as_ref(), &o.uid_map, &o.gid_map) {
                o.uid_map.clear();
                o.gid_map.clear();
            }
        }
        let id = layer.id.clone();
        let path = clean_path(&driver.get(&id, &o)?);
        let e = &mut self.state.entries[i];
        let before = (e.mount_point.clone(), e.mount_count);
        e.mount_point = Some(path.clone());
        e.mount_count += 1;
        if let Some(g) = &mguard
            && let Err(err) = self.save_mounts(g)
        {
            // The count could not be recorded (a full or failing disk): undo the mount, so
            // that a failed mount leaves no mount behind that nothing counts.
            let e = &mut self.state.entries[i];
            (e.mount_point, e.mount_count) = before;
            if e.mount_count == 0 {
                let _ = driver.put(&id);
            }
            return Err(err);
        }
        Ok(path)
    }

    /// Unmounts layer `key` (or the layer mounted at path `key`): with a count above 1 and no
    /// `force` only the count drops; otherwise the driver unmounts. Returns whether the layer
    /// is still mounted (Go's layer-store `Unmount`).
    pub fn unmount(&mut self, key: &str, force: bool) -> Result<bool> {
        self.unmount_impl(key, force, false)
    }

    pub(super) fn unmount_impl(
        &mut self,
        key: &str,
        force: bool,
        conditional: bool,
    ) -> Result<bool> {
        let mguard = self.lock_mounts()?;
        let i = match self.state.lookup_index(key) {
            Some(i) => i,
            None => {
                let p = clean_path(Path::new(key));
                self.state
                    .entries
                    .iter()
                    .position(|e| e.mount_point.as_deref() == Some(p.as_path()))
                    .ok_or_else(|| Error::new(ErrorKind::LayerUnknown))?
            }
        };
        if conditional && self.state.entries[i].mount_count == 0 {
            return Err(Error::new(ErrorKind::LayerNotMounted));
        }
        if force {
            self.state.entries[i].mount_count = 1;
        }
        if self.state.entries[i].mount_count > 1 {
            self.state.entries[i].mount_count -= 1;
            if let Some(g) = &mguard {
                self.save_mounts(g)?;
            }
            return Ok(true);
        }
        let id = self.state.entries[i].layer.id.clone();
        match self.state.ctx.driver.put(&id) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let e = &mut self.state.entries[i];
        if e.mount_count > 0 {
            e.mount_count -= 1;
        }
        e.mount_point = None;
        if let Some(g) = &mguard {
            self.save_mounts(g)?;
        }
        Ok(false)
    }
}
