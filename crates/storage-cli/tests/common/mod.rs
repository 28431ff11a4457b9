//! Helpers shared by the end-to-end CLI tests: a scratch vfs store that runs our binary or
//! Go's on it.
#![allow(dead_code)] // each test binary uses a subset

pub use std::io::Write;
pub use std::os::unix::process::CommandExt;
pub use std::path::Path;
pub use std::process::{Command, Stdio};
#[allow(unused_imports)] // each test binary uses a subset
pub use storage_testsupport::first_line;

pub const OURS: &str = env!("CARGO_BIN_EXE_containers-storage");
pub const GO: &str = "/usr/bin/containers-storage";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

pub struct Store {
    pub tmp: tempfile::TempDir,
    pub graph: String,
    pub run: String,
}

pub fn store() -> Store {
    let tmp = tempfile::tempdir().unwrap();
    let graph = tmp.path().join("root").to_string_lossy().into_owned();
    let run = tmp.path().join("run").to_string_lossy().into_owned();
    Store { tmp, graph, run }
}

pub fn go_available() -> bool {
    if Path::new(GO).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{GO} is required in CI");
    }
    eprintln!("SKIPPING: {GO} is not installed");
    false
}

impl Store {
    /// `--graph G --run R --storage-driver vfs ARGS`.
    pub fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "--graph",
            &self.graph,
            "--run",
            &self.run,
            "--storage-driver",
            "vfs",
        ];
        v.extend_from_slice(rest);
        v
    }

    pub fn exec(&self, bin: &str, args: &[&str], stdin: Option<&[u8]>) -> Out {
        let mut cmd = Command::new(bin);
        cmd.arg0("containers-storage")
            .args(self.args(args))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(data) = stdin {
            child.stdin.take().unwrap().write_all(data).unwrap();
        }
        let o = child.wait_with_output().unwrap();
        Out {
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            code: o.status.code().unwrap_or(-1),
        }
    }
    pub fn ours(&self, args: &[&str]) -> Out {
        self.exec(OURS, args, None)
    }
    pub fn go(&self, args: &[&str]) -> Out {
        self.exec(GO, args, None)
    }
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.ours(args);
        assert_eq!(o.code, 0, "{args:?}: {o:?}");
        o.stdout
    }
    pub fn go_ok(&self, args: &[&str]) -> String {
        let o = self.go(args);
        assert_eq!(o.code, 0, "go {args:?}: {o:?}");
        o.stdout
    }
    pub fn path(&self, rel: &str) -> String {
        self.tmp.path().join(rel).to_string_lossy().into_owned()
    }
    /// Writes a tar holding `files` (name, content) and returns its path.
    pub fn tar(&self, name: &str, files: &[(&str, &str)]) -> String {
        let dir = self.tmp.path().join(format!("{name}.d"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args = vec![
            "-C".to_string(),
            dir.to_string_lossy().into_owned(),
            "-cf".into(),
        ];
        let out = self.path(name);
        args.push(out.clone());
        for (f, content) in files {
            std::fs::write(dir.join(f), content).unwrap();
            args.push(f.to_string());
        }
        let st = Command::new("tar").args(&args).status().unwrap();
        assert!(st.success());
        out
    }
    /// Writes `data` to a file in the store's temporary directory and returns its path.
    pub fn file(&self, name: &str, data: &[u8]) -> String {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, data).unwrap();
        p.to_string_lossy().into_owned()
    }
}
