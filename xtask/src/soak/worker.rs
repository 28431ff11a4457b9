//! One soak worker: a thread that runs one tool's CLI (ours, Go's or podman) on the shared
//! store, one process at a time, picking random operations on its own items (and names on the
//! shared ones), and keeps a model of what each committed operation left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};

mod names_data_mounts;

/// The tool a worker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tool {
    /// Our `containers-storage`.
    Ours,
    /// Debian's Go `containers-storage` (1.43).
    Go,
    /// podman, with `--root/--runroot/--storage-driver` on the same store.
    Podman,
}

impl Tool {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Ours => "ours",
            Tool::Go => "go",
            Tool::Podman => "podman",
        }
    }
}

/// A record kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A layer.
    Layer,
    /// An image.
    Image,
    /// A container.
    Container,
}

impl Kind {
    /// The CLI's word for it in `set-*-data` and friends.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Layer => "layer",
            Kind::Image => "image",
            Kind::Container => "container",
        }
    }
}

/// The items every worker may name (and mount): created before the workers start and never
/// deleted.
#[derive(Clone, Debug, Default)]
pub struct Shared {
    /// Layer IDs: an imported base and an empty child of it.
    pub layers: Vec<String>,
    /// Image IDs (each with a manifest and config, so podman can create containers on the
    /// ones on the imported base).
    pub images: Vec<String>,
    /// The images podman creates containers from (on the imported base).
    pub podman_images: Vec<String>,
    /// Container IDs.
    pub containers: Vec<String>,
}

impl Shared {
    /// Every shared item with its kind.
    pub fn all(&self) -> Vec<(Kind, String)> {
        let mut v: Vec<(Kind, String)> = Vec::new();
        v.extend(self.layers.iter().map(|i| (Kind::Layer, i.clone())));
        v.extend(self.images.iter().map(|i| (Kind::Image, i.clone())));
        v.extend(self.containers.iter().map(|i| (Kind::Container, i.clone())));
        v
    }
}

/// The store and the programs, shared by the workers.
pub struct Env {
    /// Driver name.
    pub driver: String,
    /// The soak directory of this driver (store, worker scratch, journals).
    pub dir: PathBuf,
    /// Graph root.
    pub graph: PathBuf,
    /// Run root.
    pub run: PathBuf,
    /// Our binary.
    pub ours: PathBuf,
    /// Go's binary.
    pub go: PathBuf,
    /// podman, when present.
    pub podman: Option<PathBuf>,
    /// The start of the run (journal times are seconds since it).
    pub t0: Instant,
    /// The shared items.
    pub shared: Shared,
}

impl Env {
    /// The command running `tool` with `args` on the store.
    pub fn command(&self, tool: Tool, args: &[String]) -> Command {
        let mut c = match tool {
            Tool::Ours | Tool::Go => {
                let mut c = Command::new(if tool == Tool::Ours {
                    &self.ours
                } else {
                    &self.go
                });
                c.arg("--graph")
                    .arg(&self.graph)
                    .arg("--run")
                    .arg(&self.run)
                    .arg("--storage-driver")
                    .arg(&self.driver);
                c
            }
            Tool::Podman => {
                let mut c = Command::new(self.podman.as_deref().unwrap_or(Path::new("podman")));
                c.arg("--root")
                    .arg(&self.graph)
                    .arg("--runroot")
                    .arg(&self.run)
                    .arg("--storage-driver")
                    .arg(&self.driver)
                    .arg("--tmpdir")
                    .arg(self.dir.join("podman-tmp"))
                    .args([
                        "--events-backend",
                        "none",
                        "--cgroup-manager",
                        "cgroupfs",
                        "--log-level",
                        "error",
                    ]);
                c
            }
        };
        c.args(args)
            .env_remove("STORAGE_OPTS")
            .env_remove("STORAGE_DRIVER")
            .env_remove("CONTAINERS_STORAGE_CONF")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Seconds since the start of the run.
    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }
}

/// The outcome of one process.
pub struct Exec {
    /// Exit status 0.
    pub ok: bool,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: String,
    /// Start, seconds since the start of the run.
    pub start: f64,
    /// End.
    pub end: f64,
}

impl Exec {
    /// The first line of standard output, trimmed.
    pub fn first_line(&self) -> String {
        String::from_utf8_lossy(&self.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    }
    /// The first 64-hex ID on standard output.
    pub fn id(&self) -> Option<String> {
        String::from_utf8_lossy(&self.stdout)
            .lines()
            .map(str::trim)
            .find(|l| is_id(l))
            .map(str::to_string)
    }
    /// The first non-empty line of standard error (or the exit status when there is none).
    pub fn err_line(&self) -> String {
        self.stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("(no message)")
            .to_string()
    }
}

/// Whether `s` is a 64-character lowercase hex ID.
pub fn is_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The process a worker is waiting for, watched by the coordinator's watchdog.
#[derive(Default)]
pub struct Slot {
    /// PID and start of the current process.
    pub current: Mutex<Option<(u32, Instant)>>,
}

/// Runs `tool args` to completion, registering the PID with the watchdog.
pub fn exec(env: &Env, slot: &Slot, tool: Tool, args: &[String]) -> Exec {
    let start = env.now();
    let mut cmd = env.command(tool, args);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Exec {
                ok: false,
                stdout: Vec::new(),
                stderr: format!("spawn {}: {e}", tool.name()),
                start,
                end: env.now(),
            };
        }
    };
    *slot.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((child.id(), Instant::now()));
    let out = child.wait_with_output();
    *slot.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let end = env.now();
    match out {
        Ok(o) => Exec {
            ok: o.status.success(),
            stderr: {
                let mut s = String::from_utf8_lossy(&o.stderr).into_owned();
                if !o.status.success() && s.trim().is_empty() {
                    s = format!("{}", o.status);
                }
                s
            },
            stdout: o.stdout,
            start,
            end,
        },
        Err(e) => Exec {
            ok: false,
            stdout: Vec::new(),
            stderr: format!("wait: {e}"),
            start,
            end,
        },
    }
}

/// A small deterministic PRNG (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number below `n` (> 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    /// A random element.
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            v.get(self.below(v.len()))
        }
    }
}

/// FNV-1a of a string: the seed of deterministic content.
pub fn seed_of(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `len` bytes determined by `seed`.
pub fn content(seed: &str, len: usize) -> Vec<u8> {
    let mut r = Rng(seed_of(seed));
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// `sha256:<hex>` of `b`.
pub fn digest(b: &[u8]) -> String {
    let d = Sha256::digest(b);
    let mut s = String::from("sha256:");
    for x in d {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// A deterministic layer tar for `name`: a directory with a few files of seeded content.
pub fn layer_tar(name: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    };
    let dir = format!("soak/{name}/");
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    // In-memory appends of generated, short names cannot fail.
    let _ = b.append_data(&mut h, &dir, &[][..]);
    let mut r = Rng(seed_of(name));
    for i in 0..(1 + r.below(4)) {
        let len = r.below(48 << 10);
        let data = content(&format!("{name}/f{i}"), len);
        let mut h = header(tar::EntryType::Regular, 0o644, len as u64);
        let _ = b.append_data(&mut h, format!("{dir}f{i}"), &data[..]);
    }
    b.into_inner().unwrap_or_default()
}

/// One item a worker created and has not deleted.
#[derive(Clone, Debug, Default)]
pub struct Item {
    /// Its names now.
    pub names: BTreeSet<String>,
    /// Layer: parent layer; image: top layer; container: image.
    pub parent: Option<String>,
    /// An imported layer's diff digest.
    pub diff: Option<String>,
    /// Big data: key → digest of the last committed value.
    pub data: BTreeMap<String, String>,
    /// How often this worker has it mounted.
    pub mounts: u32,
    /// Files written into the mounted container: name → digest.
    pub files: BTreeMap<String, String>,
}

/// One names operation on a shared item (for the add-names race accounting).
#[derive(Clone, Debug)]
pub struct NameOp {
    /// The shared item.
    pub item: String,
    /// The name added or removed.
    pub name: String,
    /// Added (else removed).
    pub add: bool,
    /// Read, then set (Go 1.43's `add-names`, podman 4.3's `tag`/`untag`): can lose
    /// concurrent changes.
    pub rmw: bool,
    /// The tool that ran it.
    pub tool: Tool,
    /// Committed.
    pub ok: bool,
    /// A removal that failed because the name was no longer there (podman's `untag`: "tag
    /// not known"): lost before, to a concurrent read-then-set update.
    pub missing: bool,
    /// Start.
    pub start: f64,
    /// End.
    pub end: f64,
    /// Worker.
    pub worker: usize,
}

/// A failure the soak reports.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Worker.
    pub worker: usize,
    /// Tool.
    pub tool: Tool,
    /// What went wrong, naming the operation.
    pub what: String,
}

/// What a worker ends with: its model of the store, its journal's counts and its failures.
#[derive(Default)]
pub struct Outcome {
    /// Own layers.
    pub layers: BTreeMap<String, Item>,
    /// Own images.
    pub images: BTreeMap<String, Item>,
    /// Own containers.
    pub containers: BTreeMap<String, Item>,
    /// Items this worker deleted (kind, ID).
    pub deleted: Vec<(Kind, String)>,
    /// Names this worker gave its own items and took away (or whose items it deleted).
    pub gone_names: BTreeSet<String>,
    /// IDs and names whose state a failed operation left unknown.
    pub uncertain: BTreeSet<String>,
    /// Names this worker added to shared items and has not removed: (item, name).
    pub shared_names: BTreeSet<(String, String)>,
    /// Names operations on shared items.
    pub name_ops: Vec<NameOp>,
    /// Committed operations by name.
    pub ok_ops: BTreeMap<&'static str, u64>,
    /// Failed operations by name.
    pub failed_ops: BTreeMap<&'static str, u64>,
    /// Durations of every operation.
    pub durations: Vec<f64>,
    /// Operations over 1 s: (op, seconds, start).
    pub slow: Vec<(String, f64, f64)>,
    /// Failures.
    pub failures: Vec<Failure>,
    /// Mounts of shared layers held now.
    pub shared_mounts: BTreeMap<String, u32>,
}

/// One kind of operation of a worker.
type Op<'a> = fn(&mut Worker<'a>);

/// A worker.
pub struct Worker<'a> {
    /// Index (0-based).
    pub idx: usize,
    /// Its tool.
    pub tool: Tool,
    env: &'a Env,
    slot: &'a Slot,
    rng: Rng,
    seq: u64,
    scratch: PathBuf,
    journal: fs::File,
    /// What it ends with.
    pub out: Outcome,
}

impl<'a> Worker<'a> {
    /// A worker with its scratch directory and journal under the soak directory.
    pub fn new(
        idx: usize,
        tool: Tool,
        env: &'a Env,
        slot: &'a Slot,
        seed: u64,
    ) -> Result<Self, String> {
        let scratch = env.dir.join(format!("w{idx:02}"));
        fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        let jpath = env
            .dir
            .join(format!("journal-w{idx:02}-{}.jsonl", tool.name()));
        let journal = fs::File::create(&jpath).map_err(|e| format!("{}: {e}", jpath.display()))?;
        Ok(Worker {
            idx,
            tool,
            env,
            slot,
            rng: Rng(seed ^ seed_of(&format!("worker{idx}"))),
            seq: 0,
            scratch,
            journal,
            out: Outcome::default(),
        })
    }

    fn fresh(&mut self, what: &str) -> String {
        self.seq += 1;
        match self.tool {
            // podman normalises image names; its tags are given in full.
            Tool::Podman if what == "t" => {
                format!("localhost/soak-w{:02}-{what}{}:latest", self.idx, self.seq)
            }
            _ => format!("soak-w{:02}-{what}{}", self.idx, self.seq),
        }
    }

    /// Runs one process, journals it and counts it.
    fn run(&mut self, op: &'static str, args: Vec<String>) -> Exec {
        self.run_tolerating(op, args, None)
    }

    /// [`Worker::run`], except that a failure whose message contains `tolerated` is left to
    /// the caller (it is counted and journaled, not reported).
    fn run_tolerating(
        &mut self,
        op: &'static str,
        args: Vec<String>,
        tolerated: Option<&str>,
    ) -> Exec {
        let x = exec(self.env, self.slot, self.tool, &args);
        let dur = x.end - x.start;
        self.out.durations.push(dur);
        if dur > 1.0 {
            self.out
                .slow
                .push((format!("{} {op}", self.tool.name()), dur, x.start));
        }
        *if x.ok {
            self.out.ok_ops.entry(op).or_default()
        } else {
            self.out.failed_ops.entry(op).or_default()
        } += 1;
        let line = serde_json::json!({
            "start": x.start, "end": x.end, "op": op, "args": args, "ok": x.ok,
            "stdout": String::from_utf8_lossy(&x.stdout[..x.stdout.len().min(300)]),
            "stderr": if x.ok { String::new() } else { x.stderr.clone() },
        });
        let _ = writeln!(self.journal, "{line}");
        if !x.ok && !tolerated.is_some_and(|t| x.stderr.contains(t)) {
            self.fail(format!("{op} {}: {}", args.join(" "), x.err_line()));
        }
        x
    }

    fn fail(&mut self, what: String) {
        self.out.failures.push(Failure {
            worker: self.idx,
            tool: self.tool,
            what,
        });
    }

    /// Runs operations until `stop`, then unmounts everything it mounted.
    pub fn run_until(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            match self.tool {
                Tool::Podman => self.podman_step(),
                _ => self.cli_step(),
            }
        }
        self.unmount_all();
    }

    fn live(&self) -> usize {
        self.out.layers.len() + self.out.images.len() + self.out.containers.len()
    }

    fn cli_step(&mut self) {
        let live = self.live();
        // Deletions grow with the number of live items so the store stays about 30 items a
        // worker.
        let del = if live < 6 {
            0
        } else if live > 30 {
            24
        } else {
            6
        };
        let table: &[(u32, Op<'a>)] = &[
            (8, Self::create_layer),
            (6, Self::import_layer),
            (6, Self::create_image),
            (6, Self::create_container),
            (del, Self::delete_container),
            (del, Self::delete_image),
            (del, Self::delete_layer),
            (6, Self::add_name),
            (4, Self::remove_name),
            (6, Self::add_shared_name),
            (3, Self::remove_shared_name),
            (8, Self::set_data),
            (4, Self::read_back),
            (4, Self::mount),
            (4, Self::unmount),
            (2, Self::list),
        ];
        self.weighted(table);
    }

    /// Runs one operation of `table`, picked with the weights.
    fn weighted(&mut self, table: &[(u32, Op<'a>)]) {
        let total: u32 = table.iter().map(|(w, _)| w).sum();
        let mut r = (self.rng.next() % u64::from(total.max(1))) as u32;
        for (w, f) in table {
            if r < *w {
                f(self);
                return;
            }
            r -= w;
        }
    }

    fn podman_step(&mut self) {
        let live = self.out.containers.len();
        let del = if live < 3 {
            0
        } else if live > 12 {
            20
        } else {
            5
        };
        let table: &[(u32, Op<'a>)] = &[
            (8, Self::podman_create),
            (del, Self::delete_container),
            (4, Self::mount),
            (4, Self::unmount),
            (5, Self::add_shared_name),
            (3, Self::remove_shared_name),
        ];
        self.weighted(table);
    }

    fn parent_layer(&mut self) -> Option<String> {
        match self.rng.below(10) {
            0..=2 => None,
            3..=5 => self.rng.pick(&self.env.shared.layers).cloned(),
            _ => {
                let own: Vec<String> = self.out.layers.keys().cloned().collect();
                self.rng.pick(&own).cloned()
            }
        }
    }

    fn create_layer(&mut self) {
        let name = self.fresh("l");
        let parent = self.parent_layer();
        let mut args = vec!["create-layer".into(), "-n".into(), name.clone()];
        args.extend(parent.clone());
        self.created(Kind::Layer, "create-layer", args, name, parent, None);
    }

    fn import_layer(&mut self) {
        let name = self.fresh("l");
        let parent = self.parent_layer();
        let tar = layer_tar(&name);
        let file = self.scratch.join("layer.tar");
        if let Err(e) = fs::write(&file, &tar) {
            self.fail(format!("writing {}: {e}", file.display()));
            return;
        }
        let mut args = vec![
            "import-layer".into(),
            "-f".into(),
            file.to_string_lossy().into_owned(),
            "-n".into(),
            name.clone(),
        ];
        args.extend(parent.clone());
        self.created(
            Kind::Layer,
            "import-layer",
            args,
            name,
            parent,
            Some(digest(&tar)),
        );
    }

    fn created(
        &mut self,
        kind: Kind,
        op: &'static str,
        args: Vec<String>,
        name: String,
        parent: Option<String>,
        diff: Option<String>,
    ) {
        let x = self.run(op, args);
        match x.id() {
            Some(id) if x.ok => {
                let item = Item {
                    names: BTreeSet::from([name]),
                    parent,
                    diff,
                    ..Item::default()
                };
                match kind {
                    Kind::Layer => self.out.layers.insert(id, item),
                    Kind::Image => self.out.images.insert(id, item),
                    Kind::Container => self.out.containers.insert(id, item),
                };
            }
            _ => {
                if x.ok {
                    self.fail(format!("{op} printed no ID: {}", x.first_line()));
                }
                self.out.uncertain.insert(name);
            }
        }
    }

    fn create_image(&mut self) {
        let name = self.fresh("i");
        let own: Vec<String> = self.out.layers.keys().cloned().collect();
        let layer = if self.rng.chance(0.7) && !own.is_empty() {
            self.rng.pick(&own).cloned()
        } else {
            self.rng.pick(&self.env.shared.layers).cloned()
        };
        let Some(layer) = layer else { return };
        let args = vec![
            "create-image".into(),
            "-n".into(),
            name.clone(),
            layer.clone(),
        ];
        self.created(Kind::Image, "create-image", args, name, Some(layer), None);
    }

    fn create_container(&mut self) {
        let name = self.fresh("c");
        let own: Vec<String> = self.out.images.keys().cloned().collect();
        let image = if self.rng.chance(0.6) && !own.is_empty() {
            self.rng.pick(&own).cloned()
        } else {
            self.rng.pick(&self.env.shared.images).cloned()
        };
        let Some(image) = image else { return };
        let args = vec![
            "create-container".into(),
            "-n".into(),
            name.clone(),
            image.clone(),
        ];
        self.created(
            Kind::Container,
            "create-container",
            args,
            name,
            Some(image),
            None,
        );
    }

    fn podman_create(&mut self) {
        let name = self.fresh("c");
        let Some(image) = self.rng.pick(&self.env.shared.podman_images).cloned() else {
            return;
        };
        let args = vec![
            "create".into(),
            "--network".into(),
            "none".into(),
            "--name".into(),
            name.clone(),
            image.clone(),
        ];
        self.created(Kind::Container, "create", args, name, Some(image), None);
    }

    /// Unmounts `id` until this worker holds no mount of it.
    fn unmount_fully(&mut self, kind: Kind, id: &str) {
        loop {
            let held = match kind {
                Kind::Layer => self.out.layers.get(id).map(|i| i.mounts),
                Kind::Container => self.out.containers.get(id).map(|i| i.mounts),
                Kind::Image => None,
            }
            .unwrap_or(0);
            if held == 0 {
                return;
            }
            if !self.unmount_one(kind, id) {
                return;
            }
        }
    }

    fn unmount_one(&mut self, kind: Kind, id: &str) -> bool {
        let op = if self.tool == Tool::Podman {
            "umount"
        } else {
            "unmount"
        };
        let x = self.run(op, vec![op.into(), id.to_string()]);
        let entry = match kind {
            Kind::Layer => self
                .out
                .layers
                .get_mut(id)
                .map(|i| &mut i.mounts)
                .or_else(|| self.out.shared_mounts.get_mut(id)),
            Kind::Container => self.out.containers.get_mut(id).map(|i| &mut i.mounts),
            Kind::Image => None,
        };
        if let Some(m) = entry {
            *m = m.saturating_sub(1);
        }
        if !x.ok {
            self.out.uncertain.insert(id.to_string());
        }
        x.ok
    }

    fn delete_container(&mut self) {
        let ids: Vec<String> = self.out.containers.keys().cloned().collect();
        let Some(id) = self.rng.pick(&ids).cloned() else {
            return;
        };
        self.unmount_fully(Kind::Container, &id);
        let (op, args) = if self.tool == Tool::Podman {
            ("rm", vec!["rm".into(), id.clone()])
        } else {
            (
                "delete-container",
                vec!["delete-container".into(), id.clone()],
            )
        };
        let x = self.run(op, args);
        self.deleted(Kind::Container, &id, x.ok);
    }

    fn deleted(&mut self, kind: Kind, id: &str, ok: bool) {
        let item = match kind {
            Kind::Layer => self.out.layers.remove(id),
            Kind::Image => self.out.images.remove(id),
            Kind::Container => self.out.containers.remove(id),
        };
        if let Some(item) = item {
            if ok {
                self.out.gone_names.extend(item.names);
                self.out.deleted.push((kind, id.to_string()));
            } else {
                self.out.uncertain.insert(id.to_string());
                self.out.uncertain.extend(item.names);
            }
        }
    }

    fn delete_image(&mut self) {
        let used: BTreeSet<&String> = self
            .out
            .containers
            .values()
            .filter_map(|c| c.parent.as_ref())
            .collect();
        let ids: Vec<String> = self
            .out
            .images
            .keys()
            .filter(|i| !used.contains(i))
            .cloned()
            .collect();
        let Some(id) = self.rng.pick(&ids).cloned() else {
            return;
        };
        // The image's unused layers go with it: none of them may stay mounted.
        let mut chain = self.out.images[&id].parent.clone();
        while let Some(l) = chain {
            if !self.out.layers.contains_key(&l) {
                break;
            }
            self.unmount_fully(Kind::Layer, &l);
            chain = self.out.layers.get(&l).and_then(|i| i.parent.clone());
        }
        let x = self.run("delete-image", vec!["delete-image".into(), id.clone()]);
        self.deleted(Kind::Image, &id, x.ok);
        if !x.ok {
            return;
        }
        // One `ARG: LAYERID` line on stderr per layer deleted with it.
        let gone: Vec<String> = x
            .stderr
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{id}: ")))
            .map(str::trim)
            .filter(|l| is_id(l))
            .map(str::to_string)
            .collect();
        for l in gone {
            if self.out.layers.contains_key(&l) {
                self.deleted(Kind::Layer, &l, true);
            } else {
                self.fail(format!(
                    "delete-image {id} deleted layer {l}, which is not one of this worker's"
                ));
            }
        }
    }

    fn delete_layer(&mut self) {
        let busy: BTreeSet<&String> = self
            .out
            .layers
            .values()
            .chain(self.out.images.values())
            .filter_map(|i| i.parent.as_ref())
            .collect();
        let ids: Vec<String> = self
            .out
            .layers
            .keys()
            .filter(|l| !busy.contains(l))
            .cloned()
            .collect();
        let Some(id) = self.rng.pick(&ids).cloned() else {
            return;
        };
        self.unmount_fully(Kind::Layer, &id);
        let x = self.run("delete-layer", vec!["delete-layer".into(), id.clone()]);
        self.deleted(Kind::Layer, &id, x.ok);
    }

    fn own_item(&mut self) -> Option<(Kind, String)> {
        let mut all: Vec<(Kind, String)> = Vec::new();
        all.extend(self.out.layers.keys().map(|k| (Kind::Layer, k.clone())));
        all.extend(self.out.images.keys().map(|k| (Kind::Image, k.clone())));
        all.extend(
            self.out
                .containers
                .keys()
                .map(|k| (Kind::Container, k.clone())),
        );
        self.rng.pick(&all).cloned()
    }

    fn item_mut(&mut self, kind: Kind, id: &str) -> Option<&mut Item> {
        match kind {
            Kind::Layer => self.out.layers.get_mut(id),
            Kind::Image => self.out.images.get_mut(id),
            Kind::Container => self.out.containers.get_mut(id),
        }
    }
}
