//! A port of the parsing rules of Go's `pkg/mflag`, the flag package the Go tool uses.
//!
//! Names are registered the way mflag stores them: long names with one leading dash
//! (`"-graph"`, written `--graph` on the command line), short names bare (`"g"`, written `-g`),
//! deprecated names with a leading `#`.

use std::io::Write;

use containers_storage::gocompat::strconv::quote as go_quote;

/// What kind of value a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `--name`, `--name=BOOL`.
    Bool,
    /// `--name VALUE`, `--name=VALUE`; the last one wins.
    Str,
    /// Like [`Kind::Str`], but every occurrence is appended.
    List,
}

/// A flag declaration (static part).
#[derive(Debug, Clone, Copy)]
pub struct FlagSpec {
    /// Names as mflag stores them (`"-json"`, `"j"`).
    pub(crate) names: &'static [&'static str],
    /// Value kind.
    pub(crate) kind: Kind,
    /// Help text (may be empty: then the flag is not listed).
    pub(crate) usage: &'static str,
}

/// A flag declaration: names as mflag stores them, value kind, help text.
pub(crate) const fn flag(
    names: &'static [&'static str],
    kind: Kind,
    usage: &'static str,
) -> FlagSpec {
    FlagSpec { names, kind, usage }
}

impl FlagSpec {
    /// The names as written on a command line, in declaration order, without the deprecated
    /// ones: `["--graph", "-g"]` for `&["-graph", "g"]` (what the usage texts, the man pages
    /// and the completions show).
    pub fn shown_names(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|n| !n.starts_with('#'))
            .map(|n| format!("-{n}"))
            .collect()
    }

    /// Whether the flag is listed in usage texts (it has a help text and a shown name).
    pub fn is_listed(&self) -> bool {
        !self.usage.is_empty() && self.names.iter().any(|n| !n.starts_with('#'))
    }

    /// mflag's listing order: by first name without dashes, case-insensitively first.
    pub(crate) fn usage_order(&self, other: &FlagSpec) -> std::cmp::Ordering {
        let key = |s: &FlagSpec| {
            s.names
                .first()
                .map(|n| n.trim_start_matches('#').trim_start_matches('-'))
                .unwrap_or("")
        };
        let (pa, pb) = (key(self), key(other));
        pa.to_lowercase()
            .cmp(&pb.to_lowercase())
            .then_with(|| pa.cmp(pb))
    }

    /// Whether the flag takes a value (`--name VALUE`).
    pub(crate) fn takes_value(&self) -> bool {
        self.kind != Kind::Bool
    }
}

/// The value of a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Boolean.
    Bool(bool),
    /// String.
    Str(String),
    /// List of strings.
    List(Vec<String>),
}

impl Value {
    /// Go's `Value.String()` of the flag: the text shown as the default in the usage.
    fn display(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Str(s) => s.clone(),
            Value::List(l) => format!("[{}]", l.join(" ")),
        }
    }
}

/// A registered flag with its current value.
#[derive(Debug, Clone)]
pub(crate) struct Flag {
    /// Declaration.
    pub(crate) spec: FlagSpec,
    /// Current value.
    pub(crate) value: Value,
    /// The value when usage is printed as the default (`DefValue`).
    default_text: String,
}

/// Why parsing stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Help was requested (`-h`, `-help`, `--help` not registered); usage was printed.
    Help,
    /// A syntax error; the message (already printed to stderr with the `See …` line).
    Failed(String),
}

/// A set of flags, parsed like mflag.
pub struct FlagSet {
    /// Name used in the `See '… --help'.` line.
    pub(crate) name: String,
    /// `argv[0]` as invoked.
    pub(crate) argv0: String,
    flags: Vec<Flag>,
    /// Remaining (positional) arguments after a parse.
    pub args: Vec<String>,
    /// Names set during the parse, in order (as looked up).
    pub set: Vec<String>,
}

impl FlagSet {
    /// An empty set.
    pub(crate) fn new(name: &str, argv0: &str) -> Self {
        FlagSet {
            name: name.to_string(),
            argv0: argv0.to_string(),
            flags: Vec::new(),
            args: Vec::new(),
            set: Vec::new(),
        }
    }

    /// Registers a flag with its initial value (which is also the default shown in usage).
    pub(crate) fn add(&mut self, spec: FlagSpec, value: Value) {
        let default_text = value.display();
        self.flags.push(Flag {
            spec,
            value,
            default_text,
        });
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.flags.iter().position(|f| {
            f.spec
                .names
                .iter()
                .any(|n| n.trim_start_matches('#') == name)
        })
    }

    /// The value of the flag that has the name `first` (e.g. `"-json"`).
    pub fn get(&self, first: &str) -> Option<&Value> {
        self.flags
            .iter()
            .find(|f| f.spec.names.contains(&first))
            .map(|f| &f.value)
    }

    /// Boolean value of the flag whose first name is `first` (false if absent).
    pub(crate) fn bool(&self, first: &str) -> bool {
        matches!(self.get(first), Some(Value::Bool(true)))
    }

    /// String value of the flag whose first name is `first` ("" if absent).
    pub(crate) fn str(&self, first: &str) -> String {
        match self.get(first) {
            Some(Value::Str(s)) => s.clone(),
            _ => String::new(),
        }
    }

    /// List value of the flag whose first name is `first`.
    pub(crate) fn list(&self, first: &str) -> Vec<String> {
        match self.get(first) {
            Some(Value::List(l)) => l.clone(),
            _ => Vec::new(),
        }
    }

    /// The declarations of the registered flags, in registration order.
    pub(crate) fn specs(&self) -> impl Iterator<Item = &FlagSpec> {
        self.flags.iter().map(|f| &f.spec)
    }

    /// Whether a flag with first name `first` was given on the command line.
    pub(crate) fn was_set(&self, first: &str) -> bool {
        self.set.iter().any(|s| s == first)
    }

    fn failf(&self, err: &mut dyn Write, msg: String) -> ParseError {
        let _ = writeln!(err, "{msg}");
        if self.argv0 == self.name {
            let _ = writeln!(err, "See '{} --help'.", self.argv0);
        } else {
            let _ = writeln!(err, "See '{} {} --help'.", self.argv0, self.name);
        }
        ParseError::Failed(msg)
    }

    /// Parses `arguments`; flags stop at the first non-flag or `--`. `usage` is called when
    /// help is requested with an unregistered help flag. Diagnostics go to `err`.
    pub fn parse(
        &mut self,
        arguments: &[String],
        err: &mut dyn Write,
        usage: &mut dyn FnMut(&FlagSet),
    ) -> Result<(), ParseError> {
        self.args = arguments.to_vec();
        loop {
            match self.parse_one(err, usage) {
                Step::Seen => continue,
                Step::Done => return Ok(()),
                Step::Err(e) => return Err(e),
                Step::Retry(name) => {
                    if name.chars().count() > 1 {
                        let mut failure = None;
                        for letter in name.chars() {
                            self.args.insert(0, format!("-{letter}"));
                            match self.parse_one(err, usage) {
                                Step::Seen => continue,
                                _ => {
                                    failure = Some(self.failf(
                                        err,
                                        format!("flag provided but not defined: -{name}"),
                                    ));
                                    break;
                                }
                            }
                        }
                        if let Some(f) = failure {
                            return Err(f);
                        }
                    } else {
                        return Err(
                            self.failf(err, format!("flag provided but not defined: -{name}"))
                        );
                    }
                }
            }
        }
    }

    fn parse_one(&mut self, err: &mut dyn Write, usage: &mut dyn FnMut(&FlagSet)) -> Step {
        let Some(s) = self.args.first().cloned() else {
            return Step::Done;
        };
        if s.len() < 2 || !s.starts_with('-') {
            return Step::Done;
        }
        if s == "--" {
            self.args.remove(0);
            return Step::Done;
        }
        let mut name = s[1..].to_string();
        if name.starts_with('=') {
            return Step::Err(self.failf(err, format!("bad flag syntax: {s}")));
        }
        self.args.remove(0);
        let mut value = None;
        if let Some(i) = name.find('=') {
            value = Some(trim_quotes(&name[i + 1..]).to_string());
            name.truncate(i);
        }
        let Some(idx) = self.find(&name) else {
            if name == "-help" || name == "help" || name == "h" {
                usage(self);
                return Step::Err(ParseError::Help);
            }
            if name.starts_with('-') {
                return Step::Err(
                    self.failf(err, format!("flag provided but not defined: -{name}")),
                );
            }
            return Step::Retry(name);
        };
        let kind = self.flags[idx].spec.kind;
        match kind {
            Kind::Bool => {
                let b = match value {
                    None => true,
                    Some(v) => match parse_bool(&v) {
                        Some(b) => b,
                        None => {
                            return Step::Err(self.failf(
                                err,
                                format!(
                                    "invalid boolean value {} for  -{name}: strconv.ParseBool: parsing {}: invalid syntax",
                                    go_quote(&v),
                                    go_quote(&v)
                                ),
                            ));
                        }
                    },
                };
                self.flags[idx].value = Value::Bool(b);
            }
            Kind::Str | Kind::List => {
                let v = match value {
                    Some(v) => v,
                    None if !self.args.is_empty() => self.args.remove(0),
                    None => {
                        return Step::Err(
                            self.failf(err, format!("flag needs an argument: -{name}")),
                        );
                    }
                };
                let flag = &mut self.flags[idx];
                if kind == Kind::Str {
                    flag.value = Value::Str(v);
                } else if let Value::List(l) = &mut flag.value {
                    l.push(v);
                }
            }
        }
        let first = self.flags[idx].spec.names[0];
        self.set.push(first.to_string());
        // Deprecated names.
        let names = self.flags[idx].spec.names;
        if let Some(i) = names.iter().position(|n| *n == format!("#{name}")) {
            match names[i..].iter().find(|n| !n.starts_with('#')) {
                Some(repl) => {
                    let _ = writeln!(
                        err,
                        "Warning: '-{name}' is deprecated, it will be replaced by '-{repl}' soon. See usage."
                    );
                }
                None => {
                    let _ = writeln!(
                        err,
                        "Warning: '-{name}' is deprecated, it will be removed soon. See usage."
                    );
                }
            }
        }
        Step::Seen
    }

    /// mflag's `PrintDefaults`: a blank line, then the aligned option list.
    pub fn defaults_text(&self, home: Option<&str>) -> String {
        let mut order: Vec<&Flag> = self.flags.iter().collect();
        order.sort_by(|a, b| a.spec.usage_order(&b.spec));
        let mut rows = Vec::new();
        for f in order {
            if !f.spec.is_listed() {
                continue;
            }
            let names = f.spec.shown_names().join(", ");
            let mut val = f.default_text.clone();
            if let Some(h) = home.filter(|h| !h.is_empty() && *h != "/")
                && val.starts_with(h)
            {
                val = format!("~{}", &val[h.len()..]);
            }
            let cell = if matches!(val.as_str(), "" | "false" | "0") {
                format!("  {names}")
            } else {
                format!("  {names}={val}")
            };
            rows.push((cell, f.spec.usage));
        }
        let mut out = String::new();
        if !self.flags.is_empty() {
            out.push('\n');
        }
        let width = rows
            .iter()
            .map(|(c, _)| c.chars().count() + 3)
            .max()
            .unwrap_or(0)
            .max(20);
        for (cell, usage) in rows {
            let mut lines = usage.split('\n');
            let first = lines.next().unwrap_or("");
            let pad = width - cell.chars().count();
            out.push_str(&cell);
            out.push_str(&" ".repeat(pad));
            out.push(' ');
            out.push_str(first);
            out.push('\n');
            for line in lines {
                out.push_str(&" ".repeat(width));
                out.push(' ');
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

enum Step {
    Seen,
    Done,
    Err(ParseError),
    Retry(String),
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn trim_quotes(s: &str) -> &str {
    let b = s.as_bytes();
    if b.len() >= 2
        && ((b[0] == b'"' && b[b.len() - 1] == b'"') || (b[0] == b'\'' && b[b.len() - 1] == b'\''))
    {
        return &s[1..s.len() - 1];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: FlagSpec = flag(&["-json", "j"], Kind::Bool, "Prefer JSON output");
    const QUICK: FlagSpec = flag(&["-quick", "q"], Kind::Bool, "Just the IDs");
    const NAME: FlagSpec = flag(&["-name", "n"], Kind::List, "Layer name");
    const ID: FlagSpec = flag(&["-id", "i"], Kind::Str, "Layer ID");

    fn set() -> FlagSet {
        let mut fs = FlagSet::new("layers", "/bin/cs");
        fs.add(JSON, Value::Bool(false));
        fs.add(QUICK, Value::Bool(false));
        fs.add(NAME, Value::List(vec![]));
        fs.add(ID, Value::Str(String::new()));
        fs
    }

    fn parse(args: &[&str]) -> (FlagSet, Result<(), ParseError>, String) {
        let mut fs = set();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut err = Vec::new();
        let r = fs.parse(&args, &mut err, &mut |_| {});
        (fs, r, String::from_utf8(err).unwrap())
    }

    #[test]
    fn forms() {
        let (fs, r, _) = parse(&[
            "-jq",
            "--id=\"abc\"",
            "-n",
            "a",
            "--name='b'",
            "pos",
            "--json",
        ]);
        assert_eq!(r, Ok(()));
        assert!(fs.bool("-json") && fs.bool("-quick"));
        assert_eq!(fs.str("-id"), "abc");
        assert_eq!(fs.list("-name"), vec!["a", "b"]);
        assert_eq!(fs.args, vec!["pos", "--json"]);
    }

    #[test]
    fn bools_and_last_wins() {
        let (fs, _, _) = parse(&["--json", "--json=false", "--id", "x", "--id", "y"]);
        assert!(!fs.bool("-json"));
        assert_eq!(fs.str("-id"), "y");
        let (fs, _, _) = parse(&["--json", "false"]);
        assert!(fs.bool("-json"));
        assert_eq!(fs.args, vec!["false"]);
        let (_, r, e) = parse(&["--json=x"]);
        assert!(matches!(r, Err(ParseError::Failed(_))));
        assert_eq!(
            e,
            "invalid boolean value \"x\" for  --json: strconv.ParseBool: parsing \"x\": invalid syntax\nSee '/bin/cs layers --help'.\n"
        );
    }

    #[test]
    fn errors() {
        let (_, _, e) = parse(&["--bogus"]);
        assert_eq!(
            e,
            "flag provided but not defined: --bogus\nSee '/bin/cs layers --help'.\n"
        );
        let (_, _, e) = parse(&["-jx"]);
        assert_eq!(
            e,
            "flag provided but not defined: -jx\nSee '/bin/cs layers --help'.\n"
        );
        let (_, _, e) = parse(&["--id"]);
        assert_eq!(
            e,
            "flag needs an argument: --id\nSee '/bin/cs layers --help'.\n"
        );
        let (_, r, _) = parse(&["-h"]);
        assert_eq!(r, Err(ParseError::Help));
        let (fs, r, _) = parse(&["--", "--json"]);
        assert_eq!(r, Ok(()));
        assert_eq!(fs.args, vec!["--json"]);
        let (fs, _, _) = parse(&["-", "--json"]);
        assert_eq!(fs.args, vec!["-", "--json"]);
    }

    #[test]
    fn defaults_layout() {
        let mut fs = set();
        fs.add(
            flag(&["-graph", "g"], Kind::Str, "Root of the storage tree"),
            Value::Str("/R/root".into()),
        );
        let text = fs.defaults_text(None);
        assert_eq!(
            text,
            "\n  --graph, -g=/R/root    Root of the storage tree\n  --id, -i               Layer ID\n  --json, -j             Prefer JSON output\n  --name, -n=[]          Layer name\n  --quick, -q            Just the IDs\n"
        );
    }
}
