//! Deterministic benchmark data: a deep tree of many small files, a few large files (part
//! compressible, part random) and an upper layer with whiteouts, deletions and an opaque
//! directory — each written as plain tar, `.tar.gz` and `.tar.zst`, plus the small tree
//! extracted on disk for the reference tools. Cached under `target/bench/data/<key>/`, where
//! the key names every parameter; `manifest.json` is written last and marks a complete set.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::proc::hex;

/// Sizes of the generated data.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of regular files (plus about 1% symlinks and 0.5% hard links) in the small tree.
    pub files: usize,
    /// Sizes in MiB of the large files.
    pub large_mib: Vec<u64>,
}

impl Params {
    /// The cache key: changes whenever the data would.
    pub fn key(&self) -> String {
        let large: Vec<String> = self.large_mib.iter().map(u64::to_string).collect();
        format!("v2-small{}-large{}", self.files, large.join("x"))
    }
}

/// One generated layer diff.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Short name: `small`, `large`, `upper`.
    pub name: String,
    /// The plain tar.
    pub tar: PathBuf,
    /// The gzip-compressed tar.
    pub gz: PathBuf,
    /// The zstd-compressed tar.
    pub zst: PathBuf,
    /// sha256 (hex) of the plain tar: what `diff -u` of the applied layer must reproduce.
    pub sha256: String,
    /// Size of the plain tar.
    pub size: u64,
    /// Number of tar entries.
    pub entries: u64,
}

/// The whole data set.
#[derive(Clone, Debug)]
pub struct Data {
    /// The cache directory.
    pub dir: PathBuf,
    /// Many small files in a deep tree.
    pub small: Dataset,
    /// A few large files.
    pub large: Dataset,
    /// A tree like `small` with a tenth of the files: the parent of `upper` (small, so that the
    /// vfs copies of it made for every upper apply stay cheap).
    pub lower: Dataset,
    /// Changes on top of `lower`: whiteouts, deleted directories, an opaque directory.
    pub upper: Dataset,
    /// `small` extracted (for `cp -a`, `find`, `du`, `tar -c`).
    pub tree: PathBuf,
    /// `small.tar` as the one layer of an OCI image layout tagged `small` (for
    /// `import-image`), once [`oci_small`] made it.
    pub oci_small: Option<PathBuf>,
}

/// Makes (once) the OCI layout of [`Data::oci_small`]: the layer blob is a hard link to
/// `small.tar`, so it costs one read of the tar (its digest).
pub fn oci_small(data: &mut Data) -> Result<(), String> {
    let dir = data.dir.join("oci-small");
    if !dir.join("index.json").exists() {
        let tmp = data.dir.join("oci-small.tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| format!("removing {}: {e}", tmp.display()))?;
        }
        containers_storage::oci::testing::write_layout_from_files(
            &tmp,
            "small",
            &[data.small.tar.as_path()],
        )
        .map_err(|e| format!("writing the OCI layout of small.tar: {e}"))?;
        fs::rename(&tmp, &dir).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
    }
    data.oci_small = Some(dir);
    Ok(())
}

/// Files of the `lower` tree (the parent of `upper`).
fn lower_files(files: usize) -> usize {
    (files / 10).max(300)
}

/// splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `num/1000`.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// Content pools that file data is sliced from: text (compresses ~3-4×) and random bytes.
struct Pools {
    text: Vec<u8>,
    random: Vec<u8>,
}

const WORDS: &[&str] = &[
    "container",
    "storage",
    "layer",
    "image",
    "overlay",
    "driver",
    "mount",
    "the",
    "of",
    "and",
    "digest",
    "sha256",
    "config",
    "manifest",
    "json",
    "tar",
    "split",
    "whiteout",
    "opaque",
    "lib",
    "usr",
    "share",
    "bin",
    "etc",
    "x86_64",
    "linux",
    "gnu",
    "so",
    "include",
    "#define",
    "return",
    "if",
    "else",
    "for",
    "while",
    "struct",
    "int",
    "char",
    "void",
    "static",
    "const",
    "0x00",
    "0xff",
    "error",
    "warning",
    "debug",
    "info",
    "=",
    "{",
    "}",
    "(",
    ")",
    ";",
    "//",
];

impl Pools {
    fn new() -> Self {
        let mut rng = Rng(42);
        let mut text = Vec::with_capacity(4 << 20);
        while text.len() < 4 << 20 {
            let r = rng.next();
            text.extend_from_slice(WORDS[(r % WORDS.len() as u64) as usize].as_bytes());
            text.push(if (r >> 32).is_multiple_of(11) {
                b'\n'
            } else {
                b' '
            });
        }
        let mut random = Vec::with_capacity(16 << 20);
        while random.len() < 16 << 20 {
            random.extend_from_slice(&rng.next().to_le_bytes());
        }
        Pools { text, random }
    }

    /// `size` bytes of file content: compressible (text) or random, from a random offset.
    fn content(&self, rng: &mut Rng, size: usize, compressible: bool) -> Vec<u8> {
        let pool = if compressible {
            &self.text
        } else {
            &self.random
        };
        let mut out = Vec::with_capacity(size);
        while out.len() < size {
            let chunk = (size - out.len()).min(1 << 20).min(pool.len());
            let off = rng.below((pool.len() - chunk) as u64 + 1) as usize;
            out.extend_from_slice(&pool[off..off + chunk]);
        }
        out
    }
}

/// A tar writer that hashes and counts what it writes.
struct HashWriter {
    inner: BufWriter<File>,
    hasher: Sha256,
    len: u64,
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct TarOut {
    b: tar::Builder<HashWriter>,
    entries: u64,
}

impl TarOut {
    fn create(path: &Path) -> io::Result<Self> {
        let f = File::create(path)?;
        Ok(TarOut {
            b: tar::Builder::new(HashWriter {
                inner: BufWriter::with_capacity(1 << 20, f),
                hasher: Sha256::new(),
                len: 0,
            }),
            entries: 0,
        })
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64, owner: u64, mtime: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(owner);
        h.set_gid(owner);
        h.set_mtime(mtime);
        h
    }

    fn dir(&mut self, path: &str, mtime: u64) -> io::Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0, 0, mtime);
        self.entries += 1;
        self.b.append_data(&mut h, format!("{path}/"), io::empty())
    }

    fn file(
        &mut self,
        path: &str,
        mode: u32,
        owner: u64,
        mtime: u64,
        data: &[u8],
    ) -> io::Result<()> {
        let mut h = Self::header(
            tar::EntryType::Regular,
            mode,
            data.len() as u64,
            owner,
            mtime,
        );
        self.entries += 1;
        self.b.append_data(&mut h, path, data)
    }

    fn link(
        &mut self,
        kind: tar::EntryType,
        path: &str,
        target: &str,
        mtime: u64,
    ) -> io::Result<()> {
        let mode = if kind == tar::EntryType::Symlink {
            0o777
        } else {
            0o644
        };
        let mut h = Self::header(kind, mode, 0, 0, mtime);
        self.entries += 1;
        self.b.append_link(&mut h, path, target)
    }

    fn finish(self) -> io::Result<(String, u64, u64)> {
        let entries = self.entries;
        let mut w = self.b.into_inner()?;
        w.flush()?;
        w.inner.get_ref().sync_all()?;
        Ok((hex(&w.hasher.finalize()), w.len, entries))
    }
}

struct Dir {
    path: String,
    depth: u32,
    leaf: bool,
}

enum Kind {
    Regular {
        size: usize,
        compressible: bool,
        mode: u32,
        owner: u64,
    },
    Symlink(String),
    Hardlink(usize),
}

struct FileEnt {
    dir: usize,
    name: String,
    kind: Kind,
}

fn file_size(rng: &mut Rng) -> usize {
    // Mean about 7 KiB: 40% tiny, 40% small, 18.5% medium, 1.5% up to 160 KiB.
    let r = rng.below(1000);
    let kib = if r < 400 {
        return rng.range(0, 1024) as usize;
    } else if r < 800 {
        rng.range(1, 8)
    } else if r < 985 {
        rng.range(8, 32)
    } else {
        rng.range(32, 160)
    };
    (kib * 1024 - rng.below(1024)) as usize
}

/// The small tree: directories (index 0 is the root, never emitted) and files sorted by dir.
fn small_tree(rng: &mut Rng, files: usize) -> (Vec<Dir>, Vec<FileEnt>) {
    let ndirs = (files / 40).max(8);
    let mut dirs = vec![Dir {
        path: String::new(),
        depth: 0,
        leaf: false,
    }];
    for i in 1..=ndirs {
        // A random existing parent no deeper than 11: a random recursive tree, depth ~ ln n.
        let parent = loop {
            let p = rng.below(i as u64) as usize;
            if dirs[p].depth < 11 {
                break p;
            }
        };
        dirs[parent].leaf = false;
        let path = if parent == 0 {
            format!("d{i:04}")
        } else {
            format!("{}/d{i:04}", dirs[parent].path)
        };
        let depth = dirs[parent].depth + 1;
        dirs.push(Dir {
            path,
            depth,
            leaf: true,
        });
    }
    let mut ents: Vec<FileEnt> = Vec::with_capacity(files + files / 50);
    let mut regular = 0usize;
    let mut n = 0usize;
    while regular < files {
        let dir = 1 + rng.below(ndirs as u64) as usize;
        n += 1;
        let kind = if rng.chance(10) && n > 1 {
            Kind::Symlink(format!("../f{:06}", rng.below(n as u64)))
        } else if rng.chance(5) && regular > 0 {
            Kind::Hardlink(0)
        } else {
            regular += 1;
            let mode = match rng.below(10) {
                0 => 0o755,
                1 => 0o600,
                _ => 0o644,
            };
            Kind::Regular {
                size: file_size(rng),
                compressible: rng.chance(700),
                mode,
                owner: if rng.chance(50) { 1000 } else { 0 },
            }
        };
        ents.push(FileEnt {
            dir,
            name: format!("f{n:06}"),
            kind,
        });
    }
    ents.sort_by_key(|e| e.dir);
    // Hard links point at an earlier regular file (tar order), chosen now that order is known.
    let mut regulars: Vec<usize> = Vec::new();
    for (i, e) in ents.iter_mut().enumerate() {
        match e.kind {
            Kind::Regular { .. } => regulars.push(i),
            Kind::Hardlink(_) => {
                if regulars.is_empty() {
                    e.kind = Kind::Symlink("nowhere".into());
                } else {
                    let t = regulars[rng.below(regulars.len() as u64) as usize];
                    e.kind = Kind::Hardlink(t);
                }
            }
            Kind::Symlink(_) => {}
        }
    }
    (dirs, ents)
}

fn path_of(dirs: &[Dir], e: &FileEnt) -> String {
    format!("{}/{}", dirs[e.dir].path, e.name)
}

fn write_tree(
    path: &Path,
    name: &str,
    seed: u64,
    pools: &Pools,
    files: usize,
) -> io::Result<(Dataset, Vec<Dir>, Vec<FileEnt>)> {
    let mut rng = Rng(seed);
    let (dirs, ents) = small_tree(&mut rng, files);
    let mut t = TarOut::create(path)?;
    let mtime = |rng: &mut Rng| 1_700_000_000 + rng.below(10_000_000);
    for d in &dirs[1..] {
        t.dir(&d.path, mtime(&mut rng))?;
    }
    for e in &ents {
        let p = path_of(&dirs, e);
        let m = mtime(&mut rng);
        match &e.kind {
            Kind::Regular {
                size,
                compressible,
                mode,
                owner,
            } => {
                let data = pools.content(&mut rng, *size, *compressible);
                t.file(&p, *mode, *owner, m, &data)?;
            }
            Kind::Symlink(target) => t.link(tar::EntryType::Symlink, &p, target, m)?,
            Kind::Hardlink(i) => {
                let target = path_of(&dirs, &ents[*i]);
                t.link(tar::EntryType::Link, &p, &target, m)?;
            }
        }
    }
    let (sha256, size, entries) = t.finish()?;
    Ok((dataset(name, path, sha256, size, entries), dirs, ents))
}

fn write_large(path: &Path, pools: &Pools, sizes_mib: &[u64]) -> io::Result<Dataset> {
    let mut rng = Rng(2);
    let mut t = TarOut::create(path)?;
    t.dir("big", 1_700_000_000)?;
    for (i, mib) in sizes_mib.iter().enumerate() {
        let total = (*mib as usize) << 20;
        // First half compressible text, second half random, in 1 MiB chunks.
        let mut h = TarOut::header(
            tar::EntryType::Regular,
            0o644,
            total as u64,
            0,
            1_700_000_000,
        );
        let reader = LargeReader {
            pools,
            rng: Rng(100 + i as u64),
            total,
            done: 0,
            buf: Vec::new(),
            pos: 0,
        };
        t.entries += 1;
        t.b.append_data(&mut h, format!("big/blob-{i}.bin"), reader)?;
        let _ = rng.next();
    }
    let (sha256, size, entries) = t.finish()?;
    Ok(dataset("large", path, sha256, size, entries))
}

/// Streams a large file's content without holding it in memory.
struct LargeReader<'a> {
    pools: &'a Pools,
    rng: Rng,
    total: usize,
    done: usize,
    buf: Vec<u8>,
    pos: usize,
}

impl io::Read for LargeReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.done >= self.total {
                return Ok(0);
            }
            let chunk = (self.total - self.done).min(1 << 20);
            let compressible = self.done < self.total / 2;
            self.buf = self.pools.content(&mut self.rng, chunk, compressible);
            self.done += chunk;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn write_upper(path: &Path, pools: &Pools, dirs: &[Dir], ents: &[FileEnt]) -> io::Result<Dataset> {
    let mut rng = Rng(3);
    let leaves: Vec<usize> = (1..dirs.len()).filter(|&i| dirs[i].leaf).collect();
    let pick = (leaves.len() / 100).max(2);
    let mut deleted = Vec::new();
    let mut opaque = Vec::new();
    for &l in &leaves {
        if deleted.len() < pick && rng.chance(100) {
            deleted.push(l);
        } else if opaque.len() < pick && rng.chance(100) {
            opaque.push(l);
        }
    }
    // Per directory, what happens to it: (whiteouts, modified files).
    let mut per_dir: Vec<(Vec<&FileEnt>, Vec<&FileEnt>)> =
        (0..dirs.len()).map(|_| (Vec::new(), Vec::new())).collect();
    for e in ents {
        if deleted.contains(&e.dir) || opaque.contains(&e.dir) {
            continue;
        }
        let r = rng.below(1000);
        if r < 20 {
            per_dir[e.dir].0.push(e);
        } else if r < 40 && matches!(e.kind, Kind::Regular { .. }) {
            per_dir[e.dir].1.push(e);
        }
    }
    let mut t = TarOut::create(path)?;
    let m = 1_750_000_000;
    // Each directory header once, even when several changes live in it.
    let mut seen = std::collections::HashSet::new();
    let mut dir_once = |t: &mut TarOut, p: &str| -> io::Result<()> {
        if seen.insert(p.to_string()) {
            t.dir(p, m)
        } else {
            Ok(())
        }
    };
    // Deleted directories: a whiteout named after the directory, in its parent.
    for &d in &deleted {
        let p = &dirs[d].path;
        let (parent, name) = p.rsplit_once('/').unwrap_or(("", p.as_str()));
        if parent.is_empty() {
            t.file(&format!(".wh.{name}"), 0o644, 0, m, &[])?;
        } else {
            dir_once(&mut t, parent)?;
            t.file(&format!("{parent}/.wh.{name}"), 0o644, 0, m, &[])?;
        }
    }
    // Opaque directories: marker plus new content.
    for &d in &opaque {
        let p = &dirs[d].path;
        dir_once(&mut t, p)?;
        t.file(&format!("{p}/.wh..wh..opq"), 0o644, 0, m, &[])?;
        for k in 0..3 {
            let data = pools.content(&mut rng, 2048 + k * 1000, true);
            t.file(&format!("{p}/replaced-{k}"), 0o644, 0, m, &data)?;
        }
    }
    for (d, (wh, modified)) in per_dir.iter().enumerate() {
        if wh.is_empty() && modified.is_empty() {
            continue;
        }
        let p = &dirs[d].path;
        dir_once(&mut t, p)?;
        for e in wh {
            t.file(&format!("{p}/.wh.{}", e.name), 0o644, 0, m, &[])?;
        }
        for e in modified {
            let size = file_size(&mut rng);
            let data = pools.content(&mut rng, size, true);
            t.file(&path_of(dirs, e), 0o644, 0, m, &data)?;
        }
    }
    t.dir("bench-new", m)?;
    for k in 0..(ents.len() / 100).max(10) {
        let size = file_size(&mut rng);
        let compressible = rng.chance(700);
        let data = pools.content(&mut rng, size, compressible);
        t.file(&format!("bench-new/n{k:05}"), 0o644, 0, m, &data)?;
    }
    let (sha256, size, entries) = t.finish()?;
    Ok(dataset("upper", path, sha256, size, entries))
}

fn dataset(name: &str, tar: &Path, sha256: String, size: u64, entries: u64) -> Dataset {
    Dataset {
        name: name.into(),
        tar: tar.to_path_buf(),
        gz: tar.with_extension("tar.gz"),
        zst: tar.with_extension("tar.zst"),
        sha256,
        size,
        entries,
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Compresses `src` to `dst` with `tool args` (reading stdin, writing stdout).
fn compress_with(tool: &str, args: &[&str], src: &Path, dst: &Path) -> Result<(), String> {
    let status = Command::new(tool)
        .args(args)
        .stdin(File::open(src).map_err(|e| format!("{}: {e}", src.display()))?)
        .stdout(File::create(dst).map_err(|e| format!("{}: {e}", dst.display()))?)
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| format!("{tool}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{tool} {args:?} < {}: {status}", src.display()))
    }
}

fn compress(ds: &Dataset) -> Result<(), String> {
    if have("pigz") {
        compress_with("pigz", &["-6", "-n", "-c"], &ds.tar, &ds.gz)?;
    } else {
        let mut input = File::open(&ds.tar).map_err(|e| e.to_string())?;
        let out = File::create(&ds.gz).map_err(|e| e.to_string())?;
        let mut enc =
            flate2::write::GzEncoder::new(BufWriter::new(out), flate2::Compression::new(6));
        io::copy(&mut input, &mut enc).map_err(|e| e.to_string())?;
        enc.finish()
            .and_then(|mut w| w.flush())
            .map_err(|e| e.to_string())?;
    }
    if !have("zstd") {
        return Err("zstd is not installed (apt-get install zstd)".into());
    }
    compress_with("zstd", &["-q", "-3", "-c"], &ds.tar, &ds.zst)
}

fn manifest_json(d: &Data, params: &Params) -> serde_json::Value {
    let ds =
        |d: &Dataset| serde_json::json!({"sha256": d.sha256, "size": d.size, "entries": d.entries});
    serde_json::json!({
        "key": params.key(),
        "small": ds(&d.small), "large": ds(&d.large), "lower": ds(&d.lower),
        "upper": ds(&d.upper),
    })
}

fn load(dir: &Path, params: &Params) -> Option<Data> {
    let text = fs::read_to_string(dir.join("manifest.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    if v["key"].as_str()? != params.key() {
        return None;
    }
    let ds = |name: &str| -> Option<Dataset> {
        let m = &v[name];
        let d = dataset(
            name,
            &dir.join(format!("{name}.tar")),
            m["sha256"].as_str()?.to_string(),
            m["size"].as_u64()?,
            m["entries"].as_u64()?,
        );
        (d.tar.exists() && d.gz.exists() && d.zst.exists()).then_some(d)
    };
    let tree = dir.join("tree-small");
    tree.is_dir().then_some(())?;
    Some(Data {
        dir: dir.to_path_buf(),
        small: ds("small")?,
        large: ds("large")?,
        lower: ds("lower")?,
        upper: ds("upper")?,
        tree,
        oci_small: Some(dir.join("oci-small")).filter(|d| d.join("index.json").exists()),
    })
}

/// The cached data for `params` under `base`, if it is complete.
pub fn cached(base: &Path, params: &Params) -> Option<Data> {
    load(&base.join(params.key()), params)
}

/// Returns the cached data for `params` under `base`, generating it first if needed.
pub fn prepare(base: &Path, params: &Params) -> Result<Data, String> {
    let dir = base.join(params.key());
    if let Some(d) = load(&dir, params) {
        eprintln!("bench: using cached data {}", dir.display());
        return Ok(d);
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    eprintln!("bench: generating data in {} (once) ...", dir.display());
    let pools = Pools::new();
    let err = |e: io::Error| e.to_string();
    let (small, _, _) =
        write_tree(&dir.join("small.tar"), "small", 1, &pools, params.files).map_err(err)?;
    let large = write_large(&dir.join("large.tar"), &pools, &params.large_mib).map_err(err)?;
    let (lower, dirs, ents) = write_tree(
        &dir.join("lower.tar"),
        "lower",
        4,
        &pools,
        lower_files(params.files),
    )
    .map_err(err)?;
    let upper = write_upper(&dir.join("upper.tar"), &pools, &dirs, &ents).map_err(err)?;
    for ds in [&small, &large, &lower, &upper] {
        compress(ds)?;
    }
    let tree = dir.join("tree-small");
    fs::create_dir_all(&tree).map_err(err)?;
    crate::run(
        Command::new("tar")
            .args(["--numeric-owner", "-xpf"])
            .arg(&small.tar)
            .arg("-C")
            .arg(&tree),
    )?;
    let data = Data {
        dir: dir.clone(),
        small,
        large,
        lower,
        upper,
        tree,
        oci_small: None,
    };
    let manifest = manifest_json(&data, params);
    fs::write(dir.join("manifest.json"), manifest.to_string()).map_err(err)?;
    for ds in [&data.small, &data.large, &data.lower, &data.upper] {
        eprintln!(
            "bench: {}: {} entries, {:.1} MiB tar, sha256 {}",
            ds.name,
            ds.entries,
            ds.size as f64 / 1048576.0,
            &ds.sha256[..12]
        );
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_valid() {
        let _serial = crate::bench::proc::tests::RSS
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let tmp = std::env::temp_dir().join(format!("xtask-bench-data-{}", std::process::id()));
        let params = Params {
            files: 300,
            large_mib: vec![1],
        };
        let a = prepare(&tmp.join("a"), &params).expect("generate a");
        let b = prepare(&tmp.join("b"), &params).expect("generate b");
        assert_eq!(a.small.sha256, b.small.sha256);
        assert_eq!(a.upper.sha256, b.upper.sha256);
        assert_eq!(a.large.sha256, b.large.sha256);
        assert_ne!(a.small.sha256, a.upper.sha256);
        // The tar reads back, and has whiteouts and an opaque marker in the upper layer.
        let list = Command::new("tar")
            .arg("-tf")
            .arg(&a.upper.tar)
            .output()
            .expect("tar -t");
        assert!(list.status.success());
        let names = String::from_utf8_lossy(&list.stdout);
        assert!(
            names.lines().any(|l| l.ends_with("/.wh..wh..opq")),
            "{names}"
        );
        assert!(names.lines().any(|l| l.contains("/.wh.f")), "{names}");
        assert!(names.lines().any(|l| l.contains(".wh.d")), "{names}");
        // Cached: a second prepare does not regenerate (same manifest, same files).
        let again = prepare(&tmp.join("a"), &params).expect("cached");
        assert_eq!(again.small.size, a.small.size);
        let gz = Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc {} | sha256sum", a.small.gz.display()))
            .output()
            .expect("gzip");
        assert!(String::from_utf8_lossy(&gz.stdout).starts_with(&a.small.sha256));
        let _ = fs::remove_dir_all(&tmp);
    }
}
