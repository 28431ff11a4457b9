//! XFS project quotas for overlay's writable layers (Go's `drivers/quota`).
//!
//! A [`Control`] owns a range of project IDs starting above the home's own project ID
//! (or a value derived from the home's inode) and a block device node
//! `<home>/backingFsBlockDev` that `quotactl` needs. Each quota'd layer directory gets
//! the next project ID with the inherit flag set, then a block and inode limit.
//!
//! The kernel calls (`FS_IOC_FSGETXATTR`/`FS_IOC_FSSETXATTR` ioctls and
//! `quotactl(Q_XSETQLIM)`) are in `crate::sys::quota`. On kernels without XFS quota
//! support the setup fails and the driver reports Go's "only supported for backingFS XFS"
//! error.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use storage_types::{Error, ErrorKind, Result};

pub(crate) use crate::sys::quota::Quota;
use crate::sys::quota::{FS_XFLAG_PROJINHERIT, get_fsxattr, set_fsxattr, set_project_quota};

/// Go's `quota.Control`.
#[derive(Debug)]
pub(crate) struct Control {
    backing_dev: PathBuf,
    next_projid: Mutex<u32>,
}

/// Go's first project ID when the home has none.
fn min_project_id(home_projid: u32, home_ino: u64) -> u32 {
    if home_projid != 0 {
        return home_projid;
    }
    let span = u64::from(u32::MAX) - 10000;
    // The remainder is below `span`, so the sum stays below u32::MAX: no truncation.
    (10000 + (home_ino.wrapping_mul(10000)) % span) as u32
}

/// The project ID after `min` and after every project ID already in use below the home.
/// Both come from the disk, so the additions saturate (a home whose project ID is
/// u32::MAX must not overflow).
fn next_project_id(min: u32, used: impl IntoIterator<Item = u32>) -> u32 {
    used.into_iter().fold(min.saturating_add(1), |next, id| {
        if id >= next {
            id.saturating_add(1)
        } else {
            next
        }
    })
}

impl Control {
    /// Sets up project quotas below `home` (Go's `NewControl`).
    pub(crate) fn new(home: &Path) -> Result<Control> {
        let err = |e: std::io::Error| {
            Error::msg(
                ErrorKind::NotSupported,
                format!(
                    "quota support not available on {}: {}",
                    home.display(),
                    storage_types::go_io_error_text(&e)
                ),
            )
        };
        let md = std::fs::metadata(home).map_err(|e| Error::io("stat", home, e))?;
        let mut attr = get_fsxattr(home).map_err(err)?;
        let min = min_project_id(attr.projid, md.ino());
        let backing_dev = home.join("backingFsBlockDev");
        let tmp = home.join("backingFsBlockDev.tmp");
        let _ = std::fs::remove_file(&tmp);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &tmp,
            rustix::fs::FileType::BlockDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            md.dev(),
        )
        .map_err(|e| err(e.into()))?;
        std::fs::rename(&tmp, &backing_dev).map_err(|e| Error::io("rename", &tmp, e))?;
        if let Err(e) = set_project_quota(&backing_dev, min, &Quota::default()) {
            let _ = std::fs::remove_file(&backing_dev);
            return Err(err(e));
        }
        if attr.xflags & FS_XFLAG_PROJINHERIT != 0 {
            attr.xflags &= !FS_XFLAG_PROJINHERIT;
            set_fsxattr(home, &attr).map_err(err)?;
        }
        let used = std::fs::read_dir(home)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| get_fsxattr(&e.path()).ok())
            .map(|a| a.projid);
        let next = next_project_id(min, used);
        Ok(Control {
            backing_dev,
            next_projid: Mutex::new(next),
        })
    }

    /// Gives the (empty) directory `dir` its own project and limits (Go's `SetQuota`).
    pub(crate) fn set_quota(&self, dir: &Path, q: &Quota) -> Result<()> {
        let mut next = self.next_projid.lock().unwrap_or_else(|p| p.into_inner());
        let projid = *next;
        let mut attr = get_fsxattr(dir).map_err(|e| Error::io("ioctl", dir, e))?;
        attr.projid = projid;
        attr.xflags |= FS_XFLAG_PROJINHERIT;
        set_fsxattr(dir, &attr).map_err(|e| Error::io("ioctl", dir, e))?;
        set_project_quota(&self.backing_dev, projid, q).map_err(|e| {
            Error::msg(
                ErrorKind::Io,
                format!(
                    "failed to set quota limit for projid {projid} on {}: {}",
                    self.backing_dev.display(),
                    storage_types::go_io_error_text(&e)
                ),
            )
        })?;
        *next = projid.saturating_add(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_from_disk_never_overflow() {
        assert_eq!(next_project_id(10, []), 11);
        assert_eq!(next_project_id(10, [3, 12, 11]), 13);
        // A home (or a layer) carrying the largest project ID used to overflow `min + 1`.
        assert_eq!(next_project_id(u32::MAX, []), u32::MAX);
        assert_eq!(next_project_id(10, [u32::MAX]), u32::MAX);
        assert!(min_project_id(0, u64::MAX) >= 10000);
        assert_eq!(min_project_id(7, 1), 7);
    }

    #[test]
    fn project_id_base() {
        assert_eq!(min_project_id(42, 7), 42);
        assert_eq!(min_project_id(0, 1), 20000);
        assert!(min_project_id(0, u64::MAX) >= 10000);
    }

    #[test]
    fn fsxattr_ioctl_on_this_fs() {
        // ext4 and xfs implement FS_IOC_FSGETXATTR; tmpfs may not.
        let tmp = tempfile::tempdir().unwrap();
        match get_fsxattr(tmp.path()) {
            Ok(a) => assert_eq!(a.xflags & FS_XFLAG_PROJINHERIT, 0),
            Err(e) => assert!(
                matches!(
                    e.raw_os_error(),
                    Some(libc::ENOTTY | libc::EOPNOTSUPP | libc::EINVAL)
                ),
                "{e}"
            ),
        }
        // Without XFS quota support the setup fails cleanly and leaves no device node.
        if let Err(e) = Control::new(tmp.path()) {
            assert_eq!(e.kind(), ErrorKind::NotSupported);
            assert!(!tmp.path().join("backingFsBlockDev").exists());
        }
    }
}
