//! A local multi-layer OCI image, written by hand (no registry needed), and the check of a
//! root filesystem made from it.
//!
//! [`sample_layers`] generates three layers that exercise what a real image pull needs: a
//! whiteout (`.wh.NAME`) of a file and of a whole directory, an opaque directory
//! (`.wh..wh..opq`), modes 0600/0640/0750/4755/2755, owners 1000:1000, hard links (in the base
//! layer and in the top one), a symlink and a 250-character path; optionally the host's static
//! `/bin/busybox` (with `/bin/true` and `/bin/sh` links to it) so the image can be run.
//! [`OciImage::write`] writes them as an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…` with gzip layers, the config with `rootfs.diff_ids`, the manifest).
//! [`check_rootfs`] lists everything that is wrong in a mounted or exported root filesystem
//! of that image (the merged view of the three layers).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::tars::sha256;
pub use storage_testsupport::gzip;

/// Path of the static busybox shipped in the base layer when asked for.
pub const BUSYBOX: &str = "/bin/busybox";

/// Whether the host has a static busybox usable inside an image.
pub fn busybox_available() -> bool {
    Path::new(BUSYBOX).is_file()
}

/// The 250-character path (relative to the root) of a file in the base layer.
pub fn long_path() -> String {
    let head = format!("long/{}/{}/", "d".repeat(100), "e".repeat(100));
    let rest = 250 - head.len();
    format!("{head}{}", "f".repeat(rest))
}

/// Content of `data/big` (300 000 bytes, not all alike).
pub fn big_content() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// A tar builder with owners on every entry (GNU long names for paths over 100 bytes).
struct Tb(tar::Builder<Vec<u8>>);

fn hdr(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

impl Tb {
    fn new() -> Self {
        Tb(tar::Builder::new(Vec::new()))
    }
    fn dir(mut self, path: &str, mode: u32, uid: u64) -> Self {
        let mut h = hdr(tar::EntryType::Directory, mode, uid, uid, 0);
        self.0.append_data(&mut h, path, &[][..]).expect("tar dir");
        self
    }
    fn file(mut self, path: &str, mode: u32, uid: u64, data: &[u8]) -> Self {
        let mut h = hdr(tar::EntryType::Regular, mode, uid, uid, data.len() as u64);
        self.0.append_data(&mut h, path, data).expect("tar file");
        self
    }
    fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = hdr(tar::EntryType::Symlink, 0o777, 0, 0, 0);
        self.0
            .append_link(&mut h, path, target)
            .expect("tar symlink");
        self
    }
    fn hardlink(mut self, path: &str, target: &str, uid: u64) -> Self {
        let mut h = hdr(tar::EntryType::Link, 0o644, uid, uid, 0);
        self.0
            .append_link(&mut h, path, target)
            .expect("tar hardlink");
        self
    }
    fn finish(self) -> Vec<u8> {
        self.0.into_inner().expect("tar finish")
    }
}

/// The three uncompressed layer tars of the sample image, base first.
///
/// With `busybox`, the base layer also holds the host's `/bin/busybox` as `bin/busybox`
/// plus `bin/true` and `bin/sh` symlinks to it.
pub fn sample_layers(busybox: bool) -> Vec<Vec<u8>> {
    let long = long_path();
    let long_dir1 = "long/".to_string();
    let long_dir2 = format!("long/{}/", "d".repeat(100));
    let long_dir3 = format!("long/{}/{}/", "d".repeat(100), "e".repeat(100));
    let mut base = Tb::new().dir("bin/", 0o755, 0);
    if busybox {
        let bb = std::fs::read(BUSYBOX).expect("read /bin/busybox");
        base = base
            .file("bin/busybox", 0o755, 0, &bb)
            .symlink("bin/true", "busybox")
            .symlink("bin/sh", "busybox");
    }
    let base = base
        .dir("etc/", 0o755, 0)
        .file("etc/motd", 0o644, 0, b"base motd\n")
        .file("etc/secret", 0o600, 1000, b"secret\n")
        .dir("usr/", 0o755, 0)
        .dir("usr/bin/", 0o755, 0)
        .file("usr/bin/suid", 0o4755, 0, b"#!/bin/sh\necho suid\n")
        .dir("home/", 0o755, 0)
        .dir("home/user/", 0o750, 1000)
        .file("home/user/notes", 0o640, 1000, b"notes\n")
        .dir("data/", 0o755, 0)
        .file("data/big", 0o644, 0, &big_content())
        .hardlink("data/hard", "data/big", 0)
        .symlink("data/link", "big")
        .dir("gone/", 0o755, 0)
        .file("gone/file", 0o644, 0, b"to be deleted\n")
        .file("gone/keep", 0o644, 0, b"kept\n")
        .dir("gone-dir/", 0o755, 0)
        .file("gone-dir/a", 0o644, 0, b"a\n")
        .dir("gone-dir/sub/", 0o755, 0)
        .file("gone-dir/sub/b", 0o644, 0, b"b\n")
        .dir("opq/", 0o755, 0)
        .file("opq/old1", 0o644, 0, b"old1\n")
        .dir("opq/sub/", 0o755, 0)
        .file("opq/sub/old2", 0o644, 0, b"old2\n")
        .dir(&long_dir1, 0o755, 0)
        .dir(&long_dir2, 0o755, 0)
        .dir(&long_dir3, 0o755, 0)
        .file(&long, 0o644, 0, b"long\n")
        .finish();
    let middle = Tb::new()
        .dir("etc/", 0o755, 0)
        .file("etc/motd", 0o644, 0, b"layer2 motd\n")
        .dir("gone/", 0o755, 0)
        .file("gone/.wh.file", 0o644, 0, b"")
        .file(".wh.gone-dir", 0o644, 0, b"")
        .dir("opq/", 0o755, 0)
        .file("opq/.wh..wh..opq", 0o644, 0, b"")
        .file("opq/new", 0o644, 0, b"new\n")
        .finish();
    let top = Tb::new()
        .dir("added/", 0o755, 0)
        .file("added/x", 0o644, 1000, b"x\n")
        .hardlink("added/x-link", "added/x", 1000)
        .file("added/sgid", 0o2755, 0, b"sgid\n")
        .finish();
    vec![base, middle, top]
}

/// gunzip bytes (panics on corrupt input: test data only).
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(data), &mut out).expect("gunzip");
    out
}

/// One layer of an [`OciImage`].
pub struct OciLayer {
    /// Uncompressed tar.
    pub tar: Vec<u8>,
    /// `sha256:` of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
    /// `sha256:` of the blob (the manifest's layer digest).
    pub digest: String,
    /// Path of the blob (gzip, or the plain tar).
    pub blob: PathBuf,
}

/// An OCI image layout written on disk.
pub struct OciImage {
    /// The layout directory (use as `oci:DIR:TAG`).
    pub dir: PathBuf,
    /// The tag in `index.json` (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// Layers, base first.
    pub layers: Vec<OciLayer>,
    /// Config bytes.
    pub config: Vec<u8>,
    /// `sha256:` of the config (its hex is the image ID in containers/storage).
    pub config_digest: String,
    /// Path of the config blob.
    pub config_path: PathBuf,
    /// Manifest bytes.
    pub manifest: Vec<u8>,
    /// `sha256:` of the manifest.
    pub manifest_digest: String,
    /// Path of the manifest blob.
    pub manifest_path: PathBuf,
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn write_blob(dir: &Path, data: &[u8]) -> (String, PathBuf) {
    let d = sha256(data);
    let p = dir.join("blobs/sha256").join(hex_of(&d));
    std::fs::write(&p, data).expect("write blob");
    (d, p)
}

impl OciImage {
    /// Writes `layers` (uncompressed tars, base first) as an OCI layout in `dir` with `tag`,
    /// with gzip layer blobs.
    pub fn write(dir: &Path, tag: &str, layers: Vec<Vec<u8>>) -> OciImage {
        Self::write_with(dir, tag, layers, true)
    }

    /// Like [`OciImage::write`]; `gzip: false` stores the layers as plain tars
    /// (`application/vnd.oci.image.layer.v1.tar`).
    pub fn write_with(dir: &Path, tag: &str, layers: Vec<Vec<u8>>, gzip_layers: bool) -> OciImage {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir blobs");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        let mut out = Vec::new();
        for tar in layers {
            let gz = if gzip_layers { gzip(&tar) } else { tar.clone() };
            let (digest, blob) = write_blob(dir, &gz);
            out.push(OciLayer {
                diff_id: sha256(&tar),
                tar,
                digest,
                blob,
            });
        }
        let diff_ids: Vec<&str> = out.iter().map(|l| l.diff_id.as_str()).collect();
        let history: Vec<serde_json::Value> = out
            .iter()
            .enumerate()
            .map(|(i, _)| serde_json::json!({"created": "2026-01-01T00:00:00Z", "created_by": format!("layer {i}")}))
            .collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "created": "2026-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin:/usr/bin"], "Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        }))
        .expect("config json");
        let (config_digest, config_path) = write_blob(dir, &config);
        let mlayers: Vec<serde_json::Value> = out
            .iter()
            .map(|l| {
                serde_json::json!({
                    "mediaType": if gzip_layers {
                        "application/vnd.oci.image.layer.v1.tar+gzip"
                    } else {
                        "application/vnd.oci.image.layer.v1.tar"
                    },
                    "digest": l.digest,
                    "size": std::fs::metadata(&l.blob).map(|m| m.len()).unwrap_or(0),
                })
            })
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": mlayers,
        }))
        .expect("manifest json");
        let (manifest_digest, manifest_path) = write_blob(dir, &manifest);
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        }))
        .expect("index json");
        std::fs::write(dir.join("index.json"), index).expect("write index.json");
        OciImage {
            dir: dir.to_path_buf(),
            tag: tag.to_string(),
            layers: out,
            config,
            config_digest,
            config_path,
            manifest,
            manifest_digest,
            manifest_path,
        }
    }

    /// The image ID containers/image gives this image (hex of the config digest).
    pub fn image_id(&self) -> &str {
        hex_of(&self.config_digest)
    }

    /// `oci:DIR:TAG` for skopeo.
    pub fn reference(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    /// The diff_ids, base first.
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }
}

/// Reads an OCI layout written by someone else (e.g. `skopeo copy … oci:DIR:TAG`): returns
/// (manifest, config) as JSON values for the manifest tagged `tag`.
pub fn read_layout(dir: &Path, tag: &str) -> (serde_json::Value, serde_json::Value) {
    let read_json = |p: PathBuf| -> serde_json::Value {
        let b = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        serde_json::from_slice(&b).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
    };
    let index = read_json(dir.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        })
        .unwrap_or_else(|| panic!("no manifest tagged {tag} in {}", dir.display()))
        .clone();
    let mdigest = desc["digest"].as_str().unwrap_or_default().to_string();
    let manifest = read_json(blob_path(dir, &mdigest));
    let cdigest = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let config = read_json(blob_path(dir, &cdigest));
    (manifest, config)
}

/// Path of blob `digest` in OCI layout `dir`.
pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256").join(hex_of(digest))
}

/// What one path of the expected root filesystem must be.
enum Want {
    File {
        mode: u32,
        uid: u32,
        content: Vec<u8>,
    },
    Dir {
        mode: u32,
        uid: u32,
    },
    Link(&'static str),
}

fn expected(busybox: bool) -> BTreeMap<String, Want> {
    let mut m = BTreeMap::new();
    let f = |mode, uid, c: &[u8]| Want::File {
        mode,
        uid,
        content: c.to_vec(),
    };
    m.insert(
        "etc".into(),
        Want::Dir {
            mode: 0o755,
            uid: 0,
        },
    );
    m.insert("etc/motd".into(), f(0o644, 0, b"layer2 motd\n"));
    m.insert("etc/secret".into(), f(0o600, 1000, b"secret\n"));
    m.insert(
        "usr/bin/suid".into(),
        f(0o4755, 0, b"#!/bin/sh\necho suid\n"),
    );
    m.insert(
        "home/user".into(),
        Want::Dir {
            mode: 0o750,
            uid: 1000,
        },
    );
    m.insert("home/user/notes".into(), f(0o640, 1000, b"notes\n"));
    m.insert("data/big".into(), f(0o644, 0, &big_content()));
    m.insert("data/hard".into(), f(0o644, 0, &big_content()));
    m.insert("data/link".into(), Want::Link("big"));
    m.insert(
        "gone".into(),
        Want::Dir {
            mode: 0o755,
            uid: 0,
        },
    );
    m.insert("gone/keep".into(), f(0o644, 0, b"kept\n"));
    m.insert(
        "opq".into(),
        Want::Dir {
            mode: 0o755,
            uid: 0,
        },
    );
    m.insert("opq/new".into(), f(0o644, 0, b"new\n"));
    m.insert(long_path(), f(0o644, 0, b"long\n"));
    m.insert("added/x".into(), f(0o644, 1000, b"x\n"));
    m.insert("added/x-link".into(), f(0o644, 1000, b"x\n"));
    m.insert("added/sgid".into(), f(0o2755, 0, b"sgid\n"));
    if busybox {
        let bb = std::fs::read(BUSYBOX).unwrap_or_default();
        m.insert("bin/busybox".into(), f(0o755, 0, &bb));
        m.insert("bin/true".into(), Want::Link("busybox"));
    }
    m
}

/// Every problem found in `root`, the root filesystem of the sample image (empty = right):
/// contents, modes (incl. setuid/setgid), owners, symlink targets, hard links sharing an
/// inode, deleted paths absent, the opaque directory holding only the new file, no `.wh.`
/// name anywhere.
pub fn check_rootfs(root: &Path, busybox: bool) -> Vec<String> {
    let mut bad = Vec::new();
    for (rel, want) in expected(busybox) {
        let p = root.join(&rel);
        let md = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                bad.push(format!("{rel}: {e}"));
                continue;
            }
        };
        match want {
            Want::File { mode, uid, content } => {
                if !md.file_type().is_file() {
                    bad.push(format!("{rel}: not a regular file"));
                    continue;
                }
                let got = md.permissions().mode() & 0o7777;
                if got != mode {
                    bad.push(format!("{rel}: mode {got:o}, want {mode:o}"));
                }
                if md.uid() != uid || md.gid() != uid {
                    bad.push(format!(
                        "{rel}: owner {}:{}, want {uid}:{uid}",
                        md.uid(),
                        md.gid()
                    ));
                }
                match std::fs::read(&p) {
                    Ok(c) if c == content => {}
                    Ok(c) => bad.push(format!("{rel}: content differs ({} bytes)", c.len())),
                    Err(e) => bad.push(format!("{rel}: read: {e}")),
                }
            }
            Want::Dir { mode, uid } => {
                if !md.is_dir() {
                    bad.push(format!("{rel}: not a directory"));
                    continue;
                }
                let got = md.permissions().mode() & 0o7777;
                if got != mode {
                    bad.push(format!("{rel}: mode {got:o}, want {mode:o}"));
                }
                if md.uid() != uid || md.gid() != uid {
                    bad.push(format!(
                        "{rel}: owner {}:{}, want {uid}:{uid}",
                        md.uid(),
                        md.gid()
                    ));
                }
            }
            Want::Link(target) => match std::fs::read_link(&p) {
                Ok(t) if t == Path::new(target) => {}
                Ok(t) => bad.push(format!("{rel}: symlink to {}, want {target}", t.display())),
                Err(e) => bad.push(format!("{rel}: not a symlink: {e}")),
            },
        }
    }
    for (a, b) in [("data/big", "data/hard"), ("added/x", "added/x-link")] {
        match (
            std::fs::metadata(root.join(a)),
            std::fs::metadata(root.join(b)),
        ) {
            (Ok(x), Ok(y)) => {
                if x.ino() != y.ino() || x.dev() != y.dev() {
                    bad.push(format!("{b}: not a hard link of {a}"));
                }
                if x.nlink() < 2 {
                    bad.push(format!("{a}: nlink {}", x.nlink()));
                }
            }
            _ => bad.push(format!("{a} / {b}: missing")),
        }
    }
    for gone in ["gone/file", "gone-dir", "opq/old1", "opq/sub"] {
        if std::fs::symlink_metadata(root.join(gone)).is_ok() {
            bad.push(format!("{gone}: should have been deleted"));
        }
    }
    match std::fs::read_dir(root.join("opq")) {
        Ok(rd) => {
            let names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if names != ["new"] {
                bad.push(format!("opq (opaque) holds {names:?}, want [\"new\"]"));
            }
        }
        Err(e) => bad.push(format!("opq: {e}")),
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            bad.push(format!("cannot list {}", d.display()));
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".wh.") {
                bad.push(format!("whiteout left: {}", e.path().display()));
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
    bad
}

/// Panics listing every problem of [`check_rootfs`], naming `what` was checked.
#[track_caller]
pub fn assert_rootfs(root: &Path, busybox: bool, what: &str) {
    let bad = check_rootfs(root, busybox);
    assert!(
        bad.is_empty(),
        "{what} ({}) is wrong:\n  {}",
        root.display(),
        bad.join("\n  ")
    );
}
