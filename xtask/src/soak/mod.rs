//! `cargo xtask soak [--minutes N]`: the mixed-writer soak.
//!
//! For each driver (vfs and overlay), 16 worker threads share one store under
//! `target/soak/<driver>/`, each running one tool's processes one at a time: our
//! `containers-storage`, Debian's Go `containers-storage` 1.43 and, where installed, podman
//! (`--root/--runroot/--storage-driver` on the same store). They create and delete layers (empty
//! and imported from generated tars), images and containers, add and remove names (on their own
//! items and on shared ones every worker names), set and read back big data, and mount and
//! unmount (writing a file into each container mount), for N minutes. Every operation goes to
//! the worker's journal (`journal-wNN-TOOL.jsonl`) and its model of the store.
//!
//! Afterwards ([`verify`]): every item a worker committed and did not delete is present with its
//! names, parent, diff digest, big data and files; nothing deleted is; no record is unaccounted
//! for; `check` with ours is clean; Go's `layers`, `images` and `containers` load the store; no
//! mount is left counted. Names lost from (or coming back to) shared items are put down to a
//! read-then-set update when one on the same item overlapped: Go 1.43's `add-names` (it reads
//! the names, then sets them) and podman 4.3's `tag`/`untag` (libimage sets the names it read
//! plus or minus one). They are counted apart, by tool, as a comparison; any other lost name is
//! an error.
//!
//! Measured: operations per second by tool, operations that took over 1 s, and lock waits: a
//! probe thread takes each lock file (`layers.lock`, `images.lock`, `containers.lock`,
//! `mountpoints.lock`, `storage.lock`) shared, one after the other every 200 ms, and times the
//! wait. The report goes to stdout and `target/soak/latest.{md,json}`.
//!
//! Podman's containers need an image podman can read: the shared images get an OCI manifest
//! and config as big data, and podman only creates containers on the two shared images on the
//! imported layer (`podman create --network none`), mounts, unmounts and removes its own, and
//! tags and untags the shared images.

mod verify;
mod worker;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use worker::{Env, Exec, Outcome, Shared, Slot, Tool, Worker, digest, exec, layer_tar};

/// The usage text of `cargo xtask soak`.
pub const USAGE: &str = "\
usage: cargo xtask soak [--minutes N] [--drivers vfs,overlay] [--workers 16] [--release] [--keep]

16 processes (ours, Go's containers-storage 1.43 and podman where present) share one store per
driver for N minutes (default 1), creating and deleting layers, images and containers, adding
and removing names, setting big data, mounting and unmounting; then every committed item is
checked, `check` must be clean and Go must load the store. Report: target/soak/latest.md.

options:
  --minutes N        how long the workers run, per driver (fractions allowed; default 1)
  --drivers LIST     comma-separated drivers (default vfs,overlay; overlay needs root)
  --workers N        worker processes at a time (default 16)
  --release          use a release build of our binary (default: the dev build the tests use)
  --keep             keep the stores under target/soak/ (they are kept anyway on failure)
  --seed N           the random seed (default: from the clock; printed)";

/// An operation slower than this is listed (it waited for a lock or for the disk).
const SLOW: f64 = 1.0;
/// A process running longer than this is killed and reported as hung.
const HUNG: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Opts {
    seconds: f64,
    drivers: Vec<String>,
    workers: usize,
    release: bool,
    keep: bool,
    seed: u64,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        seconds: 60.0,
        drivers: vec!["vfs".into(), "overlay".into()],
        workers: 16,
        release: false,
        keep: false,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |n: &str| it.next().cloned().ok_or(format!("{n} needs a value"));
        match a.as_str() {
            "--minutes" => {
                let v = value(a)?;
                let m: f64 = v
                    .parse()
                    .map_err(|_| format!("--minutes {v}: not a number"))?;
                if !(m > 0.0 && m <= 24.0 * 60.0) {
                    return Err(format!("--minutes {v}: expected more than 0"));
                }
                o.seconds = m * 60.0;
            }
            "--drivers" => {
                o.drivers = value(a)?.split(',').map(str::to_string).collect();
                if let Some(d) = o
                    .drivers
                    .iter()
                    .find(|d| !matches!(d.as_str(), "vfs" | "overlay"))
                {
                    return Err(format!("--drivers: {d} is not vfs or overlay"));
                }
            }
            "--workers" => {
                let v = value(a)?;
                o.workers = v
                    .parse()
                    .ok()
                    .filter(|n| (2..=64).contains(n))
                    .ok_or(format!("--workers {v}: expected 2 to 64"))?;
            }
            "--seed" => {
                let v = value(a)?;
                o.seed = v.parse().map_err(|_| format!("--seed {v}: not a number"))?;
            }
            "--release" => o.release = true,
            "--keep" => o.keep = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// Runs `cargo xtask soak ARGS`.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return Ok(());
        }
        Err(e) => return Err(format!("soak: {e}\n\n{USAGE}")),
    };
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let go = PathBuf::from("/usr/bin/containers-storage");
    if !go.is_file() {
        return Err(
            "soak: Debian's Go containers-storage (/usr/bin/containers-storage) is missing: \
             apt-get install containers-storage"
                .into(),
        );
    }
    let podman = which("podman");
    if podman.is_none() {
        eprintln!("soak: NOTE: podman is not installed; the workers are ours and Go's only");
    }
    let mut drivers = opts.drivers.clone();
    if !crate::is_root() && drivers.iter().any(|d| d == "overlay") {
        let msg = "soak: overlay needs root";
        if ci {
            return Err(msg.into());
        }
        eprintln!("{msg}: SKIPPED (not in CI); running vfs only");
        drivers.retain(|d| d != "overlay");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "-p", "storage-cli", "--bin", "containers-storage"])
        .current_dir(root);
    if opts.release {
        build.arg("--release");
    }
    crate::run(&mut build)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let ours = target
        .join(if opts.release { "release" } else { "debug" })
        .join("containers-storage");
    let base = target.join("soak");
    fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    eprintln!(
        "soak: {} workers, {:.1} min per driver ({}), seed {}",
        opts.workers,
        opts.seconds / 60.0,
        drivers.join(", "),
        opts.seed
    );
    let mut reports = Vec::new();
    for d in &drivers {
        let r = run_driver(&opts, &base, d, &ours, &go, podman.clone())?;
        eprintln!(
            "soak: {d}: {} operations, {} errors",
            r.total_ok(),
            r.errors.len()
        );
        reports.push(r);
    }
    let mut md = format!(
        "# Mixed-writer soak\n\n{} workers, {:.1} min per driver, seed {}, our binary: {}\n\n",
        opts.workers,
        opts.seconds / 60.0,
        opts.seed,
        if opts.release { "release" } else { "dev" }
    );
    for r in &reports {
        md.push_str(&r.markdown());
        md.push('\n');
    }
    let json: Vec<serde_json::Value> = reports.iter().map(Report::json).collect();
    let _ = fs::write(base.join("latest.md"), &md);
    let _ = fs::write(
        base.join("latest.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    );
    println!("{md}");
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.errors.is_empty()).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "soak FAILED on {} (stores and journals kept under {})",
            failed
                .iter()
                .map(|r| r.driver.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            base.display()
        ))
    }
}

/// Finds `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Mount points under `dir` (deepest first).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let mut v: Vec<String> = fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        // /proc/mounts escapes blanks as \040; our paths have none.
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.len()));
    v
}

/// Unmounts whatever is mounted under `dir` and removes it.
fn clean(dir: &Path) -> Result<(), String> {
    for m in mounts_under(dir) {
        let _ = Command::new("umount").args(["-l", &m]).status();
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", dir.display())),
    }
}

/// Runs a set-up command with ours, failing on error.
fn setup(env: &Env, args: &[&str]) -> Result<Exec, String> {
    let slot = Slot::default();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let x = exec(env, &slot, Tool::Ours, &args);
    if x.ok {
        Ok(x)
    } else {
        Err(format!(
            "soak set-up: ours {}: {}",
            args.join(" "),
            x.err_line()
        ))
    }
}

/// The shared items: an imported base layer, an empty child of it, three images with an OCI
/// manifest and config (two on the base, for podman) and a container.
fn make_shared(env: &mut Env) -> Result<(), String> {
    let tar = layer_tar("soak-shared-base");
    let tar_path = env.dir.join("shared-base.tar");
    fs::write(&tar_path, &tar).map_err(|e| format!("{}: {e}", tar_path.display()))?;
    let id = |x: Exec| {
        x.id()
            .ok_or_else(|| format!("soak set-up: no ID in {:?}", x.first_line()))
    };
    let l0 = id(setup(
        env,
        &[
            "import-layer",
            "-f",
            &tar_path.to_string_lossy(),
            "-n",
            "soak-shared-l0",
        ],
    )?)?;
    let l1 = id(setup(env, &["create-layer", "-n", "soak-shared-l1", &l0])?)?;
    let diff = digest(&tar);
    let config = format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{\"Cmd\":[\"/bin/sh\"]}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{diff}\"]}}}}"
    );
    let cdigest = digest(config.as_bytes());
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{cdigest}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{diff}\",\"size\":{}}}]}}",
        config.len(),
        tar.len()
    );
    let (cfile, mfile) = (env.dir.join("config.json"), env.dir.join("manifest.json"));
    fs::write(&cfile, &config).map_err(|e| format!("{}: {e}", cfile.display()))?;
    fs::write(&mfile, &manifest).map_err(|e| format!("{}: {e}", mfile.display()))?;
    let mut images = Vec::new();
    for (i, layer) in [&l0, &l0, &l1].into_iter().enumerate() {
        let name = format!("localhost/soak-shared-i{i}:latest");
        let img = id(setup(env, &["create-image", "-n", &name, layer])?)?;
        setup(
            env,
            &[
                "set-image-data",
                "-f",
                &mfile.to_string_lossy(),
                &img,
                "manifest",
            ],
        )?;
        setup(
            env,
            &[
                "set-image-data",
                "-f",
                &cfile.to_string_lossy(),
                &img,
                &cdigest,
            ],
        )?;
        images.push(img);
    }
    let c0 = id(setup(
        env,
        &["create-container", "-n", "soak-shared-c0", &images[0]],
    )?)?;
    env.shared = Shared {
        layers: vec![l0, l1],
        podman_images: images[..2].to_vec(),
        images,
        containers: vec![c0],
    };
    Ok(())
}

/// Lock-wait statistics of one lock file (from the probe).
#[derive(Default, Clone, Debug)]
struct LockStats {
    samples: u64,
    over_1s: u64,
    max: f64,
    total: f64,
}

/// Takes each lock file shared in turn until `stop`, timing the wait.
fn probe(locks: &[PathBuf], stop: &AtomicBool, stats: &Mutex<BTreeMap<String, LockStats>>) {
    let files: Vec<(String, fs::File)> = locks
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            fs::File::open(p).ok().map(|f| (name, f))
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        for (name, f) in &files {
            let t = Instant::now();
            let locked = rustix::fs::fcntl_lock(f, rustix::fs::FlockOperation::LockShared).is_ok();
            let wait = t.elapsed().as_secs_f64();
            if locked {
                let _ = rustix::fs::fcntl_lock(f, rustix::fs::FlockOperation::Unlock);
            }
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            let e = s.entry(name.clone()).or_default();
            e.samples += 1;
            e.total += wait;
            e.max = e.max.max(wait);
            if wait > SLOW {
                e.over_1s += 1;
            }
            drop(s);
            std::thread::sleep(Duration::from_millis(200));
        }
        if files.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One driver's results.
struct Report {
    driver: String,
    seconds: f64,
    workers: BTreeMap<Tool, usize>,
    ok: BTreeMap<Tool, u64>,
    failed: BTreeMap<Tool, u64>,
    per_op: BTreeMap<(Tool, &'static str), (u64, u64)>,
    latency: BTreeMap<Tool, (f64, f64, f64)>,
    slow: Vec<(String, f64, f64)>,
    locks: BTreeMap<String, LockStats>,
    verified: verify::Verified,
    errors: Vec<String>,
}

impl Report {
    fn total_ok(&self) -> u64 {
        self.ok.values().sum()
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## {}: {} operations in {:.0} s ({:.1}/s), {} failed; {}\n",
            self.driver,
            self.total_ok(),
            self.seconds,
            self.total_ok() as f64 / self.seconds,
            self.failed.values().sum::<u64>(),
            if self.errors.is_empty() {
                "verified: OK".to_string()
            } else {
                format!("{} ERRORS", self.errors.len())
            }
        );
        let _ = writeln!(
            s,
            "| tool | workers | operations | ops/s | failed | median | p99 | max |\n|---|---|---|---|---|---|---|---|"
        );
        for (tool, n) in &self.workers {
            let ok = self.ok.get(tool).copied().unwrap_or(0);
            let (p50, p99, max) = self.latency.get(tool).copied().unwrap_or_default();
            let _ = writeln!(
                s,
                "| {} | {n} | {ok} | {:.1} | {} | {:.0} ms | {:.0} ms | {:.2} s |",
                tool.name(),
                ok as f64 / self.seconds,
                self.failed.get(tool).copied().unwrap_or(0),
                p50 * 1000.0,
                p99 * 1000.0,
                max
            );
        }
        let ops: Vec<String> = self
            .per_op
            .iter()
            .map(|((t, op), (ok, f))| {
                if *f > 0 {
                    format!("{} {op} {ok} ({f} failed)", t.name())
                } else {
                    format!("{} {op} {ok}", t.name())
                }
            })
            .collect();
        let _ = writeln!(s, "\nOperations: {}.\n", ops.join(", "));
        let locks: Vec<String> = self
            .locks
            .iter()
            .map(|(n, l)| {
                format!(
                    "{n} {} samples, {} over 1 s, max {:.2} s, mean {:.1} ms",
                    l.samples,
                    l.over_1s,
                    l.max,
                    if l.samples > 0 {
                        l.total / l.samples as f64 * 1000.0
                    } else {
                        0.0
                    }
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "Lock waits (a probe takes each lock shared every ~1 s): {}.\n",
            locks.join("; ")
        );
        let _ = writeln!(
            s,
            "Operations over 1 s: {}{}.\n",
            self.slow.len(),
            if self.slow.is_empty() {
                String::new()
            } else {
                let mut v = self.slow.clone();
                v.sort_by(|a, b| b.1.total_cmp(&a.1));
                format!(
                    " (longest: {})",
                    v.iter()
                        .take(5)
                        .map(|(op, d, at)| format!("{op} {d:.2} s at {at:.0} s"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        let counts: Vec<String> = self
            .verified
            .counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(s, "Verified: {}.\n", counts.join(", "));
        let by = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "0".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{v} ({k})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let _ = writeln!(
            s,
            "Names on shared items lost to a concurrent read-then-set update (Go 1.43 add-names, podman 4.3 tag/untag; by the tools that overlapped): {}; removed names brought back by one: {}; names lost or brought back otherwise (ours): {}.",
            by(&self.verified.race_lost),
            by(&self.verified.race_resurrected),
            self.verified.unexplained_names
        );
        for e in self.errors.iter().take(40) {
            let _ = writeln!(s, "\nERROR: {e}");
        }
        if self.errors.len() > 40 {
            let _ = writeln!(s, "\n… and {} more errors", self.errors.len() - 40);
        }
        s
    }

    fn json(&self) -> serde_json::Value {
        let by_tool = |m: &BTreeMap<Tool, u64>| -> serde_json::Value {
            m.iter()
                .map(|(t, n)| (t.name().to_string(), serde_json::json!(n)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        serde_json::json!({
            "driver": self.driver,
            "seconds": self.seconds,
            "operations": self.total_ok(),
            "ops_per_second": self.total_ok() as f64 / self.seconds,
            "operations_by_tool": by_tool(&self.ok),
            "failed_by_tool": by_tool(&self.failed),
            "workers": self.workers.iter().map(|(t, n)| (t.name().to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
            "slow_operations": self.slow.len(),
            "lock_waits_over_1s": self.locks.values().map(|l| l.over_1s).sum::<u64>(),
            "lock_wait_max_seconds": self.locks.values().map(|l| l.max).fold(0.0, f64::max),
            "verified": self.verified.counts.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "race_names_lost": self.verified.race_lost,
            "race_names_resurrected": self.verified.race_resurrected,
            "names_lost_otherwise": self.verified.unexplained_names,
            "errors": self.errors,
        })
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn run_driver(
    opts: &Opts,
    base: &Path,
    driver: &str,
    ours: &Path,
    go: &Path,
    podman: Option<PathBuf>,
) -> Result<Report, String> {
    let dir = base.join(driver);
    clean(&dir)?;
    fs::create_dir_all(dir.join("podman-tmp")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut env = Env {
        driver: driver.to_string(),
        graph: dir.join("graph"),
        run: dir.join("run"),
        dir: dir.clone(),
        ours: ours.to_path_buf(),
        go: go.to_path_buf(),
        podman,
        t0: Instant::now(),
        shared: Shared::default(),
    };
    make_shared(&mut env)?;
    if env.podman.is_some() {
        // podman's first call on a fresh tmpdir "refreshes" its state: do it before the
        // workers start.
        let x = exec(
            &env,
            &Slot::default(),
            Tool::Podman,
            &["ps".into(), "-a".into()],
        );
        if !x.ok {
            return Err(format!("soak set-up: podman ps -a: {}", x.err_line()));
        }
    }
    // Half ours, half Go; two podman workers when podman is there.
    let tools: Vec<Tool> = (0..opts.workers)
        .map(|i| {
            if env.podman.is_some() && i >= opts.workers - 2 {
                Tool::Podman
            } else if i % 2 == 0 {
                Tool::Ours
            } else {
                Tool::Go
            }
        })
        .collect();
    let slots: Vec<Slot> = tools.iter().map(|_| Slot::default()).collect();
    let stop = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let hung: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let lock_stats = Arc::new(Mutex::new(BTreeMap::new()));
    let locks: Vec<PathBuf> = [
        env.graph.join(format!("{driver}-layers/layers.lock")),
        env.graph.join(format!("{driver}-images/images.lock")),
        env.graph
            .join(format!("{driver}-containers/containers.lock")),
        env.run.join(format!("{driver}-layers/mountpoints.lock")),
        env.graph.join("storage.lock"),
    ]
    .into_iter()
    .filter(|p| p.is_file())
    .collect();
    eprintln!(
        "soak: {driver}: {} workers ({}), running {:.0} s",
        tools.len(),
        tools.iter().map(|t| t.name()).collect::<Vec<_>>().join(" "),
        opts.seconds
    );
    env.t0 = Instant::now();
    let started = Instant::now();
    let mut errors = Vec::new();
    let outcomes: Vec<(usize, Tool, Outcome)> = std::thread::scope(|s| {
        let env = &env;
        let handles: Vec<_> = tools
            .iter()
            .enumerate()
            .map(|(i, &tool)| {
                let slot = &slots[i];
                let stop = &stop;
                s.spawn(move || -> Result<(usize, Tool, Outcome), String> {
                    let mut w = Worker::new(i, tool, env, slot, opts.seed)?;
                    w.run_until(stop);
                    Ok((i, tool, w.out))
                })
            })
            .collect();
        s.spawn(|| probe(&locks, &done, &lock_stats));
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                for (i, slot) in slots.iter().enumerate() {
                    let cur = *slot.current.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some((pid, at)) = cur
                        && at.elapsed() > HUNG
                    {
                        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                        hung.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                            "worker {i}: process {pid} ran over {} s and was killed",
                            HUNG.as_secs()
                        ));
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        while started.elapsed().as_secs_f64() < opts.seconds {
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, Ordering::Relaxed);
        let mut v = Vec::new();
        for h in handles {
            match h.join() {
                Ok(Ok(o)) => v.push(o),
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push("a worker thread panicked".into()),
            }
        }
        done.store(true, Ordering::Relaxed);
        v
    });
    // The workers' clean-up (unmounting) is part of the run.
    let seconds = started.elapsed().as_secs_f64();
    errors.extend(hung.into_inner().unwrap_or_else(|e| e.into_inner()));
    eprintln!("soak: {driver}: workers done after {seconds:.0} s; verifying");
    let refs: Vec<(usize, Tool, &Outcome)> = outcomes.iter().map(|(i, t, o)| (*i, *t, o)).collect();
    let verified = verify::verify(&env, &refs);
    let mut report = Report {
        driver: driver.to_string(),
        seconds,
        workers: BTreeMap::new(),
        ok: BTreeMap::new(),
        failed: BTreeMap::new(),
        per_op: BTreeMap::new(),
        latency: BTreeMap::new(),
        slow: Vec::new(),
        locks: lock_stats.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        verified: verify::Verified::default(),
        errors,
    };
    let mut durations: BTreeMap<Tool, Vec<f64>> = BTreeMap::new();
    for (_, tool, o) in &outcomes {
        *report.workers.entry(*tool).or_default() += 1;
        for (op, n) in &o.ok_ops {
            *report.ok.entry(*tool).or_default() += n;
            report.per_op.entry((*tool, op)).or_default().0 += n;
        }
        for (op, n) in &o.failed_ops {
            *report.failed.entry(*tool).or_default() += n;
            report.per_op.entry((*tool, op)).or_default().1 += n;
        }
        durations
            .entry(*tool)
            .or_default()
            .extend_from_slice(&o.durations);
        report.slow.extend(o.slow.iter().cloned());
        report.errors.extend(
            o.failures
                .iter()
                .map(|f| format!("worker {} ({}): {}", f.worker, f.tool.name(), f.what)),
        );
    }
    for (t, mut d) in durations {
        let max = d.iter().copied().fold(0.0, f64::max);
        report
            .latency
            .insert(t, (quantile(&mut d, 0.5), quantile(&mut d, 0.99), max));
    }
    report.errors.extend(verified.errors.iter().cloned());
    report.verified = verified;
    // Shut the store down (overlay's mounts) and remove it, unless it is kept.
    let _ = exec(
        &env,
        &Slot::default(),
        Tool::Ours,
        &["shutdown".into(), "-f".into()],
    );
    if report.errors.is_empty() && !opts.keep {
        // The journals stay for reference; the store goes.
        for m in mounts_under(&dir) {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        for sub in ["graph", "run", "podman-tmp"] {
            let _ = fs::remove_dir_all(dir.join(sub));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_parse() {
        let o = parse(&args(&[
            "--minutes",
            "0.5",
            "--drivers",
            "vfs",
            "--seed",
            "7",
        ]))
        .unwrap();
        assert_eq!(o.seconds, 30.0);
        assert_eq!(o.drivers, ["vfs"]);
        assert_eq!(o.seed, 7);
        assert_eq!(o.workers, 16);
        assert!(parse(&args(&["--drivers", "btrfs"])).is_err());
        assert!(parse(&args(&["--minutes", "0"])).is_err());
        assert!(parse(&args(&["--workers", "1"])).is_err());
        assert!(
            parse(&args(&["--bogus"]))
                .unwrap_err()
                .contains("unknown option")
        );
    }

    #[test]
    fn generated_content_is_deterministic() {
        assert_eq!(worker::content("a", 100), worker::content("a", 100));
        assert_ne!(worker::content("a", 100), worker::content("b", 100));
        assert_eq!(worker::content("a", 13).len(), 13);
        assert_eq!(layer_tar("x"), layer_tar("x"));
        assert_eq!(
            digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(worker::is_id(&"a".repeat(64)));
        assert!(!worker::is_id(&"A".repeat(64)));
    }
}
