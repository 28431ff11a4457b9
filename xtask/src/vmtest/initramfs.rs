//! The guest's initramfs: a base archive cached by a hash of its inputs (busybox, `/init`, the
//! module closure, `mkfs.btrfs`/`mkfs.xfs`/`xfs_quota` with their libraries) and a per-run
//! payload archive appended after it. Both are uncompressed newc archives, so the payload always
//! starts 4-byte aligned.

use std::collections::BTreeSet;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cpio;
use super::kernel::{Kernel, module_closure};

/// The guest's `/init`.
const GUEST_INIT: &str = include_str!("guest-init.sh");

/// Modules the guest loads (crc32c_generic first: busybox modprobe ignores softdeps and btrfs
/// and xfs need a crc32c provider).
const MODULES: &[&str] = &[
    "crc32c_generic",
    "loop",
    "overlay",
    "btrfs",
    "xfs",
    "virtio_pci",
    "virtio_blk",
    "9pnet_virtio",
    "9p",
];
/// Modules loaded when the kernel has them (device-mapper with its flakey target, the
/// `error` target being built into dm_mod, for the fault-injection test).
const OPTIONAL_MODULES: &[&str] = &["fuse", "ext4", "dm_mod", "dm_flakey"];
/// Host tools copied into the base image with their libraries, and the guest directory they go
/// to. util-linux's `mount`/`umount` shadow busybox's (which, e.g., ignore `-o bind,ro`).
const TOOLS: &[(&str, &str)] = &[
    ("mkfs.btrfs", "usr/sbin"),
    ("mkfs.xfs", "usr/sbin"),
    ("xfs_quota", "usr/sbin"),
    ("mount", "usr/bin"),
    ("umount", "usr/bin"),
    // Debian's busybox-static runs its own applets before $PATH (SH_STANDALONE), so scripts
    // the tests run would get busybox's tar/cp: /bin/sh is dash, as on Debian.
    ("dash", "usr/bin"),
];

/// Host programs the tests call, copied (with their libraries) when the host has them. They go
/// to `/usr/bin` or `/usr/sbin` and so shadow busybox's applets (in `/bin`), which lack options
/// the tests use (GNU tar's `--format`, `cp -a` with xattrs, …).
const OPTIONAL_TOOLS: &[&str] = &[
    "tar",
    "gzip",
    "pigz",
    "zstd",
    "xz",
    "bzip2",
    "cp",
    "find",
    "du",
    "btrfs",
    "strace",
    "getfattr",
    "setfattr",
    "mkfs.ext4",
    "e2fsck",
    "dmsetup",
    "losetup",
];
/// Host trees the tests read (e.g. a "real tree" to archive), copied as they are.
const TREES: &[&str] = &["/usr/share/zoneinfo", "/etc/ssl"];

/// The guest path of a host program: `/usr/bin` or `/usr/sbin` (the host may find it through
/// the merged `/bin`).
fn guest_path(p: &Path) -> String {
    let s = p.to_string_lossy();
    let s = s.trim_start_matches('/');
    match s.split_once('/') {
        Some(("bin" | "sbin", rest)) if !s.starts_with("usr/") => {
            format!("usr/{}", &s[..s.len() - rest.len()]) + rest
        }
        _ => s.to_string(),
    }
}

/// Adds the tree under `dir` (directories, files, symlinks) to the archive.
fn add_tree(w: &mut cpio::Writer, dir: &Path) -> std::io::Result<()> {
    w.dir(&dir.to_string_lossy(), 0o755)?;
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let ft = e.file_type()?;
        if ft.is_symlink() {
            w.symlink(&p.to_string_lossy(), &fs::read_link(&p)?.to_string_lossy())?;
        } else if ft.is_dir() {
            add_tree(w, &p)?;
        } else if ft.is_file() {
            w.file(&p.to_string_lossy(), &p)?;
        }
    }
    Ok(())
}

/// Finds `name` in `$PATH` plus the sbin directories.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The shared libraries `ldd` lists for `bins` (the dynamic loader included); static binaries
/// have none.
pub fn libraries(bins: &[PathBuf]) -> Result<BTreeSet<PathBuf>, String> {
    let mut libs = BTreeSet::new();
    for chunk in bins.chunks(64) {
        let out = Command::new("ldd")
            .args(chunk)
            .output()
            .map_err(|e| format!("ldd: {e}"))?;
        // ldd fails for static binaries; the listed libraries are what matters.
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line
                    .split_whitespace()
                    .next()
                    .filter(|p| p.starts_with('/')),
            };
            // With several files ldd prints a `path:` header before each list.
            if let Some(p) = path.filter(|p| p.starts_with('/') && !p.ends_with(':')) {
                libs.insert(PathBuf::from(p));
            }
        }
    }
    Ok(libs)
}

fn stamp(h: &mut impl Hasher, p: &Path) -> Result<(), String> {
    let m = fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    p.hash(h);
    m.len().hash(h);
    m.mtime().hash(h);
    m.mtime_nsec().hash(h);
    Ok(())
}

/// Builds (or reuses) the base initramfs for `kernel`; returns its path.
pub fn base(cache: &Path, kernel: &Kernel) -> Result<PathBuf, String> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        return Err("/bin/busybox is missing (apt-get install busybox-static)".into());
    }
    let mut tools = Vec::new();
    let mut guest_tools = Vec::new();
    for (t, dir) in TOOLS {
        let p = which(t).ok_or_else(|| {
            format!("{t} is missing (apt-get install --no-install-recommends btrfs-progs xfsprogs)")
        })?;
        guest_tools.push((format!("{dir}/{t}"), p.clone()));
        tools.push(p);
    }
    for t in OPTIONAL_TOOLS {
        if let Some(p) = which(t) {
            guest_tools.push((guest_path(&p), p.clone()));
            tools.push(p);
        }
    }
    let module_dir = kernel.module_dir();
    let (closure, load) = module_closure(&module_dir, MODULES, OPTIONAL_MODULES)?;
    let libs = libraries(&tools)?;

    let mut h = std::collections::hash_map::DefaultHasher::new();
    GUEST_INIT.hash(&mut h);
    kernel.package.hash(&mut h);
    load.hash(&mut h);
    TREES.hash(&mut h);
    for p in [busybox.to_path_buf(), module_dir.join("modules.dep")]
        .iter()
        .chain(&tools)
        .chain(&libs)
    {
        stamp(&mut h, p)?;
    }
    let out = cache.join(format!("base-{}-{:016x}.cpio", kernel.release, h.finish()));
    if out.is_file() {
        return Ok(out);
    }
    eprintln!("vm-test: building the base initramfs {}", out.display());
    let tmp = out.with_extension("tmp");
    let io = |e: std::io::Error| format!("{}: {e}", tmp.display());
    let mut w = cpio::Writer::create(&tmp).map_err(io)?;
    for d in [
        "proc", "sys", "dev", "tmp", "run", "mnt", "root", "etc", "newroot", "bin", "sbin",
        "usr/bin", "usr/sbin",
    ] {
        w.dir(d, 0o755).map_err(io)?;
    }
    w.bytes("init", 0o755, GUEST_INIT.as_bytes()).map_err(io)?;
    w.file("bin/busybox", busybox).map_err(io)?;
    // `busybox --install` keeps existing names, so these stay dash.
    w.symlink("bin/sh", "/usr/bin/dash").map_err(io)?;
    w.symlink("usr/bin/sh", "dash").map_err(io)?;
    w.bytes("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        .map_err(io)?;
    w.bytes("etc/group", 0o644, b"root:x:0:\n").map_err(io)?;
    let mut modules = String::new();
    for m in &load {
        modules.push_str(m);
        modules.push('\n');
    }
    w.bytes("etc/vmtest/modules", 0o644, modules.as_bytes())
        .map_err(io)?;
    // The modules live under /.modules, which stage 1 does not copy to the new root.
    w.symlink("lib/modules", "/.modules").map_err(io)?;
    let rel = format!(".modules/{}", kernel.release);
    for f in ["modules.dep", "modules.builtin", "modules.order"] {
        let src = module_dir.join(f);
        if src.is_file() {
            w.file(&format!("{rel}/{f}"), &src).map_err(io)?;
        }
    }
    for m in &closure {
        w.file(&format!("{rel}/{m}"), &module_dir.join(m))
            .map_err(io)?;
    }
    for (dest, src) in &guest_tools {
        w.file(dest, src).map_err(io)?;
    }
    for l in &libs {
        w.file(&l.to_string_lossy(), l).map_err(io)?;
    }
    for t in TREES {
        let t = Path::new(t);
        if t.is_dir() {
            add_tree(&mut w, t).map_err(io)?;
        }
    }
    w.finish().map_err(io)?;
    fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    // Older bases of this kernel are stale now.
    let prefix = format!("base-{}-", kernel.release);
    for e in fs::read_dir(cache).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".cpio") && e.path() != out {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_programs_land_under_usr() {
        assert_eq!(guest_path(Path::new("/bin/tar")), "usr/bin/tar");
        assert_eq!(
            guest_path(Path::new("/sbin/mkfs.ext4")),
            "usr/sbin/mkfs.ext4"
        );
        assert_eq!(guest_path(Path::new("/usr/bin/zstd")), "usr/bin/zstd");
        assert_eq!(guest_path(Path::new("/usr/local/bin/x")), "usr/local/bin/x");
    }
}
