//! `storage.conf` parsing, search order, defaults and environment overrides.
//!
//! **Use it for:** the options to open a store with, computed as podman computes them.
//! **Not for:** opening stores or checking driver options (the drivers parse those); the keys
//! and their meaning are documented in `containers-storage.conf(5)` (`cargo xtask man`).
//!
//! This crate computes the [`StoreOptions`] a store is opened with, the way Go's
//! `containers/storage/types` package does (`DefaultStoreOptions`):
//!
//! * the configuration file is the first of `$CONTAINERS_STORAGE_CONF` (which must exist),
//!   `$XDG_CONFIG_HOME/containers/storage.conf`, `/etc/containers/storage.conf` and
//!   `/usr/share/containers/storage.conf` (a missing system file means built-in defaults);
//! * `STORAGE_DRIVER` overrides the driver (`overlay2` becomes `overlay` with a warning),
//!   `STORAGE_OPTS` replaces the driver option list;
//! * generic `[storage.options]` keys and the configured driver's table become
//!   `<driver>.<key>=<value>` driver options;
//! * `$UID` and `$VAR` / `${VAR}` are expanded in the roots, symlinks are resolved;
//! * rootless users get per-user roots (`$XDG_DATA_HOME/containers/storage`, …).
//!
//! Unknown keys are not an error: they come back as warnings worded like Go's
//! (`Failed to decode the keys ["storage.bogus"] from "/path"`). Malformed files and type
//! errors are errors naming the file and the line.
//!
//! Rootless means Go's `usePerUserStorage()`: the rootless UID (`$_CONTAINERS_ROOTLESS_UID`,
//! else the real UID; see the `storage_userns` crate) is not 0. Its run root is
//! `$XDG_RUNTIME_DIR/containers`, else `/run/user/<uid>/containers` or
//! `$TMPDIR/storage-run-<uid>/containers` when that directory belongs to the effective user
//! (root inside the user namespace); a missing `$XDG_RUNTIME_DIR` directory is an error
//! saying what to do.
//!
//! Limits: the config file is not cached by mtime (every call re-reads it); `remap-*` keys
//! (removed in Go 1.56) are reported as unknown.
//!
//! The environment and the file system locations are injectable through [`Environment`], so
//! callers (and tests) do not depend on the host's `/etc`:
//!
//! ```
//! use storage_config::{Environment, load_options};
//! let dir = tempfile::tempdir().unwrap();
//! let conf = dir.path().join("storage.conf");
//! std::fs::write(&conf, "[storage]\ndriver = \"vfs\"\ngraphroot = \"/g/$UID\"\n\
//!     [storage.options]\nadditionalimagestores = [\"/ro\"]\n").unwrap();
//! let env = Environment::empty().with_var("CONTAINERS_STORAGE_CONF", conf.to_str().unwrap());
//! let (opts, warnings) = load_options(&env).unwrap();
//! assert!(warnings.is_empty());
//! assert_eq!(opts.driver, "vfs");
//! assert_eq!(opts.graph_root, std::path::PathBuf::from("/g/0"));
//! assert_eq!(opts.run_root, std::path::PathBuf::from("/run/containers/storage"));
//! assert_eq!(opts.driver_options, vec!["vfs.imagestore=/ro".to_string()]);
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod file;
mod gotoml;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

pub use file::{KNOWN_KEYS, expand_env};

/// Built-in graph root for root.
pub const DEFAULT_GRAPH_ROOT: &str = "/var/lib/containers/storage";
/// Built-in run root for root.
pub const DEFAULT_RUN_ROOT: &str = "/run/containers/storage";
/// The system configuration file.
pub const SYSTEM_CONFIG_FILE: &str = "/usr/share/containers/storage.conf";
/// The administrator's override configuration file.
pub const OVERRIDE_CONFIG_FILE: &str = "/etc/containers/storage.conf";

/// Errors of configuration loading.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file that must exist could not be examined (Go: `stat PATH: …`).
    #[error("stat {}: {}", .path.display(), go_io_text(.source))]
    Stat {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file could not be read.
    #[error("open {}: {}", .path.display(), go_io_text(.source))]
    Read {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not valid TOML or a value has the wrong type, in the words of Go's TOML
    /// decoder: `toml: line 3 (last key "storage.graphroot"): expected value but found '\n'
    /// instead` (the path is not part of Go's text; see [`ConfigError::go_warning`]).
    #[error("toml: line {line}{}: {message}", go_last_key(.last_key))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line Go reports.
        line: usize,
        /// The dotted key Go's decoder was at (empty: none).
        last_key: String,
        /// What is wrong.
        message: String,
    },
    /// The resulting options are not usable (Go's wording, e.g. `runroot must be set`).
    #[error("{0}")]
    Invalid(String),
}

fn go_last_key(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" (last key {key:?})")
    }
}

impl ConfigError {
    /// The warning Go logs when it cannot parse a configuration file
    /// (`Failed to read <path> <error>`); `None` for other errors.
    pub fn go_warning(&self) -> Option<String> {
        match self {
            ConfigError::Parse { path, .. } => {
                Some(format!("Failed to read {} {self}", path.display()))
            }
            _ => None,
        }
    }
}

/// Formats an I/O error the way Go prints `syscall.Errno` (`no such file or directory`).
pub fn go_io_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => {
            let text = io::Error::from_raw_os_error(code).to_string();
            let text = match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            let mut chars = text.chars();
            match chars.next() {
                Some(c) => c.to_lowercase().collect::<String>() + chars.as_str(),
                None => text,
            }
        }
        None => err.to_string(),
    }
}

/// The options a store is opened with (Go's `types.StoreOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Root of the runtime state (`runroot`).
    pub run_root: PathBuf,
    /// Root of the persistent storage (`graphroot`).
    pub graph_root: PathBuf,
    /// Separate image store (`imagestore`), if any.
    pub image_store: Option<PathBuf>,
    /// Rootless graph root template (`rootless_storage_path`), expanded.
    pub rootless_storage_path: String,
    /// Graph driver name; empty means auto-selection.
    pub driver: String,
    /// Auto-selection order (`driver_priority`).
    pub driver_priority: Vec<String>,
    /// Driver options, `<driver>.<key>=<value>`.
    pub driver_options: Vec<String>,
    /// `transient_store`.
    pub transient_store: bool,
    /// `[storage.options.pull_options]`, if present.
    pub pull_options: Option<BTreeMap<String, String>>,
    /// `root-auto-userns-user`.
    pub root_auto_userns_user: String,
    /// `auto-userns-min-size` (0 = unset).
    pub auto_userns_min_size: u32,
    /// `auto-userns-max-size` (0 = unset).
    pub auto_userns_max_size: u32,
    /// `disable-volatile`.
    pub disable_volatile: bool,
}

impl StoreOptions {
    /// Go's `encoding/json` rendering of the options, as printed by `containers-storage config`.
    pub fn to_go_json(&self) -> String {
        let mut out = String::from("{");
        let field = |out: &mut String, key: &str, value: String| {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&json_string(key));
            out.push(':');
            out.push_str(&value);
        };
        field(
            &mut out,
            "runroot",
            json_string(&self.run_root.to_string_lossy()),
        );
        field(
            &mut out,
            "root",
            json_string(&self.graph_root.to_string_lossy()),
        );
        if let Some(is) = &self.image_store {
            field(&mut out, "imagestore", json_string(&is.to_string_lossy()));
        }
        field(
            &mut out,
            "RootlessStoragePath",
            json_string(&self.rootless_storage_path),
        );
        if !self.driver.is_empty() {
            field(&mut out, "driver", json_string(&self.driver));
        }
        if !self.driver_priority.is_empty() {
            field(
                &mut out,
                "driver-priority",
                json_list(&self.driver_priority),
            );
        }
        if !self.driver_options.is_empty() {
            field(&mut out, "driver-options", json_list(&self.driver_options));
        }
        if !self.root_auto_userns_user.is_empty() {
            field(
                &mut out,
                "root_auto_ns_user",
                json_string(&self.root_auto_userns_user),
            );
        }
        if self.auto_userns_min_size != 0 {
            field(
                &mut out,
                "auto_userns_min_size",
                self.auto_userns_min_size.to_string(),
            );
        }
        if self.auto_userns_max_size != 0 {
            field(
                &mut out,
                "auto_userns_max_size",
                self.auto_userns_max_size.to_string(),
            );
        }
        let pull = match &self.pull_options {
            None => "null".to_string(),
            Some(map) => {
                let items: Vec<String> = map
                    .iter()
                    .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
                    .collect();
                format!("{{{}}}", items.join(","))
            }
        };
        field(&mut out, "PullOptions", pull);
        if self.disable_volatile {
            field(&mut out, "disable-volatile", "true".to_string());
        }
        if self.transient_store {
            field(&mut out, "transient_store", "true".to_string());
        }
        out.push('}');
        out
    }
}

/// Go `encoding/json` string quoting (with HTML escaping, like Go's default encoder).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| json_string(s)).collect();
    format!("[{}]", parts.join(","))
}

/// The process environment and file locations the options are computed from.
///
/// [`Environment::from_process`] snapshots the real process; tests build one with
/// [`Environment::empty`] and [`Environment::with_var`].
#[derive(Debug, Clone)]
pub struct Environment {
    vars: BTreeMap<String, String>,
    /// The rootless UID (Go's `getRootlessUID`): 0 for root.
    pub uid: u32,
    /// Whether per-user storage is used (rootless and uid ≠ 0).
    pub rootless: bool,
    /// The effective UID, which must own the rootless runtime directory (0 inside the
    /// rootless user namespace, where the user's files appear owned by root).
    pub euid: u32,
    /// The system configuration file (`/usr/share/containers/storage.conf`).
    pub system_config: PathBuf,
    /// The override configuration file (`/etc/containers/storage.conf`).
    pub override_config: PathBuf,
    /// Kernel version (major, minor), used by the rootless driver guess.
    pub kernel_version: (u32, u32),
}

impl Environment {
    /// A root environment with no variables and the standard file locations.
    pub fn empty() -> Self {
        Environment {
            vars: BTreeMap::new(),
            uid: 0,
            rootless: false,
            euid: 0,
            system_config: PathBuf::from(SYSTEM_CONFIG_FILE),
            override_config: PathBuf::from(OVERRIDE_CONFIG_FILE),
            kernel_version: (0, 0),
        }
    }

    /// A snapshot of the running process: its environment, its effective UID and the
    /// standard file locations.
    pub fn from_process() -> Self {
        let vars: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        // Go's `usePerUserStorage`: `IsRootless()` and a rootless UID other than 0, which
        // comes down to the rootless UID alone (a non-zero one makes `IsRootless()` true).
        let uid = storage_userns::rootless_uid();
        Environment {
            vars,
            uid,
            rootless: uid != 0,
            euid: rustix::process::geteuid().as_raw(),
            system_config: PathBuf::from(SYSTEM_CONFIG_FILE),
            override_config: PathBuf::from(OVERRIDE_CONFIG_FILE),
            kernel_version: kernel_version(),
        }
    }

    /// Returns a copy with `key` set to `value`.
    pub fn with_var(mut self, key: &str, value: &str) -> Self {
        self.vars.insert(key.to_string(), value.to_string());
        self
    }

    /// Returns a copy acting as the rootless user `uid`.
    pub fn with_rootless_uid(mut self, uid: u32) -> Self {
        self.uid = uid;
        self.rootless = uid != 0;
        self
    }

    /// Returns a copy with other configuration file locations.
    pub fn with_config_files(mut self, system: &Path, override_file: &Path) -> Self {
        self.system_config = system.to_path_buf();
        self.override_config = override_file.to_path_buf();
        self
    }

    /// Looks up an environment variable.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }
}

fn kernel_version() -> (u32, u32) {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = text.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// Loads the default store options of the running process (Go's `DefaultStoreOptions`).
///
/// Returns the options and the warnings met on the way (unknown keys, `overlay2`, …); the
/// warnings are for the caller to log.
pub fn load_default_options() -> Result<(StoreOptions, Vec<String>), ConfigError> {
    load_options(&Environment::from_process())
}

/// Which configuration file the search order selects, and whether it must exist.
///
/// Returns `(path, required)`: `required` is true for `$CONTAINERS_STORAGE_CONF`.
pub fn config_file_path(env: &Environment) -> (PathBuf, bool) {
    if let Some(path) = env.var("CONTAINERS_STORAGE_CONF") {
        return (PathBuf::from(path), true);
    }
    if let Some(xdg) = env.var("XDG_CONFIG_HOME") {
        let home_file = Path::new(xdg).join("containers").join("storage.conf");
        if home_file.exists() {
            return (home_file, false);
        }
    }
    if env.override_config.exists() {
        return (env.override_config.clone(), false);
    }
    (env.system_config.clone(), false)
}

/// The system defaults (Go's `types.Options()`, which `GetStore` calls first whatever the
/// caller passes): the configuration file the search order selects, with the built-in roots
/// where it sets none. A file that cannot be read or parsed is an error here even when the
/// caller gives both roots itself, as in Go; the per-user file of a rootless user is not read.
pub fn load_system_options(env: &Environment) -> Result<(StoreOptions, Vec<String>), ConfigError> {
    let mut warnings = Vec::new();
    let (path, required) = config_file_path(env);
    let mut opts = StoreOptions::default();
    match std::fs::metadata(&path) {
        Ok(_) => file::load_file(&path, env, &mut opts, &mut warnings)?,
        Err(e) if required || e.kind() != io::ErrorKind::NotFound => {
            return Err(ConfigError::Stat { path, source: e });
        }
        Err(_) => file::apply_env(env, &mut opts, &mut warnings, &path, false),
    }
    if opts.run_root.as_os_str().is_empty() {
        opts.run_root = PathBuf::from(DEFAULT_RUN_ROOT);
    }
    if opts.graph_root.as_os_str().is_empty() {
        opts.graph_root = PathBuf::from(DEFAULT_GRAPH_ROOT);
    }
    Ok((opts, warnings))
}

/// Computes the default store options for `env` (Go's `DefaultStoreOptions`).
pub fn load_options(env: &Environment) -> Result<(StoreOptions, Vec<String>), ConfigError> {
    let required = config_file_path(env).1;
    // Step A: the system defaults.
    let (mut opts, mut warnings) = load_system_options(env)?;
    // Step C: per-user storage.
    if env.rootless {
        opts = rootless_options(env, &opts, required, &mut warnings)?;
        let user_file = match env.var("CONTAINERS_STORAGE_CONF") {
            Some(p) => Some(PathBuf::from(p)),
            None => match (env.var("XDG_CONFIG_HOME"), env.var("HOME")) {
                (Some(x), _) if !x.is_empty() => Some(Path::new(x).join("containers/storage.conf")),
                (_, Some(h)) if !h.is_empty() => {
                    Some(Path::new(h).join(".config/containers/storage.conf"))
                }
                _ => None,
            },
        };
        if let Some(user_file) = user_file.filter(|p| p.exists()) {
            let defaults = opts.clone();
            opts = StoreOptions::default();
            file::load_file(&user_file, env, &mut opts, &mut warnings)?;
            if opts.run_root.as_os_str().is_empty() {
                opts.run_root = defaults.run_root;
            }
            if opts.graph_root.as_os_str().is_empty() {
                opts.graph_root = if opts.rootless_storage_path.is_empty() {
                    defaults.graph_root
                } else {
                    PathBuf::from(&opts.rootless_storage_path)
                };
            }
        }
    }
    finalize(env, &mut opts)?;
    Ok((opts, warnings))
}

/// Re-reads `path` on top of `base` (the `config FILE` command: Go's `ReloadConfigurationFile`).
pub fn reload_file(
    path: &Path,
    env: &Environment,
    base: &StoreOptions,
) -> Result<(StoreOptions, Vec<String>), ConfigError> {
    let mut opts = base.clone();
    let mut warnings = Vec::new();
    std::fs::metadata(path).map_err(|e| ConfigError::Stat {
        path: path.to_path_buf(),
        source: e,
    })?;
    file::load_file(path, env, &mut opts, &mut warnings)?;
    Ok((opts, warnings))
}

fn finalize(env: &Environment, opts: &mut StoreOptions) -> Result<(), ConfigError> {
    if opts.run_root.as_os_str().is_empty() {
        return Err(ConfigError::Invalid("runroot must be set".into()));
    }
    opts.run_root = expand_path(&opts.run_root.to_string_lossy(), env);
    if opts.graph_root.as_os_str().is_empty() {
        return Err(ConfigError::Invalid("graphroot must be set".into()));
    }
    opts.graph_root = expand_path(&opts.graph_root.to_string_lossy(), env);
    if !opts.rootless_storage_path.is_empty() {
        opts.rootless_storage_path = expand_path(&opts.rootless_storage_path, env)
            .to_string_lossy()
            .into_owned();
    }
    if let Some(is) = &opts.image_store
        && *is == opts.graph_root
    {
        return Err(ConfigError::Invalid(format!(
            "imagestore {} must either be not set or be a different than graphroot",
            is.display()
        )));
    }
    Ok(())
}

/// Go's `expandEnvPath`: `$UID`, then `$VAR`/`${VAR}`, then symlink resolution (falling back
/// to the lexically cleaned path).
fn expand_path(path: &str, env: &Environment) -> PathBuf {
    let replaced = path.replace("$UID", &env.uid.to_string());
    let expanded = expand_env(&replaced, |k| env.var(k).map(str::to_string));
    match std::fs::canonicalize(&expanded) {
        Ok(p) => p,
        Err(_) => clean_path(&expanded),
    }
}

/// Go's `filepath.Clean`.
pub fn clean_path(path: &str) -> PathBuf {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    PathBuf::from(match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    })
}

fn rootless_runtime_dir(env: &Environment) -> Result<PathBuf, ConfigError> {
    use std::os::unix::fs::MetadataExt;
    if let Some(dir) = env.var("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        // Go: `filepath.EvalSymlinks($XDG_RUNTIME_DIR)`, an error when it does not exist.
        return std::fs::canonicalize(dir).map_err(|e| {
            ConfigError::Invalid(format!(
                "XDG_RUNTIME_DIR: lstat {dir}: {}: create the directory (owned by user {}, mode 0700) or unset XDG_RUNTIME_DIR",
                go_io_text(&e),
                env.uid
            ))
        });
    }
    // Owned by the effective user (root inside the user namespace, where the user's
    // files appear owned by root) and not writable by group or others.
    let usable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_dir() && m.uid() == env.euid && m.mode() & 0o022 == 0)
            .unwrap_or(false)
    };
    let run_user = PathBuf::from(format!("/run/user/{}", env.uid));
    if usable(&run_user) {
        return Ok(run_user);
    }
    let tmp = env
        .var("TMPDIR")
        .filter(|t| !t.is_empty())
        .unwrap_or("/tmp");
    let fallback = Path::new(tmp).join(format!("storage-run-{}", env.uid));
    if !fallback.exists() {
        let mut builder = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        let _ = builder.create(&fallback);
    }
    if usable(&fallback) {
        return Ok(fallback);
    }
    Err(ConfigError::Invalid(format!(
        "cannot find a runtime directory for rootless user {uid}: XDG_RUNTIME_DIR is not set, /run/user/{uid} is missing or not owned by the user, and {} cannot be used: set XDG_RUNTIME_DIR to a directory owned by the user with mode 0700",
        fallback.display(),
        uid = env.uid,
    )))
}

/// Whether `prog` is an executable file in `$PATH` (of `env`).
fn in_path(env: &Environment, prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    env.var("PATH").is_some_and(|path| {
        std::env::split_paths(path).any(|d| {
            std::fs::metadata(d.join(prog))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

fn rootless_options(
    env: &Environment,
    system: &StoreOptions,
    explicit_path: bool,
    warnings: &mut Vec<String>,
) -> Result<StoreOptions, ConfigError> {
    let mut opts = StoreOptions {
        run_root: rootless_runtime_dir(env)?.join("containers"),
        ..StoreOptions::default()
    };
    opts.graph_root = if !system.rootless_storage_path.is_empty() {
        expand_path(&system.rootless_storage_path, env)
    } else if let Some(data) = env.var("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        Path::new(data).join("containers/storage")
    } else {
        let home = env.var("HOME").unwrap_or("/");
        Path::new(home).join(".local/share/containers/storage")
    };
    if matches!(
        system.driver.as_str(),
        "overlay" | "overlay2" | "btrfs" | "vfs"
    ) {
        opts.driver = system.driver.clone();
    }
    file::driver_from_env(env, &mut opts, warnings);
    if opts.driver.is_empty() {
        if system.driver_priority.is_empty() {
            opts.driver = prior_driver(&opts.graph_root).unwrap_or_else(|| {
                if in_path(env, "fuse-overlayfs") || env.kernel_version >= (5, 13) {
                    "overlay".to_string()
                } else {
                    "vfs".to_string()
                }
            });
        } else {
            opts.driver_priority = system.driver_priority.clone();
        }
    }
    if explicit_path {
        opts.driver_options = system.driver_options.clone();
        opts.image_store = system.image_store.clone();
    } else if opts.driver == "overlay" {
        opts.driver_options = system
            .driver_options
            .iter()
            .filter(|o| o.contains("ignore_chown_errors"))
            .cloned()
            .collect();
    }
    opts.pull_options = system.pull_options.clone();
    if let Some(extra) = env.var("STORAGE_OPTS") {
        opts.driver_options.extend(
            extra
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    Ok(opts)
}

fn prior_driver(graph_root: &Path) -> Option<String> {
    let entries = std::fs::read_dir(graph_root).ok()?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix("-images").map(str::to_string))
        .collect();
    names.sort();
    names.into_iter().next()
}
