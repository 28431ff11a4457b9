//! `Dedup` (Go's `store.Dedup` and `pkg/dedup`): shares identical file contents between the
//! layers of images with the kernel's `FIDEDUPERANGE` ioctl.
//!
//! Every layer reachable from an image's top or mapped layers is walked (its driver
//! directory: the overlay `diff` directory, the vfs/btrfs layer directory); regular,
//! non-empty files are grouped by size and, with [`HashMethod::Crc`] or
//! [`HashMethod::Sha256`], a content hash. Each later file of a group is deduplicated against
//! the first one; the kernel compares the bytes itself, so a size-only match never merges
//! different contents. Hard links of one inode are counted once.
//!
//! Limits: file systems without reflink support (ext4, tmpfs…) deduplicate nothing and
//! report 0 bytes, as does a layer whose directory cannot be found.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use storage_drivers::MountOpts;
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
    /// Go's `Store.Dedup`: deduplicates identical files across the layers of all images.
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
        layers.sort();
        let mut dirs: Vec<PathBuf> = Vec::new();
        for id in &layers {
            let meta = driver.metadata(id).unwrap_or_default();
            if let Some(upper) = meta.get("UpperDir") {
                dirs.push(PathBuf::from(upper));
                continue;
            }
            let ro = MountOpts {
                options: vec!["ro".into()],
                ..MountOpts::default()
            };
            // Naive drivers hand out the layer directory itself.
            let path = driver.get(id, &ro)?;
            driver.put(id)?;
            dirs.push(path);
        }
        let deduped = dedup_dirs(&dirs, opts.hash_method)?;
        drop(w);
        Ok(DedupResult { deduped })
    }
}

/// Go's `dedup.DedupDirs`.
fn dedup_dirs(dirs: &[PathBuf], method: HashMethod) -> Result<u64> {
    let mut first_by_key: HashMap<String, PathBuf> = HashMap::new();
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
                let Some(src) = first_by_key.get(&key) else {
                    first_by_key.insert(key, path);
                    continue;
                };
                match dedup_pair(src, &path, meta.len()) {
                    Ok(n) => total += n,
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
    Ok(match method {
        HashMethod::Crc => format!("{size}:{crc:016x}"),
        _ => format!("{size}:{}", sha.finish()),
    })
}

/// The file system cannot deduplicate.
struct Unsupported;

/// Deduplicates `dst` against `src` in chunks; returns the bytes shared.
fn dedup_pair(src: &Path, dst: &Path, size: u64) -> std::result::Result<u64, Unsupported> {
    let Ok(s) = File::open(src) else {
        return Ok(0);
    };
    let d = match File::open(dst) {
        Ok(d) => d,
        Err(_) => return Ok(0),
    };
    const CHUNK: u64 = 16 * 1024 * 1024;
    let mut offset = 0u64;
    let mut total = 0u64;
    while offset < size {
        let len = CHUNK.min(size - offset);
        match sys::dedupe_range(&s, offset, len, &d, offset) {
            Ok(sys::Outcome::Same(n)) => total += n,
            Ok(sys::Outcome::Differs) => return Ok(total),
            Err(e) => {
                let code = e.raw_os_error().unwrap_or(0);
                if [
                    libc::EOPNOTSUPP,
                    libc::ENOTTY,
                    libc::EINVAL,
                    libc::EXDEV,
                    libc::ENOSYS,
                ]
                .contains(&code)
                {
                    return Err(Unsupported);
                }
                // Busy or permission problems on one file: leave that file alone.
                return Ok(total);
            }
        }
        offset += len;
    }
    Ok(total)
}
