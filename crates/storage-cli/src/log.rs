//! Logging in logrus' text format on stderr: `time="…" level=debug msg="…"`.
//!
//! A tiny `tracing` subscriber, so library crates can log with `tracing::debug!` and friends;
//! the tool itself uses [`debug`], [`warn`] and [`error`].

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// 0 = error only, 1 = info and warnings too (logrus' default level, in effect until the
/// command line has been parsed), 2 = debug.
static VERBOSITY: AtomicU8 = AtomicU8::new(1);

/// Installs the subscriber (once per process). Without a call, library events are dropped.
pub fn install() {
    let _ = tracing::subscriber::set_global_default(LogrusSubscriber);
}

/// Sets the level: debug on or off (off = error-level lines only).
pub fn set_debug(on: bool) {
    VERBOSITY.store(if on { 2 } else { 0 }, Ordering::Relaxed);
}

fn level_enabled(level: &Level) -> bool {
    let v = VERBOSITY.load(Ordering::Relaxed);
    match *level {
        Level::ERROR => true,
        Level::WARN | Level::INFO => v >= 1,
        Level::DEBUG => v >= 2,
        Level::TRACE => false,
    }
}

/// Logs a debug line.
pub fn debug(msg: &str) {
    emit("debug", &Level::DEBUG, msg);
}

/// Logs a warning line.
pub fn warn(msg: &str) {
    emit("warning", &Level::WARN, msg);
}

/// Logs an error line.
pub fn error(msg: &str) {
    emit("error", &Level::ERROR, msg);
}

fn emit(name: &str, level: &Level, msg: &str) {
    if !level_enabled(level) {
        return;
    }
    let line = format!(
        "time=\"{}\" level={} msg={}\n",
        now_rfc3339(),
        name,
        quote(msg)
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// logrus quotes a value unless it only contains `[A-Za-z0-9-._/@^+]`.
fn quote(msg: &str) -> String {
    let plain = !msg.is_empty()
        && msg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if plain {
        msg.to_string()
    } else {
        go_quote(msg)
    }
}

/// Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Current UTC time as `2006-01-02T15:04:05Z`.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Howard Hinnant's days → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

struct LogrusSubscriber;

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            self.0.push_str(&format!(" {}={}", field.name(), value));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.push_str(&format!("{value:?}"));
        } else {
            self.0.push_str(&format!(" {}={:?}", field.name(), value));
        }
    }
}

impl Subscriber for LogrusSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        level_enabled(metadata.level())
    }
    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _span: &Id, _values: &Record<'_>) {}
    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut v = MessageVisitor(String::new());
        event.record(&mut v);
        let level = *event.metadata().level();
        let name = match level {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        emit(name, &level, &v.0);
    }
    fn enter(&self, _span: &Id) {}
    fn exit(&self, _span: &Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_like_logrus() {
        assert_eq!(quote("plain-text_1.0/x"), "plain-text_1.0/x");
        assert_eq!(quote("Root: /R"), "\"Root: /R\"");
        assert_eq!(quote("a \"b\"\n"), "\"a \\\"b\\\"\\n\"");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
