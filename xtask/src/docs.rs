//! `cargo xtask man`, `cargo xtask completions` and `cargo xtask install`: the man pages and
//! the shell completion scripts, rendered by `storage_cli` from its command table, written
//! out or installed with the binary where Debian puts them.

use std::path::{Path, PathBuf};

use storage_cli::completion::{Shell, script};
use storage_cli::man::{Page, pages};

/// Where an installation puts things, relative to the prefix (Debian's layout).
pub const BIN_DIR: &str = "bin";

/// The man directory of a page's section, relative to the prefix (`share/man/man1`).
pub fn man_dir(section: u8) -> String {
    format!("share/man/man{section}")
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    }
    std::fs::write(path, data).map_err(|e| format!("write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// Parses `[--out DIR]`.
fn out_dir(args: &[String], default: PathBuf) -> Result<PathBuf, String> {
    match args {
        [] => Ok(default),
        [flag, dir] if flag == "--out" => Ok(PathBuf::from(dir)),
        _ => Err("usage: [--out DIR]".into()),
    }
}

/// Writes every page as `DIR/NAME.SECTION` (plain roff, what `man -l` reads).
pub fn write_pages(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for page in pages() {
        let path = dir.join(page.file_name());
        write(&path, page.roff.as_bytes(), 0o644)?;
        written.push(path);
    }
    Ok(written)
}

/// Writes the three completion scripts under `DIR/<shell>/`.
pub fn write_completions(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for shell in Shell::ALL {
        let path = dir.join(shell.name()).join(shell.file_name());
        write(&path, script(shell).as_bytes(), 0o644)?;
        written.push(path);
    }
    Ok(written)
}

/// `cargo xtask man [--out DIR]` (default `target/man`).
pub fn man(root: &Path, args: &[String]) -> Result<(), String> {
    let dir = out_dir(args, crate::target_dir(root).join("man"))?;
    let written = write_pages(&dir)?;
    eprintln!(
        "xtask: {} man pages in {} (try: man -l {})",
        written.len(),
        dir.display(),
        dir.join("containers-storage.1").display()
    );
    Ok(())
}

/// `cargo xtask completions [--out DIR]` (default `target/completions`).
pub fn completions(root: &Path, args: &[String]) -> Result<(), String> {
    let dir = out_dir(args, crate::target_dir(root).join("completions"))?;
    for path in write_completions(&dir)? {
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}

/// A page compressed the way Debian ships man pages (`gzip -9n`: no name, no time stamp).
fn gzip(page: &Page) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(page.roff.as_bytes())
        .and_then(|()| enc.finish())
        .map_err(|e| format!("gzip {}: {e}", page.file_name()))
}

/// Installs `binary` and the pages and scripts under `prefix`; returns the installed files.
pub fn install_into(prefix: &Path, binary: &Path) -> Result<Vec<PathBuf>, String> {
    let mut installed = Vec::new();
    let data = std::fs::read(binary).map_err(|e| format!("read {}: {e}", binary.display()))?;
    let bin = prefix.join(BIN_DIR).join("containers-storage");
    // Replace, never write through: the old binary may be running.
    let _ = std::fs::remove_file(&bin);
    write(&bin, &data, 0o755)?;
    installed.push(bin);
    for page in pages() {
        let path = prefix
            .join(man_dir(page.section))
            .join(format!("{}.gz", page.file_name()));
        write(&path, &gzip(&page)?, 0o644)?;
        installed.push(path);
    }
    for shell in Shell::ALL {
        let path = prefix
            .join(shell.install_dir(prefix))
            .join(shell.file_name());
        write(&path, script(shell).as_bytes(), 0o644)?;
        installed.push(path);
    }
    Ok(installed)
}

/// `cargo xtask install [--prefix DIR] [--binary PATH]`: builds the release binary (unless
/// `--binary` names one) and installs it with the man pages and completions.
pub fn install(root: &Path, args: &[String]) -> Result<(), String> {
    let mut prefix = PathBuf::from("/usr/local");
    let mut binary: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let value = |it: &mut std::slice::Iter<String>| {
            it.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--prefix" => prefix = value(&mut it)?,
            "--binary" => binary = Some(value(&mut it)?),
            _ => {
                return Err(format!(
                    "unknown argument {arg}\nusage: cargo xtask install [--prefix DIR] [--binary PATH]"
                ));
            }
        }
    }
    let binary = match binary {
        Some(b) => b,
        None => crate::build_release_cli(root)?,
    };
    let installed = install_into(&prefix, &binary)?;
    for path in &installed {
        eprintln!("xtask: installed {}", path.display());
    }
    if prefix != Path::new("/usr") && prefix != Path::new("/usr/local") {
        eprintln!(
            "xtask: add {} to PATH and {} to MANPATH to use them",
            prefix.join(BIN_DIR).display(),
            prefix.join("share/man").display()
        );
    }
    let share = prefix.join("share");
    if prefix == Path::new("/usr/local") {
        eprintln!(
            "xtask: fish reads {} only when XDG_DATA_DIRS lists {}",
            share.join("fish/vendor_completions.d").display(),
            share.display()
        );
    } else if prefix != Path::new("/usr") {
        eprintln!(
            "xtask: bash and fish find the completions when XDG_DATA_DIRS lists {}, zsh when \
             $fpath has {}",
            share.display(),
            prefix.join(Shell::Zsh.install_dir(&prefix)).display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Whether `prog` is installed; in CI it must be.
    fn have(prog: &str) -> bool {
        if Path::new("/usr/bin").join(prog).exists() {
            return true;
        }
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{prog} is required in CI (cargo xtask install-deps installs it)");
        }
        eprintln!("SKIPPING part of the test: {prog} is not installed");
        false
    }

    #[test]
    fn install_puts_everything_where_debian_does() {
        let tmp = tempfile::tempdir().unwrap();
        let prefix = tmp.path().join("prefix");
        // Any executable stands in for the binary: the layout is what is tested here.
        let fake = tmp.path().join("fake-binary");
        std::fs::write(&fake, "#!/bin/sh\necho fake\n").unwrap();
        let installed = install_into(&prefix, &fake).unwrap();
        let rel: Vec<String> = installed
            .iter()
            .map(|p| {
                p.strip_prefix(&prefix)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert!(rel.contains(&"bin/containers-storage".to_string()));
        assert!(rel.contains(&"share/man/man1/containers-storage.1.gz".to_string()));
        assert!(rel.contains(&"share/man/man1/containers-storage-applydiff.1.gz".to_string()));
        assert!(rel.contains(&"share/man/man5/containers-storage.conf.5.gz".to_string()));
        assert!(rel.contains(&"share/bash-completion/completions/containers-storage".to_string()));
        assert!(rel.contains(&"share/zsh/site-functions/_containers-storage".to_string()));
        assert!(
            rel.contains(&"share/fish/vendor_completions.d/containers-storage.fish".to_string())
        );
        assert_eq!(
            installed.len(),
            1 + pages().len() + Shell::ALL.len(),
            "{rel:?}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(prefix.join("bin/containers-storage"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        // Installing again replaces everything.
        assert_eq!(install_into(&prefix, &fake).unwrap(), installed);

        // man finds the pages through the prefix's MANPATH, by name and section.
        if have("man") {
            let out = Command::new("man")
                .env("MANPATH", prefix.join("share/man"))
                .env("MANWIDTH", "80")
                .args(["-P", "cat", "5", "containers-storage.conf"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{out:?}");
            assert!(text.contains("rootless_storage_path"), "{text}");
        }
        // bash-completion's loader finds the script under the prefix on first use.
        if have("bash") && Path::new("/usr/share/bash-completion/bash_completion").exists() {
            let program = "source /usr/share/bash-completion/bash_completion\n\
                 __load_completion containers-storage && complete -p containers-storage";
            let out = Command::new("bash")
                .args(["--norc", "--noprofile", "-c", program])
                .env("XDG_DATA_DIRS", prefix.join("share"))
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("_containers_storage"),
                "{out:?}"
            );
        }
    }

    #[test]
    fn pages_and_scripts_are_written_out() {
        let tmp = tempfile::tempdir().unwrap();
        let pages_written = write_pages(tmp.path()).unwrap();
        assert_eq!(pages_written.len(), pages().len());
        assert!(tmp.path().join("containers-storage-applydiff.1").exists());
        let scripts = write_completions(&tmp.path().join("c")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&scripts[0]).unwrap(),
            script(Shell::Bash)
        );
    }
}
