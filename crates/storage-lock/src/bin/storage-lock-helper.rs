//! Test helper for the storage-lock cross-process tests: takes a lock in a
//! separate process and reports on stdout.
//!
//! Usage: `storage-lock-helper <lock|rlock|record|try-lock|try-rlock|token> <path>`
//!
//! * `lock` / `rlock`: take the lock (blocking), print `locked`, then hold it
//!   until stdin reaches EOF or a line is read, and exit.
//! * `record`: take the lock exclusively, write a token, print it in hex, exit.
//! * `token`: take the lock shared, print the stored token in hex, exit.
//! * `try-lock` / `try-rlock`: print `acquired` or `busy`, exit.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use storage_lock::{LockFile, Token};

fn hex(t: &Token) -> String {
    t.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn run(mode: &str, path: &Path) -> Result<(), storage_lock::LockError> {
    let lock = LockFile::open(path)?;
    let hold = || {
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    };
    match mode {
        "lock" => {
            let _g = lock.lock()?;
            println!("locked");
            hold();
        }
        "rlock" => {
            let _g = lock.rlock()?;
            println!("locked");
            hold();
        }
        "record" => println!("{}", hex(&lock.lock()?.record_write()?)),
        "token" => println!("{}", hex(&lock.rlock()?.token()?)),
        "try-lock" => println!(
            "{}",
            if lock.try_lock()?.is_some() {
                "acquired"
            } else {
                "busy"
            }
        ),
        "try-rlock" => println!(
            "{}",
            if lock.try_rlock()?.is_some() {
                "acquired"
            } else {
                "busy"
            }
        ),
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: storage-lock-helper <lock|rlock|record|try-lock|try-rlock|token> <path>");
        return ExitCode::from(2);
    }
    match run(&args[1], Path::new(&args[2])) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storage-lock-helper: {e}");
            ExitCode::FAILURE
        }
    }
}
