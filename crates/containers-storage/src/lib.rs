//! The Store: wires the driver, layer, image and container stores together with Go's locking rules
//!
//! (Under construction.)
#![deny(missing_docs)]
