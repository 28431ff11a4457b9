//! Helpers the drivers share: Go's option parsing (`strconv.ParseBool`,
//! `parsers.ParseKeyValueOpt`, `units.RAMInBytes`), Go's driver error texts and
//! file-system names, and the small file-system operations (`mkdir` with an exact mode,
//! `rm -rf`, writing a small file) every driver uses.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use storage_types::{Error, ErrorKind, Result};

/// Go's `graphdriver.ErrNotSupported`.
pub(crate) const ERR_NOT_SUPPORTED: &str = "driver not supported";

/// Go's `graphdriver.ErrIncompatibleFS`.
pub(crate) const ERR_INCOMPATIBLE_FS: &str =
    "backing file system is unsupported for this graph driver";

/// Go's `graphdriver.ErrPrerequisites`.
pub(crate) const ERR_PREREQUISITES: &str =
    "prerequisites for driver not satisfied (wrong filesystem?)";

/// Go's `graphdriver.FsNames` for the backing file system line.
pub(crate) fn fs_name(magic: i64) -> &'static str {
    match magic {
        0x6175_6673 => "aufs",
        0x9123_683E => "btrfs",
        0x28CD_3D45 => "cramfs",
        0xF15F => "ecryptfs",
        0xEF53 => "extfs",
        0xF2F5_2010 => "f2fs",
        0x6573_5546 => "fuse",
        0x4750_4653 => "gpfs",
        0x0000_72B6 => "jffs2",
        0x3153_464A => "jfs",
        0x6969 => "nfs",
        0x794C_7630 => "overlayfs",
        0x8584_58F6 => "ramfs",
        0x5265_4973 => "reiserfs",
        0x0000_517B => "smb",
        0x7371_7368 => "squashfs",
        0x0102_1994 => "tmpfs",
        0xA501_FCF5 => "vxfs",
        0x5846_5342 => "xfs",
        0x2FC1_2FC1 => "zfs",
        _ => "<unknown>",
    }
}

/// Go's `isNetworkFileSystem` (overlay): the network and cluster file systems on which a
/// rootless overlay store needs a mount program (and gets `force_mask=0700`).
pub(crate) fn is_network_fs(magic: i64) -> bool {
    matches!(
        magic,
        0x6969 // nfs
            | 0x0000_517B // smb
            | 0x6163_6673 // acfs
            | 0x5346_414F // afs
            | 0x00C3_6400 // ceph
            | 0xFF53_4D42 // cifs
            | 0x1983_0326 // fhgfs
            | 0x4750_4653 // gpfs
            | 0x0131_11A8 // ibrix
            | 0x6B41_4653 // kafs
            | 0x0BD0_0BD0 // lustre
            | 0x564C // ncp
            | 0x6E66_7364 // nfsd
            | 0x7461_636F // ocfs2
            | 0xAAD7_AAEA // panfs
            | 0x7C7C_6673 // prl_fs
            | 0xFE53_4D42 // smb2
            | 0xBEEF_DEAD // snfs
            | 0x786F_4256 // vboxsf
            | 0xA501_FCF5 // vxfs
    )
}

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::msg(ErrorKind::InvalidInput, msg)
}

/// Go's `units.RAMInBytes`: a number with an optional `k/m/g/t/p` suffix (optionally
/// followed by `i`/`b`/`ib`), 1024-based.
pub(crate) fn ram_in_bytes(s: &str) -> Result<u64> {
    let bad = || invalid(format!("invalid size: '{s}'"));
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .or_else(|| unit.strip_suffix('i'))
        .unwrap_or(&unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    let v = num * mult;
    if !(v.is_finite() && v >= 0.0) {
        return Err(bad());
    }
    Ok(v as u64)
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(val: &str) -> Result<bool> {
    match val {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(Error::msg(
            ErrorKind::InvalidInput,
            format!("strconv.ParseBool: parsing \"{val}\": invalid syntax"),
        )),
    }
}

/// Go's `parsers.ParseKeyValueOpt`.
pub(crate) fn parse_key_value(opt: &str) -> Result<(String, String)> {
    match opt.split_once('=') {
        Some((k, v)) => Ok((k.trim().to_owned(), v.trim().to_owned())),
        None => Err(Error::msg(
            ErrorKind::InvalidInput,
            format!("unable to parse key/value option: {opt}"),
        )),
    }
}

/// Host IDs of container root under the given maps (Go's `GetRootUIDGID`; an error when
/// container ID 0 is not mapped).
pub(crate) use storage_types::root_pair;

pub(crate) fn mkdir_mode(path: &Path, mode: u32) -> Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("chmod", path, e)),
        Err(e) => Err(Error::io("mkdir", path, e)),
    }
}

pub(crate) fn mkdir_all(path: &Path, mode: u32) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        mkdir_all(parent, 0o755.min(mode | 0o755))?;
    }
    match mkdir_mode(path, mode) {
        Err(_) if path.is_dir() => Ok(()),
        r => r,
    }
}

pub(crate) fn chown(path: &Path, ids: (u32, u32)) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(ids.0), Some(ids.1))
        .map_err(|e| Error::io("lchown", path, e))
}

pub(crate) fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    f.write_all(data).map_err(|e| Error::io("write", path, e))
}

/// The staging root of deferred removals in a driver home (Go's `tempdirs`).
pub(crate) const TEMP_DIRS: &str = "tempdirs";

/// Go's `DeferredRemove` body: moves the `paths` that exist, in order, into a new staging
/// directory `<root>/temp-dir-<x>` (as `0-<name>`, `1-<name>`, …) and returns it; `None`
/// when none exists. If a move fails, what was moved already is removed with the staging
/// directory and the error returned.
pub(crate) fn stage_removal(
    root: &Path,
    paths: &[std::path::PathBuf],
) -> Result<Option<storage_lock::TempDir>> {
    let present: Vec<&std::path::PathBuf> = paths
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect();
    if present.is_empty() {
        return Ok(None);
    }
    let lock_err = |e: storage_lock::LockError| Error::wrap(ErrorKind::Io, e);
    let mut staging = storage_lock::TempDir::new(root).map_err(lock_err)?;
    for p in present {
        staging.stage_deletion(p).map_err(lock_err)?;
    }
    Ok(Some(staging))
}

/// `rm -rf`, tolerating a missing path.
pub(crate) fn remove_all(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("lstat", path, e)),
        Ok(md) if !md.is_dir() => {
            return std::fs::remove_file(path).map_err(|e| Error::io("unlinkat", path, e));
        }
        Ok(_) => {}
    }
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            // Read-only directories (mode 0555 owned by someone else) can block the
            // removal for non-root callers: make them writable and retry.
            make_writable(path);
            std::fs::remove_dir_all(path).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(Error::io("unlinkat", path, e))
                }
            })
        }
    }
}

fn make_writable(path: &Path) {
    if let Ok(md) = std::fs::symlink_metadata(path)
        && md.is_dir()
    {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_go_units() {
        assert_eq!(ram_in_bytes("10M").unwrap(), 10 << 20);
        assert_eq!(ram_in_bytes("10g").unwrap(), 10 << 30);
        assert_eq!(ram_in_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(ram_in_bytes("512").unwrap(), 512);
        assert_eq!(ram_in_bytes("4KiB").unwrap(), 4096);
        assert_eq!(ram_in_bytes("2kb").unwrap(), 2048);
        assert!(ram_in_bytes("ten").is_err());
        assert!(ram_in_bytes("10x").is_err());
    }

    #[test]
    fn fs_names() {
        assert_eq!(fs_name(0xEF53), "extfs");
        assert_eq!(fs_name(0x5846_5342), "xfs");
        assert_eq!(fs_name(1), "<unknown>");
    }

    #[test]
    fn network_file_systems() {
        // NFS, CIFS, SMB2, Ceph, Lustre, GPFS are; the local ones a store usually sits on
        // (ext4, xfs, btrfs, tmpfs, overlay) are not.
        for m in [
            0x6969,
            0xFF53_4D42,
            0xFE53_4D42,
            0x00C3_6400,
            0x0BD0_0BD0,
            0x4750_4653,
        ] {
            assert!(is_network_fs(m), "{m:#x}");
        }
        for m in [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0x794C_7630] {
            assert!(!is_network_fs(m), "{m:#x}");
        }
    }
}
