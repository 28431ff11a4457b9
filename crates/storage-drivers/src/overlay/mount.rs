//! Kernel mount plumbing of the overlay driver: option parsing like Go's
//! `mount.ParseOptions`, the classic `mount(2)` call, the new mount API with one
//! `lowerdir+` per lower, the relative-path and `/proc/self/fd` fallbacks for long lower
//! lists, and mount-point checks.
//!
//! The fallbacks change the working directory, which is per process; they run on a
//! short-lived thread that first leaves the shared file-system context
//! (`unshare(CLONE_FS)`), so the caller's working directory is never touched.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{CWD, Mode, OFlags};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
    UnmountFlags,
};

/// Overlay's `statfs` magic.
pub(crate) const OVERLAY_MAGIC: i64 = 0x794C_7630;
/// FUSE's `statfs` magic (fuse-overlayfs mounts).
pub(crate) const FUSE_MAGIC: i64 = 0x6573_5546;

/// How a long lower list is passed to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// Classic data string first; the new mount API when it does not fit a page.
    Auto,
    /// Always the new mount API (`fsconfig(…, "lowerdir+", …)`).
    NewApi,
    /// Never the new API: absolute paths, then `l/<short>` relative to the home, then
    /// `/proc/self/fd` numbers.
    Legacy,
}

/// The method from `CONTAINERS_STORAGE_RS_OVERLAY_MOUNT` (`newapi`, `legacy`), an
/// internal switch used by tests to exercise every path on one kernel.
pub(crate) fn method_from_env() -> Method {
    match std::env::var("CONTAINERS_STORAGE_RS_OVERLAY_MOUNT").as_deref() {
        Ok("newapi") => Method::NewApi,
        Ok("legacy") => Method::Legacy,
        _ => Method::Auto,
    }
}

/// Go's `mount.ParseOptions`: flag words become mount flags, the rest stays data.
pub(crate) fn parse_options(options: &[String]) -> (MountFlags, Vec<String>) {
    let mut flags = MountFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "defaults" => (MountFlags::empty(), MountFlags::empty()),
            "ro" => (MountFlags::RDONLY, MountFlags::empty()),
            "rw" => (MountFlags::empty(), MountFlags::RDONLY),
            "suid" => (MountFlags::empty(), MountFlags::NOSUID),
            "nosuid" => (MountFlags::NOSUID, MountFlags::empty()),
            "dev" => (MountFlags::empty(), MountFlags::NODEV),
            "nodev" => (MountFlags::NODEV, MountFlags::empty()),
            "exec" => (MountFlags::empty(), MountFlags::NOEXEC),
            "noexec" => (MountFlags::NOEXEC, MountFlags::empty()),
            "sync" => (MountFlags::SYNCHRONOUS, MountFlags::empty()),
            "async" => (MountFlags::empty(), MountFlags::SYNCHRONOUS),
            "dirsync" => (MountFlags::DIRSYNC, MountFlags::empty()),
            "mand" => (
                MountFlags::PERMIT_MANDATORY_FILE_LOCKING,
                MountFlags::empty(),
            ),
            "nomand" => (
                MountFlags::empty(),
                MountFlags::PERMIT_MANDATORY_FILE_LOCKING,
            ),
            "atime" => (MountFlags::empty(), MountFlags::NOATIME),
            "noatime" => (MountFlags::NOATIME, MountFlags::empty()),
            "diratime" => (MountFlags::empty(), MountFlags::NODIRATIME),
            "nodiratime" => (MountFlags::NODIRATIME, MountFlags::empty()),
            "relatime" => (MountFlags::RELATIME, MountFlags::empty()),
            "norelatime" => (MountFlags::empty(), MountFlags::RELATIME),
            "strictatime" => (MountFlags::STRICTATIME, MountFlags::empty()),
            "nostrictatime" => (MountFlags::empty(), MountFlags::STRICTATIME),
            _ => {
                data.push(o.clone());
                continue;
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, data)
}

/// What to mount: an overlay made of `lowers` (nearest first), with an optional upper
/// and work dir, extra data options, flags, at `target`.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub lowers: Vec<PathBuf>,
    /// Lowers as Go's 1.43 fallback writes them: relative to the driver home.
    pub relative_lowers: Vec<String>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub data: Vec<String>,
    pub flags: MountFlags,
    pub target: PathBuf,
    /// The driver home, for the relative fallback.
    pub home: PathBuf,
}

fn data_string(
    lowers: &[String],
    upper: Option<&str>,
    work: Option<&str>,
    extra: &[String],
) -> String {
    let mut s = format!("lowerdir={}", lowers.join(":"));
    if let (Some(u), Some(w)) = (upper, work) {
        s.push_str(&format!(",upperdir={u},workdir={w}"));
    }
    for e in extra {
        s.push(',');
        s.push_str(e);
    }
    s
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Mounts `spec`, choosing the lower-list method as described on [`Method`].
pub(crate) fn mount_overlay(spec: &Spec, method: Method) -> std::io::Result<()> {
    let abs: Vec<String> = spec.lowers.iter().map(|l| p(l)).collect();
    let upper = spec.upper.as_deref().map(p);
    let work = spec.work.as_deref().map(p);
    let data = data_string(&abs, upper.as_deref(), work.as_deref(), &spec.data);
    let fits = data.len() < page_size();
    match method {
        Method::NewApi => return mount_new_api(spec),
        Method::Auto if fits => return mount_classic(&data, &spec.target, spec.flags),
        Method::Auto if new_api_has_lowerdir_plus() => return mount_new_api(spec),
        Method::Auto | Method::Legacy => {}
    }
    if fits {
        return mount_classic(&data, &spec.target, spec.flags);
    }
    // Go 1.43: lowers as `l/<short>`, upper and work relative to the home.
    let rel_upper = upper.as_deref().map(|u| relative_to(u, &spec.home));
    let rel_work = work.as_deref().map(|w| relative_to(w, &spec.home));
    let rel = data_string(
        &spec.relative_lowers,
        rel_upper.as_deref(),
        rel_work.as_deref(),
        &spec.data,
    );
    if rel.len() < page_size() && spec.relative_lowers.len() == spec.lowers.len() {
        let home = spec.home.clone();
        let target = spec.target.clone();
        let flags = spec.flags;
        return in_own_cwd(move || {
            rustix::process::chdir(&home)?;
            mount_classic(&rel, &target, flags)
        });
    }
    mount_with_fds(spec, upper.as_deref(), work.as_deref())
}

fn relative_to(path: &str, home: &Path) -> String {
    Path::new(path)
        .strip_prefix(home)
        .map(p)
        .unwrap_or_else(|_| path.to_owned())
}

/// Go 1.60's last resort: open every lower and pass `/proc/self/fd` numbers.
fn mount_with_fds(spec: &Spec, upper: Option<&str>, work: Option<&str>) -> std::io::Result<()> {
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(spec.lowers.len());
    for l in &spec.lowers {
        fds.push(rustix::fs::open(
            l,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?);
    }
    let nums: Vec<String> = fds
        .iter()
        .map(|fd| {
            use std::os::fd::AsRawFd;
            fd.as_raw_fd().to_string()
        })
        .collect();
    let data = data_string(&nums, upper, work, &spec.data);
    if data.len() >= page_size() {
        return Err(std::io::Error::other(format!(
            "cannot mount layer, mount data too large ({} bytes)",
            data.len()
        )));
    }
    let target = spec.target.clone();
    let flags = spec.flags;
    let result = in_own_cwd(move || {
        rustix::process::chdir("/proc/self/fd")?;
        mount_classic(&data, &target, flags)
    });
    drop(fds);
    result
}

/// Runs `f` on a new thread whose working directory is its own.
fn in_own_cwd<F>(f: F) -> std::io::Result<()>
where
    F: FnOnce() -> std::io::Result<()> + Send + 'static,
{
    let handle = std::thread::spawn(move || -> std::io::Result<()> {
        // SAFETY: only CLONE_FS is unshared (cwd, root, umask of this thread); the
        // file descriptor table stays shared, so no fd becomes invisible to others.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }?;
        f()
    });
    handle
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("mount thread panicked")))
}

/// `mount("overlay", target, "overlay", flags, data)`.
pub(crate) fn mount_classic(data: &str, target: &Path, flags: MountFlags) -> std::io::Result<()> {
    let data = CString::new(data).map_err(std::io::Error::other)?;
    rustix::mount::mount("overlay", target, "overlay", flags, data.as_c_str())?;
    Ok(())
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

/// The new mount API: one `lowerdir+` per lower, so the list has no length limit
/// besides the kernel's stacking depth.
fn mount_new_api(spec: &Spec) -> std::io::Result<()> {
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for l in &spec.lowers {
        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l)?;
    }
    if let (Some(u), Some(w)) = (&spec.upper, &spec.work) {
        rustix::mount::fsconfig_set_string(&fs, "upperdir", u)?;
        rustix::mount::fsconfig_set_string(&fs, "workdir", w)?;
    }
    for d in &spec.data {
        match d.split_once('=') {
            Some((k, v)) => rustix::mount::fsconfig_set_string(&fs, k, v)?,
            None => rustix::mount::fsconfig_set_flag(&fs, d.as_str())?,
        }
    }
    if spec.flags.contains(MountFlags::RDONLY) {
        rustix::mount::fsconfig_set_flag(&fs, "ro")?;
    }
    rustix::mount::fsconfig_create(&fs)?;
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attr_flags(spec.flags))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        CWD,
        &spec.target,
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

/// Go's refcounter check: `path` carries an overlay (or FUSE) mount.
pub(crate) fn is_overlay_mounted(path: &Path) -> bool {
    matches!(fs_magic(path), Some(OVERLAY_MAGIC | FUSE_MAGIC)) && is_mountpoint(path)
}

/// Unescapes the octal escapes of `/proc/self/mountinfo` fields.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // The three bytes after `\` are taken as bytes: slicing the `str` there could
        // split a multi-byte character.
        if b[i] == b'\\'
            && let Some(v) = b
                .get(i + 1..i + 4)
                .and_then(|o| std::str::from_utf8(o).ok())
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `path` is a mount point: `statx`'s `STATX_ATTR_MOUNT_ROOT` (Linux ≥ 5.8) when the
/// kernel reports it, else whether `/proc/self/mountinfo` lists it (also when `statx` fails, as
/// on a dead FUSE mount, which is still listed).
pub(crate) fn is_mountpoint(path: &Path) -> bool {
    use rustix::fs::{StatxAttributes, StatxFlags};
    if let Ok(st) = rustix::fs::statx(
        rustix::fs::CWD,
        path,
        rustix::fs::AtFlags::empty(),
        StatxFlags::BASIC_STATS,
    ) && st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
    {
        return st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT);
    }
    is_listed_mountpoint(path)
}

/// Whether `/proc/self/mountinfo` lists `path` as a mount point.
fn is_listed_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = p(path);
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape(mp) == want)
}

/// Go's `mount.MakePrivate`: bind `path` on itself unless it is a mount point, then
/// mark it private.
pub(crate) fn make_private(path: &Path) -> std::io::Result<()> {
    if !is_mountpoint(path) {
        rustix::mount::mount_bind(path, path)?;
    }
    rustix::mount::mount_change(path, MountPropagationFlags::PRIVATE)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape_never_splits_characters() {
        assert_eq!(unescape(r"/mnt/a\040b\134c"), "/mnt/a b\\c");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
        // A backslash followed by a multi-byte character used to panic (str slice
        // inside the character).
        assert_eq!(unescape("/x\\12\u{e9}"), "/x\\12\u{e9}");
        assert_eq!(unescape("/x\\\u{e9}\u{e9}"), "/x\\\u{e9}\u{e9}");
    }

    #[test]
    fn options_split_like_go() {
        let (flags, data) = parse_options(&[
            "nodev".to_owned(),
            "metacopy=on".to_owned(),
            "ro".to_owned(),
            "rw".to_owned(),
            "noexec".to_owned(),
        ]);
        assert_eq!(flags, MountFlags::NODEV | MountFlags::NOEXEC);
        assert_eq!(data, vec!["metacopy=on".to_owned()]);
    }

    #[test]
    fn data_string_shapes() {
        let s = data_string(
            &["/a".to_owned(), "/b".to_owned()],
            Some("/u"),
            Some("/w"),
            &["volatile".to_owned()],
        );
        assert_eq!(s, "lowerdir=/a:/b,upperdir=/u,workdir=/w,volatile");
        assert_eq!(
            data_string(&["/a".to_owned()], None, None, &[]),
            "lowerdir=/a"
        );
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert!(is_mountpoint(Path::new("/")));
        assert!(!is_mountpoint(Path::new("/definitely/not/a/mount")));
        // Both ways agree, before and after a bind mount of a directory on itself.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(!is_mountpoint(dir) && !is_listed_mountpoint(dir));
        match rustix::mount::mount_bind(dir, dir) {
            Ok(()) => {
                let (fast, listed) = (is_mountpoint(dir), is_listed_mountpoint(dir));
                rustix::mount::unmount(dir, rustix::mount::UnmountFlags::DETACH).unwrap();
                assert!(fast && listed, "statx {fast}, mountinfo {listed}");
                assert!(!is_mountpoint(dir));
            }
            Err(e) => eprintln!("SKIPPING the bind-mount half: {e} (needs root)"),
        }
        for dir in ["/usr/bin", "/etc"] {
            let dir = Path::new(dir);
            if dir.exists() {
                assert_eq!(
                    is_mountpoint(dir),
                    is_listed_mountpoint(dir),
                    "{}",
                    dir.display()
                );
            }
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative_to("/h/x/diff", Path::new("/h")), "x/diff");
        assert_eq!(relative_to("/o/x/diff", Path::new("/h")), "/o/x/diff");
    }
}
