//! Go-compatible streaming tar reader (`archive/tar.Reader`).

use std::io::{self, Read};

use crate::Error;

/// Size of a tar block.
pub(crate) const BLOCK: usize = 512;
/// Go's `maxSpecialFileSize`: cap on PAX / GNU long-name data.
const MAX_SPECIAL: u64 = 1 << 20;

/// A timestamp as stored in a tar header (seconds since the epoch + nanoseconds, normalized
/// so that `nanos < 1_000_000_000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct TarTime {
    /// Seconds since the Unix epoch (may be negative).
    pub secs: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nanos: u32,
}

impl TarTime {
    /// Go's `time.Unix(secs, nsecs)` normalization.
    fn unix(secs: i64, nsecs: i64) -> TarTime {
        let mut s = secs;
        let mut n = nsecs;
        if !(0..1_000_000_000).contains(&n) {
            s = s.wrapping_add(n.div_euclid(1_000_000_000));
            n = n.rem_euclid(1_000_000_000);
        }
        TarTime {
            secs: s,
            nanos: n as u32,
        }
    }
}

/// One tar member, as Go's `archive/tar` reader yields it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// Member name: PAX `path` / GNU long name / USTAR `prefix/name` applied, NUL-trimmed, not cleaned.
    pub name: Vec<u8>,
    /// Link target (PAX `linkpath` / GNU long link applied).
    pub linkname: Vec<u8>,
    /// Type flag, normalized like Go: `\0` becomes `0`, or `5` when the name ends with `/`.
    pub typeflag: u8,
    /// Permission and mode bits as stored.
    pub mode: i64,
    /// Owner user ID.
    pub uid: i64,
    /// Owner group ID.
    pub gid: i64,
    /// Content size from the header (for link/dir/device/fifo types, no content is read
    /// whatever this says).
    pub size: i64,
    /// Modification time.
    pub mtime: TarTime,
    /// Access time (PAX `atime`, GNU or STAR header field), if present.
    pub atime: Option<TarTime>,
    /// Change time (PAX `ctime`, GNU or STAR header field), if present.
    pub ctime: Option<TarTime>,
    /// Owner user name.
    pub uname: Vec<u8>,
    /// Owner group name.
    pub gname: Vec<u8>,
    /// Device major number.
    pub devmajor: i64,
    /// Device minor number.
    pub devminor: i64,
    /// Extended attributes from PAX `SCHILY.xattr.<name>` records, in record order
    /// (empty values included, like Go 1.60's extractor which reads `PAXRecords`).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// All PAX records of this entry (a repeated key keeps its first position and last value).
    pub pax: Vec<(String, Vec<u8>)>,
}

/// Go's `isHeaderOnlyType`.
fn header_only(typeflag: u8) -> bool {
    matches!(typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
}

/// A streaming tar parser that yields exactly what Go's `archive/tar.Reader` yields.
///
/// Content of the current entry is read through the [`Read`] impl (end of file at the end of
/// the entry); reads go straight to the underlying reader, so wrap it in a `BufReader` if it
/// is slow for small reads. Errors are sticky, as in Go.
pub struct TarReader<R: Read> {
    inner: R,
    /// Content bytes left in the current entry.
    remaining: u64,
    /// Padding after the current entry.
    pad: usize,
    err: Option<Error>,
    eof: bool,
    /// Raw accounting (tar-split): every non-content byte consumed.
    raw: Option<Vec<u8>>,
    /// The current entry is a PAX GNU sparse file: reads expand its map.
    sparse: Option<SparseState>,
    /// With raw accounting, the physical bytes of a sparse entry's data area consumed (map
    /// blocks, data fragments, skipped rest): they are part of the stream, not of the
    /// logical content the reads yield.
    phys: Vec<u8>,
}

/// Reading position in a PAX GNU sparse file (Go's `sparseFileReader`).
struct SparseState {
    /// Data fragments `(offset, length)`, in order, not overlapping (validated).
    data: Vec<(u64, u64)>,
    /// Logical position.
    pos: u64,
    /// Logical (real) size.
    size: u64,
}

impl<R: Read> TarReader<R> {
    /// Creates a reader over a tar stream.
    pub fn new(r: R) -> Self {
        TarReader {
            inner: r,
            remaining: 0,
            pad: 0,
            err: None,
            eof: false,
            raw: None,
            sparse: None,
            phys: Vec::new(),
        }
    }

    /// A reader that records every non-content byte it consumes (see [`Self::take_raw`]).
    pub(crate) fn with_raw_accounting(r: R) -> Self {
        let mut tr = Self::new(r);
        tr.raw = Some(Vec::with_capacity(4 * BLOCK));
        tr
    }

    /// Takes the raw bytes consumed since the last call.
    pub(crate) fn take_raw(&mut self) -> Vec<u8> {
        match &mut self.raw {
            Some(v) => std::mem::take(v),
            None => Vec::new(),
        }
    }

    /// Content bytes of the current entry not read yet (logical bytes for a sparse file).
    pub(crate) fn remaining(&self) -> u64 {
        match &self.sparse {
            Some(sp) => sp.size - sp.pos,
            None => self.remaining,
        }
    }

    /// Whether the current entry is a PAX GNU sparse file.
    pub(crate) fn is_sparse(&self) -> bool {
        self.sparse.is_some()
    }

    /// Takes the physical bytes of the sparse entry's data area consumed since the last call
    /// (only collected with raw accounting).
    pub(crate) fn take_phys(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.phys)
    }

    /// The underlying reader.
    pub(crate) fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Returns the underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Advances to the next member, skipping the unread content and padding of the previous
    /// one. Returns `Ok(None)` at the end of the archive (two zero blocks, one zero block then
    /// end of input, or end of input at a header boundary).
    pub fn next_header(&mut self) -> Result<Option<Header>, Error> {
        if let Some(e) = &self.err {
            return Err(e.duplicate());
        }
        if self.eof {
            return Ok(None);
        }
        match self.next_inner() {
            Ok(Some(h)) => Ok(Some(h)),
            Ok(None) => {
                self.eof = true;
                self.remaining = 0;
                self.pad = 0;
                Ok(None)
            }
            Err(e) => {
                self.err = Some(e.duplicate());
                Err(e)
            }
        }
    }

    fn record(&mut self, b: &[u8]) {
        if let Some(raw) = &mut self.raw {
            raw.extend_from_slice(b);
        }
    }

    /// Reads until `buf` is full or end of input; returns the count.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::from_io(e)),
            }
        }
        Ok(n)
    }

    fn discard_content(&mut self) -> Result<(), Error> {
        self.sparse = None;
        if self.remaining == 0 {
            return Ok(());
        }
        let mut scratch = vec![0u8; 64 * 1024];
        while self.remaining > 0 {
            let want = scratch
                .len()
                .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            match self.inner.read(&mut scratch[..want]) {
                Ok(0) => return Err(Error::UnexpectedEof),
                // (A sparse entry's skipped data is not collected: the tar-split recorder
                // reads every entry to its end.)
                Ok(k) => self.remaining -= k as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::from_io(e)),
            }
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` physical content bytes of the current entry (Go's
    /// `mustReadFull` on the entry's `regFileReader`): fewer left in the entry is
    /// [`Error::SparseMissingData`] when `missing` says so, else an unexpected end.
    fn read_physical(&mut self, buf: &mut [u8], missing: Error) -> Result<(), Error> {
        if (buf.len() as u64) > self.remaining {
            return Err(missing);
        }
        let n = self.read_full(buf)?;
        self.remaining -= n as u64;
        if self.raw.is_some() {
            self.phys.extend_from_slice(&buf[..n]);
        }
        if n < buf.len() {
            return Err(Error::UnexpectedEof);
        }
        Ok(())
    }

    /// Go's `readGNUSparseMap1x0`: the map at the start of the data area, newline-separated
    /// decimals in whole blocks.
    fn read_sparse_map_1x0(&mut self) -> Result<Vec<(i64, i64)>, Error> {
        let mut buf: Vec<u8> = Vec::new();
        let mut newlines = 0usize;
        let mut feed = |tr: &mut Self, buf: &mut Vec<u8>, want: usize| -> Result<(), Error> {
            while newlines < want {
                let mut blk = [0u8; BLOCK];
                tr.read_physical(&mut blk, Error::UnexpectedEof)?;
                newlines += blk.iter().filter(|&&c| c == b'\n').count();
                buf.extend_from_slice(&blk);
            }
            Ok(())
        };
        let mut off = 0usize;
        let mut token = |buf: &[u8]| -> Option<i64> {
            let rest = buf.get(off..)?;
            let end = rest.iter().position(|&c| c == b'\n')?;
            off += end + 1;
            parse_dec(&rest[..end])
        };
        feed(self, &mut buf, 1)?;
        let n = token(&buf).ok_or(Error::InvalidHeader)?;
        if n < 0 || n.checked_mul(2).is_none() {
            return Err(Error::InvalidHeader);
        }
        let total = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(2))
            .and_then(|n| n.checked_add(1))
            .ok_or(Error::InvalidHeader)?;
        feed(self, &mut buf, total)?;
        let mut map = Vec::new();
        for _ in 0..n {
            let (Some(o), Some(l)) = (token(&buf), token(&buf)) else {
                return Err(Error::InvalidHeader);
            };
            map.push((o, l));
        }
        Ok(map)
    }

    /// Go's `readGNUSparsePAXHeaders`: for a PAX GNU sparse file (format 0.0, 0.1 or 1.0),
    /// takes the real name and size from its records, reads its map and makes reads expand
    /// it. Other files are left alone.
    fn handle_pax_sparse(&mut self, hdr: &mut Header) -> Result<(), Error> {
        let Some(format) = pax_sparse_format(&hdr.pax) else {
            return Ok(());
        };
        if let Some(name) = pax_value(&hdr.pax, "GNU.sparse.name").filter(|n| !n.is_empty()) {
            hdr.name = name.to_vec();
        }
        let size = pax_value(&hdr.pax, "GNU.sparse.size")
            .filter(|v| !v.is_empty())
            .or_else(|| pax_value(&hdr.pax, "GNU.sparse.realsize"))
            .filter(|v| !v.is_empty());
        if let Some(size) = size {
            hdr.size = parse_dec(size).ok_or(Error::InvalidHeader)?;
        }
        let map = if format == "1.0" {
            self.read_sparse_map_1x0()?
        } else {
            sparse_map_0x1(&hdr.pax)?
        };
        if header_only(hdr.typeflag) || !valid_sparse_map(&map, hdr.size) {
            return Err(Error::InvalidHeader);
        }
        self.sparse = Some(SparseState {
            data: map.iter().map(|&(o, l)| (o as u64, l as u64)).collect(),
            pos: 0,
            size: hdr.size as u64,
        });
        Ok(())
    }

    /// Go's `sparseFileReader.Read`: the logical content, holes as zeros.
    fn read_sparse(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let Some(sp) = &self.sparse else {
            return Ok(0);
        };
        let (mut pos, size) = (sp.pos, sp.size);
        let want = buf
            .len()
            .min(usize::try_from(size - pos).unwrap_or(usize::MAX));
        let mut n = 0;
        while n < want {
            let left = (want - n) as u64;
            // The first data fragment not wholly before `pos`.
            let next = self
                .sparse
                .as_ref()
                .and_then(|sp| sp.data.iter().find(|&&(o, l)| o + l > pos).copied());
            let k = match next {
                Some((o, l)) if pos >= o => {
                    let k = left.min(o + l - pos) as usize;
                    self.read_physical(&mut buf[n..n + k], Error::SparseMissingData)?;
                    k
                }
                Some((o, _)) => {
                    let k = left.min(o - pos) as usize;
                    buf[n..n + k].fill(0);
                    k
                }
                None => {
                    let k = left.min(size - pos) as usize;
                    buf[n..n + k].fill(0);
                    k
                }
            };
            n += k;
            pos += k as u64;
            if let Some(sp) = &mut self.sparse {
                sp.pos = pos;
            }
        }
        if pos == size && self.remaining > 0 {
            return Err(Error::SparseUnreferencedData);
        }
        Ok(n)
    }

    /// Reads one header block; `Ok(None)` at a clean end of archive.
    fn read_header_block(&mut self) -> Result<Option<[u8; BLOCK]>, Error> {
        let mut blk = [0u8; BLOCK];
        let n = self.read_full(&mut blk)?;
        if n == 0 {
            return Ok(None);
        }
        if n < BLOCK {
            return Err(Error::UnexpectedEof);
        }
        self.record(&blk);
        if blk.iter().all(|&b| b == 0) {
            let n = self.read_full(&mut blk)?;
            if n == 0 {
                return Ok(None);
            }
            if n < BLOCK {
                return Err(Error::UnexpectedEof);
            }
            self.record(&blk);
            if blk.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            return Err(Error::InvalidHeader);
        }
        Ok(Some(blk))
    }

    /// Go's `handleRegularFile`.
    fn set_content(&mut self, typeflag: u8, size: i64) -> Result<(), Error> {
        let nb = if header_only(typeflag) { 0 } else { size };
        if nb < 0 {
            return Err(Error::InvalidHeader);
        }
        let nb = nb as u64;
        self.remaining = nb;
        self.pad = ((BLOCK as u64 - nb % BLOCK as u64) % BLOCK as u64) as usize;
        Ok(())
    }

    /// Go's `readSpecialFile`: the data of a PAX / GNU long-name member, capped at 1 MiB.
    fn read_special(&mut self) -> Result<Vec<u8>, Error> {
        let want = self.remaining.min(MAX_SPECIAL + 1) as usize;
        let mut buf = vec![0u8; want];
        let n = self.read_full(&mut buf)?;
        buf.truncate(n);
        self.remaining -= n as u64;
        self.record(&buf);
        if n as u64 > MAX_SPECIAL {
            return Err(Error::FieldTooLong);
        }
        if n < want {
            return Err(Error::UnexpectedEof);
        }
        Ok(buf)
    }

    fn next_inner(&mut self) -> Result<Option<Header>, Error> {
        let mut pax: Option<Vec<(String, Vec<u8>)>> = None;
        let mut long_name: Vec<u8> = Vec::new();
        let mut long_link: Vec<u8> = Vec::new();
        loop {
            self.discard_content()?;
            if self.pad > 0 {
                let pad = std::mem::take(&mut self.pad);
                let mut b = [0u8; BLOCK];
                let n = self.read_full(&mut b[..pad])?;
                self.record(&b[..n]);
                if n < pad {
                    // Go's tryReadFull reports io.EOF here: a clean end of archive.
                    return Ok(None);
                }
            }
            let Some(blk) = self.read_header_block()? else {
                return Ok(None);
            };
            let mut hdr = parse_header(&blk)?;
            self.set_content(hdr.typeflag, hdr.size)?;
            match hdr.typeflag {
                b'x' | b'g' => {
                    let data = self.read_special()?;
                    let recs = parse_pax(&data)?;
                    if hdr.typeflag == b'g' {
                        let ok = merge_pax(&mut hdr, &recs).is_ok();
                        return Ok(Some(Header {
                            name: hdr.name,
                            typeflag: b'g',
                            xattrs: hdr.xattrs,
                            pax: if ok { recs } else { Vec::new() },
                            ..Header::default()
                        }));
                    }
                    pax = Some(recs);
                }
                b'L' | b'K' => {
                    let data = self.read_special()?;
                    let s = nul_trim(&data).to_vec();
                    if hdr.typeflag == b'L' {
                        long_name = s;
                    } else {
                        long_link = s;
                    }
                }
                _ => {
                    if let Some(recs) = pax.take() {
                        merge_pax(&mut hdr, &recs)?;
                        hdr.pax = recs;
                    }
                    if !long_name.is_empty() {
                        hdr.name = long_name;
                    }
                    if !long_link.is_empty() {
                        hdr.linkname = long_link;
                    }
                    if hdr.typeflag == 0 {
                        hdr.typeflag = if hdr.name.ends_with(b"/") { b'5' } else { b'0' };
                    }
                    self.set_content(hdr.typeflag, hdr.size)?;
                    if hdr.typeflag == b'S' {
                        return Err(Error::Sparse {
                            typeflag: hdr.typeflag,
                            name: hdr.name.clone(),
                            pax_format: None,
                        });
                    }
                    self.handle_pax_sparse(&mut hdr)?;
                    return Ok(Some(hdr));
                }
            }
        }
    }
}

impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.err {
            return Err(e.duplicate().into());
        }
        if self.sparse.is_some() {
            return match self.read_sparse(buf) {
                Ok(n) => Ok(n),
                Err(e) => {
                    self.err = Some(e.duplicate());
                    Err(e.into())
                }
            };
        }
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                self.err = Some(Error::UnexpectedEof);
                Err(Error::UnexpectedEof.into())
            }
            Ok(n) => {
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) => {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) {
                    self.err = Some(Error::Io(io::Error::new(e.kind(), e.to_string())));
                }
                Err(e)
            }
        }
    }
}

fn nul_trim(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// Numeric-field parser accumulating Go's `p.err`.
#[derive(Default)]
struct Parser {
    err: bool,
}

impl Parser {
    fn numeric(&mut self, b: &[u8]) -> i64 {
        if !b.is_empty() && b[0] & 0x80 != 0 {
            let inv: u8 = if b[0] & 0x40 != 0 { 0xff } else { 0 };
            let mut x: u64 = 0;
            for (i, &c) in b.iter().enumerate() {
                let mut c = c ^ inv;
                if i == 0 {
                    c &= 0x7f;
                }
                if x >> 56 > 0 {
                    self.err = true;
                    return 0;
                }
                x = (x << 8) | u64::from(c);
            }
            if x >> 63 > 0 {
                self.err = true;
                return 0;
            }
            return if inv == 0xff { !(x as i64) } else { x as i64 };
        }
        self.octal(b)
    }

    fn octal(&mut self, b: &[u8]) -> i64 {
        let start = b.iter().position(|&c| c != b' ' && c != 0);
        let Some(start) = start else { return 0 };
        let end = b
            .iter()
            .rposition(|&c| c != b' ' && c != 0)
            .map_or(start, |e| e + 1);
        let s = nul_trim(&b[start..end]);
        let mut x: u64 = 0;
        if s.is_empty() {
            self.err = true;
            return 0;
        }
        for &c in s {
            if !(b'0'..=b'7').contains(&c) {
                self.err = true;
                return 0;
            }
            match x
                .checked_mul(8)
                .and_then(|v| v.checked_add(u64::from(c - b'0')))
            {
                Some(v) => x = v,
                None => {
                    self.err = true;
                    return -1;
                }
            }
        }
        x as i64
    }
}

fn parse_header(blk: &[u8; BLOCK]) -> Result<Header, Error> {
    // Checksum (signed or unsigned sum, the field itself counted as spaces).
    let mut cp = Parser::default();
    let value = cp.octal(&blk[148..156]);
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &c) in blk.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += i64::from(c);
        signed += i64::from(c as i8);
    }
    if cp.err || (value != unsigned && value != signed) {
        return Err(Error::InvalidHeader);
    }
    let magic = &blk[257..263];
    let version = &blk[263..265];
    #[derive(PartialEq)]
    enum Fmt {
        V7,
        Ustar,
        Star,
        Gnu,
    }
    let fmt = if magic == b"ustar\0" && &blk[508..512] == b"tar\0" {
        Fmt::Star
    } else if magic == b"ustar\0" {
        Fmt::Ustar
    } else if magic == b"ustar " && version == b" \0" {
        Fmt::Gnu
    } else {
        Fmt::V7
    };

    let mut p = Parser::default();
    let mut hdr = Header {
        typeflag: blk[156],
        name: nul_trim(&blk[0..100]).to_vec(),
        linkname: nul_trim(&blk[157..257]).to_vec(),
        size: p.numeric(&blk[124..136]),
        mode: p.numeric(&blk[100..108]),
        uid: p.numeric(&blk[108..116]),
        gid: p.numeric(&blk[116..124]),
        ..Header::default()
    };
    hdr.mtime = TarTime::unix(p.numeric(&blk[136..148]), 0);
    if fmt != Fmt::V7 {
        hdr.uname = nul_trim(&blk[265..297]).to_vec();
        hdr.gname = nul_trim(&blk[297..329]).to_vec();
        hdr.devmajor = p.numeric(&blk[329..337]);
        hdr.devminor = p.numeric(&blk[337..345]);
        let mut prefix: &[u8] = &[];
        match fmt {
            Fmt::Ustar => prefix = nul_trim(&blk[345..500]),
            Fmt::Star => {
                prefix = nul_trim(&blk[345..476]);
                hdr.atime = Some(TarTime::unix(p.numeric(&blk[476..488]), 0));
                hdr.ctime = Some(TarTime::unix(p.numeric(&blk[488..500]), 0));
            }
            Fmt::Gnu => {
                let mut p2 = Parser::default();
                if blk[345] != 0 {
                    hdr.atime = Some(TarTime::unix(p2.numeric(&blk[345..357]), 0));
                }
                if blk[357] != 0 {
                    hdr.ctime = Some(TarTime::unix(p2.numeric(&blk[357..369]), 0));
                }
                if p2.err {
                    hdr.atime = None;
                    hdr.ctime = None;
                    let s = nul_trim(&blk[345..500]);
                    if s.is_ascii() {
                        prefix = s;
                    }
                }
            }
            Fmt::V7 => {}
        }
        if !prefix.is_empty() {
            let mut name = prefix.to_vec();
            name.push(b'/');
            name.extend_from_slice(&hdr.name);
            hdr.name = name;
        }
    }
    if p.err {
        return Err(Error::InvalidHeader);
    }
    Ok(hdr)
}

/// Go's `strconv.ParseInt(s, 10, 64)`.
fn parse_dec(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut x: i128 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        x = x * 10 + i128::from(c - b'0');
        if x > i128::from(i64::MAX) + 1 {
            return None;
        }
    }
    let x = if neg { -x } else { x };
    i64::try_from(x).ok()
}

/// Go's `parsePAX`: records in order, a repeated key keeps its first slot and takes the last value.
fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut recs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut sparse_map: Vec<Vec<u8>> = Vec::new();
    let mut s = data;
    while !s.is_empty() {
        let sp = s
            .iter()
            .position(|&c| c == b' ')
            .ok_or(Error::InvalidHeader)?;
        let n = parse_dec(&s[..sp]).ok_or(Error::InvalidHeader)?;
        if n < 5 || n > s.len() as i64 {
            return Err(Error::InvalidHeader);
        }
        let rest = &s[sp + 1..];
        let n = n - (sp as i64 + 1);
        if n <= 0 {
            return Err(Error::InvalidHeader);
        }
        let n = n as usize;
        let (rec, nl, rem) = (&rest[..n - 1], rest[n - 1], &rest[n..]);
        if nl != b'\n' {
            return Err(Error::InvalidHeader);
        }
        let eq = rec
            .iter()
            .position(|&c| c == b'=')
            .ok_or(Error::InvalidHeader)?;
        let (k, v) = (&rec[..eq], &rec[eq + 1..]);
        let valid = !k.is_empty()
            && match k {
                b"path" | b"linkpath" | b"uname" | b"gname" => !v.contains(&0),
                _ => !k.contains(&0),
            };
        if !valid {
            return Err(Error::InvalidHeader);
        }
        s = rem;
        match k {
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                let even = sparse_map.len() & 1 == 0;
                if (even && k != b"GNU.sparse.offset")
                    || (!even && k != b"GNU.sparse.numbytes")
                    || v.contains(&b',')
                {
                    return Err(Error::InvalidHeader);
                }
                sparse_map.push(v.to_vec());
            }
            _ => set_record(
                &mut recs,
                String::from_utf8_lossy(k).into_owned(),
                v.to_vec(),
            ),
        }
    }
    if !sparse_map.is_empty() {
        set_record(
            &mut recs,
            "GNU.sparse.map".to_owned(),
            sparse_map.join(&b','),
        );
    }
    Ok(recs)
}

fn set_record<K: PartialEq>(recs: &mut Vec<(K, Vec<u8>)>, k: K, v: Vec<u8>) {
    match recs.iter_mut().find(|(key, _)| *key == k) {
        Some(slot) => slot.1 = v,
        None => recs.push((k, v)),
    }
}

/// Go's `parsePAXTime`.
fn parse_pax_time(s: &[u8]) -> Option<TarTime> {
    let (ss, sn) = match s.iter().position(|&c| c == b'.') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &[][..]),
    };
    let secs = parse_dec(ss)?;
    if sn.is_empty() {
        return Some(TarTime::unix(secs, 0));
    }
    if !sn.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nsecs: i64 = 0;
    for i in 0..9 {
        nsecs = nsecs * 10 + sn.get(i).map_or(0, |c| i64::from(c - b'0'));
    }
    if ss.first() == Some(&b'-') {
        return Some(TarTime::unix(secs, -nsecs));
    }
    Some(TarTime::unix(secs, nsecs))
}

/// Go's `mergePAX`.
fn merge_pax(hdr: &mut Header, recs: &[(String, Vec<u8>)]) -> Result<(), Error> {
    for (k, v) in recs {
        if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
            set_record(&mut hdr.xattrs, name.as_bytes().to_vec(), v.clone());
            continue;
        }
        if v.is_empty() {
            continue;
        }
        let bad = Error::InvalidHeader;
        match k.as_str() {
            "path" => hdr.name = v.clone(),
            "linkpath" => hdr.linkname = v.clone(),
            "uname" => hdr.uname = v.clone(),
            "gname" => hdr.gname = v.clone(),
            "uid" => hdr.uid = parse_dec(v).ok_or(bad)?,
            "gid" => hdr.gid = parse_dec(v).ok_or(bad)?,
            "atime" => hdr.atime = Some(parse_pax_time(v).ok_or(bad)?),
            "mtime" => hdr.mtime = parse_pax_time(v).ok_or(bad)?,
            "ctime" => hdr.ctime = Some(parse_pax_time(v).ok_or(bad)?),
            "size" => hdr.size = parse_dec(v).ok_or(bad)?,
            _ => {}
        }
    }
    Ok(())
}

/// Go's `readGNUSparseMap0x1`: the map of formats 0.0 and 0.1 (`GNU.sparse.numblocks` and
/// `GNU.sparse.map`, to which the reader joins 0.0's `offset`/`numbytes` records).
fn sparse_map_0x1(pax: &[(String, Vec<u8>)]) -> Result<Vec<(i64, i64)>, Error> {
    let n = pax_value(pax, "GNU.sparse.numblocks")
        .and_then(parse_dec)
        .filter(|n| *n >= 0 && n.checked_mul(2).is_some())
        .ok_or(Error::InvalidHeader)?;
    let map = pax_value(pax, "GNU.sparse.map").unwrap_or_default();
    let fields: Vec<&[u8]> = if map.is_empty() {
        Vec::new()
    } else {
        map.split(|&c| c == b',').collect()
    };
    if fields.len() as i64 != 2 * n {
        return Err(Error::InvalidHeader);
    }
    fields
        .chunks(2)
        .map(|p| match (parse_dec(p[0]), parse_dec(p[1])) {
            (Some(o), Some(l)) => Ok((o, l)),
            _ => Err(Error::InvalidHeader),
        })
        .collect()
}

/// Go's `validateSparseEntries`: non-negative, in order, not overlapping, within `size`.
fn valid_sparse_map(map: &[(i64, i64)], size: i64) -> bool {
    if size < 0 {
        return false;
    }
    let mut prev_end = 0i64;
    for &(o, l) in map {
        if o < 0 || l < 0 || o > i64::MAX - l || o + l > size || prev_end > o {
            return false;
        }
        prev_end = o + l;
    }
    true
}

/// Go's `readGNUSparsePAXHeaders` detection.
fn pax_value<'a>(pax: &'a [(String, Vec<u8>)], key: &str) -> Option<&'a [u8]> {
    pax.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

/// The GNU sparse format (`0.0`, `0.1`, `1.0`) the PAX records of a member declare, if any
/// (Go's `archive/tar` expands these; unknown versions are plain files).
fn pax_sparse_format(pax: &[(String, Vec<u8>)]) -> Option<&'static str> {
    let get = |k: &str| pax_value(pax, k).unwrap_or_default();
    match (get("GNU.sparse.major"), get("GNU.sparse.minor")) {
        (b"0", b"0") => Some("0.0"),
        (b"0", b"1") => Some("0.1"),
        (b"1", b"0") => Some("1.0"),
        (a, b) if !a.is_empty() || !b.is_empty() => None,
        // 0.0 (numblocks, offset/numbytes: turned into a map when parsed) and 0.1 (map)
        // may come without a version.
        _ if !get("GNU.sparse.map").is_empty() => Some(if get("GNU.sparse.numblocks").is_empty() {
            "0.1"
        } else {
            "0.0"
        }),
        _ => None,
    }
}
