//! Creating and removing overlay layers (Go's `create`/`Remove`), with quotas, the
//! parent's owner and mode on the new `diff`, the `l/` link and the `lower` file; and
//! re-owning a fresh layer to new ID maps (`UpdateLayerIDMap`), which rotates `diff`
//! into the lowers.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use storage_types::{Error, ErrorKind, Result};

use super::layout::{parse_override, short_id, umask};
use super::{LINK_DIR, OVERRIDE_XATTR, Overlay, quota};
use crate::common::{
    TEMP_DIRS, chown, invalid, mkdir_mode, ram_in_bytes, remove_all, root_pair, stage_removal,
    write_file,
};
use crate::mountinfo::is_mountpoint;
use crate::sys::mount::unmount;
use crate::{CreateOpts, LayerMaps, MountOpts};

impl Overlay {
    pub(super) fn create_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
        read_write: bool,
    ) -> Result<()> {
        let mut quota_req = None;
        if !opts.storage_opt.is_empty() {
            if !read_write {
                if opts.storage_opt.contains_key("size") {
                    return Err(invalid(
                        "--storage-opt size is only supported for ReadWrite Layers",
                    ));
                }
                if opts.storage_opt.contains_key("inodes") {
                    return Err(invalid(
                        "--storage-opt inodes is only supported for ReadWrite Layers",
                    ));
                }
            }
            if self.quota.is_none() {
                return Err(invalid(
                    "--storage-opt is supported only for overlay over xfs with 'pquota' mount option",
                ));
            }
            let mut q = quota::Quota::default();
            for (k, v) in &opts.storage_opt {
                match k.to_lowercase().as_str() {
                    "size" => q.size = ram_in_bytes(v)?,
                    "inodes" => {
                        q.inodes = v.parse().map_err(|_| {
                            invalid(format!("strconv.ParseUint: parsing {v:?}: invalid syntax"))
                        })?
                    }
                    _ => return Err(invalid(format!("Unknown option {k}"))),
                }
            }
            quota_req = Some(q);
        } else if read_write
            && self.quota.is_some()
            && (self.cfg.quota_size.is_some() || self.cfg.quota_inodes.is_some())
        {
            quota_req = Some(quota::Quota {
                size: self.cfg.quota_size.unwrap_or(0),
                inodes: self.cfg.quota_inodes.unwrap_or(0),
            });
        }
        if read_write && self.cfg.force_mask.is_some() && self.mount_program.is_none() {
            return Err(invalid(
                "overlay: force_mask option for writeable layers is only supported with a mount_program",
            ));
        }

        // 1.60: image (read-only) layers go to the split image store when there is one.
        let homedir = match (&self.image_store, read_write) {
            (Some(is), false) => is.clone(),
            _ => self.home.clone(),
        };
        let dir = homedir.join(id);
        let root_ids = root_pair(&opts.uid_map, &opts.gid_map)?;
        let l = homedir.join(LINK_DIR);
        if !l.exists() {
            mkdir_mode(&l, 0o755)?;
        }
        if dir.exists() {
            self.remove_layer(id)?;
        }
        // The parent's diff decides the new diff's mode and owner.
        let (mut st_ids, mut st_mode) = (root_ids, 0o555u32);
        let mut parent_lower = None;
        if let Some(p) = parent {
            let (pdir, _) = self.dir(p);
            let pdiff = pdir.join("diff");
            let md = std::fs::metadata(&pdiff).map_err(|e| {
                let err = Error::io("stat", &pdiff, e);
                Error::msg(ErrorKind::LayerUnknown, err.message())
            })?;
            st_ids = (md.uid(), md.gid());
            st_mode = md.mode() & 0o7777;
            if let Some(v) = storage_archive::xattr::get(&pdiff, OVERRIDE_XATTR)
                && let Some((u, g, m)) = parse_override(&v)
            {
                st_ids = (u, g);
                st_mode = m;
            }
            parent_lower = Some(self.lower_for_child(p)?);
        }
        mkdir_mode(&dir, 0o700).map_err(|e| {
            if std::fs::metadata(&dir).is_ok() {
                Error::msg(ErrorKind::DuplicateId, e.message())
            } else {
                e
            }
        })?;
        let result = (|| -> Result<()> {
            chown(&dir, root_ids)?;
            if let (Some(q), Some(ctl)) = (&quota_req, &self.quota) {
                ctl.set_quota(&dir, q)?;
            }
            let diff = dir.join("diff");
            let mode = self.cfg.force_mask.unwrap_or(st_mode);
            mkdir_mode(&diff, mode)?;
            chown(&diff, st_ids)?;
            // chown may clear setuid/setgid bits: restore the mode.
            std::fs::set_permissions(&diff, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("chmod", &diff, e))?;
            if self.cfg.force_mask.is_some() {
                let v = format!("{}:{}:{:04o}:dir", st_ids.0, st_ids.1, st_mode);
                rustix::fs::lsetxattr(
                    &diff,
                    OVERRIDE_XATTR,
                    v.as_bytes(),
                    rustix::fs::XattrFlags::empty(),
                )
                .map_err(|e| Error::io("lsetxattr", &diff, e.into()))?;
            }
            let short = short_id()?;
            let lp = homedir.join(LINK_DIR).join(&short);
            std::os::unix::fs::symlink(format!("../{id}/diff"), &lp)
                .map_err(|e| Error::io("symlink", &lp, e))?;
            write_file(&dir.join("link"), short.as_bytes(), 0o644)?;
            for sub in ["work", "merged"] {
                let p = dir.join(sub);
                mkdir_mode(&p, 0o700)?;
                chown(&p, root_ids)?;
            }
            match &parent_lower {
                None => {
                    let p = dir.join("empty");
                    mkdir_mode(&p, 0o700)?;
                    chown(&p, root_ids)?;
                }
                Some(lower) if !lower.is_empty() => {
                    write_file(&dir.join("lower"), lower.as_bytes(), 0o666 & !umask())?;
                }
                Some(_) => {}
            }
            Ok(())
        })();
        if result.is_err() {
            if let Ok(link) = std::fs::read_to_string(dir.join("link")) {
                let _ = std::fs::remove_file(homedir.join(LINK_DIR).join(link.trim()));
            }
            let _ = remove_all(&dir);
        }
        result
    }

    /// The home holding layer `id` (the image store when only it has the layer; never the
    /// read-only additional stores), the layer's directory there and its `l/` link.
    fn removal_paths(&self, id: &str) -> (PathBuf, PathBuf, Option<PathBuf>) {
        let homedir = match &self.image_store {
            Some(is) if !self.home.join(id).exists() && is.join(id).exists() => is.clone(),
            _ => self.home.clone(),
        };
        let dir = homedir.join(id);
        let link = std::fs::read_to_string(dir.join("link"))
            .ok()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && !l.contains('/'))
            .map(|l| homedir.join(LINK_DIR).join(l));
        let merged = dir.join("merged");
        if is_mountpoint(&merged) {
            let _ = unmount(&merged);
        }
        (homedir, dir, link)
    }

    pub(super) fn remove_layer(&self, id: &str) -> Result<()> {
        let (_, dir, link) = self.removal_paths(id);
        if let Some(lp) = link {
            match std::fs::remove_file(&lp) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &lp, e)),
            }
        }
        remove_all(&dir)
    }

    /// Go's `DeferredRemove`: the `l/` link, then the layer directory, into a staging
    /// directory of `<home>/tempdirs`.
    pub(super) fn deferred_remove_layer(&self, id: &str) -> Result<Option<storage_lock::TempDir>> {
        let (homedir, dir, link) = self.removal_paths(id);
        if std::fs::symlink_metadata(&dir).is_err() {
            // Nothing to stage; a dangling link goes at once.
            if let Some(lp) = link {
                let _ = std::fs::remove_file(lp);
            }
            return Ok(None);
        }
        let mut paths: Vec<PathBuf> = link.into_iter().collect();
        paths.push(dir);
        stage_removal(&homedir.join(TEMP_DIRS), &paths)
    }

    /// Go's `UpdateLayerIDMap`: re-owns the layer's files from the `old` maps to the
    /// `new` ones through a mount, then rotates `diff` into the lowers (`diff1`, …) and
    /// starts an empty `diff` and `work` owned by the new root.
    pub(super) fn remap_layer(
        &self,
        id: &str,
        old: LayerMaps<'_>,
        new: LayerMaps<'_>,
    ) -> Result<()> {
        let (old_uid, old_gid, new_uid, new_gid) = (old.uid, old.gid, new.uid, new.gid);
        let (dir, _) = self.dir(id);
        let root = root_pair(new_uid, new_gid)?;
        let merged = self.mount_layer(
            id,
            &MountOpts {
                options: self.cfg.mount_options.clone(),
                ..MountOpts::default()
            },
        )?;
        let r = crate::idmap::chown_by_maps(&merged, (old_uid, old_gid), (new_uid, new_gid));
        let u = self.unmount_layer(id);
        r?;
        u?;
        // Rotate diff → diff1 (older uppers become the top lowers) and start afresh.
        let mut n = 1;
        while dir.join(format!("diff{n}")).exists() {
            n += 1;
        }
        for i in (1..n).rev() {
            let from = dir.join(format!("diff{i}"));
            let to = dir.join(format!("diff{}", i + 1));
            std::fs::rename(&from, &to).map_err(|e| Error::io("rename", &from, e))?;
        }
        let diff = dir.join("diff");
        let md = std::fs::metadata(&diff).map_err(|e| Error::io("stat", &diff, e))?;
        std::fs::rename(&diff, dir.join("diff1")).map_err(|e| Error::io("rename", &diff, e))?;
        let work = dir.join("work");
        remove_all(&work)?;
        mkdir_mode(&work, 0o555)?;
        chown(&work, root)?;
        let mode = self.cfg.force_mask.unwrap_or(md.mode() & 0o7777);
        mkdir_mode(&diff, mode)?;
        chown(&diff, root)?;
        Ok(())
    }
}
