//! Driver auto-selection (`choose_driver`) like Go's `graphdriver.New("")`.

mod common;

use std::path::Path;
use storage_testsupport::unmount_all_under;

use common::{is_root, require};
use storage_drivers::{DriverOptions, choose_driver};

fn options(root: &Path) -> impl Fn(&str) -> DriverOptions + '_ {
    move |name: &str| common::options_for(root, name, vec![])
}

#[test]
fn prior_state_and_priority() {
    let tmp = tempfile::tempdir().unwrap();
    let graph = tmp.path().join("graph");
    std::fs::create_dir_all(graph.join("vfs")).unwrap();
    let opts = options(tmp.path());

    // An explicit list with prior vfs state: vfs wins.
    let (name, d) = choose_driver(&graph, &["overlay".into(), "vfs".into()], &opts).unwrap();
    assert_eq!((name.as_str(), d.name()), ("vfs", "vfs"));

    // Several prior drivers are an error naming them.
    std::fs::create_dir_all(graph.join("btrfs")).unwrap();
    let e = choose_driver(&graph, &["btrfs".into(), "vfs".into()], &opts)
        .err()
        .unwrap();
    assert_eq!(
        e.message(),
        format!(
            "{} contains several valid graphdrivers: btrfs, vfs; Please cleanup or explicitly choose storage driver (-s <DRIVER>)",
            graph.display()
        )
    );
    // Prior btrfs state on a non-btrfs file system: its prerequisite error surfaces.
    std::fs::remove_dir_all(graph.join("vfs")).unwrap();
    let e = choose_driver(&graph, &[], &opts).err().unwrap();
    assert!(
        e.message()
            .contains("prerequisites for driver not satisfied (wrong filesystem?)"),
        "{e}"
    );
    std::fs::remove_dir(graph.join("btrfs")).unwrap();

    // Without prior state, drivers that are not supported here are skipped.
    let (name, d) =
        choose_driver(&graph, &["zfs".into(), "btrfs".into(), "vfs".into()], &opts).unwrap();
    assert_eq!((name.as_str(), d.name()), ("vfs", "vfs"));
    assert!(
        !graph.join("btrfs").exists(),
        "a failed driver leaves no state"
    );
    std::fs::remove_dir_all(graph.join("vfs")).unwrap();
    let e = choose_driver(&graph, &["zfs".into()], &opts).err().unwrap();
    assert_eq!(e.message(), "no supported storage backend found");
}

#[test]
fn default_priority_prefers_overlay_and_ignores_prior_vfs() {
    if !require(is_root(), "overlay needs root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let graph = tmp.path().join("graph");
    std::fs::create_dir_all(graph.join("vfs")).unwrap();
    let opts = options(tmp.path());
    let r = choose_driver(&graph, &[], &opts);
    let result = r.map(|(name, d)| {
        let n = d.name().to_owned();
        let _ = d.cleanup();
        (name, n)
    });
    unmount_all_under(tmp.path());
    let (name, driver) = result.unwrap();
    assert_eq!((name.as_str(), driver.as_str()), ("overlay", "overlay"));
}
