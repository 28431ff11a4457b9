//! Test helpers: a byte-exact tar builder, directory snapshots, and running Go's
//! `containers-storage import-layer` for comparisons.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use storage_archive::{UnpackOptions, WhiteoutFormat, unpack};
#[allow(unused_imports)] // each test binary uses a subset
pub use storage_testsupport::{in_ci as ci, is_root, require};

/// One tar entry to write.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: Vec<u8>,
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub linkname: Vec<u8>,
    pub data: Vec<u8>,
    pub devmajor: u32,
    pub devminor: u32,
    /// Extra PAX records (e.g. `SCHILY.xattr.user.x`, `atime`).
    pub pax: Vec<(String, Vec<u8>)>,
}

pub const MTIME: u64 = 1_000_000_000; // 2001-09-09

impl Entry {
    fn new(name: &str, typeflag: u8, mode: u32) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            typeflag,
            mode,
            uid: 0,
            gid: 0,
            mtime: MTIME,
            linkname: Vec::new(),
            data: Vec::new(),
            devmajor: 0,
            devminor: 0,
            pax: Vec::new(),
        }
    }
    pub fn dir(name: &str) -> Entry {
        Entry::new(name, b'5', 0o755)
    }
    pub fn file(name: &str, data: &[u8]) -> Entry {
        let mut e = Entry::new(name, b'0', 0o644);
        e.data = data.to_vec();
        e
    }
    pub fn symlink(name: &str, target: &str) -> Entry {
        let mut e = Entry::new(name, b'2', 0o777);
        e.linkname = target.as_bytes().to_vec();
        e
    }
    pub fn hardlink(name: &str, target: &str) -> Entry {
        let mut e = Entry::new(name, b'1', 0o644);
        e.linkname = target.as_bytes().to_vec();
        e
    }
    pub fn fifo(name: &str) -> Entry {
        Entry::new(name, b'6', 0o644)
    }
    pub fn chardev(name: &str, major: u32, minor: u32) -> Entry {
        let mut e = Entry::new(name, b'3', 0o666);
        e.devmajor = major;
        e.devminor = minor;
        e
    }
    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, t: u64) -> Entry {
        self.mtime = t;
        self
    }
    pub fn typeflag(mut self, t: u8) -> Entry {
        self.typeflag = t;
        self
    }
    pub fn pax(mut self, key: &str, value: &[u8]) -> Entry {
        self.pax.push((key.to_owned(), value.to_vec()));
        self
    }
}

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    let s = format!("{v:0w$o}");
    field[..w].copy_from_slice(&s.as_bytes()[s.len() - w..]);
    field[w] = 0;
}

fn header(name: &[u8], typeflag: u8, e: &Entry, size: u64, linkname: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut h[100..108], u64::from(e.mode));
    octal(&mut h[108..116], e.uid);
    octal(&mut h[116..124], e.gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], e.mtime);
    h[156] = typeflag;
    h[157..157 + linkname.len().min(100)].copy_from_slice(&linkname[..linkname.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], u64::from(e.devmajor));
    octal(&mut h[337..345], u64::from(e.devminor));
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3; // ' ' '=' '\n'
    let mut n = body_len + 1;
    loop {
        let total = body_len + n.to_string().len();
        if total == n {
            break;
        }
        n = total;
    }
    let mut r = format!("{n} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Builds a tar (USTAR, with a PAX header when a name is long or records are given).
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut pax = e.pax.clone();
        if e.name.len() > 100 {
            pax.push(("path".into(), e.name.clone()));
        }
        if e.linkname.len() > 100 {
            pax.push(("linkpath".into(), e.linkname.clone()));
        }
        if !pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &pax {
                body.extend_from_slice(&pax_record(k, v));
            }
            let xe = Entry::new("PaxHeaders/x", b'x', 0o644);
            out.extend_from_slice(&header(b"PaxHeaders/x", b'x', &xe, body.len() as u64, b""));
            out.extend_from_slice(&body);
            pad(&mut out);
        }
        let size = if e.typeflag == b'0' {
            e.data.len() as u64
        } else {
            0
        };
        out.extend_from_slice(&header(&e.name, e.typeflag, e, size, &e.linkname));
        if e.typeflag == b'0' {
            out.extend_from_slice(&e.data);
            pad(&mut out);
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A canonical listing of a directory tree: path → description.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out, None);
    out
}

fn walk(root: &Path, p: &Path, out: &mut BTreeMap<String, String>, skip: Option<&Path>) {
    if skip == Some(p) {
        return;
    }
    let md = std::fs::symlink_metadata(p).expect("lstat in snapshot");
    let rel = p.strip_prefix(root).expect("prefix");
    let rel = if rel.as_os_str().is_empty() {
        ".".to_owned()
    } else {
        String::from_utf8_lossy(rel.as_os_str().as_bytes()).into_owned()
    };
    let ft = md.file_type();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mtime = if (now - md.mtime()).abs() < 3600 {
        "NOW".to_owned()
    } else {
        md.mtime().to_string()
    };
    let atime = if (now - md.atime()).abs() < 3600 {
        "NOW".to_owned()
    } else {
        md.atime().to_string()
    };
    let mut xattrs = Vec::new();
    if let Ok(names) = xattr_names(p) {
        for n in names {
            let v = xattr_value(p, &n).unwrap_or_default();
            xattrs.push(format!(
                "{}={}",
                String::from_utf8_lossy(&n),
                String::from_utf8_lossy(&v)
            ));
        }
    }
    xattrs.sort();
    let common = format!(
        "mode={:o} uid={} gid={} mtime={mtime} atime={atime} xattrs=[{}]",
        md.mode() & 0o7777,
        md.uid(),
        md.gid(),
        xattrs.join(",")
    );
    let desc = if ft.is_symlink() {
        let t = std::fs::read_link(p).expect("readlink");
        format!(
            "symlink -> {} uid={} gid={} mtime={mtime}",
            t.display(),
            md.uid(),
            md.gid()
        )
    } else if ft.is_dir() {
        format!("dir {common}")
    } else if ft.is_file() {
        let mut data = Vec::new();
        std::fs::File::open(p)
            .and_then(|mut f| f.read_to_end(&mut data))
            .expect("read");
        format!(
            "file nlink={} {common} data={:?}",
            md.nlink(),
            String::from_utf8_lossy(&data)
        )
    } else if ft.is_char_device() {
        format!(
            "char {}:{} {common}",
            libc_major(md.rdev()),
            libc_minor(md.rdev())
        )
    } else if ft.is_block_device() {
        format!(
            "block {}:{} {common}",
            libc_major(md.rdev()),
            libc_minor(md.rdev())
        )
    } else if ft.is_fifo() {
        format!("fifo {common}")
    } else {
        format!("other {common}")
    };
    out.insert(rel, desc);
    if ft.is_dir() {
        let mut children: Vec<_> = std::fs::read_dir(p)
            .expect("readdir")
            .map(|e| e.expect("entry").path())
            .collect();
        children.sort();
        for c in children {
            walk(root, &c, out, skip);
        }
    }
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

fn xattr_names(p: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut buf[..])?;
    Ok(buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

fn xattr_value(p: &Path, name: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::lgetxattr(p, name, &mut buf[..])?;
    buf.truncate(n);
    Ok(buf)
}

pub const GO_CLI: &str = "/usr/bin/containers-storage";

pub fn have_go() -> bool {
    Path::new(GO_CLI).exists() && is_root()
}

/// Imports `tars` as a chain of layers with Go's vfs driver (each the parent of
/// the next, with `extra` CLI options); the snapshot of the last layer, or Go's error text.
pub fn go_import(tars: &[Vec<u8>], extra: &[&str]) -> Result<BTreeMap<String, String>, String> {
    go_import_with("vfs", tars, extra)
}

/// Like [`go_import`] with another driver (`vfs` or `overlay`; for overlay the
/// snapshot is the top layer's `diff/`).
pub fn go_import_with(
    driver: &str,
    tars: &[Vec<u8>],
    extra: &[&str],
) -> Result<BTreeMap<String, String>, String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let g = tmp.path().join("G");
    let r = tmp.path().join("R");
    // Go's overlay driver bind-mounts its home onto itself and leaves it mounted:
    // always unmount it before the temporary directory goes away.
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            for sub in ["overlay", "vfs"] {
                let _ =
                    rustix::mount::unmount(self.0.join(sub), rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
    let _unmount = Unmount(g.clone());
    let mut parent: Option<String> = None;
    for (i, tar) in tars.iter().enumerate() {
        let file = tmp.path().join(format!("layer{i}.tar"));
        std::fs::write(&file, tar).expect("write tar");
        let mut cmd = Command::new(GO_CLI);
        cmd.arg("--graph")
            .arg(&g)
            .arg("--run")
            .arg(&r)
            .args(["--storage-driver", driver, "import-layer"])
            .args(extra)
            .arg("-f")
            .arg(&file);
        if let Some(p) = &parent {
            cmd.arg(p);
        }
        let out = cmd.output().expect("run containers-storage");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        parent = Some(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    let id = parent.expect("at least one layer");
    let dir = if driver == "overlay" {
        g.join("overlay").join(id).join("diff")
    } else {
        g.join("vfs/dir").join(id)
    };
    let snap = snapshot(&dir);
    let _ = Command::new(GO_CLI)
        .arg("--graph")
        .arg(&g)
        .arg("--run")
        .arg(&r)
        .args(["--storage-driver", driver, "shutdown"])
        .output();
    Ok(snap)
}

/// Extracts `tar` with ours into a fresh 0755 root (like a vfs layer dir); the
/// snapshot or the error text, plus a check that nothing appeared outside the root.
pub fn rust_unpack(
    tars: &[Vec<u8>],
    opts: &UnpackOptions,
) -> Result<BTreeMap<String, String>, String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outer = tmp.path().join("outer");
    let root = outer.join("a/b/root");
    std::fs::create_dir_all(&root).expect("mkdir");
    for d in [&outer, &outer.join("a"), &outer.join("a/b"), &root] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    // A decoy "etc/passwd" next to the root, to catch escapes.
    std::fs::create_dir_all(outer.join("etc")).expect("mkdir");
    std::fs::write(outer.join("etc/passwd"), b"decoy").expect("write");
    let before = snapshot_outside(&outer, &root);
    let mut result = Ok(0);
    for tar in tars {
        result = unpack(&mut &tar[..], &root, opts);
        if result.is_err() {
            break;
        }
    }
    let after = snapshot_outside(&outer, &root);
    assert_eq!(before, after, "something outside the root changed");
    match result {
        Ok(_) => Ok(snapshot(&root)),
        Err(e) => Err(e.to_string()),
    }
}

fn snapshot_outside(outer: &Path, root: &Path) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    walk(outer, outer, &mut all, Some(root));
    all
}

pub fn apply() -> UnpackOptions {
    UnpackOptions {
        whiteout: WhiteoutFormat::Apply,
        ..Default::default()
    }
}
