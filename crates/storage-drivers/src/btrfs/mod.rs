//! The btrfs driver: `<home>/subvolumes/<id>` is one btrfs subvolume per layer holding
//! its full root file system; a child is a writable snapshot of its parent.
//!
//! * The home's parent must be on btrfs, else Go's `prerequisites for driver not
//!   satisfied (wrong filesystem?)`. The home is bind-mounted private while open.
//! * `btrfs.min_space=<size>` enables quotas; a layer's `size` storage option then sets a
//!   qgroup limit on its subvolume (`BTRFS_IOC_QGROUP_LIMIT`) and is remembered in
//!   `<home>/quotas/<id>` (decimal bytes), re-applied on mount.
//! * Removal deletes nested subvolumes first, then `BTRFS_IOC_SNAP_DESTROY`, falling back
//!   to a recursive delete when the ioctl is not permitted.
//! * Diffs are Go's naive ones (mount-free here: the subvolume is the root file system).
//!
//! Limits: no SELinux relabelling; `Build Version`/`Library Version` report the
//! libbtrfs header values Debian's Go binary was built with, as no libbtrfs is linked.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use storage_types::{Error, ErrorKind, IdMap, Result};

use crate::common::{
    ERR_PREREQUISITES, invalid, parse_key_value, ram_in_bytes, remove_all, root_pair,
};
use crate::staging::{self, CommitTarget, StageBase, StagingArea};
use crate::sys::btrfs as ioctl;
use crate::{
    ApplyDiffOpts, ApplyStaging, Change, CreateOpts, Driver, DriverOptions, LayerMaps, MountOpts,
    StageOpts,
};

const BTRFS_MAGIC: i64 = 0x9123_683E;

/// The btrfs driver.
pub(crate) struct Btrfs {
    home: PathBuf,
    min_space: u64,
    quota_enabled: std::sync::atomic::AtomicBool,
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::msg(
        ErrorKind::Io,
        format!("{what}: {}", storage_types::go_io_error_text(&e)),
    )
}

fn is_subvolume(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_dir() && m.ino() == ioctl::FIRST_FREE_OBJECTID)
}

impl Btrfs {
    pub(crate) fn open(opts: &DriverOptions) -> Result<Btrfs> {
        let home = opts.home.clone();
        let parent = home.parent().unwrap_or(Path::new("/"));
        let magic = rustix::fs::statfs(parent)
            .map(|s| s.f_type)
            .map_err(|e| Error::io("statfs", parent, e.into()))?;
        if magic != BTRFS_MAGIC {
            return Err(Error::msg(
                ErrorKind::NotSupported,
                format!(
                    "{:?} is not on a btrfs filesystem: {ERR_PREREQUISITES}",
                    home.display().to_string()
                ),
            ));
        }
        let mut min_space = 0;
        for option in &opts.options {
            let (key, val) = parse_key_value(option)?;
            match key.to_lowercase().as_str() {
                "btrfs.min_space" => min_space = ram_in_bytes(&val)?,
                "btrfs.mountopt" => {
                    return Err(invalid("btrfs driver does not support mount options"));
                }
                _ => return Err(invalid(format!("Unknown option {key}"))),
            }
        }
        let subvolumes = home.join("subvolumes");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&subvolumes)
            .map_err(|e| Error::io("mkdir", &subvolumes, e))?;
        crate::sys::mount::make_private(&home).map_err(|e| Error::io("mount", &home, e))?;
        let driver = Btrfs {
            home,
            min_space,
            quota_enabled: std::sync::atomic::AtomicBool::new(false),
        };
        if min_space > 0 {
            driver.enable_quota()?;
        }
        Ok(driver)
    }

    fn subvolumes(&self) -> PathBuf {
        self.home.join("subvolumes")
    }

    fn subvol(&self, id: &str) -> PathBuf {
        self.subvolumes().join(id)
    }

    fn quotas(&self) -> PathBuf {
        self.home.join("quotas")
    }

    fn enable_quota(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.quota_enabled.load(Ordering::Relaxed) {
            return Ok(());
        }
        ioctl::quota_enable(&self.home).map_err(|e| {
            io_err(
                &format!("failed to enable btrfs quota for {}", self.home.display()),
                e,
            )
        })?;
        self.quota_enabled.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn set_limit(&self, path: &Path, size: u64) -> Result<()> {
        self.enable_quota()?;
        ioctl::qgroup_limit(path, size)
            .map_err(|e| io_err(&format!("failed to limit qgroup for {}", path.display()), e))
    }

    fn create_layer(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        let mut size = None;
        for (k, v) in &opts.storage_opt {
            match k.to_lowercase().as_str() {
                "size" => {
                    let s = ram_in_bytes(v)
                        .map_err(|_| invalid(format!("btrfs: invalid storage size: {v}")))?;
                    if s == 0 {
                        return Err(invalid(format!("btrfs: invalid storage size: {v}")));
                    }
                    if s < self.min_space {
                        return Err(invalid(format!(
                            "btrfs: storage size cannot be less than {}",
                            self.min_space
                        )));
                    }
                    size = Some(s);
                }
                _ => return Err(invalid(format!("Unknown option {k}"))),
            }
        }
        let subvolumes = self.subvolumes();
        let dest = self.subvol(id);
        match parent {
            None => {
                let root = root_pair(&opts.uid_map, &opts.gid_map)?;
                ioctl::subvol_create(&subvolumes, OsStr::new(id))
                    .map_err(|e| io_err("failed to create btrfs subvolume", e))?;
                let r = std::os::unix::fs::lchown(&dest, Some(root.0), Some(root.1))
                    .map_err(|e| Error::io("lchown", &dest, e))
                    .and_then(|()| {
                        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o555))
                            .map_err(|e| Error::io("chmod", &dest, e))
                    });
                if let Err(e) = r {
                    let _ = self.remove(id);
                    return Err(e);
                }
            }
            Some(p) => {
                let src = self.subvol(p);
                if !src.is_dir() {
                    return Err(Error::msg(
                        ErrorKind::LayerUnknown,
                        format!("stat {}: no such file or directory", src.display()),
                    ));
                }
                ioctl::snapshot(&src, &subvolumes, OsStr::new(id))
                    .map_err(|e| io_err("failed to create btrfs snapshot", e))?;
            }
        }
        if let Some(size) = size {
            let r = self.set_limit(&dest, size).and_then(|()| {
                let q = self.quotas();
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&q)
                    .map_err(|e| Error::io("mkdir", &q, e))?;
                std::fs::write(q.join(id), size.to_string())
                    .map_err(|e| Error::io("write", &q.join(id), e))
            });
            if let Err(e) = r {
                let _ = self.remove(id);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Deletes the subvolumes nested anywhere below `dir` (deepest first).
    fn destroy_nested(&self, dir: &Path) -> Result<()> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let p = e.path();
            self.destroy_nested(&p)?;
            if is_subvolume(&p) {
                self.destroy_subvol(dir, &e.file_name())?;
            }
        }
        Ok(())
    }

    fn destroy_subvol(&self, parent: &Path, name: &OsStr) -> Result<()> {
        let path = parent.join(name);
        if self
            .quota_enabled
            .load(std::sync::atomic::Ordering::Relaxed)
            && let Ok(id) = ioctl::subvol_id(&path)
        {
            let _ = ioctl::qgroup_destroy(&self.home, id);
        }
        match ioctl::subvol_destroy(parent, name) {
            Ok(()) => Ok(()),
            Err(e) => {
                // Unprivileged callers may not destroy subvolumes; an empty one can be
                // removed with rmdir (Linux ≥ 4.18).
                if remove_all(&path).is_ok() {
                    Ok(())
                } else {
                    Err(io_err(
                        &format!(
                            "failed to destroy btrfs snapshot {} for {}",
                            parent.display(),
                            name.to_string_lossy()
                        ),
                        e,
                    ))
                }
            }
        }
    }

    fn path_for(&self, id: &str, opts: &MountOpts) -> Result<PathBuf> {
        let dir = crate::naive::plain_layer_dir("btrfs", &opts.options, || self.subvol(id))?;
        if let Ok(s) = std::fs::read_to_string(self.quotas().join(id))
            && let Ok(size) = s.trim().parse::<u64>()
            && size >= self.min_space
            && size > 0
        {
            self.set_limit(&dir, size)?;
        }
        Ok(dir)
    }
}

impl Btrfs {
    /// Removes a subvolume (with the ones nested in it) or a plain directory tree.
    fn destroy_path(&self, path: &Path) -> Result<()> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(());
        }
        self.destroy_nested(path)?;
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) if is_subvolume(path) => self.destroy_subvol(parent, name),
            _ => remove_all(path),
        }
    }

    fn stage_layer(&self, base: StageBase<'_>, opts: &StageOpts) -> Result<StagingArea> {
        let mut area = StagingArea::create(&self.home, "btrfs")?;
        area.subvolume = true;
        let name = OsStr::new(staging::CONTENT);
        let content = area.content();
        let fresh = |ids: (u32, u32), mode: u32| -> Result<()> {
            ioctl::subvol_create(area.path(), name)
                .map_err(|e| io_err("failed to create btrfs subvolume", e))?;
            std::os::unix::fs::lchown(&content, Some(ids.0), Some(ids.1))
                .map_err(|e| Error::io("lchown", &content, e))?;
            std::fs::set_permissions(&content, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("chmod", &content, e))
        };
        let snapshot = |src: &Path| -> Result<()> {
            if !src.is_dir() {
                return Err(Error::msg(
                    ErrorKind::LayerUnknown,
                    format!("stat {}: no such file or directory", src.display()),
                ));
            }
            ioctl::snapshot(src, area.path(), name)
                .map_err(|e| io_err("failed to create btrfs snapshot", e))
        };
        let r = match base {
            StageBase::NewLayer { parent: None } => {
                root_pair(&opts.uid_map, &opts.gid_map).and_then(|ids| fresh(ids, 0o555))
            }
            StageBase::NewLayer { parent: Some(p) } | StageBase::CopyOf(p) => {
                snapshot(&self.subvol(p))
            }
            StageBase::EmptyLike(id) => {
                staging::owner_and_mode(&self.subvol(id)).and_then(|(ids, mode)| fresh(ids, mode))
            }
            StageBase::Differ => Err(staging::not_supported("btrfs")),
        };
        match r {
            Ok(()) => Ok(area),
            Err(e) => {
                let _ = area.discard_with(&|p| self.destroy_path(p));
                Err(e)
            }
        }
    }

    fn commit_layer(&self, area: &StagingArea, target: CommitTarget<'_>) -> Result<()> {
        staging::check_driver(area, "btrfs")?;
        let content = area.content();
        let subvolumes = self.subvolumes();
        match target {
            CommitTarget::New { id, opts, .. } => {
                if !opts.storage_opt.is_empty() {
                    return Err(invalid(
                        "btrfs: storage options of a staged layer are not supported",
                    ));
                }
                let dest = self.subvol(id);
                if std::fs::symlink_metadata(&dest).is_ok() {
                    return Err(Error::msg(
                        ErrorKind::DuplicateId,
                        format!("{}: file exists", dest.display()),
                    ));
                }
                staging::rename(&content, &dest)?;
            }
            CommitTarget::Replace { id, root_mode, .. } => {
                let dest = self.subvol(id);
                if let Some(mode) = root_mode {
                    std::fs::set_permissions(&content, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| Error::io("chmod", &content, e))?;
                }
                staging::replace(&content, &dest, &area.scratch("old"))?;
            }
        }
        staging::sync_dir(&subvolumes)
    }
}

impl Btrfs {
    /// A layer's subvolume for reading (diffs, changes).
    fn ro_path(&self, id: &str) -> Result<PathBuf> {
        self.path_for(id, &MountOpts::default())
    }
}

/// `libbtrfs` header values of the Go binary this project is compared with.
const BUILD_VERSION: &str = "Btrfs v6.2";
const LIBRARY_VERSION: &str = "102";

impl Driver for Btrfs {
    fn name(&self) -> &str {
        "btrfs"
    }

    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts)
    }

    fn create_read_write(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts)
    }

    fn remove(&self, id: &str) -> Result<()> {
        let dir = self.subvol(id);
        if std::fs::symlink_metadata(&dir).is_err() {
            return Ok(());
        }
        self.destroy_nested(&dir)?;
        if is_subvolume(&dir) {
            self.destroy_subvol(&self.subvolumes(), OsStr::new(id))?;
        } else {
            remove_all(&dir)?;
        }
        let q = self.quotas().join(id);
        match std::fs::remove_file(&q) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &q, e)),
        }
        if self
            .quota_enabled
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let _ = ioctl::quota_rescan(&self.home);
        }
        Ok(())
    }

    fn get(&self, id: &str, opts: &MountOpts) -> Result<PathBuf> {
        self.path_for(id, opts)
    }

    fn put(&self, _id: &str) -> Result<()> {
        Ok(())
    }

    fn exists(&self, id: &str) -> bool {
        self.subvol(id).is_dir()
    }

    fn list_layers(&self) -> Result<Vec<String>> {
        let dir = self.subvolumes();
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io("open", &dir, e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("readdirent", &dir, e))?;
            if entry.file_type().is_ok_and(|t| t.is_dir())
                && let Ok(name) = entry.file_name().into_string()
            {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    fn status(&self) -> Vec<(String, String)> {
        vec![
            ("Build Version".into(), BUILD_VERSION.into()),
            ("Library Version".into(), LIBRARY_VERSION.into()),
        ]
    }

    fn metadata(&self, _id: &str) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::new())
    }

    fn cleanup(&self) -> Result<()> {
        staging::recover(&self.home, true, &|p| self.destroy_path(p))?;
        crate::sys::mount::unmount(&self.home).map_err(|e| Error::io("unmount", &self.home, e))
    }

    fn stage(&self, base: StageBase<'_>, opts: &StageOpts) -> Result<StagingArea> {
        self.stage_layer(base, opts)
    }

    fn apply_diff_staged(
        &self,
        area: &StagingArea,
        diff: &mut dyn Read,
        opts: &ApplyDiffOpts,
    ) -> Result<i64> {
        staging::check_driver(area, "btrfs")?;
        crate::naive::apply_diff(&area.content(), diff, opts)
    }

    fn commit_staged(&self, area: StagingArea, target: CommitTarget<'_>) -> Result<()> {
        match self.commit_layer(&area, target) {
            Ok(()) => {
                let old = area.scratch("old");
                if let Err(e) = self.destroy_path(&old) {
                    tracing::warn!("removing the replaced content {}: {e}", old.display());
                }
                area.finish(false)
            }
            Err(e) => {
                let _ = area.discard_with(&|p| self.destroy_path(p));
                Err(e)
            }
        }
    }

    fn discard_staged(&self, area: StagingArea) -> Result<()> {
        area.discard_with(&|p| self.destroy_path(p))
    }

    fn stage_for_apply(&self, _id: &str, _parent: Option<&str>) -> Option<ApplyStaging> {
        Some(ApplyStaging::Copy)
    }

    fn recover_staging(&self) -> Result<()> {
        staging::recover(&self.home, false, &|p| self.destroy_path(p)).map(|_| ())
    }

    fn diff(
        &self,
        id: &str,
        parent: Option<&str>,
        uid_map: &[IdMap],
        gid_map: &[IdMap],
        out: &mut dyn Write,
    ) -> Result<()> {
        crate::naive::diff_with_layer_maps(|p| self.ro_path(p), id, parent, uid_map, gid_map, out)
    }

    fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>> {
        crate::naive::changes_unmapped(|p| self.ro_path(p), id, parent)
    }

    fn apply_diff(
        &self,
        id: &str,
        _parent: Option<&str>,
        diff: &mut dyn Read,
        opts: &ApplyDiffOpts,
    ) -> Result<i64> {
        let layer = self.path_for(id, &MountOpts::default())?;
        crate::naive::apply_diff(&layer, diff, opts)
    }

    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<i64> {
        let none = LayerMaps::default();
        let parent = parent.map(|p| (p, none));
        crate::naive::diff_size_layers(|p| self.ro_path(p), id, none, parent)
    }

    fn diff_getter(&self, id: &str) -> Result<Box<dyn storage_tarsplit::FileGetter + '_>> {
        Ok(Box::new(crate::naive::PathFileGetter::new(self.subvol(id))))
    }

    fn diff_mapped(
        &self,
        id: &str,
        maps: LayerMaps<'_>,
        parent: Option<(&str, LayerMaps<'_>)>,
        out: &mut dyn Write,
    ) -> Result<()> {
        let ro = MountOpts::default();
        crate::naive::diff_layers(|p| self.path_for(p, &ro), id, maps, parent, out)
    }

    fn changes_mapped(
        &self,
        id: &str,
        maps: LayerMaps<'_>,
        parent: Option<(&str, LayerMaps<'_>)>,
    ) -> Result<Vec<Change>> {
        let ro = MountOpts::default();
        crate::naive::changes_layers(|p| self.path_for(p, &ro), id, maps, parent)
    }

    fn diff_size_mapped(
        &self,
        id: &str,
        maps: LayerMaps<'_>,
        parent: Option<(&str, LayerMaps<'_>)>,
    ) -> Result<i64> {
        let ro = MountOpts::default();
        crate::naive::diff_size_layers(|p| self.path_for(p, &ro), id, maps, parent)
    }

    fn update_layer_id_map(
        &self,
        id: &str,
        old_uid: &[IdMap],
        old_gid: &[IdMap],
        new_uid: &[IdMap],
        new_gid: &[IdMap],
    ) -> Result<()> {
        let layer = self.path_for(id, &MountOpts::default())?;
        crate::idmap::chown_by_maps(&layer, (old_uid, old_gid), (new_uid, new_gid))
    }
}
