//! The CLI's flag parser (Go's mflag rules), both passes.

use storage_cli::commands::COMMANDS;
use storage_cli::flags::{FlagSet, ParseError};
use storage_cli::{Globals, command_flag_set, global_flag_set, read_globals};

use crate::Scratch;

/// Parses `args` with `fs`: `None` when parsing stopped (help or an error, with a message),
/// else the positional arguments left, a suffix of `args`; only registered flags are set.
fn parse(fs: &mut FlagSet, args: &[String]) -> Option<()> {
    let mut diagnostics = Vec::new();
    let mut usage_shown = false;
    let r = fs.parse(args, &mut diagnostics, &mut |_| usage_shown = true);
    match r {
        Err(ParseError::Help) => {
            assert!(usage_shown, "help without usage");
            return None;
        }
        Err(ParseError::Failed(msg)) => {
            assert!(!msg.is_empty(), "an empty error");
            assert!(
                String::from_utf8_lossy(&diagnostics).contains(&msg),
                "the error was not shown"
            );
            return None;
        }
        Ok(()) => {}
    }
    assert!(
        fs.args.len() <= args.len() && args.ends_with(&fs.args),
        "positional arguments {:?} are not a suffix of {args:?}",
        fs.args
    );
    for name in &fs.set {
        assert!(fs.get(name).is_some(), "unregistered flag {name:?} set");
    }
    let _ = fs.defaults_text(Some("/root"));
    Some(())
}

/// The two passes of the command line (arguments separated by NUL bytes): the global
/// options, then the command's flags with the globals' values as defaults.
pub(crate) fn cli_flags(_: &mut Scratch, data: &[u8]) {
    let args: Vec<String> = data
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let argv0 = "containers-storage";
    let mut globals = Globals::default();
    let mut gfs = global_flag_set(argv0, &globals);
    if parse(&mut gfs, &args).is_none() {
        return;
    }
    read_globals(&gfs, &mut globals);
    let Some((name, rest)) = gfs.args.split_first() else {
        return;
    };
    let Some(cmd) = COMMANDS.iter().find(|c| c.names.contains(&name.as_str())) else {
        return;
    };
    let mut cfs = command_flag_set(cmd, argv0, &globals);
    if parse(&mut cfs, rest).is_some() {
        read_globals(&cfs, &mut globals);
    }
}
