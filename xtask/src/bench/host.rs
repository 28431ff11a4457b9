//! The host side of a bench run: clean-up of stores, free space and limits, the tools and drivers it needs.

use super::*;

/// Unmounts everything mounted under `dir` (deepest first): stores left by a failed run.
pub(super) fn unmount_under(dir: &Path) {
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

pub(super) fn remove_dir(dir: &Path) -> Result<(), String> {
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
pub(super) struct Deletions {
    /// The file system prefers old inodes (ext4 without a journal, or not known).
    pub(super) ages: bool,
    pub(super) last: Option<std::time::SystemTime>,
    pub(super) stamp: PathBuf,
}

impl Deletions {
    /// How long ext4 may pass over a freed inode (its dirty-block window, plus a second).
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(361);

    /// `bench` is the benchmark's directory: its `deleted-at` file says when the last run
    /// removed its stores.
    pub(super) fn new(bench: &Path) -> Deletions {
        Deletions {
            ages: inode_reuse_waits(bench),
            last: fs::metadata(bench.join("deleted-at"))
                .and_then(|m| m.modified())
                .ok(),
            stamp: bench.join("deleted-at"),
        }
    }

    /// Notes that files were just deleted (for later runs too).
    pub(super) fn mark(&mut self) {
        self.last = Some(std::time::SystemTime::now());
        let _ = fs::write(&self.stamp, b"");
    }

    /// Removes `dir` (unmounting what is under it), if it exists.
    pub(super) fn remove(&mut self, dir: &Path) -> Result<(), String> {
        if dir.exists() {
            remove_dir(dir)?;
            self.mark();
        }
        Ok(())
    }

    /// Waits until the last deletion is written back and old enough not to matter.
    pub(super) fn wait_out(&mut self) {
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
pub(super) fn inode_reuse_waits(dir: &Path) -> bool {
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
pub(super) fn check_space(
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
    if want("import") {
        // Our import (a store of its own, ours only) and skopeo's, per driver.
        per_seq += small / 2;
        tools += drivers as u64 * small;
    }
    if want("parallel") {
        // The eight-layer image, twice in our sequence (one by one, then import-layers).
        per_seq += 2 * (3 * small + large + 2 * lower);
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
pub(super) fn limits(
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
pub(super) fn limit_deletions(res: &mut Results, dir: &Path) {
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
pub(super) fn record(res: &mut Results, name: &str, cmd: &mut Command, sink: Sink) {
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

pub(super) fn ensure_tools(go: &Path) -> Result<(), String> {
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
pub(super) fn driver_works(
    bin: &Path,
    driver: &str,
    dir: &Path,
    conf: &Path,
) -> Result<(), String> {
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
