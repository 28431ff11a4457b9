//! Helpers shared by the layer store tests: scratch stores on the vfs driver, sample tars.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest as _;
use storage_drivers::{Driver, DriverOptions, open_driver};
use storage_layers::{LayerStore, LayerStoreOptions};

/// A scratch graph root + run root.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub driver: Arc<dyn Driver>,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("tempdir");
        let driver = open_vfs(dir.path());
        Scratch { dir, driver }
    }

    pub fn graph(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn run(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn layer_dir(&self) -> PathBuf {
        self.graph().join("vfs-layers")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.run().join("vfs-layers")
    }

    pub fn vfs_dir(&self, id: &str) -> PathBuf {
        self.graph().join("vfs").join("dir").join(id)
    }

    pub fn options(&self) -> LayerStoreOptions {
        LayerStoreOptions::new(self.layer_dir(), self.run_dir(), self.driver.clone())
    }

    /// A new store instance on this scratch directory (as another process would have).
    pub fn store(&self) -> LayerStore {
        LayerStore::open(self.options()).expect("open layer store")
    }

    pub fn read_only_store(&self) -> LayerStore {
        let mut o = self.options();
        o.read_only = true;
        LayerStore::open(o).expect("open read-only layer store")
    }

    pub fn layers_json(&self) -> serde_json::Value {
        let data = std::fs::read(self.layer_dir().join("layers.json")).expect("layers.json");
        serde_json::from_slice(&data).expect("layers.json is JSON")
    }

    pub fn mounts_json(&self) -> serde_json::Value {
        let data =
            std::fs::read(self.run_dir().join("mountpoints.json")).expect("mountpoints.json");
        serde_json::from_slice(&data).expect("mountpoints.json is JSON")
    }
}

pub fn open_vfs(root: &Path) -> Arc<dyn Driver> {
    let graph = root.join("root");
    let run = root.join("run");
    let d = open_driver(
        "vfs",
        &DriverOptions {
            home: graph.join("vfs"),
            run_home: run.join("vfs"),
            graph_root: graph.clone(),
            run_root: run.clone(),
            image_store: None,
            options: Vec::new(),
        },
    )
    .expect("vfs driver");
    Arc::from(d)
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// A small layer tar: a directory, two files (one owned by 1000:1000), a symlink; written
/// with the `tar` crate (GNU headers), padded like Go's writer (two zero blocks, 10240-byte
/// records).
pub fn sample_tar(seed: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_path("etc/").unwrap();
    h.set_mode(0o755);
    h.set_mtime(1_700_000_000);
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    for (name, body, uid) in [
        ("etc/hello.txt", format!("hello {seed}\n"), 0u64),
        ("etc/owned.txt", format!("owned by 1000 {seed}\n"), 1000),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_mode(0o644);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(1_700_000_000);
        h.set_size(body.len() as u64);
        h.set_cksum();
        b.append(&h, body.as_bytes()).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_path("etc/link").unwrap();
    h.set_link_name("hello.txt").unwrap();
    h.set_mode(0o777);
    h.set_mtime(1_700_000_000);
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    let mut out = b.into_inner().unwrap();
    let rec = 10240;
    out.resize(out.len().div_ceil(rec) * rec, 0);
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A boxed reader over owned bytes, as `create`/`apply_diff` take.
pub fn reader(data: Vec<u8>) -> Box<dyn std::io::Read + Send> {
    Box::new(std::io::Cursor::new(data))
}

/// The entries of a directory, sorted (empty when missing).
pub fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(p) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}
