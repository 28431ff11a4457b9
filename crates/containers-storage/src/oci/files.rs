//! Reading the files of a layout directory or an archive, contained in it.
//!
//! An archive is never extracted: [`Files::archive`] reads its tar headers once and
//! remembers where each member's bytes are, so a blob is read straight out of the archive
//! file (a compressed archive is first decompressed into an anonymous temporary file). Member
//! names are cleaned like Go's `path.Clean`; a name that leaves the archive (`../x`, or a
//! symbolic link pointing outside) is refused, so nothing outside can be named, let alone
//! written. In a directory, a file whose real path is outside the directory is refused too.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::types::{Error, ErrorKind, Result, go_quote};

/// A readable member: a file and the byte range holding its content.
#[derive(Debug)]
pub(crate) struct Member {
    file: File,
    offset: u64,
    /// Length of the content.
    pub(crate) size: u64,
}

impl Member {
    /// A reader of the content.
    pub(crate) fn reader(self) -> Result<io::Take<File>> {
        let mut f = self.file;
        f.seek(SeekFrom::Start(self.offset))
            .map_err(|e| Error::msg(ErrorKind::Io, format!("seeking in archive: {e}")))?;
        Ok(f.take(self.size))
    }

    /// The whole content (only for small members: manifests, configs, indexes).
    pub(crate) fn read_all(self, limit: u64, what: &str) -> Result<Vec<u8>> {
        if self.size > limit {
            return Err(bad_input(format!(
                "{what} is too large ({} bytes, at most {limit} accepted)",
                self.size
            )));
        }
        let size = self.size;
        let mut r = self.reader()?;
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        r.read_to_end(&mut out)
            .map_err(|e| Error::msg(ErrorKind::Io, format!("reading {what}: {e}")))?;
        if out.len() as u64 != size {
            return Err(bad_input(format!("reading {what}: unexpected end of file")));
        }
        Ok(out)
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Entry {
    File { offset: u64, size: u64 },
    Link { target: String, hard: bool },
    Dir,
}

/// Where the files are.
#[derive(Debug)]
pub(crate) enum Files {
    /// A directory (an `oci:` layout).
    Dir(PathBuf),
    /// An indexed tar file.
    Archive {
        file: File,
        entries: HashMap<String, Entry>,
        /// The archive's name, for messages.
        name: PathBuf,
    },
}

pub(crate) fn bad_input(text: String) -> Error {
    Error::msg(ErrorKind::InvalidInput, text)
}

/// Go's `path.Clean` of a relative member name; `None` when it leaves the root.
pub(crate) fn clean_member(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    // An absolute name is taken relative to the root, like Go's `Untar` does.
    Some(parts.join("/"))
}

impl Files {
    /// Files of a layout directory.
    pub(crate) fn dir(path: &Path) -> Result<Files> {
        let md = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
        if !md.is_dir() {
            return Err(bad_input(format!(
                "{} is not a directory",
                go_quote(&path.display().to_string())
            )));
        }
        let root = path
            .canonicalize()
            .map_err(|e| Error::io("realpath", path, e))?;
        Ok(Files::Dir(root))
    }

    /// Indexes the tar file at `path` (decompressing it first when compressed).
    pub(crate) fn archive(path: &Path) -> Result<Files> {
        let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let mut head = [0u8; 16];
        let n = read_head(&mut file, &mut head).map_err(|e| Error::io("read", path, e))?;
        let compression = crate::archive::detect_compression(&head[..n]);
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seek", path, e))?;
        if compression != crate::archive::Compression::None {
            file = decompress_to_temp(file, path)?;
        }
        let entries = index_tar(&mut file, path)?;
        Ok(Files::Archive {
            file,
            entries,
            name: path.to_path_buf(),
        })
    }

    /// Opens the member `name` (relative, `/`-separated), following symbolic and hard links
    /// inside the archive. `Ok(None)` when it does not exist.
    pub(crate) fn open(&self, name: &str) -> Result<Option<Member>> {
        let escape = |n: &str, place: &Path| {
            bad_input(format!(
                "{} points outside of {}",
                go_quote(n),
                go_quote(&place.display().to_string())
            ))
        };
        match self {
            Files::Dir(root) => {
                let Some(clean) = clean_member(name) else {
                    return Err(escape(name, root));
                };
                let path = root.join(&clean);
                let real = match path.canonicalize() {
                    Ok(p) => p,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Error::io("realpath", &path, e)),
                };
                if !real.starts_with(root) {
                    return Err(escape(name, root));
                }
                let file = File::open(&real).map_err(|e| Error::io("open", &path, e))?;
                let md = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
                if !md.is_file() {
                    return Err(bad_input(format!(
                        "{} is not a regular file",
                        go_quote(&path.display().to_string())
                    )));
                }
                Ok(Some(Member {
                    file,
                    offset: 0,
                    size: md.len(),
                }))
            }
            Files::Archive {
                file,
                entries,
                name: archive,
            } => {
                let Some(mut cur) = clean_member(name) else {
                    return Err(escape(name, archive));
                };
                // Bounded: a link loop ends here.
                for _ in 0..64 {
                    match entries.get(&cur) {
                        None => return Ok(None),
                        Some(Entry::Dir) => {
                            return Err(bad_input(format!(
                                "{} in {} is a directory",
                                go_quote(&cur),
                                go_quote(&archive.display().to_string())
                            )));
                        }
                        Some(Entry::File { offset, size }) => {
                            let f = file.try_clone().map_err(|e| Error::io("dup", archive, e))?;
                            return Ok(Some(Member {
                                file: f,
                                offset: *offset,
                                size: *size,
                            }));
                        }
                        Some(Entry::Link { target, hard }) => {
                            let joined = if *hard || target.starts_with('/') {
                                target.clone()
                            } else {
                                match cur.rsplit_once('/') {
                                    Some((dir, _)) => format!("{dir}/{target}"),
                                    None => target.clone(),
                                }
                            };
                            let Some(next) = clean_member(&joined) else {
                                return Err(escape(name, archive));
                            };
                            cur = next;
                        }
                    }
                }
                Err(bad_input(format!(
                    "too many links resolving {} in {}",
                    go_quote(name),
                    go_quote(&archive.display().to_string())
                )))
            }
        }
    }
}

fn read_head(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Decompresses a compressed archive into an anonymous temporary file.
fn decompress_to_temp(file: File, path: &Path) -> Result<File> {
    let mut reader = crate::archive::open_diff(Box::new(file))
        .map_err(|e| bad_input(format!("reading {}: {e}", path.display())))?;
    let mut tmp = tempfile::tempfile().map_err(|e| Error::msg(ErrorKind::Io, e.to_string()))?;
    io::copy(&mut reader, &mut tmp).map_err(|e| {
        bad_input(format!(
            "decompressing {}: {}",
            path.display(),
            crate::types::go_io_error_text(&e)
        ))
    })?;
    reader
        .finish()
        .map_err(|e| bad_input(format!("decompressing {}: {e}", path.display())))?;
    tmp.seek(SeekFrom::Start(0))
        .map_err(|e| Error::msg(ErrorKind::Io, e.to_string()))?;
    Ok(tmp)
}

/// Reads every tar header of `file`, recording where each member's content is.
fn index_tar(file: &mut File, path: &Path) -> Result<HashMap<String, Entry>> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let shown = path.display().to_string();
    let broken = |what: String| bad_input(format!("reading archive {}: {what}", go_quote(&shown)));
    let mut entries = HashMap::new();
    let mut archive = tar::Archive::new(&*file);
    let iter = archive
        .entries_with_seek()
        .map_err(|e| broken(e.to_string()))?;
    let mut count = 0usize;
    for entry in iter {
        let entry = entry.map_err(|e| broken(e.to_string()))?;
        count += 1;
        let raw_name = entry.path_bytes();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        let Some(clean) = clean_member(&name) else {
            return Err(broken(format!(
                "member {} points outside of the archive",
                go_quote(&name)
            )));
        };
        let size = entry.size();
        let offset = entry.raw_file_position();
        let kind = entry.header().entry_type();
        let item = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if offset.checked_add(size).is_none_or(|end| end > len) {
                    return Err(broken(format!(
                        "member {} is truncated (unexpected end of file)",
                        go_quote(&name)
                    )));
                }
                Entry::File { offset, size }
            }
            tar::EntryType::Directory => Entry::Dir,
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                Entry::Link {
                    target,
                    hard: kind == tar::EntryType::Link,
                }
            }
            // Devices, FIFOs and the like are not part of a layout.
            _ => continue,
        };
        if !clean.is_empty() {
            entries.insert(clean, item);
        }
    }
    if count == 0 {
        return Err(broken("no files in the archive".into()));
    }
    Ok(entries)
}
