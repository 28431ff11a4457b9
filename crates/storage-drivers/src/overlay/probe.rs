//! Feature probes of the overlay driver, cached in the run home under Go's file names
//! (`overlay-true`, `metacopy(<mountopt>)-false`, `native-diff(<mountopt>)-true`,
//! `volatile-true`, …: empty for `-true`, the error text for `-false`).
//!
//! Every probe works in a temporary directory inside the driver home (`compat*`,
//! `metacopy-check*`, `opaque-bug-check*`, `volatile-check*`) that is unmounted and
//! removed before the probe returns, so Go's garbage collection never sees it.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::mount::MountFlags;

use super::mount_data::parse_options;
use crate::mountinfo::is_mountpoint;
use crate::sys::mount::{mount_classic, unmount};

/// Outcome of a probe: `Err` carries Go's error text.
pub(crate) type Probe = std::result::Result<(), String>;

/// Go's lookup: `<feature>-true`, else `<feature>-false` (its content is the error),
/// else run `probe` and record the answer.
pub(crate) fn cached(run_home: &Path, feature: &str, probe: impl FnOnce() -> Probe) -> Probe {
    let yes = run_home.join(format!("{feature}-true"));
    let no = run_home.join(format!("{feature}-false"));
    if yes.exists() {
        return Ok(());
    }
    if let Ok(text) = std::fs::read_to_string(&no) {
        return Err(text);
    }
    let result = probe();
    let (file, content) = match &result {
        Ok(()) => (yes, String::new()),
        Err(e) => (no, e.clone()),
    };
    // A cache write failure only costs a re-probe next time.
    let _ = std::fs::write(&file, content);
    result
}

/// A probe directory in the driver home; unmounted and removed on drop.
pub(crate) struct TempProbeDir {
    pub path: PathBuf,
}

impl TempProbeDir {
    pub(crate) fn new(home: &Path, prefix: &str) -> std::io::Result<TempProbeDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let path = home.join(format!(
                "{prefix}{}",
                u64::from(nanos) ^ (u64::from(std::process::id()) << 20) ^ n
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(TempProbeDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("cannot create a probe directory"))
    }

    fn sub(&self, parts: &[&str]) -> std::io::Result<Vec<PathBuf>> {
        parts
            .iter()
            .map(|p| {
                let d = self.path.join(p);
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&d)?;
                Ok(d)
            })
            .collect()
    }
}

impl Drop for TempProbeDir {
    fn drop(&mut self) {
        for sub in ["merged", "mapped"] {
            let p = self.path.join(sub);
            if is_mountpoint(&p) {
                let _ = unmount(&p);
            }
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn io_text(e: &std::io::Error) -> String {
    storage_types::go_io_error_text(e)
}

fn mount_data(
    lowers: &[&Path],
    upper: &Path,
    work: &Path,
    extra: &[String],
) -> (String, MountFlags) {
    let (flags, data) = parse_options(extra);
    let mut s = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers
            .iter()
            .map(|l| l.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":"),
        upper.display(),
        work.display()
    );
    for d in data {
        s.push(',');
        s.push_str(&d);
    }
    (s, flags)
}

/// Go's `doesSupportNativeOverlay`/`supportsOverlay`: a two-lower mount with a whiteout.
pub(crate) fn overlay(home: &Path, backing_fs: &str, extra: &[String]) -> Probe {
    let t = TempProbeDir::new(home, "compat").map_err(|e| io_text(&e))?;
    let dirs = t
        .sub(&["lower1", "lower2/subdir", "upper", "work", "merged"])
        .map_err(|e| io_text(&e))?;
    std::fs::write(dirs[1].join("file"), b"").map_err(|e| io_text(&e))?;
    // A whiteout in the upper dir, as the real layers carry them.
    let _ = rustix::fs::mknodat(
        rustix::fs::CWD,
        dirs[2].join("whiteout"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    );
    let lower2 = t.path.join("lower2");
    let (data, flags) = mount_data(&[&dirs[0], &lower2], &dirs[2], &dirs[3], extra);
    match mount_classic(&data, &dirs[4], flags) {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(dirs[4].join("subdir"));
            unmount(&dirs[4]).map_err(|e| io_text(&e))?;
            Ok(())
        }
        Err(_) => {
            let (single, flags) = mount_data(&[&dirs[0]], &dirs[2], &dirs[3], extra);
            if mount_classic(&single, &dirs[4], flags).is_ok() {
                let _ = unmount(&dirs[4]);
                return Err(format!(
                    "kernel too old to provide multiple lowers feature for overlay: {}",
                    crate::common::ERR_NOT_SUPPORTED
                ));
            }
            Err(format!(
                "'overlay' is not supported over {backing_fs} at {:?}: {}",
                home.display().to_string(),
                crate::common::ERR_INCOMPATIBLE_FS
            ))
        }
    }
}

/// Go's `doesMetacopy`: does a chmod through the mount leave a metacopy-only upper?
pub(crate) fn metacopy(home: &Path, extra: &[String], xattr_prefix: &str) -> Probe {
    let t = TempProbeDir::new(home, "metacopy-check").map_err(|e| io_text(&e))?;
    let dirs = t
        .sub(&["l1", "l2", "work", "merged"])
        .map_err(|e| io_text(&e))?;
    let f = dirs[0].join("f");
    std::fs::write(&f, b"").map_err(|e| io_text(&e))?;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_text(&e))?;
    // Like Go: only the configured options; metacopy counts when the kernel (module
    // default or `metacopy=on` in mountopt) turns it on.
    let (data, flags) = mount_data(&[&dirs[0]], &dirs[1], &dirs[2], extra);
    if let Err(e) = mount_classic(&data, &dirs[3], flags) {
        return Err(format!(
            "failed to mount overlay for metacopy check: {}",
            io_text(&e)
        ));
    }
    let chmod = std::fs::set_permissions(dirs[3].join("f"), std::fs::Permissions::from_mode(0o600));
    let _ = unmount(&dirs[3]);
    chmod.map_err(|e| io_text(&e))?;
    let name = format!("{xattr_prefix}metacopy");
    if storage_archive::xattr::get(&dirs[1].join("f"), &name).is_some() {
        Ok(())
    } else {
        Err("metacopy is not enabled".to_owned())
    }
}

/// Go's `doesSupportNativeDiff`: the opaque flag must not be copied up, and a directory
/// rename must fail with EXDEV instead of leaving a redirect.
pub(crate) fn native_diff(home: &Path, extra: &[String], xattr_prefix: &str) -> Probe {
    let t = TempProbeDir::new(home, "opaque-bug-check").map_err(|e| io_text(&e))?;
    let dirs = t
        .sub(&["l1", "l2", "l3", "work", "merged", "l1/d1", "l2/d"])
        .map_err(|e| io_text(&e))?;
    let opaque = format!("{xattr_prefix}opaque");
    rustix::fs::lsetxattr(
        &dirs[6],
        opaque.as_str(),
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(|e| {
        format!(
            "failed to set opaque flag on middle layer: {}",
            io_text(&e.into())
        )
    })?;
    let (data, flags) = mount_data(&[&dirs[1], &dirs[0]], &dirs[2], &dirs[3], extra);
    mount_classic(&data, &dirs[4], flags)
        .map_err(|e| format!("failed to mount overlay: {}", io_text(&e)))?;
    let result = (|| {
        std::fs::write(dirs[4].join("d/f"), b"")
            .map_err(|e| format!("failed to write to merged directory: {}", io_text(&e)))?;
        if storage_archive::xattr::get(&dirs[2].join("d"), &opaque).is_some_and(|v| v == b"y") {
            return Err(
                "opaque flag erroneously copied up, consider update to kernel 4.8 or later to fix"
                    .to_owned(),
            );
        }
        match std::fs::rename(dirs[4].join("d1"), dirs[4].join("d2")) {
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Ok(()),
            Err(e) => Err(format!(
                "failed to rename dir in merged directory: {}",
                io_text(&e)
            )),
            Ok(()) => {
                let redirect = format!("{xattr_prefix}redirect");
                if storage_archive::xattr::get(&dirs[2].join("d2"), &redirect).is_some() {
                    Err("kernel has CONFIG_OVERLAY_FS_REDIRECT_DIR enabled".to_owned())
                } else {
                    Ok(())
                }
            }
        }
    })();
    let _ = unmount(&dirs[4]);
    result
}

/// Go's `supportsVolatile`: does a mount with `volatile` work?
pub(crate) fn volatile(home: &Path, extra: &[String]) -> Probe {
    let t = TempProbeDir::new(home, "volatile-check").map_err(|e| io_text(&e))?;
    let dirs = t
        .sub(&["lower", "upper", "work", "merged"])
        .map_err(|e| io_text(&e))?;
    let mut opts = extra.to_vec();
    opts.push("volatile".to_owned());
    let (data, flags) = mount_data(&[&dirs[0]], &dirs[1], &dirs[2], &opts);
    mount_classic(&data, &dirs[3], flags)
        .map_err(|e| format!("failed to mount overlay with volatile: {}", io_text(&e)))?;
    let _ = unmount(&dirs[3]);
    Ok(())
}

/// Go's `supportsIdmappedLowerLayers`: an overlay whose lower is an idmapped mount.
pub(crate) fn idmapped(home: &Path) -> Probe {
    let t = TempProbeDir::new(home, "idmapped-check").map_err(|e| io_text(&e))?;
    let dirs = t
        .sub(&["lower", "upper", "work", "merged", "mapped"])
        .map_err(|e| io_text(&e))?;
    let map = [storage_types::IdMap {
        container_id: 0,
        host_id: 1,
        size: 1,
    }];
    let ns = crate::sys::idmap::user_namespace(&map, &map)
        .map_err(|e| format!("create user namespace: {}", io_text(&e)))?;
    crate::sys::idmap::idmapped_mount(&dirs[0], &dirs[4], &ns)
        .map_err(|e| format!("create mapped mount: {}", io_text(&e)))?;
    let (data, flags) = mount_data(&[&dirs[4]], &dirs[1], &dirs[2], &[]);
    let r = mount_classic(&data, &dirs[3], flags);
    let _ = unmount(&dirs[3]);
    let _ = unmount(&dirs[4]);
    r.map_err(|e| format!("mount overlay with idmapped lower: {}", io_text(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_files_follow_go_names() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ran = 0;
        assert!(
            cached(tmp.path(), "native-diff()", || {
                ran += 1;
                Err("kernel has CONFIG_OVERLAY_FS_REDIRECT_DIR enabled".to_owned())
            })
            .is_err()
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("native-diff()-false")).unwrap(),
            "kernel has CONFIG_OVERLAY_FS_REDIRECT_DIR enabled"
        );
        // Cached: the probe does not run again.
        let again = cached(tmp.path(), "native-diff()", || {
            ran += 1;
            Ok(())
        });
        assert_eq!(ran, 1);
        assert_eq!(
            again,
            Err("kernel has CONFIG_OVERLAY_FS_REDIRECT_DIR enabled".to_owned())
        );
        assert!(cached(tmp.path(), "overlay", || Ok(())).is_ok());
        assert_eq!(std::fs::read(tmp.path().join("overlay-true")).unwrap(), b"");
    }

    #[test]
    fn probe_dirs_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let t = TempProbeDir::new(tmp.path(), "compat").unwrap();
            assert!(
                t.path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("compat")
            );
            t.sub(&["a/b"]).unwrap();
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
