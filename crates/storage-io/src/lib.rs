//! Durable atomic file writes shared by every record store
//!
//! (Under construction.)
#![deny(missing_docs)]
