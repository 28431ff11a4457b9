//! Streaming tar reader with raw-byte accounting and the tar-split format (byte-exact layer reproduction)
//!
//! (Under construction.)
#![deny(missing_docs)]
