//! What Go's TOML decoder (BurntSushi `toml`, as containers/storage uses it) says about a
//! `storage.conf`: its error texts (`toml: line N (last key "K"): …`) for files that do not
//! parse or whose values have the wrong type, and the list of keys it did not decode, in file
//! order, for the `Failed to decode the keys […]` warning.
//!
//! The file is parsed once into a spanned tree; the types of the keys Go's schema knows are
//! checked against it before the values are read, so a type error is reported the way Go
//! reports it (the key's line, the TOML and Go type names) instead of as a serde error.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A Go `toml.ParseError`: line, "last key" and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GoTomlError {
    /// 1-based line Go reports.
    pub(crate) line: usize,
    /// The dotted key Go was at (`storage.graphroot`), empty when none.
    pub(crate) last_key: String,
    /// What is wrong, in Go's words.
    pub(crate) message: String,
}

/// The destination type of a key in Go's schema (`types.tomlConfig` and
/// `pkg/config.OptionsConfig`).
#[derive(Clone, Copy)]
enum GoType {
    /// `string`.
    Str,
    /// `bool`.
    Bool,
    /// An unsigned 32-bit integer (`uint32`, `os.FileMode`).
    Uint32,
    /// `[]string`.
    StrSlice,
    /// `map[string]string`.
    StrMap,
    /// A struct (a TOML table); the Go type as `%v` prints it.
    Table(&'static str),
}

/// The 1.60 `tomlConfig.Storage` struct as Go's `%v` of its type prints it.
const STORAGE_STRUCT: &str = "struct { Driver string \"toml:\\\"driver,omitempty\\\"\"; DriverPriority []string \"toml:\\\"driver_priority,omitempty\\\"\"; RunRoot string \"toml:\\\"runroot,omitempty\\\"\"; ImageStore string \"toml:\\\"imagestore,omitempty\\\"\"; GraphRoot string \"toml:\\\"graphroot,omitempty\\\"\"; RootlessStoragePath string \"toml:\\\"rootless_storage_path,omitempty\\\"\"; TransientStore bool \"toml:\\\"transient_store,omitempty\\\"\"; Options config.OptionsConfig \"toml:\\\"options,omitempty\\\"\" }";

/// Every key of Go's schema with its destination type (tables too).
const SCHEMA: &[(&str, GoType)] = &[
    ("storage", GoType::Table(STORAGE_STRUCT)),
    ("storage.driver", GoType::Str),
    ("storage.driver_priority", GoType::StrSlice),
    ("storage.runroot", GoType::Str),
    ("storage.graphroot", GoType::Str),
    ("storage.imagestore", GoType::Str),
    ("storage.rootless_storage_path", GoType::Str),
    ("storage.transient_store", GoType::Bool),
    ("storage.options", GoType::Table("config.OptionsConfig")),
    ("storage.options.additionalimagestores", GoType::StrSlice),
    ("storage.options.additionallayerstores", GoType::StrSlice),
    ("storage.options.size", GoType::Str),
    ("storage.options.mount_program", GoType::Str),
    ("storage.options.skip_mount_home", GoType::Str),
    ("storage.options.ignore_chown_errors", GoType::Str),
    ("storage.options.force_mask", GoType::Uint32),
    ("storage.options.mountopt", GoType::Str),
    ("storage.options.root-auto-userns-user", GoType::Str),
    ("storage.options.auto-userns-min-size", GoType::Uint32),
    ("storage.options.auto-userns-max-size", GoType::Uint32),
    ("storage.options.disable-volatile", GoType::Bool),
    ("storage.options.imagestore", GoType::Str),
    ("storage.options.use_composefs", GoType::Str),
    ("storage.options.pull_options", GoType::StrMap),
    (
        "storage.options.overlay",
        GoType::Table("config.OverlayOptionsConfig"),
    ),
    ("storage.options.overlay.ignore_chown_errors", GoType::Str),
    ("storage.options.overlay.mountopt", GoType::Str),
    ("storage.options.overlay.mount_program", GoType::Str),
    ("storage.options.overlay.size", GoType::Str),
    ("storage.options.overlay.inodes", GoType::Str),
    ("storage.options.overlay.skip_mount_home", GoType::Str),
    ("storage.options.overlay.use_composefs", GoType::Str),
    ("storage.options.overlay.force_mask", GoType::Str),
    (
        "storage.options.vfs",
        GoType::Table("config.VfsOptionsConfig"),
    ),
    ("storage.options.vfs.ignore_chown_errors", GoType::Str),
    (
        "storage.options.btrfs",
        GoType::Table("config.BtrfsOptionsConfig"),
    ),
    ("storage.options.btrfs.min_space", GoType::Str),
    ("storage.options.btrfs.size", GoType::Str),
    (
        "storage.options.zfs",
        GoType::Table("config.ZfsOptionsConfig"),
    ),
    ("storage.options.zfs.mountopt", GoType::Str),
    ("storage.options.zfs.fsname", GoType::Str),
    ("storage.options.zfs.size", GoType::Str),
    (
        "storage.options.aufs",
        GoType::Table("config.AufsOptionsConfig"),
    ),
    ("storage.options.aufs.mountopt", GoType::Str),
    (
        "storage.options.thinpool",
        GoType::Table("config.ThinpoolOptionsConfig"),
    ),
];

/// The dotted paths of every key of the schema.
#[cfg(test)]
pub(crate) fn schema_keys() -> impl Iterator<Item = &'static str> {
    SCHEMA.iter().map(|(p, _)| *p)
}

fn schema_type(path: &str) -> Option<GoType> {
    SCHEMA.iter().find(|(p, _)| *p == path).map(|(_, t)| *t)
}

/// Whether `path` (a schema path) is a key Go decodes: in the schema, or a value of the
/// free-form `pull_options` table.
fn is_known(path: &str) -> bool {
    schema_type(path).is_some()
        || path
            .strip_prefix("storage.options.pull_options.")
            .is_some_and(|rest| !rest.contains('.'))
}

/// 1-based line of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()
        .get(..offset)
        .unwrap_or_default()
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn is_bare(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Go's `toml.Key.String()`: parts joined by `.`, non-bare parts double-quoted.
fn key_string(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| {
            if is_bare(p) {
                (*p).to_string()
            } else {
                format!("{p:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Go's `%q` of a rune.
fn go_rune(c: char) -> String {
    match c {
        '\n' => "'\\n'".into(),
        '\t' => "'\\t'".into(),
        '\r' => "'\\r'".into(),
        '\\' => "'\\\\'".into(),
        '\'' => "'\\''".into(),
        c if c.is_control() => format!("'\\x{:02x}'", c as u32),
        c => format!("'{c}'"),
    }
}

/// Go's `%T` of a decoded TOML value.
fn toml_type(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "string",
        DeValue::Integer(_) => "int64",
        DeValue::Float(_) => "float64",
        DeValue::Boolean(_) => "bool",
        DeValue::Datetime(_) => "time.Time",
        DeValue::Array(a) => {
            if !a.is_empty() && a.iter().all(|e| matches!(e.get_ref(), DeValue::Table(_))) {
                "[]map[string]interface {}"
            } else {
                "[]interface {}"
            }
        }
        DeValue::Table(_) => "map[string]interface {}",
    }
}

fn bad_type(line: usize, key: &str, v: &DeValue<'_>, dest: &str) -> GoTomlError {
    GoTomlError {
        line,
        last_key: key.to_string(),
        message: format!(
            "incompatible types: TOML value has type {}; destination has type {dest}",
            toml_type(v)
        ),
    }
}

/// Checks one value against its destination type, as Go's `unify` does.
fn check_value(line: usize, key: &str, v: &DeValue<'_>, ty: GoType) -> Result<(), GoTomlError> {
    match ty {
        GoType::Str if matches!(v, DeValue::String(_)) => Ok(()),
        GoType::Str => Err(bad_type(line, key, v, "string")),
        GoType::Bool if matches!(v, DeValue::Boolean(_)) => Ok(()),
        GoType::Bool => Err(bad_type(line, key, v, "boolean")),
        GoType::Uint32 => match v {
            DeValue::Integer(i) => {
                let value = i128::from_str_radix(i.as_str(), i.radix()).unwrap_or(i128::MAX);
                if (0..=i128::from(u32::MAX)).contains(&value) {
                    Ok(())
                } else {
                    Err(GoTomlError {
                        line,
                        last_key: key.to_string(),
                        message: format!("{value} is out of range for uint32"),
                    })
                }
            }
            other => Err(bad_type(line, key, other, "integer")),
        },
        GoType::StrSlice => match v {
            DeValue::Array(a) => {
                for e in a.iter() {
                    check_value(line, key, e.get_ref(), GoType::Str)?;
                }
                Ok(())
            }
            other => Err(bad_type(line, key, other, "slice")),
        },
        // Go leaves a map destination alone when the value is not a table.
        GoType::StrMap => Ok(()),
        GoType::Table(go) => match v {
            DeValue::Table(_) => Ok(()),
            other => Err(GoTomlError {
                line,
                last_key: key.to_string(),
                message: format!(
                    "type mismatch for {go}: expected table but found {}",
                    toml_type(other)
                ),
            }),
        },
    }
}

/// The keys of `table` in file order (by the position of their key).
fn in_file_order<'t, 'i>(
    table: &'t DeTable<'i>,
) -> Vec<(
    &'t Spanned<std::borrow::Cow<'i, str>>,
    &'t Spanned<DeValue<'i>>,
)> {
    let mut v: Vec<_> = table.iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

/// Whether the key at `span` is only a part of a longer dotted key or table name
/// (`storage` in `[storage.options]`): Go records no key of its own for it.
fn is_implicit(text: &str, span: std::ops::Range<usize>) -> bool {
    let rest = text.get(span.end..).unwrap_or_default();
    rest.trim_start_matches([' ', '\t']).starts_with('.')
}

/// Walks `table` (at `path`), checking the types of the keys Go decodes and collecting the
/// keys it does not, with their positions.
fn walk(
    text: &str,
    table: &DeTable<'_>,
    path: &[&str],
    unknown: &mut Vec<(usize, String)>,
) -> Result<(), GoTomlError> {
    for (k, v) in in_file_order(table) {
        let mut parts = path.to_vec();
        parts.push(k.get_ref());
        let plain = parts.join(".");
        let key = key_string(&parts);
        let line = line_of(text, k.span().start);
        let known = is_known(&plain);
        if known {
            if let Some(ty) = schema_type(&plain) {
                check_value(line, &key, v.get_ref(), ty)?;
            } else {
                // A `pull_options` value: `map[string]string`.
                check_value(line, &key, v.get_ref(), GoType::Str)?;
            }
        } else if !(matches!(v.get_ref(), DeValue::Table(_)) && is_implicit(text, k.span())) {
            unknown.push((k.span().start, key.clone()));
        }
        if let DeValue::Table(sub) = v.get_ref() {
            // Below a known table the keys are checked; below an unknown one each is
            // unknown; `pull_options` values are `is_known` strings.
            walk(text, sub, &parts, unknown)?;
        }
    }
    Ok(())
}

/// Parses `text` as Go would: a syntax error or a type error of a known key is returned in
/// Go's words; otherwise the keys Go would not decode, in file order (Go's `%q` quoting of
/// each is the caller's).
pub(crate) fn check(text: &str) -> Result<Vec<String>, GoTomlError> {
    let root = DeTable::parse(text).map_err(|e| syntax_error(text, &e))?;
    let mut unknown = Vec::new();
    walk(text, root.get_ref(), &[], &mut unknown)?;
    unknown.sort_by_key(|(pos, _)| *pos);
    Ok(unknown.into_iter().map(|(_, k)| k).collect())
}

/// A syntax error of toml-rs at its position, in the words of Go's lexer for the common
/// cases (a missing value, an unterminated string, a bare word as value, a broken table
/// header, a key without `=`, a blank key, a key defined twice); other cases keep toml-rs'
/// message in Go's frame.
pub(crate) fn syntax_error(text: &str, err: &toml::de::Error) -> GoTomlError {
    let offset = err.span().map_or(0, |s| s.start).min(text.len());
    let line_no = line_of(text, offset);
    let lines: Vec<&str> = text.split('\n').collect();
    // The table context and the key of the line in error.
    let mut context: Vec<String> = Vec::new();
    for l in lines.iter().take(line_no.saturating_sub(1)) {
        if let Some(name) = header_name(l) {
            context = name;
        }
    }
    let line = lines.get(line_no - 1).copied().unwrap_or_default();
    let ctx_key = context.join(".");
    let with_key = |k: &str| {
        if ctx_key.is_empty() {
            k.to_string()
        } else {
            format!("{ctx_key}.{k}")
        }
    };
    let at_eof = !text.ends_with('\n') && line_no == lines.len();
    let trimmed = line.trim_start();
    let message = err.message().trim();
    let go = |line: usize, last_key: String, message: String| GoTomlError {
        line,
        last_key,
        message,
    };
    if message.contains("duplicate key") {
        if let Some(name) = header_name(line) {
            return go(
                line_no,
                String::new(),
                format!("Key '{}' has already been defined.", name.join(".")),
            );
        }
        if let Some((key, _)) = key_value(trimmed) {
            let full = with_key(key);
            return go(
                line_no,
                full.clone(),
                format!("Key '{full}' has already been defined."),
            );
        }
    }
    if trimmed.starts_with('[') && !trimmed.contains(']') {
        return go(
            line_no,
            String::new(),
            "expected '.' or ']' to end table name, but got '\\n' instead".into(),
        );
    }
    if trimmed.starts_with('=') {
        return go(
            line_no,
            ctx_key,
            "unexpected '=': key name appears blank".into(),
        );
    }
    if let Some((key, rest)) = key_value(trimmed) {
        let rest = rest.trim_start_matches([' ', '\t']);
        let last_key = with_key(key);
        if rest.is_empty() || rest.starts_with('#') {
            let message = if at_eof {
                "unexpected EOF; expected value".to_string()
            } else {
                "expected value but found '\\n' instead".to_string()
            };
            return go(line_no, last_key, message);
        }
        if let Some(s) = rest.strip_prefix('"')
            && !s.contains('"')
        {
            return go(line_no, last_key, "strings cannot contain newlines".into());
        }
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        if rest.starts_with(|c: char| c.is_ascii_alphabetic())
            && !matches!(word.as_str(), "true" | "false" | "inf" | "nan")
        {
            return go(
                line_no,
                last_key,
                format!("expected value but found {word:?} instead"),
            );
        }
        return go(line_no, last_key, message.to_string());
    }
    // A key not followed by `=`.
    let key: String = trimmed
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    if !key.is_empty()
        && let Some(next) = trimmed[key.len()..]
            .trim_start_matches([' ', '\t'])
            .chars()
            .next()
        && next != '='
        && next != '.'
    {
        return go(
            line_no,
            ctx_key,
            format!("expected '.' or '=', but got {} instead", go_rune(next)),
        );
    }
    go(line_no, ctx_key, message.to_string())
}

/// The dotted name of a `[table]` or `[[array]]` header line.
fn header_name(line: &str) -> Option<Vec<String>> {
    let t = line.trim();
    let inner = t
        .strip_prefix("[[")
        .and_then(|s| s.strip_suffix("]]"))
        .or_else(|| {
            t.strip_prefix('[')
                .and_then(|s| s.split_once(']').map(|(a, _)| a))
        })?;
    Some(
        inner
            .split('.')
            .map(|p| p.trim().trim_matches('"').to_string())
            .collect(),
    )
}

/// `key = rest` of a line (a bare or quoted, possibly dotted key).
fn key_value(line: &str) -> Option<(&str, &str)> {
    let (key, rest) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    Some((key, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        let e = check(text).unwrap_err();
        if e.last_key.is_empty() {
            format!("toml: line {}: {}", e.line, e.message)
        } else {
            format!(
                "toml: line {} (last key {:?}): {}",
                e.line, e.last_key, e.message
            )
        }
    }

    /// Texts observed from Go (`Failed to read … toml: …`), lines as Go 1.60 reports them.
    #[test]
    fn go_error_texts() {
        let cases = [
            (
                "[storage]\ndriver = \"vfs\"\ngraphroot = \n",
                r#"toml: line 3 (last key "storage.graphroot"): expected value but found '\n' instead"#,
            ),
            (
                "[storage]\ndriver = 5\n",
                r#"toml: line 2 (last key "storage.driver"): incompatible types: TOML value has type int64; destination has type string"#,
            ),
            (
                "[storage.options]\ndisable-volatile = \"x\"\n",
                r#"toml: line 2 (last key "storage.options.disable-volatile"): incompatible types: TOML value has type string; destination has type boolean"#,
            ),
            (
                "[storage.options]\nforce_mask = -1\n",
                r#"toml: line 2 (last key "storage.options.force_mask"): -1 is out of range for uint32"#,
            ),
            (
                "[storage.options]\nadditionalimagestores = [\"a\", 1]\n",
                r#"toml: line 2 (last key "storage.options.additionalimagestores"): incompatible types: TOML value has type int64; destination has type string"#,
            ),
            (
                "[storage.options]\nadditionalimagestores = \"a\"\n",
                r#"toml: line 2 (last key "storage.options.additionalimagestores"): incompatible types: TOML value has type string; destination has type slice"#,
            ),
            (
                "[storage.options]\nauto-userns-max-size = 1.5\n",
                r#"toml: line 2 (last key "storage.options.auto-userns-max-size"): incompatible types: TOML value has type float64; destination has type integer"#,
            ),
            (
                "[storage.options.pull_options]\na = 1\n",
                r#"toml: line 2 (last key "storage.options.pull_options.a"): incompatible types: TOML value has type int64; destination has type string"#,
            ),
            (
                "[storage]\ndriver = [1]\n",
                r#"toml: line 2 (last key "storage.driver"): incompatible types: TOML value has type []interface {}; destination has type string"#,
            ),
            (
                "[storage]\ndriver = 1979-05-27\n",
                r#"toml: line 2 (last key "storage.driver"): incompatible types: TOML value has type time.Time; destination has type string"#,
            ),
            (
                "[storage]\noptions = 1\n",
                r#"toml: line 2 (last key "storage.options"): type mismatch for config.OptionsConfig: expected table but found int64"#,
            ),
            (
                "[storage]\ndriver = \"vfs\n",
                r#"toml: line 2 (last key "storage.driver"): strings cannot contain newlines"#,
            ),
            (
                "[storage]\ndriver = vfs\n",
                r#"toml: line 2 (last key "storage.driver"): expected value but found "vfs" instead"#,
            ),
            (
                "[storage\ndriver = \"vfs\"\n",
                r#"toml: line 1: expected '.' or ']' to end table name, but got '\n' instead"#,
            ),
            (
                "[storage]\ndriver = \"vfs\"\ndriver = \"vfs\"\n",
                r#"toml: line 3 (last key "storage.driver"): Key 'storage.driver' has already been defined."#,
            ),
            (
                "[storage]\n[storage]\n",
                "toml: line 2: Key 'storage' has already been defined.",
            ),
            (
                "[storage]\ndriver \"vfs\"\n",
                r#"toml: line 2 (last key "storage"): expected '.' or '=', but got '"' instead"#,
            ),
            (
                "[storage]\n= \"vfs\"\n",
                r#"toml: line 2 (last key "storage"): unexpected '=': key name appears blank"#,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(err(text), want, "for {text:?}");
        }
    }

    #[test]
    fn undecoded_keys_in_file_order_with_go_quoting() {
        let text = "[storage]\ndriver = \"vfs\"\nbogus = 1\n[storage.options.thinpool]\nbasesizex = \"10G\"\n[foo]\na = 1\n[storage.options]\n\"x.y\" = 2\n[storage.options.pull_options]\nanything = \"ok\"\n";
        assert_eq!(
            check(text).unwrap(),
            vec![
                "storage.bogus",
                "storage.options.thinpool.basesizex",
                "foo",
                "foo.a",
                "storage.options.\"x.y\"",
            ]
        );
    }

    #[test]
    fn lenient_where_go_is() {
        // A non-table value for a map destination is ignored by Go.
        assert_eq!(
            check("[storage.options]\npull_options = 3\n").unwrap(),
            Vec::<String>::new()
        );
    }
}
