//! Mounting layers (Go's overlay `Get`/`Put`): reference counts per mount point, the
//! lower list (own `diffN` dirs, then each lower and its `diffN`), mount options,
//! idmapped views of the lowers for mount-time ID shifting, fuse-overlayfs through the
//! mount program, and the naive diff path's read-only mounts.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use storage_types::{Error, ErrorKind, IdMap, Result};

use super::mount_data::{self, is_overlay_mounted};
use super::{LINK_DIR, MAX_DEPTH, Overlay, idmapped, probe};
use crate::common::{invalid, mkdir_all, mkdir_mode, remove_all};
use crate::mountinfo::is_mountpoint;
use crate::sys::mount::unmount;
use crate::{Driver, MountOpts};

/// Reference count of one mount point (Go's `RefCounter` entry).
#[derive(Debug, Default)]
pub(super) struct RefEntry {
    pub(super) checked: bool,
    pub(super) count: i64,
}

/// Detaches idmapped views and removes their directories (best effort).
fn release_views(views: &[PathBuf]) {
    for v in views {
        let _ = unmount(v);
        let _ = std::fs::remove_dir(v);
    }
    if let Some(parent) = views.first().and_then(|v| v.parent()) {
        let _ = std::fs::remove_dir(parent);
    }
}

impl Overlay {
    /// Whether idmapped lowers work here (root only; probe cached in the run home).
    pub(super) fn idmapped_lowers(&self) -> bool {
        *self.idmapped.get_or_init(|| {
            // Inside a user namespace the answer is no, cached like Go's (podman and a
            // 1.60 process find `idmapped-lower-dir-false` in a rootless run root).
            let probed = probe::cached(&self.run_home, "idmapped-lower-dir", || {
                if self.rootless {
                    Err("idmapped mounts are not supported in a user namespace".to_owned())
                } else {
                    probe::idmapped(&self.home)
                }
            });
            !self.rootless && probed.is_ok()
        })
    }

    /// Replaces `lowers` by paths inside idmapped views of their mapping roots, mounted
    /// at `<dir>/mapped/<n>`; returns the view mount points (to detach after mounting).
    fn map_lowers(
        &self,
        dir: &Path,
        lowers: &mut [PathBuf],
        uid_map: &[IdMap],
        gid_map: &[IdMap],
    ) -> Result<Vec<PathBuf>> {
        let ns = crate::sys::idmap::user_namespace(uid_map, gid_map)
            .map_err(|e| Error::io("create user namespace", dir, e))?;
        let mapped = dir.join("mapped");
        if !mapped.exists() {
            mkdir_mode(&mapped, 0o700)?;
        }
        let mut roots: Vec<(PathBuf, PathBuf)> = Vec::new();
        for lower in lowers.iter_mut() {
            let (root, rel) = idmapped::mapping_root(lower);
            let view = match roots.iter().find(|(r, _)| *r == root) {
                Some((_, v)) => v.clone(),
                None => {
                    let v = mapped.join(roots.len().to_string());
                    if !v.exists() {
                        mkdir_mode(&v, 0o700)?;
                    }
                    if let Err(e) = crate::sys::idmap::idmapped_mount(&root, &v, &ns) {
                        release_views(&roots.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
                        return Err(Error::io("create mapped mount for", &root, e));
                    }
                    roots.push((root, v.clone()));
                    v
                }
            };
            *lower = view.join(rel);
        }
        Ok(roots.into_iter().map(|(_, v)| v).collect())
    }

    /// Adds `delta` to the reference count of `path` (Go's `RefCounter`); returns the new
    /// count. The first use of a path counts a mount already there as one reference;
    /// a new reference to a path whose mount has gone starts again from zero.
    fn ref_add(&self, path: &Path, delta: i64) -> i64 {
        let mut refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        let e = refs.entry(path.to_path_buf()).or_default();
        if !e.checked {
            e.checked = true;
            if is_overlay_mounted(path) {
                e.count = 1;
            }
        } else if delta > 0 && e.count > 0 && !is_overlay_mounted(path) {
            e.count = 0;
        }
        e.count += delta;
        e.count
    }

    pub(super) fn mount_layer(&self, id: &str, opts: &MountOpts) -> Result<PathBuf> {
        let _serial = self.mount_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (dir, in_store) = self.dir(id);
        if !dir.is_dir() {
            return Err(Error::msg(
                ErrorKind::LayerUnknown,
                format!("stat {}: no such file or directory", dir.display()),
            ));
        }
        if !in_store && dir.starts_with(&self.home) && !dir.join("link").exists() {
            self.recreate_symlinks()?;
        }
        let merged = self.merged_dir(id, &dir, in_store);
        if !merged.exists() {
            // 1.47+: a new mount point belongs to container root under the *mount's* maps.
            let root = crate::common::root_pair(&opts.uid_map, &opts.gid_map)?;
            if in_store {
                mkdir_all(&merged, 0o700)?;
            } else {
                mkdir_mode(&merged, 0o700)?;
            }
            if root != (0, 0) {
                crate::common::chown(&merged, root)?;
            }
        }
        if self.ref_add(&merged, 1) != 1 {
            return Ok(merged);
        }
        match self.do_mount(id, &dir, &merged, opts, in_store) {
            Ok(()) => Ok(merged),
            Err(e) => {
                self.ref_add(&merged, -1);
                let _ = unmount(&merged);
                Err(e)
            }
        }
    }

    fn do_mount(
        &self,
        id: &str,
        dir: &Path,
        merged: &Path,
        opts: &MountOpts,
        in_store: bool,
    ) -> Result<()> {
        let mut options = if opts.options.is_empty() {
            self.cfg.mount_options.clone()
        } else {
            opts.options.clone()
        };
        if self.metacopy {
            if self.cfg.mount_options.iter().any(|o| o == "metacopy=on")
                && !options.iter().any(|o| o == "metacopy=on")
            {
                options.push("metacopy=on".to_owned());
            }
        } else {
            options.retain(|o| o != "metacopy=on");
        }
        let read_only = in_store || options.iter().any(|o| o == "ro");

        // Lowers: own diff1..N, then each lower element and its diffN.
        let mut lowers = Vec::new();
        let mut relative = Vec::new();
        let own_link = std::fs::read_to_string(dir.join("link")).unwrap_or_default();
        // Paths relative to the home exist only for layers in the home; a shorter list
        // rules the relative method out.
        let in_home = dir.starts_with(&self.home);
        for n in 1.. {
            let p = dir.join(format!("diff{n}"));
            if !p.is_dir() {
                break;
            }
            lowers.push(p);
            if in_home {
                relative.push(format!("{LINK_DIR}/{}/../diff{n}", own_link.trim()));
            }
        }
        let elems = self.lower_elems(dir)?;
        if elems.len() > MAX_DEPTH {
            return Err(invalid("max depth exceeded"));
        }
        for e in &elems {
            let p = self.lower_path(e)?;
            let rel_ok = p.starts_with(&self.home);
            lowers.push(p.clone());
            if rel_ok {
                relative.push(e.clone());
            }
            for n in 1.. {
                let extra = PathBuf::from(format!("{}/../diff{n}", p.display()));
                if !extra.is_dir() {
                    break;
                }
                lowers.push(extra);
                if rel_ok {
                    relative.push(format!("{e}/../diff{n}"));
                }
            }
        }
        let diff = dir.join("diff");
        if !diff.exists() {
            let mode = lowers
                .first()
                .and_then(|l| std::fs::metadata(l).ok())
                .map_or(0o555, |m| m.mode() & 0o7777);
            mkdir_mode(&diff, mode)?;
        }
        if lowers.is_empty() {
            lowers.push(dir.join("empty"));
            if in_home {
                relative.push(format!("{id}/empty"));
            }
        }
        let (mut flags, mut data) = mount_data::parse_options(&options);
        if read_only {
            flags |= rustix::mount::MountFlags::RDONLY;
        }
        if self.rootless && self.mount_program.is_none() {
            data.push("userxattr".to_owned());
        }
        if opts.volatile && self.volatile {
            data.push("volatile".to_owned());
        }
        // The kernel refuses to reuse the work dir of an earlier volatile mount while
        // this marker exists; Go deletes it before mounting.
        let _ = std::fs::remove_dir_all(dir.join("work/work/incompat/volatile"));
        let (upper, work) = if read_only {
            lowers.insert(0, diff.clone());
            if in_home {
                relative.insert(0, format!("{id}/diff"));
            }
            (None, None)
        } else {
            (Some(diff), Some(dir.join("work")))
        };
        if let Some(prog) = &self.mount_program {
            return self.mount_with_program(prog, &lowers, upper, work, &data, merged, opts);
        }
        let mut views = Vec::new();
        if !opts.uid_map.is_empty()
            && !opts.gid_map.is_empty()
            && self.supports_shifting(&opts.uid_map, &opts.gid_map)
        {
            views = self.map_lowers(dir, &mut lowers, &opts.uid_map, &opts.gid_map)?;
            // The views live below the layer dir, not under `l/`: no relative form.
            relative.clear();
        }
        let spec = mount_data::Spec {
            lowers,
            relative_lowers: relative,
            upper,
            work,
            data,
            flags,
            target: merged.to_path_buf(),
            home: self.home.clone(),
        };
        let mounted = mount_data::mount_overlay(&spec, mount_data::method_from_env());
        // The overlay holds its own references: the views go right away.
        release_views(&views);
        mounted.map_err(|e| {
            Error::msg(
                ErrorKind::Io,
                format!(
                    "error creating overlay mount to {}: {}",
                    merged.display(),
                    storage_types::go_io_error_text(&e)
                ),
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn mount_with_program(
        &self,
        prog: &Path,
        lowers: &[PathBuf],
        upper: Option<PathBuf>,
        work: Option<PathBuf>,
        extra: &[String],
        merged: &Path,
        opts: &MountOpts,
    ) -> Result<()> {
        let mut data = format!(
            "lowerdir={}",
            lowers
                .iter()
                .map(|l| l.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(":")
        );
        if let (Some(u), Some(w)) = (&upper, &work) {
            data.push_str(&format!(
                ",upperdir={},workdir={}",
                u.display(),
                w.display()
            ));
        }
        for e in extra {
            data.push(',');
            data.push_str(e);
        }
        let maps = |m: &[IdMap]| {
            m.iter()
                .map(|x| format!("{}:{}:{}", x.container_id, x.host_id, x.size))
                .collect::<Vec<_>>()
                .join(":")
        };
        // Go: a single one-ID map squashes every owner to it.
        match opts.uid_map.as_slice() {
            [] => {}
            [m] if m.size == 1 => data.push_str(&format!(",squash_to_uid={}", m.host_id)),
            all => data.push_str(&format!(",uidmapping={}", maps(all))),
        }
        match opts.gid_map.as_slice() {
            [] => {}
            [m] if m.size == 1 => data.push_str(&format!(",squash_to_gid={}", m.host_id)),
            all => data.push_str(&format!(",gidmapping={}", maps(all))),
        }
        if self.cfg.force_mask.is_some() {
            data.push_str(",xattr_permissions=2");
        }
        let out = std::process::Command::new(prog)
            .arg("-o")
            .arg(&data)
            .arg(merged)
            .current_dir(&self.home)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::io("exec", prog, e))?;
        if !out.status.success() {
            // A FUSE program that cannot open /dev/fuse says so on several lines; one
            // line saying what to do is more use.
            let text = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/fuse")
            {
                Err(e) => format!(
                    "cannot open /dev/fuse: {}: the user must be able to read and write /dev/fuse (normally mode 0666: chmod 0666 /dev/fuse), or use native overlay without a mount_program",
                    storage_types::go_io_error_text(&e)
                ),
                Ok(_) => format!(
                    "{}: {}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    out.status
                ),
            };
            return Err(Error::msg(
                ErrorKind::Io,
                format!("using mount program {}: {text}", prog.display()),
            ));
        }
        Ok(())
    }

    pub(super) fn unmount_layer(&self, id: &str) -> Result<()> {
        let _serial = self.mount_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (dir, in_store) = self.dir(id);
        let merged = self.merged_dir(id, &dir, in_store);
        if self.ref_add(&merged, -1) > 0 {
            return Ok(());
        }
        if let Ok(rd) = std::fs::read_dir(dir.join("mapped")) {
            let views: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            release_views(&views);
        }
        if self.mount_program.is_some() && is_mountpoint(&merged) {
            let ok = ["fusermount3", "fusermount"].iter().any(|p| {
                std::process::Command::new(p)
                    .arg("-u")
                    .arg(&merged)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            });
            if !ok && let Ok(f) = std::fs::File::open(&merged) {
                let _ = rustix::fs::syncfs(&f);
            }
        }
        unmount(&merged).map_err(|e| Error::io("unmount", &merged, e))?;
        if in_store {
            let _ = remove_all(&self.run_home.join(id));
        }
        Ok(())
    }

    pub(super) fn naive_mounts<T>(
        &self,
        id: &str,
        parent: Option<&str>,
        f: impl FnOnce(&Path, Option<&Path>) -> Result<T>,
    ) -> Result<T> {
        let ro = MountOpts {
            options: vec!["ro".to_owned()],
            ..MountOpts::default()
        };
        let layer = self.mount_layer(id, &ro)?;
        let parent_mount = match parent {
            Some(p) => match self.mount_layer(p, &ro) {
                Ok(m) => Some((p, m)),
                Err(e) => {
                    let _ = self.unmount_layer(id);
                    return Err(e);
                }
            },
            None => None,
        };
        let result = f(&layer, parent_mount.as_ref().map(|(_, m)| m.as_path()));
        if let Some((p, _)) = parent_mount {
            let _ = self.unmount_layer(p);
        }
        let _ = self.unmount_layer(id);
        result
    }
}
