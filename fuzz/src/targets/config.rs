//! `storage.conf`.

use storage_config::{Environment, load_options};

use crate::Scratch;

/// `storage.conf` loaded as the system file, as root and as a rootless user (whose own file
/// is absent): the load succeeds with a graph root and a run root whose options print as
/// valid JSON, or fails with an error that says something.
pub(crate) fn storage_conf(scratch: &mut Scratch, data: &[u8]) {
    let fence = scratch.fence("storage_conf");
    let dir = fence.root().to_path_buf();
    let conf = dir.join("storage.conf");
    // A new file each time: ext4 flushes a file truncated and rewritten when it is closed.
    let _ = std::fs::remove_file(&conf);
    std::fs::write(&conf, data).unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
    let base = Environment::empty().with_config_files(&conf, &dir.join("absent.conf"));
    let rootless = base
        .clone()
        .with_rootless_uid(1000)
        .with_var("HOME", &dir.join("home").to_string_lossy())
        .with_var("XDG_RUNTIME_DIR", &dir.join("run").to_string_lossy());
    for env in [base, rootless] {
        match load_options(&env) {
            Ok((opts, _warnings)) => {
                assert!(!opts.graph_root.as_os_str().is_empty(), "no graph root");
                assert!(!opts.run_root.as_os_str().is_empty(), "no run root");
                let json = opts.to_go_json();
                if let Err(e) = serde_json::from_str::<serde_json::Value>(&json) {
                    panic!("options print as invalid JSON ({e}): {json}");
                }
            }
            Err(e) => assert!(!e.to_string().is_empty(), "an empty error"),
        }
    }
}
