//! A layer with ID maps on top of an unmapped parent: owners are compared through each layer's
//! own maps, as Go does, so re-owned but unchanged files are not reported as changes.

use storage_tests::tars::sample_layer;
use storage_tests::{Cs, go_cs, ok, require};

#[test]
fn mapped_child_of_unmapped_parent_has_no_spurious_changes() {
    if !require(storage_tests::is_root(), "root (chown of the mapped copy)") {
        return;
    }
    let cs = Cs::new("vfs");
    let f = cs.dir.path().join("base.tar");
    std::fs::write(&f, sample_layer()).unwrap();
    let base = ok(&cs.ours(&["import-layer".as_ref(), "-f".as_ref(), f.as_os_str()]));
    let base = base.lines().next().unwrap().to_string();
    let map = "0:100000:65536";
    let child = ok(&cs.ours(&["create-layer", "--uidmap", map, "--gidmap", map, &base]));
    let child = child.lines().next().unwrap().to_string();
    // The copy is re-owned on disk...
    let owned = cs.graph.join("vfs/dir").join(&child).join("etc/owned");
    let meta = std::fs::symlink_metadata(&owned).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 101000);
    // ...but nothing changed in container terms.
    assert_eq!(ok(&cs.ours(&["changes", &child])).trim(), "");
    assert_eq!(ok(&cs.ours(&["diffsize", &child])).trim(), "0");
    // A real change is still seen, with its container-side owner in the diff.
    let mnt = ok(&cs.ours(&["mount", &child]));
    std::fs::write(std::path::Path::new(mnt.trim()).join("etc/new"), b"new\n").unwrap();
    ok(&cs.ours(&["unmount", &child]));
    let ours = ok(&cs.ours(&["changes", &child]));
    assert_eq!(ours.trim(), "Modify \"/etc\"\nAdd \"/etc/new\"");
    if require(go_cs().is_some(), "Debian's Go containers-storage") {
        assert_eq!(ok(&cs.go(&["changes", &child])), ours);
        assert_eq!(ok(&cs.go(&["diffsize", &child])).trim(), "4");
    }
    assert_eq!(ok(&cs.ours(&["diffsize", &child])).trim(), "4");
}
