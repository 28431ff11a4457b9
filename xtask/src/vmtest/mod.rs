//! `cargo xtask vm-test`: the privileged tests inside a qemu VM booted on Debian's own kernel.
//!
//! The host kernel lacks some features the tests need (XFS project quotas) and is not the
//! project's target (Debian 12's 6.1). This task boots that kernel under qemu and runs the
//! privileged test binaries inside, as root, with scratch disks. By default those are the driver
//! tests ([`PRIVILEGED`]: vfs, overlay with its 6.1 long-lower-dir fallback and its XFS project
//! quotas, fuse-overlayfs, btrfs); `-p PKG` picks packages, `--workspace` takes every test binary of
//! the workspace (about 30 minutes under TCG), and a FILTER without `-p` searches the workspace:
//!
//! 1. **Kernel** ([`kernel`]): `linux-image-amd64` is resolved with `apt-cache depends` (once;
//!    `--refresh` or `VMTEST_REFRESH=1` resolves again, and so does a failed download), the
//!    package fetched with `apt-get download` into `target/vmtest/<package>/` (never installed),
//!    only `boot/` and the module subtrees unpacked, modules decompressed, `busybox depmod` run,
//!    and the ELF `vmlinux` extracted from `vmlinuz` so qemu boots it through PVH.
//!    `--kernel backports` fetches bookworm-backports' kernel through a private apt sources list
//!    under `target/vmtest/apt-backports/` (the system's sources are not touched).
//! 2. **Base initramfs** ([`initramfs`]): busybox-static, `/init` (`guest-init.sh`), the module
//!    closure of crc32c_generic loop overlay btrfs xfs virtio_pci virtio_blk 9pnet_virtio 9p
//!    (+fuse, ext4, dm_mod, dm_flakey), host tools with their `ldd` libraries (`mkfs.btrfs`,
//!    `mkfs.xfs`, `xfs_quota`, util-linux `mount`, dash as `/bin/sh`, and when present GNU tar,
//!    cp, find, du, gzip, pigz, zstd, xz, bzip2, btrfs, strace, mkfs.ext4, e2fsck, dmsetup,
//!    losetup), `/usr/share/zoneinfo` and
//!    `/etc/ssl`; an uncompressed newc cpio ([`cpio`]) cached by a hash of its inputs.
//! 3. **Payload** (per run, appended to the base): the workspace's test executables from
//!    `cargo test --no-run --message-format=json` (debug info stripped), their libraries, Go's
//!    `/usr/bin/containers-storage` and our `target/debug/containers-storage` when present, a
//!    `cargo` shim (`cargo build` is a no-op: everything was built before the boot) and a
//!    generated `run.sh`. `run.sh` first proves the kernel features the tests rely on
//!    (`VMTEST-CHECK <name> ok|fail`: btrfs on vda, XFS with `prjquota` on vdb returning ENOSPC
//!    past a project quota, overlay whiteouts, loop devices, the 9p share) and then runs each
//!    binary with `--test-threads=1` (and a per-binary timeout) in its package directory with
//!    `VMTEST_BTRFS_DEV=/dev/vda VMTEST_XFS_DEV=/dev/vdb VMTEST_SCRATCH=/tmp`.
//! 4. **Boot** ([`qemu`]): `-nodefaults`, qboot, `-smp 2` (one lane of test binaries per vCPU;
//!    `--cpus`), KVM (`-cpu host`) only when it really
//!    works, else TCG (`-cpu max`); sparse disks with `cache=unsafe` (vda, vdb: 512 MiB scratch;
//!    vdc: 4 GiB formatted ext4 as `/tmp`, because tmpfs has no user xattrs before 6.6); the
//!    workspace shared read-only over 9p at its own path (fixtures through
//!    `CARGO_MANIFEST_DIR`, our binary through `CARGO_BIN_EXE_*`, with a tmpfs over
//!    `target/tmp`). The console is echoed line by line; a boot watchdog (180 s TCG, 60 s KVM;
//!    under `--accel auto` a KVM boot that trips it is retried with TCG) and an overall timeout
//!    kill qemu by PID. The task exits with the guest's `VMTEST-RESULT rc=N`, or 125 when there
//!    is none.
//!
//! `--power-cut [N]` ([`powercut`]) instead cuts the power N times during a large `import-layer`
//! and checks the store after each reboot.
//!
//! Limits: x86_64 hosts only. The guest is busybox plus the tools above, not a Debian userland:
//! podman, skopeo and umoci are absent and the tests that need them skip; the guest runs with
//! `CI=false` for that reason (`VMTEST_CI=true` passes `CI=true` instead). Under TCG the whole
//! suite runs 10–30× slower than on the host, so timing-sensitive tests may fail there.

mod cpio;
mod initramfs;
mod kernel;
mod powercut;
mod qemu;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use kernel::Flavor;
use qemu::{Accel, Action, Drive, Vm};

/// The usage text of `cargo xtask vm-test`.
pub const USAGE: &str = "\
usage: cargo xtask vm-test [options] [FILTER]
       cargo xtask vm-test --power-cut [N] [options]

Boots Debian 12's kernel (6.1) under qemu and runs the privileged tests inside as root, with
scratch disks: VMTEST_BTRFS_DEV=/dev/vda VMTEST_XFS_DEV=/dev/vdb VMTEST_SCRATCH=/tmp. By default
those are the driver tests (package storage-drivers: vfs, overlay incl. the XFS project quota and
the 6.1 long-lower-dir fallback, fuse-overlayfs, btrfs); about a minute warm under TCG.
The guest first checks the kernel features the tests rely on (VMTEST-CHECK lines: btrfs, XFS
project quota ENOSPC, overlay, loop, 9p). Exit status: the guest's (0 = all passed), 125 when the
guest gave no result (panic, hang, watchdog).

FILTER: binaries whose name contains FILTER run whole; the others run with FILTER as the libtest
filter, and binaries with no matching test are not shipped. Without -p, a FILTER searches the
whole workspace.

options:
  --kernel debian12|backports  the kernel: Debian 12's own (default) or bookworm-backports' (6.12)
  --accel auto|kvm|tcg         auto (default) uses KVM only when it really works, else TCG
  --refresh                    resolve linux-image-amd64 again (after a Debian kernel ABI bump)
  -p, --package PKG            the test binaries of PKG instead of the default set (repeatable)
  --workspace                  every test binary of the workspace (about 30 minutes under TCG)
  --cpus N                     guest CPUs; test binaries run in N lanes (default: 2, or 1 on a
                               one-core host)
  --timeout SECS               overall limit per boot (default 3600; TCG runs the whole suite
                               10-30x slower than the host)
  --bin-timeout SECS           limit per test binary inside the guest (default 900)
  --power-cut [N]              the power-cut test: cut the power N (>= 5, default 6) times during
                               a large import-layer and check the store after each reboot

The guest runs the tests with CI=false: tests whose peer program (podman, skopeo, umoci) is not
in the guest skip loudly. VMTEST_CI=true passes CI=true instead. The VMTEST-CHECK lines are always
strict. VMTEST_REPORT_TIME=1 prints each test's time. Needs: apt-get install --no-install-recommends qemu-system-x86 busybox-static btrfs-progs xfsprogs
Caches under target/vmtest/ (cargo clean resets it).";

#[derive(Debug)]
struct Options {
    flavor: Flavor,
    accel: String,
    refresh: bool,
    packages: Vec<String>,
    workspace: bool,
    cpus: u32,
    timeout: Duration,
    bin_timeout: u64,
    power_cut: Option<u32>,
    filter: Option<String>,
}

/// The packages whose tests need root and kernel features and run by default: every driver
/// (vfs, overlay with its long-lower-dir fallback and XFS project quotas, fuse-overlayfs, btrfs).
pub const PRIVILEGED: &[&str] = &["storage-drivers"];

impl Options {
    /// The packages to build tests of; empty means the whole workspace.
    fn scope(&self) -> Vec<String> {
        if self.workspace || (self.packages.is_empty() && self.filter.is_some()) {
            Vec::new()
        } else if self.packages.is_empty() {
            PRIVILEGED.iter().map(|p| p.to_string()).collect()
        } else {
            self.packages.clone()
        }
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        flavor: Flavor::Debian12,
        accel: "auto".into(),
        refresh: std::env::var("VMTEST_REFRESH").as_deref() == Ok("1"),
        packages: Vec::new(),
        workspace: false,
        // One lane of test binaries per vCPU; two on a host with two or more cores (under TCG
        // each vCPU is a host thread, so more than the host's cores only adds contention).
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get().min(2) as u32),
        timeout: Duration::from_secs(3600),
        bin_timeout: 900,
        power_cut: None,
        filter: None,
    };
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--kernel" => o.flavor = Flavor::parse(&value("--kernel")?)?,
            "--accel" => {
                o.accel = value("--accel")?;
                if !matches!(o.accel.as_str(), "auto" | "kvm" | "tcg") {
                    return Err(format!("--accel {}: expected auto, kvm or tcg", o.accel));
                }
            }
            "--refresh" => o.refresh = true,
            "-p" | "--package" => o.packages.push(value("--package")?),
            "--workspace" => o.workspace = true,
            "--cpus" => {
                let v = value("--cpus")?;
                o.cpus = v
                    .parse()
                    .ok()
                    .filter(|&n| (1..=64).contains(&n))
                    .ok_or_else(|| format!("--cpus {v}: expected 1 to 64"))?;
            }
            "--timeout" => {
                let v = value("--timeout")?;
                let s: u64 = v
                    .parse()
                    .map_err(|_| format!("--timeout {v}: not a number"))?;
                o.timeout = Duration::from_secs(s);
            }
            "--bin-timeout" => {
                let v = value("--bin-timeout")?;
                o.bin_timeout = v
                    .parse()
                    .map_err(|_| format!("--bin-timeout {v}: not a number"))?;
            }
            "--power-cut" => {
                let n = match it.peek().and_then(|v| v.parse::<u32>().ok()) {
                    Some(n) => {
                        it.next();
                        n
                    }
                    None => 6,
                };
                if n < 5 {
                    return Err(format!("--power-cut {n}: at least 5 cut points"));
                }
                o.power_cut = Some(n);
            }
            "-h" | "--help" => return Err(String::new()),
            f if f.starts_with('-') => return Err(format!("unknown option {f}")),
            f => {
                if o.filter.replace(f.to_string()).is_some() {
                    return Err("only one FILTER".into());
                }
            }
        }
    }
    Ok(o)
}

/// Runs `cargo xtask vm-test ARGS`; the exit code is the guest's.
pub fn main(root: &Path, args: &[String]) -> ExitCode {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("vm-test: {e}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(root, &opts) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vm-test: {e}");
            ExitCode::from(125)
        }
    }
}

fn check_tools() -> Result<(), String> {
    let missing: Vec<&str> = [
        "qemu-system-x86_64",
        "busybox",
        "mkfs.btrfs",
        "mkfs.xfs",
        "dpkg-deb",
        "ldd",
    ]
    .into_iter()
    .filter(|t| initramfs::which(t).is_none())
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "missing {}: apt-get install --no-install-recommends qemu-system-x86 busybox-static btrfs-progs xfsprogs",
        missing.join(", ")
    ))
}

fn pick_accel(want: &str) -> Result<(Accel, bool), String> {
    match want {
        "tcg" => Ok((Accel::Tcg, false)),
        "kvm" => match qemu::kvm_unusable() {
            None => Ok((Accel::Kvm, false)),
            Some(why) => Err(format!("--accel kvm: {why}")),
        },
        _ => match qemu::kvm_unusable() {
            None => Ok((Accel::Kvm, true)),
            Some(why) => {
                eprintln!("vm-test: using TCG (software emulation): {why}");
                Ok((Accel::Tcg, false))
            }
        },
    }
}

/// A per-run working directory under `target/vmtest/runs/`, removed when dropped.
pub struct RunDir(pub PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Creates a sparse raw disk image of `mib` MiB.
pub fn sparse_disk(path: &Path, mib: u64) -> Result<(), String> {
    let f = fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.set_len(mib << 20)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// What boots: kernel, initrd and acceleration.
pub struct Guest {
    kernel: kernel::Kernel,
    base: PathBuf,
    accel: Accel,
    auto_kvm: bool,
}

impl Guest {
    fn prepare(cache: &Path, opts: &Options) -> Result<Self, String> {
        check_tools()?;
        let (accel, auto_kvm) = pick_accel(&opts.accel)?;
        let kernel = kernel::prepare(cache, opts.flavor, opts.refresh)?;
        let base = initramfs::base(cache, &kernel)?;
        Ok(Self {
            kernel,
            base,
            accel,
            auto_kvm,
        })
    }

    fn boot_timeout(&self, accel: Accel) -> Duration {
        Duration::from_secs(if accel == Accel::Kvm { 60 } else { 180 })
    }

    /// Boots once; under `--accel auto`, a KVM boot that trips the watchdog is retried with TCG.
    fn boot(
        &mut self,
        spec: &Boot<'_>,
        mut on_line: impl FnMut(&str) -> Action,
    ) -> Result<qemu::Outcome, String> {
        loop {
            let vm = Vm {
                accel: self.accel,
                kernel: &self.kernel.vmlinux,
                initrd: spec.initrd,
                append: spec.append.clone(),
                drives: spec.drives.clone(),
                share: spec.share,
                memory_mb: 3072,
                cpus: spec.cpus,
                boot_timeout: self.boot_timeout(self.accel),
                total_timeout: spec.timeout,
                log: spec.log,
                echo: true,
            };
            let out = vm.run(&mut on_line)?;
            if self.auto_kvm && !out.booted && out.killed.is_some() {
                eprintln!("vm-test: KVM did not boot the guest; falling back to TCG");
                self.accel = Accel::Tcg;
                self.auto_kvm = false;
                continue;
            }
            return Ok(out);
        }
    }
}

/// What one boot gets: initrd, kernel command line words, disks, share, limit and log.
pub struct Boot<'a> {
    initrd: &'a Path,
    append: String,
    drives: Vec<Drive>,
    share: Option<&'a Path>,
    timeout: Duration,
    log: &'a Path,
    cpus: u32,
}

fn run(root: &Path, opts: &Options) -> Result<u8, String> {
    let started = Instant::now();
    let cache = root.join("target/vmtest");
    let mut guest = Guest::prepare(&cache, opts)?;
    eprintln!(
        "vm-test: kernel {} ({}), {:?}, ready in {:.1}s",
        guest.kernel.package,
        guest.kernel.release,
        guest.accel,
        started.elapsed().as_secs_f64()
    );
    if let Some(n) = opts.power_cut {
        return powercut::run(root, &cache, &mut guest, n, opts.timeout);
    }
    let bins = test_binaries(root, &opts.scope(), opts.filter.as_deref())?;
    // Test helpers run our binary from the share; make sure it is current.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::run(
        Command::new(cargo)
            .args(["build", "-p", "storage-cli", "--bin", "containers-storage"])
            .current_dir(root),
    )?;
    if bins.is_empty() {
        return Err("no test binary matches".into());
    }
    let runs = cache.join("runs");
    fs::create_dir_all(&runs).map_err(|e| format!("{}: {e}", runs.display()))?;
    let dir = RunDir(runs.join(std::process::id().to_string()));
    fs::create_dir_all(&dir.0).map_err(|e| format!("{}: {e}", dir.0.display()))?;
    // run.sh reads "name dir filter" lines.
    let blank = |t: &str| t.is_empty() || t.chars().any(char::is_whitespace);
    if let Some(b) = bins
        .iter()
        .find(|b| blank(&b.name) || blank(&b.package_dir.to_string_lossy()))
    {
        return Err(format!(
            "{} ({}): names and package paths with blanks are not supported in the guest",
            b.name,
            b.package_dir.display()
        ));
    }
    if opts.filter.as_deref().is_some_and(blank) {
        return Err("a FILTER with blanks is not supported in the guest".into());
    }
    let script = run_script(root, &bins, opts.filter.as_deref(), opts.bin_timeout);
    let initrd = payload_initrd(
        &cache,
        &guest.base,
        &dir.0,
        &bins,
        &[
            ("vmtest/run.sh", script),
            ("usr/local/bin/cargo", CARGO_SHIM.into()),
        ],
    )?;
    let (vda, vdb, vdc) = (
        dir.0.join("vda.img"),
        dir.0.join("vdb.img"),
        dir.0.join("vdc.img"),
    );
    sparse_disk(&vda, 512)?;
    sparse_disk(&vdb, 512)?;
    sparse_disk(&vdc, 4096)?;
    let log = cache.join("last-console.log");
    let _ = fs::remove_file(&log);
    let prepared = started.elapsed();
    eprintln!(
        "vm-test: {} test binaries, host side ready in {:.1}s; booting",
        bins.len(),
        prepared.as_secs_f64()
    );
    let drives = vec![
        Drive {
            path: vda,
            cache: "unsafe",
            readonly: false,
        },
        Drive {
            path: vdb,
            cache: "unsafe",
            readonly: false,
        },
        Drive {
            path: vdc,
            cache: "unsafe",
            readonly: false,
        },
    ];
    let append = format!("vmtest.share={} vmtest.tmp=/dev/vdc", root.display());
    let mut checks = Vec::new();
    let spec = Boot {
        initrd: &initrd,
        append,
        drives,
        share: Some(root),
        timeout: opts.timeout,
        log: &log,
        cpus: opts.cpus,
    };
    let out = guest.boot(&spec, |l| {
        if let Some(c) = l.strip_prefix("VMTEST-CHECK ") {
            checks.push(c.to_string());
        }
        Action::Continue
    })?;
    let total = started.elapsed();
    eprintln!(
        "vm-test: checks: {}",
        if checks.is_empty() {
            "none reported".to_string()
        } else {
            checks.join(", ")
        }
    );
    eprintln!(
        "vm-test: total {:.1}s (host preparation {:.1}s, VM {:.1}s); console log: {}",
        total.as_secs_f64(),
        prepared.as_secs_f64(),
        (total - prepared).as_secs_f64(),
        log.display()
    );
    match (out.rc, out.killed) {
        (Some(rc), None) => {
            eprintln!("vm-test: guest result rc={rc}");
            Ok(u8::try_from(rc.clamp(0, 255)).unwrap_or(1))
        }
        (rc, killed) => {
            eprintln!(
                "vm-test: FAILED: no guest result (qemu {}{}{})",
                out.status,
                killed.map(|k| format!(", killed: {k}")).unwrap_or_default(),
                rc.map(|r| format!(", last rc={r}")).unwrap_or_default()
            );
            Ok(125)
        }
    }
}

/// A test executable to ship.
pub struct TestBin {
    /// The executable's file name (unique: it carries cargo's hash).
    name: String,
    /// Where cargo built it.
    path: PathBuf,
    /// The package directory (the test's working directory and `CARGO_MANIFEST_DIR`).
    package_dir: PathBuf,
    /// Whether to pass the FILTER to it.
    filtered: bool,
}

/// The workspace's test executables, built with `cargo test --no-run`.
fn test_binaries(
    root: &Path,
    packages: &[String],
    filter: Option<&str>,
) -> Result<Vec<TestBin>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["test", "--no-run", "--message-format=json"])
        .current_dir(root);
    if packages.is_empty() {
        cmd.arg("--workspace");
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    eprintln!("+ {cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo test --no-run failed: {}", out.status));
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let path = PathBuf::from(exe);
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let package_dir = v["manifest_path"]
            .as_str()
            .and_then(|m| Path::new(m).parent())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.to_path_buf());
        let target = v["target"]["name"].as_str().unwrap_or_default().to_string();
        let filtered = match filter {
            None => false,
            Some(f) if target.contains(f) || name.contains(f) => false,
            Some(f) => {
                if !has_matching_test(&path, f)? {
                    continue;
                }
                true
            }
        };
        if bins.iter().any(|b: &TestBin| b.name == name) {
            continue;
        }
        bins.push(TestBin {
            name,
            path,
            package_dir,
            filtered,
        });
    }
    Ok(bins)
}

/// Whether `bin --list` shows a test whose name contains `filter` (libtest's filter rule).
fn has_matching_test(bin: &Path, filter: &str) -> Result<bool, String> {
    let out = Command::new(bin)
        .arg("--list")
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .any(|t| t.contains(filter)))
}

/// Shell-quotes `s` for run.sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `cargo` inside the guest: the workspace was built on the host before the boot (helpers that
/// run `cargo build` to get our binary find it through the 9p share), so `build` has nothing to
/// do; anything else is refused.
const CARGO_SHIM: &str = "#!/bin/sh\n# vm-test guest: everything was built on the host before the boot.\n\
[ \"$1\" = build ] && exit 0\n\
echo \"cargo $*: not available inside the vm-test guest\" >&2\nexit 1\n";

/// The guest's checks of the kernel features the tests rely on (shell functions).
const CHECKS: &str = r#"checks_failed=0
check() {
	name=$1
	shift
	if "$@" >/tmp/vmtest-check.log 2>&1; then
		echo "VMTEST-CHECK $name ok"
	else
		echo "VMTEST-CHECK $name fail"
		sed 's/^/    /' /tmp/vmtest-check.log
		checks_failed=$((checks_failed + 1))
	fi
}
check_btrfs() {
	mkfs.btrfs -q -f "$VMTEST_BTRFS_DEV" && mkdir -p /mnt/btrfs &&
		mount -t btrfs "$VMTEST_BTRFS_DEV" /mnt/btrfs && echo data >/mnt/btrfs/f && sync &&
		umount /mnt/btrfs
}
check_xfs_quota() {
	mkfs.xfs -q -f "$VMTEST_XFS_DEV" && mkdir -p /mnt/xfs &&
		mount -t xfs -o prjquota "$VMTEST_XFS_DEV" /mnt/xfs || return 1
	ok=1
	mkdir /mnt/xfs/p &&
		xfs_quota -x -c 'project -s -p /mnt/xfs/p 42' /mnt/xfs &&
		xfs_quota -x -c 'limit -p bhard=1m 42' /mnt/xfs && ok=0
	if [ $ok -eq 0 ]; then
		out=$(dd if=/dev/zero of=/mnt/xfs/p/big bs=64k count=64 conv=fsync 2>&1)
		rc=$?
		echo "dd: rc=$rc $out"
		if [ $rc -eq 0 ] || ! echo "$out" | grep -q "No space left on device"; then
			echo "expected ENOSPC past the 1 MiB project quota"
			ok=1
		fi
	fi
	umount /mnt/xfs
	return $ok
}
check_overlay() {
	d=/tmp/vmtest-ovl
	mkdir -p $d/l $d/u $d/w $d/m && echo a >$d/l/a &&
		mount -t overlay overlay -o lowerdir=$d/l,upperdir=$d/u,workdir=$d/w $d/m &&
		rm $d/m/a && [ -c $d/u/a ] && umount $d/m && rm -rf $d
}
check_loop() {
	truncate -s 64M /tmp/vmtest-loop.img && dev=$(losetup -f) && losetup "$dev" /tmp/vmtest-loop.img &&
		losetup -d "$dev" && rm /tmp/vmtest-loop.img
}
check_share() {
	[ -f "$VMTEST_SHARE/Cargo.toml" ]
}
check btrfs check_btrfs
check xfs-prjquota-enospc check_xfs_quota
check overlay check_overlay
check loop check_loop
check share-9p check_share
"#;

/// The generated run.sh: environment, checks, then every test binary.
fn run_script(root: &Path, bins: &[TestBin], filter: Option<&str>, bin_timeout: u64) -> String {
    let ci = if std::env::var("VMTEST_CI").as_deref() == Ok("true") {
        "true"
    } else {
        "false"
    };
    let mut s = String::from("#!/bin/sh\n# Generated by cargo xtask vm-test.\n");
    let _ = writeln!(
        s,
        "export VMTEST_BTRFS_DEV=/dev/vda VMTEST_XFS_DEV=/dev/vdb VMTEST_SCRATCH=/tmp CI={ci} \
         RUST_BACKTRACE=1 USER=root HOME=/root VMTEST_SHARE={}",
        sh_quote(&root.to_string_lossy())
    );
    let _ = writeln!(
        s,
        "[ -f /vmtest/ld-library-path ] && export LD_LIBRARY_PATH=$(cat /vmtest/ld-library-path)"
    );
    let _ = writeln!(s, "BIN_TIMEOUT={bin_timeout}");
    // Each test's time, through libtest's unstable --report-time (diagnostics only).
    let report = if std::env::var("VMTEST_REPORT_TIME").as_deref() == Ok("1") {
        s.push_str("export RUSTC_BOOTSTRAP=1\n");
        " -Z unstable-options --report-time"
    } else {
        ""
    };
    s.push_str(
        "echo \"VMTEST-INFO kernel=$(uname -r) tmp=$(awk '$2 == \"/tmp\" { t = $3 } END { print t }' /proc/mounts)\"\n",
    );
    s.push_str(CHECKS);
    // Binaries run in one lane per guest CPU. Each binary's output is kept in a file and
    // printed whole under its VMTEST-BIN line when it ends (a mkdir lock keeps two lanes'
    // blocks apart); results go to one file per lane, so the summary sees every lane's.
    let _ = write!(
        s,
        "mkdir -p /run/vmtest\nrunbin() {{\n\tlane=$1\n\tname=$2\n\tdir=$3\n\tshift 3\n\
         \tout=/run/vmtest/$name.log\n\
         \t(cd \"$dir\" 2>/dev/null || cd /tmp; CARGO_MANIFEST_DIR=$dir exec timeout -s KILL $BIN_TIMEOUT \"/vmtest/bin/$name\" --test-threads=1{report} \"$@\") >\"$out\" 2>&1\n\
         \trc=$?\n\
         \t{{\n\t\techo\n\t\techo \"VMTEST-BIN $name\"\n\t\tcat \"$out\"\n\
         \t\tif [ $rc -ne 0 ]; then\n\
         \t\t\t[ $rc -eq 137 ] && echo \"VMTEST-BIN-TIMEOUT $name after ${{BIN_TIMEOUT}}s\"\n\
         \t\t\techo \"VMTEST-BIN-FAIL $name rc=$rc\"\n\t\tfi\n\t}} >\"$out.block\"\n\
         \tuntil mkdir /run/vmtest/console.lock 2>/dev/null; do sleep 0.1; done\n\
         \tcat \"$out.block\"\n\trmdir /run/vmtest/console.lock\n\
         \techo \"$name $rc\" >>/run/vmtest/results.$lane\n}}\n",
    );
    s.push_str(
        "lanes=$(nproc 2>/dev/null || echo 1)\n[ \"$lanes\" -ge 1 ] 2>/dev/null || lanes=1\n",
    );
    s.push_str("lane() {\n\tn=$1\n\ti=0\n");
    s.push_str("\twhile read -r name dir filter; do\n");
    s.push_str("\t\tif [ $((i % lanes)) -eq \"$n\" ]; then\n");
    s.push_str("\t\t\tif [ -n \"$filter\" ]; then runbin \"$n\" \"$name\" \"$dir\" \"$filter\"; else runbin \"$n\" \"$name\" \"$dir\"; fi\n");
    s.push_str("\t\tfi\n\t\ti=$((i + 1))\n\tdone </vmtest/bins\n}\n");
    s.push_str("cat >/vmtest/bins <<'VMTEST_BINS'\n");
    for b in bins {
        // One line per binary: name, package dir, libtest filter (names and dirs have no
        // blanks: cargo's artifact names and this workspace's paths; checked on the host).
        let _ = write!(s, "{} {}", b.name, b.package_dir.to_string_lossy());
        if let (true, Some(f)) = (b.filtered, filter) {
            let _ = write!(s, " {f}");
        }
        s.push('\n');
    }
    s.push_str("VMTEST_BINS\n");
    s.push_str(
        "n=0\nwhile [ $n -lt $lanes ]; do\n\tlane $n &\n\tn=$((n + 1))\ndone\nwait\n\
         nbins=$(cat /run/vmtest/results.* 2>/dev/null | wc -l)\n\
         bins_failed=$(cat /run/vmtest/results.* 2>/dev/null | awk '$2 != 0' | wc -l)\n\
         echo\necho \"VMTEST-SUMMARY checks_failed=$checks_failed binaries=$nbins failed=$bins_failed lanes=$lanes\"\n\
         [ $checks_failed -eq 0 ] && [ $bins_failed -eq 0 ] && [ $nbins -eq $(wc -l </vmtest/bins) ]\n",
    );
    s
}

/// A copy of `src` without debug info under `target/vmtest/stage/` (reused while `src` is
/// unchanged), so the payload stays small.
fn stripped(cache: &Path, name: &str, src: &Path) -> Result<PathBuf, String> {
    let stage = cache.join("stage");
    fs::create_dir_all(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
    let dst = stage.join(name);
    let newer = |a: &Path, b: &Path| -> bool {
        match (
            fs::metadata(a).and_then(|m| m.modified()),
            fs::metadata(b).and_then(|m| m.modified()),
        ) {
            (Ok(x), Ok(y)) => x >= y,
            _ => false,
        }
    };
    if newer(&dst, src) {
        return Ok(dst);
    }
    let tmp = stage.join(format!(".{name}.tmp"));
    let ok = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(src)
        .arg(&tmp)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        fs::copy(src, &tmp).map_err(|e| format!("{}: {e}", src.display()))?;
    }
    fs::rename(&tmp, &dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    Ok(dst)
}

/// Writes the payload archive (test binaries, their libraries, the `containers-storage`
/// binaries, `extra` files) and returns `base ++ payload` as the initrd path.
pub fn payload_initrd(
    cache: &Path,
    base: &Path,
    dir: &Path,
    bins: &[TestBin],
    extra: &[(&str, String)],
) -> Result<PathBuf, String> {
    let root = cache
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let payload = dir.join("payload.cpio");
    let io = |e: std::io::Error| format!("{}: {e}", payload.display());
    let mut w = cpio::Writer::create(&payload).map_err(io)?;
    let mut dynamic = Vec::new();
    for b in bins {
        let s = stripped(cache, &b.name, &b.path)?;
        w.file(&format!("vmtest/bin/{}", b.name), &s).map_err(io)?;
        dynamic.push(b.path.clone());
    }
    let go = Path::new("/usr/bin/containers-storage");
    if go.is_file() {
        w.file("usr/bin/containers-storage", go).map_err(io)?;
        dynamic.push(go.to_path_buf());
    } else {
        eprintln!(
            "vm-test: note: /usr/bin/containers-storage (Go) is not installed; tests that need it skip"
        );
    }
    let ours = root.join("target/debug/containers-storage");
    if ours.is_file() {
        let s = stripped(cache, "containers-storage", &ours)?;
        w.file("vmtest/bin/containers-storage", &s).map_err(io)?;
        dynamic.push(ours);
    }
    let libs = initramfs::libraries(&dynamic)?;
    let mut dirs: Vec<String> = Vec::new();
    for l in &libs {
        w.file(&l.to_string_lossy(), l).map_err(io)?;
        if let Some(d) = l.parent().map(|p| p.to_string_lossy().into_owned())
            && !dirs.contains(&d)
        {
            dirs.push(d);
        }
    }
    w.bytes("vmtest/ld-library-path", 0o644, dirs.join(":").as_bytes())
        .map_err(io)?;
    for (path, body) in extra {
        w.bytes(path, 0o755, body.as_bytes()).map_err(io)?;
    }
    w.finish().map_err(io)?;
    let initrd = dir.join("initrd");
    let mut out = fs::File::create(&initrd).map_err(|e| format!("{}: {e}", initrd.display()))?;
    for part in [base, payload.as_path()] {
        let mut f = fs::File::open(part).map_err(|e| format!("{}: {e}", part.display()))?;
        std::io::copy(&mut f, &mut out).map_err(|e| format!("{}: {e}", initrd.display()))?;
    }
    let _ = fs::remove_file(&payload);
    Ok(initrd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_scope_is_the_privileged_set() {
        assert_eq!(parse(&[]).unwrap().scope(), PRIVILEGED);
        assert!(parse(&args(&["--workspace"])).unwrap().scope().is_empty());
        assert!(parse(&args(&["quota"])).unwrap().scope().is_empty());
        assert_eq!(parse(&args(&["-p", "x", "quota"])).unwrap().scope(), ["x"]);
    }

    #[test]
    fn options_parse() {
        let o = parse(&args(&[
            "--kernel",
            "backports",
            "--accel",
            "tcg",
            "-p",
            "a",
            "flt",
        ]))
        .unwrap();
        assert_eq!(o.flavor, Flavor::Backports);
        assert_eq!(o.accel, "tcg");
        assert_eq!(o.packages, ["a"]);
        assert_eq!(o.filter.as_deref(), Some("flt"));
        assert_eq!(o.power_cut, None);
        assert_eq!(parse(&args(&["--power-cut"])).unwrap().power_cut, Some(6));
        assert_eq!(
            parse(&args(&["--power-cut", "7"])).unwrap().power_cut,
            Some(7)
        );
        assert!(
            parse(&args(&["--power-cut", "4"]))
                .unwrap_err()
                .contains("at least 5")
        );
        assert!(parse(&args(&["--accel", "xen"])).is_err());
        assert!(
            parse(&args(&["--bogus"]))
                .unwrap_err()
                .contains("unknown option")
        );
        assert!(parse(&args(&["a", "b"])).is_err());
    }

    #[test]
    fn run_script_passes_the_filter_only_to_filtered_binaries() {
        let bin = |name: &str, filtered| TestBin {
            name: name.into(),
            path: PathBuf::from("/x").join(name),
            package_dir: PathBuf::from("/w/crates/its"),
            filtered,
        };
        let s = run_script(
            Path::new("/w"),
            &[bin("a-1", true), bin("b-2", false)],
            Some("quota"),
            60,
        );
        assert!(
            s.contains(
                "<<'VMTEST_BINS'\na-1 /w/crates/its quota\nb-2 /w/crates/its\nVMTEST_BINS\n"
            ),
            "{s}"
        );
        assert!(
            s.contains("VMTEST_BTRFS_DEV=/dev/vda VMTEST_XFS_DEV=/dev/vdb VMTEST_SCRATCH=/tmp")
        );
        assert!(s.contains("BIN_TIMEOUT=60"));
        assert!(s.contains("check xfs-prjquota-enospc check_xfs_quota"));
    }
}
