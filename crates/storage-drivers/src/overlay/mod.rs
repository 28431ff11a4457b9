//! The overlay driver (`overlay`, alias `overlay2`), on-disk compatible with Go's.
//!
//! Layout under the home (`<graphroot>/overlay`):
//!
//! * `l/<SHORT>` → `../<id>/diff`: 26-character base32 short names keeping mount data short;
//! * `<id>/diff` (the layer's own content, the overlay upper dir), `<id>/link` (the short
//!   name, no newline), `<id>/lower` (`l/<parent>:l/<grandparent>…`, nearest first, no
//!   newline; only for layers with a parent), `<id>/empty` (base layers' dummy lower),
//!   `<id>/work`, `<id>/merged` (kept after unmount like Go 1.60);
//! * `.has-mount-program` (`"true"`/`"false"`): whether this store needs fuse-overlayfs.
//!
//! Feature probes are cached in the run home under Go's file names (see `probe`). The
//! home is bind-mounted on itself as a private mount while the driver is open (unless
//! `overlay.skip_mount_home`); [`Driver::cleanup`] releases it.
//!
//! Mounts use the classic `mount(2)` data string when it fits a page (exactly what Go
//! passes), else the new mount API with one `lowerdir+` per lower; on kernels without it,
//! the lowers are passed relative to the home, then as `/proc/self/fd` numbers (each on a
//! helper thread with its own working directory). Up to 500 lowers.
//!
//! Diff, Changes and DiffSize are read natively from the upper dir when exact (no mount
//! program, the native-diff probe passed, and the parent asked for is the real parent);
//! otherwise they fall back to Go's naive mount-and-compare path. Whiteouts are stored as
//! 0/0 character devices and opaque directories as `trusted.overlay.opaque=y`
//! (`user.overlay.` when rootless); with `overlay.mount_program` (fuse-overlayfs) the
//! AUFS `.wh.` files are stored verbatim.
//!
//! Lost `l/` links and `link` files are repaired like Go's `recreateSymlinks`. Read-only
//! layers go to `<imagestore>/overlay` when a split image store is configured;
//! `overlay.imagestore=` stores are searched read-only and their layers mount under the
//! run home.
//!
//! Mount-time ID shifting ([`Driver::supports_shifting`]): as root, mounts given ID maps
//! use idmapped views of the lowers (probe `idmapped-lower-dir`), like Go 1.60;
//! `_CONTAINERS_OVERLAY_DISABLE_IDMAP=yes` turns it off. With a mount program, contiguous
//! maps are passed to it as `uidmapping=`/`gidmapping=`.
//!
//! Limits: no additional layer stores, no composefs, no SELinux labels, no staged
//! (partial) pulls; XFS project quotas only where the kernel provides them (not on this
//! project's test host).
//!
//! Rootless (Go's `IsRootless()`, see `storage_userns`): native overlay is probed only with
//! effective UID 0, i.e. inside the user namespace, with `userxattr`; opaque directories use
//! `user.overlay.opaque`; no idmapped lowers; without native overlay, `fuse-overlayfs` in
//! `$PATH` becomes the mount program.

#[allow(unsafe_code)]
mod idmapped;
#[allow(unsafe_code)]
mod mount;
mod native;
mod probe;
#[allow(unsafe_code)]
mod quota;

pub(crate) use mount::{make_private, unmount};

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use storage_types::{Error, ErrorKind, IdMap, Result};

use crate::guard::check_layer_id;
use crate::vfs::{parse_bool, parse_key_value, remove_all, root_pair};
use crate::{ApplyDiffOpts, Change, CreateOpts, Driver, DriverOptions, MountOpts};

/// Go's `graphdriver.ErrNotSupported`.
pub(crate) const ERR_NOT_SUPPORTED: &str = "driver not supported";
/// Go's `graphdriver.ErrIncompatibleFS`.
pub(crate) const ERR_INCOMPATIBLE_FS: &str =
    "backing file system is unsupported for this graph driver";
/// Go's `graphdriver.ErrPrerequisites`.
pub(crate) const ERR_PREREQUISITES: &str =
    "prerequisites for driver not satisfied (wrong filesystem?)";

const LINK_DIR: &str = "l";
/// Go 1.60's depth limit.
const MAX_DEPTH: usize = 500;
const OVERRIDE_XATTR: &str = "user.containers.override_stat";

/// Go's `graphdriver.FsNames` for the backing file system line.
pub(crate) fn fs_name(magic: i64) -> &'static str {
    match magic {
        0x6175_6673 => "aufs",
        0x9123_683E => "btrfs",
        0x28CD_3D45 => "cramfs",
        0xF15F => "ecryptfs",
        0xEF53 => "extfs",
        0xF2F5_2010 => "f2fs",
        0x6573_5546 => "fuse",
        0x4750_4653 => "gpfs",
        0x0000_72B6 => "jffs2",
        0x3153_464A => "jfs",
        0x6969 => "nfs",
        0x794C_7630 => "overlayfs",
        0x8584_58F6 => "ramfs",
        0x5265_4973 => "reiserfs",
        0x0000_517B => "smb",
        0x7371_7368 => "squashfs",
        0x0102_1994 => "tmpfs",
        0xA501_FCF5 => "vxfs",
        0x5846_5342 => "xfs",
        0x2FC1_2FC1 => "zfs",
        _ => "<unknown>",
    }
}

/// Parsed `overlay.*` options.
#[derive(Debug, Default, Clone)]
struct Config {
    mount_options: Vec<String>,
    quota_size: Option<u64>,
    quota_inodes: Option<u64>,
    image_stores: Vec<PathBuf>,
    mount_program: Option<PathBuf>,
    skip_mount_home: bool,
    ignore_chown_errors: bool,
    force_mask: Option<u32>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::msg(ErrorKind::InvalidInput, msg)
}

/// An `l/` link must point at `../<id>/diff` (what Go and we create): a link to an
/// absolute path or elsewhere would put foreign directories into mounts and diffs.
fn checked_link(link: PathBuf) -> Result<PathBuf> {
    let Ok(target) = std::fs::read_link(&link) else {
        return Ok(link);
    };
    let mut parts = target.iter();
    let ok = parts.next() == Some(std::ffi::OsStr::new(".."))
        && parts
            .next()
            .and_then(|id| id.to_str())
            .is_some_and(|id| check_layer_id(id).is_ok())
        && parts.next() == Some(std::ffi::OsStr::new("diff"))
        && parts.next().is_none();
    if ok {
        Ok(link)
    } else {
        Err(invalid(format!(
            "invalid lower link {}: it points to {}, not ../<layer>/diff",
            link.display(),
            target.display()
        )))
    }
}

/// Go's `units.RAMInBytes`: a number with an optional `k/m/g/t/p` suffix (optionally
/// followed by `i`/`b`/`ib`), 1024-based.
pub(crate) fn ram_in_bytes(s: &str) -> Result<u64> {
    let bad = || invalid(format!("invalid size: '{s}'"));
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .or_else(|| unit.strip_suffix('i'))
        .unwrap_or(&unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    let v = num * mult;
    if !(v.is_finite() && v >= 0.0) {
        return Err(bad());
    }
    Ok(v as u64)
}

fn parse_config(options: &[String]) -> Result<Config> {
    let mut c = Config::default();
    for option in options {
        let (key, val) = parse_key_value(option)?;
        let lower = key.to_lowercase();
        let trimmed = lower
            .strip_prefix("overlay2.")
            .or_else(|| lower.strip_prefix("overlay."))
            .or_else(|| lower.strip_prefix('.'))
            .unwrap_or(&lower);
        match trimmed {
            "override_kernel_check" => {}
            "mountopt" => {
                c.mount_options = val
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "size" => c.quota_size = Some(ram_in_bytes(&val)?),
            "inodes" => {
                c.quota_inodes = Some(val.parse().map_err(|_| {
                    invalid(format!(
                        "strconv.ParseUint: parsing {val:?}: invalid syntax"
                    ))
                })?)
            }
            "imagestore" | "additionalimagestore" => {
                for store in val.split(',').filter(|s| !s.is_empty()) {
                    let p = PathBuf::from(store);
                    if !p.is_absolute() {
                        return Err(invalid(format!(
                            "overlay: image path {store:?} is not absolute.  Can not be relative"
                        )));
                    }
                    let md = std::fs::metadata(&p).map_err(|e| {
                        invalid(format!(
                            "overlay: can't stat imageStore dir {store}: {}",
                            Error::io("stat", &p, e).message()
                        ))
                    })?;
                    if !md.is_dir() {
                        return Err(invalid(format!(
                            "overlay: image path {store:?} must be a directory"
                        )));
                    }
                    c.image_stores.push(p);
                }
            }
            "additionallayerstore" => {
                return Err(Error::msg(
                    ErrorKind::NotSupported,
                    "overlay: additionallayerstore is not supported by this implementation",
                ));
            }
            "use_composefs" => {
                if parse_bool(&val)? {
                    return Err(Error::msg(
                        ErrorKind::NotSupported,
                        "overlay: use_composefs is not supported by this implementation",
                    ));
                }
            }
            "mount_program" => {
                if !val.is_empty() {
                    let p = PathBuf::from(&val);
                    std::fs::metadata(&p).map_err(|e| {
                        invalid(format!(
                            "overlay: can't stat program {val:?}: {}",
                            Error::io("stat", &p, e).message()
                        ))
                    })?;
                    c.mount_program = Some(p);
                }
            }
            "skip_mount_home" => c.skip_mount_home = parse_bool(&val)?,
            "ignore_chown_errors" => c.ignore_chown_errors = parse_bool(&val)?,
            "force_mask" => {
                c.force_mask = Some(match val.as_str() {
                    "shared" => 0o755,
                    "private" => 0o700,
                    v => u32::from_str_radix(v, 8).map_err(|_| {
                        invalid(format!("strconv.ParseUint: parsing {v:?}: invalid syntax"))
                    })?,
                });
            }
            _ => return Err(invalid(format!("overlay: unknown option {key}"))),
        }
    }
    Ok(c)
}

/// Reference count of one mount point (Go's `RefCounter` entry).
#[derive(Debug, Default)]
struct RefEntry {
    checked: bool,
    count: i64,
}

/// The overlay driver.
pub(crate) struct Overlay {
    home: PathBuf,
    run_home: PathBuf,
    /// `<imagestore>/overlay`: where read-only layers go when a split image store is set.
    image_store: Option<PathBuf>,
    cfg: Config,
    mount_program: Option<PathBuf>,
    backing_fs: &'static str,
    native_diff: bool,
    metacopy: bool,
    volatile: bool,
    rootless: bool,
    /// Whether `init` bind-mounted the home privately (released by `cleanup`).
    home_private: bool,
    quota: Option<quota::Control>,
    refs: Mutex<HashMap<PathBuf, RefEntry>>,
    /// Cached `idmapped-lower-dir` probe.
    idmapped: std::sync::OnceLock<bool>,
    /// Serializes mounts and unmounts (Go's per-layer locker), so that a second `get`
    /// never returns a path whose mount is still being made.
    mount_lock: Mutex<()>,
}

fn mkdir_mode(path: &Path, mode: u32) -> Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("chmod", path, e)),
        Err(e) => Err(Error::io("mkdir", path, e)),
    }
}

fn mkdir_all(path: &Path, mode: u32) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        mkdir_all(parent, 0o755.min(mode | 0o755))?;
    }
    match mkdir_mode(path, mode) {
        Err(_) if path.is_dir() => Ok(()),
        r => r,
    }
}

fn chown(path: &Path, ids: (u32, u32)) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(ids.0), Some(ids.1))
        .map_err(|e| Error::io("lchown", path, e))
}

fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

/// Go's 26-character short name: base32 (RFC 4648, upper case) of random bytes.
fn short_id() -> Result<String> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bytes = [0u8; 17];
    let mut f = std::fs::File::open("/dev/urandom")
        .map_err(|e| Error::io("open", Path::new("/dev/urandom"), e))?;
    f.read_exact(&mut bytes)
        .map_err(|e| Error::io("read", Path::new("/dev/urandom"), e))?;
    let mut out = String::with_capacity(28);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    out.truncate(26);
    Ok(out)
}

/// Whether `home` holds anything only a mount program store would (Go's scan):
/// a `.wh.*` name or a `user.fuseoverlayfs.*`/`user.containers.*` xattr on a directory.
fn has_mount_program_traces(dir: &Path, depth: usize) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with(".wh.") {
            return true;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            let p = e.path();
            let mut names = vec![0u8; 4096];
            if let Ok(n) = rustix::fs::llistxattr(&p, &mut names[..])
                && names[..n].split(|b| *b == 0).any(|x| {
                    x.starts_with(b"user.fuseoverlayfs.") || x.starts_with(b"user.containers.")
                })
            {
                return true;
            }
            if depth < 64 && has_mount_program_traces(&p, depth + 1) {
                return true;
            }
        }
    }
    false
}

fn native_error(text: String) -> Error {
    Error::msg(ErrorKind::NotSupported, text)
}

impl Overlay {
    /// Go's overlay `Init`. A home this call created is removed again when it fails, so
    /// a failed probe leaves no prior state for driver auto-selection.
    pub(crate) fn open(opts: &DriverOptions) -> Result<Overlay> {
        let fresh = !opts.home.exists();
        let r = Self::init(opts);
        if r.is_err() && fresh {
            let _ = remove_all(&opts.home);
        }
        r
    }

    fn init(opts: &DriverOptions) -> Result<Overlay> {
        let cfg = parse_config(&opts.options)?;
        let home = opts.home.clone();
        let run_home = opts.run_home.clone();
        // Go: `user.overlay.*` xattrs and `userxattr` whenever `IsRootless()`; native overlay
        // and the private home mount need effective UID 0 (true inside the user namespace).
        let rootless = storage_userns::is_rootless();
        let euid_root = rustix::process::geteuid().is_root();
        let parent = home.parent().unwrap_or(Path::new("/"));
        if !parent.exists() {
            mkdir_all(parent, 0o700)?;
        }
        let backing_fs = fs_name(mount::fs_magic(parent).unwrap_or(0));
        if !home.exists() {
            mkdir_all(&home, 0o700)?;
        }
        let l = home.join(LINK_DIR);
        if !l.exists() {
            mkdir_mode(&l, 0o755)?;
        }
        mkdir_all(&run_home, 0o700)?;

        if !supports_d_type(&home) {
            return Err(native_error(format!(
                "overlay: the backing {backing_fs} filesystem is formatted without d_type support, which leads to incorrect behavior. Reformat the filesystem with ftype=1 to enable d_type support. Running without d_type is not supported.: {ERR_NOT_SUPPORTED}"
            )));
        }
        let xattr_prefix = if rootless {
            "user.overlay."
        } else {
            "trusted.overlay."
        };
        let mut mount_program = cfg.mount_program.clone();
        let flag = home.join(".has-mount-program");
        let mut probe_opts = cfg.mount_options.clone();
        if rootless {
            probe_opts.push("userxattr".to_owned());
        }
        if mount_program.is_none() {
            let native = if !euid_root {
                Err(format!(
                    "'overlay' is not supported over {backing_fs} without root: {ERR_NOT_SUPPORTED}"
                ))
            } else {
                let needs_program = match std::fs::read_to_string(&flag).as_deref() {
                    Ok("true") => true,
                    Ok(_) => false,
                    Err(_) => {
                        let traces = has_mount_program_traces(&home, 0);
                        write_flag(&flag, traces)?;
                        traces
                    }
                };
                if needs_program {
                    Err(format!(
                        "overlay: storage already configured with a mount-program: {ERR_NOT_SUPPORTED}"
                    ))
                } else {
                    probe::cached(&run_home, "overlay", || {
                        probe::overlay(&home, backing_fs, &probe_opts)
                    })
                }
            };
            if let Err(text) = native {
                match find_in_path("fuse-overlayfs") {
                    Some(p) => mount_program = Some(p),
                    None => return Err(native_error(text)),
                }
            }
        }
        let (native_diff, metacopy, volatile) = if mount_program.is_some() {
            write_flag(&flag, true)?;
            (false, false, true)
        } else {
            if matches!(backing_fs, "aufs" | "overlayfs" | "ecryptfs") {
                return Err(native_error(format!(
                    "'overlay' is not supported over {backing_fs}, a mount_program is required: {ERR_INCOMPATIBLE_FS}"
                )));
            }
            if !flag.exists() {
                write_flag(&flag, false)?;
            }
            let key = cfg.mount_options.join(",");
            let metacopy = probe::cached(&run_home, &format!("metacopy({key})"), || {
                probe::metacopy(&home, &probe_opts, xattr_prefix)
            })
            .is_ok();
            let native_diff = probe::cached(&run_home, &format!("native-diff({key})"), || {
                probe::native_diff(&home, &probe_opts, xattr_prefix)
            })
            .is_ok();
            let volatile = probe::cached(&run_home, "volatile", || {
                probe::volatile(&home, &probe_opts)
            })
            .is_ok();
            (native_diff, metacopy, volatile)
        };

        let wants_quota = cfg.quota_size.is_some() || cfg.quota_inodes.is_some();
        let quota = if backing_fs == "xfs" {
            match quota::Control::new(&home) {
                Ok(c) => Some(c),
                Err(e) if wants_quota => {
                    return Err(invalid(format!(
                        "storage options overlay.size and overlay.inodes not supported. Filesystem does not support Project Quota: {}",
                        e.message()
                    )));
                }
                Err(_) => None,
            }
        } else {
            None
        };
        if wants_quota && quota.is_none() {
            return Err(invalid(format!(
                "storage option overlay.size and overlay.inodes only supported for backingFS XFS. Found {backing_fs}"
            )));
        }

        let home_private = !cfg.skip_mount_home && euid_root;
        if home_private {
            mount::make_private(&home).map_err(|e| Error::io("mount", &home, e))?;
        }
        let image_store = opts.image_store.as_ref().map(|p| p.join("overlay"));
        if let Some(is) = &image_store {
            mkdir_all(is, 0o700)?;
            let l = is.join(LINK_DIR);
            if !l.exists() {
                mkdir_mode(&l, 0o755)?;
            }
        }
        Ok(Overlay {
            home,
            run_home,
            image_store,
            cfg,
            mount_program,
            backing_fs,
            native_diff,
            metacopy,
            volatile,
            rootless,
            home_private,
            quota,
            refs: Mutex::new(HashMap::new()),
            idmapped: std::sync::OnceLock::new(),
            mount_lock: Mutex::new(()),
        })
    }

    fn opaque_xattr(&self) -> &'static str {
        if self.rootless {
            "user.overlay.opaque"
        } else {
            "trusted.overlay.opaque"
        }
    }

    /// Whether idmapped lowers work here (root only; probe cached in the run home).
    fn idmapped_lowers(&self) -> bool {
        *self.idmapped.get_or_init(|| {
            !self.rootless
                && probe::cached(&self.run_home, "idmapped-lower-dir", || {
                    probe::idmapped(&self.home)
                })
                .is_ok()
        })
    }

    /// Replaces `lowers` by paths inside idmapped views of their mapping roots, mounted
    /// at `<dir>/mapped/<n>`; returns the view mount points (to detach after mounting).
    fn map_lowers(
        &self,
        dir: &Path,
        lowers: &mut [PathBuf],
        uid_map: &[IdMap],
        gid_map: &[IdMap],
    ) -> Result<Vec<PathBuf>> {
        let ns = idmapped::user_namespace(uid_map, gid_map)
            .map_err(|e| Error::io("create user namespace", dir, e))?;
        let mapped = dir.join("mapped");
        if !mapped.exists() {
            mkdir_mode(&mapped, 0o700)?;
        }
        let mut roots: Vec<(PathBuf, PathBuf)> = Vec::new();
        for lower in lowers.iter_mut() {
            let (root, rel) = idmapped::mapping_root(lower);
            let view = match roots.iter().find(|(r, _)| *r == root) {
                Some((_, v)) => v.clone(),
                None => {
                    let v = mapped.join(roots.len().to_string());
                    if !v.exists() {
                        mkdir_mode(&v, 0o700)?;
                    }
                    if let Err(e) = idmapped::idmapped_mount(&root, &v, &ns) {
                        release_views(&roots.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
                        return Err(Error::io("create mapped mount for", &root, e));
                    }
                    roots.push((root, v.clone()));
                    v
                }
            };
            *lower = view.join(rel);
        }
        Ok(roots.into_iter().map(|(_, v)| v).collect())
    }

    fn use_naive_diff(&self) -> bool {
        self.mount_program.is_some() || !self.native_diff
    }

    /// Go's `dir2`: the home first, then the split image store, then the additional
    /// (read-only) image stores; the flag tells whether it is in an additional store.
    fn dir(&self, id: &str) -> (PathBuf, bool) {
        let own = self.home.join(id);
        if own.is_dir() {
            return (own, false);
        }
        if let Some(is) = &self.image_store {
            let candidate = is.join(id);
            if candidate.is_dir() {
                return (candidate, false);
            }
        }
        for store in &self.cfg.image_stores {
            let candidate = store.join("overlay").join(id);
            if candidate.is_dir() {
                return (candidate, true);
            }
        }
        (own, false)
    }

    /// The `lower` file's elements (empty for base layers).
    ///
    /// Go only ever writes `l/<link>` elements; anything else (`l/../../x`, an absolute
    /// path) would make a mount or a diff reach outside the driver's home, so it is an
    /// error here.
    fn lower_elems(&self, dir: &Path) -> Result<Vec<String>> {
        let path = dir.join("lower");
        match std::fs::read_to_string(&path) {
            Ok(s) => s
                .split(':')
                .filter(|e| !e.is_empty())
                .map(|e| {
                    let link = e.strip_prefix(LINK_DIR).and_then(|r| r.strip_prefix('/'));
                    match link {
                        Some(l) if check_layer_id(l).is_ok() => Ok(e.to_owned()),
                        _ => Err(invalid(format!(
                            "invalid lower element {e:?} in {}",
                            path.display()
                        ))),
                    }
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("open", &dir.join("lower"), e)),
        }
    }

    /// Resolves one `lower` element to the path used in mounts (the `l/` symlink).
    fn lower_path(&self, elem: &str) -> Result<PathBuf> {
        let own = self.home.join(elem);
        if std::fs::symlink_metadata(&own).is_ok() {
            return checked_link(own);
        }
        if let Some(is) = &self.image_store {
            let p = is.join(elem);
            if std::fs::symlink_metadata(&p).is_ok() {
                return checked_link(p);
            }
        }
        for store in &self.cfg.image_stores {
            let p = store.join("overlay").join(elem);
            if std::fs::symlink_metadata(&p).is_ok() {
                return checked_link(p);
            }
        }
        self.recreate_symlinks()?;
        Ok(own)
    }

    /// The lower element's `diff` directory, resolved (`<home>/<id>/diff`).
    fn lower_diff(&self, elem: &str) -> Result<PathBuf> {
        let link = self.lower_path(elem)?;
        let base = link.parent().and_then(Path::parent).unwrap_or(&self.home);
        match std::fs::read_link(&link) {
            Ok(target) => {
                let t = target.to_string_lossy();
                match t.strip_prefix("../") {
                    Some(rest) => Ok(base.join(rest)),
                    None => Ok(link.parent().unwrap_or(&self.home).join(target)),
                }
            }
            Err(e) => Err(Error::io("readlink", &link, e)),
        }
    }

    /// Lower diff dirs of `id`, nearest first.
    fn lower_diffs(&self, id: &str) -> Result<Vec<PathBuf>> {
        let (dir, _) = self.dir(id);
        self.lower_elems(&dir)?
            .iter()
            .map(|e| self.lower_diff(e))
            .collect()
    }

    /// Go's `recreateSymlinks`: recreate missing `l/` links from the `link` files,
    /// delete links whose target is not `../<id>/diff`, and rewrite `link` files that
    /// do not name their link; at most 10 passes while something changed.
    fn recreate_symlinks(&self) -> Result<()> {
        let l = self.home.join(LINK_DIR);
        if !l.exists() {
            mkdir_mode(&l, 0o755)?;
        }
        for _ in 0..10 {
            let mut progress = false;
            let rd = std::fs::read_dir(&self.home).map_err(|e| Error::io("open", &self.home, e))?;
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if matches!(name.as_str(), LINK_DIR | "staging" | "tempdirs")
                    || !e.file_type().is_ok_and(|t| t.is_dir())
                {
                    continue;
                }
                let Ok(link) = std::fs::read_to_string(e.path().join("link")) else {
                    continue;
                };
                let link = link.trim_matches('\n');
                if link.is_empty() || link.contains('/') {
                    continue;
                }
                let lp = l.join(link);
                if std::fs::symlink_metadata(&lp).is_err() {
                    std::os::unix::fs::symlink(format!("../{name}/diff"), &lp)
                        .map_err(|e| Error::io("symlink", &lp, e))?;
                    progress = true;
                }
            }
            let rd = std::fs::read_dir(&l).map_err(|e| Error::io("open", &l, e))?;
            for e in rd.flatten() {
                let lp = e.path();
                let link_name = e.file_name().to_string_lossy().into_owned();
                let target = std::fs::read_link(&lp)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let parts: Vec<&str> = target.split('/').collect();
                if parts.len() != 3
                    || parts[0] != ".."
                    || parts[2] != "diff"
                    || matches!(parts[1], "" | "." | "..")
                {
                    std::fs::remove_file(&lp).map_err(|e| Error::io("remove", &lp, e))?;
                    progress = true;
                    continue;
                }
                let link_file = self.home.join(parts[1]).join("link");
                if !link_file.parent().is_some_and(Path::is_dir) {
                    continue;
                }
                if std::fs::read_to_string(&link_file).ok().as_deref() != Some(&link_name) {
                    write_file(&link_file, link_name.as_bytes(), 0o644)?;
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        Ok(())
    }

    fn create_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
        read_write: bool,
    ) -> Result<()> {
        check_layer_id(id)?;
        let mut quota_req = None;
        if !opts.storage_opt.is_empty() {
            if !read_write {
                if opts.storage_opt.contains_key("size") {
                    return Err(invalid(
                        "--storage-opt size is only supported for ReadWrite Layers",
                    ));
                }
                if opts.storage_opt.contains_key("inodes") {
                    return Err(invalid(
                        "--storage-opt inodes is only supported for ReadWrite Layers",
                    ));
                }
            }
            if self.quota.is_none() {
                return Err(invalid(
                    "--storage-opt is supported only for overlay over xfs with 'pquota' mount option",
                ));
            }
            let mut q = quota::Quota::default();
            for (k, v) in &opts.storage_opt {
                match k.to_lowercase().as_str() {
                    "size" => q.size = ram_in_bytes(v)?,
                    "inodes" => {
                        q.inodes = v.parse().map_err(|_| {
                            invalid(format!("strconv.ParseUint: parsing {v:?}: invalid syntax"))
                        })?
                    }
                    _ => return Err(invalid(format!("Unknown option {k}"))),
                }
            }
            quota_req = Some(q);
        } else if read_write
            && self.quota.is_some()
            && (self.cfg.quota_size.is_some() || self.cfg.quota_inodes.is_some())
        {
            quota_req = Some(quota::Quota {
                size: self.cfg.quota_size.unwrap_or(0),
                inodes: self.cfg.quota_inodes.unwrap_or(0),
            });
        }
        if read_write && self.cfg.force_mask.is_some() && self.mount_program.is_none() {
            return Err(invalid(
                "overlay: force_mask option for writeable layers is only supported with a mount_program",
            ));
        }

        // 1.60: image (read-only) layers go to the split image store when there is one.
        let homedir = match (&self.image_store, read_write) {
            (Some(is), false) => is.clone(),
            _ => self.home.clone(),
        };
        let dir = homedir.join(id);
        let root_ids = root_pair(&opts.uid_map, &opts.gid_map);
        let l = homedir.join(LINK_DIR);
        if !l.exists() {
            mkdir_mode(&l, 0o755)?;
        }
        if dir.exists() {
            self.remove(id)?;
        }
        // The parent's diff decides the new diff's mode and owner.
        let (mut st_ids, mut st_mode) = (root_ids, 0o555u32);
        let mut parent_lower = None;
        if let Some(p) = parent {
            let (pdir, _) = self.dir(p);
            let pdiff = pdir.join("diff");
            let md = std::fs::metadata(&pdiff).map_err(|e| {
                let err = Error::io("stat", &pdiff, e);
                Error::msg(ErrorKind::LayerUnknown, err.message())
            })?;
            st_ids = (md.uid(), md.gid());
            st_mode = md.mode() & 0o7777;
            if let Some(v) = crate::idmap::get_xattr(&pdiff, std::ffi::OsStr::new(OVERRIDE_XATTR))
                && let Some((u, g, m)) = parse_override(&v)
            {
                st_ids = (u, g);
                st_mode = m;
            }
            parent_lower = Some(self.lower_for_child(p)?);
        }
        mkdir_mode(&dir, 0o700).map_err(|e| {
            if std::fs::metadata(&dir).is_ok() {
                Error::msg(ErrorKind::DuplicateId, e.message())
            } else {
                e
            }
        })?;
        let result = (|| -> Result<()> {
            chown(&dir, root_ids)?;
            if let (Some(q), Some(ctl)) = (&quota_req, &self.quota) {
                ctl.set_quota(&dir, q)?;
            }
            let diff = dir.join("diff");
            let mode = self.cfg.force_mask.unwrap_or(st_mode);
            mkdir_mode(&diff, mode)?;
            chown(&diff, st_ids)?;
            // chown may clear setuid/setgid bits: restore the mode.
            std::fs::set_permissions(&diff, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("chmod", &diff, e))?;
            if self.cfg.force_mask.is_some() {
                let v = format!("{}:{}:{:04o}:dir", st_ids.0, st_ids.1, st_mode);
                rustix::fs::lsetxattr(
                    &diff,
                    OVERRIDE_XATTR,
                    v.as_bytes(),
                    rustix::fs::XattrFlags::empty(),
                )
                .map_err(|e| Error::io("lsetxattr", &diff, e.into()))?;
            }
            let short = short_id()?;
            let lp = homedir.join(LINK_DIR).join(&short);
            std::os::unix::fs::symlink(format!("../{id}/diff"), &lp)
                .map_err(|e| Error::io("symlink", &lp, e))?;
            write_file(&dir.join("link"), short.as_bytes(), 0o644)?;
            for sub in ["work", "merged"] {
                let p = dir.join(sub);
                mkdir_mode(&p, 0o700)?;
                chown(&p, root_ids)?;
            }
            match &parent_lower {
                None => {
                    let p = dir.join("empty");
                    mkdir_mode(&p, 0o700)?;
                    chown(&p, root_ids)?;
                }
                Some(lower) if !lower.is_empty() => {
                    write_file(&dir.join("lower"), lower.as_bytes(), 0o666 & !umask())?;
                }
                Some(_) => {}
            }
            Ok(())
        })();
        if result.is_err() {
            if let Ok(link) = std::fs::read_to_string(dir.join("link")) {
                let _ = std::fs::remove_file(homedir.join(LINK_DIR).join(link.trim()));
            }
            let _ = remove_all(&dir);
        }
        result
    }

    /// Go's `getLower(parent)`: `l/<parent link>[:<parent lower>]`.
    fn lower_for_child(&self, parent: &str) -> Result<String> {
        let (pdir, _) = self.dir(parent);
        if !pdir.is_dir() {
            return Err(Error::msg(
                ErrorKind::LayerUnknown,
                format!("stat {}: no such file or directory", pdir.display()),
            ));
        }
        let link_path = pdir.join("link");
        let link =
            std::fs::read_to_string(&link_path).map_err(|e| Error::io("open", &link_path, e))?;
        let mut lower = format!("{LINK_DIR}/{}", link.trim());
        let parent_elems = self.lower_elems(&pdir)?;
        if parent_elems.len() + 1 > MAX_DEPTH {
            return Err(invalid("max depth exceeded"));
        }
        for e in parent_elems {
            lower.push(':');
            lower.push_str(&e);
        }
        Ok(lower)
    }

    /// One reference more; returns whether this is the first (so a mount is needed).
    fn ref_inc(&self, path: &Path) -> bool {
        let mut refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        let e = refs.entry(path.to_path_buf()).or_default();
        if !e.checked {
            e.checked = true;
            if mount::is_overlay_mounted(path) {
                e.count = 1;
            }
        } else if e.count > 0 && !mount::is_overlay_mounted(path) {
            e.count = 0;
        }
        e.count += 1;
        e.count == 1
    }

    /// One reference less; returns the remaining count.
    fn ref_dec(&self, path: &Path) -> i64 {
        let mut refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        let e = refs.entry(path.to_path_buf()).or_default();
        if !e.checked {
            e.checked = true;
            if mount::is_overlay_mounted(path) {
                e.count = 1;
            }
        }
        e.count -= 1;
        e.count
    }

    fn mount_layer(&self, id: &str, opts: &MountOpts) -> Result<PathBuf> {
        check_layer_id(id)?;
        let _serial = self.mount_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (dir, in_store) = self.dir(id);
        if !dir.is_dir() {
            return Err(Error::msg(
                ErrorKind::LayerUnknown,
                format!("stat {}: no such file or directory", dir.display()),
            ));
        }
        if !in_store && dir.starts_with(&self.home) && !dir.join("link").exists() {
            self.recreate_symlinks()?;
        }
        let merged = self.merged_dir(id, &dir, in_store);
        if !merged.exists() {
            if in_store {
                mkdir_all(&merged, 0o700)?;
            } else {
                mkdir_mode(&merged, 0o700)?;
            }
        }
        if !self.ref_inc(&merged) {
            return Ok(merged);
        }
        match self.do_mount(id, &dir, &merged, opts, in_store) {
            Ok(()) => Ok(merged),
            Err(e) => {
                self.ref_dec(&merged);
                let _ = mount::unmount(&merged);
                Err(e)
            }
        }
    }

    fn do_mount(
        &self,
        id: &str,
        dir: &Path,
        merged: &Path,
        opts: &MountOpts,
        in_store: bool,
    ) -> Result<()> {
        let mut options = if opts.options.is_empty() {
            self.cfg.mount_options.clone()
        } else {
            opts.options.clone()
        };
        if self.metacopy {
            if self.cfg.mount_options.iter().any(|o| o == "metacopy=on")
                && !options.iter().any(|o| o == "metacopy=on")
            {
                options.push("metacopy=on".to_owned());
            }
        } else {
            options.retain(|o| o != "metacopy=on");
        }
        let read_only = in_store || options.iter().any(|o| o == "ro");

        // Lowers: own diff1..N, then each lower element and its diffN.
        let mut lowers = Vec::new();
        let mut relative = Vec::new();
        let own_link = std::fs::read_to_string(dir.join("link")).unwrap_or_default();
        // Paths relative to the home exist only for layers in the home; a shorter list
        // rules the relative method out.
        let in_home = dir.starts_with(&self.home);
        for n in 1.. {
            let p = dir.join(format!("diff{n}"));
            if !p.is_dir() {
                break;
            }
            lowers.push(p);
            if in_home {
                relative.push(format!("{LINK_DIR}/{}/../diff{n}", own_link.trim()));
            }
        }
        let elems = self.lower_elems(dir)?;
        if elems.len() > MAX_DEPTH {
            return Err(invalid("max depth exceeded"));
        }
        for e in &elems {
            let p = self.lower_path(e)?;
            let rel_ok = p.starts_with(&self.home);
            lowers.push(p.clone());
            if rel_ok {
                relative.push(e.clone());
            }
            for n in 1.. {
                let extra = PathBuf::from(format!("{}/../diff{n}", p.display()));
                if !extra.is_dir() {
                    break;
                }
                lowers.push(extra);
                if rel_ok {
                    relative.push(format!("{e}/../diff{n}"));
                }
            }
        }
        let diff = dir.join("diff");
        if !diff.exists() {
            let mode = lowers
                .first()
                .and_then(|l| std::fs::metadata(l).ok())
                .map_or(0o555, |m| m.mode() & 0o7777);
            mkdir_mode(&diff, mode)?;
        }
        if lowers.is_empty() {
            lowers.push(dir.join("empty"));
            if in_home {
                relative.push(format!("{id}/empty"));
            }
        }
        let (mut flags, mut data) = mount::parse_options(&options);
        if read_only {
            flags |= rustix::mount::MountFlags::RDONLY;
        }
        if self.rootless && self.mount_program.is_none() {
            data.push("userxattr".to_owned());
        }
        if opts.volatile && self.volatile {
            data.push("volatile".to_owned());
        }
        // The kernel refuses to reuse the work dir of an earlier volatile mount while
        // this marker exists; Go deletes it before mounting.
        let _ = std::fs::remove_dir_all(dir.join("work/work/incompat/volatile"));
        let (upper, work) = if read_only {
            lowers.insert(0, diff.clone());
            if in_home {
                relative.insert(0, format!("{id}/diff"));
            }
            (None, None)
        } else {
            (Some(diff), Some(dir.join("work")))
        };
        if let Some(prog) = &self.mount_program {
            return self.mount_with_program(prog, &lowers, upper, work, &data, merged, opts);
        }
        let mut views = Vec::new();
        if !opts.uid_map.is_empty()
            && !opts.gid_map.is_empty()
            && self.supports_shifting(&opts.uid_map, &opts.gid_map)
        {
            views = self.map_lowers(dir, &mut lowers, &opts.uid_map, &opts.gid_map)?;
            // The views live below the layer dir, not under `l/`: no relative form.
            relative.clear();
        }
        let spec = mount::Spec {
            lowers,
            relative_lowers: relative,
            upper,
            work,
            data,
            flags,
            target: merged.to_path_buf(),
            home: self.home.clone(),
        };
        let mounted = mount::mount_overlay(&spec, mount::method_from_env());
        // The overlay holds its own references: the views go right away.
        release_views(&views);
        mounted.map_err(|e| {
            Error::msg(
                ErrorKind::Io,
                format!(
                    "error creating overlay mount to {}: {}",
                    merged.display(),
                    storage_types::go_io_error_text(&e)
                ),
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn mount_with_program(
        &self,
        prog: &Path,
        lowers: &[PathBuf],
        upper: Option<PathBuf>,
        work: Option<PathBuf>,
        extra: &[String],
        merged: &Path,
        opts: &MountOpts,
    ) -> Result<()> {
        let mut data = format!(
            "lowerdir={}",
            lowers
                .iter()
                .map(|l| l.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(":")
        );
        if let (Some(u), Some(w)) = (&upper, &work) {
            data.push_str(&format!(
                ",upperdir={},workdir={}",
                u.display(),
                w.display()
            ));
        }
        for e in extra {
            data.push(',');
            data.push_str(e);
        }
        let maps = |m: &[IdMap]| {
            m.iter()
                .map(|x| format!("{}:{}:{}", x.container_id, x.host_id, x.size))
                .collect::<Vec<_>>()
                .join(":")
        };
        // Go: a single one-ID map squashes every owner to it.
        match opts.uid_map.as_slice() {
            [] => {}
            [m] if m.size == 1 => data.push_str(&format!(",squash_to_uid={}", m.host_id)),
            all => data.push_str(&format!(",uidmapping={}", maps(all))),
        }
        match opts.gid_map.as_slice() {
            [] => {}
            [m] if m.size == 1 => data.push_str(&format!(",squash_to_gid={}", m.host_id)),
            all => data.push_str(&format!(",gidmapping={}", maps(all))),
        }
        if self.cfg.force_mask.is_some() {
            data.push_str(",xattr_permissions=2");
        }
        let out = std::process::Command::new(prog)
            .arg("-o")
            .arg(&data)
            .arg(merged)
            .current_dir(&self.home)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::io("exec", prog, e))?;
        if !out.status.success() {
            // A FUSE program that cannot open /dev/fuse says so on several lines; one
            // line saying what to do is more use.
            let text = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/fuse")
            {
                Err(e) => format!(
                    "cannot open /dev/fuse: {}: the user must be able to read and write /dev/fuse (normally mode 0666: chmod 0666 /dev/fuse), or use native overlay without a mount_program",
                    storage_types::go_io_error_text(&e)
                ),
                Ok(_) => format!(
                    "{}: {}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    out.status
                ),
            };
            return Err(Error::msg(
                ErrorKind::Io,
                format!("using mount program {}: {text}", prog.display()),
            ));
        }
        Ok(())
    }

    /// `dir/merged`, or `<runhome>/<id>/merged` for layers of additional stores (1.60).
    fn merged_dir(&self, id: &str, dir: &Path, in_store: bool) -> PathBuf {
        if in_store {
            self.run_home.join(id).join("merged")
        } else {
            dir.join("merged")
        }
    }

    fn unmount_layer(&self, id: &str) -> Result<()> {
        let _serial = self.mount_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (dir, in_store) = self.dir(id);
        let merged = self.merged_dir(id, &dir, in_store);
        if self.ref_dec(&merged) > 0 {
            return Ok(());
        }
        if let Ok(rd) = std::fs::read_dir(dir.join("mapped")) {
            let views: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            release_views(&views);
        }
        if self.mount_program.is_some() && mount::is_mountpoint(&merged) {
            let ok = ["fusermount3", "fusermount"].iter().any(|p| {
                std::process::Command::new(p)
                    .arg("-u")
                    .arg(&merged)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            });
            if !ok && let Ok(f) = std::fs::File::open(&merged) {
                let _ = rustix::fs::syncfs(&f);
            }
        }
        mount::unmount(&merged).map_err(|e| Error::io("unmount", &merged, e))?;
        if in_store {
            let _ = remove_all(&self.run_home.join(id));
        }
        Ok(())
    }

    /// Whether `parent` is the layer's real parent (Go's `isParent`).
    fn is_parent(&self, id: &str, parent: Option<&str>) -> bool {
        let (dir, _) = self.dir(id);
        let elems = self.lower_elems(&dir).unwrap_or_default();
        match (parent, elems.first()) {
            (None, None) => true,
            (Some(p), Some(first)) => {
                let (pdir, _) = self.dir(p);
                match self.lower_diff(first) {
                    Ok(d) => d.parent().is_some_and(|x| same_dir(x, &pdir)),
                    Err(_) => false,
                }
            }
            _ => false,
        }
    }

    fn naive_mounts<T>(
        &self,
        id: &str,
        parent: Option<&str>,
        f: impl FnOnce(&Path, Option<&Path>) -> Result<T>,
    ) -> Result<T> {
        let ro = MountOpts {
            options: vec!["ro".to_owned()],
            ..MountOpts::default()
        };
        let layer = self.mount_layer(id, &ro)?;
        let parent_mount = match parent {
            Some(p) => match self.mount_layer(p, &ro) {
                Ok(m) => Some((p, m)),
                Err(e) => {
                    let _ = self.unmount_layer(id);
                    return Err(e);
                }
            },
            None => None,
        };
        let result = f(&layer, parent_mount.as_ref().map(|(_, m)| m.as_path()));
        if let Some((p, _)) = parent_mount {
            let _ = self.unmount_layer(p);
        }
        let _ = self.unmount_layer(id);
        result
    }
}

/// Detaches idmapped views and removes their directories (best effort).
fn release_views(views: &[PathBuf]) {
    for v in views {
        let _ = mount::unmount(v);
        let _ = std::fs::remove_dir(v);
    }
    if let Some(parent) = views.first().and_then(|v| v.parent()) {
        let _ = std::fs::remove_dir(parent);
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// The process umask, read from `/proc/self/status` (changing it to read it would race
/// with other threads creating files).
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Go's `fsutils.SupportsDType`: the directory entries of `dir` carry their type.
fn supports_d_type(dir: &Path) -> bool {
    let Ok(fd) = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return true;
    };
    let Ok(mut d) = rustix::fs::Dir::read_from(&fd) else {
        return true;
    };
    while let Some(Ok(e)) = d.read() {
        if e.file_type() == rustix::fs::FileType::Unknown {
            return false;
        }
    }
    true
}

/// Parses `user.containers.override_stat` (`uid:gid:mode[:type]`, mode octal).
fn parse_override(v: &[u8]) -> Option<(u32, u32, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.split(':');
    let uid = it.next()?.parse().ok()?;
    let gid = it.next()?.parse().ok()?;
    let mode = u32::from_str_radix(it.next()?.trim_start_matches("0o"), 8).ok()?;
    Some((uid, gid, mode & 0o7777))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    f.write_all(data).map_err(|e| Error::io("write", path, e))
}

fn write_flag(path: &Path, value: bool) -> Result<()> {
    write_file(path, if value { b"true" } else { b"false" }, 0o600)
}

impl Driver for Overlay {
    fn name(&self) -> &str {
        "overlay"
    }

    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts, false)
    }

    fn create_read_write(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts, true)
    }

    fn remove(&self, id: &str) -> Result<()> {
        check_layer_id(id)?;
        // Never delete from the read-only additional stores.
        let homedir = match &self.image_store {
            Some(is) if !self.home.join(id).exists() && is.join(id).exists() => is.clone(),
            _ => self.home.clone(),
        };
        let dir = homedir.join(id);
        if let Ok(link) = std::fs::read_to_string(dir.join("link")) {
            let link = link.trim();
            if !link.is_empty() && !link.contains('/') {
                let lp = homedir.join(LINK_DIR).join(link);
                match std::fs::remove_file(&lp) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", &lp, e)),
                }
            }
        }
        let merged = dir.join("merged");
        if mount::is_mountpoint(&merged) {
            let _ = mount::unmount(&merged);
        }
        remove_all(&dir)
    }

    fn get(&self, id: &str, opts: &MountOpts) -> Result<PathBuf> {
        self.mount_layer(id, opts)
    }

    fn put(&self, id: &str) -> Result<()> {
        check_layer_id(id)?;
        self.unmount_layer(id)
    }

    fn exists(&self, id: &str) -> bool {
        check_layer_id(id).is_ok() && self.dir(id).0.is_dir()
    }

    fn list_layers(&self) -> Result<Vec<String>> {
        let rd = std::fs::read_dir(&self.home).map_err(|e| Error::io("open", &self.home, e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("readdirent", &self.home, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if matches!(
                name.as_str(),
                LINK_DIR | "staging" | "tempdirs" | "backingFsBlockDev" | ".has-mount-program"
            ) || !entry.file_type().is_ok_and(|t| t.is_dir())
            {
                continue;
            }
            out.push(name);
        }
        out.sort();
        Ok(out)
    }

    fn status(&self) -> Vec<(String, String)> {
        vec![
            ("Backing Filesystem".into(), self.backing_fs.into()),
            ("Supports d_type".into(), "true".into()),
            (
                "Native Overlay Diff".into(),
                (!self.use_naive_diff()).to_string(),
            ),
            ("Using metacopy".into(), self.metacopy.to_string()),
            (
                "Supports shifting".into(),
                self.supports_shifting(&[], &[]).to_string(),
            ),
            ("Supports volatile".into(), self.volatile.to_string()),
        ]
    }

    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>> {
        check_layer_id(id)?;
        let (dir, in_store) = self.dir(id);
        if !dir.is_dir() {
            return Err(Error::msg(
                ErrorKind::LayerUnknown,
                format!("stat {}: no such file or directory", dir.display()),
            ));
        }
        let mut m = BTreeMap::new();
        m.insert("WorkDir".into(), dir.join("work").display().to_string());
        m.insert(
            "MergedDir".into(),
            self.merged_dir(id, &dir, in_store).display().to_string(),
        );
        m.insert("UpperDir".into(), dir.join("diff").display().to_string());
        let lowers = self
            .lower_elems(&dir)?
            .iter()
            .map(|e| self.lower_diff(e).map(|p| p.display().to_string()))
            .collect::<Result<Vec<_>>>()?;
        if !lowers.is_empty() {
            m.insert("LowerDir".into(), lowers.join(":"));
        }
        Ok(m)
    }

    fn cleanup(&self) -> Result<()> {
        if !self.home_private {
            return Ok(());
        }
        // Go 1.60 keeps the home mounted while staged (partial-pull) layers remain.
        let staging = self.home.join("staging");
        if std::fs::read_dir(&staging).is_ok_and(|mut rd| rd.next().is_some()) {
            return Ok(());
        }
        mount::unmount(&self.home).map_err(|e| Error::io("unmount", &self.home, e))
    }

    fn diff(
        &self,
        id: &str,
        parent: Option<&str>,
        uid_map: &[IdMap],
        gid_map: &[IdMap],
        out: &mut dyn Write,
    ) -> Result<()> {
        check_layer_id(id)?;
        if self.use_naive_diff() || !self.is_parent(id, parent) {
            return self.naive_mounts(id, parent, |layer, parent| {
                crate::naive::diff(layer, parent, uid_map, gid_map, out)
            });
        }
        let (dir, _) = self.dir(id);
        let lowers = self.lower_diffs(id)?;
        native::diff(
            &dir.join("diff"),
            &lowers,
            uid_map,
            gid_map,
            self.opaque_xattr(),
            out,
        )
        .map_err(Error::from)
    }

    fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>> {
        check_layer_id(id)?;
        if self.use_naive_diff() || !self.is_parent(id, parent) {
            return self.naive_mounts(id, parent, crate::naive::changes);
        }
        let (dir, _) = self.dir(id);
        let lowers = self.lower_diffs(id)?;
        let diff = dir.join("diff");
        native::changes(&diff, &lowers, self.opaque_xattr())
            .map_err(|e| Error::io("walk", &diff, e))
    }

    fn apply_diff(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut dyn Read,
        opts: &ApplyDiffOpts,
    ) -> Result<i64> {
        check_layer_id(id)?;
        let mut opts = opts.clone();
        if self.cfg.ignore_chown_errors {
            opts.ignore_chown_errors = true;
        }
        if opts.force_mask.is_none() {
            opts.force_mask = self.cfg.force_mask;
        }
        if !self.is_parent(id, parent) {
            let layer = self.mount_layer(id, &MountOpts::default())?;
            let r = crate::naive::apply_diff(&layer, diff, &opts);
            let _ = self.unmount_layer(id);
            return r;
        }
        let (dir, _) = self.dir(id);
        let target = dir.join("diff");
        let whiteout = if self.mount_program.is_some() {
            storage_archive::WhiteoutFormat::Aufs
        } else {
            storage_archive::WhiteoutFormat::Overlay {
                opaque_xattr: self.opaque_xattr(),
            }
        };
        let unpack = storage_archive::UnpackOptions {
            uid_map: opts.uid_map.clone(),
            gid_map: opts.gid_map.clone(),
            ignore_chown_errors: opts.ignore_chown_errors,
            whiteout,
            force_mask: opts.force_mask,
            in_user_ns: self.rootless,
        };
        let unpacked = storage_archive::unpack_sized(diff, &target, &unpack)
            .map_err(|e| Error::msg(ErrorKind::Other, e.to_string()))?;
        // Go walks `diff/` (`directory.Size`); the size counted while extracting is the
        // same whenever it is known, and saves that walk of every new file.
        Ok(unpacked
            .tree_size
            .unwrap_or_else(|| native::dir_size(&target)))
    }

    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<i64> {
        check_layer_id(id)?;
        if self.use_naive_diff() || !self.is_parent(id, parent) {
            return self.naive_mounts(id, parent, crate::naive::diff_size);
        }
        let (dir, _) = self.dir(id);
        Ok(native::dir_size(&dir.join("diff")))
    }

    fn diff_getter(&self, id: &str) -> Result<Box<dyn storage_tarsplit::FileGetter + '_>> {
        check_layer_id(id)?;
        let (dir, _) = self.dir(id);
        let mut dirs = vec![dir.join("diff")];
        dirs.extend(self.lower_diffs(id)?);
        Ok(Box::new(native::LayeredFileGetter::new(dirs)))
    }

    fn supports_shifting(&self, uid_map: &[IdMap], gid_map: &[IdMap]) -> bool {
        if std::env::var("_CONTAINERS_OVERLAY_DISABLE_IDMAP").as_deref() == Ok("yes") {
            return false;
        }
        if self.mount_program.is_some() {
            // fuse-overlayfs maps the upper layer too: contiguous maps only.
            return idmapped::is_contiguous(uid_map) && idmapped::is_contiguous(gid_map);
        }
        self.idmapped_lowers()
    }

    fn update_layer_id_map(
        &self,
        id: &str,
        old_uid: &[IdMap],
        old_gid: &[IdMap],
        new_uid: &[IdMap],
        new_gid: &[IdMap],
    ) -> Result<()> {
        check_layer_id(id)?;
        let (dir, _) = self.dir(id);
        let merged = self.mount_layer(
            id,
            &MountOpts {
                options: self.cfg.mount_options.clone(),
                ..MountOpts::default()
            },
        )?;
        let r = crate::idmap::chown_by_maps(&merged, (old_uid, old_gid), (new_uid, new_gid));
        let u = self.unmount_layer(id);
        r?;
        u?;
        // Rotate diff → diff1 (older uppers become the top lowers) and start afresh.
        let mut n = 1;
        while dir.join(format!("diff{n}")).exists() {
            n += 1;
        }
        for i in (1..n).rev() {
            let from = dir.join(format!("diff{i}"));
            let to = dir.join(format!("diff{}", i + 1));
            std::fs::rename(&from, &to).map_err(|e| Error::io("rename", &from, e))?;
        }
        let diff = dir.join("diff");
        let md = std::fs::metadata(&diff).map_err(|e| Error::io("stat", &diff, e))?;
        std::fs::rename(&diff, dir.join("diff1")).map_err(|e| Error::io("rename", &diff, e))?;
        let root = root_pair(new_uid, new_gid);
        let work = dir.join("work");
        remove_all(&work)?;
        mkdir_mode(&work, 0o555)?;
        chown(&work, root)?;
        let mode = self.cfg.force_mask.unwrap_or(md.mode() & 0o7777);
        mkdir_mode(&diff, mode)?;
        chown(&diff, root)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_base32() {
        let a = short_id().unwrap();
        let b = short_id().unwrap();
        assert_eq!(a.len(), 26);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c))
        );
    }

    #[test]
    fn sizes_parse_like_go_units() {
        assert_eq!(ram_in_bytes("10M").unwrap(), 10 << 20);
        assert_eq!(ram_in_bytes("10g").unwrap(), 10 << 30);
        assert_eq!(ram_in_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(ram_in_bytes("512").unwrap(), 512);
        assert_eq!(ram_in_bytes("4KiB").unwrap(), 4096);
        assert_eq!(ram_in_bytes("2kb").unwrap(), 2048);
        assert!(ram_in_bytes("ten").is_err());
        assert!(ram_in_bytes("10x").is_err());
    }

    #[test]
    fn options_are_case_insensitive_with_prefixes() {
        let c = parse_config(&[
            "overlay.MountOpt=nodev,metacopy=on".into(),
            "overlay2.skip_mount_home=true".into(),
            ".ignore_chown_errors=1".into(),
            "overlay.force_mask=shared".into(),
            "overlay.override_kernel_check=whatever".into(),
        ])
        .unwrap();
        assert_eq!(c.mount_options, vec!["nodev", "metacopy=on"]);
        assert!(c.skip_mount_home && c.ignore_chown_errors);
        assert_eq!(c.force_mask, Some(0o755));
        assert_eq!(
            parse_config(&["overlay.force_mask=750".into()])
                .unwrap()
                .force_mask,
            Some(0o750)
        );
        let e = parse_config(&["overlay.bogus=1".into()]).unwrap_err();
        assert_eq!(e.message(), "overlay: unknown option overlay.bogus");
        let e = parse_config(&["overlay.imagestore=relative/x".into()]).unwrap_err();
        assert!(e.message().contains("is not absolute"), "{e}");
        let e = parse_config(&["overlay.mount_program=/nonexistent/prog".into()]).unwrap_err();
        assert!(
            e.message().starts_with("overlay: can't stat program"),
            "{e}"
        );
        assert!(parse_config(&["overlay.size=12x".into()]).is_err());
    }

    #[test]
    fn override_stat_parses_both_formats() {
        assert_eq!(parse_override(b"0:0:0755:dir"), Some((0, 0, 0o755)));
        assert_eq!(parse_override(b"1:2:0555"), Some((1, 2, 0o555)));
        assert_eq!(parse_override(b"junk"), None);
    }

    #[test]
    fn umask_and_d_type() {
        let m = umask();
        assert_eq!(m & !0o777, 0);
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        // ext4, xfs (ftype=1), btrfs and tmpfs all report entry types.
        assert!(supports_d_type(tmp.path()));
    }

    #[test]
    fn fs_names() {
        assert_eq!(fs_name(0xEF53), "extfs");
        assert_eq!(fs_name(0x5846_5342), "xfs");
        assert_eq!(fs_name(1), "<unknown>");
    }
}
