//! The command table and the handlers.

use std::io::Write;

use containers_storage::Store;
use storage_config::{StoreOptions, json_string};

use crate::flags::{FlagSet, FlagSpec, Kind};

/// What a handler sees.
pub struct Ctx<'a> {
    /// The parsed command flags (command flags and global options).
    pub flags: &'a FlagSet,
    /// The open store.
    pub store: &'a Store,
    /// Positional arguments.
    pub args: &'a [String],
    /// The store options in effect.
    pub options: &'a StoreOptions,
}

impl Ctx<'_> {
    /// Whether `--json`/`-j` was given.
    pub fn json(&self) -> bool {
        self.flags.bool("-json")
    }
}

/// A handler: returns the exit status, or an error printed on stderr (exit 1).
pub type Handler = fn(&mut Ctx<'_>) -> Result<i32, String>;

/// One command of the tool.
pub struct Command {
    /// Name, then aliases.
    pub names: &'static [&'static str],
    /// Text after the name in the per-command usage line.
    pub options_help: &'static str,
    /// One-line description (global usage).
    pub description: &'static str,
    /// Description in the per-command usage.
    pub usage: &'static str,
    /// Minimum number of positional arguments.
    pub min_args: usize,
    /// Maximum number of positional arguments (`None` = unlimited).
    pub max_args: Option<usize>,
    /// The command's own flags.
    pub flags: &'static [FlagSpec],
    /// The action.
    pub handler: Handler,
}

/// `-j/--json`.
pub const JSON: FlagSpec = FlagSpec {
    names: &["-json", "j"],
    kind: Kind::Bool,
    usage: "Prefer JSON output",
};
const FORCE_SHUTDOWN: FlagSpec = FlagSpec {
    names: &["-force", "f"],
    kind: Kind::Bool,
    usage: "Unmount mounted layers first",
};

/// Every registered command, in the order of Go's source files (the global usage order).
pub static COMMANDS: &[Command] = &[
    Command {
        names: &["config"],
        options_help: "[configurationFile]",
        description: "Print storage library configuration as JSON",
        usage: "Print storage library configuration as JSON",
        min_args: 0,
        max_args: Some(1),
        flags: &[],
        handler: config,
    },
    Command {
        names: &["shutdown"],
        options_help: "",
        description: "Shut down layer storage",
        usage: "Shut down layer storage",
        min_args: 0,
        max_args: Some(0),
        flags: &[FORCE_SHUTDOWN, JSON],
        handler: shutdown,
    },
    Command {
        names: &["status"],
        options_help: "",
        description: "Check on graph driver status",
        usage: "Check on graph driver status",
        min_args: 0,
        max_args: Some(0),
        flags: &[JSON],
        handler: status,
    },
    Command {
        names: &["version"],
        options_help: "",
        description: "Return containers-storage version information",
        usage: "Return containers-storage version information",
        min_args: 0,
        max_args: Some(0),
        flags: &[JSON],
        handler: version,
    },
    Command {
        names: &["wipe"],
        options_help: "",
        description: "Wipe all layers, images, and containers",
        usage: "Wipe all layers, images, and containers",
        min_args: 0,
        max_args: Some(0),
        flags: &[JSON],
        handler: wipe,
    },
];

/// Writes `text` to stdout.
pub fn out(text: &str) -> Result<(), String> {
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())
}

/// Writes `text` to stderr.
pub fn err(text: &str) {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn pairs_json(pairs: &[(String, String)]) -> String {
    let items: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("[{},{}]", json_string(k), json_string(v)))
        .collect();
    format!("[{}]\n", items.join(","))
}

fn status(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let driver_status = ctx.store.status().map_err(|e| format!("status: {e}"))?;
    let mut pairs = vec![
        (
            "Root".to_string(),
            ctx.store.graph_root().to_string_lossy().into_owned(),
        ),
        (
            "Run Root".to_string(),
            ctx.store.run_root().to_string_lossy().into_owned(),
        ),
        (
            "Driver Name".to_string(),
            ctx.store.driver_name().to_string(),
        ),
        (
            "Driver Options".to_string(),
            crate::go_list(ctx.store.driver_options()),
        ),
    ];
    pairs.extend(driver_status);
    if ctx.json() {
        out(&pairs_json(&pairs))?;
    } else {
        let text: String = pairs.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        err(&text);
    }
    Ok(0)
}

/// Our version, in Go's `Version: X` format.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

fn version(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let pairs = vec![("Version".to_string(), VERSION.to_string())];
    if ctx.json() {
        out(&pairs_json(&pairs))?;
    } else {
        err(&format!("Version: {VERSION}\n"));
    }
    Ok(0)
}

fn shutdown(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let result = ctx.store.shutdown(ctx.flags.bool("-force"));
    match (result, ctx.json()) {
        (Ok(_), true) => {
            out("\"\"\n")?;
            Ok(0)
        }
        (Ok(_), false) => Ok(0),
        (Err(_), true) => {
            out("{}\n")?;
            Ok(1)
        }
        (Err(e), false) => Err(format!("shutdown: {e}")),
    }
}

fn wipe(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    match (ctx.store.wipe(), ctx.json()) {
        (Ok(()), true) => {
            out("\"\"\n")?;
            Ok(0)
        }
        (Ok(()), false) => Ok(0),
        (Err(_), true) => {
            out("{}\n")?;
            Ok(1)
        }
        (Err(e), false) => Err(format!("wipe: {e}")),
    }
}

fn config(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let env = storage_config::Environment::from_process();
    let (mut options, _) =
        storage_config::load_options(&env).map_err(|e| format!("default: {e}"))?;
    if let Some(file) = ctx.args.first() {
        let (reloaded, _) = storage_config::reload_file(std::path::Path::new(file), &env, &options)
            .map_err(|e| format!("reload: {e}"))?;
        options = reloaded;
    }
    out(&format!("{}\n", options.to_go_json()))?;
    Ok(0)
}
