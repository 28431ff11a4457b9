//! The mount system calls of the drivers: the classic `mount(2)` of an overlay, the new
//! mount API with one `lowerdir+` per lower (and its feature probe), a mount made from
//! a given working directory, `umount2`, `statfs`, `statx`'s mount-root bit and Go's
//! `mount.MakePrivate`.
//!
//! A mount from a working directory changes the working directory, which is per
//! process; it runs on a short-lived thread that first leaves the shared file-system
//! context (`unshare(CLONE_FS)`), so the caller's working directory is never touched.

use std::ffi::CString;
use std::path::Path;
use std::sync::OnceLock;

use rustix::fs::CWD;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
    UnmountFlags,
};

/// Overlay's `statfs` magic.
pub(crate) const OVERLAY_MAGIC: i64 = 0x794C_7630;
/// FUSE's `statfs` magic (fuse-overlayfs mounts).
pub(crate) const FUSE_MAGIC: i64 = 0x6573_5546;

/// The system's page size: the kernel's limit on a `mount(2)` data string.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

/// `mount("overlay", target, "overlay", flags, data)`.
pub(crate) fn mount_classic(data: &str, target: &Path, flags: MountFlags) -> std::io::Result<()> {
    let data = CString::new(data).map_err(std::io::Error::other)?;
    rustix::mount::mount("overlay", target, "overlay", flags, data.as_c_str())?;
    Ok(())
}

/// [`mount_classic`] with `dir` as the working directory, so that `data` may name
/// paths relative to it; the caller's working directory is not changed.
pub(crate) fn mount_classic_in(
    dir: &Path,
    data: String,
    target: &Path,
    flags: MountFlags,
) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    let target = target.to_path_buf();
    let handle = std::thread::spawn(move || -> std::io::Result<()> {
        // SAFETY: only CLONE_FS is unshared (cwd, root, umask of this thread); the
        // file descriptor table stays shared, so no fd becomes invisible to others.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }?;
        rustix::process::chdir(&dir)?;
        mount_classic(&data, &target, flags)
    });
    handle
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("mount thread panicked")))
}

fn attr_flags(flags: MountFlags) -> MountAttrFlags {
    let mut a = MountAttrFlags::empty();
    for (m, f) in [
        (MountFlags::RDONLY, MountAttrFlags::MOUNT_ATTR_RDONLY),
        (MountFlags::NOSUID, MountAttrFlags::MOUNT_ATTR_NOSUID),
        (MountFlags::NODEV, MountAttrFlags::MOUNT_ATTR_NODEV),
        (MountFlags::NOEXEC, MountAttrFlags::MOUNT_ATTR_NOEXEC),
        (MountFlags::NOATIME, MountAttrFlags::MOUNT_ATTR_NOATIME),
        (
            MountFlags::STRICTATIME,
            MountAttrFlags::MOUNT_ATTR_STRICTATIME,
        ),
        (
            MountFlags::NODIRATIME,
            MountAttrFlags::MOUNT_ATTR_NODIRATIME,
        ),
    ] {
        if flags.contains(m) {
            a |= f;
        }
    }
    a
}

/// The new mount API: one `lowerdir+` per lower (nearest first), so the list has no
/// length limit besides the kernel's stacking depth; `data` holds `key=value` options
/// and flags.
pub(crate) fn mount_new_api(
    lowers: &[std::path::PathBuf],
    upper_work: Option<(&Path, &Path)>,
    data: &[String],
    flags: MountFlags,
    target: &Path,
) -> std::io::Result<()> {
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for l in lowers {
        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l)?;
    }
    if let Some((u, w)) = upper_work {
        rustix::mount::fsconfig_set_string(&fs, "upperdir", u)?;
        rustix::mount::fsconfig_set_string(&fs, "workdir", w)?;
    }
    for d in data {
        match d.split_once('=') {
            Some((k, v)) => rustix::mount::fsconfig_set_string(&fs, k, v)?,
            None => rustix::mount::fsconfig_set_flag(&fs, d.as_str())?,
        }
    }
    if flags.contains(MountFlags::RDONLY) {
        rustix::mount::fsconfig_set_flag(&fs, "ro")?;
    }
    rustix::mount::fsconfig_create(&fs)?;
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attr_flags(flags))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// Whether the kernel's overlay takes `lowerdir+` (Linux ≥ 6.8).
pub(crate) fn new_api_has_lowerdir_plus() -> bool {
    static CACHE: OnceLock<bool> = OnceLock::new();
    *CACHE.get_or_init(|| {
        // Setting the key is not enough: before 6.5 overlay had no fs_context of its own,
        // and the kernel's legacy context accepts any key (it only appends it to the option
        // string, which overlay then rejects with EINVAL at creation). So build a real
        // superblock from two empty lowers; dropping the fs fd discards it.
        let Ok(dirs) = tempfile::Builder::new().prefix(".lowerdir-probe").tempdir() else {
            return false;
        };
        let (a, b) = (dirs.path().join("a"), dirs.path().join("b"));
        if std::fs::create_dir(&a).is_err() || std::fs::create_dir(&b).is_err() {
            return false;
        }
        rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
            .and_then(|fs| {
                rustix::mount::fsconfig_set_string(&fs, "lowerdir+", &a)?;
                rustix::mount::fsconfig_set_string(&fs, "lowerdir+", &b)?;
                rustix::mount::fsconfig_create(&fs)
            })
            .is_ok()
    })
}

/// `umount2(target, MNT_DETACH)`, ignoring "not mounted" (EINVAL) and a missing path.
pub(crate) fn unmount(target: &Path) -> std::io::Result<()> {
    match rustix::mount::unmount(target, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `statfs` magic of `path`.
pub(crate) fn fs_magic(path: &Path) -> Option<i64> {
    rustix::fs::statfs(path).ok().map(|s| s.f_type)
}

/// `statx`'s `STATX_ATTR_MOUNT_ROOT` (Linux ≥ 5.8): whether `path` is a mount point,
/// `None` when the kernel does not report it (or `statx` fails).
pub(crate) fn is_mount_root(path: &Path) -> Option<bool> {
    use rustix::fs::{StatxAttributes, StatxFlags};
    let st = rustix::fs::statx(
        CWD,
        path,
        rustix::fs::AtFlags::empty(),
        StatxFlags::BASIC_STATS,
    )
    .ok()?;
    st.stx_attributes_mask
        .contains(StatxAttributes::MOUNT_ROOT)
        .then(|| st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
}

/// Go's `mount.MakePrivate`: bind `path` on itself unless it is a mount point, then
/// mark it private.
pub(crate) fn make_private(path: &Path) -> std::io::Result<()> {
    if !crate::mountinfo::is_mountpoint(path) {
        rustix::mount::mount_bind(path, path)?;
    }
    rustix::mount::mount_change(path, MountPropagationFlags::PRIVATE)?;
    Ok(())
}
