//! A tar writer that produces the bytes Go's `archive/tar.Writer` produces (`WriteHeader`
//! without an explicit format): USTAR when the header fits it, else PAX (`PaxHeaders.0`
//! names, records sorted by key), else GNU; zero-padded octal fields; Go's checksum layout;
//! two zero blocks at the end, with no padding to a record size.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use crate::header::{Header, typeflag};
use crate::reader::BLOCK;

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
pub struct TarWriter<W: Write> {
    out: W,
    /// Content bytes still expected for the current entry, and padding after it.
    remaining: u64,
    pad: usize,
    /// Reused copy buffer.
    buf: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    /// Wraps `out`.
    pub fn new(out: W) -> Self {
        TarWriter {
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
            typeflag::LINK
                | typeflag::SYMLINK
                | typeflag::CHAR
                | typeflag::BLOCK
                | typeflag::DIR
                | typeflag::FIFO
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
        h: &Header,
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
        numeric(&mut blk[136..148], h.mtime.secs);
        blk
    }

    /// Writes `h` like Go's `Writer.WriteHeader`. The content (for regular files) must
    /// follow through [`TarWriter::write_content`].
    ///
    /// As in Go, the modification time is rounded to whole seconds, access and change
    /// times are not written, and `xattrs` become `SCHILY.xattr.<name>` PAX records
    /// (before the `pax` records, which add only keys not set otherwise).
    pub fn write_header(&mut self, h: &Header) -> io::Result<()> {
        let mut h = h.clone();
        h.mtime = crate::TarTime {
            secs: h.mtime.round_to_second(),
            nanos: 0,
        };
        if h.typeflag == 0 {
            h.typeflag = if h.name.last() == Some(&b'/') {
                typeflag::DIR
            } else {
                typeflag::REG
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
        if !fits_in_base256(12, h.mtime.secs) {
            gnu = false;
        }
        if !fits_in_octal(12, h.mtime.secs) {
            ustar = false;
            recs.insert(b"mtime".to_vec(), h.mtime.secs.to_string().into_bytes());
        }
        if matches!(
            h.typeflag,
            typeflag::REG | typeflag::CHAR | typeflag::BLOCK | typeflag::FIFO
        ) && h.name.last() == Some(&b'/')
        {
            return Err(io::Error::other(
                "archive/tar: filename may not have trailing slash",
            ));
        }
        // Go's `allowedFormats`: extended attributes, then the other PAX records except
        // the ones a header field already gives and GNU sparse ones; either makes the
        // header PAX only.
        for (name, v) in &h.xattrs {
            let mut k = b"SCHILY.xattr.".to_vec();
            k.extend_from_slice(name);
            recs.insert(k, v.clone());
        }
        for (k, v) in &h.pax {
            let basic = matches!(
                k.as_str(),
                "path"
                    | "linkpath"
                    | "size"
                    | "uid"
                    | "gid"
                    | "uname"
                    | "gname"
                    | "mtime"
                    | "atime"
                    | "ctime"
            );
            if !basic && !k.starts_with("GNU.sparse.") {
                recs.entry(k.as_bytes().to_vec())
                    .or_insert_with(|| v.clone());
            }
        }
        if !h.xattrs.is_empty() || !h.pax.is_empty() {
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
                    "archive/tar: header field too long or invalid PAX record: {}",
                    storage_gocompat::strconv::quote_bytes(k)
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

    fn write_ustar(&mut self, h: &Header) -> io::Result<()> {
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

    fn write_pax(&mut self, h: &Header, recs: &BTreeMap<Vec<u8>, Vec<u8>>) -> io::Result<()> {
        if !recs.is_empty() {
            let mut data = Vec::new();
            for (k, v) in recs {
                data.extend_from_slice(&pax_record(k, v));
            }
            self.write_raw_file(
                &pax_header_name(&h.name),
                &data,
                typeflag::XHEADER,
                Format::Pax,
            )?;
        }
        let mut blk = Self::template(h, &to_ascii(&h.name), &to_ascii(&h.linkname), format_octal);
        format_string(&mut blk[265..297], &to_ascii(&h.uname));
        format_string(&mut blk[297..329], &to_ascii(&h.gname));
        format_octal(&mut blk[329..337], h.devmajor);
        format_octal(&mut blk[337..345], h.devminor);
        Self::set_format(&mut blk, Format::Pax);
        self.raw_header(&blk, h.size, h.typeflag)
    }

    fn write_gnu(&mut self, h: &Header) -> io::Result<()> {
        const LONG: &[u8] = b"././@LongLink";
        if h.name.len() > 100 {
            let mut data = h.name.clone();
            data.push(0);
            self.write_raw_file(LONG, &data, typeflag::GNU_LONGNAME, Format::Gnu)?;
        }
        if h.linkname.len() > 100 {
            let mut data = h.linkname.clone();
            data.push(0);
            self.write_raw_file(LONG, &data, typeflag::GNU_LONGLINK, Format::Gnu)?;
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

    /// Copies the current entry's content from `r`, up to the size its header gave; what `r`
    /// lacks is zero-filled when the next entry starts (a file that shrank while it was
    /// read keeps the archive well-formed).
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
        let t = |nanos| crate::TarTime { secs: 10, nanos };
        assert_eq!(t(499_999_999).round_to_second(), 10);
        assert_eq!(t(500_000_000).round_to_second(), 11);
    }

    #[test]
    fn header_checksum_and_end() {
        let mut out = Vec::new();
        let mut tw = TarWriter::new(&mut out);
        let h = Header {
            name: b"a".to_vec(),
            typeflag: b'0',
            mode: 0o644,
            size: 3,
            mtime: crate::TarTime { secs: 1, nanos: 0 },
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
        let mut tw = TarWriter::new(&mut out);
        let mut h = Header {
            name: b"d/f".to_vec(),
            typeflag: b'0',
            mode: 0o644,
            ..Default::default()
        };
        h.xattrs.push((b"user.k".to_vec(), b"v".to_vec()));
        tw.write_header(&h).unwrap();
        tw.finish().unwrap();
        assert_eq!(&out[..16], b"d/PaxHeaders.0/f");
        assert_eq!(out[156], b'x');
        assert_eq!(&out[512..538], b"25 SCHILY.xattr.user.k=v\n\0");
        assert_eq!(&out[1024..1027], b"d/f");
        assert_eq!(out.len(), 512 * 5);
    }

    fn write_one(h: &Header) -> Vec<u8> {
        let mut out = Vec::new();
        let mut tw = TarWriter::new(&mut out);
        tw.write_header(h).unwrap();
        tw.write_content(&vec![b'z'; usize::try_from(h.size).unwrap()])
            .unwrap();
        tw.finish().unwrap();
        out
    }

    fn base(name: &[u8]) -> Header {
        Header {
            name: name.to_vec(),
            typeflag: b'0',
            mode: 0o644,
            mtime: crate::TarTime {
                secs: 1_600_000_000,
                nanos: 0,
            },
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
        let mut r = crate::TarReader::new(&out[..]);
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
        h.mtime = crate::TarTime { secs: -5, nanos: 0 };
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
}
