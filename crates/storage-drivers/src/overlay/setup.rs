//! Opening the overlay driver (Go's overlay `Init`): the home and its `l/` directory,
//! the backing file system, whether a mount program is needed, the cached feature
//! probes, quotas, and the private bind mount of the home.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use storage_types::{Error, ErrorKind, Result};

use super::config::parse_config;
use super::{LINK_DIR, Overlay, probe, quota};
use crate::DriverOptions;
use crate::common::{
    ERR_INCOMPATIBLE_FS, ERR_NOT_SUPPORTED, fs_name, invalid, is_network_fs, mkdir_all, mkdir_mode,
    remove_all, write_file,
};
use crate::sys::mount;

fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

/// Whether `home` holds anything only a mount program store would (Go's scan):
/// a `.wh.*` name or a `user.fuseoverlayfs.*`/`user.containers.*` xattr on a directory.
fn has_mount_program_traces(dir: &Path, depth: usize) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with(".wh.") {
            return true;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            let p = e.path();
            let mut names = vec![0u8; 4096];
            if let Ok(n) = rustix::fs::llistxattr(&p, &mut names[..])
                && names[..n].split(|b| *b == 0).any(|x| {
                    x.starts_with(b"user.fuseoverlayfs.") || x.starts_with(b"user.containers.")
                })
            {
                return true;
            }
            if depth < 64 && has_mount_program_traces(&p, depth + 1) {
                return true;
            }
        }
    }
    false
}

fn native_error(text: String) -> Error {
    Error::msg(ErrorKind::NotSupported, text)
}

/// Go's `fsutils.SupportsDType`: the directory entries of `dir` carry their type.
fn supports_d_type(dir: &Path) -> bool {
    let Ok(fd) = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return true;
    };
    let Ok(mut d) = rustix::fs::Dir::read_from(&fd) else {
        return true;
    };
    while let Some(Ok(e)) = d.read() {
        if e.file_type() == rustix::fs::FileType::Unknown {
            return false;
        }
    }
    true
}

fn write_flag(path: &Path, value: bool) -> Result<()> {
    write_file(path, if value { b"true" } else { b"false" }, 0o600)
}

impl Overlay {
    /// Go's overlay `Init`. A home this call created is removed again when it fails, so
    /// a failed probe leaves no prior state for driver auto-selection.
    pub(crate) fn open(opts: &DriverOptions) -> Result<Overlay> {
        let fresh = !opts.home.exists();
        let r = Self::init(opts);
        if r.is_err() && fresh {
            let _ = remove_all(&opts.home);
        }
        r
    }

    fn init(opts: &DriverOptions) -> Result<Overlay> {
        let mut cfg = parse_config(&opts.options)?;
        let home = opts.home.clone();
        let run_home = opts.run_home.clone();
        // Go: `user.overlay.*` xattrs and `userxattr` whenever `IsRootless()`; native overlay
        // and the private home mount need effective UID 0 (true inside the user namespace).
        let rootless = storage_userns::is_rootless();
        let euid_root = rustix::process::geteuid().is_root();
        let parent = home.parent().unwrap_or(Path::new("/"));
        if !parent.exists() {
            mkdir_all(parent, 0o700)?;
        }
        let magic = mount::fs_magic(parent).unwrap_or(0);
        let backing_fs = fs_name(magic);
        if !home.exists() {
            mkdir_all(&home, 0o700)?;
        }
        let l = home.join(LINK_DIR);
        if !l.exists() {
            mkdir_mode(&l, 0o755)?;
        }
        mkdir_all(&run_home, 0o700)?;

        if !supports_d_type(&home) {
            return Err(native_error(format!(
                "overlay: the backing {backing_fs} filesystem is formatted without d_type support, which leads to incorrect behavior. Reformat the filesystem with ftype=1 to enable d_type support. Running without d_type is not supported.: {ERR_NOT_SUPPORTED}"
            )));
        }
        let xattr_prefix = if rootless {
            "user.overlay."
        } else {
            "trusted.overlay."
        };
        let mut mount_program = cfg.mount_program.clone();
        let flag = home.join(".has-mount-program");
        let mut probe_opts = cfg.mount_options.clone();
        if rootless {
            probe_opts.push("userxattr".to_owned());
        }
        if mount_program.is_none() {
            let native = if !euid_root {
                Err(format!(
                    "'overlay' is not supported over {backing_fs} without root: {ERR_NOT_SUPPORTED}"
                ))
            } else {
                let needs_program = match std::fs::read_to_string(&flag).as_deref() {
                    Ok("true") => true,
                    Ok(_) => false,
                    Err(_) => {
                        let traces = has_mount_program_traces(&home, 0);
                        write_flag(&flag, traces)?;
                        traces
                    }
                };
                if needs_program {
                    Err(format!(
                        "overlay: storage already configured with a mount-program: {ERR_NOT_SUPPORTED}"
                    ))
                } else {
                    probe::cached(&run_home, "overlay", || {
                        probe::overlay(&home, backing_fs, &probe_opts)
                    })
                }
            };
            if let Err(text) = native {
                match find_in_path("fuse-overlayfs") {
                    Some(p) => mount_program = Some(p),
                    None => return Err(native_error(text)),
                }
            }
        }
        let network = rootless && is_network_fs(magic);
        if network && mount_program.is_none() {
            return Err(native_error(format!(
                "a network file system with user namespaces is not supported.  Please use a mount_program: {ERR_INCOMPATIBLE_FS}"
            )));
        }
        if network && cfg.force_mask.is_none() {
            cfg.force_mask = Some(0o700);
            tracing::warn!(
                "Network file system detected as backing store.  Enforcing overlay option `force_mask=\"700\"`.  Add it to storage.conf to silence this warning"
            );
        }
        let (native_diff, metacopy, volatile) = if mount_program.is_some() {
            write_flag(&flag, true)?;
            (false, false, true)
        } else {
            if matches!(backing_fs, "aufs" | "overlayfs" | "ecryptfs") {
                return Err(native_error(format!(
                    "'overlay' is not supported over {backing_fs}, a mount_program is required: {ERR_INCOMPATIBLE_FS}"
                )));
            }
            if !flag.exists() {
                write_flag(&flag, false)?;
            }
            let key = cfg.mount_options.join(",");
            let metacopy = probe::cached(&run_home, &format!("metacopy({key})"), || {
                probe::metacopy(&home, &probe_opts, xattr_prefix)
            })
            .is_ok();
            let native_diff = probe::cached(&run_home, &format!("native-diff({key})"), || {
                probe::native_diff(&home, &probe_opts, xattr_prefix)
            })
            .is_ok();
            let volatile = probe::cached(&run_home, "volatile", || {
                probe::volatile(&home, &probe_opts)
            })
            .is_ok();
            (native_diff, metacopy, volatile)
        };

        let wants_quota = cfg.quota_size.is_some() || cfg.quota_inodes.is_some();
        let quota = if backing_fs == "xfs" {
            match quota::Control::new(&home) {
                Ok(c) => Some(c),
                Err(e) if wants_quota => {
                    return Err(invalid(format!(
                        "storage options overlay.size and overlay.inodes not supported. Filesystem does not support Project Quota: {}",
                        e.message()
                    )));
                }
                Err(_) => None,
            }
        } else {
            None
        };
        if wants_quota && quota.is_none() {
            return Err(invalid(format!(
                "storage option overlay.size and overlay.inodes only supported for backingFS XFS. Found {backing_fs}"
            )));
        }

        let home_private = !cfg.skip_mount_home && euid_root;
        if home_private {
            mount::make_private(&home).map_err(|e| Error::io("mount", &home, e))?;
        }
        let image_store = opts.image_store.as_ref().map(|p| p.join("overlay"));
        if let Some(is) = &image_store {
            mkdir_all(is, 0o700)?;
            let l = is.join(LINK_DIR);
            if !l.exists() {
                mkdir_mode(&l, 0o755)?;
            }
        }
        Ok(Overlay {
            home,
            run_home,
            image_store,
            cfg,
            mount_program,
            backing_fs,
            native_diff,
            metacopy,
            volatile,
            rootless,
            home_private,
            quota,
            refs: Mutex::new(HashMap::new()),
            idmapped: std::sync::OnceLock::new(),
            mount_lock: Mutex::new(()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d_type() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        // ext4, xfs (ftype=1), btrfs and tmpfs all report entry types.
        assert!(supports_d_type(tmp.path()));
    }
}
