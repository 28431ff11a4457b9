//! Helpers shared by the layer store tests: scratch stores on the vfs driver (and, for the
//! driver-parametrised tests, on overlay and on a loop-mounted btrfs), sample tars.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use storage_drivers::{Driver, DriverOptions, open_driver};
use storage_layers::{LayerStore, LayerStoreOptions};
#[allow(unused_imports)] // each test binary uses a subset
pub use storage_testsupport::{
    bzip2, gzip, in_ci, is_root, list_dir, mounts_under, require, sha256, xz, zstd,
};

/// A scratch graph root + run root.
pub struct Scratch {
    /// The driver; dropped first (fields drop in order).
    pub driver: Arc<dyn Driver>,
    /// The loop-mounted btrfs holding the graph root (btrfs driver only).
    fs: Option<LoopBtrfs>,
    /// The temporary directory (removed last).
    pub dir: tempfile::TempDir,
    name: String,
    graph: PathBuf,
}

impl Scratch {
    /// A scratch store on vfs.
    pub fn new() -> Scratch {
        Scratch::with_driver("vfs").expect("vfs driver")
    }

    /// A scratch store on `driver` (`vfs`, `overlay`, `btrfs`), or `None` when the driver
    /// cannot run here — which fails the test in CI (`CI=true`) and skips it loudly otherwise.
    pub fn with_driver(driver: &str) -> Option<Scratch> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut graph = dir.path().join("root");
        let mut fs = None;
        if driver != "vfs" {
            if !require(is_root(), &format!("root for the {driver} driver")) {
                return None;
            }
            if driver == "btrfs" {
                match LoopBtrfs::new(dir.path()) {
                    Ok(b) => {
                        graph = b.mnt.join("root");
                        fs = Some(b);
                    }
                    Err(e) => {
                        require(false, &format!("a loop-mounted btrfs: {e}"));
                        return None;
                    }
                }
            }
        }
        let run = dir.path().join("run");
        // The store makes its roots before it opens the driver (btrfs checks the graph
        // root's file system).
        std::fs::create_dir_all(&graph).expect("graph root");
        std::fs::create_dir_all(&run).expect("run root");
        let d = open_driver(
            driver,
            &DriverOptions {
                home: graph.join(driver),
                run_home: run.join(driver),
                graph_root: graph.clone(),
                run_root: run,
                image_store: None,
                options: Vec::new(),
            },
        );
        let d = match d {
            Ok(d) => d,
            Err(e) => {
                require(false, &format!("the {driver} driver: {e}"));
                return None;
            }
        };
        Some(Scratch {
            driver: Arc::from(d),
            fs,
            dir,
            name: driver.to_string(),
            graph,
        })
    }

    pub fn graph(&self) -> PathBuf {
        self.graph.clone()
    }

    /// The driver's name (`vfs`, `overlay`, `btrfs`).
    pub fn driver_name(&self) -> &str {
        &self.name
    }

    pub fn run(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn layer_dir(&self) -> PathBuf {
        self.graph().join(format!("{}-layers", self.name))
    }

    pub fn run_dir(&self) -> PathBuf {
        self.run().join(format!("{}-layers", self.name))
    }

    pub fn vfs_dir(&self, id: &str) -> PathBuf {
        self.graph().join("vfs").join("dir").join(id)
    }

    /// The driver's home, `<graph>/<driver>`.
    pub fn home(&self) -> PathBuf {
        self.graph().join(&self.name)
    }

    /// Where the layer's own files are stored.
    pub fn content_dir(&self, id: &str) -> PathBuf {
        match self.name.as_str() {
            "overlay" => self.home().join(id).join("diff"),
            "btrfs" => self.home().join("subvolumes").join(id),
            _ => self.vfs_dir(id),
        }
    }

    /// The path `mount` returns for the layer.
    pub fn mount_path(&self, id: &str) -> PathBuf {
        match self.name.as_str() {
            "overlay" => self.home().join(id).join("merged"),
            _ => self.content_dir(id),
        }
    }

    /// The driver home's entries, two levels deep (`dir/<id>`, `<id>/diff`, `l/<short>`,
    /// `subvolumes/<id>`).
    pub fn driver_entries(&self) -> Vec<String> {
        let home = self.home();
        let mut v = Vec::new();
        for top in list_dir(&home) {
            let sub = home.join(&top);
            if sub.is_dir() && !sub.is_symlink() {
                v.extend(list_dir(&sub).into_iter().map(|e| format!("{top}/{e}")));
            }
            v.push(top);
        }
        v.sort();
        v
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

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.name == "vfs" {
            return;
        }
        // Leftover mounts (a test that panicked while a layer was mounted), deepest first;
        // the btrfs file system itself goes when `fs` is dropped.
        let keep = self.fs.as_ref().map(|f| f.mnt.clone());
        for m in mounts_under(self.dir.path()).iter().rev() {
            if Some(m) != keep.as_ref() {
                eprintln!("cleanup: lazily unmounting leftover {}", m.display());
                let _ = quiet(Command::new("umount").arg("-l").arg(m)).status();
            }
        }
    }
}

fn quiet(c: &mut Command) -> &mut Command {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

fn run_ok(c: &mut Command) -> Result<String, String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{c:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{c:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A btrfs file system in a sparse 1 GiB file on a loop device, mounted on `<dir>/mnt`;
/// unmounted and detached on drop (also when the test panics).
struct LoopBtrfs {
    mnt: PathBuf,
    device: String,
}

impl LoopBtrfs {
    fn new(dir: &Path) -> Result<LoopBtrfs, String> {
        let img = dir.join("btrfs.img");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| format!("mkdir {}: {e}", mnt.display()))?;
        let f = std::fs::File::create(&img).map_err(|e| format!("create image: {e}"))?;
        f.set_len(1 << 30)
            .map_err(|e| format!("truncate image: {e}"))?;
        drop(f);
        run_ok(Command::new("mkfs.btrfs").arg("-q").arg("-f").arg(&img))?;
        let device = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(&img))?;
        let fs = LoopBtrfs { mnt, device };
        run_ok(
            Command::new("mount")
                .args(["-t", "btrfs"])
                .arg(&fs.device)
                .arg(&fs.mnt),
        )?;
        Ok(fs)
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        for m in mounts_under(&self.mnt).iter().rev() {
            if m != &self.mnt {
                let _ = quiet(Command::new("umount").arg("-l").arg(m)).status();
            }
        }
        let ok = quiet(Command::new("umount").arg(&self.mnt))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok && !mounts_under(&self.mnt).is_empty() {
            let _ = quiet(Command::new("umount").arg("-l").arg(&self.mnt)).status();
        }
        let _ = quiet(Command::new("losetup").arg("-d").arg(&self.device)).status();
    }
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

/// A boxed reader over owned bytes, as `create`/`apply_diff` take.
pub fn reader(data: Vec<u8>) -> Box<dyn std::io::Read + Send> {
    Box::new(std::io::Cursor::new(data))
}
