//! Booting the guest: acceleration choice, the qemu command line, the console stream and the
//! watchdogs. qemu is always killed by its own PID (never through a wrapper).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How the guest CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation (`-cpu host`).
    Kvm,
    /// Software emulation (`-cpu max`).
    Tcg,
}

/// Why KVM cannot be used here, or `None` when it really works: `vmx`/`svm` in
/// `/proc/cpuinfo`, no `kvm_pvm` module (PVM only runs patched guests; stock kernels hang) and
/// a `/dev/kvm` this user can open read-write.
pub fn kvm_unusable() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let virt = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !virt {
        return Some("no vmx/svm in /proc/cpuinfo".into());
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Some("/dev/kvm is PVM (kvm_pvm), which cannot run stock kernels".into());
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Some(format!("/dev/kvm: {e}"));
    }
    None
}

/// A virtio disk.
#[derive(Clone)]
pub struct Drive {
    /// The raw image file.
    pub path: PathBuf,
    /// qemu's cache mode: `none` (O_DIRECT, what a power cut test needs) or `unsafe`.
    pub cache: &'static str,
    /// Attached read-only.
    pub readonly: bool,
}

/// One boot of the guest.
pub struct Vm<'a> {
    /// The acceleration.
    pub accel: Accel,
    /// The ELF vmlinux (booted through PVH).
    pub kernel: &'a Path,
    /// The initramfs.
    pub initrd: &'a Path,
    /// Extra kernel command line words.
    pub append: String,
    /// Disks, in `/dev/vda`, `/dev/vdb`, … order.
    pub drives: Vec<Drive>,
    /// A directory shared read-only at the same path (9p tag `vmtest_ro`).
    pub share: Option<&'a Path>,
    /// Guest memory in MiB.
    pub memory_mb: u32,
    /// Virtual CPUs (`-smp`).
    pub cpus: u32,
    /// Watchdog: kill when `VMTEST-STAGE init` has not appeared after this long.
    pub boot_timeout: Duration,
    /// Kill after this long in total.
    pub total_timeout: Duration,
    /// The console is appended here.
    pub log: &'a Path,
    /// Echo console lines to stdout.
    pub echo: bool,
}

/// How a boot ended.
pub struct Outcome {
    /// The guest's `VMTEST-RESULT rc=N`, if it printed one.
    pub rc: Option<i32>,
    /// Why the host killed qemu (watchdog, timeout, or a deliberate cut), if it did.
    pub killed: Option<String>,
    /// Whether `VMTEST-STAGE init` was seen.
    pub booted: bool,
    /// qemu's exit status.
    pub status: String,
}

/// What the line callback asks for.
pub enum Action {
    /// Keep going.
    Continue,
    /// Kill qemu (SIGKILL: a power cut) at this instant.
    KillAt(Instant),
}

impl Vm<'_> {
    fn command(&self) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        match self.accel {
            Accel::Kvm => c.args(["-machine", "pc,accel=kvm", "-cpu", "host"]),
            Accel::Tcg => c.args(["-machine", "pc,accel=tcg", "-cpu", "max"]),
        };
        c.args([
            "-smp",
            &self.cpus.to_string(),
            "-m",
            &format!("{}M", self.memory_mb),
        ]);
        c.args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        if Path::new("/usr/share/qemu/qboot.rom").is_file() {
            c.args(["-bios", "/usr/share/qemu/qboot.rom"]);
        }
        c.args(["-serial", "stdio", "-monitor", "none"]);
        c.arg("-kernel")
            .arg(self.kernel)
            .arg("-initrd")
            .arg(self.initrd);
        c.arg("-append").arg(format!(
            "console=ttyS0 panic=-1 quiet loglevel=4 mitigations=off cryptomgr.notests {}",
            self.append
        ));
        for d in &self.drives {
            let mut spec = format!(
                "file={},format=raw,if=virtio,cache={}",
                d.path.display().to_string().replace(',', ",,"),
                d.cache
            );
            if d.readonly {
                spec.push_str(",readonly=on");
            }
            c.arg("-drive").arg(spec);
        }
        if let Some(share) = self.share {
            c.arg("-virtfs").arg(format!(
                "local,path={},mount_tag=vmtest_ro,security_model=none,readonly=on",
                share.display().to_string().replace(',', ",,")
            ));
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        c
    }

    /// Boots, streams the console (echoed line by line, `\r` stripped, appended to the log) and
    /// calls `on_line` for each line; returns when qemu exits.
    pub fn run(&self, mut on_line: impl FnMut(&str) -> Action) -> Result<Outcome, String> {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut cmd = self.command();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("qemu: no stdout".into());
        };
        let (tx, rx) = mpsc::channel::<String>();
        let echo = self.echo;
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = log.write_all(&buf);
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                        if echo {
                            println!("{line}");
                        }
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let start = Instant::now();
        let mut out = Outcome {
            rc: None,
            killed: None,
            booted: false,
            status: String::new(),
        };
        let mut cut: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let mut deadline = start + self.total_timeout;
            if !out.booted {
                deadline = deadline.min(start + self.boot_timeout);
            }
            if let Some(c) = cut {
                deadline = deadline.min(c);
            }
            match rx.recv_timeout(deadline.saturating_duration_since(now)) {
                Ok(line) => {
                    let l = line.trim();
                    if l == "VMTEST-STAGE init" {
                        out.booted = true;
                    }
                    if let Some(n) = l.strip_prefix("VMTEST-RESULT rc=") {
                        out.rc = n.trim().parse().ok();
                    }
                    if let Action::KillAt(t) = on_line(l) {
                        cut = Some(cut.map_or(t, |c| c.min(t)));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    let why = if cut.is_some_and(|c| now >= c) {
                        "cut".to_string()
                    } else if !out.booted && now >= start + self.boot_timeout {
                        format!(
                            "boot watchdog: no VMTEST-STAGE init after {}s",
                            self.boot_timeout.as_secs()
                        )
                    } else if now >= start + self.total_timeout {
                        format!("overall timeout of {}s", self.total_timeout.as_secs())
                    } else {
                        continue;
                    };
                    let _ = child.kill();
                    out.killed = Some(why);
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child.wait().map_err(|e| format!("qemu: {e}"))?;
        let _ = reader.join();
        // Lines that arrived before the kill still count.
        while let Ok(line) = rx.try_recv() {
            if let Some(n) = line.trim().strip_prefix("VMTEST-RESULT rc=") {
                out.rc = n.trim().parse().ok();
            }
        }
        out.status = status.to_string();
        Ok(out)
    }
}
