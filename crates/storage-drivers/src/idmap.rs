//! ID mapping helpers and the naive `UpdateLayerIDMap` chown walk.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use storage_types::{Error, ErrorKind, IdMap, Result};

/// Container → host; an empty map is the identity.
pub(crate) fn to_host(maps: &[IdMap], id: u32) -> Option<u32> {
    storage_types::to_host(maps, id)
}

/// Host → container; an empty map is the identity.
pub(crate) fn to_container(maps: &[IdMap], id: u32) -> Option<u32> {
    storage_types::to_container(maps, id)
}

/// The kernel's overflow ID (`/proc/sys/kernel/overflowuid` or `overflowgid`), 65534 when
/// the file cannot be read; read once per process, as Go does at start-up.
fn overflow_id(gid: bool) -> u32 {
    static IDS: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    let read = |file: &str| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(65534)
    };
    let ids = IDS.get_or_init(|| {
        (
            read("/proc/sys/kernel/overflowuid"),
            read("/proc/sys/kernel/overflowgid"),
        )
    });
    if gid { ids.1 } else { ids.0 }
}

/// Go's `IDMappings.ToHostOverflow` for one kind: an ID equal to the host ID of the new
/// root passes through unchanged; an ID the map cannot represent becomes the kernel's
/// overflow ID itself (a host ID, not mapped again) — never an error.
fn to_host_overflow(maps: &[IdMap], id: u32, gid: bool) -> u32 {
    let root = to_host(maps, 0).unwrap_or(0);
    if id == root {
        return root;
    }
    to_host(maps, id).unwrap_or_else(|| overflow_id(gid))
}

/// Walks `root` (the root directory itself is skipped) and re-owns every entry:
/// host IDs → container IDs with `old` (an unmappable pair is an error unless it is
/// `(0,0)`, which passes through), then → host IDs with `new`. An inode met again is
/// re-linked to its first path instead of being chowned twice.
pub(crate) fn chown_by_maps(
    root: &Path,
    old: (&[IdMap], &[IdMap]),
    new: (&[IdMap], &[IdMap]),
) -> Result<()> {
    let mut seen: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    walk(root, Path::new(""), old, new, &mut seen)
}

fn walk(
    dir: &Path,
    rel: &Path,
    old: (&[IdMap], &[IdMap]),
    new: (&[IdMap], &[IdMap]),
    seen: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("open", dir, e))?;
    let mut names: Vec<std::ffi::OsString> = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("readdirent", dir, e))?;
        names.push(entry.file_name());
    }
    names.sort_by(|a, b| {
        use std::os::unix::ffi::OsStrExt;
        a.as_bytes().cmp(b.as_bytes())
    });
    for name in names {
        let path = dir.join(&name);
        let md = match std::fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(_) => continue,
        };
        chown_one(&path, &rel.join(&name), &md, old, new, seen)?;
        if md.is_dir() {
            walk(&path, &rel.join(&name), old, new, seen)?;
        }
    }
    Ok(())
}

fn chown_one(
    path: &Path,
    rel: &Path,
    md: &std::fs::Metadata,
    old: (&[IdMap], &[IdMap]),
    new: (&[IdMap], &[IdMap]),
    seen: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> Result<()> {
    let key = (md.dev(), md.ino());
    if !md.is_dir() {
        if let Some(first) = seen.get(&key) {
            std::fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
            return std::fs::hard_link(first, path).map_err(|e| Error::io("link", path, e));
        }
        seen.insert(key, path.to_path_buf());
    }
    let (uid, gid) = (md.uid(), md.gid());
    let (cu, cg) = match (to_container(old.0, uid), to_container(old.1, gid)) {
        (Some(u), Some(g)) => (u, g),
        _ if uid == 0 && gid == 0 => (0, 0),
        _ => {
            return Err(Error::msg(
                ErrorKind::InvalidInput,
                format!(
                    "mapping host ID pair idtools.IDPair{{UID:{uid}, GID:{gid}}} for {:?} to container: host ID {} cannot be mapped to a container ID",
                    rel.display().to_string(),
                    if to_container(old.0, uid).is_none() {
                        uid
                    } else {
                        gid
                    }
                ),
            ));
        }
    };
    let hu = to_host_overflow(new.0, cu, false);
    let hg = to_host_overflow(new.1, cg, true);
    if (hu, hg) == (uid, gid) {
        return Ok(());
    }
    let is_link = md.file_type().is_symlink();
    let cap = if is_link {
        None
    } else {
        storage_archive::xattr::get(path, "security.capability")
    };
    std::os::unix::fs::lchown(path, Some(hu), Some(hg))
        .map_err(|e| Error::io("lchown", path, e))?;
    if !is_link && md.mode() & 0o6000 != 0 {
        std::fs::set_permissions(
            path,
            std::os::unix::fs::PermissionsExt::from_mode(md.mode() & 0o7777),
        )
        .map_err(|e| Error::io("chmod", path, e))?;
    }
    if let Some(cap) = cap {
        rustix::fs::lsetxattr(
            path,
            "security.capability",
            &cap,
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| Error::io("lsetxattr", path, e.into()))?;
    }
    Ok(())
}
