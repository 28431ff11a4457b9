//! Generated tar layers for the tests (deterministic).

use std::io::Write;
use std::path::Path;
use std::process::Command;
pub use storage_testsupport::sha256;

fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

/// Builder of a test tar (GNU format via the `tar` crate; long names use GNU `L` records).
pub struct TarBuilder(tar::Builder<Vec<u8>>);

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    /// An empty archive.
    pub fn new() -> Self {
        TarBuilder(tar::Builder::new(Vec::new()))
    }
    /// Adds a directory (`path` should end with `/`).
    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.dir_owned(path, mode, 0, 0)
    }
    /// Adds a directory owned by `uid:gid`.
    pub fn dir_owned(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Directory, mode, uid, gid, 0);
        self.0.append_data(&mut h, path, &[][..]).expect("tar dir");
        self
    }
    /// Adds a regular file owned by `uid:gid`.
    pub fn file_owned(mut self, path: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> Self {
        let mut h = header(tar::EntryType::Regular, mode, uid, gid, data.len() as u64);
        self.0.append_data(&mut h, path, data).expect("tar file");
        self
    }
    /// Adds a regular file owned by root.
    pub fn file(self, path: &str, mode: u32, data: &[u8]) -> Self {
        self.file_owned(path, mode, 0, 0, data)
    }
    /// Adds a symlink.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
        self.0
            .append_link(&mut h, path, target)
            .expect("tar symlink");
        self
    }
    /// Adds a symlink whose name is written exactly as given, absolute or not (the `tar`
    /// crate refuses to write such names; hostile layers have them). At most 100 bytes.
    pub fn symlink_raw(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
        let name = &mut h.as_old_mut().name;
        assert!(path.len() < name.len(), "raw names are short");
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_link_name(target).expect("tar link name");
        h.set_cksum();
        self.0.append(&h, &[][..]).expect("tar raw symlink");
        self
    }
    /// Adds a PAX extended header (`x`) with `records` for the entry that follows.
    pub fn pax(mut self, records: &[(&str, &str)]) -> Self {
        let mut data = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n", the length counting its own digits.
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while format!("{len}").len() + body.len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_path("PaxHeaders.0/entry").expect("pax header name");
        h.set_cksum();
        self.0.append(&h, &data[..]).expect("tar pax header");
        self
    }
    /// Adds an entry of any type flag with `data` as its content (hostile or unusual tars).
    pub fn typed(mut self, path: &str, typeflag: u8, data: &[u8]) -> Self {
        let mut h = header(
            tar::EntryType::new(typeflag),
            0o644,
            0,
            0,
            data.len() as u64,
        );
        h.set_path(path).expect("tar path");
        h.set_cksum();
        self.0.append(&h, data).expect("tar typed entry");
        self
    }
    /// Adds a hard link to an earlier entry.
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Link, 0o644, 0, 0, 0);
        self.0
            .append_link(&mut h, path, target)
            .expect("tar hardlink");
        self
    }
    /// Adds a character device `major:minor` (skipped when extracted in a user namespace).
    pub fn char_device(mut self, path: &str, major: u32, minor: u32) -> Self {
        let mut h = header(tar::EntryType::Char, 0o600, 0, 0, 0);
        h.set_device_major(major).expect("device major");
        h.set_device_minor(minor).expect("device minor");
        self.0
            .append_data(&mut h, path, &[][..])
            .expect("tar char device");
        self
    }
    /// Finishes the archive (two zero blocks; the `tar` crate does not pad to 10240).
    pub fn finish(self) -> Vec<u8> {
        self.0.into_inner().expect("tar finish")
    }
}

/// A representative base layer: dirs, files of several sizes, an owner of 1000:1000, a
/// symlink, a hard link, a long name.
pub fn sample_layer() -> Vec<u8> {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let long = format!("usr/share/{}/file.txt", "long-directory-name".repeat(8));
    TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/hello.txt", 0o644, b"hello\n")
        .file_owned("etc/owned", 0o600, 1000, 1000, b"owned by 1000\n")
        .dir("usr/", 0o755)
        .dir("usr/bin/", 0o755)
        .file("usr/bin/tool", 0o755, &big)
        .hardlink("usr/bin/tool-link", "usr/bin/tool")
        .symlink("usr/bin/sh", "/bin/busybox")
        .file("usr/empty", 0o644, b"")
        .file(&long, 0o644, b"deep\n")
        .finish()
}

/// Compresses `data` with an external tool (`gzip`, `zstd`, `xz`, `bzip2`) reading stdin.
pub fn compress_with(tool: &str, data: &[u8], out: &Path) {
    let mut child = Command::new(tool)
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(out).expect("create compressed file"))
        .spawn()
        .unwrap_or_else(|e| panic!("{tool} not available: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write to compressor");
    assert!(child.wait().expect("compressor").success(), "{tool} failed");
}
