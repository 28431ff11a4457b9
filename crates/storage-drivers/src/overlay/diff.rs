//! The overlay driver's diff side (Go's `Diff`, `Changes`, `ApplyDiff`, `DiffSize` and
//! the tar-split file getter): read natively from the upper dir when exact, else Go's
//! naive mount-and-compare path.

use std::io::{Read, Write};

use storage_types::{Error, Result};

use super::{Overlay, native};
use crate::{ApplyDiffOpts, Change, LayerMaps, MountOpts};

impl Overlay {
    /// Go's `Diff` with both sides read through the layer's `maps`.
    pub(super) fn diff_layer(
        &self,
        (id, parent): (&str, Option<&str>),
        maps: LayerMaps<'_>,
        out: &mut dyn Write,
    ) -> Result<()> {
        let (uid_map, gid_map) = (maps.uid, maps.gid);
        if self.use_naive_diff() || !self.is_parent(id, parent) {
            return self.naive_mounts(id, parent, |layer, parent| {
                crate::naive::diff(layer, parent, uid_map, gid_map, out)
            });
        }
        let (dir, _) = self.dir(id);
        let lowers = self.lower_diffs(id)?;
        native::diff(
            &dir.join("diff"),
            &lowers,
            uid_map,
            gid_map,
            self.opaque_xattr(),
            out,
        )
        .map_err(Error::from)
    }

    pub(super) fn changes_layer(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>> {
        if self.use_naive_diff() || !self.is_parent(id, parent) {
            return self.naive_mounts(id, parent, crate::naive::changes);
        }
        let (dir, _) = self.dir(id);
        let lowers = self.lower_diffs(id)?;
        let diff = dir.join("diff");
        native::changes(&diff, &lowers, self.opaque_xattr())
            .map_err(|e| Error::io("walk", &diff, e))
    }

    /// Go's `ApplyDiff`: natively into `diff/` when `parent` is the real parent, else
    /// through a mount.
    pub(super) fn apply_layer_diff(
        &self,
        (id, parent): (&str, Option<&str>),
        diff: &mut dyn Read,
        mut opts: ApplyDiffOpts,
    ) -> Result<i64> {
        if self.cfg.ignore_chown_errors {
            opts.ignore_chown_errors = true;
        }
        if opts.force_mask.is_none() {
            opts.force_mask = self.cfg.force_mask;
        }
        if !self.is_parent(id, parent) {
            let layer = self.mount_layer(id, &MountOpts::default())?;
            let r = crate::naive::apply_diff(&layer, diff, &opts);
            let _ = self.unmount_layer(id);
            return r;
        }
        let (dir, _) = self.dir(id);
        self.unpack_native(&dir.join("diff"), diff, &opts)
    }

    pub(super) fn diff_size_layer(&self, id: &str, parent: Option<&str>) -> Result<i64> {
        if self.use_naive_diff() || !self.is_parent(id, parent) {
            return self.naive_mounts(id, parent, crate::naive::diff_size);
        }
        let (dir, _) = self.dir(id);
        Ok(native::dir_size(&dir.join("diff")))
    }

    pub(super) fn layer_file_getter(
        &self,
        id: &str,
    ) -> Result<Box<dyn storage_tarsplit::FileGetter + '_>> {
        let (dir, _) = self.dir(id);
        let mut dirs = vec![dir.join("diff")];
        dirs.extend(self.lower_diffs(id)?);
        Ok(Box::new(native::LayeredFileGetter::new(dirs)))
    }
}
