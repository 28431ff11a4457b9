//! The completion scripts, loaded by the real shells: bash (the function the script registers
//! with `complete`, called the way readline calls it), zsh (its completion system in a pty,
//! `tests/shells/capture.zsh`) and fish (`complete -C`). Each completes
//! `containers-storage app<TAB>` and must offer exactly the commands of the table whose name
//! starts with `app`; then a name from a store.
//!
//! A missing shell fails in CI (`CI=true`) and is skipped loudly elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

use storage_cli::commands::COMMANDS;
use storage_cli::completion::{Shell, script};

const OURS: &str = env!("CARGO_BIN_EXE_containers-storage");

fn shell_available(shell: &str) -> bool {
    let found = ["/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(shell).exists());
    if found {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{shell} is required in CI (cargo xtask install-deps installs it)");
    }
    eprintln!("SKIPPING: {shell} is not installed");
    false
}

/// PATH with our binary first, so that the scripts' `containers-storage` is ours.
fn path_env() -> String {
    let dir = Path::new(OURS).parent().unwrap();
    format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", dir.display())
}

fn expected(prefix: &str) -> Vec<String> {
    let mut want: Vec<String> = COMMANDS
        .iter()
        .map(|c| c.names[0].to_string())
        .filter(|n| n.starts_with(prefix))
        .collect();
    want.sort();
    want
}

fn sorted_lines(out: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').next().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

fn write_script(dir: &Path, shell: Shell) -> PathBuf {
    let path = dir.join(shell.file_name());
    std::fs::write(&path, script(shell)).unwrap();
    path
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.env("PATH", path_env()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A vfs store holding an image named `localhost/zimg:1`; the words selecting it.
fn store_with_image(dir: &Path) -> Vec<String> {
    let words: Vec<String> = vec![
        "--graph".into(),
        dir.join("g").to_string_lossy().into_owned(),
        "--run".into(),
        dir.join("r").to_string_lossy().into_owned(),
        "-s".into(),
        "vfs".into(),
    ];
    let out = Command::new(OURS)
        .args(&words)
        .args(["create-image", "-n", "localhost/zimg:1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    words
}

/// Calls the function the bash script registered for `containers-storage` with `words` as
/// readline would split them (`=` and `:` are words of their own), the last one under the
/// cursor.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let program = r#"source "$1"; shift
spec=$(complete -p containers-storage) || exit 3
fn=${spec#*-F }; fn=${fn%% *}
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
"$fn" containers-storage "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}""#;
    sorted_lines(&run(Command::new("bash")
        .args(["--norc", "--noprofile", "-c", program, "bash"])
        .arg(script)
        .args(words)))
}

#[test]
fn bash_completes_commands_and_names() {
    if !shell_available("bash") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let script = write_script(tmp.path(), Shell::Bash);
    assert_eq!(
        bash_complete(&script, &["containers-storage", "app"]),
        expected("app")
    );
    assert_eq!(
        bash_complete(&script, &["containers-storage", ""]),
        expected("")
    );
    let store = store_with_image(tmp.path());
    let mut words: Vec<&str> = vec!["containers-storage"];
    words.extend(store.iter().map(String::as_str));
    words.extend(["image", "localhost/z"]);
    assert_eq!(bash_complete(&script, &words), vec!["localhost/zimg:1"]);
    // `localhost/zimg:` is three words for bash, and readline replaces only the text after
    // the `:`: the reply is what follows it.
    words.pop();
    words.extend(["localhost/zimg", ":"]);
    assert_eq!(bash_complete(&script, &words), vec!["1"]);
    // The same for `=`.
    assert_eq!(
        bash_complete(
            &script,
            &["containers-storage", "--storage-driver", "=", "ov"]
        ),
        vec!["overlay"]
    );
}

fn zsh_complete(dir: &Path, line: &str) -> Vec<String> {
    let capture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/shells/capture.zsh");
    sorted_lines(&run(Command::new("zsh")
        .arg("-f")
        .arg(capture)
        .arg(dir)
        .arg(line)
        .current_dir(dir)))
}

#[test]
fn zsh_completes_commands_and_names() {
    if !shell_available("zsh") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fpath = tmp.path().join("fpath");
    std::fs::create_dir(&fpath).unwrap();
    write_script(&fpath, Shell::Zsh);
    assert_eq!(
        zsh_complete(&fpath, "containers-storage app"),
        expected("app")
    );
    let store = store_with_image(tmp.path());
    let line = format!("containers-storage {} image localhost/z", store.join(" "));
    assert_eq!(zsh_complete(&fpath, &line), vec!["localhost/zimg:1"]);
}

fn fish_complete(script: &Path, line: &str) -> Vec<String> {
    let program = format!("source {}; complete -C {}", quote(script), quote(line));
    sorted_lines(&run(Command::new("fish").args([
        "--no-config",
        "-c",
        &program,
    ])))
}

/// Single quotes for fish and the POSIX shells (paths here have no `'`).
fn quote(s: impl AsRef<std::ffi::OsStr>) -> String {
    format!("'{}'", s.as_ref().to_string_lossy())
}

#[test]
fn fish_completes_commands_and_names() {
    if !shell_available("fish") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let script = write_script(tmp.path(), Shell::Fish);
    assert_eq!(
        fish_complete(&script, "containers-storage app"),
        expected("app")
    );
    let store = store_with_image(tmp.path());
    let line = format!("containers-storage {} image localhost/z", store.join(" "));
    assert_eq!(fish_complete(&script, &line), vec!["localhost/zimg:1"]);
}

#[test]
fn the_hidden_command_prints_each_script() {
    for shell in Shell::ALL {
        let out = Command::new(OURS)
            .args(["__completion", shell.name()])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), script(shell));
    }
    let out = Command::new(OURS)
        .args(["__completion", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash|zsh|fish"));
    // Not a command of the table: the global usage stays Go's.
    let out = Command::new(OURS).arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("__"));
}
