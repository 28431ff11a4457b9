//! The targets, one function each (see [`crate::TARGETS`]).

mod archive;
mod cli;
mod config;
mod records;
mod tar;

pub(crate) use archive::{decompress, unpack};
pub(crate) use cli::cli_flags;
pub(crate) use config::storage_conf;
pub(crate) use records::{STORE_FILES, records, store_load};
pub(crate) use tar::{TREE, tar_reader, tarsplit_reassemble, tarsplit_roundtrip};
