//! A small hand-rolled tar writer for tests (full control over every byte).
#![allow(dead_code)]

#[allow(unused_imports)] // each test binary uses a subset
pub use storage_testsupport::{in_ci as ci, prng_bytes};

/// Header format of a generated block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fmt {
    Ustar,
    Gnu,
    V7,
}

/// Fields of a generated header block.
#[derive(Clone, Debug)]
pub struct H {
    pub name: Vec<u8>,
    pub prefix: Vec<u8>,
    pub link: Vec<u8>,
    pub typeflag: u8,
    pub mode: u64,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub devmajor: u64,
    pub devminor: u64,
    pub fmt: Fmt,
}

impl H {
    pub fn new(name: &[u8], typeflag: u8, size: u64) -> H {
        H {
            name: name.to_vec(),
            prefix: Vec::new(),
            link: Vec::new(),
            typeflag,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime: 1_700_000_000,
            uname: b"root".to_vec(),
            gname: b"root".to_vec(),
            devmajor: 0,
            devminor: 0,
            fmt: Fmt::Ustar,
        }
    }
    pub fn fmt(mut self, f: Fmt) -> H {
        self.fmt = f;
        self
    }
    pub fn link(mut self, l: &[u8]) -> H {
        self.link = l.to_vec();
        self
    }
}

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    let s = format!("{v:0w$o}");
    if s.len() > w {
        // base-256
        field.fill(0);
        let bytes = v.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
        field[0] |= 0x80;
        return;
    }
    field[..w].copy_from_slice(s.as_bytes());
    field[w] = 0;
}

fn put(field: &mut [u8], v: &[u8]) {
    let n = v.len().min(field.len());
    field[..n].copy_from_slice(&v[..n]);
}

pub fn set_checksum(b: &mut [u8; 512]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u64 = b.iter().map(|&c| u64::from(c)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
}

pub fn block(h: &H) -> [u8; 512] {
    let mut b = [0u8; 512];
    put(&mut b[0..100], &h.name);
    octal(&mut b[100..108], h.mode);
    octal(&mut b[108..116], h.uid);
    octal(&mut b[116..124], h.gid);
    octal(&mut b[124..136], h.size);
    octal(&mut b[136..148], h.mtime);
    b[156] = h.typeflag;
    put(&mut b[157..257], &h.link);
    match h.fmt {
        Fmt::Ustar => {
            b[257..263].copy_from_slice(b"ustar\0");
            b[263..265].copy_from_slice(b"00");
        }
        Fmt::Gnu => {
            b[257..263].copy_from_slice(b"ustar ");
            b[263..265].copy_from_slice(b" \0");
        }
        Fmt::V7 => {}
    }
    if h.fmt != Fmt::V7 {
        put(&mut b[265..297], &h.uname);
        put(&mut b[297..329], &h.gname);
        octal(&mut b[329..337], h.devmajor);
        octal(&mut b[337..345], h.devminor);
    }
    if h.fmt == Fmt::Ustar {
        put(&mut b[345..500], &h.prefix);
    }
    set_checksum(&mut b);
    b
}

pub fn pax_record(k: &[u8], v: &[u8]) -> Vec<u8> {
    let body = k.len() + v.len() + 3;
    let mut n = body + 1;
    loop {
        let total = body + n.to_string().len();
        if total == n {
            break;
        }
        n = total;
    }
    let mut r = format!("{n} ").into_bytes();
    r.extend_from_slice(k);
    r.push(b'=');
    r.extend_from_slice(v);
    r.push(b'\n');
    r
}

#[derive(Default)]
pub struct TarBuilder {
    pub out: Vec<u8>,
}

impl TarBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    fn pad(&mut self) {
        let p = (512 - self.out.len() % 512) % 512;
        self.out.resize(self.out.len() + p, 0);
    }
    /// A header + content + padding.
    pub fn entry(&mut self, h: &H, content: &[u8]) -> &mut Self {
        self.out.extend_from_slice(&block(h));
        self.out.extend_from_slice(content);
        self.pad();
        self
    }
    pub fn file(&mut self, name: &[u8], content: &[u8]) -> &mut Self {
        self.entry(&H::new(name, b'0', content.len() as u64), content)
    }
    pub fn dir(&mut self, name: &[u8]) -> &mut Self {
        let mut h = H::new(name, b'5', 0);
        h.mode = 0o755;
        self.entry(&h, b"")
    }
    /// A PAX 'x' (or 'g') header with records, followed by `h` + content.
    pub fn pax(
        &mut self,
        kind: u8,
        recs: &[(&[u8], &[u8])],
        h: Option<&H>,
        content: &[u8],
    ) -> &mut Self {
        let data: Vec<u8> = recs.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let mut ph = H::new(b"PaxHeaders.0/x", kind, data.len() as u64);
        ph.mode = 0;
        ph.mtime = 0;
        ph.uname.clear();
        ph.gname.clear();
        self.entry(&ph, &data);
        if let Some(h) = h {
            self.entry(h, content);
        }
        self
    }
    /// GNU 'L'/'K' long name then `h` + content.
    pub fn gnu_long(&mut self, kind: u8, long: &[u8], h: &H, content: &[u8]) -> &mut Self {
        let mut data = long.to_vec();
        data.push(0);
        let lh = H::new(b"././@LongLink", kind, data.len() as u64).fmt(Fmt::Gnu);
        self.entry(&lh, &data);
        self.entry(h, content)
    }
    pub fn end(&mut self) -> &mut Self {
        self.out.extend_from_slice(&[0u8; 1024]);
        self
    }
    pub fn record_pad(&mut self, rec: usize) -> &mut Self {
        let p = (rec - self.out.len() % rec) % rec;
        self.out.resize(self.out.len() + p, 0);
        self
    }
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.out.clone()
    }
}
