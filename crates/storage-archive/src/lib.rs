//! Applying and producing layer tar diffs: compression, digests, whiteouts, ID
//! mapping, and extraction confined to the layer root with `openat2`.
//!
//! (Docs being written.)
#![deny(missing_docs)]

pub mod changes;
mod compression;
mod diff;
mod error;
pub mod export;
mod fsops;
mod gopath;
mod unpack;

pub use compression::{Compression, detect_compression};
pub use diff::{DiffReader, DiffStats, open_diff};
pub use error::Error;
pub use unpack::{UnpackOptions, WhiteoutFormat, unpack};
