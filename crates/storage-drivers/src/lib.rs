//! The graph driver trait and the vfs, overlay and btrfs drivers
//!
//! (Under construction.)
#![deny(missing_docs)]
