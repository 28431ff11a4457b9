//! The oracle of the targets that write or read a directory tree: a scratch root with a
//! canary beside it, watched with inotify.
//!
//! ```text
//! <dir>/root/          the root handed to the code under test
//! <dir>/canary/file    known content; must never be opened, read, changed or linked
//! ```
//!
//! inotify reports every open, read, write, attribute change, creation, deletion and rename
//! of `<dir>`'s entries and of the canary's, whoever does it, so the check is exact for
//! everything reachable by climbing out of the root (`..`, symlinks to `../canary`, hard
//! links to it) and costs one `read` per input. Absolute names and symlinks cannot be
//! watched for across the whole file system; the code under test resolves them inside the
//! root (the kernel's `RESOLVE_IN_ROOT` for unpacking), so they land in `root/` or, if that
//! ever broke, climb through `<dir>` where the watch sees them, as `../canary` names do. A
//! listing of `<dir>` and of the canary and the canary's `stat` complete the check.

use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::inotify::{self, CreateFlags, Reader, WatchFlags};

/// The canary's content.
const CANARY_TEXT: &[u8] = b"canary: nothing may open, read, change or link this file\n";

/// A scratch root with a watched canary beside it (see the module docs).
pub struct Fence {
    dir: PathBuf,
    root: PathBuf,
    canary_dir: PathBuf,
    canary: PathBuf,
    inotify: OwnedFd,
    wd_dir: i32,
    wd_canary_dir: i32,
    wd_canary: i32,
    canary_stat: [i64; 9],
    buf: Vec<MaybeUninit<u8>>,
}

fn stat_of(path: &Path) -> io::Result<[i64; 9]> {
    let m = fs::symlink_metadata(path)?;
    Ok([
        m.ino() as i64,
        i64::from(m.mode()),
        m.nlink() as i64,
        i64::from(m.uid()),
        i64::from(m.gid()),
        m.size() as i64,
        m.mtime_nsec() + m.mtime() * 1_000_000_000,
        m.ctime_nsec() + m.ctime() * 1_000_000_000,
        m.atime_nsec() + m.atime() * 1_000_000_000,
    ])
}

fn names(dir: &Path) -> io::Result<Vec<String>> {
    let mut v: Vec<String> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    v.sort();
    Ok(v)
}

impl Fence {
    /// Makes `dir` (removing what was there) with an empty `root/` and the canary, and
    /// starts watching.
    pub fn new(dir: &Path) -> io::Result<Fence> {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        let root = dir.join("root");
        let canary_dir = dir.join("canary");
        let canary = canary_dir.join("file");
        fs::create_dir_all(&root)?;
        fs::create_dir(&canary_dir)?;
        fs::write(&canary, CANARY_TEXT)?;
        let inotify = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        let all = WatchFlags::ALL_EVENTS;
        let wd_dir = inotify::add_watch(&inotify, dir, all)?;
        let wd_canary_dir = inotify::add_watch(&inotify, &canary_dir, all)?;
        let wd_canary = inotify::add_watch(&inotify, &canary, all)?;
        let canary_stat = stat_of(&canary)?;
        let mut fence = Fence {
            dir: dir.to_path_buf(),
            root,
            canary_dir,
            canary,
            inotify,
            wd_dir,
            wd_canary_dir,
            wd_canary,
            canary_stat,
            buf: vec![MaybeUninit::uninit(); 64 * 1024],
        };
        fence.events()?;
        Ok(fence)
    }

    /// The scratch root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding the root and the canary.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Empties the root (removing and re-creating it) and forgets the events that caused.
    pub fn reset_root(&mut self) -> io::Result<()> {
        match fs::remove_dir_all(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir(&self.root)?;
        self.events()?;
        Ok(())
    }

    /// Drains the inotify queue: the events seen since the last call, as text, except those
    /// about the root itself (it may be opened, read and changed).
    fn events(&mut self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut reader = Reader::new(&self.inotify, &mut self.buf);
        loop {
            let ev = match reader.next() {
                Ok(ev) => ev,
                Err(rustix::io::Errno::WOULDBLOCK) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let name = ev.file_name().map(|n| n.to_string_lossy().into_owned());
            if ev.wd() == self.wd_dir && name.as_deref() == Some("root") {
                continue;
            }
            let what = if ev.wd() == self.wd_dir {
                "the scratch directory"
            } else if ev.wd() == self.wd_canary_dir {
                "the canary's directory"
            } else if ev.wd() == self.wd_canary {
                "the canary"
            } else {
                "the watch queue (overflow)"
            };
            out.push(format!(
                "{what}: {:?} {}",
                ev.events(),
                name.unwrap_or_default()
            ));
        }
        Ok(out)
    }

    /// Checks that nothing outside the root was opened, read, created, changed or removed
    /// since the last [`Fence::reset_root`] or check.
    ///
    /// # Panics
    /// With the list of what happened outside, when anything did.
    pub fn check(&mut self) {
        let mut bad = match self.events() {
            Ok(ev) => ev,
            Err(e) => vec![format!("reading inotify events: {e}")],
        };
        match names(&self.dir) {
            Ok(n) if n == ["canary", "root"] => {}
            Ok(n) => bad.push(format!("scratch directory holds {n:?}")),
            Err(e) => bad.push(format!("listing the scratch directory: {e}")),
        }
        match names(&self.canary_dir) {
            Ok(n) if n == ["file"] => {}
            Ok(n) => bad.push(format!("canary directory holds {n:?}")),
            Err(e) => bad.push(format!("listing the canary directory: {e}")),
        }
        match stat_of(&self.canary) {
            Ok(s) if s == self.canary_stat => {}
            Ok(s) => bad.push(format!(
                "canary stat changed: {:?} -> {s:?}",
                self.canary_stat
            )),
            Err(e) => bad.push(format!("stat of the canary: {e}")),
        }
        // The listings above are events too: forget them.
        if let Err(e) = self.events() {
            bad.push(format!("reading inotify events: {e}"));
        }
        assert!(
            bad.is_empty(),
            "outside the scratch root {}:\n  {}",
            self.root.display(),
            bad.join("\n  ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fails(f: &mut Fence) -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.check())).is_err()
    }

    #[test]
    fn sees_what_happens_outside_the_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut f = Fence::new(&tmp.path().join("s")).expect("fence");
        let root = f.root().to_path_buf();
        // Inside the root: fine.
        fs::write(root.join("x"), b"1").expect("write");
        fs::create_dir(root.join("d")).expect("mkdir");
        f.check();
        f.reset_root().expect("reset");
        f.check();
        // Reading the canary, opening it, writing it, linking it, creating beside the root.
        type Step<'a> = &'a dyn Fn(&Path, &Path);
        let steps: [Step<'_>; 5] = [
            &|_, c| drop(fs::read(c).expect("read")),
            &|_, c| drop(fs::File::open(c).expect("open")),
            &|_, c| fs::write(c, CANARY_TEXT).expect("write"),
            &|r, c| fs::hard_link(c, r.join("h")).expect("link"),
            &|r, _| fs::write(r.join("../new"), b"").expect("create"),
        ];
        for (i, step) in steps.iter().enumerate() {
            let mut f = Fence::new(&tmp.path().join(format!("s{i}"))).expect("fence");
            f.check();
            let root = f.root().to_path_buf();
            step(&root, &root.join("../canary/file"));
            assert!(fails(&mut f), "step {i} went unnoticed");
        }
        // The cheaper half alone: a changed listing is caught without events too.
        let mut f = Fence::new(&tmp.path().join("t")).expect("fence");
        fs::write(f.dir().join("extra"), b"").expect("create");
        f.events().expect("drain");
        assert!(fails(&mut f));
    }
}
