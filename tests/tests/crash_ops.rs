//! Crash harness: every mutating CLI operation is killed with SIGKILL at many points, and the
//! store must survive each kill.
//!
//! For each operation the harness first runs it once under `strace` to count its write-type
//! system calls, then re-runs it on a fresh copy of the same store killing it right before
//! the k-th call of one syscall (`strace -e inject=SYSCALL:signal=SIGKILL:when=k`), for many
//! (syscall, k) pairs: every token `pwrite64`, `fdatasync`, `fsync`, `syncfs` and `rename*`
//! and a spread of the other writes. After each kill:
//!
//! * our CLI opens the store (`layers --json`);
//! * `check` is clean, or `check -r` makes it clean;
//! * nothing committed before the operation is gone or changed (IDs, parents and digests of
//!   layers, images' top layers, containers' images and layers), except what the operation
//!   itself deletes;
//! * Go's `containers-storage layers` / `images` / `containers` read the store.
//!
//! Operations whose command our CLI does not have yet are reported and skipped.
//!
//! The staged applies (`import-layer`, `import-layers`) are also killed at chosen points of
//! their three phases, found in a traced run (`strace -y`): while the data is prepared in a
//! staging directory, right before the commit takes the layers lock, and during the commit.
//! After each kill, besides the checks above: every new layer is complete (its diff
//! reproduces its tar) and the new layers are a prefix of the chain, and our next
//! read-write load leaves no staging directory behind.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;
use storage_tests::tars::TarBuilder;
use storage_tests::{Cs, go_cs, ok, ours, peer, require};

/// The syscalls that change state (durable ones first).
const DURABLE: &[&str] = &[
    "pwrite64",
    "fdatasync",
    "fsync",
    "syncfs",
    "rename",
    "renameat",
    "renameat2",
];
const OTHER_WRITES: &[&str] = &[
    "write",
    "mkdir",
    "mkdirat",
    "unlink",
    "unlinkat",
    "rmdir",
    "ftruncate",
    "fchmodat",
    "fchownat",
    "utimensat",
    "symlinkat",
    "linkat",
];

/// Syscalls that change nothing, used to add kill points to short operations (lock
/// acquisition, opening and reading the record files).
const QUIET: &[&str] = &[
    "openat",
    "fcntl",
    "close",
    "read",
    "newfstatat",
    "statx",
    "lseek",
];

/// Records that must survive, keyed by ID, with the fields that must not change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Snapshot {
    layers: BTreeMap<String, String>,
    images: BTreeMap<String, String>,
    containers: BTreeMap<String, String>,
}

fn field(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn records(cs: &Cs, what: &str) -> Result<Vec<Value>, String> {
    let out = cs.ours(&[what, "--json"]);
    if !out.status.success() {
        return Err(format!(
            "{what} --json failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{what} --json: bad JSON: {e}"))?;
    Ok(match v {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        other => return Err(format!("{what} --json: not an array: {other}")),
    })
}

fn snapshot(cs: &Cs, with_images: bool, with_containers: bool) -> Result<Snapshot, String> {
    let mut s = Snapshot::default();
    for l in records(cs, "layers")? {
        s.layers.insert(
            field(&l, "id"),
            format!(
                "parent={} diff={} size={} comp={}",
                field(&l, "parent"),
                field(&l, "diff-digest"),
                field(&l, "diff-size"),
                field(&l, "compressed-diff-digest")
            ),
        );
    }
    if with_images {
        for i in records(cs, "images")? {
            s.images
                .insert(field(&i, "id"), format!("layer={}", field(&i, "layer")));
        }
    }
    if with_containers {
        for c in records(cs, "containers")? {
            s.containers.insert(
                field(&c, "id"),
                format!("image={} layer={}", field(&c, "image"), field(&c, "layer")),
            );
        }
    }
    Ok(s)
}

/// Every record of `after` and of `before` must look as it did before the operation or as
/// a complete run of the operation leaves it (`done`); nothing else may appear changed or
/// vanish.
fn compare(before: &Snapshot, done: &Snapshot, after: &Snapshot) -> Result<(), String> {
    for (what, b, d, a) in [
        ("layer", &before.layers, &done.layers, &after.layers),
        ("image", &before.images, &done.images, &after.images),
        (
            "container",
            &before.containers,
            &done.containers,
            &after.containers,
        ),
    ] {
        for (id, old) in b {
            match (a.get(id), d.get(id)) {
                (Some(now), _) if now == old => {}
                (Some(now), Some(new)) if now == new => {}
                (Some(now), _) => return Err(format!("{what} {id} changed: {old} -> {now}")),
                (None, None) => {}
                (None, Some(_)) => return Err(format!("committed {what} {id} is gone")),
            }
        }
    }
    Ok(())
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn cp_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp -a");
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// Unmounts everything under the store's directory (the overlay driver keeps its home
/// bind-mounted between commands, as Go's does): `shutdown -f` first, then any leftover.
fn release(cs: &Cs) {
    let _ = cs.ours(&["shutdown", "-f"]);
    let root = cs.dir.path().to_string_lossy().into_owned();
    let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| p.starts_with(&root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(&p).status();
    }
}

/// Calls [`release`] when dropped (also when a test panics).
struct Released<'a>(&'a Cs);

impl Drop for Released<'_> {
    fn drop(&mut self) {
        release(self.0);
    }
}

/// One mutating operation of the CLI.
struct Op {
    name: &'static str,
    /// The command whose presence in `--help` enables this operation.
    command: &'static str,
    args: Vec<String>,
}

struct Harness {
    template: Cs,
    strace: PathBuf,
    has_images: bool,
    has_containers: bool,
    before: Snapshot,
}

impl Harness {
    /// A fresh copy of the template store.
    fn copy(&self) -> Cs {
        let cs = Cs::new(&self.template.driver);
        cp_tree(&self.template.graph, &cs.graph);
        cp_tree(&self.template.run, &cs.run);
        cs
    }

    fn op_command(&self, cs: &Cs, op: &Op) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            ours().into(),
            "--graph".into(),
            cs.graph.clone().into(),
            "--run".into(),
            cs.run.clone().into(),
            "--storage-driver".into(),
            self.template.driver.clone().into(),
        ];
        v.extend(op.args.iter().map(OsString::from));
        v
    }

    fn strace(&self, extra: &[String], cmd: &[OsString]) -> Output {
        Command::new(&self.strace)
            .args(["-f", "-qq"])
            .args(extra)
            .arg("--")
            .args(cmd)
            .env_remove("STORAGE_OPTS")
            .env_remove("STORAGE_DRIVER")
            .env_remove("CONTAINERS_STORAGE_CONF")
            .stdin(Stdio::null())
            .output()
            .expect("run strace")
    }

    /// Counts the write-type syscalls of one complete run of `op`; also returns the records
    /// a complete run leaves.
    fn count(&self, op: &Op) -> (BTreeMap<String, usize>, Snapshot) {
        let (calls, done) = self.trace(op);
        let mut counts = BTreeMap::new();
        for c in calls {
            *counts.entry(c.name).or_insert(0) += 1;
        }
        (counts, done)
    }

    /// The (syscall, k) kill points for `op`: every durable call, then a spread of the rest.
    fn kill_points(counts: &BTreeMap<String, usize>, target: usize) -> Vec<(String, usize)> {
        let mut points = Vec::new();
        for s in DURABLE {
            if let Some(&n) = counts.get(*s) {
                // All of them, up to a generous cap spread over the range.
                for k in spread(n, 24) {
                    points.push((s.to_string(), k));
                }
            }
        }
        let others: Vec<(&String, &usize)> = counts
            .iter()
            .filter(|(s, _)| OTHER_WRITES.contains(&s.as_str()))
            .collect();
        let total_other: usize = others.iter().map(|(_, n)| **n).sum();
        let budget = target.saturating_sub(points.len()).max(others.len() * 2);
        for (s, &n) in others {
            let share = ((budget * n).div_ceil(total_other.max(1))).clamp(1, n);
            for k in spread(n, share) {
                points.push((s.clone(), k));
            }
        }
        // Short operations: add points before lock, open and read calls too.
        let quiet: Vec<(&String, &usize)> = counts
            .iter()
            .filter(|(s, _)| QUIET.contains(&s.as_str()))
            .collect();
        let missing = target.saturating_sub(points.len());
        let total_quiet: usize = quiet.iter().map(|(_, n)| **n).sum();
        if missing > 0 && total_quiet > 0 {
            for (s, &n) in quiet {
                let share = (missing * n).div_ceil(total_quiet).clamp(1, n);
                for k in spread(n, share) {
                    points.push((s.clone(), k));
                }
            }
        }
        points
    }

    /// Runs `op` on `cs`, killed with SIGKILL right before a thread's `k`-th call of `sys`.
    fn kill(&self, cs: &Cs, op: &Op, sys: &str, k: usize) -> Output {
        self.strace(
            &[
                "-o".into(),
                "/dev/null".into(),
                "-e".into(),
                format!("trace={sys}"),
                "-e".into(),
                format!("inject={sys}:signal=SIGKILL:when={k}"),
            ],
            &self.op_command(cs, op),
        )
    }

    /// Checks the store after a kill. Returns a description of the failure, if any.
    fn verify(&self, cs: &Cs, done: &Snapshot) -> Result<(), String> {
        // 1. It opens.
        records(cs, "layers")?;
        // 2. check, then check -r if needed.
        let c = cs.ours(&["check"]);
        if !c.status.success() {
            let r = cs.ours(&["check", "-r"]);
            if !r.status.success() {
                return Err(format!(
                    "check -r failed after check found:\n{}\n{}",
                    text(&c),
                    text(&r)
                ));
            }
            let again = cs.ours(&["check"]);
            if !again.status.success() {
                return Err(format!("check not clean after check -r:\n{}", text(&again)));
            }
        }
        // 3. Nothing committed is lost.
        let after = snapshot(cs, self.has_images, self.has_containers)?;
        compare(&self.before, done, &after)?;
        // 4. Go reads it.
        if go_cs().is_some() {
            let mut what = vec!["layers"];
            if self.has_images {
                what.push("images");
            }
            if self.has_containers {
                what.push("containers");
            }
            for w in what {
                let o = cs.go(&[w]);
                if !o.status.success() {
                    return Err(format!("Go `{w}` cannot read the store:\n{}", text(&o)));
                }
            }
        }
        Ok(())
    }
}

/// strace, when it and Go's `containers-storage` (which reads the crashed stores) are here.
fn peers() -> Option<PathBuf> {
    let strace = peer("strace");
    if !require(strace.is_some(), "strace for the crash harness")
        || !require(
            go_cs().is_some(),
            "Go containers-storage to read the crashed stores",
        )
    {
        return None;
    }
    strace
}

/// `want` values of 1..=n, evenly spread, always including 1 and n.
fn spread(n: usize, want: usize) -> Vec<usize> {
    if n == 0 || want == 0 {
        return Vec::new();
    }
    if want >= n {
        return (1..=n).collect();
    }
    let mut v: Vec<usize> = (0..want)
        .map(|i| 1 + i * (n - 1) / (want - 1).max(1))
        .collect();
    v.dedup();
    v
}

fn first_line(out: &Output) -> String {
    ok(out)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn killed_operations_never_break_the_store() {
    run_harness("vfs", 210, None);
}

/// The layer, image and container operations on overlay (what podman uses): fewer points.
#[test]
fn killed_overlay_operations_never_break_the_store() {
    if !overlay_here() {
        return;
    }
    run_harness(
        "overlay",
        0,
        Some(&[
            "create-layer",
            "applydiff",
            "delete-layer",
            "create-image",
            "create-container",
            "delete-image",
        ]),
    );
}

/// Runs every operation (or those named in `only`) on `driver`, killing each at least 24
/// times; `min_total` kill points must be exercised overall.
fn run_harness(driver: &str, min_total: usize, only: Option<&[&str]>) {
    let Some(strace) = peers() else { return };
    let started = Instant::now();
    let help = Command::new(ours()).arg("--help").output().expect("help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let has = |c: &str| help.lines().any(|l| l.split_whitespace().next() == Some(c));
    let has_images = has("create-image") && has("images");
    let has_containers = has("create-container") && has("containers");

    // The template store: a base layer from a tar, a lone layer, an empty target layer for
    // applydiff, and when supported an image (with data), a second image on its own layer,
    // and a container.
    let template = Cs::new(driver);
    let template_released = Released(&template);
    let work = template.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let small = TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/hosts", 0o644, b"127.0.0.1 localhost\n")
        .file("bin/tool", 0o755, &[0x7f; 4000])
        .symlink("bin/link", "tool")
        .finish();
    let small_tar = work.join("small.tar");
    std::fs::write(&small_tar, &small).expect("write");
    let small_arg = small_tar.display().to_string();
    let base = first_line(&template.ours(&["import-layer", "-n", "base", "-f", &small_arg]));
    let lone = first_line(&template.ours(&["create-layer", "-n", "lone", &base]));
    let target = first_line(&template.ours(&["create-layer", "-n", "target"]));
    let mut image = String::new();
    let mut image2 = String::new();
    if has_images {
        image = first_line(&template.ours(&["create-image", "-n", "img", &base]));
        let image2_layer = first_line(&template.ours(&["import-layer", "-f", &small_arg]));
        image2 = first_line(&template.ours(&["create-image", "-n", "img2", &image2_layer]));
        let data = work.join("data");
        std::fs::write(&data, b"{\"config\":true}").expect("write");
        if has("set-image-data") {
            ok(&template.ours(&[
                "set-image-data",
                "-f",
                &data.display().to_string(),
                &image,
                "config",
            ]));
        }
    }
    if has_containers && !image.is_empty() {
        first_line(&template.ours(&["create-container", "-n", "ctr", &image]));
    }
    let clean = template.ours(&["check"]);
    assert!(
        clean.status.success(),
        "template not clean:\n{}",
        text(&clean)
    );
    let before = snapshot(&template, has_images, has_containers).expect("snapshot");

    // The big input for applydiff: ~30 MiB in 30 files.
    let mut big = TarBuilder::new().dir("data/", 0o755);
    for i in 0..30u32 {
        let chunk: Vec<u8> = (0..(1024 * 1024u32))
            .map(|b| (b.wrapping_mul(31).wrapping_add(i) % 253) as u8)
            .collect();
        big = big.file(&format!("data/f{i:02}"), 0o644, &chunk);
    }
    let big_tar = work.join("big.tar");
    std::fs::write(&big_tar, big.finish()).expect("write big");
    let data_file = work.join("newdata");
    std::fs::write(&data_file, vec![b'x'; 10_000]).expect("write");

    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut ops = vec![
        Op {
            name: "create-layer",
            command: "create-layer",
            args: s(&["create-layer", "-n", "fresh", &base]),
        },
        Op {
            name: "applydiff (30 MiB)",
            command: "applydiff",
            args: s(&["applydiff", "-f", &big_tar.display().to_string(), &target]),
        },
        Op {
            name: "delete-layer",
            command: "delete-layer",
            args: s(&["delete-layer", &lone]),
        },
        Op {
            name: "add-names",
            command: "add-names",
            args: s(&["add-names", "-n", "another", &base]),
        },
        Op {
            name: "wipe",
            command: "wipe",
            args: s(&["wipe"]),
        },
    ];
    if has_images {
        ops.push(Op {
            name: "create-image",
            command: "create-image",
            args: s(&["create-image", "-n", "img3", &lone]),
        });
        ops.push(Op {
            name: "set-image-data",
            command: "set-image-data",
            args: s(&[
                "set-image-data",
                "-f",
                &data_file.display().to_string(),
                &image,
                "blob",
            ]),
        });
        ops.push(Op {
            name: "delete-image",
            command: "delete-image",
            args: s(&["delete-image", &image2]),
        });
    }
    if has_containers && !image.is_empty() {
        ops.push(Op {
            name: "create-container",
            command: "create-container",
            args: s(&["create-container", "-n", "ctr2", &image]),
        });
    }
    let mut missing: Vec<&str> = Vec::new();
    for wanted in [
        "create-image",
        "set-image-data",
        "create-container",
        "delete-image",
    ] {
        if !ops.iter().any(|o| o.command == wanted) {
            missing.push(wanted);
        }
    }
    ops.retain(|o| {
        let present = has(o.command);
        if !present {
            missing.push(o.command);
        }
        present
    });
    if !missing.is_empty() {
        eprintln!("crash harness: not covered (command missing from our CLI): {missing:?}");
    }

    drop(template_released);
    let harness = Harness {
        template,
        strace,
        has_images,
        has_containers,
        before,
    };
    let _released = Released(&harness.template);
    if let Some(only) = only {
        ops.retain(|o| only.contains(&o.command));
    }
    let per_op = min_total.div_ceil(ops.len().max(1)).max(24);
    let mut total_tried = 0;
    let mut failures: Vec<String> = Vec::new();
    let mut summary = Vec::new();
    for op in &ops {
        let (counts, done) = harness.count(op);
        let points = Harness::kill_points(&counts, per_op);
        let op_started = Instant::now();
        let (mut tried, mut passed, mut completed) = (0, 0, 0);
        for (sys, k) in &points {
            let cs = harness.copy();
            let _released = Released(&cs);
            let out = harness.kill(&cs, op, sys, *k);
            if out.status.signal() != Some(libc_sigkill()) {
                // The k-th call happened in another thread's count: the run completed.
                completed += 1;
                continue;
            }
            tried += 1;
            match harness.verify(&cs, &done) {
                Ok(()) => passed += 1,
                Err(e) => failures.push(format!("{} killed at {sys} #{k}: {e}", op.name)),
            }
        }
        let line = format!(
            "{:<20} syscalls {:?}: {tried} kill points tried, {passed} passed ({completed} runs finished before their kill point), {:.1}s",
            op.name,
            counts,
            op_started.elapsed().as_secs_f64()
        );
        eprintln!("{line}");
        summary.push(line);
        total_tried += tried;
    }
    eprintln!(
        "crash harness ({driver}): {total_tried} kill points, {} failures, {:.1}s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert_no_failures(&failures);
    assert!(
        total_tried >= min_total,
        "only {total_tried} kill points were exercised:\n{}",
        summary.join("\n")
    );
}

/// Whether overlay can run here (root, the kernel's overlay); skipped loudly otherwise.
fn overlay_here() -> bool {
    if !require(storage_tests::is_root(), "root for overlay mounts") {
        return false;
    }
    let supported = std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|f| f.lines().any(|l| l.trim_end().ends_with("overlay")));
    require(supported, "overlay in /proc/filesystems")
}

fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn libc_sigkill() -> i32 {
    9
}

/// One traced system call of a complete run (see [`Harness::trace`]).
struct Call {
    pid: u32,
    name: String,
    /// The rest of the line (arguments with their paths, `-y`).
    line: String,
    /// 1-based: this call is the `ordinal`-th call of `name` by thread `pid` (strace counts
    /// `inject=…:when=k` per thread).
    ordinal: usize,
}

impl Harness {
    /// Every write-type and quiet call of one complete run of `op`, in order, with the
    /// paths of their descriptors; also the records a complete run leaves.
    fn trace(&self, op: &Op) -> (Vec<Call>, Snapshot) {
        let cs = self.copy();
        let _released = Released(&cs);
        let log = cs.dir.path().join("phases.trace");
        let mut all: Vec<&str> = DURABLE.to_vec();
        all.extend(OTHER_WRITES);
        all.extend(QUIET);
        let out = self.strace(
            &[
                "-y".into(),
                "-o".into(),
                log.display().to_string(),
                "-e".into(),
                format!("trace={}", all.join(",")),
            ],
            &self.op_command(&cs, op),
        );
        assert!(
            out.status.success(),
            "{}: the operation fails without any kill:\n{}",
            op.name,
            text(&out)
        );
        let trace = std::fs::read_to_string(&log).expect("read trace");
        let mut seen: BTreeMap<(u32, String), usize> = BTreeMap::new();
        let mut calls = Vec::new();
        for line in trace.lines() {
            let Some((pid, rest)) = line.split_once(' ') else {
                continue;
            };
            let rest = rest.trim_start();
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if rest.starts_with('<') {
                continue;
            }
            let Some((name, _)) = rest.split_once('(') else {
                continue;
            };
            if !all.contains(&name) {
                continue;
            }
            let n = seen.entry((pid, name.to_string())).or_insert(0);
            *n += 1;
            calls.push(Call {
                pid,
                name: name.to_string(),
                line: rest.to_string(),
                ordinal: *n,
            });
        }
        let done = snapshot(&cs, self.has_images, self.has_containers);
        drop(_released);
        (calls, done.expect("snapshot after a complete run"))
    }
}

/// The staged phases of an apply, as kill points: `(phase, syscall, k)`.
///
/// * prepare: write-type calls after the first one that touches a staging directory and
///   before the main thread takes the layers lock exclusively to commit;
/// * between prepare and commit: that lock call itself (the kill lands right before it);
/// * commit: the main thread's write-type calls after it.
fn staged_phases(calls: &[Call], per_phase: usize) -> Vec<(&'static str, String, usize)> {
    let main = calls.first().map(|c| c.pid).unwrap_or_default();
    let writes =
        |c: &Call| DURABLE.contains(&c.name.as_str()) || OTHER_WRITES.contains(&c.name.as_str());
    let start = calls
        .iter()
        .position(|c| writes(c) && c.line.contains("/staging/"))
        .expect("the apply uses a staging directory");
    let lock = start
        + calls[start..]
            .iter()
            .position(|c| {
                c.pid == main
                    && c.name == "fcntl"
                    && c.line.contains("layers.lock>")
                    && c.line.contains("F_WRLCK")
            })
            .expect("the commit takes the layers lock");
    let pick = |cands: Vec<&Call>, want: usize| -> Vec<(String, usize)> {
        spread(cands.len(), want)
            .into_iter()
            .map(|i| (cands[i - 1].name.clone(), cands[i - 1].ordinal))
            .collect()
    };
    let mut points = Vec::new();
    let preparing: Vec<&Call> = calls[start..lock].iter().filter(|c| writes(c)).collect();
    for (s, k) in pick(preparing, per_phase) {
        points.push(("prepare", s, k));
    }
    points.push((
        "between prepare and commit",
        "fcntl".into(),
        calls[lock].ordinal,
    ));
    let committing: Vec<&Call> = calls[lock..]
        .iter()
        .filter(|c| c.pid == main && writes(c))
        .collect();
    for (s, k) in pick(committing, per_phase) {
        points.push(("commit", s, k));
    }
    points
}

/// The staging directories of the driver (staged and ordinary applies).
fn staging_leftovers(cs: &Cs) -> Vec<PathBuf> {
    let home = cs.graph.join(&cs.driver);
    let mut v = Vec::new();
    for root in [home.join("staging"), home.join("tempdirs").join("staging")] {
        if let Ok(rd) = std::fs::read_dir(&root) {
            v.extend(rd.flatten().map(|e| e.path()));
        }
    }
    v
}

/// `import-layer` and `import-layers` killed during the prepare of a staged layer, between
/// prepare and commit, and during the commit (vfs).
#[test]
fn killed_staged_applies_never_break_the_store() {
    run_staged("vfs");
}

/// The same on overlay, where `import-layers` prepares every layer at once.
#[test]
fn killed_staged_overlay_applies_never_break_the_store() {
    if !overlay_here() {
        return;
    }
    run_staged("overlay");
}

/// Kills each staged operation at its three phases. After each kill: the harness's checks
/// (ours opens the store, `check` clean or repaired, nothing committed lost, Go 1.43 reads
/// it); every new layer is complete (its diff reproduces its tar) and the new layers are a
/// prefix of the chain; a kill before the commit leaves staging data that our next
/// read-write load removes.
fn run_staged(driver: &str) {
    let Some(strace) = peers() else { return };
    let started = Instant::now();
    let template = Cs::new(driver);
    let template_released = Released(&template);
    let work = template.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let base_tar = work.join("base.tar");
    std::fs::write(
        &base_tar,
        TarBuilder::new()
            .dir("etc/", 0o755)
            .file("etc/hosts", 0o644, b"127.0.0.1 localhost\n")
            .finish(),
    )
    .expect("write");
    let base = first_line(&template.ours(&[
        "import-layer",
        "-n",
        "base",
        "-f",
        &base_tar.display().to_string(),
    ]));
    let before = snapshot(&template, false, false).expect("snapshot");
    // The chain: three layers of 12 files of 256 KiB each (enough calls to spread kill
    // points over), uncompressed so that a diff reproduces the file.
    let mut tars = Vec::new();
    let mut digests = Vec::new();
    for k in 0..3u32 {
        let mut t = TarBuilder::new().dir(&format!("l{k}/"), 0o755);
        for i in 0..12u32 {
            let data: Vec<u8> = (0..(256 * 1024u32))
                .map(|b| (b.wrapping_mul(7).wrapping_add(i + 31 * k) % 251) as u8)
                .collect();
            t = t.file(&format!("l{k}/f{i:02}"), 0o644, &data);
        }
        let bytes = t.finish();
        digests.push(storage_testsupport::sha256(&bytes));
        let p = work.join(format!("layer{k}.tar"));
        std::fs::write(&p, bytes).expect("write");
        tars.push(p.display().to_string());
    }
    drop(template_released);
    let harness = Harness {
        template,
        strace,
        has_images: false,
        has_containers: false,
        before,
    };
    let _released = Released(&harness.template);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let ops = [
        Op {
            name: "import-layer",
            command: "import-layer",
            args: s(&["import-layer", "-f", &tars[0], &base]),
        },
        Op {
            name: "import-layers",
            command: "import-layers",
            args: s(&[
                "import-layers",
                "--parent",
                &base,
                &tars[0],
                &tars[1],
                &tars[2],
            ]),
        },
    ];
    let mut failures = Vec::new();
    let mut tried: BTreeMap<&str, usize> = BTreeMap::new();
    let mut left_staging: BTreeMap<&str, usize> = BTreeMap::new();
    // (phase, layers committed) -> kills.
    let mut outcomes: BTreeMap<(&str, usize), usize> = BTreeMap::new();
    for op in &ops {
        let (calls, done) = harness.trace(op);
        let points = staged_phases(&calls, 4);
        eprintln!("{}: kill points {points:?}", op.name);
        for (phase, sys, k) in points {
            let cs = harness.copy();
            let _released = Released(&cs);
            let out = harness.kill(&cs, op, &sys, k);
            if out.status.signal() != Some(libc_sigkill()) {
                failures.push(format!(
                    "{} at {phase} ({sys} #{k}): not killed:\n{}",
                    op.name,
                    text(&out)
                ));
                continue;
            }
            *tried.entry(phase).or_insert(0) += 1;
            let leftovers = staging_leftovers(&cs);
            if !leftovers.is_empty() {
                *left_staging.entry(phase).or_insert(0) += 1;
            }
            let result = harness.verify(&cs, &done).and_then(|()| {
                let committed = staged_outcome(&cs, &harness.before, &base, &digests)?;
                *outcomes.entry((phase, committed)).or_insert(0) += 1;
                // Our next read-write load removes what the killed process staged.
                let w = cs.ours(&["create-layer", "-n", "probe"]);
                if !w.status.success() {
                    return Err(format!("create-layer after the kill:\n{}", text(&w)));
                }
                let left = staging_leftovers(&cs);
                if !left.is_empty() {
                    return Err(format!("staging data left after a write load: {left:?}"));
                }
                Ok(())
            });
            if let Err(e) = result {
                failures.push(format!("{} killed at {phase} ({sys} #{k}): {e}", op.name));
            }
        }
    }
    eprintln!(
        "staged crash harness ({driver}): kills per phase {tried:?}, of which left staging data {left_staging:?}; (phase, layers committed): kills {outcomes:?}; {} failures, {:.1}s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert_no_failures(&failures);
    for phase in ["prepare", "between prepare and commit", "commit"] {
        assert!(
            tried.get(phase).is_some_and(|n| *n >= 2),
            "phase {phase} not exercised twice: {tried:?}"
        );
    }
    // A kill right before the commit finds the data staged (the kill really was between
    // the two steps).
    assert_eq!(
        left_staging.get("between prepare and commit"),
        tried.get("between prepare and commit"),
        "kills before the commit left no staging data: {left_staging:?}"
    );
}

/// The layers a killed staged apply left: each one complete (our diff reproduces its tar),
/// together a prefix of the chain on `base`. Returns how many there are.
fn staged_outcome(
    cs: &Cs,
    before: &Snapshot,
    base: &str,
    digests: &[String],
) -> Result<usize, String> {
    let mut new: BTreeMap<String, (String, String)> = BTreeMap::new();
    for l in records(cs, "layers")? {
        let id = field(&l, "id");
        if !before.layers.contains_key(&id) {
            new.insert(id, (field(&l, "parent"), field(&l, "diff-digest")));
        }
    }
    // Walk the chain from the base: layer k's digest is digests[k], its parent layer k-1.
    let mut parent = base.to_string();
    let mut found = 0;
    for want in digests {
        let Some((id, _)) = new.iter().find(|(_, (p, d))| *p == parent && d == want) else {
            break;
        };
        let id = id.clone();
        let out = cs.ours(&["diff", &id]);
        if !out.status.success() {
            return Err(format!("diff of new layer {id}:\n{}", text(&out)));
        }
        let got = storage_testsupport::sha256(&out.stdout);
        if &got != want {
            return Err(format!("new layer {id} diffs to {got}, not {want}"));
        }
        parent = id;
        found += 1;
    }
    if found != new.len() {
        return Err(format!(
            "new layers that are not a complete prefix of the chain: {new:?}"
        ));
    }
    Ok(found)
}
