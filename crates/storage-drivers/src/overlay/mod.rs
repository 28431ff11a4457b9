//! The overlay driver (`overlay`, alias `overlay2`), on-disk compatible with Go's.
//!
//! Layout under the home (`<graphroot>/overlay`):
//!
//! * `l/<SHORT>` → `../<id>/diff`: 26-character base32 short names keeping mount data short;
//! * `<id>/diff` (the layer's own content, the overlay upper dir), `<id>/link` (the short
//!   name, no newline), `<id>/lower` (`l/<parent>:l/<grandparent>…`, nearest first, no
//!   newline; only for layers with a parent), `<id>/empty` (base layers' dummy lower),
//!   `<id>/work`, `<id>/merged` (kept after unmount like Go 1.60);
//! * `.has-mount-program` (`"true"`/`"false"`): whether this store needs fuse-overlayfs.
//!
//! Feature probes are cached in the run home under Go's file names (see `probe`). The
//! home is bind-mounted on itself as a private mount while the driver is open (unless
//! `overlay.skip_mount_home`); [`Driver::cleanup`] releases it. Dropping the driver does
//! not: as in Go, the mount outlives a process that exits without `shutdown`, and another
//! store on the same home (in this process or another, Go or ours) may still rely on it.
//!
//! Mounts use the classic `mount(2)` data string when it fits a page (exactly what Go
//! passes), else the new mount API with one `lowerdir+` per lower; on kernels without it,
//! the lowers are passed relative to the home, then as `/proc/self/fd` numbers (each on a
//! helper thread with its own working directory). Up to 500 lowers.
//!
//! Diff, Changes and DiffSize are read natively from the upper dir when exact (no mount
//! program, the native-diff probe passed, and the parent asked for is the real parent);
//! otherwise they fall back to Go's naive mount-and-compare path. Whiteouts are stored as
//! 0/0 character devices and opaque directories as `trusted.overlay.opaque=y`
//! (`user.overlay.` when rootless); with `overlay.mount_program` (fuse-overlayfs) the
//! AUFS `.wh.` files are stored verbatim.
//!
//! Lost `l/` links and `link` files are repaired like Go's `recreateSymlinks`. Read-only
//! layers go to `<imagestore>/overlay` when a split image store is configured;
//! `overlay.imagestore=` stores are searched read-only and their layers mount under the
//! run home.
//!
//! Mount-time ID shifting ([`Driver::supports_shifting`]): as root, mounts given ID maps
//! use idmapped views of the lowers (probe `idmapped-lower-dir`), like Go 1.60;
//! `_CONTAINERS_OVERLAY_DISABLE_IDMAP=yes` turns it off. With a mount program, contiguous
//! maps are passed to it as `uidmapping=`/`gidmapping=`.
//!
//! Limits: no additional layer stores, no composefs, no SELinux labels, no staged
//! (partial) pulls; XFS project quotas only where the kernel provides them (not on this
//! project's test host).
//!
//! Rootless (Go's `IsRootless()`, see `storage_userns`): native overlay is probed only with
//! effective UID 0, i.e. inside the user namespace, with `userxattr`; opaque directories use
//! `user.overlay.opaque`; no idmapped lowers; without native overlay, `fuse-overlayfs` in
//! `$PATH` becomes the mount program.

mod config;
mod create;
mod diff;
mod idmapped;
mod layout;
mod mount;
mod mount_data;
mod native;
mod probe;
mod quota;
mod setup;
mod staged;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use storage_types::{Error, ErrorKind, IdMap, Result};

use crate::common::TEMP_DIRS;
use crate::staging::{CommitTarget, StageBase, StagingArea};
use crate::sys::mount::unmount;
use crate::{
    ApplyDiffOpts, ApplyStaging, Change, CreateOpts, Driver, LayerMaps, MountOpts, StageOpts,
};
use config::Config;
use mount::RefEntry;

const LINK_DIR: &str = "l";
/// Go 1.60's depth limit.
const MAX_DEPTH: usize = 500;
const OVERRIDE_XATTR: &str = "user.containers.override_stat";

/// The overlay driver.
pub(crate) struct Overlay {
    home: PathBuf,
    run_home: PathBuf,
    /// `<imagestore>/overlay`: where read-only layers go when a split image store is set.
    image_store: Option<PathBuf>,
    cfg: Config,
    mount_program: Option<PathBuf>,
    backing_fs: &'static str,
    native_diff: bool,
    metacopy: bool,
    volatile: bool,
    rootless: bool,
    /// Whether `init` bind-mounted the home privately (released by `cleanup`).
    home_private: bool,
    quota: Option<quota::Control>,
    refs: Mutex<HashMap<PathBuf, RefEntry>>,
    /// Cached `idmapped-lower-dir` probe.
    idmapped: std::sync::OnceLock<bool>,
    /// Serializes mounts and unmounts (Go's per-layer locker), so that a second `get`
    /// never returns a path whose mount is still being made.
    mount_lock: Mutex<()>,
}

impl Overlay {
    fn opaque_xattr(&self) -> &'static str {
        if self.rootless {
            "user.overlay.opaque"
        } else {
            "trusted.overlay.opaque"
        }
    }

    fn use_naive_diff(&self) -> bool {
        self.mount_program.is_some() || !self.native_diff
    }
}

impl Driver for Overlay {
    fn name(&self) -> &str {
        "overlay"
    }

    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts, false)
    }

    fn create_read_write(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts, true)
    }

    fn remove(&self, id: &str) -> Result<()> {
        self.remove_layer(id)
    }

    fn deferred_remove(&self, id: &str) -> Result<Option<storage_lock::TempDir>> {
        self.deferred_remove_layer(id)
    }

    fn temp_dir_roots(&self) -> Vec<PathBuf> {
        let mut roots = vec![self.home.join(TEMP_DIRS)];
        if let Some(is) = &self.image_store {
            roots.push(is.join(TEMP_DIRS));
        }
        roots
    }

    fn dedup_dirs(&self, ids: &[String]) -> Vec<PathBuf> {
        ids.iter()
            .filter_map(|id| {
                let (dir, in_additional_store) = self.dir(id);
                (!in_additional_store && dir.is_dir()).then(|| dir.join("diff"))
            })
            .collect()
    }

    fn get(&self, id: &str, opts: &MountOpts) -> Result<PathBuf> {
        self.mount_layer(id, opts)
    }

    fn put(&self, id: &str) -> Result<()> {
        self.unmount_layer(id)
    }

    fn exists(&self, id: &str) -> bool {
        self.dir(id).0.is_dir()
    }

    fn list_layers(&self) -> Result<Vec<String>> {
        let rd = std::fs::read_dir(&self.home).map_err(|e| Error::io("open", &self.home, e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("readdirent", &self.home, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if matches!(
                name.as_str(),
                LINK_DIR | "staging" | TEMP_DIRS | "backingFsBlockDev" | ".has-mount-program"
            ) || !entry.file_type().is_ok_and(|t| t.is_dir())
            {
                continue;
            }
            out.push(name);
        }
        out.sort();
        Ok(out)
    }

    fn status(&self) -> Vec<(String, String)> {
        vec![
            ("Backing Filesystem".into(), self.backing_fs.into()),
            ("Supports d_type".into(), "true".into()),
            (
                "Native Overlay Diff".into(),
                (!self.use_naive_diff()).to_string(),
            ),
            ("Using metacopy".into(), self.metacopy.to_string()),
            (
                "Supports shifting".into(),
                self.supports_shifting(&[], &[]).to_string(),
            ),
            ("Supports volatile".into(), self.volatile.to_string()),
        ]
    }

    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>> {
        let (dir, in_store) = self.dir(id);
        if !dir.is_dir() {
            return Err(Error::msg(
                ErrorKind::LayerUnknown,
                format!("stat {}: no such file or directory", dir.display()),
            ));
        }
        let mut m = BTreeMap::new();
        m.insert("WorkDir".into(), dir.join("work").display().to_string());
        m.insert(
            "MergedDir".into(),
            self.merged_dir(id, &dir, in_store).display().to_string(),
        );
        m.insert("UpperDir".into(), dir.join("diff").display().to_string());
        let lowers = self
            .lower_elems(&dir)?
            .iter()
            .map(|e| self.lower_diff(e).map(|p| p.display().to_string()))
            .collect::<Result<Vec<_>>>()?;
        if !lowers.is_empty() {
            m.insert("LowerDir".into(), lowers.join(":"));
        }
        Ok(m)
    }

    fn cleanup(&self) -> Result<()> {
        if !self.home_private {
            self.recover_staging_dirs(true)?;
            return Ok(());
        }
        // Go 1.60 removes the staging directories nobody holds and keeps the home mounted
        // while one is held by a live process.
        if self.recover_staging_dirs(true)? {
            return Ok(());
        }
        unmount(&self.home).map_err(|e| Error::io("unmount", &self.home, e))
    }

    fn diff(
        &self,
        id: &str,
        parent: Option<&str>,
        uid_map: &[IdMap],
        gid_map: &[IdMap],
        out: &mut dyn Write,
    ) -> Result<()> {
        let maps = LayerMaps {
            uid: uid_map,
            gid: gid_map,
        };
        self.diff_layer((id, parent), maps, out)
    }

    fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>> {
        self.changes_layer(id, parent)
    }

    fn apply_diff(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut dyn Read,
        opts: &ApplyDiffOpts,
    ) -> Result<i64> {
        self.apply_layer_diff((id, parent), diff, opts.clone())
    }

    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<i64> {
        self.diff_size_layer(id, parent)
    }

    fn diff_getter(&self, id: &str) -> Result<Box<dyn storage_tarsplit::FileGetter + '_>> {
        self.layer_file_getter(id)
    }

    fn supports_shifting(&self, uid_map: &[IdMap], gid_map: &[IdMap]) -> bool {
        if std::env::var("_CONTAINERS_OVERLAY_DISABLE_IDMAP").as_deref() == Ok("yes") {
            return false;
        }
        if self.mount_program.is_some() {
            // fuse-overlayfs maps the upper layer too: contiguous maps only.
            return idmapped::is_contiguous(uid_map) && idmapped::is_contiguous(gid_map);
        }
        self.idmapped_lowers()
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
        crate::staging::check_driver(area, "overlay")?;
        self.unpack_native(&area.content(), diff, opts)
    }

    fn differ_unpack_options(
        &self,
        opts: &ApplyDiffOpts,
    ) -> Result<storage_archive::UnpackOptions> {
        Ok(self.native_unpack_options(opts))
    }

    fn commit_staged(&self, area: StagingArea, target: CommitTarget<'_>) -> Result<()> {
        match self.commit_layer(&area, target) {
            Ok(()) => {
                let keep = area.differ;
                area.finish(keep)
            }
            Err(e) => {
                let _ = area.discard_with(&crate::staging::remove_plain);
                Err(e)
            }
        }
    }

    fn stage_for_apply(&self, id: &str, _parent: Option<&str>) -> Option<ApplyStaging> {
        self.apply_staging_for(id)
    }

    fn stages_children_independently(&self) -> bool {
        true
    }

    fn recover_staging(&self) -> Result<()> {
        self.recover_staging_dirs(false).map(|_| ())
    }

    fn update_layer_id_map(
        &self,
        id: &str,
        old_uid: &[IdMap],
        old_gid: &[IdMap],
        new_uid: &[IdMap],
        new_gid: &[IdMap],
    ) -> Result<()> {
        let old = LayerMaps {
            uid: old_uid,
            gid: old_gid,
        };
        let new = LayerMaps {
            uid: new_uid,
            gid: new_gid,
        };
        self.remap_layer(id, old, new)
    }
}
