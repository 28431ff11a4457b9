//! How an overlay mount is handed to the kernel: option parsing like Go's
//! `mount.ParseOptions`, the `lowerdir=…,upperdir=…` data string, and the choice between
//! the classic `mount(2)` call, the new mount API with one `lowerdir+` per lower, and
//! the relative-path and `/proc/self/fd` fallbacks for long lower lists. The system
//! calls themselves are in `crate::sys::mount`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::mount::MountFlags;

use crate::sys::mount::{
    self as sys, FUSE_MAGIC, OVERLAY_MAGIC, fs_magic, mount_classic, page_size,
};

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

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn mount_new_api(spec: &Spec) -> std::io::Result<()> {
    let upper_work = spec.upper.as_deref().zip(spec.work.as_deref());
    sys::mount_new_api(
        &spec.lowers,
        upper_work,
        &spec.data,
        spec.flags,
        &spec.target,
    )
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
        Method::Auto if sys::new_api_has_lowerdir_plus() => return mount_new_api(spec),
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
        return sys::mount_classic_in(&spec.home, rel, &spec.target, spec.flags);
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
    let result = sys::mount_classic_in(Path::new("/proc/self/fd"), data, &spec.target, spec.flags);
    drop(fds);
    result
}

/// Go's refcounter check: `path` carries an overlay (or FUSE) mount.
pub(crate) fn is_overlay_mounted(path: &Path) -> bool {
    matches!(fs_magic(path), Some(OVERLAY_MAGIC | FUSE_MAGIC))
        && crate::mountinfo::is_mountpoint(path)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn relative_paths() {
        assert_eq!(relative_to("/h/x/diff", Path::new("/h")), "x/diff");
        assert_eq!(relative_to("/o/x/diff", Path::new("/h")), "/o/x/diff");
    }
}
