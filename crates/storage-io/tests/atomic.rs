//! Tests of the atomic write protocol.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use storage_io::{AtomicFile, WriteOptions, atomic_write, atomic_write_mtime, mkdir_all};

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

#[test]
fn writes_replace_and_set_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("layers.json");
    atomic_write(&p, b"old", WriteOptions::default()).expect("first write");
    assert_eq!(std::fs::read(&p).expect("read"), b"old");
    let mode = std::fs::metadata(&p).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);

    let mtime = atomic_write_mtime(
        &p,
        b"new",
        WriteOptions {
            mode: 0o644,
            sync: false,
        },
    )
    .expect("second write");
    assert_eq!(std::fs::read(&p).expect("read"), b"new");
    let meta = std::fs::metadata(&p).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    assert_eq!(meta.modified().expect("mtime"), mtime);
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn temp_file_follows_go_naming_and_is_invisible_until_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("images.json");
    atomic_write(&p, b"[]", WriteOptions::default()).expect("write");
    let mut f = AtomicFile::create(&p, WriteOptions::default()).expect("create");
    let name = f
        .temp_path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let digits = name.strip_prefix(".tmp-images.json").expect("prefix");
    assert!(
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        "{name}"
    );
    assert_eq!(f.temp_path().parent(), Some(dir.path()));
    let tmp_mode = std::fs::metadata(f.temp_path())
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(tmp_mode & !0o600, 0, "temp file created with at most 0600");
    f.write_all(b"[1]").expect("write");
    let star = AtomicFile::create(&dir.path().join("a*b"), WriteOptions::default()).expect("star");
    let sname = star
        .temp_path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let mid = sname
        .strip_prefix(".tmp-a")
        .and_then(|s| s.strip_suffix('b'))
        .expect("star name");
    assert!(
        !mid.is_empty() && mid.bytes().all(|b| b.is_ascii_digit()),
        "{sname}"
    );
    drop(star);
    assert_eq!(std::fs::read(&p).expect("read"), b"[]");
    f.commit().expect("commit");
    assert_eq!(std::fs::read(&p).expect("read"), b"[1]");
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn dropping_without_commit_removes_temp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("c.json");
    atomic_write(&p, b"keep", WriteOptions::default()).expect("write");
    {
        let mut f = AtomicFile::create(&p, WriteOptions::default()).expect("create");
        f.write_all(b"discard").expect("write");
        assert_eq!(temp_files(dir.path()).len(), 1);
    }
    assert!(temp_files(dir.path()).is_empty());
    assert_eq!(std::fs::read(&p).expect("read"), b"keep");
}

#[test]
fn failed_rename_removes_temp_and_keeps_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("busy");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(target.join("inside"), b"x").expect("write");
    let err = atomic_write(&target, b"data", WriteOptions::default()).expect_err("rename onto dir");
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::EISDIR | libc::ENOTEMPTY | libc::EEXIST)
        ),
        "{err}"
    );
    assert!(temp_files(dir.path()).is_empty());
    assert_eq!(std::fs::read(target.join("inside")).expect("read"), b"x");
}

#[test]
fn missing_directory_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("nope/x.json");
    let err = atomic_write(&p, b"data", WriteOptions::default()).expect_err("no dir");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert!(!dir.path().join("nope").exists());
    assert!(atomic_write(Path::new("/"), b"x", WriteOptions::default()).is_err());
}

struct Umount<'a>(&'a Path);
impl Drop for Umount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

#[test]
fn full_filesystem_keeps_old_content() {
    if !storage_testsupport::is_root() || Command::new("mount").arg("--version").output().is_err() {
        assert!(!in_ci(), "CI=true: this test needs root and mount(8)");
        eprintln!("SKIPPED full_filesystem_keeps_old_content: needs root and mount(8)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("run mount");
    assert!(ok.success(), "mounting a tmpfs failed");
    let _guard = Umount(&mnt);
    let p = mnt.join("layers.json");
    atomic_write(&p, b"old content", WriteOptions::default()).expect("small write");
    let big = vec![b'x'; 1 << 20];
    let err = atomic_write(&p, &big, WriteOptions::default()).expect_err("ENOSPC expected");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert_eq!(std::fs::read(&p).expect("read"), b"old content");
    assert!(temp_files(&mnt).is_empty(), "temp file left behind");
    // Space was given back: a small write works again.
    atomic_write(&p, b"new", WriteOptions::default()).expect("write after failure");
    assert_eq!(std::fs::read(&p).expect("read"), b"new");
}

#[test]
fn read_only_directory_fails_cleanly() {
    if storage_testsupport::is_root() {
        // Root ignores permission bits; use a read-only bind mount instead.
        if Command::new("mount").arg("--version").output().is_err() {
            assert!(
                !in_ci(),
                "CI=true: this test needs mount(8) when run as root"
            );
            eprintln!("SKIPPED read_only_directory_fails_cleanly: no mount(8)");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.json");
        std::fs::write(&p, b"old").expect("write");
        let ok = Command::new("mount")
            .args(["-o", "bind,ro"])
            .arg(dir.path())
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(ok.success(), "read-only bind mount failed");
        let guard = Umount(dir.path());
        let err = atomic_write(&p, b"new", WriteOptions::default()).expect_err("EROFS expected");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        drop(guard);
        assert_eq!(std::fs::read(&p).expect("read"), b"old");
        assert!(temp_files(dir.path()).is_empty());
    } else {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.json");
        std::fs::write(&p, b"old").expect("write");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o500))
            .expect("chmod");
        let err = atomic_write(&p, b"new", WriteOptions::default()).expect_err("EACCES expected");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        assert_eq!(std::fs::read(&p).expect("read"), b"old");
    }
}

#[test]
fn mkdir_all_like_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deep = dir.path().join("a/b/c");
    mkdir_all(&deep, 0o700).expect("mkdir_all");
    for p in [dir.path().join("a"), dir.path().join("a/b"), deep.clone()] {
        let mode = std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode & !0o700, 0, "{}: {mode:o}", p.display());
    }
    // Existing directories are untouched.
    std::fs::set_permissions(&deep, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    mkdir_all(&deep, 0o700).expect("again");
    assert_eq!(
        std::fs::metadata(&deep).expect("stat").permissions().mode() & 0o777,
        0o755
    );
    let file = dir.path().join("f");
    std::fs::write(&file, b"").expect("write");
    assert_eq!(
        mkdir_all(&file, 0o700).expect_err("file").raw_os_error(),
        Some(libc::ENOTDIR)
    );
    assert_eq!(
        mkdir_all(&file.join("sub"), 0o700)
            .expect_err("under file")
            .raw_os_error(),
        Some(libc::ENOTDIR)
    );
}

const CHILD_ENV: &str = "STORAGE_IO_KILL_TEST_TARGET";
const CHILD_ENV_ROUND: &str = "STORAGE_IO_KILL_TEST_ROUND";
const SIZE: usize = 256 * 1024;

/// Kills a writer process at random moments: the target must always hold one
/// complete version, never a mix or a truncated file.
///
/// The child says `ready` after its first complete write, and the kill comes a varying
/// time after that, so every round kills a writer that is really writing however slow the
/// machine is (under TCG in the VM a fixed delay from spawn often hit the child before it
/// had started).
#[test]
fn killed_writer_leaves_old_or_new() {
    if let Ok(target) = std::env::var(CHILD_ENV) {
        // Child role: rewrite the file forever, alternating contents (starting at a
        // per-round byte, so rounds leave different versions behind). Its `ready` ends the
        // line libtest began with the test name.
        let target = Path::new(&target);
        let start: u64 = std::env::var(CHILD_ENV_ROUND)
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        for i in 0u64.. {
            let byte = b'b' + ((start + i) % 24) as u8;
            atomic_write(target, &vec![byte; SIZE], WriteOptions::default()).expect("child write");
            if i == 0 {
                use std::io::Write as _;
                let mut out = std::io::stdout();
                let _ = writeln!(out, "ready");
                let _ = out.flush();
            }
        }
        return;
    }
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("layers.json");
    atomic_write(&target, &vec![b'a'; SIZE], WriteOptions::default()).expect("seed");
    let exe = std::env::current_exe().expect("current_exe");
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..12u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "killed_writer_leaves_old_or_new",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &target)
            .env(CHILD_ENV_ROUND, round.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let ready = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.ends_with("ready"));
        assert!(
            ready,
            "round {round}: the writer ended before its first write"
        );
        std::thread::sleep(Duration::from_millis((round * 37) % 90));
        child.kill().expect("kill");
        child.wait().expect("wait");
        let data = std::fs::read(&target).expect("read target");
        assert_eq!(data.len(), SIZE, "round {round}: truncated file");
        assert!(
            data.iter().all(|&b| b == data[0]) && data[0].is_ascii_lowercase(),
            "round {round}: mixed content"
        );
        seen.insert(data[0]);
    }
    assert!(
        seen.len() >= 2,
        "every round left the same version; the kills proved nothing"
    );
}
