//! `cargo xtask demo`: builds our `containers-storage`, makes a throwaway store under
//! `target/demo`, applies a generated three-layer image (gzip, plain and a layer with
//! whiteouts and an opaque directory), creates an image and a container from it, mounts the
//! container and lists its files, checks that every layer diffs back to its recorded digest,
//! then wipes and shuts the store down.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::run as sh;

struct Cs {
    bin: PathBuf,
    graph: PathBuf,
    run: PathBuf,
}

impl Cs {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--graph")
            .arg(&self.graph)
            .arg("--run")
            .arg(&self.run)
            .arg("--storage-driver")
            .arg("vfs")
            .args(args);
        c
    }

    /// Runs a command, echoing it, and returns its stdout.
    fn out(&self, args: &[&str]) -> Result<String, String> {
        println!("$ containers-storage {}", args.join(" "));
        let out = self
            .cmd(args)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", self.bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "containers-storage {} failed ({}): {stdout}",
                args.join(" "),
                out.status
            ));
        }
        Ok(stdout)
    }

    fn show(&self, args: &[&str]) -> Result<String, String> {
        let s = self.out(args)?;
        print!("{s}");
        Ok(s)
    }
}

fn header(path: &str, mode: u32, size: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).expect("static demo path");
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(kind);
    h.set_cksum();
    h
}

/// A tiny tar builder over `tar::Builder` for generated demo layers.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Self {
        Layer(tar::Builder::new(Vec::new()))
    }
    fn dir(mut self, p: &str) -> Self {
        let h = header(p, 0o755, 0, tar::EntryType::Directory);
        self.0.append(&h, &[][..]).expect("in-memory tar");
        self
    }
    fn file(mut self, p: &str, mode: u32, data: &[u8]) -> Self {
        let h = header(p, mode, data.len() as u64, tar::EntryType::Regular);
        self.0.append(&h, data).expect("in-memory tar");
        self
    }
    fn symlink(mut self, p: &str, target: &str) -> Self {
        let mut h = header(p, 0o777, 0, tar::EntryType::Symlink);
        h.set_link_name(target).expect("static link");
        h.set_cksum();
        self.0.append(&h, &[][..]).expect("in-memory tar");
        self
    }
    fn finish(self) -> Vec<u8> {
        self.0.into_inner().expect("in-memory tar")
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("in-memory gzip");
    e.finish().expect("in-memory gzip")
}

fn list_tree(root: &Path, rel: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = rel.join(e.file_name());
        let meta = fs::symlink_metadata(root.join(&p))?;
        let kind = if meta.is_dir() {
            "d"
        } else if meta.file_type().is_symlink() {
            "l"
        } else {
            "f"
        };
        out.push(format!("{kind} /{}", p.display()));
        if meta.is_dir() {
            list_tree(root, &p, out)?;
        }
    }
    Ok(())
}

pub fn run(root: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    sh(Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "storage-cli",
            "--bin",
            "containers-storage",
        ])
        .current_dir(root))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let demo = target.join("demo");
    let cs = Cs {
        bin: target.join("debug").join("containers-storage"),
        graph: demo.join("root"),
        run: demo.join("run"),
    };
    if demo.exists() {
        // A previous demo: release and remove it.
        let _ = cs.cmd(&["shutdown", "-f"]).output();
        fs::remove_dir_all(&demo).map_err(|e| format!("removing {}: {e}", demo.display()))?;
    }
    fs::create_dir_all(&demo).map_err(|e| e.to_string())?;

    // Three generated layers: a base (gzip), an update (plain), a layer with whiteouts (plain).
    let base = Layer::new()
        .dir("etc/")
        .file("etc/os-release", 0o644, b"NAME=\"demo\"\nVERSION=1\n")
        .file("etc/motd", 0o644, b"welcome\n")
        .dir("bin/")
        .file("bin/hello", 0o755, b"#!/bin/sh\necho hello\n")
        .dir("usr/")
        .dir("usr/share/")
        .dir("usr/share/doc/")
        .file("usr/share/doc/README", 0o644, b"base layer docs\n")
        .finish();
    let update = Layer::new()
        .dir("etc/")
        .file("etc/os-release", 0o644, b"NAME=\"demo\"\nVERSION=2\n")
        .dir("app/")
        .file("app/main.sh", 0o755, b"#!/bin/sh\nexec /bin/hello\n")
        .symlink("app/current", "main.sh")
        .finish();
    let cleanup = Layer::new()
        .dir("etc/")
        .file("etc/.wh.motd", 0o644, b"")
        .dir("usr/share/doc/")
        .file("usr/share/doc/.wh..wh..opq", 0o644, b"")
        .file("usr/share/doc/CHANGES", 0o644, b"v2: cleaned docs\n")
        .finish();
    let files = [
        ("base.tar.gz", gzip(&base)),
        ("update.tar", update),
        ("cleanup.tar", cleanup),
    ];
    let mut parent: Option<String> = None;
    let mut ids = Vec::new();
    for (name, data) in &files {
        let path = demo.join(name);
        fs::write(&path, data).map_err(|e| e.to_string())?;
        let p = path.to_string_lossy().into_owned();
        let mut args = vec!["import-layer", "-f", p.as_str()];
        if let Some(parent) = &parent {
            args.push(parent.as_str());
        }
        let out = cs.show(&args)?;
        let id = out.lines().next().unwrap_or("").trim().to_string();
        if id.is_empty() {
            return Err("import-layer printed no ID".into());
        }
        ids.push(id.clone());
        parent = Some(id);
    }
    let top = ids.last().cloned().unwrap_or_default();
    cs.show(&["create-image", "-n", "localhost/demo:latest", top.as_str()])?;
    cs.show(&[
        "create-container",
        "-n",
        "demo-ctr",
        "localhost/demo:latest",
    ])?;
    cs.show(&["layers", "--tree"])?;
    cs.show(&["images"])?;
    cs.show(&["containers"])?;
    let mnt = cs.show(&["mount", "demo-ctr"])?;
    let mnt = PathBuf::from(mnt.trim());
    let mut tree = Vec::new();
    list_tree(&mnt, Path::new(""), &mut tree)
        .map_err(|e| format!("listing {}: {e}", mnt.display()))?;
    println!("-- files of container demo-ctr at {} --", mnt.display());
    for line in &tree {
        println!("{line}");
    }
    let release = fs::read_to_string(mnt.join("etc/os-release")).map_err(|e| e.to_string())?;
    if !release.contains("VERSION=2") || mnt.join("etc/motd").exists() {
        return Err("the container does not show the applied layers".into());
    }
    cs.show(&["unmount", "demo-ctr"])?;
    // Every applied layer diffs back to its recorded digest.
    let json = cs.out(&["layers", "--json"])?;
    for id in &ids {
        let out = cs
            .cmd(&["diff", "-u", id.as_str()])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("diff {id} failed"));
        }
        let digest = sha256_hex(&out.stdout);
        if !json.contains(&format!("\"diff-digest\":\"sha256:{digest}\"")) {
            return Err(format!(
                "diff of layer {id} does not reproduce its recorded digest"
            ));
        }
        println!("layer {id}: diff reproduces sha256:{digest}");
    }
    cs.show(&["delete-container", "demo-ctr"])?;
    cs.show(&["shutdown"])?;
    println!(
        "demo finished: store left at {} (run the demo again to reset it)",
        demo.display()
    );
    Ok(())
}

fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum is part of coreutils");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(data);
    }
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}
