//! The vfs driver: `<home>/dir/<id>/` holds the full root file system of each layer.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use storage_types::{Error, ErrorKind, IdMap, Result};

use crate::common::{TEMP_DIRS, parse_bool, parse_key_value, remove_all, root_pair, stage_removal};
use crate::staging::{self, CommitTarget, StageBase, StagingArea};
use crate::{
    ApplyDiffOpts, ApplyStaging, Change, CreateOpts, Driver, DriverOptions, LayerMaps, MountOpts,
    StageOpts,
};

/// The vfs driver.
pub(crate) struct Vfs {
    home: PathBuf,
    /// Additional read-only store roots (`vfs.imagestore=`); layers live in `<root>/vfs/dir/<id>`.
    additional: Vec<PathBuf>,
    /// Top-level split image store (1.60): read-only layers are created in
    /// `<image_store>/vfs/dir/<id>`.
    image_store: Option<PathBuf>,
    ignore_chown_errors: bool,
}

/// [`mkdir_all_mode`], then the final directory is chowned to `owner` (Go's
/// `MkdirAllAndChown`).
fn mkdir_all_chown(path: &Path, mode: u32, owner: (u32, u32)) -> Result<()> {
    mkdir_all_mode(path, mode)?;
    let md = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    if (md.uid(), md.gid()) != owner {
        std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1))
            .map_err(|e| Error::io("lchown", path, e))?;
    }
    Ok(())
}

/// `mkdir -p` with `mode` for the created components (umask-independent); existing
/// directories keep their owner and mode (Go's `os.MkdirAll`, with the umask ignored).
fn mkdir_all_mode(path: &Path, mode: u32) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        mkdir_all_mode(parent, mode)?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(|e| Error::io("chmod", path, e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(Error::io("mkdir", path, e)),
    }
}

impl Vfs {
    pub(crate) fn open(opts: &DriverOptions) -> Result<Vfs> {
        let mut additional = Vec::new();
        let mut ignore_chown_errors = false;
        for option in &opts.options {
            let (key, val) = parse_key_value(option)?;
            let key = key.to_lowercase();
            match key.as_str() {
                "vfs.imagestore" | ".imagestore" => {
                    additional.extend(val.split(',').map(PathBuf::from));
                }
                "vfs.mountopt" => {
                    return Err(Error::msg(
                        ErrorKind::InvalidInput,
                        "vfs driver does not support mount options",
                    ));
                }
                ".ignore_chown_errors" | "vfs.ignore_chown_errors" => {
                    ignore_chown_errors = parse_bool(&val)?;
                }
                _ => {
                    return Err(Error::msg(
                        ErrorKind::InvalidInput,
                        format!("vfs driver does not support {key} options"),
                    ));
                }
            }
        }
        mkdir_all_chown(&opts.home.join("dir"), 0o700, (0, 0))?;
        Ok(Vfs {
            home: opts.home.clone(),
            additional,
            image_store: opts.image_store.clone(),
            ignore_chown_errors,
        })
    }

    /// Go's `dir2(id, useImageStore)`: the layer's own location if it exists, else the
    /// first additional store (then the image store) holding it, else the own location.
    fn dir2(&self, id: &str, use_image_store: bool) -> PathBuf {
        let base = Path::new(id)
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_default();
        let own = match (&self.image_store, use_image_store) {
            (Some(is), true) => is.join("vfs").join("dir").join(&base),
            _ => self.home.join("dir").join(&base),
        };
        if std::fs::metadata(&own).is_ok() {
            return own;
        }
        for store in self.additional.iter().chain(self.image_store.iter()) {
            let candidate = store.join("vfs").join("dir").join(&base);
            if candidate.is_dir() {
                return candidate;
            }
        }
        own
    }

    /// Go's `dir(id)`.
    fn dir(&self, id: &str) -> PathBuf {
        self.dir2(id, false)
    }

    fn create_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
        read_only: bool,
    ) -> Result<()> {
        if !opts.storage_opt.is_empty() {
            return Err(Error::msg(
                ErrorKind::InvalidInput,
                "--storage-opt is not supported for vfs",
            ));
        }
        let dir = self.dir2(id, read_only);
        // 1.55+: `<home>/dir` is only created here, never re-owned (1.43 chowned it to every
        // new layer's root pair).
        if let Some(parent_of_dir) = dir.parent() {
            mkdir_all_mode(parent_of_dir, 0o700)?;
        }
        // The root dir starts as the parent's (owner and mode); a base layer's belongs to
        // container root under its maps (an error when ID 0 is not mapped).
        let (root_ids, root_mode, parent_dir) = match parent {
            Some(p) => {
                let pd = self.dir(p);
                let md = std::fs::metadata(&pd).map_err(|e| Error::io("stat", &pd, e))?;
                ((md.uid(), md.gid()), md.mode() & 0o7777, Some(pd))
            }
            None => (root_pair(&opts.uid_map, &opts.gid_map)?, 0o555, None),
        };
        // Go's MkdirAndChown accepts an existing directory.
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(Error::io("mkdir", &dir, e)),
        }
        let result = (|| -> Result<()> {
            std::os::unix::fs::lchown(&dir, Some(root_ids.0), Some(root_ids.1))
                .map_err(|e| Error::io("lchown", &dir, e))?;
            std::fs::set_permissions(
                &dir,
                std::os::unix::fs::PermissionsExt::from_mode(root_mode),
            )
            .map_err(|e| Error::io("chmod", &dir, e))?;
            if let Some(pd) = parent_dir {
                if !pd.is_dir() {
                    // Go: fmt.Errorf("%s: %s", parent, Get's error).
                    return Err(Error::msg(
                        ErrorKind::Io,
                        format!(
                            "{}: {}: not a directory",
                            parent.unwrap_or(""),
                            pd.display()
                        ),
                    ));
                }
                crate::copy::dir_copy(&pd, &dir)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = remove_all(&dir);
        }
        result
    }

    fn mount_path(&self, id: &str, opts: &MountOpts) -> Result<PathBuf> {
        crate::naive::plain_layer_dir("vfs", &opts.options, || self.dir(id))
    }
}

impl Vfs {
    /// The roots that hold staging directories: the home, and the split image store's
    /// `vfs/` when one is configured.
    fn staging_roots(&self) -> Vec<PathBuf> {
        let mut roots = vec![self.home.clone()];
        if let Some(is) = &self.image_store {
            roots.push(is.join("vfs"));
        }
        roots
    }

    /// Where a layer of this kind is staged and committed: the split image store for image
    /// layers when one is configured, else the home.
    fn staging_root(&self, read_only: bool) -> PathBuf {
        match (&self.image_store, read_only) {
            (Some(is), true) => is.join("vfs"),
            _ => self.home.clone(),
        }
    }

    fn stage_layer(&self, base: StageBase<'_>, opts: &StageOpts) -> Result<StagingArea> {
        let area = StagingArea::create(&self.staging_root(opts.read_only), "vfs")?;
        let content = area.content();
        let (ids, mode, copy_from) = match base {
            StageBase::NewLayer { parent: None } => {
                (root_pair(&opts.uid_map, &opts.gid_map)?, 0o555, None)
            }
            StageBase::NewLayer { parent: Some(p) } | StageBase::CopyOf(p) => {
                let pd = self.dir(p);
                let (ids, mode) = staging::owner_and_mode(&pd)?;
                (ids, mode, Some(pd))
            }
            StageBase::EmptyLike(id) => {
                let (ids, mode) = staging::owner_and_mode(&self.dir(id))?;
                (ids, mode, None)
            }
            StageBase::Differ => return Err(staging::not_supported("vfs")),
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&content)
            .map_err(|e| Error::io("mkdir", &content, e))?;
        std::os::unix::fs::lchown(&content, Some(ids.0), Some(ids.1))
            .map_err(|e| Error::io("lchown", &content, e))?;
        std::fs::set_permissions(&content, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(|e| Error::io("chmod", &content, e))?;
        if let Some(src) = copy_from {
            crate::copy::dir_copy(&src, &content)?;
        }
        Ok(area)
    }

    fn commit_layer(&self, area: &StagingArea, target: CommitTarget<'_>) -> Result<()> {
        staging::check_driver(area, "vfs")?;
        let content = area.content();
        match target {
            CommitTarget::New {
                id,
                opts,
                writeable,
                ..
            } => {
                if !opts.storage_opt.is_empty() {
                    return Err(Error::msg(
                        ErrorKind::InvalidInput,
                        "--storage-opt is not supported for vfs",
                    ));
                }
                let dir = self.dir2(id, !writeable);
                let parent_of_dir = dir.parent().unwrap_or(Path::new("/"));
                mkdir_all_chown(
                    parent_of_dir,
                    0o700,
                    root_pair(&opts.uid_map, &opts.gid_map)?,
                )?;
                staging::rename(&content, &dir)?;
                staging::sync_dir(parent_of_dir)
            }
            CommitTarget::Replace { id, root_mode, .. } => {
                let dir = self.dir(id);
                if let Some(mode) = root_mode {
                    std::fs::set_permissions(
                        &content,
                        std::os::unix::fs::PermissionsExt::from_mode(mode),
                    )
                    .map_err(|e| Error::io("chmod", &content, e))?;
                }
                staging::replace(&content, &dir, &area.scratch("old"))?;
                staging::sync_dir(dir.parent().unwrap_or(Path::new("/")))
            }
        }
    }
}

impl Vfs {
    /// A layer's directory as a read-only "mount".
    fn ro_path(&self, id: &str) -> Result<PathBuf> {
        let ro = MountOpts {
            options: vec!["ro".to_owned()],
            ..MountOpts::default()
        };
        self.mount_path(id, &ro)
    }
}

impl Driver for Vfs {
    fn name(&self) -> &str {
        "vfs"
    }

    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts, true)
    }

    fn create_read_write(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts, false)
    }

    fn remove(&self, id: &str) -> Result<()> {
        if Path::new(id).file_name().is_none() {
            return Ok(());
        }
        remove_all(&self.dir(id))
    }

    fn deferred_remove(&self, id: &str) -> Result<Option<storage_lock::TempDir>> {
        let dir = self.dir(id);
        // `<base>/dir/<id>` is staged in `<base>/tempdirs` (the home, or the image store's
        // `vfs` directory), on the same file system.
        let Some(base) = dir.parent().and_then(Path::parent) else {
            return Ok(None);
        };
        stage_removal(&base.join(TEMP_DIRS), std::slice::from_ref(&dir))
    }

    fn temp_dir_roots(&self) -> Vec<PathBuf> {
        let mut roots = vec![self.home.join(TEMP_DIRS)];
        if let Some(is) = &self.image_store {
            roots.push(is.join("vfs").join(TEMP_DIRS));
        }
        roots
    }

    fn dedup_dirs(&self, ids: &[String]) -> Vec<PathBuf> {
        ids.iter()
            .map(|id| self.dir(id))
            .filter(|d| d.is_dir())
            .collect()
    }

    fn get(&self, id: &str, opts: &MountOpts) -> Result<PathBuf> {
        self.mount_path(id, opts)
    }

    fn put(&self, _id: &str) -> Result<()> {
        Ok(())
    }

    fn exists(&self, id: &str) -> bool {
        std::fs::metadata(self.dir(id)).is_ok()
    }

    fn list_layers(&self) -> Result<Vec<String>> {
        let dir = self.home.join("dir");
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
        Vec::new()
    }

    fn metadata(&self, _id: &str) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::new())
    }

    fn cleanup(&self) -> Result<()> {
        for root in self.staging_roots() {
            staging::recover(&root, true, &staging::remove_plain)?;
        }
        Ok(())
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
        let layer = self.mount_path(id, &MountOpts::default())?;
        let mut opts = opts.clone();
        if self.ignore_chown_errors {
            opts.ignore_chown_errors = true;
        }
        crate::naive::apply_diff(&layer, diff, &opts)
    }

    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<i64> {
        let none = LayerMaps::default();
        let parent = parent.map(|p| (p, none));
        crate::naive::diff_size_layers(|p| self.ro_path(p), id, none, parent)
    }

    fn diff_getter(&self, id: &str) -> Result<Box<dyn storage_tarsplit::FileGetter + '_>> {
        Ok(Box::new(crate::naive::PathFileGetter::new(self.dir(id))))
    }

    fn diff_mapped(
        &self,
        id: &str,
        maps: LayerMaps<'_>,
        parent: Option<(&str, LayerMaps<'_>)>,
        out: &mut dyn Write,
    ) -> Result<()> {
        crate::naive::diff_layers(|p| self.ro_path(p), id, maps, parent, out)
    }

    fn changes_mapped(
        &self,
        id: &str,
        maps: LayerMaps<'_>,
        parent: Option<(&str, LayerMaps<'_>)>,
    ) -> Result<Vec<Change>> {
        crate::naive::changes_layers(|p| self.ro_path(p), id, maps, parent)
    }

    fn diff_size_mapped(
        &self,
        id: &str,
        maps: LayerMaps<'_>,
        parent: Option<(&str, LayerMaps<'_>)>,
    ) -> Result<i64> {
        crate::naive::diff_size_layers(|p| self.ro_path(p), id, maps, parent)
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
        staging::check_driver(area, "vfs")?;
        let mut opts = opts.clone();
        if self.ignore_chown_errors {
            opts.ignore_chown_errors = true;
        }
        crate::naive::apply_diff(&area.content(), diff, &opts)
    }

    fn commit_staged(&self, area: StagingArea, target: CommitTarget<'_>) -> Result<()> {
        match self.commit_layer(&area, target) {
            Ok(()) => area.finish(false),
            Err(e) => {
                let _ = area.discard_with(&staging::remove_plain);
                Err(e)
            }
        }
    }

    fn stage_for_apply(&self, id: &str, parent: Option<&str>) -> Option<ApplyStaging> {
        // A layer on a parent holds a copy of it: staging would copy it again.
        (parent.is_none() && staging::is_empty_dir(&self.dir(id))).then_some(ApplyStaging::Empty)
    }

    fn recover_staging(&self) -> Result<()> {
        for root in self.staging_roots() {
            staging::recover(&root, false, &staging::remove_plain)?;
        }
        Ok(())
    }

    fn update_layer_id_map(
        &self,
        id: &str,
        old_uid: &[IdMap],
        old_gid: &[IdMap],
        new_uid: &[IdMap],
        new_gid: &[IdMap],
    ) -> Result<()> {
        let layer = self.mount_path(id, &MountOpts::default())?;
        crate::idmap::chown_by_maps(&layer, (old_uid, old_gid), (new_uid, new_gid))?;
        // 1.47+: the walk skips the root dir; it then belongs to container root under the
        // new maps (1.43 left the parent's owner).
        let (uid, gid) = root_pair(new_uid, new_gid)?;
        std::os::unix::fs::lchown(&layer, Some(uid), Some(gid))
            .map_err(|e| Error::io("lchown", &layer, e))
    }
}
