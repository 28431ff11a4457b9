fn main() {
    // Like a Go program, die quietly from SIGPIPE when stdout is a closed pipe
    // (`containers-storage diff L | head -c 10`) instead of reporting a write error.
    // SAFETY: setting a signal disposition to SIG_DFL has no memory-safety requirements and
    // happens before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // The copy of this program that `--unshare` starts enters the user namespace first,
    // while it has a single thread (Go does it in a C constructor).
    if let Err(e) = containers_storage::userns::finish_reexec() {
        eprintln!("{e}");
        std::process::exit(1);
    }
    std::process::exit(storage_cli::run(std::env::args_os().collect()));
}
