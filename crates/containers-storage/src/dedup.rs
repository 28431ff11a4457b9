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
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType};
use storage_io::confined::Root;

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

/// A candidate file of a key: its layer, its path there, its inode and its size.
struct Candidate {
    layer: usize,
    rel: Vec<u8>,
    inode: (u64, u64),
    size: u64,
}

/// Go's `dedup.DedupDirs`: every regular, non-empty file of `dirs` (each inode once) is
/// keyed by `method`. The first file of a key becomes a candidate; a later one is
/// deduplicated against each candidate in turn (`FIDEDUPERANGE` of the candidate's whole
/// length) until the kernel reports bytes deduplicated, which are added to the total; if
/// none does, it becomes a candidate too. A file system that cannot deduplicate ends the
/// walk with the total so far; other errors of the ioctl skip to the next candidate.
///
/// Each layer directory is walked through descriptors resolved inside it
/// ([`storage_io::confined`]): no symbolic link is followed, only regular files are opened,
/// and a file is deduplicated only while it is still the inode that was listed.
fn dedup_dirs(dirs: &[PathBuf], method: HashMethod) -> Result<u64> {
    let mut candidates: HashMap<String, Vec<Candidate>> = HashMap::new();
    let mut inodes: HashSet<(u64, u64)> = HashSet::new();
    let mut roots: Vec<Root> = Vec::new();
    let mut total = 0u64;
    for dir in dirs {
        let root = Root::open(dir).map_err(|e| Error::io("open", dir, e))?;
        let layer = roots.len();
        let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
        while let Some(rel) = stack.pop() {
            let path = |name: &[u8]| join(dir, &rel, name);
            let fd = root
                .open_dir_for_listing(&rel)
                .map_err(|e| Error::io("open", &path(b""), e))?;
            let mut names = storage_io::confined::list_dir(&fd)
                .map_err(|e| Error::io("open", &path(b""), e.into()))?;
            names.sort();
            for (name, _) in names {
                let st = rustix::fs::statat(&fd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| Error::io("lstat", &path(&name), e.into()))?;
                let child = if rel.is_empty() {
                    name.clone()
                } else {
                    [&rel[..], b"/", &name[..]].concat()
                };
                let kind = FileType::from_raw_mode(st.st_mode);
                if kind == FileType::Directory {
                    stack.push(child);
                    continue;
                }
                let inode = (st.st_dev, st.st_ino);
                if kind != FileType::RegularFile || st.st_size <= 0 || !inodes.insert(inode) {
                    continue;
                }
                // Listed as a regular file but replaced since: left alone.
                let Ok(file) = storage_io::confined::open_regular_at(&fd, &name) else {
                    continue;
                };
                if inode_of(&file) != inode {
                    continue;
                }
                let size = file.size();
                let key = file_key(file.file(), &path(&name), size, method)?;
                let list = candidates.entry(key).or_default();
                let this = Candidate {
                    layer,
                    rel: child,
                    inode,
                    size,
                };
                if list.is_empty() {
                    list.push(this);
                    continue;
                }
                match dedup_against(list, &roots, &root, layer, file.file(), &path(&name)) {
                    Ok(Some(n)) => total += n,
                    Ok(None) => list.push(this),
                    Err(Unsupported) => return Ok(total),
                }
            }
        }
        roots.push(root);
    }
    Ok(total)
}

fn inode_of(f: &storage_io::confined::RegularFile) -> (u64, u64) {
    (f.stat().st_dev, f.stat().st_ino)
}

/// `dir/rel/name`, for messages.
fn join(dir: &Path, rel: &[u8], name: &[u8]) -> PathBuf {
    let mut p = dir.to_path_buf();
    for part in [rel, name] {
        if !part.is_empty() {
            p.push(std::ffi::OsStr::from_bytes(part));
        }
    }
    p
}

fn file_key(mut f: &File, path: &Path, size: u64, method: HashMethod) -> Result<String> {
    if method == HashMethod::Size {
        return Ok(size.to_string());
    }
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
/// shared any, or `None` when none did. A candidate of layer `layer` (being walked) is
/// opened in `current`, others in `roots`; one that is no longer the inode listed is skipped.
fn dedup_against(
    candidates: &[Candidate],
    roots: &[Root],
    current: &Root,
    layer: usize,
    dst: &File,
    dst_path: &Path,
) -> std::result::Result<Option<u64>, Unsupported> {
    for c in candidates {
        let root = if c.layer == layer {
            current
        } else {
            match roots.get(c.layer) {
                Some(r) => r,
                None => continue,
            }
        };
        let Ok(src) = root.open_regular(&c.rel) else {
            continue;
        };
        if inode_of(&src) != c.inode {
            continue;
        }
        match sys::dedupe_range(src.file(), 0, c.size, dst, 0) {
            Ok(n) if n > 0 => return Ok(Some(n)),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Err(Unsupported),
            Err(e) => tracing::debug!("dedup {}: {e}", dst_path.display()),
        }
    }
    Ok(None)
}
