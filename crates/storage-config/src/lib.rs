//! storage.conf parsing, search order, defaults and environment overrides
//!
//! (Under construction.)
#![deny(missing_docs)]
