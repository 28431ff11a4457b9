//! The ID guard every driver sits behind: layer IDs become path components under
//! the driver's home (`dir/<id>`, `<id>/diff`, `subvolumes/<id>`), so an ID must be a
//! single, ordinary path component. Go does not check this (an ID of `..` or `../x`
//! reaches outside the home there); we refuse such IDs before any driver code runs.
//!
//! This is the only check of IDs given to a driver: [`open_driver`](crate::open_driver)
//! hands out every driver wrapped in [`Guarded`], and the driver types are private to
//! the crate, so the drivers themselves take their `id` and `parent` arguments as
//! checked. (Names read from disk, such as the `l/` links of overlay's `lower` files,
//! are checked where they are read.)

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use storage_types::{Error, ErrorKind, IdMap, Result};

use crate::staging::{CommitTarget, StageBase, StagingArea};
use crate::{
    ApplyDiffOpts, ApplyStaging, Change, CreateOpts, Driver, LayerMaps, MountOpts, StageOpts,
};

/// Fails with [`ErrorKind::InvalidInput`] unless `id` is one non-empty path component
/// other than `.` and `..` (no `/`, no NUL).
pub(crate) fn check_layer_id(id: &str) -> Result<()> {
    if !storage_types::is_path_component(id) {
        return Err(Error::msg(
            ErrorKind::InvalidInput,
            format!("invalid layer ID {}", storage_types::go_quote(id)),
        ));
    }
    Ok(())
}

fn check_pair(id: &str, parent: Option<&str>) -> Result<()> {
    check_layer_id(id)?;
    parent.map_or(Ok(()), check_layer_id)
}

/// A driver whose every ID argument (layer and parent) is checked by
/// [`check_layer_id`] before the call reaches it. Every trait method is forwarded,
/// including the provided ones, so the inner driver's overrides keep applying.
pub(crate) struct Guarded<D>(pub(crate) D);

impl<D: Driver> Driver for Guarded<D> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        check_pair(id, parent)?;
        self.0.create(id, parent, opts)
    }

    fn create_read_write(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        check_pair(id, parent)?;
        self.0.create_read_write(id, parent, opts)
    }

    fn remove(&self, id: &str) -> Result<()> {
        check_layer_id(id)?;
        self.0.remove(id)
    }

    fn get(&self, id: &str, opts: &MountOpts) -> Result<PathBuf> {
        check_layer_id(id)?;
        self.0.get(id, opts)
    }

    fn put(&self, id: &str) -> Result<()> {
        check_layer_id(id)?;
        self.0.put(id)
    }

    fn exists(&self, id: &str) -> bool {
        check_layer_id(id).is_ok() && self.0.exists(id)
    }

    fn list_layers(&self) -> Result<Vec<String>> {
        self.0.list_layers()
    }

    fn status(&self) -> Vec<(String, String)> {
        self.0.status()
    }

    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>> {
        check_layer_id(id)?;
        self.0.metadata(id)
    }

    fn cleanup(&self) -> Result<()> {
        self.0.cleanup()
    }

    fn diff(
        &self,
        id: &str,
        parent: Option<&str>,
        uid_map: &[IdMap],
        gid_map: &[IdMap],
        out: &mut dyn Write,
    ) -> Result<()> {
        check_pair(id, parent)?;
        self.0.diff(id, parent, uid_map, gid_map, out)
    }

    fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>> {
        check_pair(id, parent)?;
        self.0.changes(id, parent)
    }

    fn apply_diff(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut dyn Read,
        opts: &ApplyDiffOpts,
    ) -> Result<i64> {
        check_pair(id, parent)?;
        self.0.apply_diff(id, parent, diff, opts)
    }

    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<i64> {
        check_pair(id, parent)?;
        self.0.diff_size(id, parent)
    }

    fn diff_getter(&self, id: &str) -> Result<Box<dyn storage_tarsplit::FileGetter + '_>> {
        check_layer_id(id)?;
        self.0.diff_getter(id)
    }

    fn deferred_remove(&self, id: &str) -> Result<Option<storage_lock::TempDir>> {
        check_layer_id(id)?;
        self.0.deferred_remove(id)
    }

    fn temp_dir_roots(&self) -> Vec<PathBuf> {
        self.0.temp_dir_roots()
    }

    fn dedup_dirs(&self, ids: &[String]) -> Vec<PathBuf> {
        let ids: Vec<String> = ids
            .iter()
            .filter(|id| check_layer_id(id).is_ok())
            .cloned()
            .collect();
        self.0.dedup_dirs(&ids)
    }

    fn supports_shifting(&self, uid_map: &[IdMap], gid_map: &[IdMap]) -> bool {
        self.0.supports_shifting(uid_map, gid_map)
    }

    fn stage(&self, base: StageBase<'_>, opts: &StageOpts) -> Result<StagingArea> {
        match base {
            StageBase::NewLayer { parent } => parent.map_or(Ok(()), check_layer_id)?,
            StageBase::EmptyLike(id) | StageBase::CopyOf(id) => check_layer_id(id)?,
            StageBase::Differ => {}
        }
        self.0.stage(base, opts)
    }

    fn apply_diff_staged(
        &self,
        area: &StagingArea,
        diff: &mut dyn Read,
        opts: &ApplyDiffOpts,
    ) -> Result<i64> {
        self.0.apply_diff_staged(area, diff, opts)
    }

    fn differ_unpack_options(
        &self,
        opts: &ApplyDiffOpts,
    ) -> Result<storage_archive::UnpackOptions> {
        self.0.differ_unpack_options(opts)
    }

    fn commit_staged(&self, area: StagingArea, target: CommitTarget<'_>) -> Result<()> {
        let (id, parent) = match target {
            CommitTarget::New { id, parent, .. } | CommitTarget::Replace { id, parent, .. } => {
                (id, parent)
            }
        };
        if let Err(e) = check_pair(id, parent) {
            let _ = self.0.discard_staged(area);
            return Err(e);
        }
        self.0.commit_staged(area, target)
    }

    fn discard_staged(&self, area: StagingArea) -> Result<()> {
        self.0.discard_staged(area)
    }

    fn stage_for_apply(&self, id: &str, parent: Option<&str>) -> Option<ApplyStaging> {
        check_pair(id, parent).ok()?;
        self.0.stage_for_apply(id, parent)
    }

    fn stages_children_independently(&self) -> bool {
        self.0.stages_children_independently()
    }

    fn recover_staging(&self) -> Result<()> {
        self.0.recover_staging()
    }

    fn update_layer_id_map(
        &self,
        id: &str,
        old_uid: &[IdMap],
        old_gid: &[IdMap],
        new_uid: &[IdMap],
        new_gid: &[IdMap],
    ) -> Result<()> {
        check_layer_id(id)?;
        self.0
            .update_layer_id_map(id, old_uid, old_gid, new_uid, new_gid)
    }

    fn diff_mapped(
        &self,
        id: &str,
        maps: LayerMaps<'_>,
        parent: Option<(&str, LayerMaps<'_>)>,
        out: &mut dyn Write,
    ) -> Result<()> {
        check_pair(id, parent.map(|p| p.0))?;
        self.0.diff_mapped(id, maps, parent, out)
    }

    fn changes_mapped(
        &self,
        id: &str,
        maps: LayerMaps<'_>,
        parent: Option<(&str, LayerMaps<'_>)>,
    ) -> Result<Vec<Change>> {
        check_pair(id, parent.map(|p| p.0))?;
        self.0.changes_mapped(id, maps, parent)
    }

    fn diff_size_mapped(
        &self,
        id: &str,
        maps: LayerMaps<'_>,
        parent: Option<(&str, LayerMaps<'_>)>,
    ) -> Result<i64> {
        check_pair(id, parent.map(|p| p.0))?;
        self.0.diff_size_mapped(id, maps, parent)
    }
}

#[cfg(test)]
mod tests {
    use super::check_layer_id;

    #[test]
    fn single_components_only() {
        for ok in ["base", "a.b", "..a", "0123abcd", "-x"] {
            assert!(check_layer_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "/abs", "x/", "a\0b"] {
            let err = check_layer_id(bad).expect_err(bad);
            assert_eq!(err.kind(), storage_types::ErrorKind::InvalidInput, "{bad}");
            assert!(err.to_string().contains("invalid layer ID"), "{bad}: {err}");
        }
    }
}
