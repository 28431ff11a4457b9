//! `cargo xtask fuzz [TARGET...] [--time S] [--runs N] [--list] [-- LIBFUZZER-ARGS]`: the
//! fuzz targets of the `storage-fuzz` crate under libFuzzer, on the stable toolchain.
//!
//! The binary is built with rustc's own sanitizer-coverage pass (`-Cpasses=sancov-module`
//! with inline 8-bit counters, the PC table and comparison tracing, all stable flags; no
//! `-Zsanitizer`, so no nightly) and libFuzzer compiled from C++ by `libfuzzer-sys`, in the
//! `fuzz` profile (optimised, debug assertions and overflow checks on) and its own target
//! directory, `target/fuzz`, so that the instrumentation flags never invalidate the normal
//! build. Each target runs for `--time` seconds (default 20) or `--runs` executions, whichever
//! ends first, on a working corpus `target/fuzz/corpus/<target>` (new inputs go there) seeded
//! from the committed `fuzz/corpus/<target>`; crashes are written to
//! `target/fuzz/artifacts/<target>/`, libFuzzer's output to `target/fuzz/logs/<target>.log`,
//! and a table of the runs to `target/fuzz/summary.md`. The targets that need a directory
//! work in a scratch area on `/dev/shm` (else `target/fuzz/scratch`), removed after each run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::run;

/// The rustc flags of the instrumented build (what cargo-fuzz passes, minus the sanitizer).
const RUSTFLAGS: &[&str] = &[
    "--cfg",
    "fuzzing",
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cforce-frame-pointers=yes",
];

const USAGE: &str = "usage: cargo xtask fuzz [TARGET...] [--time SECONDS] [--runs N] [--list] \
                     [-- LIBFUZZER-ARGS]\n\n\
                     Runs every target (or those named) for SECONDS each (default 20) or N \
                     executions, whichever ends first.\n\
                     Replay a crash: STORAGE_FUZZ_TARGET=<target> target/fuzz/<host>/fuzz/storage-fuzz <file>";

struct Options {
    targets: Vec<String>,
    time: u64,
    runs: Option<u64>,
    list: bool,
    extra: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        targets: Vec::new(),
        time: 20,
        runs: None,
        list: false,
        extra: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut number = |what: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{what} needs a number\n{USAGE}"))
        };
        match a.as_str() {
            "--time" => o.time = number("--time")?,
            "--runs" => o.runs = Some(number("--runs")?),
            "--list" => o.list = true,
            "--" => {
                o.extra = it.cloned().collect();
                break;
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s => o.targets.push(s.to_string()),
        }
    }
    Ok(o)
}

fn host_triple() -> Result<String, String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .map_err(|e| format!("rustc -vV: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .ok_or_else(|| "rustc -vV: no host line".to_string())
}

/// Builds the instrumented binary; returns its path.
fn build(root: &Path) -> Result<PathBuf, String> {
    let host = host_triple()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = root.join("target/fuzz");
    // `--target` keeps the flags off build scripts and proc macros (which rustc loads, and
    // which must not need libFuzzer's symbols).
    run(Command::new(cargo)
        .args(["build", "-p", "storage-fuzz", "--features", "libfuzzer"])
        .args([
            "--bin",
            "storage-fuzz",
            "--profile",
            "fuzz",
            "--target",
            &host,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", RUSTFLAGS.join(" "))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(root))?;
    Ok(target_dir.join(host).join("fuzz/storage-fuzz"))
}

/// A target as the binary lists it.
struct Target {
    name: String,
    max_len: String,
    about: String,
}

fn list(bin: &Path) -> Result<Vec<Target>, String> {
    let out = Command::new(bin)
        .env("STORAGE_FUZZ_LIST", "1")
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let targets: Vec<Target> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            Some(Target {
                name: f.next()?.to_string(),
                max_len: f.next()?.to_string(),
                about: f.next()?.to_string(),
            })
        })
        .collect();
    if !out.status.success() || targets.is_empty() {
        return Err(format!("{} listed no targets", bin.display()));
    }
    Ok(targets)
}

/// What one run did, from libFuzzer's final status line and statistics.
#[derive(Default)]
struct Outcome {
    name: String,
    secs: f64,
    runs: String,
    exec_per_sec: String,
    cov: String,
    ft: String,
    corpus: String,
    new_units: String,
    rss_mb: String,
    failure: Option<String>,
}

/// The value after `key` (`"cov: "`) in a status line.
fn field(line: &str, key: &str) -> Option<String> {
    let rest = &line[line.find(key)? + key.len()..];
    Some(rest.split_whitespace().next()?.to_string())
}

fn parse_log(log: &str, o: &mut Outcome) {
    // The last status line (`#N  DONE|pulse|NEW|REDUCE  cov: … ft: … corp: …`).
    if let Some(l) = log
        .lines()
        .rev()
        .find(|l| l.starts_with('#') && l.contains("cov: "))
    {
        o.cov = field(l, "cov: ").unwrap_or_default();
        o.ft = field(l, "ft: ").unwrap_or_default();
        o.corpus = field(l, "corp: ").unwrap_or_default();
    }
    for l in log.lines() {
        let stat = |k: &str| l.strip_prefix(k).map(|v| v.trim().to_string());
        if let Some(v) = stat("stat::number_of_executed_units:") {
            o.runs = v;
        } else if let Some(v) = stat("stat::average_exec_per_sec:") {
            o.exec_per_sec = v;
        } else if let Some(v) = stat("stat::new_units_added:") {
            o.new_units = v;
        } else if let Some(v) = stat("stat::peak_rss_mb:") {
            o.rss_mb = v;
        }
    }
}

fn run_target(bin: &Path, root: &Path, t: &Target, o: &Options) -> Result<Outcome, String> {
    let fuzz = root.join("target/fuzz");
    let work = fuzz.join("corpus").join(&t.name);
    let seeds = root.join("fuzz/corpus").join(&t.name);
    let artifacts = fuzz.join("artifacts").join(&t.name);
    // Scratch trees on tmpfs when there is one: the unpack target creates and removes a tree
    // per input, which a disk file system makes slow (and other work on the disk slower).
    let shm = Path::new("/dev/shm");
    let scratch = if shm.is_dir() {
        shm.join(format!("storage-fuzz-{}", std::process::id()))
    } else {
        fuzz.join("scratch")
    }
    .join(&t.name);
    let logs = fuzz.join("logs");
    for d in [&work, &artifacts, &logs] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let log_path = logs.join(format!("{}.log", t.name));
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg(&work)
        .arg(&seeds)
        .arg(format!("-max_total_time={}", o.time))
        .arg(format!("-max_len={}", t.max_len))
        .arg("-timeout=30")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(o.runs.map(|r| format!("-runs={r}")))
        .args(&o.extra)
        .env("STORAGE_FUZZ_TARGET", &t.name)
        .env("STORAGE_FUZZ_SCRATCH", &scratch)
        .stdout(Stdio::null())
        .stderr(log);
    eprintln!(
        "xtask fuzz: {} ({} s{}): {}",
        t.name,
        o.time,
        o.runs
            .map(|r| format!(", at most {r} runs"))
            .unwrap_or_default(),
        t.about
    );
    let start = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let mut outcome = Outcome {
        name: t.name.clone(),
        secs: start.elapsed().as_secs_f64(),
        ..Outcome::default()
    };
    let _ = std::fs::remove_dir_all(&scratch);
    if let Some(parent) = scratch.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    parse_log(&text, &mut outcome);
    if !status.success() {
        let artifact = text
            .lines()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .unwrap_or("(none written)")
            .trim()
            .to_string();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        eprintln!("{}", tail.join("\n"));
        outcome.failure = Some(format!(
            "{} failed ({status}); input: {artifact}; log: {}; replay: \
             STORAGE_FUZZ_TARGET={} {} {artifact}",
            t.name,
            log_path.display(),
            t.name,
            bin.display()
        ));
    }
    eprintln!(
        "xtask fuzz: {}: {} runs in {:.0} s ({} exec/s), cov {} ft {} corpus {}{}",
        t.name,
        outcome.runs,
        outcome.secs,
        outcome.exec_per_sec,
        outcome.cov,
        outcome.ft,
        outcome.corpus,
        if outcome.failure.is_some() {
            ", FAILED"
        } else {
            ""
        }
    );
    Ok(outcome)
}

fn summary(outcomes: &[Outcome]) -> String {
    let mut s = String::from(
        "| target | executions | time (s) | exec/s | corpus (files/size) | cov (edges) | ft (features) | new units | peak RSS (MB) | result |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            o.name,
            o.runs,
            o.secs,
            o.exec_per_sec,
            o.corpus,
            o.cov,
            o.ft,
            o.new_units,
            o.rss_mb,
            if o.failure.is_some() { "CRASH" } else { "ok" }
        );
    }
    s
}

/// `cargo xtask fuzz …`.
pub fn main(root: &Path, args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let bin = build(root)?;
    let all = list(&bin)?;
    if o.list {
        for t in &all {
            println!("{:<22}{}", t.name, t.about);
        }
        return Ok(());
    }
    let chosen: Vec<&Target> = if o.targets.is_empty() {
        all.iter().collect()
    } else {
        o.targets
            .iter()
            .map(|n| {
                all.iter()
                    .find(|t| &t.name == n)
                    .ok_or_else(|| format!("no fuzz target {n} (see cargo xtask fuzz --list)"))
            })
            .collect::<Result<_, _>>()?
    };
    let mut outcomes = Vec::new();
    for t in chosen {
        outcomes.push(run_target(&bin, root, t, &o)?);
    }
    let table = summary(&outcomes);
    let path = root.join("target/fuzz/summary.md");
    let _ = std::fs::write(&path, &table);
    eprintln!("\n{table}(also in {})", path.display());
    let failures: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o.failure.as_deref())
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}
