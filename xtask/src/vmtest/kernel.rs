//! The guest kernel: resolved through Debian's `linux-image-amd64` meta package, fetched with
//! `apt-get download` (never installed), and unpacked into `target/vmtest/<package>/`: the ELF
//! `vmlinux` (extracted from `vmlinuz`, so qemu boots it through the PVH entry and the guest does
//! not decompress itself under TCG) and a subset of the modules with a `modules.dep` made by
//! `busybox depmod`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Which Debian kernel to boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Debian 12's own kernel (6.1), the project's target.
    Debian12,
    /// The bookworm-backports kernel (6.12), fetched through a private apt sources list.
    Backports,
}

impl Flavor {
    /// Parses the `--kernel` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "debian12" | "bookworm" | "stable" => Ok(Self::Debian12),
            "backports" | "bpo" => Ok(Self::Backports),
            _ => Err(format!("--kernel {s}: expected debian12 or backports")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Debian12 => "debian12",
            Self::Backports => "backports",
        }
    }
}

/// An unpacked kernel ready to boot.
pub struct Kernel {
    /// The Debian package it came from (e.g. `linux-image-6.1.0-56-amd64`).
    pub package: String,
    /// The kernel release (`uname -r`), the directory name under `lib/modules`.
    pub release: String,
    /// The uncompressed ELF kernel.
    pub vmlinux: PathBuf,
    /// `<base>/lib/modules/<release>` holds the modules subset and `modules.dep`.
    pub module_base: PathBuf,
}

impl Kernel {
    /// The directory holding `modules.dep` and `kernel/`.
    pub fn module_dir(&self) -> PathBuf {
        self.module_base.join("lib/modules").join(&self.release)
    }
}

/// Module subtrees unpacked from the package (relative to `lib/modules/<release>/kernel/`).
const SUBTREES: &[&str] = &[
    "fs/",
    "crypto/",
    "lib/",
    "arch/x86/",
    "drivers/block/",
    "drivers/virtio/",
    "drivers/md/",
    "net/9p/",
];

/// Private apt configuration for bookworm-backports: its own sources list, lists and cache under
/// `dir`, so the system's sources and caches are left untouched.
fn apt_options(cache: &Path, flavor: Flavor) -> Result<Vec<String>, String> {
    let mut opts = vec!["-o".to_string(), "APT::Sandbox::User=root".to_string()];
    if flavor == Flavor::Debian12 {
        return Ok(opts);
    }
    let dir = cache.join("apt-backports");
    for d in ["lists/partial", "cache/archives/partial", "parts"] {
        fs::create_dir_all(dir.join(d)).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let list = dir.join("sources.list");
    fs::write(
        &list,
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
         http://deb.debian.org/debian bookworm-backports main\n",
    )
    .map_err(|e| format!("{}: {e}", list.display()))?;
    for (k, v) in [
        ("Dir::Etc::SourceList", list.clone()),
        ("Dir::Etc::SourceParts", dir.join("parts")),
        ("Dir::State::Lists", dir.join("lists")),
        ("Dir::Cache", dir.join("cache")),
    ] {
        opts.push("-o".into());
        opts.push(format!("{k}={}", v.display()));
    }
    Ok(opts)
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{shown} failed: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Resolves the kernel package `linux-image-amd64` points at (cached in
/// `target/vmtest/default-<flavor>`; `refresh` resolves again).
fn resolve(cache: &Path, flavor: Flavor, refresh: bool) -> Result<String, String> {
    let memo = cache.join(format!("default-{}", flavor.name()));
    if !refresh
        && let Ok(s) = fs::read_to_string(&memo)
        && !s.trim().is_empty()
    {
        return Ok(s.trim().to_string());
    }
    let opts = apt_options(cache, flavor)?;
    if flavor == Flavor::Backports || refresh {
        crate::run(Command::new("apt-get").args(&opts).arg("update").arg("-qq"))?;
    }
    let deps = output(
        Command::new("apt-cache")
            .args(&opts)
            .args(["depends", "linux-image-amd64"]),
    )?;
    let pkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| {
            format!("apt-cache depends linux-image-amd64: no kernel package in:\n{deps}")
        })?;
    fs::write(&memo, format!("{pkg}\n")).map_err(|e| format!("{}: {e}", memo.display()))?;
    Ok(pkg)
}

/// Fetches and unpacks the kernel (cached; `refresh` re-resolves the package name).
pub fn prepare(cache: &Path, flavor: Flavor, refresh: bool) -> Result<Kernel, String> {
    fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let package = resolve(cache, flavor, refresh)?;
    let dir = cache.join(&package);
    let stamp = dir.join("ready");
    if let Ok(release) = fs::read_to_string(&stamp) {
        let release = release.trim().to_string();
        return Ok(Kernel {
            package,
            release,
            vmlinux: dir.join("vmlinux"),
            module_base: dir.join("mods"),
        });
    }
    eprintln!(
        "vm-test: preparing kernel {package} under {}",
        dir.display()
    );
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let deb = match find_deb(&dir, &package) {
        Some(d) => d,
        None => {
            let opts = apt_options(cache, flavor)?;
            let got = crate::run(
                Command::new("apt-get")
                    .args(&opts)
                    .args(["download", "-q", &package])
                    .current_dir(&dir),
            );
            if got.is_err() && !refresh {
                // The mirror drops superseded kernels after a security update: resolve again.
                return prepare(cache, flavor, true);
            }
            got?;
            find_deb(&dir, &package)
                .ok_or_else(|| format!("apt-get download {package}: no .deb"))?
        }
    };
    let mods = dir.join("mods");
    let _ = fs::remove_dir_all(&mods);
    let (vmlinuz, release) = unpack(&deb, &dir, &mods)?;
    decompress_modules(&mods.join("lib/modules").join(&release))?;
    crate::run(
        Command::new("busybox")
            .arg("depmod")
            .arg("-b")
            .arg(&mods)
            .arg(&release),
    )?;
    extract_vmlinux(&vmlinuz, &dir.join("vmlinux"))?;
    fs::write(&stamp, &release).map_err(|e| format!("{}: {e}", stamp.display()))?;
    // The .deb is no longer needed once unpacked.
    let _ = fs::remove_file(&deb);
    Ok(Kernel {
        package,
        release,
        vmlinux: dir.join("vmlinux"),
        module_base: mods,
    })
}

fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
}

/// Unpacks `boot/vmlinuz-*` and the module subtrees; returns the vmlinuz path and the release.
fn unpack(deb: &Path, dir: &Path, mods: &Path) -> Result<(PathBuf, String), String> {
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("dpkg-deb: {e}"))?;
    let stdout = child.stdout.take().ok_or("dpkg-deb: no stdout")?;
    let mut archive = tar::Archive::new(stdout);
    let mut vmlinuz = None;
    let mut release = None;
    let entries = archive
        .entries()
        .map_err(|e| format!("{}: {e}", deb.display()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("{}: {e}", deb.display()))?;
        let path = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let path = path.trim_start_matches("./");
        let path = path.strip_prefix("usr/").unwrap_or(path).to_string();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        if let Some(name) = path.strip_prefix("boot/vmlinuz-") {
            let dest = dir.join("vmlinuz");
            entry
                .unpack(&dest)
                .map_err(|e| format!("{}: {e}", dest.display()))?;
            vmlinuz = Some(dest);
            release.get_or_insert_with(|| name.to_string());
            continue;
        }
        let Some(rest) = path.strip_prefix("lib/modules/") else {
            continue;
        };
        let Some((rel, inner)) = rest.split_once('/') else {
            continue;
        };
        let wanted = matches!(
            inner,
            "modules.builtin" | "modules.order" | "modules.builtin.modinfo"
        ) || inner
            .strip_prefix("kernel/")
            .is_some_and(|k| SUBTREES.iter().any(|s| k.starts_with(s)));
        if !wanted {
            continue;
        }
        release.get_or_insert_with(|| rel.to_string());
        let dest = mods.join("lib/modules").join(rel).join(inner);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        entry
            .unpack(&dest)
            .map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    let status = child.wait().map_err(|e| format!("dpkg-deb: {e}"))?;
    if !status.success() {
        return Err(format!(
            "dpkg-deb --fsys-tarfile {}: {status}",
            deb.display()
        ));
    }
    match (vmlinuz, release) {
        (Some(v), Some(r)) => Ok((v, r)),
        _ => Err(format!(
            "{}: no boot/vmlinuz-* in the package",
            deb.display()
        )),
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            walk(&e.path(), out)?;
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

/// Decompresses `.ko.xz` and `.ko.zst` modules in place (busybox modprobe loads plain `.ko`).
fn decompress_modules(dir: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    walk(dir, &mut files).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (ext, tool, args) in [
        ("xz", "xz", &["-d", "-f", "-q"][..]),
        ("zst", "zstd", &["-d", "-f", "-q", "--rm"][..]),
    ] {
        let list: Vec<&PathBuf> = files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        for chunk in list.chunks(256) {
            crate::run(Command::new(tool).args(args).args(chunk))?;
        }
    }
    Ok(())
}

/// Extracts the ELF `vmlinux` from a bzImage: the compressed payload is located through the
/// setup header (`setup_sects`, `payload_offset`, `payload_length`) and decompressed by format.
fn extract_vmlinux(vmlinuz: &Path, dest: &Path) -> Result<(), String> {
    let image = fs::read(vmlinuz).map_err(|e| format!("{}: {e}", vmlinuz.display()))?;
    let bad = || format!("{}: not a bzImage with a payload", vmlinuz.display());
    let u32_at = |off: usize| -> Option<usize> {
        image
            .get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err(bad());
    }
    let setup_sects = match *image.get(0x1f1).ok_or_else(bad)? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248).ok_or_else(bad)?;
    let len = u32_at(0x24c).ok_or_else(bad)?;
    let payload = image.get(start..start + len).ok_or_else(bad)?;
    let elf = if payload.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(payload)
            .read_to_end(&mut out)
            .map_err(|e| format!("{}: gzip payload: {e}", vmlinuz.display()))?;
        out
    } else if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        filter("xz", &["-d", "-c", "-q", "--single-stream"], payload)?
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        filter("zstd", &["-d", "-c", "-q"], payload)?
    } else {
        return Err(format!(
            "{}: unsupported payload compression",
            vmlinuz.display()
        ));
    };
    if !elf.starts_with(b"\x7fELF") {
        return Err(format!(
            "{}: the decompressed payload is not an ELF file",
            vmlinuz.display()
        ));
    }
    fs::write(dest, elf).map_err(|e| format!("{}: {e}", dest.display()))
}

/// Pipes `input` through `tool`; trailing data after the stream (the kernel appends the
/// uncompressed size) may make it complain, so only the output is judged.
fn filter(tool: &str, args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{tool}: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{tool}: {e}"))?;
    let _ = writer.join();
    Ok(out.stdout)
}

/// The modules of `wanted` and everything they depend on, as paths relative to the module
/// directory, in load order (dependencies first). Built-in modules are skipped; a module that is
/// neither built in nor present is an error unless it is in `optional`.
pub fn module_closure(
    module_dir: &Path,
    wanted: &[&str],
    optional: &[&str],
) -> Result<(Vec<String>, Vec<String>), String> {
    let norm = |s: &str| -> String {
        let base = s.rsplit('/').next().unwrap_or(s);
        base.trim_end_matches(".ko").replace('-', "_")
    };
    let dep_path = module_dir.join("modules.dep");
    let dep = fs::read_to_string(&dep_path).map_err(|e| format!("{}: {e}", dep_path.display()))?;
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep.lines() {
        let Some((m, rest)) = line.split_once(':') else {
            continue;
        };
        let m = m
            .trim()
            .trim_start_matches(&format!("{}/", module_dir.display()))
            .to_string();
        let ds = rest.split_whitespace().map(norm).collect();
        deps.insert(norm(&m), (m, ds));
    }
    let builtin: BTreeSet<String> = fs::read_to_string(module_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(norm)
        .collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    let mut loaded = Vec::new();
    fn visit(
        m: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(m.to_string()) {
            return;
        }
        if let Some((path, ds)) = deps.get(m) {
            for d in ds {
                visit(d, deps, seen, order);
            }
            order.push(path.clone());
        }
    }
    for w in wanted.iter().chain(optional) {
        let n = norm(w);
        if builtin.contains(&n) {
            continue;
        }
        if !deps.contains_key(&n) {
            if optional.contains(w) {
                continue;
            }
            return Err(format!("module {w} not found in {}", module_dir.display()));
        }
        visit(&n, &deps, &mut seen, &mut order);
        loaded.push(n);
    }
    Ok((order, loaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-kernel-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn closure_orders_dependencies_first_and_skips_builtins() {
        let d = tempdir("closure");
        fs::write(
            d.join("modules.dep"),
            "kernel/fs/btrfs/btrfs.ko: kernel/lib/raid6/raid6_pq.ko kernel/lib/libcrc32c.ko\n\
             kernel/lib/raid6/raid6_pq.ko:\nkernel/lib/libcrc32c.ko:\nkernel/fs/fuse/fuse.ko:\n\
             kernel/drivers/block/virtio_blk.ko:\n",
        )
        .unwrap();
        fs::write(
            d.join("modules.builtin"),
            "kernel/drivers/virtio/virtio_pci.ko\n",
        )
        .unwrap();
        let (order, load) = module_closure(
            &d,
            &["btrfs", "virtio_pci", "virtio-blk"],
            &["fuse", "nope"],
        )
        .unwrap();
        assert_eq!(
            order,
            [
                "kernel/lib/raid6/raid6_pq.ko",
                "kernel/lib/libcrc32c.ko",
                "kernel/fs/btrfs/btrfs.ko",
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/fs/fuse/fuse.ko"
            ]
        );
        assert_eq!(load, ["btrfs", "virtio_blk", "fuse"]);
        let err = module_closure(&d, &["xfs"], &[]).unwrap_err();
        assert!(err.starts_with("module xfs not found"), "{err}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn vmlinux_is_found_through_the_setup_header() {
        let d = tempdir("bzimage");
        let elf = b"\x7fELF-the-kernel".repeat(100);
        let mut gz = Vec::new();
        {
            let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
            e.write_all(&elf).unwrap();
            e.finish().unwrap();
        }
        gz.extend_from_slice(&[1, 2, 3, 4]); // the appended size, as the kernel build does
        let mut image = vec![0u8; 2 * 512];
        image[0x1f1] = 1; // setup_sects: the protected-mode code starts at 1024
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(gz.len() as u32).to_le_bytes());
        image.extend_from_slice(&[0u8; 16]);
        image.extend_from_slice(&gz);
        fs::write(d.join("vmlinuz"), &image).unwrap();
        extract_vmlinux(&d.join("vmlinuz"), &d.join("vmlinux")).unwrap();
        assert_eq!(fs::read(d.join("vmlinux")).unwrap(), elf);
        // Not a bzImage: a clear error, no panic.
        fs::write(d.join("bad"), b"short").unwrap();
        let err = extract_vmlinux(&d.join("bad"), &d.join("out")).unwrap_err();
        assert!(err.contains("not a bzImage"), "{err}");
        fs::remove_dir_all(&d).unwrap();
    }
}
