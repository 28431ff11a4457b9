//! `check`, `gc` and `dedup` (Go's `check.go`, `gc.go`, `dedup.go`).

use std::time::Duration;

use containers_storage::config::StoreOptions;
use containers_storage::{CheckOptions, DedupOptions, HashMethod, RepairOptions};

use super::{Ctx, JSON, err, out};
use crate::flags::{FlagSet, FlagSpec, Kind};

const fn flag(names: &'static [&'static str], kind: Kind, usage: &'static str) -> FlagSpec {
    FlagSpec { names, kind, usage }
}

/// Flags of `check`.
pub const CHECK_FLAGS: &[FlagSpec] = &[
    JSON,
    flag(
        &["-max", "m"],
        Kind::Str,
        "Maximum allowed age for unreferenced layers (default 24h)",
    ),
    flag(
        &["-repair", "r"],
        Kind::Bool,
        "Remove damaged images and layers",
    ),
    flag(&["-force", "f"], Kind::Bool, "Remove damaged containers"),
    flag(&["-quick", "q"], Kind::Bool, "Perform only quick checks"),
];

/// Flags of `gc`.
pub const GC_FLAGS: &[FlagSpec] = &[JSON];

/// Flags of `dedup`.
pub const DEDUP_FLAGS: &[FlagSpec] = &[
    flag(
        &["-hash-method"],
        Kind::Str,
        "Specify the hash function to use to detect identical files (default crc)",
    ),
    JSON,
];

/// Parses a Go `time.Duration` string (`24h`, `1h30m`, `90s`, `0`, `-1.5h`, `300ms`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest.get(..num_len)?.parse().ok()?;
        rest = rest.get(num_len..)?;
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest.get(..unit_len)?;
        rest = rest.get(unit_len..)?;
        let nanos = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * nanos;
    }
    // A negative maximum age makes every layer "old enough", like Go's time arithmetic.
    if neg {
        return Some(Duration::ZERO);
    }
    Some(Duration::from_nanos(total as u64))
}

/// Before the store is opened: `check` looks for record files that cannot be loaded (which
/// would make opening fail). Returns `Some(exit status)` when the command is done.
pub fn before_open(command: &str, flags: &FlagSet, opts: &StoreOptions) -> Option<i32> {
    if command != "check" {
        return None;
    }
    let resolved = containers_storage::resolve_options(opts, || {
        containers_storage::config::load_default_options()
            .map(|(o, _)| o)
            .map_err(|e| {
                containers_storage::types::Error::msg(
                    containers_storage::types::ErrorKind::InvalidInput,
                    e.to_string(),
                )
            })
    })
    .ok()?;
    let damaged = containers_storage::check_record_files(&resolved).ok()?;
    if damaged.is_empty() {
        return None;
    }
    let repair = flags.bool("-repair") || flags.bool("-force");
    if !repair {
        let mut text = String::new();
        for d in &damaged {
            text.push_str(&format!("file {}:\n {}\n", d.path.display(), d.error));
        }
        if flags.bool("-json") {
            let items: Vec<String> = damaged
                .iter()
                .map(|d| {
                    format!(
                        "{}:[{}]",
                        containers_storage::gocompat::json::string(&d.path.display().to_string()),
                        containers_storage::gocompat::json::string(&d.error)
                    )
                })
                .collect();
            let _ = out(&format!("{{\"Files\":{{{}}}}}\n", items.join(",")));
        } else {
            let _ = out(&text);
        }
        err(&format!(
            "{} damaged record files; the store cannot be opened until `check -r` salvages them\n",
            damaged.len()
        ));
        return Some(1);
    }
    match containers_storage::repair_record_files(&resolved) {
        Ok(done) => {
            for s in done {
                err(&format!("salvaged {}\n", s.describe()));
            }
            None
        }
        Err(e) => {
            err(&format!("{e}\n"));
            Some(1)
        }
    }
}

/// `check [-q] [-r] [-f] [-m DURATION]`.
pub fn check(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let max = ctx.flags.str("-max");
    let max_age = if max.is_empty() {
        None
    } else {
        Some(
            parse_go_duration(&max)
                .ok_or_else(|| format!("invalid value {max:?} for flag -max: parse error"))?,
        )
    };
    let force = ctx.flags.bool("-force");
    let repair = ctx.flags.bool("-repair") || force;
    let opts = CheckOptions {
        quick: ctx.flags.bool("-quick"),
        max_age,
    };
    let result = run_check(ctx, &opts, repair, force);
    // Go's check shuts the store down (forced) on the way out.
    let _ = ctx.store.shutdown(true);
    result
}

fn run_check(
    ctx: &mut Ctx<'_>,
    opts: &CheckOptions,
    repair: bool,
    force: bool,
) -> Result<i32, String> {
    let report = ctx.store.check(opts).map_err(|e| e.to_string())?;
    if ctx.json() {
        out(&report.to_go_json())?;
    } else {
        out(&report.to_text())?;
    }
    if !repair {
        if report.is_clean() {
            return Ok(0);
        }
        return Err(report.summary());
    }
    let errs = ctx.store.repair(
        &report,
        &RepairOptions {
            remove_containers: force,
        },
    );
    if let Some(first) = errs.first() {
        if ctx.json() {
            let items = vec!["{}"; errs.len()].join(",");
            out(&format!("[{items}]\n"))?;
        } else {
            let text: String = errs.iter().map(|e| format!("{e}\n")).collect();
            err(&text);
        }
        return Err(first.to_string());
    }
    if !report.ro_layers.is_empty()
        || !report.ro_images.is_empty()
        || (!force && !report.containers.is_empty())
    {
        if force {
            return Err(format!(
                "{} read-only layer errors, {} read-only image errors",
                report.ro_layers.len(),
                report.ro_images.len()
            ));
        }
        return Err(format!(
            "{} read-only layer errors, {} read-only image errors, {} container errors",
            report.ro_layers.len(),
            report.ro_images.len(),
            report.containers.len()
        ));
    }
    Ok(0)
}

/// `gc`.
pub fn gc(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let result = ctx.store.garbage_collect();
    let _ = ctx.store.shutdown(true);
    match (result, ctx.json()) {
        (Ok(()), true) => {
            out("\"\"\n")?;
            Ok(0)
        }
        (Ok(()), false) => Ok(0),
        (Err(e), true) => {
            out(&format!(
                "{}\n",
                containers_storage::gocompat::json::string(&e.to_string())
            ))?;
            Ok(1)
        }
        (Err(e), false) => Err(format!("gc: {e}")),
    }
}

/// `dedup [--hash-method crc|size|sha256]`.
pub fn dedup(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let method = ctx.flags.str("-hash-method");
    let method = if method.is_empty() {
        "crc".to_string()
    } else {
        method
    };
    let hash_method: HashMethod = method
        .parse()
        .map_err(|e: containers_storage::types::Error| e.to_string())?;
    match (ctx.store.dedup(&DedupOptions { hash_method }), ctx.json()) {
        (Ok(r), true) => {
            out(&format!("{{\"Deduped\":{}}}\n", r.deduped))?;
            Ok(0)
        }
        (Ok(r), false) => {
            out(&format!("Deduplicated {} bytes\n", r.deduped))?;
            Ok(0)
        }
        (Err(e), true) => {
            out(&format!(
                "{}\n",
                containers_storage::gocompat::json::string(&e.to_string())
            ))?;
            Ok(1)
        }
        (Err(e), false) => Err(format!("dedup: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("-1h"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("h"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("5d"), None);
    }
}
