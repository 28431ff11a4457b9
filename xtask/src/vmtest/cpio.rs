//! A writer for the "newc" cpio format (`070701`), the format the kernel unpacks as an
//! initramfs. Archives are written uncompressed: every header and every data block is padded to
//! 4 bytes, so archives can be concatenated (the kernel unpacks them one after the other).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// Streams a newc archive into a file.
pub struct Writer {
    out: BufWriter<File>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Writer {
    /// Creates (truncates) `path` and starts an archive in it.
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(Self {
            out: BufWriter::new(File::create(path)?),
            ino: 1000,
            dirs: BTreeSet::new(),
        })
    }

    fn header(&mut self, name: &str, mode: u32, nlink: u32, size: u64) -> io::Result<()> {
        let size = u32::try_from(size)
            .map_err(|_| io::Error::other(format!("{name}: too large for a newc cpio entry")))?;
        self.ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            0,
            0,
            u32::try_from(namesize).map_err(|_| io::Error::other("name too long"))?,
            0,
        ];
        let mut h = String::from("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + namesize as u64)
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let n = (4 - (len % 4)) % 4;
        self.out.write_all(&[0u8; 3][..n as usize])
    }

    /// Normalises an archive path: no leading `/`, no empty components.
    fn norm(path: &str) -> String {
        path.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Adds every missing parent directory of `name` (mode 0755).
    fn parents(&mut self, name: &str) -> io::Result<()> {
        let mut acc = String::new();
        let comps: Vec<&str> = name.split('/').collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            if self.dirs.insert(acc.clone()) {
                let d = acc.clone();
                self.header(&d, 0o040755, 2, 0)?;
            }
        }
        Ok(())
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        let name = Self::norm(path);
        self.parents(&name)?;
        if self.dirs.insert(name.clone()) {
            self.header(&name, 0o040000 | (perm & 0o7777), 2, 0)?;
        }
        Ok(())
    }

    /// Adds a symbolic link `path` pointing at `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let name = Self::norm(path);
        self.parents(&name)?;
        self.header(&name, 0o120777, 1, target.len() as u64)?;
        self.out.write_all(target.as_bytes())?;
        self.pad(target.len() as u64)
    }

    /// Adds a regular file with the given contents.
    pub fn bytes(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let name = Self::norm(path);
        self.parents(&name)?;
        self.header(&name, 0o100000 | (perm & 0o7777), 1, data.len() as u64)?;
        self.out.write_all(data)?;
        self.pad(data.len() as u64)
    }

    /// Adds a regular file copied from `src` (symlinks followed), keeping its permissions.
    pub fn file(&mut self, path: &str, src: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut f = File::open(src)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
        let meta = f.metadata()?;
        let name = Self::norm(path);
        self.parents(&name)?;
        let len = meta.len();
        self.header(
            &name,
            0o100000 | (meta.permissions().mode() & 0o7777),
            1,
            len,
        )?;
        let copied = io::copy(&mut (&mut f).take(len), &mut self.out)?;
        if copied != len {
            return Err(io::Error::other(format!(
                "{}: file shrank while copying",
                src.display()
            )));
        }
        self.pad(len)
    }

    /// Writes the trailer and flushes the archive.
    pub fn finish(mut self) -> io::Result<()> {
        self.header("TRAILER!!!", 0, 1, 0)?;
        self.out.flush()?;
        self.out
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_parents_created() {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.cpio");
        let mut w = Writer::create(&path).unwrap();
        w.bytes("/a/b/c.txt", 0o644, b"hello").unwrap();
        w.symlink("/a/l", "b/c.txt").unwrap();
        w.finish().unwrap();
        let data = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(data.len() % 4, 0);
        // Walk the archive: a, a/b, a/b/c.txt, a/l, TRAILER!!!
        let mut names = Vec::new();
        let mut off = 0;
        loop {
            assert_eq!(&data[off..off + 6], b"070701");
            let field = |i: usize| {
                let s = std::str::from_utf8(&data[off + 6 + i * 8..off + 14 + i * 8]).unwrap();
                usize::from_str_radix(s, 16).unwrap()
            };
            let (size, namesize) = (field(6), field(11));
            let name = std::str::from_utf8(&data[off + 110..off + 110 + namesize - 1]).unwrap();
            names.push(name.to_string());
            off = (off + 110 + namesize).div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                break;
            }
            if name == "a/b/c.txt" {
                assert_eq!(&data[off..off + size], b"hello");
            }
            off = (off + size).div_ceil(4) * 4;
        }
        assert_eq!(off, data.len());
        assert_eq!(names, ["a", "a/b", "a/b/c.txt", "a/l", "TRAILER!!!"]);
    }
}
