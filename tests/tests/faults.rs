//! Injected I/O faults (run inside `cargo xtask vm-test`, which has device-mapper): a vfs store
//! on an ext4 file system on a device-mapper device over a loop file. For each operation class
//! — apply, record writes, big-data writes, mount bookkeeping, deletion — a fresh store gets a
//! committed baseline (two imported layers, an image and a container with big data, a mounted
//! container), then a fault is injected and one operation runs:
//!
//! * `eio`: the table is switched to `error` before the operation (every write and uncached
//!   read fails with EIO);
//! * `enospc`: the file system is filled before the operation;
//! * `eio-mid`: the diff is fed through a pipe and the table switched to `error` halfway;
//! * `flakey`: `flakey` with writes failing one second in two (`error_writes`).
//!
//! The operation either completes or fails with exit status 1 and one clear line (naming the
//! operation and the file, with the errno's text); it never panics. Then the device is
//! restored, the file system checked (`e2fsck -fy`) and mounted again, and the store must
//! open, `check` (or, after `check -r`, a second `check`) must end clean, every baseline item
//! must be there with its names, data and diff (the target of a failed deletion may be gone
//! or whole), the effect of a completed operation must be there, and every listed layer's
//! diff must reproduce its recorded digest (no incomplete layer listed as complete).
//!
//! Outside the vm-test guest (no `VMTEST_SCRATCH`) the test skips loudly, in CI too: CI runs
//! it through `cargo xtask vm-test -p storage-tests faults`. Inside the guest, anything
//! missing (device-mapper, dmsetup, mkfs.ext4, e2fsck) is a failure.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use storage_tests::tars::{TarBuilder, sha256};
use storage_tests::{Cs, ok, ours};

/// Size of the faulty file system.
const MIB: u64 = 64;

fn in_vm() -> Option<PathBuf> {
    std::env::var_os("VMTEST_SCRATCH").map(PathBuf::from)
}

fn sh(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{shown}: {e}"))
}

#[track_caller]
fn sh_ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{shown} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn dmsetup(args: &[&str]) -> Command {
    let mut c = Command::new("dmsetup");
    // No udev in the guest: libdevmapper makes the /dev/mapper nodes itself.
    c.env("DM_DISABLE_UDEV", "1").args(args);
    c
}

/// A device-mapper device over a loop file, with an ext4 file system mounted on `mnt`.
struct Dev {
    /// The device-mapper name (`csfault<lane>`).
    dm: String,
    img: PathBuf,
    loopdev: String,
    sectors: u64,
    mnt: PathBuf,
}

impl Dev {
    fn new(scratch: &Path, lane: usize) -> Dev {
        let dm = format!("csfault{lane}");
        let img = scratch.join(format!("{dm}.img"));
        let mnt = scratch.join(format!("{dm}-mnt"));
        std::fs::create_dir_all(&mnt).unwrap();
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(MIB << 20).unwrap();
        drop(f);
        // Lanes pick free loop devices one at a time.
        static LOOP: Mutex<()> = Mutex::new(());
        let guard = LOOP.lock().unwrap_or_else(|e| e.into_inner());
        let loopdev = sh_ok(Command::new("losetup").arg("-f"));
        sh_ok(Command::new("losetup").arg(&loopdev).arg(&img));
        drop(guard);
        let sectors = (MIB << 20) / 512;
        let dev = Dev {
            dm,
            img,
            loopdev,
            sectors,
            mnt,
        };
        sh_ok(&mut dmsetup(&[
            "create",
            &dev.dm,
            "--table",
            &dev.linear_table(),
        ]));
        sh_ok(Command::new("mkfs.ext4").args(["-q", "-F", &dev.path()]));
        dev.mount();
        dev
    }

    fn path(&self) -> String {
        format!("/dev/mapper/{}", self.dm)
    }

    fn linear_table(&self) -> String {
        format!("0 {} linear {} 0", self.sectors, self.loopdev)
    }

    fn mount(&self) {
        sh_ok(Command::new("mount").arg(self.path()).arg(&self.mnt));
    }

    /// Switches the table (`error`, `flakey …`, or back to linear).
    fn table(&self, table: &str) {
        sh_ok(&mut dmsetup(&["reload", &self.dm, "--table", table]));
        sh_ok(&mut dmsetup(&["suspend", "--nolockfs", &self.dm]));
        sh_ok(&mut dmsetup(&["resume", &self.dm]));
    }

    fn error(&self) {
        self.table(&format!("0 {} error", self.sectors));
    }

    fn flakey(&self) {
        // Up 1 s, then 1 s in which every write fails with EIO (reads pass).
        self.table(&format!(
            "0 {} flakey {} 0 1 1 1 error_writes",
            self.sectors, self.loopdev
        ));
    }

    /// Restores the device, checks the file system and mounts it again; returns e2fsck's
    /// exit status (0: clean, 1: errors corrected).
    fn restore(&self) -> i32 {
        self.table(&self.linear_table());
        let out = sh(Command::new("umount").arg(&self.mnt));
        if !out.status.success() {
            // Something still holds it (it should not): a lazy unmount, then go on.
            sh(Command::new("umount").arg("-l").arg(&self.mnt));
        }
        let fsck = sh(Command::new("e2fsck").args(["-fy", &self.path()]));
        let rc = fsck.status.code().unwrap_or(-1);
        assert!(
            rc == 0 || rc == 1,
            "e2fsck -fy left errors (rc {rc}): {}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        self.mount();
        rc
    }

    /// Fills the file system (as root: reserved blocks too) and syncs it.
    fn fill(&self) {
        let _ = sh(Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", self.mnt.join("filler").display()))
            .args(["bs=1M"]));
        let _ = sh(Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", self.mnt.join("filler2").display()))
            .args(["bs=4k"]));
        sh(Command::new("sync").arg("-f").arg(&self.mnt));
    }

    fn unfill(&self) {
        let _ = std::fs::remove_file(self.mnt.join("filler"));
        let _ = std::fs::remove_file(self.mnt.join("filler2"));
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = sh(&mut dmsetup(&[
            "reload",
            &self.dm,
            "--table",
            &self.linear_table(),
        ]));
        let _ = sh(&mut dmsetup(&["resume", &self.dm]));
        let _ = sh(Command::new("umount").arg("-l").arg(&self.mnt));
        let _ = sh(&mut dmsetup(&["remove", "--force", &self.dm]));
        let _ = sh(Command::new("losetup").args(["-d", &self.loopdev]));
        let _ = std::fs::remove_file(&self.img);
    }
}

/// Deterministic bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn tar_of(seed: u64, files: usize, size: usize) -> Vec<u8> {
    let mut t = TarBuilder::new().dir("d/", 0o755);
    for i in 0..files {
        t = t.file(
            &format!("d/f{seed}-{i}"),
            0o644,
            &bytes(seed * 1000 + i as u64, size),
        );
    }
    t.finish()
}

/// What the baseline committed.
struct Baseline {
    base: String,
    top: String,
    image: String,
    ctr: String,
    /// Layer ID → diff digest.
    diffs: BTreeMap<String, String>,
    /// (kind, ID, key) → digest.
    data: BTreeMap<(&'static str, String, String), String>,
    /// ID → names.
    names: BTreeMap<String, Vec<String>>,
}

fn first_id(out: &Output) -> String {
    ok(out).lines().next().unwrap_or("").trim().to_string()
}

fn baseline(cs: &Cs, work: &Path) -> Baseline {
    let t1 = tar_of(1, 6, 20 << 10);
    let t2 = tar_of(2, 4, 30 << 10);
    let (p1, p2) = (work.join("base.tar"), work.join("top.tar"));
    std::fs::write(&p1, &t1).unwrap();
    std::fs::write(&p2, &t2).unwrap();
    let base = first_id(&cs.ours(&["import-layer", "-f", p1.to_str().unwrap(), "-n", "base"]));
    let top = first_id(&cs.ours(&[
        "import-layer",
        "-f",
        p2.to_str().unwrap(),
        "-n",
        "top",
        &base,
    ]));
    let image = first_id(&cs.ours(&["create-image", "-n", "img", &top]));
    let ctr = first_id(&cs.ours(&["create-container", "-n", "ctr", &image]));
    let mut data = BTreeMap::new();
    for (kind, id, key, len) in [
        ("image", &image, "manifest", 64 << 10),
        ("container", &ctr, "cfg", 16 << 10),
        ("layer", &base, "ldata", 8 << 10),
    ] {
        let b = bytes(len as u64 + 7, len);
        let p = work.join(key);
        std::fs::write(&p, &b).unwrap();
        ok(&cs.ours(&[
            &format!("set-{kind}-data"),
            "-f",
            p.to_str().unwrap(),
            id,
            key,
        ]));
        data.insert((kind, id.clone(), key.to_string()), sha256(&b));
    }
    ok(&cs.ours(&["mount", &ctr]));
    sh(&mut Command::new("sync"));
    let diffs = BTreeMap::from([(base.clone(), sha256(&t1)), (top.clone(), sha256(&t2))]);
    let names = BTreeMap::from([
        (base.clone(), vec!["base".to_string()]),
        (top.clone(), vec!["top".to_string()]),
        (image.clone(), vec!["img".to_string()]),
        (ctr.clone(), vec!["ctr".to_string()]),
    ]);
    Baseline {
        base,
        top,
        image,
        ctr,
        diffs,
        data,
        names,
    }
}

/// How a fault is injected.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Eio,
    Enospc,
    EioMid,
    Flakey,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Eio => "eio",
            Fault::Enospc => "enospc",
            Fault::EioMid => "eio-mid",
            Fault::Flakey => "flakey",
        }
    }
}

/// One operation under a fault.
struct Case {
    class: &'static str,
    op: &'static str,
    fault: Fault,
}

/// The result of one case, for the summary.
struct CaseResult {
    case: String,
    outcome: String,
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The error line of a failed operation: one line (logrus warnings aside) naming a file and
/// carrying the errno's text.
#[track_caller]
fn assert_clear_failure(case: &str, out: &Output) -> String {
    let all = stderr_lines(out);
    assert!(
        !all.iter().any(|l| l.contains("panicked")),
        "{case}: panicked: {all:?}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{case}: exit status, stderr {all:?}"
    );
    let errors: Vec<&String> = all.iter().filter(|l| !l.starts_with("time=")).collect();
    assert_eq!(
        errors.len(),
        1,
        "{case}: expected one error line, got {all:?}"
    );
    let line = errors[0].clone();
    let errno = [
        "input/output error",
        "no space left on device",
        "read-only file system",
    ];
    assert!(
        errno.iter().any(|e| line.contains(e)),
        "{case}: the error line does not give the errno's text: {line}"
    );
    assert!(
        line.contains('/'),
        "{case}: the error line names no file: {line}"
    );
    line
}

fn records(cs: &Cs, what: &str) -> Vec<serde_json::Value> {
    let out = cs.ours(&[what, "--json"]);
    let s = ok(&out);
    serde_json::from_str::<serde_json::Value>(&s)
        .unwrap_or_else(|e| panic!("{what} --json: {e}: {s}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn find<'a>(v: &'a [serde_json::Value], id: &str) -> Option<&'a serde_json::Value> {
    v.iter().find(|r| r["id"] == id)
}

fn names_of(r: &serde_json::Value) -> Vec<String> {
    r["names"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the operation of `case` (the fault already injected, except for `eio-mid`, which
/// injects it itself); returns its output.
fn run_op(case: &Case, cs: &Cs, b: &Baseline, work: &Path, dev: &Dev) -> Output {
    let path = |n: &str| work.join(n).to_string_lossy().into_owned();
    match case.op {
        "import-layer" => {
            std::fs::write(work.join("new.tar"), tar_of(3, 12, 128 << 10)).unwrap();
            cs.ours(&["import-layer", "-f", &path("new.tar"), "-n", "new", &b.top])
        }
        "import-layer-pipe" => {
            let tar = tar_of(4, 16, 128 << 10);
            let mut child = Command::new(ours())
                .args(cs.global_args())
                .args(["import-layer", "-n", "new", &b.top])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let half = tar.len() / 2;
            // A write error (EPIPE) means the apply already gave up: its output says why.
            let _ = stdin.write_all(&tar[..half]);
            std::thread::sleep(Duration::from_millis(1500));
            dev.error();
            let _ = stdin.write_all(&tar[half..]);
            drop(stdin);
            child.wait_with_output().unwrap()
        }
        "applydiff" => {
            let id = first_id(&cs.ours(&["create-layer", "-n", "new"]));
            sh(&mut Command::new("sync"));
            std::fs::write(work.join("new.tar"), tar_of(5, 12, 128 << 10)).unwrap();
            inject(case.fault, dev);
            cs.ours(&["applydiff", "-f", &path("new.tar"), &id])
        }
        "create-layer" => cs.ours(&["create-layer", "-n", "new", &b.top]),
        "add-names" => cs.ours(&["add-names", "-n", "newname", &b.image]),
        "create-container" => cs.ours(&["create-container", "-n", "new", &b.image]),
        "set-image-data" | "set-container-data" | "set-layer-data" => {
            std::fs::write(work.join("big"), bytes(9, 1 << 20)).unwrap();
            let id = match case.op {
                "set-image-data" => &b.image,
                "set-container-data" => &b.ctr,
                _ => &b.top,
            };
            cs.ours(&[case.op, "-f", &path("big"), id, "big"])
        }
        "mount" => cs.ours(&["mount", &b.base]),
        "unmount" => cs.ours(&["unmount", &b.ctr]),
        "delete-container" => {
            ok(&cs.ours(&["unmount", &b.ctr]));
            sh(&mut Command::new("sync"));
            inject(case.fault, dev);
            cs.ours(&["delete-container", &b.ctr])
        }
        "delete-image" => {
            ok(&cs.ours(&["unmount", &b.ctr]));
            ok(&cs.ours(&["delete-container", &b.ctr]));
            sh(&mut Command::new("sync"));
            inject(case.fault, dev);
            cs.ours(&["delete-image", &b.image])
        }
        "delete-layer" => {
            let id = first_id(&cs.ours(&["create-layer", "-n", "leaf", &b.top]));
            let _ = id;
            sh(&mut Command::new("sync"));
            inject(case.fault, dev);
            cs.ours(&["delete-layer", "leaf"])
        }
        other => panic!("unknown op {other}"),
    }
}

/// Whether the op injects its fault itself (after its own preparation).
fn injects_itself(op: &str) -> bool {
    matches!(
        op,
        "import-layer-pipe" | "applydiff" | "delete-container" | "delete-image" | "delete-layer"
    )
}

fn inject(fault: Fault, dev: &Dev) {
    match fault {
        Fault::Eio => dev.error(),
        Fault::Enospc => dev.fill(),
        Fault::Flakey => dev.flakey(),
        // Injected halfway through by the operation.
        Fault::EioMid => {}
    }
}

/// Runs one case on a fresh file system; returns its summary line.
fn run_case(scratch: &Path, lane: usize, case: &Case) -> CaseResult {
    let name = format!("{} {} ({})", case.class, case.op, case.fault.name());
    eprintln!("== {name}");
    let started = std::time::Instant::now();
    let dev = Dev::new(scratch, lane);
    let work = scratch.join(format!("csfault{lane}-work"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let cs = Cs {
        dir: tempfile::tempdir_in(scratch).unwrap(),
        graph: dev.mnt.join("graph"),
        run: dev.mnt.join("run"),
        driver: "vfs".into(),
    };
    let b = baseline(&cs, &work);
    if !injects_itself(case.op) {
        inject(case.fault, &dev);
    }
    let out = run_op(case, &cs, &b, &work, &dev);
    let completed = out.status.success();
    let line = if completed {
        None
    } else {
        Some(assert_clear_failure(&name, &out))
    };
    dev.unfill();
    let fsck = dev.restore();

    // The store opens, and the baseline's mount of the container is still counted (unless
    // unmounted or deleted); check comes after this, as it unmounts everything when done.
    let layers = records(&cs, "layers");
    if !matches!(case.op, "unmount" | "delete-container" | "delete-image") {
        let m = cs.ours(&["mounted", &b.ctr]);
        assert!(
            String::from_utf8_lossy(&m.stdout).contains("mounted"),
            "{name}: the baseline mount of {} is no longer counted: {}",
            b.ctr,
            String::from_utf8_lossy(&m.stderr)
        );
    }
    // check ends clean (after check -r if need be).
    let check = cs.ours(&["check"]);
    let repaired = if check.status.success() && check.stdout.is_empty() {
        false
    } else {
        eprintln!(
            "{name}: check found: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let r = cs.ours(&["check", "-r"]);
        assert!(
            r.status.success(),
            "{name}: check -r failed: {}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
        let again = cs.ours(&["check"]);
        assert!(
            again.status.success() && again.stdout.is_empty(),
            "{name}: check after check -r: {}{}",
            String::from_utf8_lossy(&again.stdout),
            String::from_utf8_lossy(&again.stderr)
        );
        true
    };
    let layers_after = records(&cs, "layers");
    let images = records(&cs, "images");
    let containers = records(&cs, "containers");

    // No incomplete layer is listed as complete: every listed layer with a recorded diff
    // reproduces it, and none carries the incomplete flag.
    for l in &layers_after {
        let id = l["id"].as_str().unwrap_or_default();
        assert!(
            l["flags"]["incomplete"] != true,
            "{name}: layer {id} is listed with the incomplete flag: {l}"
        );
        if let Some(want) = l["diff-digest"].as_str() {
            let diff = cs.ours(&["diff", "-u", id]);
            assert!(
                diff.status.success(),
                "{name}: diff {id}: {}",
                String::from_utf8_lossy(&diff.stderr)
            );
            assert_eq!(sha256(&diff.stdout), want, "{name}: layer {id}'s diff");
        }
    }
    let _ = layers;

    // Nothing committed before the fault is lost; the target of a deletion may be gone.
    let deleting: Vec<&str> = match case.op {
        "delete-container" => vec![b.ctr.as_str()],
        // The container goes first (committed, before the fault).
        "delete-image" => vec![
            b.ctr.as_str(),
            b.image.as_str(),
            b.top.as_str(),
            b.base.as_str(),
        ],
        _ => vec![],
    };
    // A failed deletion that check -r finished off, or a completed one, removes its target.
    let gone = |id: &str| deleting.contains(&id);
    for (id, want) in &b.diffs {
        match find(&layers_after, id) {
            Some(l) => assert_eq!(l["diff-digest"].as_str(), Some(want.as_str()), "{name}"),
            None => assert!(gone(id), "{name}: baseline layer {id} is lost"),
        }
    }
    for (id, names) in &b.names {
        let r = find(&layers_after, id)
            .or_else(|| find(&images, id))
            .or_else(|| find(&containers, id));
        match r {
            Some(r) => {
                let have = names_of(r);
                for n in names {
                    assert!(have.contains(n), "{name}: {id} lost its name {n}: {have:?}");
                }
            }
            None => assert!(gone(id), "{name}: baseline item {id} ({names:?}) is lost"),
        }
    }
    for ((kind, id, key), want) in &b.data {
        if gone(id) {
            continue;
        }
        if find(&layers_after, id).is_none()
            && find(&images, id).is_none()
            && find(&containers, id).is_none()
        {
            continue; // reported above
        }
        let out = cs.ours(&[&format!("get-{kind}-data"), id, key]);
        assert!(
            out.status.success(),
            "{name}: get-{kind}-data {id} {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(&sha256(&out.stdout), want, "{name}: {kind} {id} data {key}");
    }

    // A completed operation's effect is there.
    if completed {
        let present =
            |v: &[serde_json::Value], n: &str| v.iter().any(|r| names_of(r).iter().any(|x| x == n));
        match case.op {
            "import-layer" | "import-layer-pipe" | "create-layer" => {
                assert!(
                    present(&layers_after, "new"),
                    "{name}: completed, but the new layer is lost"
                )
            }
            "add-names" => assert!(
                present(&images, "newname"),
                "{name}: completed, but the name is lost"
            ),
            "create-container" => assert!(
                present(&containers, "new"),
                "{name}: completed, but the container is lost"
            ),
            "delete-container" | "delete-image" => {
                for id in &deleting {
                    assert!(
                        find(&layers_after, id).is_none()
                            && find(&images, id).is_none()
                            && find(&containers, id).is_none(),
                        "{name}: completed, but {id} is still there"
                    );
                }
            }
            "delete-layer" => assert!(
                !present(&layers_after, "leaf"),
                "{name}: completed, but the layer is there"
            ),
            _ => {}
        }
    } else if case.op.starts_with("import-layer") && !repaired {
        assert!(
            !layers_after
                .iter()
                .any(|r| names_of(r).iter().any(|x| x == "new")),
            "{name}: failed, yet the new layer is listed"
        );
    }

    let outcome = format!(
        "{}{}{} ({:.1} s)",
        match &line {
            None => "completed".to_string(),
            Some(l) => format!("failed: {l}"),
        },
        if fsck == 1 {
            "; e2fsck corrected errors"
        } else {
            ""
        },
        if repaired {
            "; check -r needed"
        } else {
            "; check clean"
        },
        started.elapsed().as_secs_f64()
    );
    eprintln!("{name}: {outcome}");
    drop(cs);
    drop(dev);
    CaseResult {
        case: name,
        outcome,
    }
}

#[test]
fn io_faults_leave_a_clean_store() {
    let Some(scratch) = in_vm() else {
        eprintln!(
            "SKIPPED: the fault-injection test runs inside `cargo xtask vm-test` \
             (device-mapper; CI runs it there: cargo xtask vm-test -p storage-tests faults)"
        );
        return;
    };
    assert!(
        Path::new("/dev/mapper/control").exists(),
        "device-mapper is missing in the vm-test guest (dm_mod, dm_flakey)"
    );
    let cases = [
        ("apply", "import-layer", Fault::Eio),
        ("apply", "import-layer", Fault::Enospc),
        ("apply", "import-layer-pipe", Fault::EioMid),
        ("apply", "import-layer", Fault::Flakey),
        ("apply", "applydiff", Fault::Eio),
        ("record writes", "create-layer", Fault::Eio),
        ("record writes", "create-layer", Fault::Enospc),
        ("record writes", "add-names", Fault::Eio),
        ("record writes", "add-names", Fault::Enospc),
        ("record writes", "create-container", Fault::Eio),
        ("big-data writes", "set-image-data", Fault::Eio),
        ("big-data writes", "set-image-data", Fault::Enospc),
        ("big-data writes", "set-container-data", Fault::Eio),
        ("big-data writes", "set-layer-data", Fault::Enospc),
        ("mount bookkeeping", "mount", Fault::Eio),
        ("mount bookkeeping", "mount", Fault::Enospc),
        ("mount bookkeeping", "unmount", Fault::Eio),
        ("deletion", "delete-container", Fault::Eio),
        ("deletion", "delete-image", Fault::Eio),
        ("deletion", "delete-layer", Fault::Eio),
        ("deletion", "delete-container", Fault::Flakey),
    ];
    // Two lanes (the guest has two vCPUs), each with its own device; a failing case does not
    // stop the others.
    let lanes = 2;
    let outcomes: Vec<(usize, Result<CaseResult, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..lanes)
            .map(|lane| {
                let scratch = &scratch;
                let cases = &cases;
                s.spawn(move || {
                    let mut v = Vec::new();
                    for (i, &(class, op, fault)) in cases.iter().enumerate() {
                        if i % lanes != lane {
                            continue;
                        }
                        let case = Case { class, op, fault };
                        let r = std::panic::catch_unwind(|| run_case(scratch, lane, &case))
                            .map_err(|e| {
                                format!(
                                    "{class} {op} ({}): {}",
                                    fault.name(),
                                    e.downcast_ref::<String>()
                                        .cloned()
                                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                                        .unwrap_or_default()
                                )
                            });
                        v.push((i, r));
                    }
                    v
                })
            })
            .collect();
        let mut all: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        all.sort_by_key(|(i, _)| *i);
        all
    });
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for (_, r) in outcomes {
        match r {
            Ok(r) => results.push(r),
            Err(e) => failed.push(e),
        }
    }
    // Straight to stderr, past libtest's capture: the summary belongs in the vm-test log.
    let mut summary = format!(
        "\nFAULTS-SUMMARY {} faults injected, {} cases passed, {} failed\n",
        results.len() + failed.len(),
        results.len(),
        failed.len()
    );
    for r in &results {
        summary.push_str(&format!("FAULT {}: {}\n", r.case, r.outcome));
    }
    let _ = std::io::stderr().write_all(summary.as_bytes());
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

/// Lazily unmounts everything mounted under a directory (and the directory itself) when
/// dropped, also when the test panics.
struct UnmountUnder(PathBuf);

impl Drop for UnmountUnder {
    fn drop(&mut self) {
        for m in storage_tests::peers::mounts_under(&self.0) {
            let _ = sh(Command::new("umount").arg("-l").arg(m));
        }
        let _ = sh(Command::new("umount").arg("-l").arg(&self.0));
    }
}

/// Mounts a tmpfs of `size` on `dir`.
fn tmpfs(dir: &Path, size: &str) -> UnmountUnder {
    sh_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir),
    );
    UnmountUnder(dir.to_path_buf())
}

/// On the host too (as root): big-data writes on a full tmpfs fail with one line naming the
/// file, and leave the store clean.
#[test]
fn faults_big_data_enospc_names_the_file() {
    if !storage_tests::require(storage_tests::is_root(), "root (to mount a small tmpfs)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _unmount = tmpfs(&mnt, "2m");
    let cs = Cs {
        dir: tempfile::tempdir().unwrap(),
        graph: mnt.join("graph"),
        run: mnt.join("run"),
        driver: "vfs".into(),
    };
    let layer = first_id(&cs.ours(&["create-layer", "-n", "l"]));
    let image = first_id(&cs.ours(&["create-image", "-n", "i", &layer]));
    let ctr = first_id(&cs.ours(&["create-container", "-n", "c", &image]));
    let big = dir.path().join("big");
    std::fs::write(&big, bytes(3, 4 << 20)).unwrap();
    for (kind, id) in [("layer", &layer), ("image", &image), ("container", &ctr)] {
        let op = format!("set-{kind}-data");
        let out = cs.ours(&[&op, "-f", big.to_str().unwrap(), id, "big"]);
        let line = assert_clear_failure(&op, &out);
        assert!(
            line.contains(&mnt.join("graph").to_string_lossy().into_owned()),
            "{op}: the error line does not name the file in the store: {line}"
        );
        let list = ok(&cs.ours(&[&format!("list-{kind}-data"), id]));
        assert!(
            !list.contains("big"),
            "{op} failed, yet lists the item: {list}"
        );
    }
    let check = cs.ours(&["check"]);
    assert!(
        check.status.success() && check.stdout.is_empty(),
        "check after ENOSPC: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// On the host too (as root, overlay): a mount whose count cannot be recorded (the run root
/// is full) fails with one line naming mountpoints.json and leaves no mount behind.
#[test]
fn faults_mount_bookkeeping_enospc_leaves_no_mount() {
    if !storage_tests::require(storage_tests::is_root(), "root (overlay, a small tmpfs)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let _unmount = tmpfs(&run, "1m");
    let _overlay = UnmountUnder(dir.path().join("graph"));
    let cs = Cs {
        dir: tempfile::tempdir().unwrap(),
        graph: dir.path().join("graph"),
        run: run.clone(),
        driver: "overlay".into(),
    };
    let layer = first_id(&cs.ours(&["create-layer", "-n", "l"]));
    // The run root's files exist; now nothing more fits.
    let _ = sh(Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", run.join("filler").display()))
        .arg("bs=4k"));
    let out = cs.ours(&["mount", &layer]);
    let line = assert_clear_failure("mount", &out);
    assert!(line.contains("mountpoints.json"), "{line}");
    let merged = cs.graph.join("overlay").join(&layer).join("merged");
    let left: Vec<PathBuf> = storage_tests::peers::mounts_under(&cs.graph)
        .into_iter()
        .filter(|m| *m == merged)
        .collect();
    assert!(left.is_empty(), "the failed mount left {left:?} mounted");
    std::fs::remove_file(run.join("filler")).unwrap();
    let m = cs.ours(&["mounted", &layer]);
    assert!(
        !String::from_utf8_lossy(&m.stdout).contains("mounted"),
        "the failed mount is counted"
    );
    ok(&cs.ours(&["shutdown", "-f"]));
}
