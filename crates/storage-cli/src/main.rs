//! The `containers-storage` binary (all of it is in the `storage_cli` library).
#![forbid(unsafe_code)]

fn main() {
    storage_cli::main()
}
