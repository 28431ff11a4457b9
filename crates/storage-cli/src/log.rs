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
pub(crate) fn install() {
    let _ = tracing::subscriber::set_global_default(LogrusSubscriber);
}

/// Sets the level: debug on or off (off = error-level lines only).
pub(crate) fn set_debug(on: bool) {
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
pub(crate) fn debug(msg: &str) {
    emit("debug", &Level::DEBUG, msg);
}

/// Logs a warning line.
pub(crate) fn warn(msg: &str) {
    emit("warning", &Level::WARN, msg);
}

/// Logs an error line.
pub(crate) fn error(msg: &str) {
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
        containers_storage::gocompat::strconv::quote(msg)
    }
}

/// Current UTC time as `2006-01-02T15:04:05Z`.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    containers_storage::gocompat::date::rfc3339_utc(secs)
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
}
