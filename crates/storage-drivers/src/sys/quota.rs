//! XFS project quota calls (Go's `drivers/quota` system calls): the
//! `FS_IOC_FSGETXATTR`/`FS_IOC_FSSETXATTR` ioctls and `quotactl(Q_XSETQLIM)`, with the
//! kernel structures they take. The quota logic is overlay's `quota` module.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Limits of one layer (0 = tracked, not limited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Quota {
    /// Bytes.
    pub size: u64,
    /// Inodes.
    pub inodes: u64,
}

/// `struct fsxattr` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FsXattr {
    pub(crate) xflags: u32,
    extsize: u32,
    nextents: u32,
    pub(crate) projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// `struct fs_disk_quota` of `<linux/dqblk_xfs.h>`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsDiskQuota {
    version: i8,
    flags: i8,
    fieldmask: u16,
    id: u32,
    blk_hardlimit: u64,
    blk_softlimit: u64,
    ino_hardlimit: u64,
    ino_softlimit: u64,
    bcount: u64,
    icount: u64,
    itimer: i32,
    btimer: i32,
    iwarns: u16,
    bwarns: u16,
    itimer_hi: i8,
    btimer_hi: i8,
    rtbtimer_hi: i8,
    padding2: i8,
    rtb_hardlimit: u64,
    rtb_softlimit: u64,
    rtbcount: u64,
    rtbtimer: i32,
    rtbwarns: u16,
    padding3: i16,
    padding4: [i8; 8],
}

const FS_IOC_FSGETXATTR: u64 = 0x801c_581f;
const FS_IOC_FSSETXATTR: u64 = 0x401c_5820;
pub(crate) const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
const FS_DQUOT_VERSION: i8 = 1;
const FS_PROJ_QUOTA: i8 = 2;
const FS_DQ_ISOFT: u16 = 1 << 0;
const FS_DQ_IHARD: u16 = 1 << 1;
const FS_DQ_BSOFT: u16 = 1 << 2;
const FS_DQ_BHARD: u16 = 1 << 3;
const PRJQUOTA: i32 = 2;
/// `XQM_CMD(4)`.
const Q_XSETQLIM: i32 = (b'X' as i32) << 8 | 4;

/// `QCMD(cmd, type)`.
fn qcmd(cmd: i32, kind: i32) -> i32 {
    (cmd << 8) | (kind & 0xff)
}

/// `FS_IOC_FSGETXATTR` on `path`.
pub(crate) fn get_fsxattr(path: &Path) -> std::io::Result<FsXattr> {
    let f = std::fs::File::open(path)?;
    let mut attr = FsXattr::default();
    // SAFETY: the fd is open for the call's duration and `attr` is a properly sized,
    // writable `struct fsxattr`, which is what FS_IOC_FSGETXATTR fills in.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSGETXATTR as _, &mut attr) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr)
}

/// `FS_IOC_FSSETXATTR` on `path`.
pub(crate) fn set_fsxattr(path: &Path, attr: &FsXattr) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    // SAFETY: the fd is open for the call's duration and `attr` points to a valid
    // `struct fsxattr` that the kernel only reads.
    let r = unsafe {
        libc::ioctl(
            f.as_raw_fd(),
            FS_IOC_FSSETXATTR as _,
            attr as *const FsXattr,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The block and inode limits as `quotactl` wants them (blocks of 512 bytes).
fn disk_quota(projid: u32, q: &Quota) -> FsDiskQuota {
    FsDiskQuota {
        version: FS_DQUOT_VERSION,
        flags: FS_PROJ_QUOTA,
        fieldmask: FS_DQ_BSOFT | FS_DQ_BHARD | FS_DQ_ISOFT | FS_DQ_IHARD,
        id: projid,
        blk_hardlimit: q.size / 512,
        blk_softlimit: q.size / 512,
        ino_hardlimit: q.inodes,
        ino_softlimit: q.inodes,
        ..FsDiskQuota::default()
    }
}

/// `quotactl(Q_XSETQLIM)` of project `projid` on the block device `dev`.
pub(crate) fn set_project_quota(dev: &Path, projid: u32, q: &Quota) -> std::io::Result<()> {
    let dev = CString::new(dev.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut d = disk_quota(projid, q);
    // SAFETY: `dev` is a NUL-terminated path and `d` a valid `struct fs_disk_quota`
    // that Q_XSETQLIM reads; both outlive the call.
    let r = unsafe {
        libc::quotactl(
            qcmd(Q_XSETQLIM, PRJQUOTA),
            dev.as_ptr(),
            projid as i32,
            (&mut d as *mut FsDiskQuota).cast(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_struct_layouts() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<FsDiskQuota>(), 112);
        assert_eq!(FS_IOC_FSGETXATTR & 0x3fff_0000, 28 << 16);
        assert_eq!(qcmd(Q_XSETQLIM, PRJQUOTA), 0x0058_0402);
    }

    #[test]
    fn limits_in_512_byte_blocks() {
        let d = disk_quota(
            10001,
            &Quota {
                size: 10 << 20,
                inodes: 100,
            },
        );
        assert_eq!(d.blk_hardlimit, 20480);
        assert_eq!(d.blk_softlimit, 20480);
        assert_eq!(d.ino_hardlimit, 100);
        assert_eq!(d.id, 10001);
        assert_eq!(d.flags, FS_PROJ_QUOTA);
    }
}
