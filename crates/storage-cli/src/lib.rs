//! The `containers-storage` command-line tool.
//!
//! (Under construction.)
#![deny(missing_docs)]

/// Runs the tool with the given argv and returns the exit status.
pub fn run(_args: Vec<std::ffi::OsString>) -> i32 {
    1
}
