//! Running one measured process: wall time, peak RSS (from `wait4`'s rusage) and what
//! happens to its standard output (captured, hashed, drained or sent to /dev/null).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::Instant;

use sha2::{Digest, Sha256};

/// What to do with the process's standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// Keep it (small outputs: IDs, listings).
    Capture,
    /// Read it through a pipe and compute its sha256 (tar streams that must be checked).
    Hash,
    /// Read it through a pipe and throw it away (a consumer that does work, unlike /dev/null).
    Drain,
    /// Connect it to /dev/null.
    Null,
}

/// What one process did.
#[derive(Debug)]
pub struct Outcome {
    /// Wall-clock seconds from spawn to reaping.
    pub secs: f64,
    /// Peak resident set size in KiB (`ru_maxrss`, includes reaped descendants).
    pub rss_kib: u64,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output when [`Sink::Capture`] was used.
    pub stdout: Vec<u8>,
    /// Lowercase hex sha256 of standard output when [`Sink::Hash`] was used.
    pub sha256: Option<String>,
    /// Bytes read from standard output (pipes only).
    pub out_len: u64,
    /// The first 64 KiB of standard error.
    pub stderr: String,
}

impl Outcome {
    /// A one-line reason for a failure: the first non-empty line of stderr, else of stdout,
    /// else the exit status.
    pub fn reason(&self) -> String {
        let pick = |s: &str| {
            s.lines().map(str::trim).find(|l| !l.is_empty()).map(|l| {
                // logrus lines: keep the msg="…" part.
                match l.find("msg=\"") {
                    Some(i) => l[i + 5..].trim_end_matches('"').to_string(),
                    None => l.to_string(),
                }
            })
        };
        let mut r = pick(&self.stderr)
            .or_else(|| pick(&String::from_utf8_lossy(&self.stdout)))
            .unwrap_or_else(|| format!("{}", self.status));
        if r.len() > 120 {
            let mut cut = 117;
            while !r.is_char_boundary(cut) {
                cut -= 1;
            }
            r.truncate(cut);
            r.push_str("...");
        }
        r
    }
}

/// Resets this process's peak RSS to its current RSS (Linux `clear_refs` value 5).
///
/// A spawned child starts life in (a copy of) our address space, and `exec` folds that
/// address space's peak into the child's `ru_maxrss`: without the reset every child would
/// report at least the benchmark's own peak (e.g. from data generation). What remains is a
/// floor of our current RSS, reported as the `true (RSS floor)` reference.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Writes back every dirty page before a measured process starts (untimed), so that no
/// process pays for another's writes: `syncfs` (which our layer commit calls) waits for all
/// dirty data of the filesystem, including what the previous process (Go's tool, GNU tar,
/// the data generator) left behind without syncing.
fn settle() {
    sync_all();
}

pub use crate::sys::sync_all;
use crate::sys::wait4;

fn read_stdout(mut o: impl Read, sink: Sink) -> (Vec<u8>, Option<String>, u64) {
    let mut buf = vec![0u8; 1 << 20];
    let mut captured = Vec::new();
    let mut hasher = (sink == Sink::Hash).then(Sha256::new);
    let mut len = 0u64;
    loop {
        match o.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                len += n as u64;
                match sink {
                    Sink::Capture => captured.extend_from_slice(&buf[..n]),
                    Sink::Hash => {
                        if let Some(h) = hasher.as_mut() {
                            h.update(&buf[..n]);
                        }
                    }
                    Sink::Drain | Sink::Null => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (captured, hasher.map(|h| hex(&h.finalize())), len)
}

fn read_stderr(mut r: impl Read) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if kept.len() < 65536 {
                    kept.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Runs `cmd` with standard input from `stdin` (or /dev/null) and standard output sent to
/// `sink`; measures it. Fails only when the process cannot be started or reaped.
pub fn measure(cmd: &mut Command, stdin: Option<&Path>, sink: Sink) -> io::Result<Outcome> {
    match stdin {
        Some(p) => {
            let f = File::open(p)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
            cmd.stdin(f);
        }
        None => {
            cmd.stdin(Stdio::null());
        }
    }
    // Pipes and their reader threads exist before the clock starts: only the process is
    // timed, not the setup of its observers.
    let out = if sink == Sink::Null {
        cmd.stdout(Stdio::null());
        None
    } else {
        let (r, w) = io::pipe()?;
        cmd.stdout(w);
        Some(thread::spawn(move || read_stdout(r, sink)))
    };
    let (err_r, err_w) = io::pipe()?;
    cmd.stderr(err_w);
    let err = thread::spawn(move || read_stderr(err_r));
    settle();
    reset_peak_rss();
    let start = Instant::now();
    let spawned = cmd.spawn();
    // Our copies of the write ends must go, or the readers never see end-of-file.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let child = spawned.map_err(|e| io::Error::new(e.kind(), format!("{cmd:?}: {e}")))?;
    let pid = child.id() as libc::pid_t;
    let waited = wait4(pid);
    let secs = start.elapsed().as_secs_f64();
    let (status, usage) = waited?;
    let (stdout, sha256, out_len) =
        out.and_then(|t| t.join().ok())
            .unwrap_or((Vec::new(), None, 0));
    let stderr = err.join().unwrap_or_default();
    Ok(Outcome {
        secs,
        rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        status: ExitStatus::from_raw(status),
        stdout,
        sha256,
        out_len,
        stderr,
    })
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RSS tests see this process's memory: they must not run while another test allocates
    /// much (tests that do take this lock too).
    pub(crate) static RSS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn hashes_and_reports_rss() {
        let o = measure(Command::new("printf").arg("abc"), None, Sink::Hash).expect("printf runs");
        assert!(o.status.success());
        assert_eq!(
            o.sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(o.out_len, 3);
        assert!(o.rss_kib > 0);
    }

    #[test]
    fn our_peak_does_not_leak_into_children() {
        let _serial = RSS.lock().unwrap_or_else(|e| e.into_inner());
        // Raise our own peak by 96 MiB, free it, then measure a tiny child.
        let mut big = vec![0u8; 96 << 20];
        for i in (0..big.len()).step_by(4096) {
            big[i] = 1;
        }
        std::hint::black_box(&big);
        drop(big);
        let o = measure(&mut Command::new("true"), None, Sink::Null).expect("true runs");
        assert!(o.rss_kib < 48 * 1024, "{} KiB", o.rss_kib);
    }

    #[test]
    fn captures_failure_reason() {
        let o = measure(
            Command::new("sh").args([
                "-c",
                "echo 'time=\"x\" level=error msg=\"boom\"' >&2; exit 3",
            ]),
            None,
            Sink::Capture,
        )
        .expect("sh runs");
        assert_eq!(o.status.code(), Some(3));
        assert_eq!(o.reason(), "boom");
    }

    #[test]
    fn rss_grows_with_memory_use() {
        let _serial = RSS.lock().unwrap_or_else(|e| e.into_inner());
        let small = measure(&mut Command::new("true"), None, Sink::Null).expect("true runs");
        // A reaped descendant's peak counts too: sort holds its whole input in memory.
        let sort = measure(
            Command::new("sh").args([
                "-c",
                "head -c 50331648 /dev/urandom | sort -S 128M >/dev/null",
            ]),
            None,
            Sink::Null,
        )
        .expect("sh runs");
        assert!(sort.status.success());
        assert!(
            sort.rss_kib > 48 * 1024 && sort.rss_kib > small.rss_kib + 16 * 1024,
            "{} vs {}",
            sort.rss_kib,
            small.rss_kib
        );
    }
}
