//! The `containers-storage` command-line tool: a drop-in for Go's `cmd/containers-storage`.
//!
//! **Use it for:** the `containers-storage` tool, its command table, and the man pages and
//! shell completions generated from that table ([`man`], [`completion`]). **Not for:** store
//! logic — every command is one call on the `Store` — or for programs, which should use the
//! `containers_storage` crate rather than run the tool.
//!
//! The crate parses the command line with a port of Go's `pkg/mflag` rules ([`flags`]),
//! reproduces the Go tool's usage texts, messages and exit codes, opens the
//! [`containers_storage::Store`] and dispatches to one handler per command. Commands are
//! declared in one table ([`commands::COMMANDS`]): adding a command is one entry plus one
//! handler function.
//!
//! For a rootless user `--unshare` is on by default: after the argument checks the tool runs
//! itself again inside the user's namespace (`containers_storage::userns`, Go's
//! `MaybeReexecUsingUserNamespace`); the binary's `main` finishes entering it first thing.
//!
//! Limits: `--unshare` given by root does
//! nothing (Go re-executes itself until nesting fails). Log lines always use
//! logrus' plain text format (Go switches to colours when stderr is a terminal). A progress
//! bar is drawn on stderr for `applydiff`, `import-layer`, `import-layers` and `diff` only
//! when stderr is a terminal.
//!
//! ```
//! let tmp = tempfile::tempdir().unwrap();
//! let g = tmp.path().join("root");
//! let r = tmp.path().join("run");
//! let args: Vec<std::ffi::OsString> = vec![
//!     "containers-storage".into(), "--graph".into(), g.clone().into(),
//!     "--run".into(), r.into(), "--storage-driver".into(), "vfs".into(), "wipe".into(),
//! ];
//! assert_eq!(storage_cli::run(args), 0);
//! assert!(g.join("storage.lock").exists());
//! ```
#![deny(missing_docs)]
// `unsafe` is allowed only in the `sys` module (two libc calls).
#![deny(unsafe_code)]

pub mod commands;
pub mod completion;
pub mod flags;
mod log;
pub mod man;
mod progress;
mod roff;
#[allow(unsafe_code)]
mod sys;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use containers_storage::Store;
use containers_storage::config::StoreOptions;

use crate::commands::{COMMANDS, Command, Ctx};
use crate::flags::{FlagSet, FlagSpec, Kind, ParseError, Value, flag};

const GRAPH: FlagSpec = flag(&["-graph", "g"], Kind::Str, "Root of the storage tree");
const RUN: FlagSpec = flag(&["-run", "R"], Kind::Str, "Root of the runtime state tree");
const IMAGE_STORE: FlagSpec = flag(
    &["-image-store"],
    Kind::Str,
    "Root of the separate image store",
);
const TRANSIENT: FlagSpec = flag(&["-transient-store"], Kind::Bool, "Transient store");
const DRIVER: FlagSpec = flag(
    &["-storage-driver", "s"],
    Kind::Str,
    "Storage driver to use ($STORAGE_DRIVER)",
);
const STORAGE_OPT: FlagSpec = flag(
    &["-storage-opt"],
    Kind::List,
    "Set storage driver options ($STORAGE_OPTS)",
);
const DEBUG: FlagSpec = flag(&["-debug", "D"], Kind::Bool, "Print debugging information");
const UNSHARE: FlagSpec = flag(
    &["-unshare", "U"],
    Kind::Bool,
    "Run in a user namespace (default false)",
);
/// `--unshare` as a rootless user registers it (Go: `(default %t)` of `IsRootless()`).
const UNSHARE_ROOTLESS: FlagSpec = FlagSpec {
    usage: "Run in a user namespace (default true)",
    ..UNSHARE
};
const HELP: FlagSpec = flag(&["#help", "-help"], Kind::Bool, "Print usage");

/// The global option values between the two flag passes of the command line.
#[derive(Debug, Clone, Default)]
pub struct Globals {
    /// The store options (from the global pass, or `storage.conf` when none was given).
    pub(crate) opts: StoreOptions,
    /// `--debug`.
    pub(crate) debug: bool,
    /// `--unshare`.
    pub(crate) unshare: bool,
    /// Go's `unshare.IsRootless()`: the default of `--unshare` and its help text.
    pub(crate) rootless: bool,
}

fn add_globals(fs: &mut FlagSet, g: &Globals) {
    let o = &g.opts;
    fs.add(RUN, Value::Str(o.run_root.to_string_lossy().into_owned()));
    fs.add(
        GRAPH,
        Value::Str(o.graph_root.to_string_lossy().into_owned()),
    );
    fs.add(
        IMAGE_STORE,
        Value::Str(
            o.image_store
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
    );
    fs.add(TRANSIENT, Value::Bool(o.transient_store));
    fs.add(DRIVER, Value::Str(o.driver.clone()));
    fs.add(STORAGE_OPT, Value::List(o.driver_options.clone()));
    fs.add(DEBUG, Value::Bool(g.debug));
    let unshare = if g.rootless {
        UNSHARE_ROOTLESS
    } else {
        UNSHARE
    };
    fs.add(unshare, Value::Bool(g.unshare));
}

/// The flag set of the global pass: the global options and `--help`.
pub fn global_flag_set(argv0: &str, g: &Globals) -> FlagSet {
    let mut fs = FlagSet::new("containers-storage", argv0);
    add_globals(&mut fs, g);
    fs.add(HELP, Value::Bool(false));
    fs
}

/// The flag set of the command pass: the command's flags, then the global options again
/// (their defaults are the values after the global pass).
pub fn command_flag_set(cmd: &Command, argv0: &str, g: &Globals) -> FlagSet {
    let mut fs = FlagSet::new(cmd.names[0], argv0);
    for spec in cmd.flags {
        let v = match spec.kind {
            Kind::Bool => Value::Bool(false),
            Kind::Str => Value::Str(String::new()),
            Kind::List => Value::List(Vec::new()),
        };
        fs.add(*spec, v);
    }
    add_globals(&mut fs, g);
    fs
}

/// The global options, as the global pass registers them (`--help` included).
///
/// ```
/// let names: Vec<String> = storage_cli::global_flags().iter().flat_map(|f| f.shown_names()).collect();
/// assert!(names.contains(&"--graph".to_string()) && names.contains(&"-g".to_string()));
/// ```
pub fn global_flags() -> Vec<FlagSpec> {
    global_flag_set("containers-storage", &Globals::default())
        .specs()
        .copied()
        .collect()
}

/// The options a command accepts besides its own flags: the global options, which the
/// command pass registers again (everything [`global_flags`] has but `--help`).
pub fn command_global_flags() -> Vec<FlagSpec> {
    let mut fs = FlagSet::new("", "");
    add_globals(&mut fs, &Globals::default());
    fs.specs().copied().collect()
}

/// The store options a command line selects: the global options given, or — when none of
/// `--graph`, `--run`, `--storage-driver` and `--storage-opt` was given — `storage.conf`'s
/// (step 2 of the process model). Also returns the warnings of loading the configuration
/// (for the caller to log) and the error that makes opening the store fail, if any.
fn options_for(fs: &FlagSet, g: &Globals) -> (Globals, Vec<String>, Option<String>) {
    let explicit = ["-graph", "-run", "-storage-driver", "-storage-opt"]
        .iter()
        .any(|f| fs.was_set(f));
    let mut g = g.clone();
    if explicit {
        // Go's `GetStore` reads the system configuration whatever the flags say: a file that
        // cannot be parsed is fatal here too, silently (its warnings are below the level
        // Go logs at once a store flag is given).
        let env = containers_storage::config::Environment::from_process();
        let err = containers_storage::config::load_system_options(&env).err();
        return (g, Vec::new(), err.map(|e| e.to_string()));
    }
    match containers_storage::config::load_default_options() {
        Ok((opts, warnings)) => {
            g.opts = opts;
            (g, warnings, None)
        }
        // Go's `Failed to read <path> <error>` warning comes first.
        Err(e) => (g, e.go_warning().into_iter().collect(), Some(e.to_string())),
    }
}

/// Reads the global options back from a parsed flag set (either pass) into `g`.
pub fn read_globals(fs: &FlagSet, g: &mut Globals) {
    g.opts.run_root = PathBuf::from(fs.str("-run"));
    g.opts.graph_root = PathBuf::from(fs.str("-graph"));
    let is = fs.str("-image-store");
    g.opts.image_store = if is.is_empty() {
        None
    } else {
        Some(PathBuf::from(is))
    };
    g.opts.transient_store = fs.bool("-transient-store");
    g.opts.driver = fs.str("-storage-driver");
    g.opts.driver_options = fs.list("-storage-opt");
    g.debug = fs.bool("-debug");
    g.unshare = fs.bool("-unshare");
}

fn home() -> Option<String> {
    std::env::var("HOME").ok()
}

fn global_usage_header() -> String {
    let mut s = String::from("Usage: containers-storage command [options [...]]\n\nCommands:\n\n");
    for c in COMMANDS {
        s.push_str(&format!("  {:<30}{}\n", c.names[0], c.description));
    }
    s.push_str("\nOptions:\n");
    s
}

fn print_global_usage(fs: &FlagSet, defaults_to_stdout: bool) {
    let header = global_usage_header();
    let defaults = fs.defaults_text(home().as_deref());
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(header.as_bytes());
    if defaults_to_stdout {
        let _ = out.write_all(defaults.as_bytes());
        let _ = out.flush();
    } else {
        let _ = out.flush();
        let _ = std::io::stderr().lock().write_all(defaults.as_bytes());
    }
}

fn print_command_usage(cmd: &Command, fs: &FlagSet) {
    let header = format!(
        "Usage: containers-storage {} {}\n\n{}\n\nOptions:\n",
        cmd.names[0], cmd.options_help, cmd.usage
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(header.as_bytes());
    let _ = out.flush();
    let _ = std::io::stderr()
        .lock()
        .write_all(fs.defaults_text(home().as_deref()).as_bytes());
}

/// Go's `%v` of a string slice: `[a b]`.
pub(crate) fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// The `containers-storage` binary: runs the tool with the process's arguments and exits
/// with its status. Like a Go program, it dies quietly from SIGPIPE when stdout is a
/// closed pipe (`containers-storage diff L | head -c 10`) instead of reporting a write
/// error.
pub fn main() -> ! {
    sys::default_sigpipe();
    // The copy of this program that `--unshare` starts enters the user namespace first,
    // while it has a single thread (Go does it in a C constructor).
    if let Err(e) = containers_storage::userns::finish_reexec() {
        eprintln!("{e}");
        std::process::exit(1);
    }
    std::process::exit(run(std::env::args_os().collect()))
}

/// Runs the tool with the given argv and returns the exit status.
pub fn run(args: Vec<OsString>) -> i32 {
    log::install();
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let argv0 = args
        .first()
        .cloned()
        .unwrap_or_else(|| "containers-storage".into());
    let rest = args.get(1..).unwrap_or(&[]).to_vec();

    // Hidden commands of this implementation (not in Go's table, so not in `--help`).
    match rest.first().map(String::as_str) {
        Some(completion::COMPLETE_COMMAND) => return completion::complete_command(&rest[1..]),
        Some(completion::SCRIPT_COMMAND) => return completion::script_command(&rest[1..]),
        _ => {}
    }

    // 1. Global pass.
    let rootless = containers_storage::userns::is_rootless();
    let mut globals = Globals {
        unshare: rootless,
        rootless,
        ..Globals::default()
    };
    let mut gfs = global_flag_set(&argv0, &globals);
    let mut stderr = std::io::stderr();
    let parsed = gfs.parse(&rest, &mut stderr, &mut |fs| print_global_usage(fs, false));
    if let Err(e) = parsed {
        let msg = match e {
            ParseError::Help => "flag: help requested".to_string(),
            ParseError::Failed(m) => m,
        };
        println!("{msg} while parsing arguments (1)");
        print_global_usage(&gfs, false);
        return 1;
    }
    if gfs.bool("-help") {
        print_global_usage(&gfs, true);
        return 0;
    }
    read_globals(&gfs, &mut globals);
    let cmd_args = gfs.args.clone();
    let Some(name) = cmd_args.first().cloned() else {
        print_global_usage(&gfs, false);
        return 1;
    };

    // 2. Defaults when no store option was given.
    let (loaded, warnings, init_error) = options_for(&gfs, &globals);
    globals = loaded;
    for w in warnings {
        log::warn(&w);
    }

    // 3. Command lookup.
    let Some(cmd) = COMMANDS.iter().find(|c| c.names.contains(&name.as_str())) else {
        println!("{name}: unrecognized command.");
        return 1;
    };

    // 4. Command pass.
    let mut cfs = command_flag_set(cmd, &argv0, &globals);
    let parsed = cfs.parse(&cmd_args[1..], &mut stderr, &mut |fs| {
        print_command_usage(cmd, fs)
    });
    if parsed.is_err() {
        return 125;
    }
    read_globals(&cfs, &mut globals);
    let positional = cfs.args.clone();

    // 5. Argument count.
    if positional.len() < cmd.min_args {
        println!("{}: more arguments required.", cmd.names[0]);
        print_command_usage(cmd, &cfs);
        return 1;
    }
    if let Some(max) = cmd.max_args
        && positional.len() > max
    {
        println!(
            "{}: too many arguments ({}).",
            cmd.names[0],
            go_list(&positional)
        );
        print_command_usage(cmd, &cfs);
        return 1;
    }

    // 6. Enter the rootless user's namespace (the process exits here with the status of
    // the copy that runs inside it).
    if globals.unshare
        && let Err(e) = containers_storage::userns::maybe_reexec()
    {
        log::error(&e.to_string());
        return 1;
    }

    // 7. Logging.
    log::set_debug(globals.debug);
    log::debug(&format!("Root: {}", globals.opts.graph_root.display()));
    log::debug(&format!("Run Root: {}", globals.opts.run_root.display()));
    log::debug(&format!("Driver Name: {}", globals.opts.driver));
    log::debug(&format!(
        "Driver Options: {}",
        go_list(&globals.opts.driver_options)
    ));

    // 8. Open the store.
    if let Some(e) = init_error {
        println!("error initializing: {e}");
        return 1;
    }
    if let Some(code) = commands::check::before_open(cmd.names[0], &cfs, &globals.opts) {
        return code;
    }
    let store = match Store::open(&globals.opts) {
        Ok(s) => s,
        Err(e) => {
            println!("error initializing: {e}");
            return 1;
        }
    };

    // 9. Run the action.
    let mut ctx = Ctx {
        flags: &cfs,
        store: &store,
        args: &positional,
    };
    let code = match (cmd.handler)(&mut ctx) {
        Ok(code) => code,
        Err(e) => {
            let _ = std::io::stdout().flush();
            let _ = writeln!(std::io::stderr(), "{e}");
            1
        }
    };
    let _ = std::io::stdout().flush();
    // The process exits right after this returns: handing thousands of loaded records
    // back to the allocator one by one would be the slowest part of a listing. Locks are
    // not held here (guards live inside the calls) and the kernel closes the lock files.
    std::mem::forget(store);
    code
}
