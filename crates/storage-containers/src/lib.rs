//! The container store: containers.json, volatile containers and container big data
//!
//! (Under construction.)
#![deny(missing_docs)]
