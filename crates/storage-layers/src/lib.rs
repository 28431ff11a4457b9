//! The layer store: layers.json, mount counts, tar-split and layer big data
//!
//! (Under construction.)
#![deny(missing_docs)]
