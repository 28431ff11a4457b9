//! Staged overlay layers (Go 1.60's `ApplyDiffWithDiffer` /
//! `ApplyDiffFromStagingDirectory` / `CleanupStagingDirectory` layout): the future `diff/`
//! of a layer is filled in `<home>/staging/<x>/dir` (with `staging.lock` held) and renamed
//! into `<id>/diff` when the layer is committed. Ordinary tar applies use the same layout
//! under `<home>/tempdirs/staging/`, out of reach of podman 4.x's shutdown, which removes
//! `<home>/staging` whole.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use storage_types::{Error, ErrorKind, Result};

use super::layout::parse_override;
use super::{LINK_DIR, OVERRIDE_XATTR, Overlay};
use crate::common::{TEMP_DIRS, chown, invalid, mkdir_mode, root_pair};
use crate::staging::{self, CommitTarget, StageBase, StagingArea};
use crate::{ApplyDiffOpts, ApplyStaging, StageOpts};

impl Overlay {
    /// The roots holding staging directories: the home and the split image store (Go
    /// 1.60's `staging/`, used by the differ), and their `tempdirs/` (ordinary applies).
    pub(super) fn staging_roots(&self) -> Vec<PathBuf> {
        let mut roots = vec![self.home.clone()];
        roots.extend(self.image_store.clone());
        let tmp: Vec<PathBuf> = roots.iter().map(|r| r.join(TEMP_DIRS)).collect();
        roots.extend(tmp);
        roots
    }

    /// Owner and mode of a layer's `diff`, with `user.containers.override_stat` (the
    /// real ones under a forced mask) when present.
    fn diff_owner_and_mode(&self, diff: &Path) -> Result<((u32, u32), u32)> {
        let (mut ids, mut mode) = staging::owner_and_mode(diff).map_err(|e| {
            if std::fs::symlink_metadata(diff).is_err() {
                Error::msg(ErrorKind::LayerUnknown, e.message())
            } else {
                e
            }
        })?;
        if let Some(v) = storage_archive::xattr::get(diff, OVERRIDE_XATTR)
            && let Some((u, g, m)) = parse_override(&v)
        {
            ids = (u, g);
            mode = m;
        }
        Ok((ids, mode))
    }

    pub(super) fn stage_layer(&self, base: StageBase<'_>, opts: &StageOpts) -> Result<StagingArea> {
        let root = match (&self.image_store, opts.read_only) {
            (Some(is), true) => is.clone(),
            _ => self.home.clone(),
        };
        let (ids, st_mode, differ) = match base {
            StageBase::NewLayer { parent: None } => {
                (root_pair(&opts.uid_map, &opts.gid_map)?, 0o555, false)
            }
            StageBase::NewLayer { parent: Some(p) } => {
                let (pdir, _) = self.dir(p);
                let (ids, mode) = self.diff_owner_and_mode(&pdir.join("diff"))?;
                (ids, mode, false)
            }
            StageBase::EmptyLike(id) => {
                let (dir, _) = self.dir(id);
                let (ids, mode) = self.diff_owner_and_mode(&dir.join("diff"))?;
                (ids, mode, false)
            }
            StageBase::Differ => (root_pair(&opts.uid_map, &opts.gid_map)?, 0o555, true),
            StageBase::CopyOf(_) => {
                return Err(invalid(
                    "overlay layers hold only their own changes: nothing to copy",
                ));
            }
        };
        // Ordinary applies stage under `tempdirs/`: podman 4.x (containers/storage before
        // staging locks) removes the whole `<home>/staging` when it shuts down, live areas
        // included, and shares the store with us; Go 1.60's own clean-up of `tempdirs`
        // only touches its `temp-dir-*`/`lock-*` pairs. The differ keeps Go 1.60's layout.
        let root = if differ { root } else { root.join(TEMP_DIRS) };
        let mut area = StagingArea::create(&root, "overlay")?;
        area.differ = differ;
        let content = area.content();
        let mode = self.cfg.force_mask.unwrap_or(st_mode);
        mkdir_mode(&content, mode)?;
        chown(&content, ids)?;
        // chown may clear setuid/setgid bits: restore the mode.
        std::fs::set_permissions(&content, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("chmod", &content, e))?;
        if self.cfg.force_mask.is_some() && !differ {
            let v = format!("{}:{}:{:04o}:dir", ids.0, ids.1, st_mode);
            rustix::fs::lsetxattr(
                &content,
                OVERRIDE_XATTR,
                v.as_bytes(),
                rustix::fs::XattrFlags::empty(),
            )
            .map_err(|e| Error::io("lsetxattr", &content, e.into()))?;
        }
        Ok(area)
    }

    /// The extraction options of a native apply (Go's overlay `ApplyDiff` without a mount).
    pub(super) fn native_unpack_options(
        &self,
        opts: &ApplyDiffOpts,
    ) -> storage_archive::UnpackOptions {
        let whiteout = if self.mount_program.is_some() {
            storage_archive::WhiteoutFormat::Aufs
        } else {
            storage_archive::WhiteoutFormat::Overlay {
                opaque_xattr: self.opaque_xattr(),
            }
        };
        storage_archive::UnpackOptions {
            uid_map: opts.uid_map.clone(),
            gid_map: opts.gid_map.clone(),
            ignore_chown_errors: opts.ignore_chown_errors || self.cfg.ignore_chown_errors,
            whiteout,
            force_mask: opts.force_mask.or(self.cfg.force_mask),
            in_user_ns: self.rootless,
        }
    }

    /// Extracts `diff` natively into `target` (an upper dir); returns Go's `directory.Size`
    /// of it.
    pub(super) fn unpack_native(
        &self,
        target: &Path,
        diff: &mut dyn std::io::Read,
        opts: &ApplyDiffOpts,
    ) -> Result<i64> {
        let unpack = self.native_unpack_options(opts);
        let unpacked = storage_archive::unpack_sized(diff, target, &unpack).map_err(Error::from)?;
        // Go walks `diff/` (`directory.Size`); the size counted while extracting is the
        // same whenever it is known, and saves that walk of every new file.
        Ok(unpacked
            .tree_size
            .unwrap_or_else(|| super::native::dir_size(target)))
    }

    /// Go's `ApplyDiffFromStagingDirectory` rule for a differ's content: without a forced
    /// mask or a mode from the differ, the root gets the parent's `diff` mode.
    fn differ_root_mode(
        &self,
        content: &Path,
        parent: Option<&str>,
        root_mode: Option<u32>,
    ) -> Result<()> {
        let mode = match (root_mode, parent, self.cfg.force_mask) {
            (Some(m), _, None) => Some(m),
            (None, Some(p), None) => {
                let (pdir, _) = self.dir(p);
                let pdiff = pdir.join("diff");
                std::fs::metadata(&pdiff).ok().map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.mode() & 0o7777
                })
            }
            _ => None,
        };
        if let Some(mode) = mode {
            std::fs::set_permissions(content, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("chmod", content, e))?;
        }
        Ok(())
    }

    pub(super) fn commit_layer(&self, area: &StagingArea, target: CommitTarget<'_>) -> Result<()> {
        staging::check_driver(area, "overlay")?;
        let content = area.content();
        match target {
            CommitTarget::New {
                id,
                parent,
                opts,
                writeable,
            } => {
                if !opts.storage_opt.is_empty() {
                    return Err(invalid(
                        "overlay: storage options of a staged layer are not supported",
                    ));
                }
                self.create_layer(id, parent, opts, writeable)?;
                let r = (|| {
                    let (dir, _) = self.dir(id);
                    if area.differ {
                        self.differ_root_mode(&content, parent, None)?;
                    }
                    // `diff` was just created empty: rename(2) replaces an empty directory.
                    staging::rename(&content, &dir.join("diff"))?;
                    self.sync_layer_dirs(&dir)
                })();
                if r.is_err() {
                    let _ = self.remove_layer(id);
                }
                r
            }
            CommitTarget::Replace {
                id,
                parent,
                root_mode,
            } => {
                let (dir, in_store) = self.dir(id);
                if in_store {
                    return Err(Error::msg(
                        ErrorKind::StoreIsReadOnly,
                        format!("layer {id} is in a read-only image store"),
                    ));
                }
                let diff = dir.join("diff");
                if area.differ {
                    // Go: the old content is replaced, not merged.
                    self.differ_root_mode(&content, parent, root_mode)?;
                    staging::replace(&content, &diff, &area.scratch("old"))?;
                } else if !staging::is_empty_dir(&diff) {
                    return Err(Error::msg(
                        ErrorKind::InvalidInput,
                        format!("layer {id} got content while a diff was staged for it"),
                    ));
                } else {
                    // rename(2) replaces an empty directory in one step.
                    staging::rename(&content, &diff)?;
                }
                staging::sync_dir(&dir)
            }
        }
    }

    /// Makes a new layer's files and directory entries durable: `link`, `lower`, the
    /// layer directory, its `l/` link and the home's entry for it.
    fn sync_layer_dirs(&self, dir: &Path) -> Result<()> {
        for name in ["link", "lower"] {
            let p = dir.join(name);
            if let Ok(f) = std::fs::File::open(&p) {
                f.sync_all().map_err(|e| Error::io("fsync", &p, e))?;
            }
        }
        staging::sync_dir(dir)?;
        if let Some(home) = dir.parent() {
            staging::sync_dir(&home.join(LINK_DIR))?;
            staging::sync_dir(home)?;
        }
        Ok(())
    }

    pub(super) fn apply_staging_for(&self, id: &str) -> Option<ApplyStaging> {
        let (dir, in_store) = self.dir(id);
        (!in_store && staging::is_empty_dir(&dir.join("diff")) && !dir.join("diff1").exists())
            .then_some(ApplyStaging::Empty)
    }

    /// Removes abandoned staging directories; with `all` (shutdown) also the empty ones
    /// committed partial pulls leave. Returns whether one held by a live process remains.
    pub(super) fn recover_staging_dirs(&self, all: bool) -> Result<bool> {
        let mut held = false;
        for root in self.staging_roots() {
            held |= staging::recover(&root, all, &staging::remove_plain)?;
        }
        Ok(held)
    }
}
