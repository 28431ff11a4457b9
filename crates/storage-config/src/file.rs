//! Reading one `storage.conf` file into [`StoreOptions`] (Go's `ReloadConfigurationFile`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{ConfigError, Environment, StoreOptions, gotoml};

#[derive(Deserialize, Default)]
struct TomlConfig {
    #[serde(default)]
    storage: StorageSection,
}

#[derive(Deserialize, Default)]
struct StorageSection {
    driver: Option<String>,
    driver_priority: Option<Vec<String>>,
    runroot: Option<String>,
    graphroot: Option<String>,
    imagestore: Option<String>,
    rootless_storage_path: Option<String>,
    transient_store: Option<bool>,
    #[serde(default)]
    options: OptionsSection,
}

#[derive(Deserialize, Default)]
struct OptionsSection {
    additionalimagestores: Option<Vec<String>>,
    additionallayerstores: Option<Vec<String>>,
    size: Option<String>,
    mount_program: Option<String>,
    skip_mount_home: Option<String>,
    ignore_chown_errors: Option<String>,
    force_mask: Option<u32>,
    mountopt: Option<String>,
    #[serde(rename = "root-auto-userns-user")]
    root_auto_userns_user: Option<String>,
    #[serde(rename = "auto-userns-min-size")]
    auto_userns_min_size: Option<u32>,
    #[serde(rename = "auto-userns-max-size")]
    auto_userns_max_size: Option<u32>,
    #[serde(rename = "disable-volatile")]
    disable_volatile: Option<bool>,
    #[serde(rename = "imagestore")]
    _imagestore: Option<String>,
    #[serde(rename = "use_composefs")]
    _use_composefs: Option<String>,
    pull_options: Option<BTreeMap<String, String>>,
    #[serde(default)]
    overlay: OverlayTable,
    #[serde(default)]
    vfs: VfsTable,
    #[serde(default)]
    btrfs: BtrfsTable,
    #[serde(default)]
    zfs: ZfsTable,
    #[serde(default)]
    aufs: AufsTable,
}

#[derive(Deserialize, Default)]
struct OverlayTable {
    ignore_chown_errors: Option<String>,
    mountopt: Option<String>,
    mount_program: Option<String>,
    size: Option<String>,
    inodes: Option<String>,
    skip_mount_home: Option<String>,
    use_composefs: Option<String>,
    force_mask: Option<String>,
}

#[derive(Deserialize, Default)]
struct VfsTable {
    ignore_chown_errors: Option<String>,
}

#[derive(Deserialize, Default)]
struct BtrfsTable {
    min_space: Option<String>,
    size: Option<String>,
}

#[derive(Deserialize, Default)]
struct ZfsTable {
    mountopt: Option<String>,
    fsname: Option<String>,
    size: Option<String>,
}

#[derive(Deserialize, Default)]
struct AufsTable {
    mountopt: Option<String>,
}

/// The keys Go's schema knows, as dotted paths (tables too); a trailing `.*` entry marks a
/// free-form table. Any other key is reported as unknown. `containers-storage.conf(5)`
/// documents each of them (a test of the CLI crate checks it).
pub const KNOWN_KEYS: &[&str] = &[
    "storage",
    "storage.driver",
    "storage.driver_priority",
    "storage.runroot",
    "storage.graphroot",
    "storage.imagestore",
    "storage.rootless_storage_path",
    "storage.transient_store",
    "storage.options",
    "storage.options.additionalimagestores",
    "storage.options.additionallayerstores",
    "storage.options.size",
    "storage.options.mount_program",
    "storage.options.skip_mount_home",
    "storage.options.ignore_chown_errors",
    "storage.options.force_mask",
    "storage.options.mountopt",
    "storage.options.root-auto-userns-user",
    "storage.options.auto-userns-min-size",
    "storage.options.auto-userns-max-size",
    "storage.options.disable-volatile",
    "storage.options.imagestore",
    "storage.options.use_composefs",
    "storage.options.pull_options",
    "storage.options.pull_options.*",
    "storage.options.overlay",
    "storage.options.overlay.ignore_chown_errors",
    "storage.options.overlay.mountopt",
    "storage.options.overlay.mount_program",
    "storage.options.overlay.size",
    "storage.options.overlay.inodes",
    "storage.options.overlay.skip_mount_home",
    "storage.options.overlay.use_composefs",
    "storage.options.overlay.force_mask",
    "storage.options.vfs",
    "storage.options.vfs.ignore_chown_errors",
    "storage.options.btrfs",
    "storage.options.btrfs.min_space",
    "storage.options.btrfs.size",
    "storage.options.zfs",
    "storage.options.zfs.mountopt",
    "storage.options.zfs.fsname",
    "storage.options.zfs.size",
    "storage.options.aufs",
    "storage.options.aufs.mountopt",
    "storage.options.thinpool",
];

fn parse_error(path: &Path, e: gotoml::GoTomlError) -> ConfigError {
    ConfigError::Parse {
        path: path.to_path_buf(),
        line: e.line,
        last_key: e.last_key,
        message: e.message,
    }
}

/// Loads `path` into `opts` (fields set in the file override), then applies `STORAGE_DRIVER`
/// and `STORAGE_OPTS`.
pub(crate) fn load_file(
    path: &Path,
    env: &Environment,
    opts: &mut StoreOptions,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    // Go's decoder first: its syntax and type errors, and the keys it does not know.
    let unknown = gotoml::check(&text).map_err(|e| parse_error(path, e))?;
    let config: TomlConfig =
        toml::from_str(&text).map_err(|e| parse_error(path, gotoml::syntax_error(&text, &e)))?;
    if !unknown.is_empty() {
        let quoted: Vec<String> = unknown.iter().map(|k| format!("{k:?}")).collect();
        warnings.push(format!(
            "Failed to decode the keys [{}] from {:?}",
            quoted.join(" "),
            path.to_string_lossy()
        ));
    }
    let storage = config.storage;
    let written_driver = storage.driver.clone().unwrap_or_default();
    if !written_driver.is_empty() {
        opts.driver = written_driver.clone();
    }
    if let Some(d) = storage.driver_priority {
        opts.driver_priority = d;
    }
    if let Some(r) = storage.runroot.filter(|s| !s.is_empty()) {
        opts.run_root = PathBuf::from(r);
    }
    if let Some(g) = storage.graphroot.filter(|s| !s.is_empty()) {
        opts.graph_root = PathBuf::from(g);
    }
    if let Some(i) = storage.imagestore.filter(|s| !s.is_empty()) {
        opts.image_store = Some(PathBuf::from(i));
    }
    if let Some(r) = storage.rootless_storage_path.filter(|s| !s.is_empty()) {
        opts.rootless_storage_path = r;
    }
    apply_env(env, opts, warnings, path, true);
    let o = storage.options;
    let d = &written_driver;
    let mut list = Vec::new();
    for s in o.additionalimagestores.unwrap_or_default() {
        list.push(format!("{d}.imagestore={s}"));
    }
    for s in o.additionallayerstores.unwrap_or_default() {
        list.push(format!("{d}.additionallayerstore={s}"));
    }
    let generic = [
        ("size", &o.size),
        ("mount_program", &o.mount_program),
        ("skip_mount_home", &o.skip_mount_home),
        ("ignore_chown_errors", &o.ignore_chown_errors),
    ];
    for (key, value) in generic {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            list.push(format!("{d}.{key}={v}"));
        }
    }
    if let Some(mask) = o.force_mask.filter(|m| *m != 0) {
        list.push(format!("{d}.force_mask={mask:o}"));
    }
    if let Some(v) = o.mountopt.as_ref().filter(|v| !v.is_empty()) {
        list.push(format!("{d}.mountopt={v}"));
    }
    if let Some(u) = o.root_auto_userns_user {
        opts.root_auto_userns_user = u;
    }
    if let Some(n) = o.auto_userns_min_size.filter(|n| *n > 0) {
        opts.auto_userns_min_size = n;
    }
    if let Some(n) = o.auto_userns_max_size.filter(|n| *n > 0) {
        opts.auto_userns_max_size = n;
    }
    if let Some(p) = o.pull_options {
        opts.pull_options = Some(p);
    }
    opts.disable_volatile = o.disable_volatile.unwrap_or(false);
    opts.transient_store = storage.transient_store.unwrap_or(false);
    // Driver table: keyed by the normalized driver name.
    let n = opts.driver.clone();
    let table_opts: Vec<(&str, &Option<String>)> = match n.as_str() {
        "overlay" | "overlay2" => vec![
            ("ignore_chown_errors", &o.overlay.ignore_chown_errors),
            ("mount_program", &o.overlay.mount_program),
            ("mountopt", &o.overlay.mountopt),
            ("size", &o.overlay.size),
            ("inodes", &o.overlay.inodes),
            ("skip_mount_home", &o.overlay.skip_mount_home),
            ("force_mask", &o.overlay.force_mask),
            ("use_composefs", &o.overlay.use_composefs),
        ],
        "vfs" => vec![("ignore_chown_errors", &o.vfs.ignore_chown_errors)],
        "btrfs" => {
            if o.btrfs.min_space.as_ref().is_some_and(|s| !s.is_empty()) {
                vec![("min_space", &o.btrfs.min_space)]
            } else {
                vec![("size", &o.btrfs.size)]
            }
        }
        "zfs" => vec![
            ("fsname", &o.zfs.fsname),
            ("mountopt", &o.zfs.mountopt),
            ("size", &o.zfs.size),
        ],
        "aufs" => vec![("mountopt", &o.aufs.mountopt)],
        _ => Vec::new(),
    };
    for (key, value) in table_opts {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            list.push(format!("{n}.{key}={v}"));
        }
    }
    opts.driver_options.extend(list);
    if let Some(env_opts) = env.var("STORAGE_OPTS") {
        opts.driver_options = env_opts.split(',').map(str::to_string).collect();
    }
    if opts.driver_options.len() == 1 && opts.driver_options[0].is_empty() {
        opts.driver_options.clear();
    }
    Ok(())
}

/// `STORAGE_DRIVER` and the `overlay2` rewrite.
pub(crate) fn apply_env(
    env: &Environment,
    opts: &mut StoreOptions,
    warnings: &mut Vec<String>,
    path: &Path,
    warn_unset: bool,
) {
    driver_from_env(env, opts, warnings);
    if warn_unset && opts.driver.is_empty() && opts.driver_priority.is_empty() {
        warnings.push(format!(
            "The storage 'driver' option should be set in {}. A driver was picked automatically.",
            path.display()
        ));
    }
}

/// `$STORAGE_DRIVER` (when set and not empty) replaces the driver; `overlay2` then
/// becomes `overlay`, with Go's warning.
pub(crate) fn driver_from_env(
    env: &Environment,
    opts: &mut StoreOptions,
    warnings: &mut Vec<String>,
) {
    if let Some(d) = env.var("STORAGE_DRIVER").filter(|d| !d.is_empty()) {
        opts.driver = d.to_string();
    }
    if opts.driver == "overlay2" {
        warnings
            .push("Switching default driver from overlay2 to the equivalent overlay driver".into());
        opts.driver = "overlay".into();
    }
}

/// Go's `os.Expand` with `lookup` (unset variables expand to nothing).
pub fn expand_env(s: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut start = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            out.push_str(&s[start..i]);
            let rest = &s[i + 1..];
            let (name, width) = shell_name(rest);
            if name.is_empty() && width > 0 {
                // Bad syntax like "${}": Go drops it.
            } else if name.is_empty() {
                out.push('$');
            } else {
                out.push_str(&lookup(name).unwrap_or_default());
            }
            i += 1 + width;
            start = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[start..]);
    out
}

/// `s` is never empty: [`expand_env`] only calls it when a byte follows the `$`. Every
/// slice boundary below is next to an ASCII byte, so it is a character boundary.
fn shell_name(s: &str) -> (&str, usize) {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return ("", 0);
    };
    if first == b'{' {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (&s[1..2], 3);
        }
        for i in 1..b.len() {
            if b[i] == b'}' {
                if i == 1 {
                    return ("", 2);
                }
                return (&s[1..i], i + 1);
            }
        }
        return ("", 1);
    }
    if is_special(first) {
        return (&s[0..1], 1);
    }
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
        i += 1;
    }
    (&s[..i], i)
}

fn is_special(c: u8) -> bool {
    matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_like_go() {
        let lookup = |k: &str| match k {
            "HOME" => Some("/home/u".to_string()),
            "1" => Some("one".to_string()),
            _ => None,
        };
        assert_eq!(expand_env("$HOME/x", lookup), "/home/u/x");
        assert_eq!(expand_env("${HOME}x", lookup), "/home/ux");
        assert_eq!(expand_env("a$NOPE/b", lookup), "a/b");
        assert_eq!(expand_env("end$", lookup), "end$");
        assert_eq!(expand_env("$1x", lookup), "onex");
        assert_eq!(expand_env("a${}b", lookup), "ab");
    }

    #[test]
    fn known_keys_are_the_schema() {
        let mut schema: Vec<String> = crate::gotoml::schema_keys().map(str::to_string).collect();
        schema.push("storage.options.pull_options.*".into());
        schema.sort();
        let mut known: Vec<String> = KNOWN_KEYS.iter().map(|k| k.to_string()).collect();
        known.sort();
        assert_eq!(schema, known);
    }
}
