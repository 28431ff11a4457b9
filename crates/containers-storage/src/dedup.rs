//! `Dedup` (Go's `store.Dedup` and `pkg/dedup`): shares identical file contents between the
//! layers of images with the kernel's `FIDEDUPERANGE` ioctl.
//!
//! Every layer reachable from an image's top or mapped layers is walked (the driver's
//! directories: the overlay `diff` directory, the vfs layer directory; btrfs none, as in Go);
//! regular, non-empty files are grouped by size and, with [`HashMethod::Crc`] or
//! [`HashMethod::Sha256`], a content hash. Each later file of a group is deduplicated against
//! the group's candidates; the kernel compares the bytes itself, so a size-only match never
//! merges different contents. Hard links of one inode are counted once.
//!
//! The total is the sum of the bytes the kernel reports deduplicated. The kernel reports
//! identical ranges again when they already share their extents, so the total of a second
//! run over an unchanged store equals the first: for every set of identical files, (distinct
//! inodes − 1) × size, whatever the hash method.
//!
//! Limits: file systems without `FIDEDUPERANGE` (ext4, tmpfs…) deduplicate nothing and
//! report 0 bytes, as does a layer whose directory cannot be found.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use storage_types::{Error, ErrorKind, Result, Sha256Digester};

use crate::Store;
use crate::sys;

/// How candidate files are grouped (Go's `--hash-method`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HashMethod {
    /// Same size only (the kernel still compares the bytes).
    Size,
    /// Size and CRC-64 of the contents (the default).
    #[default]
    Crc,
    /// Size and SHA-256 of the contents.
    Sha256,
}

impl std::str::FromStr for HashMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<HashMethod> {
        match s {
            "size" => Ok(HashMethod::Size),
            "crc" => Ok(HashMethod::Crc),
            "sha256" => Ok(HashMethod::Sha256),
            other => Err(Error::msg(
                ErrorKind::InvalidInput,
                format!("invalid hash method: {other}"),
            )),
        }
    }
}

/// Options of [`Store::dedup`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupOptions {
    /// How candidates are grouped.
    pub hash_method: HashMethod,
}

/// What [`Store::dedup`] achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupResult {
    /// Bytes now shared instead of stored twice.
    pub deduped: u64,
}

impl Store {
    /// Go's `Store.Dedup` (1.57+): deduplicates identical files across the layers of all
    /// images (read-write and read-only image stores; the layers are looked up in the
    /// primary layer store only, container layers never).
    ///
    /// The total is what the kernel reports as deduplicated: identical contents are reported
    /// again on every run, so running it twice on an unchanged store gives the same number,
    /// whatever the `hash_method`. A file system without `FIDEDUPERANGE` gives 0.
    pub fn dedup(&self, opts: &DedupOptions) -> Result<DedupResult> {
        let mut tops: Vec<String> = Vec::new();
        for i in self.images.read()?.images() {
            tops.push(i.layer.clone());
            tops.extend(i.mapped_layers.iter().cloned());
        }
        for ro in &self.ro_images {
            for i in ro.read()?.images() {
                tops.push(i.layer.clone());
                tops.extend(i.mapped_layers.iter().cloned());
            }
        }
        let (driver, rw) = {
            let g = self.graph()?;
            (g.state.driver.clone(), g.state.layers.clone())
        };
        let w = rw.write()?;
        let mut layers: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for top in tops {
            let mut cur = top;
            while !cur.is_empty() && !seen.contains(&cur) {
                let Some(l) = w.lookup(&cur) else {
                    break;
                };
                seen.insert(cur.clone());
                layers.push(l.id.clone());
                cur = l.parent.clone();
            }
        }
        let dirs = driver.dedup_dirs(&layers);
        let deduped = dedup_dirs(&dirs, opts.hash_method)?;
        drop(w);
        Ok(DedupResult { deduped })
    }
}

/// Go's `dedup.DedupDirs`: every regular, non-empty file of `dirs` (each inode once) is
/// keyed by `method`. The first file of a key becomes a candidate; a later one is
/// deduplicated against each candidate in turn (`FIDEDUPERANGE` of the candidate's whole
/// length) until the kernel reports bytes deduplicated, which are added to the total; if
/// none does, it becomes a candidate too. A file system that cannot deduplicate ends the
/// walk with the total so far; other errors of the ioctl skip to the next candidate.
fn dedup_dirs(dirs: &[PathBuf], method: HashMethod) -> Result<u64> {
    let mut candidates: HashMap<String, Vec<(PathBuf, u64)>> = HashMap::new();
    let mut inodes: HashSet<(u64, u64)> = HashSet::new();
    let mut total = 0u64;
    for dir in dirs {
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            let rd = std::fs::read_dir(&d).map_err(|e| Error::io("open", &d, e))?;
            let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let path = entry.path();
                let meta =
                    std::fs::symlink_metadata(&path).map_err(|e| Error::io("lstat", &path, e))?;
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                if !meta.is_file() || meta.len() == 0 || !inodes.insert((meta.dev(), meta.ino())) {
                    continue;
                }
                let key = file_key(&path, meta.len(), method)?;
                let list = candidates.entry(key).or_default();
                if list.is_empty() {
                    list.push((path, meta.len()));
                    continue;
                }
                match dedup_against(list, &path) {
                    Ok(Some(n)) => total += n,
                    Ok(None) => list.push((path, meta.len())),
                    Err(Unsupported) => return Ok(total),
                }
            }
        }
    }
    Ok(total)
}

fn file_key(path: &Path, size: u64, method: HashMethod) -> Result<String> {
    if method == HashMethod::Size {
        return Ok(size.to_string());
    }
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut crc = 0u64;
    let mut sha = Sha256Digester::new();
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io("read", path, e))?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        match method {
            HashMethod::Crc => crc = storage_tarsplit::crc64_update(crc, chunk),
            _ => sha.update(chunk),
        }
    }
    // The size is part of every key: files of different sizes are never identical.
    Ok(match method {
        HashMethod::Crc => format!("{size}:{crc:016x}"),
        _ => format!("{size}:{}", sha.finish()),
    })
}

/// The file system cannot deduplicate (`EOPNOTSUPP`).
struct Unsupported;

/// Deduplicates `dst` against the candidates in order; the bytes of the first call that
/// shared any, or `None` when none did.
fn dedup_against(
    candidates: &[(PathBuf, u64)],
    dst: &Path,
) -> std::result::Result<Option<u64>, Unsupported> {
    // Go opens the destination write-only, as the ioctl requires of other users' files.
    let Ok(d) = std::fs::OpenOptions::new().write(true).open(dst) else {
        return Ok(None);
    };
    for (src, len) in candidates {
        let Ok(s) = File::open(src) else {
            continue;
        };
        match sys::dedupe_range(&s, 0, *len, &d, 0) {
            Ok(n) if n > 0 => return Ok(Some(n)),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Err(Unsupported),
            Err(e) => tracing::debug!("dedup {} against {}: {e}", dst.display(), src.display()),
        }
    }
    Ok(None)
}
