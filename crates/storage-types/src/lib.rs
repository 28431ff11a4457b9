//! IDs, digests, ID maps, errors and the Go-compatible JSON records of containers/storage
//!
//! (Under construction.)
#![deny(missing_docs)]
