//! The image store: images.json, names, digests and image big data
//!
//! (Under construction.)
#![deny(missing_docs)]
