//! Applying and producing layer tar diffs: compression, whiteouts, ID mapping, confinement with openat2.
//!
//! (Under construction.)
#![deny(missing_docs)]

pub mod changes;
pub mod export;
