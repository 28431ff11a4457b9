//! Fuzz targets for every parser of the project that takes outside input.
//!
//! Each [`Target`] is a plain function over a byte string: it feeds the bytes to one parser
//! and checks an oracle beyond "no panic" where one exists (a round trip, agreement between
//! two ways of reading, a fence around a scratch root). The targets are run three ways:
//!
//! * by libFuzzer, coverage-guided: `cargo xtask fuzz [TARGET] [--time S]` builds the
//!   `storage-fuzz` binary (feature `libfuzzer`) with the sanitizer-coverage passes of the
//!   stable compiler in its own target directory (`target/fuzz`) and runs each target on its
//!   committed seed corpus (`fuzz/corpus/<target>/`);
//! * by `cargo test -p storage-fuzz`, which replays every committed corpus file (seeds and
//!   the inputs of crashes found, kept as regressions) through its target;
//! * by hand: [`find`] a target and call it.
//!
//! ```
//! use storage_fuzz::{Scratch, TARGETS, find};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut scratch = Scratch::new(dir.path());
//! assert!(TARGETS.len() >= 9);
//! let t = find("records").unwrap();
//! // Panics (the fuzzer's crash) if an oracle fails; bad input itself is fine.
//! (t.run)(&mut scratch, br#"[{"id":"a","names":["x"]}]"#);
//! (t.run)(&mut scratch, b"[{\"id\":");
//! ```
#![deny(missing_docs)]

mod fence;
mod targets;

use std::path::{Path, PathBuf};

pub use fence::Fence;

/// Where `store_load` writes the NUL-separated parts of its input (layers, images,
/// containers, mountpoints), relative to its root.
pub const STORE_FILES: [&str; 4] = targets::STORE_FILES;

/// The files (name, content) of the directory `tarsplit_reassemble` reassembles from.
pub const REASSEMBLE_TREE: &[(&str, &[u8])] = targets::TREE;

/// One fuzz target.
#[derive(Clone, Copy)]
pub struct Target {
    /// Name (the corpus directory and the `cargo xtask fuzz` argument).
    pub name: &'static str,
    /// What it feeds and what it checks (one line).
    pub about: &'static str,
    /// libFuzzer's `-max_len` for it.
    pub max_len: usize,
    /// Runs one input; panics when an oracle fails.
    pub run: fn(&mut Scratch, &[u8]),
}

/// Every target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "tar_reader",
        about: "storage-tarsplit's TarReader; whole-buffer and short reads must agree, \
                content lengths match the headers",
        max_len: 16 * 1024,
        run: targets::tar_reader,
    },
    Target {
        name: "tarsplit_roundtrip",
        about: "tar-split Disassembler then reassembly from the members' contents: \
                pass-through and reassembled bytes equal the input",
        max_len: 16 * 1024,
        run: targets::tarsplit_roundtrip,
    },
    Target {
        name: "tarsplit_reassemble",
        about: "hostile tar-split JSON reassembled from a directory (DirFileGetter): \
                byte counts agree, nothing outside the root is opened",
        max_len: 8 * 1024,
        run: targets::tarsplit_reassemble,
    },
    Target {
        name: "decompress",
        about: "storage-archive's compression detection and decompression pipeline: \
                detection, sizes and digests agree with the bytes",
        max_len: 8 * 1024,
        run: targets::decompress,
    },
    Target {
        name: "unpack",
        about: "storage-archive's unpack into a scratch root (first byte: options): nothing \
                created, changed or opened outside the root",
        max_len: 16 * 1024,
        run: targets::unpack,
    },
    Target {
        name: "records",
        about: "layers/images/containers/mountpoints JSON loaders: what loads saves and \
                loads back to the same bytes",
        max_len: 4 * 1024,
        run: targets::records,
    },
    Target {
        name: "store_load",
        about: "the stores' loading of the four record files (NUL-separated) on a vfs store: \
                a second open lists what the first did, nothing outside the root is touched",
        max_len: 8 * 1024,
        run: targets::store_load,
    },
    Target {
        name: "storage_conf",
        about: "storage.conf as root and rootless: loads or fails with an error; loaded \
                options are complete and print as JSON",
        max_len: 4 * 1024,
        run: targets::storage_conf,
    },
    Target {
        name: "cli_flags",
        about: "the CLI's two mflag passes over NUL-separated arguments: positional \
                arguments are a suffix of the input, only registered flags are set",
        max_len: 1024,
        run: targets::cli_flags,
    },
];

/// The target called `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Where the targets that touch the file system work: one directory per target (created on
/// first use) under a base directory, with its [`Fence`].
pub struct Scratch {
    base: PathBuf,
    fences: Vec<(&'static str, Fence)>,
}

impl Scratch {
    /// Scratch directories under `base` (created when needed; left in place).
    pub fn new(base: &Path) -> Scratch {
        Scratch {
            base: base.to_path_buf(),
            fences: Vec::new(),
        }
    }

    /// The fenced scratch area of `name`, set up on first use.
    ///
    /// # Panics
    /// When the scratch area cannot be made (the fuzzer cannot run then).
    pub fn fence(&mut self, name: &'static str) -> &mut Fence {
        let i = match self.fences.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None => {
                let dir = self.base.join(format!("{name}-{}", std::process::id()));
                let fence = Fence::new(&dir)
                    .unwrap_or_else(|e| panic!("setting up {}: {e}", dir.display()));
                self.fences.push((name, fence));
                self.fences.len() - 1
            }
        };
        &mut self.fences[i].1
    }
}
