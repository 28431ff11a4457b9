//! Lock files that interlock with Go containers/storage (fcntl OFD locks and last-writer tokens)
//!
//! (Under construction.)
#![deny(missing_docs)]
