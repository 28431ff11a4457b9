//! `copy [srcLayer:]/path… targetLayer:/path` (Go's `copyContent` + `CopyWithTar`).
//!
//! Limits: copies regular files, directories and symbolic links (with modes, owners and
//! modification times); other file types and extended attributes are skipped, hard links
//! become separate copies.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use storage_drivers::MountOpts;
use storage_types::{IdMap, to_container, to_host};

use super::Ctx;

/// How owners are translated: host → container through the source maps, an optional
/// `--chown` override, then container → host through the target maps.
struct Owners {
    source_uid: Vec<IdMap>,
    source_gid: Vec<IdMap>,
    chown: Option<(u32, u32)>,
    target_uid: Vec<IdMap>,
    target_gid: Vec<IdMap>,
}

impl Owners {
    fn map(&self, uid: u32, gid: u32) -> (u32, u32) {
        let (cu, cg) = match self.chown {
            Some(p) => p,
            None => (
                if self.source_uid.is_empty() {
                    uid
                } else {
                    to_container(&self.source_uid, uid).unwrap_or(uid)
                },
                if self.source_gid.is_empty() {
                    gid
                } else {
                    to_container(&self.source_gid, gid).unwrap_or(gid)
                },
            ),
        };
        let hu = if self.target_uid.is_empty() {
            cu
        } else {
            to_host(&self.target_uid, cu).unwrap_or(cu)
        };
        let hg = if self.target_gid.is_empty() {
            cg
        } else {
            to_host(&self.target_gid, cg).unwrap_or(cg)
        };
        (hu, hg)
    }
}

fn io_text(op: &str, p: &Path, e: &std::io::Error) -> String {
    format!(
        "{op} {}: {}",
        p.display(),
        storage_types::go_io_error_text(e)
    )
}

fn parse_id(s: &str, what: &str) -> Result<u32, String> {
    s.parse::<u32>().map_err(|e| {
        let reason = match e.kind() {
            std::num::IntErrorKind::PosOverflow => "value out of range",
            _ => "invalid syntax",
        };
        format!(
            "bad {what}: strconv.ParseUint: parsing {}: {reason}",
            storage_types::go_quote(s)
        )
    })
}

fn set_times(path: &Path, md: &std::fs::Metadata) {
    if let (Ok(f), Ok(mtime)) = (std::fs::File::open(path), md.modified()) {
        let times = std::fs::FileTimes::new().set_modified(mtime);
        let times = match md.accessed() {
            Ok(a) => times.set_accessed(a),
            Err(_) => times,
        };
        let _ = f.set_times(times);
    }
}

fn copy_entry(src: &Path, dst: &Path, owners: &Owners) -> Result<(), String> {
    let md = std::fs::symlink_metadata(src).map_err(|e| io_text("lstat", src, &e))?;
    let (uid, gid) = owners.map(md.uid(), md.gid());
    let ft = md.file_type();
    if ft.is_dir() {
        if !dst.is_dir() {
            std::fs::create_dir(dst).map_err(|e| io_text("mkdir", dst, &e))?;
        }
        let entries = std::fs::read_dir(src).map_err(|e| io_text("open", src, &e))?;
        for e in entries {
            let e = e.map_err(|e| io_text("readdirent", src, &e))?;
            copy_entry(&e.path(), &dst.join(e.file_name()), owners)?;
        }
        std::os::unix::fs::lchown(dst, Some(uid), Some(gid))
            .map_err(|e| io_text("lchown", dst, &e))?;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| io_text("chmod", dst, &e))?;
        set_times(dst, &md);
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(|e| io_text("readlink", src, &e))?;
        let _ = std::fs::remove_file(dst);
        std::os::unix::fs::symlink(&target, dst).map_err(|e| io_text("symlink", dst, &e))?;
        std::os::unix::fs::lchown(dst, Some(uid), Some(gid))
            .map_err(|e| io_text("lchown", dst, &e))?;
    } else if ft.is_file() {
        if dst.is_dir() {
            std::fs::remove_dir_all(dst).map_err(|e| io_text("remove", dst, &e))?;
        }
        std::fs::copy(src, dst).map_err(|e| io_text("copy", dst, &e))?;
        std::os::unix::fs::lchown(dst, Some(uid), Some(gid))
            .map_err(|e| io_text("lchown", dst, &e))?;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| io_text("chmod", dst, &e))?;
        set_times(dst, &md);
    }
    Ok(())
}

/// Go's `CopyWithTar`: a directory's contents go into `dst` (created 0755, owned by the
/// mapped root); a file goes to `dst` (or into it when `dst` ends with `/`).
fn copy_with_tar(src: &Path, dst: &str, owners: &Owners) -> Result<(), String> {
    let md = std::fs::metadata(src).map_err(|e| io_text("stat", src, &e))?;
    if md.is_dir() {
        let dst = PathBuf::from(dst);
        let mut builder = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o755);
        if !dst.is_dir() {
            builder
                .recursive(true)
                .create(&dst)
                .map_err(|e| io_text("mkdir", &dst, &e))?;
            let (ru, rg) = owners.map_root();
            std::os::unix::fs::lchown(&dst, Some(ru), Some(rg))
                .map_err(|e| io_text("lchown", &dst, &e))?;
        }
        let entries = std::fs::read_dir(src).map_err(|e| io_text("open", src, &e))?;
        for e in entries {
            let e = e.map_err(|e| io_text("readdirent", src, &e))?;
            copy_entry(&e.path(), &dst.join(e.file_name()), owners)?;
        }
        return Ok(());
    }
    let mut dst_path = PathBuf::from(dst);
    if dst.ends_with('/')
        && let Some(name) = src.file_name()
    {
        dst_path = dst_path.join(name);
    }
    if let Some(parent) = dst_path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .recursive(true)
            .create(parent)
            .map_err(|e| io_text("mkdir", parent, &e))?;
    }
    copy_entry(src, &dst_path, owners)
}

impl Owners {
    fn map_root(&self) -> (u32, u32) {
        let u = if self.target_uid.is_empty() {
            0
        } else {
            to_host(&self.target_uid, 0).unwrap_or(0)
        };
        let g = if self.target_gid.is_empty() {
            0
        } else {
            to_host(&self.target_gid, 0).unwrap_or(0)
        };
        (u, g)
    }
}

/// `copy`.
pub fn copy(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let chown = ctx.flags.str("-chown");
    let chown = if chown.is_empty() {
        None
    } else {
        let (u, g) = chown.split_once(':').unwrap_or((&chown, &chown));
        Some((parse_id(u, "UID")?, parse_id(g, "GID")?))
    };
    let Some((target_spec, sources)) = ctx.args.split_last() else {
        return Ok(1);
    };
    let mut mounted: Vec<String> = Vec::new();
    let result = (|| -> Result<(), String> {
        let mut target = target_spec.clone();
        let mut target_uid = Vec::new();
        let mut target_gid = Vec::new();
        if let Some((layer, path)) = target_spec.split_once(':') {
            let (l, _) = ctx.store.layer(layer).map_err(|e| {
                format!(
                    "error finding layer {}: {e}",
                    storage_types::go_quote(layer)
                )
            })?;
            target_uid = l.uidmap.clone();
            target_gid = l.gidmap.clone();
            let mp = ctx
                .store
                .mount(
                    &l.id,
                    &MountOpts {
                        mount_label: l.mount_label.clone(),
                        ..MountOpts::default()
                    },
                )
                .map_err(|e| {
                    format!(
                        "error mounting layer {}: {e}",
                        storage_types::go_quote(&l.id)
                    )
                })?;
            mounted.push(l.id.clone());
            target = format!("{}/{}", mp.display(), path.trim_start_matches('/'));
            if path.ends_with('/') && !target.ends_with('/') {
                target.push('/');
            }
        }
        for spec in sources {
            let mut source = PathBuf::from(spec);
            let mut source_uid = Vec::new();
            let mut source_gid = Vec::new();
            if let Some((layer, path)) = spec.split_once(':') {
                let (l, _) = ctx.store.layer(layer).map_err(|e| {
                    format!(
                        "error finding layer {}: {e}",
                        storage_types::go_quote(layer)
                    )
                })?;
                source_uid = l.uidmap.clone();
                source_gid = l.gidmap.clone();
                let mp = ctx
                    .store
                    .mount(
                        &l.id,
                        &MountOpts {
                            mount_label: l.mount_label.clone(),
                            ..MountOpts::default()
                        },
                    )
                    .map_err(|e| {
                        format!(
                            "error mounting layer {}: {e}",
                            storage_types::go_quote(&l.id)
                        )
                    })?;
                mounted.push(l.id.clone());
                source = mp.join(path.trim_start_matches('/'));
            }
            let owners = Owners {
                source_uid,
                source_gid,
                chown,
                target_uid: target_uid.clone(),
                target_gid: target_gid.clone(),
            };
            copy_with_tar(&source, &target, &owners).map_err(|e| {
                format!(
                    "error copying {} to {}: {e}",
                    storage_types::go_quote(&source.to_string_lossy()),
                    storage_types::go_quote(&target)
                )
            })?;
        }
        Ok(())
    })();
    for id in mounted.iter().rev() {
        let _ = ctx.store.unmount(id, false);
    }
    result.map(|()| 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_translate_through_both_maps() {
        let m = |c, h, s| IdMap {
            container_id: c,
            host_id: h,
            size: s,
        };
        let o = Owners {
            source_uid: vec![m(0, 1000, 10)],
            source_gid: vec![m(0, 2000, 10)],
            chown: None,
            target_uid: vec![m(0, 5000, 10)],
            target_gid: vec![],
        };
        assert_eq!(o.map(1003, 2004), (5003, 4));
        let o = Owners {
            chown: Some((1, 2)),
            ..o
        };
        assert_eq!(o.map(1003, 2004), (5001, 2));
        assert_eq!(o.map_root(), (5000, 0));
    }

    #[test]
    fn bad_ids_use_go_wording() {
        assert_eq!(
            parse_id("x", "UID").unwrap_err(),
            "bad UID: strconv.ParseUint: parsing \"x\": invalid syntax"
        );
    }
}
