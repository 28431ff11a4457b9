//! Go's on-disk layout of the overlay driver: `<id>/{diff,link,lower,work,merged}`, the
//! `l/<SHORT>` links, where a layer lives (home, split image store, additional stores),
//! resolving `lower` files, and Go's `recreateSymlinks` repair.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use storage_types::{Error, ErrorKind, Result};

use super::{LINK_DIR, MAX_DEPTH, Overlay};
use crate::common::{invalid, mkdir_mode, write_file};
use crate::guard::check_layer_id;

/// An `l/` link must point at `../<id>/diff` (what Go and we create): a link to an
/// absolute path or elsewhere would put foreign directories into mounts and diffs.
fn checked_link(link: PathBuf) -> Result<PathBuf> {
    let Ok(target) = std::fs::read_link(&link) else {
        return Ok(link);
    };
    let mut parts = target.iter();
    let ok = parts.next() == Some(std::ffi::OsStr::new(".."))
        && parts
            .next()
            .and_then(|id| id.to_str())
            .is_some_and(|id| check_layer_id(id).is_ok())
        && parts.next() == Some(std::ffi::OsStr::new("diff"))
        && parts.next().is_none();
    if ok {
        Ok(link)
    } else {
        Err(invalid(format!(
            "invalid lower link {}: it points to {}, not ../<layer>/diff",
            link.display(),
            target.display()
        )))
    }
}

/// Go's 26-character short name: base32 (RFC 4648, upper case) of random bytes.
pub(super) fn short_id() -> Result<String> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bytes = [0u8; 17];
    let mut f = std::fs::File::open("/dev/urandom")
        .map_err(|e| Error::io("open", Path::new("/dev/urandom"), e))?;
    f.read_exact(&mut bytes)
        .map_err(|e| Error::io("read", Path::new("/dev/urandom"), e))?;
    let mut out = String::with_capacity(28);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    out.truncate(26);
    Ok(out)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// The process umask, read from `/proc/self/status` (changing it to read it would race
/// with other threads creating files).
pub(super) fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Parses `user.containers.override_stat` (`uid:gid:mode[:type]`, mode octal).
pub(super) fn parse_override(v: &[u8]) -> Option<(u32, u32, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.split(':');
    let uid = it.next()?.parse().ok()?;
    let gid = it.next()?.parse().ok()?;
    let mode = u32::from_str_radix(it.next()?.trim_start_matches("0o"), 8).ok()?;
    Some((uid, gid, mode & 0o7777))
}

impl Overlay {
    /// Go's `dir2`: the home first, then the split image store, then the additional
    /// (read-only) image stores; the flag tells whether it is in an additional store.
    pub(super) fn dir(&self, id: &str) -> (PathBuf, bool) {
        let own = self.home.join(id);
        if own.is_dir() {
            return (own, false);
        }
        if let Some(is) = &self.image_store {
            let candidate = is.join(id);
            if candidate.is_dir() {
                return (candidate, false);
            }
        }
        for store in &self.cfg.image_stores {
            let candidate = store.join("overlay").join(id);
            if candidate.is_dir() {
                return (candidate, true);
            }
        }
        (own, false)
    }

    /// The `lower` file's elements (empty for base layers).
    ///
    /// Go only ever writes `l/<link>` elements; anything else (`l/../../x`, an absolute
    /// path) would make a mount or a diff reach outside the driver's home, so it is an
    /// error here.
    pub(super) fn lower_elems(&self, dir: &Path) -> Result<Vec<String>> {
        let path = dir.join("lower");
        match std::fs::read_to_string(&path) {
            Ok(s) => s
                .split(':')
                .filter(|e| !e.is_empty())
                .map(|e| {
                    let link = e.strip_prefix(LINK_DIR).and_then(|r| r.strip_prefix('/'));
                    match link {
                        Some(l) if check_layer_id(l).is_ok() => Ok(e.to_owned()),
                        _ => Err(invalid(format!(
                            "invalid lower element {e:?} in {}",
                            path.display()
                        ))),
                    }
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("open", &dir.join("lower"), e)),
        }
    }

    /// Resolves one `lower` element to the path used in mounts (the `l/` symlink).
    pub(super) fn lower_path(&self, elem: &str) -> Result<PathBuf> {
        let own = self.home.join(elem);
        if std::fs::symlink_metadata(&own).is_ok() {
            return checked_link(own);
        }
        if let Some(is) = &self.image_store {
            let p = is.join(elem);
            if std::fs::symlink_metadata(&p).is_ok() {
                return checked_link(p);
            }
        }
        for store in &self.cfg.image_stores {
            let p = store.join("overlay").join(elem);
            if std::fs::symlink_metadata(&p).is_ok() {
                return checked_link(p);
            }
        }
        self.recreate_symlinks()?;
        Ok(own)
    }

    /// The lower element's `diff` directory, resolved (`<home>/<id>/diff`).
    pub(super) fn lower_diff(&self, elem: &str) -> Result<PathBuf> {
        let link = self.lower_path(elem)?;
        let base = link.parent().and_then(Path::parent).unwrap_or(&self.home);
        match std::fs::read_link(&link) {
            Ok(target) => {
                let t = target.to_string_lossy();
                match t.strip_prefix("../") {
                    Some(rest) => Ok(base.join(rest)),
                    None => Ok(link.parent().unwrap_or(&self.home).join(target)),
                }
            }
            Err(e) => Err(Error::io("readlink", &link, e)),
        }
    }

    /// Lower diff dirs of `id`, nearest first.
    pub(super) fn lower_diffs(&self, id: &str) -> Result<Vec<PathBuf>> {
        let (dir, _) = self.dir(id);
        self.lower_elems(&dir)?
            .iter()
            .map(|e| self.lower_diff(e))
            .collect()
    }

    /// Go's `recreateSymlinks`: recreate missing `l/` links from the `link` files,
    /// delete links whose target is not `../<id>/diff`, and rewrite `link` files that
    /// do not name their link; at most 10 passes while something changed.
    pub(super) fn recreate_symlinks(&self) -> Result<()> {
        let l = self.home.join(LINK_DIR);
        if !l.exists() {
            mkdir_mode(&l, 0o755)?;
        }
        for _ in 0..10 {
            let mut progress = false;
            let rd = std::fs::read_dir(&self.home).map_err(|e| Error::io("open", &self.home, e))?;
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if matches!(name.as_str(), LINK_DIR | "staging" | "tempdirs")
                    || !e.file_type().is_ok_and(|t| t.is_dir())
                {
                    continue;
                }
                let Ok(link) = std::fs::read_to_string(e.path().join("link")) else {
                    continue;
                };
                let link = link.trim_matches('\n');
                if link.is_empty() || link.contains('/') {
                    continue;
                }
                let lp = l.join(link);
                if std::fs::symlink_metadata(&lp).is_err() {
                    std::os::unix::fs::symlink(format!("../{name}/diff"), &lp)
                        .map_err(|e| Error::io("symlink", &lp, e))?;
                    progress = true;
                }
            }
            let rd = std::fs::read_dir(&l).map_err(|e| Error::io("open", &l, e))?;
            for e in rd.flatten() {
                let lp = e.path();
                let link_name = e.file_name().to_string_lossy().into_owned();
                let target = std::fs::read_link(&lp)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let parts: Vec<&str> = target.split('/').collect();
                if parts.len() != 3
                    || parts[0] != ".."
                    || parts[2] != "diff"
                    || matches!(parts[1], "" | "." | "..")
                {
                    std::fs::remove_file(&lp).map_err(|e| Error::io("remove", &lp, e))?;
                    progress = true;
                    continue;
                }
                let link_file = self.home.join(parts[1]).join("link");
                if !link_file.parent().is_some_and(Path::is_dir) {
                    continue;
                }
                if std::fs::read_to_string(&link_file).ok().as_deref() != Some(&link_name) {
                    write_file(&link_file, link_name.as_bytes(), 0o644)?;
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        Ok(())
    }

    /// Go's `getLower(parent)`: `l/<parent link>[:<parent lower>]`.
    pub(super) fn lower_for_child(&self, parent: &str) -> Result<String> {
        let (pdir, _) = self.dir(parent);
        if !pdir.is_dir() {
            return Err(Error::msg(
                ErrorKind::LayerUnknown,
                format!("stat {}: no such file or directory", pdir.display()),
            ));
        }
        let link_path = pdir.join("link");
        let link =
            std::fs::read_to_string(&link_path).map_err(|e| Error::io("open", &link_path, e))?;
        let mut lower = format!("{LINK_DIR}/{}", link.trim());
        let parent_elems = self.lower_elems(&pdir)?;
        if parent_elems.len() + 1 > MAX_DEPTH {
            return Err(invalid("max depth exceeded"));
        }
        for e in parent_elems {
            lower.push(':');
            lower.push_str(&e);
        }
        Ok(lower)
    }

    /// `dir/merged`, or `<runhome>/<id>/merged` for layers of additional stores (1.60).
    pub(super) fn merged_dir(&self, id: &str, dir: &Path, in_store: bool) -> PathBuf {
        if in_store {
            self.run_home.join(id).join("merged")
        } else {
            dir.join("merged")
        }
    }

    /// Whether `parent` is the layer's real parent (Go's `isParent`).
    pub(super) fn is_parent(&self, id: &str, parent: Option<&str>) -> bool {
        let (dir, _) = self.dir(id);
        let elems = self.lower_elems(&dir).unwrap_or_default();
        match (parent, elems.first()) {
            (None, None) => true,
            (Some(p), Some(first)) => {
                let (pdir, _) = self.dir(p);
                match self.lower_diff(first) {
                    Ok(d) => d.parent().is_some_and(|x| same_dir(x, &pdir)),
                    Err(_) => false,
                }
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_base32() {
        let a = short_id().unwrap();
        let b = short_id().unwrap();
        assert_eq!(a.len(), 26);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c))
        );
    }

    #[test]
    fn override_stat_parses_both_formats() {
        assert_eq!(parse_override(b"0:0:0755:dir"), Some((0, 0, 0o755)));
        assert_eq!(parse_override(b"1:2:0555"), Some((1, 2, 0o555)));
        assert_eq!(parse_override(b"junk"), None);
    }

    #[test]
    fn umask_is_a_mode() {
        let m = umask();
        assert_eq!(m & !0o777, 0);
    }
}
