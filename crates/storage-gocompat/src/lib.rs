//! Go's behaviours that containers/storage's outputs and checks depend on, in one place.
//!
//! containers-storage-rs must print what Go's containers/storage prints and accept what it
//! accepts. The pieces of Go's standard library that decide those bytes live here, each a
//! small module named after the Go package it follows, with tests against Go's own outputs:
//!
//! - [`strconv`]: `strconv.Quote` (the `%q` verb) of strings and raw bytes, with Go's
//!   `IsPrint` table;
//! - [`syscall`]: the `syscall.Errno` texts (`no such file or directory`) and Go's
//!   wording of an I/O error (`open /x: permission denied`);
//! - [`json`]: `encoding/json`'s string escaping (`<`, `>`, `&`, U+2028, U+2029, controls);
//! - [`path`]: `path.Clean`, `path.Join` (and so `filepath.Join` on Unix) on bytes and
//!   strings;
//! - [`date`]: proleptic Gregorian civil dates from and to days since the Unix epoch (what
//!   Go's `time` package formats);
//! - [`validate`]: generated IDs (64 lower-case hex digits) and single path components;
//! - [`mountinfo`]: the octal escapes of `/proc/self/mountinfo` fields, decoded as Go's
//!   `mountinfo` package does.
//!
//! It depends on nothing (not even on the other crates of this workspace), so every crate can
//! use it; a Go behaviour needed in two places is taken from here, never copied.
//!
//! ```
//! use storage_gocompat::{json, path, strconv, syscall};
//!
//! assert_eq!(strconv::quote("tab\there"), r#""tab\there""#);
//! assert_eq!(syscall::errno_text(2), "no such file or directory");
//! assert_eq!(path::clean_str("a//b/../c/"), "a/c");
//! assert_eq!(json::string("<&>"), r#""\u003c\u0026\u003e""#);
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod date;
mod errno_table;
pub mod json;
pub mod mountinfo;
pub mod path;
mod print_table;
pub mod strconv;
pub mod syscall;
pub mod validate;
