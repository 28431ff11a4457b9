//! `cargo xtask bench`: our `containers-storage` side by side with Debian's Go
//! `containers-storage` and with plain tools (GNU tar, pigz, zstd, cp, find, du, dd) doing the
//! same work on the same file system.
//!
//! ```text
//! cargo xtask bench [--quick] [--workloads apply,diff,changes,child,images,containers,status,import,readers,parallel]
//!                   [--drivers vfs,overlay] [--ours PATH] [--go PATH] [--rounds N]
//! ```
//!
//! Every round runs the whole workload sequence on a fresh store for ours, then for Go (A B A B
//! …), then the reference tools; the table shows medians and min–max (the listing calls
//! `images`, `images --json` and `image NAME` run 10, full: 20, times per round, like the
//! per-call `create-image`: one call of a few milliseconds a round is mostly noise). Before every measured
//! process the page cache's dirty data is written back (`sync`, untimed), so no process pays for
//! another's writes (our layer commit's `syncfs` would otherwise wait for what Go or tar left
//! dirty, and Go and tar never sync their own). After every apply the
//! layer is diffed back (`diff -u`) and its sha256 compared with the original uncompressed tar:
//! a mismatch marks the workload FAIL. A command our CLI does not support is shown as
//! `n/a (ours: <error>)`. Results go to `target/bench/latest.{json,md}`.
//!
//! Limits: timings are wall-clock on a shared machine (other load shows up as wide min–max);
//! peak RSS is `ru_maxrss` from `wait4`, which has a floor of this process's own RSS at spawn
//! time (reported as the `true (RSS floor)` reference). Data is generated once per size in a
//! child process and cached under `target/bench/data/`; stores live under `target/bench/run/`.
//! Nothing is deleted before the last round is done: each apply makes a layer (or tar a
//! directory) of its own, the measured deletions (`delete-layer`, `rm -rf`) come after all
//! rounds, round by round, and then the stores are removed (after `shutdown -f` and unmounting
//! anything left); see `Deletions` for why. The run needs room for every store at once
//! (checked up front: about 60 GiB for the full run with both drivers and 3 rounds).

mod data;
mod proc;
mod report;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use data::{Data, Dataset, Params};
use proc::{Outcome, Sink, measure};
use report::{Cell, Imp, Results, Target};

mod host;

use host::*;

mod seq;

use seq::*;

/// Workload groups `--workloads` selects from.
const GROUPS: &[&str] = &[
    "apply",
    "diff",
    "changes",
    "child",
    "images",
    "containers",
    "status",
    "import",
    "readers",
    "parallel",
];

/// Parsed command line.
#[derive(Clone, Debug)]
struct Opts {
    quick: bool,
    groups: Vec<String>,
    drivers: Vec<String>,
    ours: Option<PathBuf>,
    go: PathBuf,
    rounds: usize,
    /// Internal: only generate the data (run in a child so that our own peak RSS, which
    /// spawned processes inherit as a floor, stays small).
    generate_only: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        quick: false,
        groups: GROUPS.iter().map(|g| g.to_string()).collect(),
        drivers: vec!["vfs".into(), "overlay".into()],
        ours: None,
        go: PathBuf::from("/usr/bin/containers-storage"),
        rounds: 0,
        generate_only: false,
    };
    let mut it = args.iter();
    let list = |v: Option<&String>, what: &str| -> Result<Vec<String>, String> {
        let v = v.ok_or(format!("{what} needs a value"))?;
        Ok(v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect())
    };
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or(format!("{name} needs a value"))
        };
        match flag {
            "--quick" => o.quick = true,
            "--generate-data" => o.generate_only = true,
            "--workloads" => {
                o.groups = list(Some(&value("--workloads")?), "--workloads")?;
                if let Some(bad) = o.groups.iter().find(|g| !GROUPS.contains(&g.as_str())) {
                    return Err(format!(
                        "unknown workload group {bad:?} (known: {})",
                        GROUPS.join(",")
                    ));
                }
            }
            "--drivers" => {
                o.drivers = list(Some(&value("--drivers")?), "--drivers")?;
                if let Some(bad) = o
                    .drivers
                    .iter()
                    .find(|d| !["vfs", "overlay"].contains(&d.as_str()))
                {
                    return Err(format!("unsupported driver {bad:?} (vfs, overlay)"));
                }
            }
            "--ours" => o.ours = Some(PathBuf::from(value("--ours")?)),
            "--go" => o.go = PathBuf::from(value("--go")?),
            "--rounds" => {
                let v = value("--rounds")?;
                o.rounds = v
                    .parse()
                    .map_err(|_| format!("--rounds: not a number: {v:?}"))?;
                if o.rounds == 0 {
                    return Err("--rounds must be at least 1".into());
                }
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.rounds == 0 {
        o.rounds = if o.quick { 2 } else { 3 };
    }
    Ok(o)
}

const USAGE: &str = "usage: cargo xtask bench [--quick] [--workloads apply,diff,changes,child,images,containers,status,import,readers,parallel] \
[--drivers vfs,overlay] [--ours PATH] [--go PATH] [--rounds N]";

/// Sizes of one benchmark configuration.
struct Scale {
    params: Params,
    images: usize,
    per_call: usize,
    containers: usize,
    dd_mib: u64,
}

fn scale(quick: bool) -> Scale {
    if quick {
        Scale {
            params: Params {
                files: 6000,
                large_mib: vec![20, 20],
            },
            images: 100,
            per_call: 10,
            containers: 20,
            dd_mib: 64,
        }
    } else {
        Scale {
            params: Params {
                files: 60_000,
                large_mib: vec![200, 150, 100],
            },
            images: 1000,
            per_call: 20,
            containers: 200,
            dd_mib: 256,
        }
    }
}

/// The reference measurement and targets for a workload (from the project's goals).
pub fn limit_and_target(
    driver: &str,
    workload: &str,
) -> (Option<String>, Option<Target>, Option<u64>) {
    let apply_rss = Some(32);
    let l = |s: &str| Some(s.to_string());
    match workload {
        "applydiff small (tar)" => (l("tar -x small.tar"), Some(Target::Limit(1.3)), apply_rss),
        "import-layer small (.tar.gz)" => (
            l("tar -xz small.tar.gz"),
            Some(Target::Limit(1.0)),
            apply_rss,
        ),
        "import-layer small (.tar.zst)" => (l("tar --zstd -x small.tar.zst"), None, apply_rss),
        "applydiff large (tar)" => (l("tar -x large.tar"), Some(Target::Limit(1.3)), apply_rss),
        "import-layer large (.tar.gz)" => (l("tar -xz large.tar.gz"), None, apply_rss),
        "import-layer large (.tar.zst)" => (l("tar --zstd -x large.tar.zst"), None, apply_rss),
        "applydiff upper (tar)" | "applydiff upper (.tar.gz)" | "applydiff upper (.tar.zst)" => {
            (None, None, apply_rss)
        }
        "diff -u small" => (l("tar -c small tree"), Some(Target::Limit(1.3)), None),
        "diff -c small" => (l("tar -c small tree | pigz"), None, None),
        "changes small" => (l("find small tree"), Some(Target::Limit(2.0)), None),
        "diffsize small" => (l("du -sb small tree"), Some(Target::Limit(2.0)), None),
        "create-layer child of small" if driver == "vfs" => (l("cp -a small tree"), None, None),
        "delete-layer child" if driver == "vfs" => (l("rm -rf copy of small tree"), None, None),
        "delete-layer small" => (l("rm -rf copy of small tree"), None, None),
        w if w.starts_with("create-image per call") => {
            (None, Some(Target::FasterThanGo(3.0)), None)
        }
        w if w.starts_with("images --json") => (None, Some(Target::FasterThanGo(4.0)), None),
        READERS_WAIT => (None, Some(Target::AtMost(0.05)), None),
        PARALLEL_IMPORT => (
            None,
            Some(Target::RatioToOurs {
                ours_row: PARALLEL_SERIAL,
                at_most: 0.65,
            }),
            None,
        ),
        IMPORT_IMAGE => (
            Some(skopeo_limit(driver)),
            Some(Target::WithinOursAndFaster {
                ours_row: "applydiff small (tar)",
                within: 1.1,
                faster: 3.0,
            }),
            apply_rss,
        ),
        _ => (None, None, None),
    }
}

/// The apply of the `readers` group (see `Seq::readers_during_apply`).
pub const READERS_APPLY: &str = "import-layer large (.tar.gz), readers running";

/// The longest reader call (`layers`, `images --json`, `layers --json`) during
/// [`READERS_APPLY`]; the target is 50 ms.
pub const READERS_WAIT: &str = "longest reader call during that apply";

/// The `parallel` group (overlay only): the eight layers of [`Seq::image_layers`] applied one
/// by one as a chain (`create-layer` + `applydiff` per layer, ours and Go; the sample is the
/// sum of the 16 calls).
pub const PARALLEL_SERIAL: &str = "8-layer image one by one (create-layer + applydiff)";

/// The same eight layers through `import-layers` (ours only: prepared in parallel outside
/// the store lock, committed in order); the target is at most 0.65× our
/// [`PARALLEL_SERIAL`].
pub const PARALLEL_IMPORT: &str = "8-layer image, import-layers (parallel)";

/// The row of `import-image` of the small layer as a one-layer OCI image (ours only: Go's
/// CLI has no such command).
pub const IMPORT_IMAGE: &str = "import-image small (OCI layout, tar)";

/// The reference of [`IMPORT_IMAGE`]: skopeo copying the same layout into a fresh store.
pub fn skopeo_limit(driver: &str) -> String {
    format!("skopeo copy oci:small to a fresh {driver} store")
}

/// The reference that does the same work as an apply *and* makes it durable (GNU tar, then a
/// `sync -f` of what it wrote), for the apply workloads whose target is against plain `tar`:
/// our apply ends with a `syncfs` before the layer is marked complete, which tar never does.
/// Shown beside the target's verdict; the verdict itself stays against plain `tar`.
pub fn durable_limit(workload: &str) -> Option<&'static str> {
    let i = match workload {
        "applydiff small (tar)" => 0,
        "import-layer small (.tar.gz)" => 1,
        "applydiff large (tar)" => 2,
        _ => return None,
    };
    Some(DURABLE_LIMITS[i])
}

/// The durable references [`limits`] measures (see [`durable_limit`]).
const DURABLE_LIMITS: [&str; 3] = [
    "tar -x small.tar + sync",
    "tar -xz small.tar.gz + sync",
    "tar -x large.tar + sync",
];

/// One binary on one store.
struct Cli {
    bin: PathBuf,
    graph: PathBuf,
    run: PathBuf,
    driver: String,
    conf: PathBuf,
}

impl Cli {
    fn cmd(&self, args: &[String]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("CONTAINERS_STORAGE_CONF", &self.conf)
            .arg("--graph")
            .arg(&self.graph)
            .arg("--run")
            .arg(&self.run)
            .arg("--storage-driver")
            .arg(&self.driver)
            .args(args);
        c
    }

    /// Runs a command that is not measured; Err carries the reason it failed.
    fn untimed(&self, args: &[String], sink: Sink) -> Result<Outcome, String> {
        let o = measure(&mut self.cmd(args), None, sink).map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(o)
        } else {
            Err(format!("{}: {}", args[0], o.reason()))
        }
    }
}

fn s<T: AsRef<std::ffi::OsStr> + ?Sized>(x: &T) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

fn first_id(o: &Outcome) -> Result<String, String> {
    let out = String::from_utf8_lossy(&o.stdout);
    let id = out.lines().next().unwrap_or("").trim().to_string();
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(format!(
            "unexpected output {:?}",
            out.chars().take(80).collect::<String>()
        ))
    }
}

/// The row name of applying `name` in format `fmt`: `import-layer` for base layers in a
/// compressed format, `applydiff` (onto a created layer) otherwise.
fn apply_workload(name: &str, fmt: Fmt, child: bool) -> String {
    match (fmt, child) {
        (Fmt::Tar, _) => format!("applydiff {name} (tar)"),
        (Fmt::Gz, true) => format!("applydiff {name} (.tar.gz)"),
        (Fmt::Zst, true) => format!("applydiff {name} (.tar.zst)"),
        (Fmt::Gz, false) => format!("import-layer {name} (.tar.gz)"),
        (Fmt::Zst, false) => format!("import-layer {name} (.tar.zst)"),
    }
}

/// `cargo xtask bench ARGS`.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let opts = parse(args)?;
    let scale = scale(opts.quick);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bench = target.join("bench");
    let data_dir = bench.join("data");
    if opts.generate_only {
        return data::prepare(&data_dir, &scale.params).map(|_| ());
    }
    // One benchmark at a time per target dir: a second run would unmount and remove the
    // stores of the first under its feet (`target/bench/run` is wiped at the start).
    fs::create_dir_all(&bench).map_err(|e| format!("creating {}: {e}", bench.display()))?;
    let lock_path = bench.join("bench.lock");
    let run_lock = fs::File::create(&lock_path)
        .map_err(|e| format!("creating {}: {e}", lock_path.display()))?;
    if run_lock.try_lock().is_err() {
        return Err(format!(
            "another `cargo xtask bench` is running on {} (it holds {})",
            bench.display(),
            lock_path.display()
        ));
    }
    ensure_tools(&opts.go)?;
    let ours = match &opts.ours {
        Some(p) => p.clone(),
        None => crate::build_release_cli(root)?,
    };
    for (who, p) in [("ours", &ours), ("go", &opts.go)] {
        if !p.exists() {
            return Err(format!("{who}: {} does not exist", p.display()));
        }
    }
    let mut data = match data::cached(&data_dir, &scale.params) {
        Some(d) => d,
        None => {
            let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            let mut c = Command::new(exe);
            c.args(["bench", "--generate-data"]);
            if opts.quick {
                c.arg("--quick");
            }
            crate::run(&mut c)?;
            data::cached(&data_dir, &scale.params)
                .ok_or("the generated benchmark data is incomplete")?
        }
    };
    if opts.groups.iter().any(|g| g == "import") {
        data::oci_small(&mut data)?;
    }
    let run_dir = bench.join("run");
    let mut deletions = Deletions::new(&bench);
    deletions.remove(&run_dir)?;
    fs::create_dir_all(&run_dir).map_err(|e| e.to_string())?;
    let conf = run_dir.join("storage.conf");
    fs::write(&conf, "[storage]\n").map_err(|e| e.to_string())?;

    let mut res = Results::default();
    let mut drivers = Vec::new();
    for d in &opts.drivers {
        if d == "overlay" {
            let probe = run_dir.join("probe");
            if let Err(e) = driver_works(&ours, d, &probe, &conf) {
                let why = format!("overlay: ours: {e}");
                eprintln!("bench: skipped: {why}");
                res.skipped.push(why);
                continue;
            }
            if let Err(e) = driver_works(&opts.go, d, &probe, &conf) {
                let why = format!("overlay: go: {e}");
                eprintln!("bench: skipped: {why}");
                res.skipped.push(why);
                continue;
            }
        }
        drivers.push(d.clone());
    }
    check_space(&run_dir, &data, drivers.len(), opts.rounds, &opts.groups)?;
    deletions.wait_out();
    let started = std::time::Instant::now();
    // Phase 1, round by round: everything but deletions, ours and Go alternately, then the
    // tools. Nothing is deleted until every round is done (see `Deletions`).
    let mut open = Vec::new();
    let mut limit_dirs = Vec::new();
    for round in 1..=opts.rounds {
        for d in &drivers {
            for imp in [Imp::Ours, Imp::Go] {
                eprintln!("bench: round {round}/{}: {d}: {}", opts.rounds, imp.name());
                let dir = run_dir.join(format!("{d}-{}-r{round}", imp.name()));
                deletions.remove(&dir)?;
                let bin = if imp == Imp::Ours {
                    ours.clone()
                } else {
                    opts.go.clone()
                };
                let cli = Cli {
                    bin,
                    graph: dir.join("root"),
                    run: dir.join("run"),
                    driver: d.clone(),
                    conf: conf.clone(),
                };
                let ctx = (&data, &scale, opts.groups.as_slice());
                let mut seq = Seq::new(cli, imp, &mut res, ctx, Later::default());
                seq.run();
                eprintln!(
                    "bench: ({} for this sequence)",
                    report::secs(seq.started.elapsed().as_secs_f64())
                );
                let Seq { cli, later, .. } = seq;
                open.push((round, dir, cli, imp, later));
            }
        }
        eprintln!("bench: round {round}/{}: reference tools", opts.rounds);
        let limits_dir = run_dir.join(format!("limits-r{round}"));
        let t = std::time::Instant::now();
        limits(
            &mut res,
            &data,
            &limits_dir,
            (&scale, &opts.groups, &drivers),
        )?;
        eprintln!(
            "bench: ({} for the tools)",
            report::secs(t.elapsed().as_secs_f64())
        );
        limit_dirs.push(limits_dir);
    }
    // Phase 2: the measured deletions, round by round in the same order; then the stores go.
    let mut open = open.into_iter().peekable();
    for (round, limits_dir) in (1..=opts.rounds).zip(limit_dirs) {
        eprintln!("bench: round {round}/{}: deletions", opts.rounds);
        let mut dirs = Vec::new();
        while let Some((_, dir, cli, imp, later)) = open.next_if(|o| o.0 == round) {
            let ctx = (&data, &scale, opts.groups.as_slice());
            Seq::new(cli, imp, &mut res, ctx, later).deletions();
            dirs.push(dir);
        }
        limit_deletions(&mut res, &limits_dir);
        dirs.push(limits_dir);
        for dir in &dirs {
            deletions.remove(dir)?;
        }
    }
    let measured_min = started.elapsed().as_secs_f64() / 60.0;
    let title = format!(
        "containers-storage benchmark ({}; {} rounds; {measured_min:.1} min; ours {} vs Go {})",
        if opts.quick { "quick" } else { "full" },
        opts.rounds,
        ours.display(),
        opts.go.display()
    );
    let params = serde_json::json!({
        "quick": opts.quick,
        "rounds": opts.rounds,
        "drivers": drivers,
        "workloads": opts.groups,
        "ours": s(&ours),
        "go": s(&opts.go),
        "small": {"files": scale.params.files, "tar_bytes": data.small.size, "entries": data.small.entries},
        "large": {"mib": scale.params.large_mib, "tar_bytes": data.large.size},
        "lower": {"tar_bytes": data.lower.size, "entries": data.lower.entries},
        "upper": {"tar_bytes": data.upper.size, "entries": data.upper.entries},
        "data_dir": s(&data.dir),
        "images": scale.images,
        "containers": scale.containers,
        "minutes": measured_min,
    });
    println!("{title}\n\n{}", res.text());
    let misses = res.misses();
    if !misses.is_empty() {
        println!("targets missed or not measurable:");
        for r in misses {
            println!("  {} {}", r.driver, r.workload);
        }
    }
    let json = serde_json::to_string_pretty(&res.json(params)).map_err(|e| e.to_string())?;
    fs::write(bench.join("latest.json"), json).map_err(|e| e.to_string())?;
    fs::write(bench.join("latest.md"), res.markdown(&title)).map_err(|e| e.to_string())?;
    println!(
        "\nsaved {} and {}",
        bench.join("latest.json").display(),
        bench.join("latest.md").display()
    );
    deletions.remove(&run_dir)?;
    eprintln!(
        "bench: done in {:.1} min (stores removed)",
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_options() {
        let o = parse(&args(&[
            "--quick",
            "--drivers",
            "vfs",
            "--workloads=apply,images",
            "--rounds",
            "4",
        ]))
        .expect("valid");
        assert!(o.quick);
        assert_eq!(o.drivers, ["vfs"]);
        assert_eq!(o.groups, ["apply", "images"]);
        assert_eq!(o.rounds, 4);
        assert_eq!(parse(&[]).expect("defaults").rounds, 3);
        assert_eq!(parse(&args(&["--quick"])).expect("quick").rounds, 2);
        assert!(parse(&args(&["--rounds", "0"])).is_err());
        assert!(parse(&args(&["--drivers", "btrfs"])).is_err());
        assert!(parse(&args(&["--workloads", "nope"])).is_err());
        assert!(parse(&args(&["--ours"])).is_err());
    }
}
