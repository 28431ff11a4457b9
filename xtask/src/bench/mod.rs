//! `cargo xtask bench`: our `containers-storage` side by side with Debian's Go
//! `containers-storage` and with plain tools (GNU tar, pigz, zstd, cp, find, du, dd) doing the
//! same work on the same file system.
//!
//! ```text
//! cargo xtask bench [--quick] [--workloads apply,diff,changes,child,images,containers,status,import,readers]
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

const USAGE: &str = "usage: cargo xtask bench [--quick] [--workloads apply,diff,changes,child,images,containers,status,import,readers] \
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

/// The workload sequence of one binary on one fresh store, recording into `res`.
struct Seq<'a> {
    cli: Cli,
    imp: Imp,
    res: &'a mut Results,
    data: &'a Data,
    scale: &'a Scale,
    groups: &'a [String],
    started: std::time::Instant,
    later: Later,
}

/// The measured deletions of a sequence, run after the last round (see [`Deletions`]).
#[derive(Default)]
struct Later {
    /// The `.tar.gz` small layer, for `delete-layer small`.
    small: Option<String>,
    /// The child of the small layer, for `delete-layer child`.
    child: Option<String>,
}

#[derive(Clone, Copy)]
enum Fmt {
    Tar,
    Gz,
    Zst,
}

impl<'a> Seq<'a> {
    /// A sequence on `cli`'s store, its clock started now.
    fn new(
        cli: Cli,
        imp: Imp,
        res: &'a mut Results,
        (data, scale, groups): (&'a Data, &'a Scale, &'a [String]),
        later: Later,
    ) -> Self {
        Seq {
            cli,
            imp,
            res,
            data,
            scale,
            groups,
            started: std::time::Instant::now(),
            later,
        }
    }

    fn want(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }

    fn cell(&mut self, w: &str) -> &mut Cell {
        let d = self.cli.driver.clone();
        self.res.cell(&d, w, self.imp)
    }

    fn error(&mut self, w: &str, why: String) {
        let c = self.cell(w);
        if c.error.is_none() {
            c.error = Some(why);
        }
    }

    fn fail(&mut self, w: &str, why: String) {
        let c = self.cell(w);
        if c.fail.is_none() {
            c.fail = Some(why);
        }
    }

    /// Runs one measured command and records its time and peak RSS under `w` (or its error).
    fn timed(
        &mut self,
        w: &str,
        args: &[String],
        stdin: Option<&Path>,
        sink: Sink,
    ) -> Result<Outcome, String> {
        self.sample(w, args, stdin, sink, !w.contains("per call"))
    }

    /// Runs the call once and adds its time and RSS to `w` (an error or a failed exit
    /// marks `w` instead); `log` prints the time.
    fn sample(
        &mut self,
        w: &str,
        args: &[String],
        stdin: Option<&Path>,
        sink: Sink,
        log: bool,
    ) -> Result<Outcome, String> {
        let o = match measure(&mut self.cli.cmd(args), stdin, sink) {
            Ok(o) => o,
            Err(e) => {
                self.error(w, e.to_string());
                return Err(e.to_string());
            }
        };
        if !o.status.success() {
            let why = o.reason();
            eprintln!(
                "bench: {:>6.1}s  {w}: failed: {why}",
                self.started.elapsed().as_secs_f64()
            );
            self.error(w, why.clone());
            return Err(why);
        }
        if log {
            eprintln!(
                "bench: {:>6.1}s  {w}: {}",
                self.started.elapsed().as_secs_f64(),
                report::secs(o.secs)
            );
        }
        let c = self.cell(w);
        c.secs.push(o.secs);
        c.rss_kib.push(o.rss_kib);
        Ok(o)
    }

    /// [`Self::timed`], then `reps - 1` more runs of the same read-only call, each one more
    /// sample of `w`: calls of a few milliseconds need more than one per round for a stable
    /// median. Returns the first run (the one whose output the caller checks).
    fn timed_reps(&mut self, w: &str, args: &[String], reps: usize) -> Result<Outcome, String> {
        let first = self.timed(w, args, None, Sink::Capture)?;
        for _ in 1..reps {
            self.sample(w, args, None, Sink::Capture, false)?;
        }
        Ok(first)
    }

    /// `diff -u` of `layer` must hash to the dataset's tar; a mismatch marks `w` FAIL. When
    /// `as_workload` is given, a diff is also timed under that name, its output drained like
    /// the `tar -c` it is compared with (hashing in this process would take CPU time from the
    /// measured one), and checked by the untimed, hashed run that follows.
    fn check(&mut self, w: &str, layer: &str, ds: &Dataset, as_workload: Option<&str>) {
        let args = vec!["diff".to_string(), "-u".into(), layer.into()];
        if let Some(dw) = as_workload
            && let Ok(o) = self.timed(dw, &args, None, Sink::Drain)
            && o.out_len != ds.size
        {
            let why = format!("diff -u gave {} bytes, the tar has {}", o.out_len, ds.size);
            self.fail(dw, why);
        }
        let got = self.cli.untimed(&args, Sink::Hash);
        match got {
            Ok(o) if o.sha256.as_deref() == Some(ds.sha256.as_str()) => {}
            Ok(o) => {
                let why = format!(
                    "diff -u sha256 {}… ({} bytes) != tar {}… ({} bytes)",
                    o.sha256.as_deref().unwrap_or("").get(..12).unwrap_or(""),
                    o.out_len,
                    &ds.sha256[..12],
                    ds.size
                );
                self.fail(w, why.clone());
                if let Some(dw) = as_workload {
                    self.fail(dw, why);
                }
            }
            Err(e) => self.fail(w, format!("unverified: {e}")),
        }
    }

    /// Applies `ds` in format `fmt` as a new layer (child of `parent`); checks it; returns
    /// the layer ID.
    fn apply(
        &mut self,
        ds: &Dataset,
        fmt: Fmt,
        parent: Option<&str>,
        diff_workload: Option<&str>,
    ) -> Option<String> {
        let w = apply_workload(&ds.name, fmt, parent.is_some());
        let file = match fmt {
            Fmt::Tar => &ds.tar,
            Fmt::Gz => &ds.gz,
            Fmt::Zst => &ds.zst,
        };
        let parent_args: Vec<String> = parent.map(String::from).into_iter().collect();
        // Children (the upper layer) are created first and filled by applydiff so that the
        // vfs copy of the parent is not part of the measured apply.
        let id = match (fmt, parent.is_some()) {
            (Fmt::Tar, _) | (_, true) => {
                let created = self
                    .cli
                    .untimed(
                        &[vec!["create-layer".to_string()], parent_args].concat(),
                        Sink::Capture,
                    )
                    .and_then(|o| first_id(&o));
                let id = match created {
                    Ok(id) => id,
                    Err(e) => {
                        self.error(&w, e);
                        return None;
                    }
                };
                let args = vec!["applydiff".to_string(), "-f".into(), s(file), id.clone()];
                self.timed(&w, &args, None, Sink::Capture).ok()?;
                id
            }
            (Fmt::Gz | Fmt::Zst, false) => {
                let args = [
                    vec!["import-layer".to_string(), "-f".into(), s(file)],
                    parent_args,
                ]
                .concat();
                let o = self.timed(&w, &args, None, Sink::Capture).ok()?;
                match first_id(&o) {
                    Ok(id) => id,
                    Err(e) => {
                        self.fail(&w, e);
                        return None;
                    }
                }
            }
        };
        self.check(&w, &id, ds, diff_workload);
        Some(id)
    }

    /// Creates a layer (child of `parent`) and fills it with `ds`'s plain tar, unmeasured.
    fn apply_untimed(&mut self, ds: &Dataset, parent: Option<&str>) -> Result<String, String> {
        let mut args = vec!["create-layer".to_string()];
        args.extend(parent.map(String::from));
        let id = first_id(&self.cli.untimed(&args, Sink::Capture)?)?;
        let args = vec!["applydiff".to_string(), "-f".into(), s(&ds.tar), id.clone()];
        self.cli.untimed(&args, Sink::Capture)?;
        Ok(id)
    }

    fn run(&mut self) {
        let data = self.data;
        let apply = self.want("apply");
        // The small layer is the base of most other workloads: applied (and checked) even
        // when the apply group is not selected, recorded only when it is.
        let diff_w = self.want("diff").then_some("diff -u small");
        let small = if apply {
            self.apply(&data.small, Fmt::Tar, None, diff_w)
        } else {
            let id = self.apply_untimed(&data.small, None).ok();
            if let (Some(id), Some(dw)) = (&id, diff_w) {
                self.check(dw, id, &data.small, Some(dw));
            }
            id
        };
        if apply {
            // Nothing is deleted before the last round is done (see `Deletions`): every
            // apply gets a layer of its own.
            for fmt in [Fmt::Gz, Fmt::Zst] {
                if let Some(id) = self.apply(&data.small, fmt, None, None)
                    && matches!(fmt, Fmt::Gz)
                {
                    self.later.small = Some(id);
                }
            }
            for fmt in [Fmt::Tar, Fmt::Gz, Fmt::Zst] {
                let _ = self.apply(&data.large, fmt, None, None);
            }
            // The upper layer goes on top of `lower` (checked like every apply).
            let lower = self.apply_untimed(&data.lower, None).and_then(|id| {
                let args = vec!["diff".to_string(), "-u".into(), id.clone()];
                let o = self.cli.untimed(&args, Sink::Hash)?;
                if o.sha256.as_deref() == Some(data.lower.sha256.as_str()) {
                    Ok(id)
                } else {
                    Err("the lower layer does not diff back to its tar".into())
                }
            });
            for fmt in [Fmt::Tar, Fmt::Gz, Fmt::Zst] {
                match &lower {
                    Ok(p) => {
                        let _ = self.apply(&data.upper, fmt, Some(p.as_str()), None);
                    }
                    Err(e) => {
                        let w = apply_workload("upper", fmt, true);
                        self.error(&w, format!("needs the lower layer: {e}"));
                    }
                }
            }
        }
        let needs = |seq: &mut Self, ws: &[&str]| {
            for w in ws {
                seq.error(
                    w,
                    "needs the small layer, which could not be applied".into(),
                );
            }
        };
        if self.want("diff") {
            match &small {
                Some(id) => {
                    let args = vec!["diff".to_string(), "-c".into(), id.clone()];
                    if let Ok(o) = self.timed("diff -c small", &args, None, Sink::Drain)
                        && o.out_len < 20
                    {
                        self.fail(
                            "diff -c small",
                            format!("only {} bytes of output", o.out_len),
                        );
                    }
                }
                None => needs(self, &["diff -u small", "diff -c small"]),
            }
        }
        if self.want("changes") {
            match &small {
                Some(id) => {
                    let want_entries = data.small.entries;
                    if let Ok(o) = self.timed(
                        "changes small",
                        &["changes".into(), id.clone()],
                        None,
                        Sink::Capture,
                    ) {
                        let n = o
                            .stdout
                            .split(|b| *b == b'\n')
                            .filter(|l| l.starts_with(b"Add "))
                            .count() as u64;
                        if n != want_entries {
                            self.fail(
                                "changes small",
                                format!("{n} Add lines, tar has {want_entries} entries"),
                            );
                        }
                    }
                    if let Ok(o) = self.timed(
                        "diffsize small",
                        &["diffsize".into(), id.clone()],
                        None,
                        Sink::Capture,
                    ) {
                        let txt = String::from_utf8_lossy(&o.stdout).trim().to_string();
                        if txt.parse::<u64>().is_err() {
                            self.fail("diffsize small", format!("not a number: {txt:?}"));
                        }
                    }
                }
                None => needs(self, &["changes small", "diffsize small"]),
            }
        }
        if self.want("child") {
            self.child(small.as_deref());
        }
        if self.want("images") || self.want("containers") {
            self.images_and_containers();
        }
        if self.want("status") {
            let _ = self.timed("status", &["status".into()], None, Sink::Capture);
        }
        if self.want("import") && self.imp == Imp::Ours {
            self.import_image();
        }
        if self.want("readers") {
            self.readers_during_apply();
        }
    }

    /// [`READERS_APPLY`] and [`READERS_WAIT`]: `import-layer` of the large `.tar.gz` runs in
    /// the background while `layers`, `images --json` and `layers --json` run one after
    /// another (with a short pause between rounds, so that the readers do not take the
    /// apply's CPU); the round's sample of [`READERS_WAIT`] is the longest of those calls.
    /// Ours extracts outside the store lock, so the readers do not wait for the data; Go
    /// holds the layers lock for the whole apply. The layer is checked like every apply.
    fn readers_during_apply(&mut self) {
        use std::process::Stdio;
        use std::time::{Duration, Instant};
        let ds = self.data.large.clone();
        let args = vec!["import-layer".to_string(), "-f".into(), s(&ds.gz)];
        let _ = Command::new("sync").status();
        let start = Instant::now();
        let spawned = self
            .cli
            .cmd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                self.error(READERS_APPLY, e.to_string());
                self.error(READERS_WAIT, e.to_string());
                return;
            }
        };
        let readers: [&[&str]; 3] = [&["layers"], &["images", "--json"], &["layers", "--json"]];
        let mut longest = 0f64;
        let mut calls = 0usize;
        let mut failure = None;
        while matches!(child.try_wait(), Ok(None)) {
            for r in readers {
                let a: Vec<String> = r.iter().map(|x| x.to_string()).collect();
                let t = Instant::now();
                let o = self.cli.cmd(&a).stdin(Stdio::null()).output();
                let secs = t.elapsed().as_secs_f64();
                match o {
                    Ok(o) if o.status.success() => {
                        longest = longest.max(secs);
                        calls += 1;
                    }
                    Ok(o) => {
                        failure.get_or_insert(format!(
                            "{}: {}",
                            r.join(" "),
                            String::from_utf8_lossy(&o.stderr).trim()
                        ));
                    }
                    Err(e) => {
                        failure.get_or_insert(format!("{}: {e}", r.join(" ")));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output();
        let apply_secs = start.elapsed().as_secs_f64();
        let id = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
                self.error(READERS_APPLY, why.clone());
                self.error(READERS_WAIT, why);
                return;
            }
            Err(e) => {
                self.error(READERS_APPLY, e.to_string());
                self.error(READERS_WAIT, e.to_string());
                return;
            }
        };
        eprintln!(
            "bench: {:>6.1}s  {READERS_APPLY}: {}; {calls} reader calls, longest {}",
            self.started.elapsed().as_secs_f64(),
            report::secs(apply_secs),
            report::secs(longest)
        );
        self.cell(READERS_APPLY).secs.push(apply_secs);
        match (failure, calls) {
            (Some(why), _) => self.error(READERS_WAIT, why),
            (None, 0) => self.error(READERS_WAIT, "the apply ended before a reader ran".into()),
            (None, _) => self.cell(READERS_WAIT).secs.push(longest),
        }
        self.check(READERS_APPLY, &id, &ds, None);
    }

    /// `import-image` of the small layer's OCI layout into a store of its own (in the
    /// sequence's store the layer's content is already there and would be copied from it),
    /// checked like an apply: the layer (ID = its diff ID's hex) must diff back to the tar.
    fn import_image(&mut self) {
        let Some(layout) = self.data.oci_small.clone() else {
            self.error(IMPORT_IMAGE, "no OCI layout of the small layer".into());
            return;
        };
        let own = Cli {
            bin: self.cli.bin.clone(),
            graph: self.cli.graph.with_extension("import"),
            run: self.cli.run.with_extension("import"),
            driver: self.cli.driver.clone(),
            conf: self.cli.conf.clone(),
        };
        let main = std::mem::replace(&mut self.cli, own);
        let args = vec![
            "import-image".to_string(),
            format!("oci:{}:small", layout.display()),
        ];
        if self.timed(IMPORT_IMAGE, &args, None, Sink::Capture).is_ok() {
            let layer = self.data.small.sha256.clone();
            let ds = self.data.small.clone();
            self.check(IMPORT_IMAGE, &layer, &ds, None);
        }
        self.cli = main;
    }

    /// The measured deletions left for after the last round, then `shutdown -f`.
    fn deletions(&mut self) {
        if let Some(id) = self.later.small.take() {
            let args = vec!["delete-layer".to_string(), id];
            let _ = self.timed("delete-layer small", &args, None, Sink::Capture);
        }
        if let Some(id) = self.later.child.take() {
            let args = vec!["delete-layer".to_string(), id];
            let _ = self.timed("delete-layer child", &args, None, Sink::Capture);
        }
        let _ = self
            .cli
            .untimed(&["shutdown".into(), "-f".into()], Sink::Capture);
    }

    fn child(&mut self, small: Option<&str>) {
        let ws = [
            "create-layer child of small",
            "mount child",
            "unmount child",
            "delete-layer child",
        ];
        let Some(small) = small else {
            for w in ws {
                self.error(
                    w,
                    "needs the small layer, which could not be applied".into(),
                );
            }
            return;
        };
        let child = self
            .timed(
                ws[0],
                &["create-layer".into(), small.into()],
                None,
                Sink::Capture,
            )
            .and_then(|o| first_id(&o).inspect_err(|e| self.fail(ws[0], e.clone())));
        let Ok(child) = child else {
            for w in &ws[1..] {
                self.error(
                    w,
                    "needs the child layer, which could not be created".into(),
                );
            }
            return;
        };
        match self.timed(ws[1], &["mount".into(), child.clone()], None, Sink::Capture) {
            Ok(o) => {
                let mnt = String::from_utf8_lossy(&o.stdout).trim().to_string();
                // The child shows its parent's content.
                let first_dir = Path::new(&mnt).join("d0001");
                if !first_dir.is_dir() {
                    self.fail(ws[1], format!("{} does not show the parent's files", mnt));
                }
                let unmount = vec!["unmount".to_string(), child.clone()];
                if let Ok(o) = self.timed(ws[2], &unmount, None, Sink::Capture)
                    && !String::from_utf8_lossy(&o.stdout).contains("unmounted")
                {
                    self.fail(ws[2], "no \"mountpoint unmounted\" line".into());
                }
            }
            Err(_) => self.error(ws[2], "needs a mounted layer".into()),
        }
        self.later.child = Some(child);
    }

    fn images_and_containers(&mut self) {
        let n = self.scale.images;
        let k = self.scale.per_call;
        let m = self.scale.containers;
        let w_total = format!("create-image ×{n} (total)");
        let w_call = format!("create-image per call @{n}");
        let w_images = format!("images @{n}");
        let w_json = format!("images --json @{n}");
        let w_image = format!("image NAME @{n}");
        let w_del = format!("delete-image ×{} (one call)", n + k - 1);
        let w_ctr = format!("create-container ×{m} (total)");
        let w_ctr_call = "create-container per call".to_string();
        let all = [
            &w_total,
            &w_call,
            &w_images,
            &w_json,
            &w_image,
            &w_del,
            &w_ctr,
            &w_ctr_call,
        ];
        let base = self
            .cli
            .untimed(&["create-layer".into()], Sink::Capture)
            .and_then(|o| first_id(&o));
        let base = match base {
            Ok(b) => b,
            Err(e) => {
                for w in all {
                    self.error(w, format!("needs a base layer: {e}"));
                }
                return;
            }
        };
        let name = |i: usize| format!("localhost/bench/img-{i:04}:latest");
        let mut total = 0.0;
        let mut peak = 0;
        let mut created = 0;
        let mut failed = None;
        for i in 0..n + k {
            let args = vec![
                "create-image".to_string(),
                "-n".into(),
                name(i),
                base.clone(),
            ];
            let o = match measure(&mut self.cli.cmd(&args), None, Sink::Capture) {
                Ok(o) if o.status.success() => o,
                Ok(o) => {
                    failed = Some(o.reason());
                    break;
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            };
            created += 1;
            if i < n {
                total += o.secs;
                peak = peak.max(o.rss_kib);
            } else {
                let c = self.cell(&w_call);
                c.secs.push(o.secs);
                c.rss_kib.push(o.rss_kib);
            }
        }
        if let Some(e) = failed {
            for w in all {
                self.error(w, format!("create-image: {e}"));
            }
            return;
        }
        let c = self.cell(&w_total);
        c.secs.push(total);
        c.rss_kib.push(peak);
        if self.want("images") {
            if let Ok(o) = self.timed_reps(&w_images, &["images".into()], k) {
                let ids = o
                    .stdout
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty() && l[0] != b'\t')
                    .count();
                if ids != created {
                    self.fail(&w_images, format!("{ids} images listed, {created} created"));
                }
            }
            if let Ok(o) = self.timed_reps(&w_json, &["images".into(), "--json".into()], k) {
                let len = serde_json::from_slice::<serde_json::Value>(&o.stdout)
                    .ok()
                    .and_then(|v| v.as_array().map(Vec::len));
                if len != Some(created) {
                    self.fail(
                        &w_json,
                        format!("JSON has {len:?} images, {created} created"),
                    );
                }
            }
            let image = vec!["image".to_string(), name(n / 2)];
            if let Ok(o) = self.timed_reps(&w_image, &image, k)
                && !String::from_utf8_lossy(&o.stdout).contains(&name(n / 2))
            {
                self.fail(&w_image, "the image's name is not shown".into());
            }
            let mut args = vec!["delete-image".to_string()];
            args.extend((1..n + k).map(name));
            let quiet = vec!["images".to_string(), "-q".into()];
            if self.timed(&w_del, &args, None, Sink::Capture).is_ok()
                && let Ok(o) = self.cli.untimed(&quiet, Sink::Capture)
            {
                let left = o
                    .stdout
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count();
                if left != 1 {
                    self.fail(&w_del, format!("{left} images left, expected 1"));
                }
            }
        }
        if self.want("containers") {
            let mut total = 0.0;
            let mut peak = 0;
            let mut failed = None;
            for i in 0..m {
                let args = vec![
                    "create-container".to_string(),
                    "-n".into(),
                    format!("bench-ctr-{i:04}"),
                    name(0),
                ];
                match self.timed(&w_ctr_call, &args, None, Sink::Capture) {
                    Ok(o) => {
                        total += o.secs;
                        peak = peak.max(o.rss_kib);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                Some(e) => self.error(&w_ctr, e),
                None => {
                    let c = self.cell(&w_ctr);
                    c.secs.push(total);
                    c.rss_kib.push(peak);
                }
            }
        }
    }
}

/// Unmounts everything mounted under `dir` (deepest first): stores left by a failed run.
fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = s(dir);
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg(&p).status();
    }
}

fn remove_dir(dir: &Path) -> Result<(), String> {
    unmount_under(dir);
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Why the benchmark deletes nothing until every round is done, and the wait before it starts.
///
/// ext4 without a journal (the root file system of the machine this was built on) prefers not
/// to reuse an inode freed in the last 60 s, or 6 min while its inode-table block is dirty: to
/// allocate an inode it checks the free ones of the group against their deletion time, one
/// buffer lookup each, and only takes a recently freed one when the group has nothing else.
/// A tree extracted next to one just deleted then costs several times more in the kernel:
/// 60 000 files took 15 s instead of 3–6 s, 65 % of the profile in `recently_deleted` and
/// `find_get_block_common` under `ext4_create`. Which workload paid depended on where the
/// previous tree had been, so rows moved by 2× between runs, and a minute's wait between
/// rounds was not enough (new inodes dirty the blocks of the old ones again, which brings
/// back the 6 min window). So every apply gets a layer (and every tar a directory) of its own,
/// the measured deletions (`delete-layer`, `rm -rf`) all come after the last round, round by
/// round in the same order, and only then do the stores go. What an earlier run left behind
/// is removed first, and the run starts once the last deletion (also that of an earlier run,
/// noted in `target/bench/deleted-at`) is written back and 6 min old, when the file system
/// ages freed inodes.
struct Deletions {
    /// The file system prefers old inodes (ext4 without a journal, or not known).
    ages: bool,
    last: Option<std::time::SystemTime>,
    stamp: PathBuf,
}

impl Deletions {
    /// How long ext4 may pass over a freed inode (its dirty-block window, plus a second).
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(361);

    /// `bench` is the benchmark's directory: its `deleted-at` file says when the last run
    /// removed its stores.
    fn new(bench: &Path) -> Deletions {
        Deletions {
            ages: inode_reuse_waits(bench),
            last: fs::metadata(bench.join("deleted-at"))
                .and_then(|m| m.modified())
                .ok(),
            stamp: bench.join("deleted-at"),
        }
    }

    /// Notes that files were just deleted (for later runs too).
    fn mark(&mut self) {
        self.last = Some(std::time::SystemTime::now());
        let _ = fs::write(&self.stamp, b"");
    }

    /// Removes `dir` (unmounting what is under it), if it exists.
    fn remove(&mut self, dir: &Path) -> Result<(), String> {
        if dir.exists() {
            remove_dir(dir)?;
            self.mark();
        }
        Ok(())
    }

    /// Waits until the last deletion is written back and old enough not to matter.
    fn wait_out(&mut self) {
        let Some(at) = self.last.take() else {
            return;
        };
        if !self.ages {
            return;
        }
        proc::sync_all();
        let age = at.elapsed().unwrap_or_default();
        if let Some(left) = Self::WINDOW.checked_sub(age) {
            eprintln!(
                "bench: waiting {:.0} s: files were deleted {:.0} s ago, and ext4 without a \
                 journal is slow to allocate inodes next to ones freed in the last 6 min",
                left.as_secs_f64(),
                age.as_secs_f64()
            );
            std::thread::sleep(left);
        }
    }
}

/// Whether the file system of `dir` delays the reuse of freed inodes: ext4 without a journal
/// (`/sys/fs/ext4/DEV/journal_task` says `<none>`). True when it is ext4 and that cannot be
/// read.
fn inode_reuse_waits(dir: &Path) -> bool {
    let Ok(o) = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE,FSTYPE", "-T"])
        .arg(dir)
        .output()
    else {
        return false;
    };
    let out = String::from_utf8_lossy(&o.stdout);
    let mut it = out.split_whitespace();
    let (Some(source), Some("ext4")) = (it.next(), it.next()) else {
        return false;
    };
    let dev = fs::canonicalize(source).unwrap_or_else(|_| PathBuf::from(source));
    let Some(name) = dev.file_name() else {
        return true;
    };
    match fs::read_to_string(Path::new("/sys/fs/ext4").join(name).join("journal_task")) {
        Ok(t) => t.trim() == "<none>",
        Err(_) => true,
    }
}

/// Fails early when the file system of `dir` cannot hold all rounds' stores and trees, which
/// stay until every round is done (see [`Deletions`]).
fn check_space(
    dir: &Path,
    data: &Data,
    drivers: usize,
    rounds: usize,
    groups: &[String],
) -> Result<(), String> {
    let want = |g: &str| groups.iter().any(|x| x == g);
    let (small, large) = (data.small.size, data.large.size);
    let lower = data.lower.size + data.upper.size;
    let mut per_seq = if want("apply") {
        3 * small + 3 * large + 4 * lower
    } else {
        small
    };
    let mut tools = 0;
    if want("apply") {
        tools += 3 * small + 3 * large;
    }
    if want("child") {
        per_seq += small;
    }
    if want("child") || want("apply") {
        tools += small;
    }
    if want("readers") {
        per_seq += large;
    }
    if want("import") {
        // Our import (a store of its own, ours only) and skopeo's, per driver.
        per_seq += small / 2;
        tools += drivers as u64 * small;
    }
    // Small files take more room on disk than in a tar (blocks, inodes, tar-split files).
    let need = (2 * drivers as u64 * per_seq + tools) * rounds as u64 / 10 * 13;
    let o = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .map_err(|e| format!("df: {e}"))?;
    let avail = String::from_utf8_lossy(&o.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse::<u64>().ok());
    match avail {
        Some(a) if a < need => Err(format!(
            "{} has {:.1} GiB free; the benchmark keeps every store until its last round \
             and needs about {:.1} GiB (fewer --rounds, --drivers or --workloads need less)",
            dir.display(),
            a as f64 / (1u64 << 30) as f64,
            need as f64 / (1u64 << 30) as f64
        )),
        _ => Ok(()),
    }
}

/// The reference tools, once per round.
fn limits(
    res: &mut Results,
    data: &Data,
    dir: &Path,
    (scale, groups, drivers): (&Scale, &[String], &[String]),
) -> Result<(), String> {
    remove_dir(dir)?;
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let want = |g: &str| groups.iter().any(|x| x == g);
    let mut rec = |name: &str, cmd: &mut Command, sink: Sink| record(res, name, cmd, sink);
    if want("apply") {
        // Every extraction gets a directory of its own: nothing is deleted before the last
        // round is done (see `Deletions`).
        let mut k = 0;
        for ds in [&data.small, &data.large] {
            let n = &ds.name;
            for (label, flag, file) in [
                (format!("tar -x {n}.tar"), None, &ds.tar),
                (format!("tar -xz {n}.tar.gz"), Some("-z"), &ds.gz),
                (
                    format!("tar --zstd -x {n}.tar.zst"),
                    Some("--zstd"),
                    &ds.zst,
                ),
            ] {
                let tar_args = |x: &Path| {
                    let mut a: Vec<std::ffi::OsString> =
                        vec!["--numeric-owner".into(), "-xp".into()];
                    a.extend(flag.map(Into::into));
                    a.extend(["-f".into(), file.into(), "-C".into(), x.into()]);
                    a
                };
                k += 1;
                let x = dir.join(format!("x{k}"));
                fs::create_dir_all(&x).map_err(|e| e.to_string())?;
                rec(&label, Command::new("tar").args(tar_args(&x)), Sink::Null);
                let durable = format!("{label} + sync");
                if DURABLE_LIMITS.contains(&durable.as_str()) {
                    k += 1;
                    let x = dir.join(format!("x{k}"));
                    fs::create_dir_all(&x).map_err(|e| e.to_string())?;
                    let mut c = Command::new("sh");
                    c.arg("-c")
                        .arg(r#"dir=$1; shift; tar "$@" && sync -f "$dir""#)
                        .arg("sh")
                        .arg(&x)
                        .args(tar_args(&x));
                    rec(&durable, &mut c, Sink::Null);
                }
            }
            rec(
                &format!("pigz -d {n}.tar.gz >/dev/null"),
                Command::new("pigz").arg("-dc").arg(&ds.gz),
                Sink::Null,
            );
            rec(
                &format!("zstd -d {n}.tar.zst >/dev/null"),
                Command::new("zstd").arg("-qdc").arg(&ds.zst),
                Sink::Null,
            );
        }
    }
    let tree = &data.tree;
    if want("diff") {
        rec(
            "tar -c small tree",
            Command::new("tar")
                .arg("-cf")
                .arg("-")
                .arg("-C")
                .arg(tree)
                .arg("."),
            Sink::Drain,
        );
        rec(
            "tar -c small tree | pigz",
            Command::new("tar")
                .args(["--use-compress-program=pigz", "-cf", "-", "-C"])
                .arg(tree)
                .arg("."),
            Sink::Drain,
        );
    }
    if want("changes") {
        rec(
            "find small tree",
            Command::new("find").arg(tree),
            Sink::Drain,
        );
        rec(
            "du -sb small tree",
            Command::new("du").arg("-sb").arg(tree),
            Sink::Drain,
        );
    }
    if want("child") || want("apply") {
        rec(
            "cp -a small tree",
            Command::new("cp").arg("-a").arg(tree).arg(dir.join("copy")),
            Sink::Null,
        );
    }
    if want("import")
        && let Some(layout) = &data.oci_small
    {
        for d in drivers {
            let store = dir.join(format!("skopeo-{d}"));
            let dest = format!(
                "containers-storage:[{d}@{}+{}]localhost/bench:small",
                store.join("root").display(),
                store.join("run").display()
            );
            rec(
                &skopeo_limit(d),
                Command::new("skopeo")
                    .args(["copy", "--quiet"])
                    .arg(format!("oci:{}:small", layout.display()))
                    .arg(dest),
                Sink::Null,
            );
            unmount_under(&store);
        }
    }
    rec("true (RSS floor)", &mut Command::new("true"), Sink::Null);
    let f = dir.join("dd.out");
    rec(
        &format!("dd {} MiB conv=fdatasync", scale.dd_mib),
        Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", f.display()))
            .arg("bs=1M")
            .arg(format!("count={}", scale.dd_mib))
            .arg("conv=fdatasync"),
        Sink::Null,
    );
    Ok(())
}

/// The reference tools' measured deletion, after the last round: `rm -rf` of the tree
/// `cp -a` made in [`limits`].
fn limit_deletions(res: &mut Results, dir: &Path) {
    let copy = dir.join("copy");
    if copy.exists() {
        record(
            res,
            "rm -rf copy of small tree",
            Command::new("rm").arg("-rf").arg(&copy),
            Sink::Null,
        );
    }
}

/// Runs one reference command and records its time and peak RSS under `name`.
fn record(res: &mut Results, name: &str, cmd: &mut Command, sink: Sink) {
    let cell = res.limits.entry(name.to_string()).or_default();
    match measure(cmd, None, sink) {
        Ok(o) if o.status.success() => {
            cell.secs.push(o.secs);
            cell.rss_kib.push(o.rss_kib);
        }
        Ok(o) => cell.error = Some(o.reason()),
        Err(e) => cell.error = Some(e.to_string()),
    }
}

fn ensure_tools(go: &Path) -> Result<(), String> {
    let mut missing: Vec<&str> = Vec::new();
    if !go.exists() && go == Path::new("/usr/bin/containers-storage") {
        missing.push("containers-storage");
    }
    for (tool, pkg) in [("pigz", "pigz"), ("zstd", "zstd"), ("skopeo", "skopeo")] {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool} >/dev/null"))
            .status();
        if !ok.map(|s| s.success()).unwrap_or(false) {
            missing.push(pkg);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        return Err(format!(
            "missing Debian packages (run as root to install): {}",
            missing.join(" ")
        ));
    }
    crate::run(Command::new("apt-get").arg("update"))?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if go.exists() {
        Ok(())
    } else {
        Err(format!("{} is still missing", go.display()))
    }
}

/// Whether `bin` can create a layer with `driver` on a scratch store under `dir`.
fn driver_works(bin: &Path, driver: &str, dir: &Path, conf: &Path) -> Result<(), String> {
    remove_dir(dir)?;
    let cli = Cli {
        bin: bin.into(),
        graph: dir.join("root"),
        run: dir.join("run"),
        driver: driver.into(),
        conf: conf.into(),
    };
    let r = cli
        .untimed(&["create-layer".into()], Sink::Capture)
        .and_then(|o| first_id(&o).map(|_| ()));
    let _ = cli.untimed(&["shutdown".into(), "-f".into()], Sink::Capture);
    remove_dir(dir)?;
    r
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
