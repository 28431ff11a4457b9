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
        let cs = self.copy();
        let _released = Released(&cs);
        let log = cs.dir.path().join("count.trace");
        let mut all: Vec<&str> = DURABLE.to_vec();
        all.extend(OTHER_WRITES);
        all.extend(QUIET);
        let out = self.strace(
            &[
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
        let mut counts = BTreeMap::new();
        for line in trace.lines() {
            // "<pid> name(args…" — resumed halves are not new calls.
            let rest = line
                .split_once(' ')
                .map(|(_, r)| r.trim_start())
                .unwrap_or(line);
            if rest.starts_with('<') {
                continue;
            }
            if let Some((name, _)) = rest.split_once('(')
                && all.contains(&name)
            {
                *counts.entry(name.to_string()).or_insert(0) += 1;
            }
        }
        let done = snapshot(&cs, self.has_images, self.has_containers);
        drop(_released);
        let done = done.expect("snapshot after a complete run");
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
    if !require(storage_tests::is_root(), "root for overlay mounts") {
        return;
    }
    let supported = std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|f| f.lines().any(|l| l.trim_end().ends_with("overlay")));
    if !require(supported, "overlay in /proc/filesystems") {
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
    let strace = peer("strace");
    if !require(strace.is_some(), "strace for the crash harness") {
        return;
    }
    let Some(strace) = strace else { return };
    if !require(
        go_cs().is_some(),
        "Go containers-storage to read the crashed stores",
    ) {
        return;
    }
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
            let out = harness.strace(
                &[
                    "-o".into(),
                    "/dev/null".into(),
                    "-e".into(),
                    format!("trace={sys}"),
                    "-e".into(),
                    format!("inject={sys}:signal=SIGKILL:when={k}"),
                ],
                &harness.op_command(&cs, op),
            );
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
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(
        total_tried >= min_total,
        "only {total_tried} kill points were exercised:\n{}",
        summary.join("\n")
    );
}

fn libc_sigkill() -> i32 {
    9
}
