//! `check`, `gc` and `dedup` (Go's `check.go`, `gc.go`, `dedup.go`).

use std::time::Duration;

use std::collections::BTreeMap;

use containers_storage::config::StoreOptions;
use containers_storage::gocompat::json;
use containers_storage::{CheckOptions, CheckReport, DedupOptions, HashMethod, RepairOptions};

use super::{Ctx, JSON, err, out};
use crate::flags::{FlagSet, FlagSpec, Kind, flag};

/// Flags of `check`.
pub(crate) const CHECK_FLAGS: &[FlagSpec] = &[
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
pub(crate) const GC_FLAGS: &[FlagSpec] = &[JSON];

/// Flags of `dedup`.
pub(crate) const DEDUP_FLAGS: &[FlagSpec] = &[
    flag(
        &["-hash-method"],
        Kind::Str,
        "Specify the hash function to use to detect identical files (default crc)",
    ),
    JSON,
];

/// Parses a Go `time.Duration` string (`24h`, `1h30m`, `90s`, `0`, `-1.5h`, `300ms`).
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
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
pub(crate) fn before_open(command: &str, flags: &FlagSet, opts: &StoreOptions) -> Option<i32> {
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
                        json::string(&d.path.display().to_string()),
                        json::string(&d.error)
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
pub(crate) fn check(ctx: &mut Ctx<'_>) -> Result<i32, String> {
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

/// Object ID → error messages: one section of a report.
type Findings = BTreeMap<String, Vec<String>>;

/// The sections of a report in Go's order, with the word Go's text names their objects by
/// and the key of Go's JSON.
fn sections(r: &CheckReport) -> [(&str, &str, &Findings); 5] {
    [
        ("layer", "Layers", &r.layers),
        ("read-only layer", "ROLayers", &r.ro_layers),
        ("image", "Images", &r.images),
        ("read-only image", "ROImages", &r.ro_images),
        ("container", "Containers", &r.containers),
    ]
}

/// The report as Go's CLI prints it: `layer ID:` then one ` error` line per finding, for
/// layers, read-only layers, images, read-only images and containers.
fn report_text(r: &CheckReport) -> String {
    let mut text = String::new();
    for (what, _, map) in sections(r) {
        for (id, errs) in map.iter().filter(|(_, errs)| !errs.is_empty()) {
            text.push_str(&format!("{what} {id}:\n"));
            for e in errs {
                text.push_str(&format!(" {e}\n"));
            }
        }
    }
    text
}

/// The report as Go's `json.Encoder` writes it (errors encode as `{}`), with a newline.
fn report_json(r: &CheckReport) -> String {
    let fields: Vec<String> = sections(r)
        .into_iter()
        .map(|(_, key, map)| {
            let items: Vec<String> = map
                .iter()
                .map(|(id, errs)| {
                    let list = if errs.is_empty() {
                        "null".to_string()
                    } else {
                        format!("[{}]", vec!["{}"; errs.len()].join(","))
                    };
                    format!("{}:{list}", json::string(id))
                })
                .collect();
            format!("\"{key}\":{{{}}}", items.join(","))
        })
        .collect();
    format!("{{{}}}\n", fields.join(","))
}

/// Go's error when a check found damage: counts of damaged objects per section.
fn report_summary(r: &CheckReport) -> String {
    format!(
        "{} layer errors, {} read-only layer errors, {} image errors, {} read-only image errors, {} container errors",
        r.layers.len(),
        r.ro_layers.len(),
        r.images.len(),
        r.ro_images.len(),
        r.containers.len()
    )
}

fn run_check(
    ctx: &mut Ctx<'_>,
    opts: &CheckOptions,
    repair: bool,
    force: bool,
) -> Result<i32, String> {
    let report = ctx.store.check(opts).map_err(|e| e.to_string())?;
    if ctx.json() {
        out(&report_json(&report))?;
    } else {
        out(&report_text(&report))?;
    }
    if !repair {
        if report.is_clean() {
            return Ok(0);
        }
        return Err(report_summary(&report));
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
pub(crate) fn gc(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let result = ctx.store.garbage_collect();
    let _ = ctx.store.shutdown(true);
    let shown = result.map(|()| ("\"\"\n".to_string(), String::new()));
    finish(ctx, "gc", shown)
}

/// `dedup [--hash-method crc|size|sha256]`.
pub(crate) fn dedup(ctx: &mut Ctx<'_>) -> Result<i32, String> {
    let method = ctx.flags.str("-hash-method");
    let method = if method.is_empty() {
        "crc".to_string()
    } else {
        method
    };
    let hash_method: HashMethod = method
        .parse()
        .map_err(|e: containers_storage::types::Error| e.to_string())?;
    let shown = ctx.store.dedup(&DedupOptions { hash_method }).map(|r| {
        (
            format!("{{\"Deduped\":{}}}\n", r.deduped),
            format!("Deduplicated {} bytes\n", r.deduped),
        )
    });
    finish(ctx, "dedup", shown)
}

/// The end of `gc` and `dedup`: on success the JSON or text output (`shown`); a failure
/// is, with `--json`, the message as a JSON string and exit status 1, else `command: error`.
fn finish(
    ctx: &Ctx<'_>,
    command: &str,
    shown: containers_storage::types::Result<(String, String)>,
) -> Result<i32, String> {
    match (shown, ctx.json()) {
        (Ok((json, _)), true) => out(&json).map(|()| 0),
        (Ok((_, text)), false) => out(&text).map(|()| 0),
        (Err(e), true) => out(&format!("{}\n", json::string(&e.to_string()))).map(|()| 1),
        (Err(e), false) => Err(format!("{command}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_text_and_json_follow_go() {
        let mut r = CheckReport::default();
        assert!(r.is_clean());
        assert_eq!(
            report_json(&r),
            "{\"Layers\":{},\"ROLayers\":{},\"Images\":{},\"ROImages\":{},\"Containers\":{}}\n"
        );
        assert_eq!(report_text(&r), "");
        r.layers.insert("L".into(), vec!["layer L: x".into()]);
        r.images
            .insert("I".into(), vec!["image I: x".into(), "image I: y".into()]);
        r.containers.insert("C".into(), vec![]);
        assert_eq!(
            report_text(&r),
            "layer L:\n layer L: x\nimage I:\n image I: x\n image I: y\n"
        );
        assert_eq!(
            report_json(&r),
            "{\"Layers\":{\"L\":[{}]},\"ROLayers\":{},\"Images\":{\"I\":[{},{}]},\
             \"ROImages\":{},\"Containers\":{\"C\":null}}\n"
        );
        assert_eq!(
            report_summary(&r),
            "1 layer errors, 0 read-only layer errors, 1 image errors, 0 read-only image errors, 1 container errors"
        );
    }

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
