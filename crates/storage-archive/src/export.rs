//! Producing layer tars the way Go 1.60 does (`TarWithOptions`, `ExportChanges`).
//!
//! [`tar_dir`] walks a tree in lexical order (the root itself is not emitted) and
//! [`export_changes`] writes a list of [`Change`]s sorted by path, deletes as bare
//! `.wh.<name>` headers. Headers follow containers/storage 1.60 (`prepareAddFile`):
//! bare permission bits (plus setuid/setgid/sticky), empty uname/gname, uid/gid
//! mapped host → container (entries with an unmappable owner are skipped), `/` after
//! directory names, `security.capability`/`security.ima`/`user.*` (not
//! `user.overlay.*`) xattrs as `SCHILY.xattr.` PAX records, hard links by inode, no
//! sockets, mtime truncated to whole seconds (whiteouts of deletes: `now`, rounded by
//! Go's writer).
//!
//! Unlike Go, nothing outside the tree is read: entries are read relative to their
//! directory's descriptor without following a symbolic link ([`read_entry`]); directories
//! are descended through descriptors; a change whose path crosses a symbolic link (or a
//! missing directory) is skipped, as Go skips what it cannot add.
//!
//! The bytes come from [`GoTarWriter`], a re-implementation of Go's `archive/tar`
//! writer: USTAR when representable, else PAX (`PaxHeaders.0` names, sorted records),
//! else GNU; zero-padded octal fields; Go's checksum layout; two zero blocks at the end
//! with no padding to a record size.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use storage_io::confined;
use storage_types::IdMap;

use crate::changes::{Change, ChangeKind};

const BLOCK: usize = 512;

/// Tar type flags.
mod flag {
    pub const REG: u8 = b'0';
    pub const LINK: u8 = b'1';
    pub const SYMLINK: u8 = b'2';
    pub const CHAR: u8 = b'3';
    pub const BLOCK: u8 = b'4';
    pub const DIR: u8 = b'5';
    pub const FIFO: u8 = b'6';
    pub const XHEADER: u8 = b'x';
    pub const GNU_LONGNAME: u8 = b'L';
    pub const GNU_LONGLINK: u8 = b'K';
}

/// One entry header, in Go's `tar.Header` terms (times in whole seconds: the writer
/// is always used without an explicit format, so Go rounds mtime and drops atime/ctime).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarHeader {
    /// Entry name (bytes, as Go's string).
    pub name: Vec<u8>,
    /// Link target for symlinks and hard links.
    pub linkname: Vec<u8>,
    /// Type flag (`b'0'`, `b'5'`, …); `0` is promoted to `b'0'`/`b'5'` like Go.
    pub typeflag: u8,
    /// Permission bits (plus setuid/setgid/sticky).
    pub mode: i64,
    /// Owner.
    pub uid: i64,
    /// Group.
    pub gid: i64,
    /// Content size.
    pub size: i64,
    /// Modification time, seconds since the epoch (already rounded).
    pub mtime: i64,
    /// User name.
    pub uname: Vec<u8>,
    /// Group name.
    pub gname: Vec<u8>,
    /// Device major number.
    pub devmajor: i64,
    /// Device minor number.
    pub devminor: i64,
    /// Extra PAX records (e.g. `SCHILY.xattr.user.k`), key → value.
    pub pax: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Go's `time.Time.Round(time.Second)` on `(secs, nanos)`.
pub fn round_to_second(secs: i64, nanos: i64) -> i64 {
    if nanos >= 500_000_000 {
        secs.saturating_add(1)
    } else {
        secs
    }
}

fn fits_in_octal(n: usize, x: i64) -> bool {
    let oct_bits = (n as u32 - 1) * 3;
    x >= 0 && (n >= 22 || x < 1i64 << oct_bits)
}

fn fits_in_base256(n: usize, x: i64) -> bool {
    let bin_bits = (n as u32 - 1) * 8;
    n >= 9 || (x >= -(1i64 << bin_bits) && x < 1i64 << bin_bits)
}

fn is_ascii(s: &[u8]) -> bool {
    s.iter().all(|&c| c < 0x80 && c != 0)
}

fn to_ascii(s: &[u8]) -> Vec<u8> {
    s.iter().copied().filter(|&c| c < 0x80 && c != 0).collect()
}

/// Go's `splitUSTARPath`.
fn split_ustar_path(name: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut length = name.len();
    if length <= 100 || !is_ascii(name) {
        return None;
    } else if length > 156 {
        length = 156;
    } else if name[length - 1] == b'/' {
        length -= 1;
    }
    let i = name[..length].iter().rposition(|&c| c == b'/')?;
    let nlen = name.len() - i - 1;
    if i == 0 || nlen > 100 || nlen == 0 || i > 155 {
        return None;
    }
    Some((&name[..i], &name[i + 1..]))
}

/// Go's `formatter.formatString`.
fn format_string(b: &mut [u8], s: &[u8]) {
    let n = s.len().min(b.len());
    b[..n].copy_from_slice(&s[..n]);
    if s.len() < b.len() {
        b[s.len()] = 0;
    }
    if s.len() > b.len() && b[b.len() - 1] == b'/' {
        let mut n = b.len() - 1;
        while n > 0 && s[n - 1] == b'/' {
            n -= 1;
        }
        b[n] = 0;
    }
}

/// Go's `formatter.formatOctal` (writes 0 when the value does not fit).
fn format_octal(b: &mut [u8], x: i64) {
    let x = if fits_in_octal(b.len(), x) { x } else { 0 };
    let s = format!("{x:o}");
    let pad = b.len().saturating_sub(s.len() + 1);
    let mut full = "0".repeat(pad).into_bytes();
    full.extend_from_slice(s.as_bytes());
    format_string(b, &full);
}

/// Go's `formatter.formatNumeric` (octal, else base-256, else 0).
fn format_numeric(b: &mut [u8], x: i64) {
    if fits_in_octal(b.len(), x) {
        format_octal(b, x);
    } else if fits_in_base256(b.len(), x) {
        let mut v = x;
        for i in (0..b.len()).rev() {
            b[i] = v as u8;
            v >>= 8;
        }
        b[0] |= 0x80;
    } else {
        format_octal(b, 0);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Ustar,
    Pax,
    Gnu,
}

/// Go's `formatPAXRecord`.
fn pax_record(k: &[u8], v: &[u8]) -> Vec<u8> {
    let base = k.len() + v.len() + 3;
    let mut size = base + base.to_string().len();
    let mut rec = Vec::with_capacity(size);
    loop {
        rec.clear();
        rec.extend_from_slice(size.to_string().as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(k);
        rec.push(b'=');
        rec.extend_from_slice(v);
        rec.push(b'\n');
        if rec.len() == size {
            return rec;
        }
        size = rec.len();
    }
}

/// Go's `path.Join(dir, "PaxHeaders.0", file)` for the already clean names we write.
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let split = name.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1);
    let (dir, file) = name.split_at(split);
    let mut out = Vec::new();
    let dir = {
        let mut d = dir;
        while d.last() == Some(&b'/') {
            d = &d[..d.len() - 1];
        }
        d
    };
    if !dir.is_empty() {
        out.extend_from_slice(dir);
        out.push(b'/');
    }
    out.extend_from_slice(b"PaxHeaders.0");
    if !file.is_empty() {
        out.push(b'/');
        out.extend_from_slice(file);
    }
    out
}

/// A writer that produces the bytes Go's `archive/tar.Writer` produces for headers
/// written without an explicit format.
pub struct GoTarWriter<W: Write> {
    out: W,
    /// Content bytes still expected for the current entry, and padding after it.
    remaining: u64,
    pad: usize,
    /// Reused copy buffer.
    buf: Vec<u8>,
}

impl<W: Write> GoTarWriter<W> {
    /// Wraps `out`.
    pub fn new(out: W) -> Self {
        GoTarWriter {
            out,
            remaining: 0,
            pad: 0,
            buf: Vec::new(),
        }
    }

    /// Finishes the previous entry: zero-fills missing content (the file shrank while
    /// being read) and writes the block padding.
    fn flush_entry(&mut self) -> io::Result<()> {
        let zeros = [0u8; BLOCK];
        while self.remaining > 0 {
            let n = usize::try_from(self.remaining).unwrap_or(BLOCK).min(BLOCK);
            self.out.write_all(&zeros[..n])?;
            self.remaining -= n as u64;
        }
        self.out.write_all(&zeros[..self.pad])?;
        self.pad = 0;
        Ok(())
    }

    fn raw_header(&mut self, blk: &[u8; BLOCK], size: i64, typeflag: u8) -> io::Result<()> {
        self.flush_entry()?;
        self.out.write_all(blk)?;
        let header_only = matches!(
            typeflag,
            flag::LINK | flag::SYMLINK | flag::CHAR | flag::BLOCK | flag::DIR | flag::FIFO
        );
        let size = if header_only {
            0
        } else {
            u64::try_from(size).unwrap_or(0)
        };
        self.remaining = size;
        self.pad = ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize;
        Ok(())
    }

    fn set_format(blk: &mut [u8; BLOCK], format: Format) {
        match format {
            Format::Gnu => {
                blk[257..263].copy_from_slice(b"ustar ");
                blk[263..265].copy_from_slice(b" \0");
            }
            Format::Ustar | Format::Pax => {
                blk[257..263].copy_from_slice(b"ustar\0");
                blk[263..265].copy_from_slice(b"00");
            }
        }
        let sum: i64 = blk
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                if (148..156).contains(&i) {
                    i64::from(b' ')
                } else {
                    i64::from(c)
                }
            })
            .sum();
        format_octal(&mut blk[148..155], sum);
        blk[155] = b' ';
    }

    fn write_raw_file(
        &mut self,
        name: &[u8],
        data: &[u8],
        typeflag: u8,
        format: Format,
    ) -> io::Result<()> {
        let mut blk = [0u8; BLOCK];
        let mut name = to_ascii(name);
        name.truncate(100);
        while name.last() == Some(&b'/') {
            name.pop();
        }
        blk[156] = typeflag;
        format_string(&mut blk[0..100], &name);
        format_octal(&mut blk[100..108], 0);
        format_octal(&mut blk[108..116], 0);
        format_octal(&mut blk[116..124], 0);
        format_octal(&mut blk[124..136], data.len() as i64);
        format_octal(&mut blk[136..148], 0);
        Self::set_format(&mut blk, format);
        self.raw_header(&blk, data.len() as i64, typeflag)?;
        self.write_content(data)
    }

    fn template(
        h: &TarHeader,
        name: &[u8],
        linkname: &[u8],
        numeric: fn(&mut [u8], i64),
    ) -> [u8; BLOCK] {
        let mut blk = [0u8; BLOCK];
        blk[156] = h.typeflag;
        format_string(&mut blk[0..100], name);
        format_string(&mut blk[157..257], linkname);
        numeric(&mut blk[100..108], h.mode);
        numeric(&mut blk[108..116], h.uid);
        numeric(&mut blk[116..124], h.gid);
        numeric(&mut blk[124..136], h.size);
        numeric(&mut blk[136..148], h.mtime);
        blk
    }

    /// Writes `h` like Go's `Writer.WriteHeader`. The content (for regular files) must
    /// follow through [`GoTarWriter::write_content`].
    pub fn write_header(&mut self, h: &TarHeader) -> io::Result<()> {
        let mut h = h.clone();
        if h.typeflag == 0 {
            h.typeflag = if h.name.last() == Some(&b'/') {
                flag::DIR
            } else {
                flag::REG
            };
        }
        let (mut ustar, mut pax, mut gnu) = (true, true, true);
        let mut recs: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut verify_string = |s: &[u8], size: usize, key: Option<&[u8]>, long_gnu: bool| {
            let too_long = s.len() > size;
            if s.contains(&0) || (too_long && !long_gnu) {
                gnu = false;
            }
            if !is_ascii(s) || too_long {
                let can_split = key == Some(b"path".as_slice());
                if !can_split || split_ustar_path(s).is_none() {
                    ustar = false;
                }
                match key {
                    None => pax = false,
                    Some(k) => {
                        recs.insert(k.to_vec(), s.to_vec());
                    }
                }
            }
        };
        verify_string(&h.name, 100, Some(b"path"), true);
        verify_string(&h.linkname, 100, Some(b"linkpath"), true);
        verify_string(&h.uname, 32, Some(b"uname"), false);
        verify_string(&h.gname, 32, Some(b"gname"), false);
        let mut verify_numeric = |n: i64, size: usize, key: Option<&[u8]>| {
            if !fits_in_base256(size, n) {
                gnu = false;
            }
            if !fits_in_octal(size, n) {
                ustar = false;
                match key {
                    None => pax = false,
                    Some(k) => {
                        recs.insert(k.to_vec(), n.to_string().into_bytes());
                    }
                }
            }
        };
        verify_numeric(h.mode, 8, None);
        verify_numeric(h.uid, 8, Some(b"uid"));
        verify_numeric(h.gid, 8, Some(b"gid"));
        verify_numeric(h.size, 12, Some(b"size"));
        verify_numeric(h.devmajor, 8, None);
        verify_numeric(h.devminor, 8, None);
        // mtime: whole seconds; only out-of-range values need PAX.
        if !fits_in_base256(12, h.mtime) {
            gnu = false;
        }
        if !fits_in_octal(12, h.mtime) {
            ustar = false;
            recs.insert(b"mtime".to_vec(), h.mtime.to_string().into_bytes());
        }
        if matches!(
            h.typeflag,
            flag::REG | flag::CHAR | flag::BLOCK | flag::FIFO
        ) && h.name.last() == Some(&b'/')
        {
            return Err(io::Error::other(
                "archive/tar: filename may not have trailing slash",
            ));
        }
        if !h.pax.is_empty() {
            for (k, v) in &h.pax {
                recs.entry(k.clone()).or_insert_with(|| v.clone());
            }
            ustar = false;
            gnu = false;
        }
        for (k, v) in &recs {
            let valid = !k.is_empty()
                && !k.contains(&b'=')
                && match k.as_slice() {
                    b"path" | b"linkpath" | b"uname" | b"gname" => !v.contains(&0),
                    _ => !k.contains(&0),
                };
            if !valid {
                return Err(io::Error::other(format!(
                    "archive/tar: header field too long or invalid PAX record: {:?}",
                    String::from_utf8_lossy(k)
                )));
            }
        }
        if ustar {
            self.write_ustar(&h)
        } else if pax {
            self.write_pax(&h, &recs)
        } else if gnu {
            self.write_gnu(&h)
        } else {
            Err(io::Error::other("archive/tar: header field too long"))
        }
    }

    fn write_ustar(&mut self, h: &TarHeader) -> io::Result<()> {
        let (prefix, name) = split_ustar_path(&h.name).unwrap_or((&[], &h.name));
        let mut blk = Self::template(h, name, &h.linkname, format_octal);
        format_string(&mut blk[265..297], &h.uname);
        format_string(&mut blk[297..329], &h.gname);
        format_octal(&mut blk[329..337], h.devmajor);
        format_octal(&mut blk[337..345], h.devminor);
        format_string(&mut blk[345..500], prefix);
        Self::set_format(&mut blk, Format::Ustar);
        self.raw_header(&blk, h.size, h.typeflag)
    }

    fn write_pax(&mut self, h: &TarHeader, recs: &BTreeMap<Vec<u8>, Vec<u8>>) -> io::Result<()> {
        if !recs.is_empty() {
            let mut data = Vec::new();
            for (k, v) in recs {
                data.extend_from_slice(&pax_record(k, v));
            }
            self.write_raw_file(&pax_header_name(&h.name), &data, flag::XHEADER, Format::Pax)?;
        }
        let mut blk = Self::template(h, &to_ascii(&h.name), &to_ascii(&h.linkname), format_octal);
        format_string(&mut blk[265..297], &to_ascii(&h.uname));
        format_string(&mut blk[297..329], &to_ascii(&h.gname));
        format_octal(&mut blk[329..337], h.devmajor);
        format_octal(&mut blk[337..345], h.devminor);
        Self::set_format(&mut blk, Format::Pax);
        self.raw_header(&blk, h.size, h.typeflag)
    }

    fn write_gnu(&mut self, h: &TarHeader) -> io::Result<()> {
        const LONG: &[u8] = b"././@LongLink";
        if h.name.len() > 100 {
            let mut data = h.name.clone();
            data.push(0);
            self.write_raw_file(LONG, &data, flag::GNU_LONGNAME, Format::Gnu)?;
        }
        if h.linkname.len() > 100 {
            let mut data = h.linkname.clone();
            data.push(0);
            self.write_raw_file(LONG, &data, flag::GNU_LONGLINK, Format::Gnu)?;
        }
        let mut blk = Self::template(h, &h.name, &h.linkname, format_numeric);
        format_string(&mut blk[265..297], &h.uname);
        format_string(&mut blk[297..329], &h.gname);
        format_numeric(&mut blk[329..337], h.devmajor);
        format_numeric(&mut blk[337..345], h.devminor);
        Self::set_format(&mut blk, Format::Gnu);
        self.raw_header(&blk, h.size, h.typeflag)
    }

    /// Writes content of the current entry; bytes beyond the header's size are an error.
    pub fn write_content(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() as u64 > self.remaining {
            return Err(io::Error::other("archive/tar: write too long"));
        }
        self.out.write_all(data)?;
        self.remaining -= data.len() as u64;
        Ok(())
    }

    /// Copies up to the remaining size of the current entry from `r` (what `r` lacks is
    /// zero-filled when the next entry starts).
    pub fn copy_content(&mut self, r: &mut dyn Read) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(128 * 1024, 0);
        let result = self.copy_with(r, &mut buf);
        self.buf = buf;
        result
    }

    fn copy_with(&mut self, r: &mut dyn Read, buf: &mut [u8]) -> io::Result<()> {
        while self.remaining > 0 {
            let want = usize::try_from(self.remaining)
                .unwrap_or(buf.len())
                .min(buf.len());
            let n = match r.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.write_all(&buf[..n])?;
            self.remaining -= n as u64;
        }
        Ok(())
    }

    /// Ends the archive with two zero blocks and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_entry()?;
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn map_id(maps: &[IdMap], id: u32) -> Option<u32> {
    if maps.is_empty() {
        return Some(id);
    }
    maps.iter().find_map(|m| {
        let off = id.checked_sub(m.host_id)?;
        (off < m.size)
            .then(|| m.container_id.checked_add(off))
            .flatten()
    })
}

/// One entry of a layer tree, read relative to its directory without following a symbolic
/// link ([`read_entry`]): what the exporters put in a header, and the open regular file or
/// directory that content and extended attributes are read through.
#[derive(Debug)]
pub struct TreeEntry {
    /// `lstat` of the entry; for an opened regular file or directory, `fstat` of it.
    pub stat: Stat,
    /// The target of a symbolic link (empty otherwise).
    pub link: Vec<u8>,
    /// A regular file, open for reading (`None` if it could not be opened).
    pub file: Option<File>,
    /// A directory, open for listing (`None` if it could not be opened).
    pub dir: Option<OwnedFd>,
}

impl TreeEntry {
    /// The entry's type.
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.stat.st_mode)
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        match (&self.file, &self.dir) {
            (Some(f), _) => Some(f.as_fd()),
            (None, Some(d)) => Some(d.as_fd()),
            (None, None) => None,
        }
    }

    /// Go's `FileInfoHeader` plus the exported xattrs, for an entry named `name` in the
    /// archive (`/` appended for a directory); `None` for a socket or an unknown type, which
    /// are not archived.
    pub fn header(&self, name: &[u8]) -> Option<TarHeader> {
        let st = &self.stat;
        let ft = self.file_type();
        let mut h = TarHeader {
            name: name.to_vec(),
            mode: i64::from(st.st_mode & 0o7777),
            uid: i64::from(st.st_uid),
            gid: i64::from(st.st_gid),
            // FileInfoHeader truncates to whole seconds ([V] 1.43: .7 s → down).
            mtime: st.st_mtime,
            ..TarHeader::default()
        };
        match ft {
            FileType::RegularFile => {
                h.typeflag = flag::REG;
                h.size = st.st_size;
            }
            FileType::Directory => {
                h.typeflag = flag::DIR;
                h.name.push(b'/');
            }
            FileType::Symlink => {
                h.typeflag = flag::SYMLINK;
                h.linkname = self.link.clone();
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                h.typeflag = if ft == FileType::CharacterDevice {
                    flag::CHAR
                } else {
                    flag::BLOCK
                };
                h.devmajor = i64::from(rustix::fs::major(st.st_rdev));
                h.devminor = i64::from(rustix::fs::minor(st.st_rdev));
            }
            FileType::Fifo => h.typeflag = flag::FIFO,
            _ => return None,
        }
        h.pax = self.tar_xattrs();
        Some(h)
    }

    /// The extended attribute `name` of an opened regular file or directory.
    pub fn xattr(&self, name: &[u8]) -> Option<Vec<u8>> {
        crate::xattr::get_fd(self.fd()?, OsStr::from_bytes(name))
    }

    /// The xattrs 1.60 exports, as `SCHILY.xattr.<name>` PAX records
    /// ([`crate::xattr::pax_records`]), read through the opened regular file or directory
    /// (the only types that can carry these namespaces).
    pub fn tar_xattrs(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.fd().map(crate::xattr::pax_records).unwrap_or_default()
    }
}

/// Reads the entry `name` of the directory `dir` without following a symbolic link: its
/// `lstat`, a symbolic link's target, and a regular file or directory opened with
/// `O_NOFOLLOW` ([`storage_io::confined`]; a FIFO or device is never opened). A regular file
/// or directory replaced meanwhile by something else is not opened (its content then reads
/// as zeros, like a file that vanished).
pub fn read_entry(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<TreeEntry> {
    let stat = rustix::fs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW)?;
    let mut entry = TreeEntry {
        stat,
        link: Vec::new(),
        file: None,
        dir: None,
    };
    let fstat = |fd: BorrowedFd<'_>| rustix::fs::fstat(fd).ok();
    match entry.file_type() {
        FileType::RegularFile => {
            if let Ok(f) = confined::open_regular_at(dir, name) {
                entry.stat = *f.stat();
                entry.file = Some(f.into_file());
            }
        }
        FileType::Directory => {
            if let Ok(d) = confined::open_dir_at(dir, name)
                && let Some(st) = fstat(d.as_fd())
            {
                entry.stat = st;
                entry.dir = Some(d);
            }
        }
        FileType::Symlink => {
            entry.link =
                rustix::fs::readlinkat(dir, OsStr::from_bytes(name), Vec::new())?.into_bytes();
        }
        _ => {}
    }
    Ok(entry)
}

/// The names in the directory `dir`, sorted byte-wise, each with whether its directory
/// entry says it is a directory (Go's `WalkDir` view).
pub fn sorted_names(dir: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, bool)>> {
    let mut names = crate::fsops::list_dir(dir)?;
    names.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(names)
}

/// Go's `tarAppender`: one archive being built.
struct Appender<'a> {
    tw: GoTarWriter<io::BufWriter<&'a mut dyn Write>>,
    uid_map: &'a [IdMap],
    gid_map: &'a [IdMap],
    seen: HashMap<u64, Vec<u8>>,
}

impl Appender<'_> {
    /// Go's `addTarFile` for the entry `base` of the directory `dir`, named `name` in the
    /// archive. Returns the entry's directory descriptor when it is one.
    fn add(
        &mut self,
        dir: BorrowedFd<'_>,
        base: &[u8],
        name: &[u8],
    ) -> io::Result<Option<OwnedFd>> {
        let mut e = read_entry(dir, base)?;
        // Sockets and anything unknown are not archived.
        let Some(mut h) = e.header(name) else {
            return Ok(None);
        };
        let st = &e.stat;
        let ft = e.file_type();
        if ft != FileType::Directory && st.st_nlink > 1 {
            if let Some(old) = self.seen.get(&st.st_ino) {
                h.typeflag = flag::LINK;
                h.linkname = old.clone();
                h.size = 0;
            } else {
                self.seen.insert(st.st_ino, h.name.clone());
            }
        }
        let is_overlay_whiteout =
            ft == FileType::CharacterDevice && h.devmajor == 0 && h.devminor == 0;
        let base = h.name.strip_suffix(b"/").unwrap_or(&h.name);
        let base = base.rsplit(|&c| c == b'/').next().unwrap_or(base);
        let identity = self.uid_map.is_empty() && self.gid_map.is_empty();
        if !(is_overlay_whiteout || base.starts_with(b".wh.") || identity) {
            match (
                map_id(self.uid_map, st.st_uid),
                map_id(self.gid_map, st.st_gid),
            ) {
                (Some(u), Some(g)) => {
                    h.uid = i64::from(u);
                    h.gid = i64::from(g);
                }
                // Go: "Can't add file …" logged, entry skipped.
                _ => return Ok(e.dir.take()),
            }
        }
        self.tw.write_header(&h)?;
        if h.typeflag == flag::REG && h.size > 0 {
            // A file that could not be opened, or shrank, is zero-filled by the writer,
            // keeping the archive well-formed (Go's copy would fail).
            if let Some(f) = &mut e.file {
                self.tw.copy_content(f)?;
            }
        }
        Ok(e.dir.take())
    }
}

/// Go's lexical `WalkDir` below the directory `dir` (names relative to the walk root in
/// `rel`); directories are descended through descriptors, never through a symbolic link.
fn walk(app: &mut Appender<'_>, dir: BorrowedFd<'_>, rel: &[u8]) -> io::Result<()> {
    let Ok(names) = sorted_names(dir) else {
        return Ok(());
    };
    for (name, is_dir) in names {
        let mut child = rel.to_vec();
        if !child.is_empty() {
            child.push(b'/');
        }
        child.extend_from_slice(&name);
        let sub = match app.add(dir, &name, &child) {
            Ok(sub) => sub,
            Err(e) if is_write_error(&e) => return Err(e),
            // Go logs "Can't add file …" and walks on, into the directory too.
            Err(_) => None,
        };
        if is_dir {
            let sub = match sub {
                Some(fd) => Some(fd),
                None => confined::open_dir_at(dir, &name).ok(),
            };
            if let Some(fd) = sub {
                walk(app, fd.as_fd(), &child)?;
            }
        }
    }
    Ok(())
}

/// Errors from the output are fatal; errors reading the tree are skipped (Go logs them).
fn is_write_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<WriteError>())
}

#[derive(Debug)]
struct WriteError(io::Error);

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for WriteError {}

/// Marks errors of the wrapped writer so that the walk can tell them apart.
struct TaggedWriter<'a>(&'a mut dyn Write);

impl Write for TaggedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .write(buf)
            .map_err(|e| io::Error::other(WriteError(e)))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(|e| io::Error::other(WriteError(e)))
    }
}

fn untag(e: io::Error) -> io::Error {
    if is_write_error(&e) {
        if let Some(inner) = e.into_inner() {
            if let Ok(w) = inner.downcast::<WriteError>() {
                return w.0;
            }
            return io::Error::other("write error");
        }
        return io::Error::other("write error");
    }
    e
}

/// Go 1.60 `TarWithOptions(root, {UIDMaps, GIDMaps})`, uncompressed: every entry below
/// `root` in lexical walk order (the root itself is not emitted).
pub fn tar_dir(
    root: &Path,
    uid_map: &[IdMap],
    gid_map: &[IdMap],
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut tagged = TaggedWriter(out);
    let run = |w: &mut dyn Write| -> io::Result<()> {
        let mut app = Appender {
            tw: GoTarWriter::new(io::BufWriter::with_capacity(64 * 1024, w)),
            uid_map,
            gid_map,
            seen: HashMap::new(),
        };
        let opened = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        if let Ok(fd) = opened {
            walk(&mut app, fd.as_fd(), b"")?;
        }
        app.tw.finish()?;
        Ok(())
    };
    run(&mut tagged).map_err(untag)
}

/// Go's `ExportChanges(root, changes, uidMaps, gidMaps)`: changes sorted by path;
/// deletes become bare `.wh.<name>` headers (mode 0, owner 0, mtime now); the rest are
/// added from `root` like [`tar_dir`] entries.
pub fn export_changes(
    root: &Path,
    changes: &[Change],
    uid_map: &[IdMap],
    gid_map: &[IdMap],
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut sorted: Vec<&Change> = changes.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut tagged = TaggedWriter(out);
    let run = |w: &mut dyn Write| -> io::Result<()> {
        let mut app = Appender {
            tw: GoTarWriter::new(io::BufWriter::with_capacity(64 * 1024, w)),
            uid_map,
            gid_map,
            seen: HashMap::new(),
        };
        // Entries are read through their directory, resolved inside `root` without
        // following a symbolic link; the last directory is kept (changes come sorted).
        let layer = confined::Root::open(root).ok();
        let mut cached: Option<(Vec<u8>, OwnedFd)> = None;
        for change in sorted {
            let rel = change.path.trim_start_matches('/');
            if change.kind == ChangeKind::Delete {
                let (dir, base) = match rel.rfind('/') {
                    Some(i) => (&rel[..=i], &rel[i + 1..]),
                    None => ("", rel),
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let h = TarHeader {
                    name: format!("{dir}.wh.{base}").into_bytes(),
                    typeflag: flag::REG,
                    mtime: round_to_second(now.as_secs() as i64, i64::from(now.subsec_nanos())),
                    ..TarHeader::default()
                };
                app.tw.write_header(&h)?;
            } else {
                let (dir, base) = confined::split(rel.as_bytes());
                let dir_fd = match (&layer, &cached) {
                    (_, Some((d, fd))) if d.as_slice() == dir => Some(fd),
                    (Some(layer), _) => {
                        cached = layer.open_dir(dir).ok().map(|fd| (dir.to_vec(), fd));
                        cached.as_ref().map(|(_, fd)| fd)
                    }
                    (None, _) => None,
                };
                // A missing or symlinked directory on the way: skipped (Go logs "Can't add
                // file …"; it would follow the link).
                if let Some(fd) = dir_fd {
                    match app.add(fd.as_fd(), base, rel.as_bytes()) {
                        Ok(_) => {}
                        Err(e) if is_write_error(&e) => return Err(e),
                        Err(_) => {}
                    }
                }
            }
        }
        app.tw.finish()?;
        Ok(())
    };
    run(&mut tagged).map_err(untag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths() {
        assert_eq!(pax_record(b"path", b"a"), b"9 path=a\n");
        // 9 + len("99") would be 2 digits; the size field grows the record.
        let rec = pax_record(b"k", &[b'x'; 93]);
        assert_eq!(rec.len(), 99);
        assert!(rec.starts_with(b"99 k="));
        let rec = pax_record(b"k", &[b'x'; 95]);
        assert_eq!(rec.len(), 102);
        assert!(rec.starts_with(b"102 k="));
    }

    #[test]
    fn pax_names_like_go() {
        assert_eq!(pax_header_name(b"etc/hello"), b"etc/PaxHeaders.0/hello");
        assert_eq!(pax_header_name(b"hello"), b"PaxHeaders.0/hello");
        assert_eq!(pax_header_name(b"etc/"), b"etc/PaxHeaders.0");
        assert_eq!(pax_header_name(b"a/b/"), b"a/b/PaxHeaders.0");
    }

    #[test]
    fn octal_fields() {
        let mut b = [0xffu8; 8];
        format_octal(&mut b, 0o755);
        assert_eq!(&b, b"0000755\0");
        let mut b = [0xffu8; 12];
        format_octal(&mut b, 5);
        assert_eq!(&b, b"00000000005\0");
        let mut b = [0u8; 8];
        format_numeric(&mut b, 1 << 30);
        assert_eq!(b[0], 0x80);
        assert_eq!(&b[4..], &[0x40, 0, 0, 0]);
    }

    #[test]
    fn ustar_split_and_rounding() {
        let long = format!("{}/{}", "d".repeat(60), "f".repeat(60));
        assert_eq!(
            split_ustar_path(long.as_bytes()).map(|(p, _)| p.len()),
            Some(60)
        );
        assert!(split_ustar_path(b"short").is_none());
        assert_eq!(round_to_second(10, 499_999_999), 10);
        assert_eq!(round_to_second(10, 500_000_000), 11);
    }

    #[test]
    fn header_checksum_and_end() {
        let mut out = Vec::new();
        let mut tw = GoTarWriter::new(&mut out);
        let h = TarHeader {
            name: b"a".to_vec(),
            typeflag: b'0',
            mode: 0o644,
            size: 3,
            mtime: 1,
            ..Default::default()
        };
        tw.write_header(&h).unwrap();
        tw.write_content(b"abc").unwrap();
        tw.finish().unwrap();
        assert_eq!(out.len(), 512 * 4);
        let sum: u32 = out[..512]
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(c)
                }
            })
            .sum();
        assert_eq!(&out[148..156], format!("{sum:06o}\0 ").as_bytes());
        assert_eq!(&out[257..265], b"ustar\x0000");
        assert_eq!(&out[512..515], b"abc");
        assert!(out[1024..].iter().all(|&b| b == 0));
    }

    #[test]
    fn xattrs_force_pax() {
        let mut out = Vec::new();
        let mut tw = GoTarWriter::new(&mut out);
        let mut h = TarHeader {
            name: b"d/f".to_vec(),
            typeflag: b'0',
            mode: 0o644,
            ..Default::default()
        };
        h.pax.insert(b"SCHILY.xattr.user.k".to_vec(), b"v".to_vec());
        tw.write_header(&h).unwrap();
        tw.finish().unwrap();
        assert_eq!(&out[..16], b"d/PaxHeaders.0/f");
        assert_eq!(out[156], b'x');
        assert_eq!(&out[512..538], b"25 SCHILY.xattr.user.k=v\n\0");
        assert_eq!(&out[1024..1027], b"d/f");
        assert_eq!(out.len(), 512 * 5);
    }

    fn write_one(h: &TarHeader) -> Vec<u8> {
        let mut out = Vec::new();
        let mut tw = GoTarWriter::new(&mut out);
        tw.write_header(h).unwrap();
        tw.write_content(&vec![b'z'; usize::try_from(h.size).unwrap()])
            .unwrap();
        tw.finish().unwrap();
        out
    }

    fn base(name: &[u8]) -> TarHeader {
        TarHeader {
            name: name.to_vec(),
            typeflag: b'0',
            mode: 0o644,
            mtime: 1_600_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn long_names_use_ustar_prefix_then_pax() {
        // Splittable: plain USTAR with a prefix.
        let split = format!("{}/{}", "p".repeat(120), "n".repeat(90));
        let out = write_one(&base(split.as_bytes()));
        assert_eq!(out[156], b'0');
        assert_eq!(&out[345..465], "p".repeat(120).as_bytes());
        // A 120-byte base name cannot be split: PAX `path`, name truncated in the header.
        let long = "n".repeat(120);
        let out = write_one(&base(long.as_bytes()));
        assert_eq!(&out[..29], b"PaxHeaders.0/nnnnnnnnnnnnnnnn");
        assert_eq!(out[156], b'x');
        let rec = format!("130 path={long}\n");
        assert_eq!(&out[512..512 + rec.len()], rec.as_bytes());
        assert_eq!(&out[1024..1124], "n".repeat(100).as_bytes());
        let mut r = storage_tarsplit::TarReader::new(&out[..]);
        let h = r.next_header().unwrap().unwrap();
        assert_eq!(h.name, long.as_bytes());
        assert!(r.next_header().unwrap().is_none());
    }

    #[test]
    fn non_ascii_and_big_numbers_use_pax_records() {
        let mut h = base("café".as_bytes());
        h.uid = 3_000_000;
        h.uname = vec![b'u'; 40];
        let out = write_one(&h);
        assert_eq!(out[156], b'x');
        let data_len = usize::try_from(
            u64::from_str_radix(std::str::from_utf8(&out[124..135]).unwrap(), 8).unwrap(),
        )
        .unwrap();
        let data = std::str::from_utf8(&out[512..512 + data_len]).unwrap();
        let keys: Vec<&str> = data
            .lines()
            .map(|l| l.split_once(' ').unwrap().1.split_once('=').unwrap().0)
            .collect();
        assert_eq!(keys, vec!["path", "uid", "uname"]);
        // The main header holds the ASCII-only name and a zeroed uid field.
        assert_eq!(&out[1024..1028], b"caf\0");
        assert_eq!(&out[1024 + 108..1024 + 116], b"0000000\0");
    }

    #[test]
    fn negative_mtime_goes_to_pax() {
        let mut h = base(b"old");
        h.mtime = -5;
        let out = write_one(&h);
        assert_eq!(out[156], b'x');
        assert_eq!(&out[512..524], b"12 mtime=-5\n");
    }

    #[test]
    fn unrepresentable_device_numbers_fall_back_to_gnu() {
        let mut h = base(&[b'd'; 120]);
        h.typeflag = b'3';
        h.devmajor = 1 << 25;
        let out = write_one(&h);
        // GNU long name first, then the entry with a base-256 major and GNU magic.
        assert_eq!(&out[..13], b"././@LongLink");
        assert_eq!(out[156], b'L');
        assert_eq!(&out[512..632], &[b'd'; 120][..]);
        assert_eq!(out[632], 0);
        let hdr = &out[1024..1536];
        assert_eq!(hdr[156], b'3');
        assert_eq!(&hdr[257..265], b"ustar  \0");
        assert_eq!(hdr[329] & 0x80, 0x80);
        assert_eq!(&hdr[329..337], &[0x80, 0, 0, 0, 0x02, 0, 0, 0]);
    }

    #[test]
    fn delete_whiteouts_are_bare_headers() {
        let tmp = tempfile::tempdir().unwrap();
        let changes = [
            Change {
                path: "/z".into(),
                kind: ChangeKind::Delete,
            },
            Change {
                path: "/a/b".into(),
                kind: ChangeKind::Delete,
            },
        ];
        let mut out = Vec::new();
        export_changes(tmp.path(), &changes, &[], &[], &mut out).unwrap();
        assert_eq!(out.len(), 512 * 4);
        assert_eq!(&out[..8], b"a/.wh.b\0");
        assert_eq!(&out[512..519], b".wh.z\0\0");
        for blk in [&out[..512], &out[512..1024]] {
            assert_eq!(blk[156], b'0');
            assert_eq!(&blk[100..108], b"0000000\0");
            assert_eq!(&blk[265..297], &[0u8; 32][..]);
        }
    }
}
