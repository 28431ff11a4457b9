//! The drivers' direct kernel interfaces. Every `unsafe` block of the crate is in one of
//! these modules (the rest of the crate is checked by `#![deny(unsafe_code)]`), each
//! with its SAFETY comment; the logic that uses them lives with the drivers.
//!
//! * [`mount`]: overlay mounts (classic and new API), unmounts, `statfs`, `statx`.
//! * [`idmap`]: user namespaces and idmapped mounts (mount-time ID shifting).
//! * [`quota`]: XFS project quota ioctls and `quotactl`.
//! * [`btrfs`]: btrfs subvolume, snapshot and quota-group ioctls.

#[cfg(feature = "btrfs")]
pub(crate) mod btrfs;
#[cfg(feature = "overlay")]
pub(crate) mod idmap;
pub(crate) mod mount;
#[cfg(feature = "overlay")]
pub(crate) mod quota;
