//! The btrfs ioctls the driver needs (subvolumes, snapshots, quota groups). Every
//! `unsafe` block of the btrfs driver lives here.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BTRFS_PATH_NAME_MAX: usize = 4087;
const BTRFS_SUBVOL_NAME_MAX: usize = 4039;
/// The root directory of every subvolume has this inode number.
pub(crate) const FIRST_FREE_OBJECTID: u64 = 256;
const QGROUP_LIMIT_MAX_RFER: u64 = 1 << 0;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; BTRFS_PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2`.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; BTRFS_SUBVOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_quota_ctl_args`.
#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

/// `struct btrfs_qgroup_limit` inside `struct btrfs_ioctl_qgroup_limit_args`.
#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

/// `struct btrfs_ioctl_qgroup_create_args`.
#[repr(C)]
struct QgroupCreateArgs {
    create: u64,
    qgroupid: u64,
}

/// `struct btrfs_ioctl_quota_rescan_args`.
#[repr(C)]
struct QuotaRescanArgs {
    flags: u64,
    progress: u64,
    reserved: [u64; 6],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

const fn iow(nr: u64, size: usize) -> u64 {
    (1 << 30) | ((size as u64) << 16) | (0x94 << 8) | nr
}
const fn ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (0x94 << 8) | nr
}
const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (0x94 << 8) | nr
}

const SNAP_DESTROY: u64 = iow(15, std::mem::size_of::<VolArgs>());
const SUBVOL_CREATE: u64 = iow(14, std::mem::size_of::<VolArgs>());
const SNAP_CREATE_V2: u64 = iow(23, std::mem::size_of::<VolArgsV2>());
const INO_LOOKUP: u64 = iowr(18, std::mem::size_of::<InoLookupArgs>());
const QUOTA_CTL: u64 = iowr(40, std::mem::size_of::<QuotaCtlArgs>());
const QGROUP_CREATE: u64 = iow(42, std::mem::size_of::<QgroupCreateArgs>());
const QGROUP_LIMIT: u64 = ior(43, std::mem::size_of::<QgroupLimitArgs>());
const QUOTA_RESCAN: u64 = iow(44, std::mem::size_of::<QuotaRescanArgs>());

fn open_dir(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
}

/// Runs `ioctl(fd, req, arg)`.
///
/// # Safety
///
/// `arg` must point to the structure `req` expects, valid for reads and writes for
/// the duration of the call.
unsafe fn ioctl<T>(f: &File, req: u64, arg: *mut T) -> std::io::Result<()> {
    // SAFETY: the fd is open (borrowed `File`); the caller guarantees `arg`.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req as _, arg) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn copy_name(dst: &mut [u8], name: &OsStr) -> std::io::Result<()> {
    let b = name.as_bytes();
    if b.len() >= dst.len() || b.contains(&0) {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    dst[..b.len()].copy_from_slice(b);
    Ok(())
}

/// `BTRFS_IOC_SUBVOL_CREATE`: a new empty subvolume `name` in `parent`.
pub(crate) fn subvol_create(parent: &Path, name: &OsStr) -> std::io::Result<()> {
    let dir = open_dir(parent)?;
    let mut args = Box::new(VolArgs {
        fd: 0,
        name: [0; BTRFS_PATH_NAME_MAX + 1],
    });
    copy_name(&mut args.name, name)?;
    // SAFETY: `args` is a live, correctly sized btrfs_ioctl_vol_args.
    unsafe { ioctl(&dir, SUBVOL_CREATE, &mut *args) }
}

/// `BTRFS_IOC_SNAP_CREATE_V2`: a writable snapshot of `source` named `name` in `parent`.
pub(crate) fn snapshot(source: &Path, parent: &Path, name: &OsStr) -> std::io::Result<()> {
    let src = open_dir(source)?;
    let dir = open_dir(parent)?;
    let mut args = Box::new(VolArgsV2 {
        fd: i64::from(src.as_raw_fd()),
        transid: 0,
        flags: 0,
        unused: [0; 4],
        name: [0; BTRFS_SUBVOL_NAME_MAX + 1],
    });
    copy_name(&mut args.name, name)?;
    // SAFETY: `args` is a live btrfs_ioctl_vol_args_v2; `src` stays open during the call.
    unsafe { ioctl(&dir, SNAP_CREATE_V2, &mut *args) }
}

/// `BTRFS_IOC_SNAP_DESTROY` of the subvolume `name` in `parent`.
pub(crate) fn subvol_destroy(parent: &Path, name: &OsStr) -> std::io::Result<()> {
    let dir = open_dir(parent)?;
    let mut args = Box::new(VolArgs {
        fd: 0,
        name: [0; BTRFS_PATH_NAME_MAX + 1],
    });
    copy_name(&mut args.name, name)?;
    // SAFETY: `args` is a live, correctly sized btrfs_ioctl_vol_args.
    unsafe { ioctl(&dir, SNAP_DESTROY, &mut *args) }
}

/// The subvolume (tree) ID containing `path` (`BTRFS_IOC_INO_LOOKUP`).
pub(crate) fn subvol_id(path: &Path) -> std::io::Result<u64> {
    let dir = open_dir(path)?;
    let mut args = Box::new(InoLookupArgs {
        treeid: 0,
        objectid: FIRST_FREE_OBJECTID,
        name: [0; 4080],
    });
    // SAFETY: `args` is a live btrfs_ioctl_ino_lookup_args the kernel fills in.
    unsafe { ioctl(&dir, INO_LOOKUP, &mut *args) }?;
    Ok(args.treeid)
}

/// `BTRFS_IOC_QUOTA_CTL(ENABLE)` on the file system of `path`.
pub(crate) fn quota_enable(path: &Path) -> std::io::Result<()> {
    let dir = open_dir(path)?;
    let mut args = QuotaCtlArgs { cmd: 1, status: 0 };
    // SAFETY: `args` is a live btrfs_ioctl_quota_ctl_args.
    unsafe { ioctl(&dir, QUOTA_CTL, &mut args) }
}

/// `BTRFS_IOC_QGROUP_LIMIT`: limit the referenced bytes of the subvolume at `path`.
pub(crate) fn qgroup_limit(path: &Path, max_rfer: u64) -> std::io::Result<()> {
    let dir = open_dir(path)?;
    let mut args = QgroupLimitArgs {
        qgroupid: 0,
        flags: QGROUP_LIMIT_MAX_RFER,
        max_rfer,
        max_excl: 0,
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    // SAFETY: `args` is a live btrfs_ioctl_qgroup_limit_args.
    unsafe { ioctl(&dir, QGROUP_LIMIT, &mut args) }
}

/// `BTRFS_IOC_QGROUP_CREATE(create=0)`: destroy the qgroup `0/<id>`.
pub(crate) fn qgroup_destroy(fs_path: &Path, id: u64) -> std::io::Result<()> {
    let dir = open_dir(fs_path)?;
    let mut args = QgroupCreateArgs {
        create: 0,
        qgroupid: id,
    };
    // SAFETY: `args` is a live btrfs_ioctl_qgroup_create_args.
    unsafe { ioctl(&dir, QGROUP_CREATE, &mut args) }
}

/// `BTRFS_IOC_QUOTA_RESCAN`.
pub(crate) fn quota_rescan(fs_path: &Path) -> std::io::Result<()> {
    let dir = open_dir(fs_path)?;
    let mut args = QuotaRescanArgs {
        flags: 0,
        progress: 0,
        reserved: [0; 6],
    };
    // SAFETY: `args` is a live btrfs_ioctl_quota_rescan_args.
    unsafe { ioctl(&dir, QUOTA_RESCAN, &mut args) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_kernel_headers() {
        assert_eq!(SUBVOL_CREATE, 0x5000_940E);
        assert_eq!(SNAP_DESTROY, 0x5000_940F);
        assert_eq!(SNAP_CREATE_V2, 0x5000_9417);
        assert_eq!(INO_LOOKUP, 0xD000_9412);
        assert_eq!(QUOTA_CTL, 0xC010_9428);
        assert_eq!(QGROUP_CREATE, 0x4010_942A);
        assert_eq!(QGROUP_LIMIT, 0x8030_942B);
        assert_eq!(QUOTA_RESCAN, 0x4040_942C);
    }

    #[test]
    fn names_are_bounded() {
        let mut buf = [0u8; 8];
        assert!(copy_name(&mut buf, OsStr::new("1234567")).is_ok());
        assert!(copy_name(&mut buf, OsStr::new("12345678")).is_err());
        assert!(copy_name(&mut buf, OsStr::from_bytes(b"a\0b")).is_err());
    }

    #[test]
    fn ioctls_fail_cleanly_off_btrfs() {
        let tmp = tempfile::tempdir().unwrap();
        if rustix::fs::statfs(tmp.path()).is_ok_and(|s| s.f_type == 0x9123_683E) {
            return;
        }
        assert!(subvol_create(tmp.path(), OsStr::new("x")).is_err());
        assert!(subvol_id(tmp.path()).is_err());
        assert!(!tmp.path().join("x").exists());
    }
}
