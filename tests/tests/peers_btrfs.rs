//! Real-peer interop on the btrfs driver (loop-mounted btrfs, root only): an image skopeo
//! writes read and mounted by us; our image mounted by podman and Go, exported by skopeo.

use std::ffi::OsStr;
use std::path::Path;

use storage_tests::oci::{OciImage, assert_rootfs, busybox_available, sample_layers};
use storage_tests::peers::{
    LoopFs, Unmounter, first_line, import_image, ours_reads_pulled_image, podman, skopeo_copy,
    skopeo_exports_same_layers, storage_ref,
};
use storage_tests::{Cs, go_cs, ok, peer, require};

#[test]
fn skopeo_writes_btrfs_ours_reads() {
    if !require(peer("skopeo").is_some(), "skopeo") {
        return;
    }
    let cs = Cs::new("btrfs");
    let Some(_fs) = LoopFs::new("mkfs.btrfs", 512, &cs.graph) else {
        return;
    };
    let _g = Unmounter::new(&cs, false);
    let bb = busybox_available();
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(bb));
    let name = "localhost/pulled-btrfs:v1";
    ok(&skopeo_copy(&img.reference(), &storage_ref(&cs, name)));
    ours_reads_pulled_image(&cs, &img, name, bb);
}

#[test]
fn our_btrfs_image_read_by_podman_go_skopeo() {
    if !require(peer("podman").is_some(), "podman")
        || !require(peer("skopeo").is_some(), "skopeo")
        || !require(go_cs().is_some(), "Debian's Go containers-storage")
    {
        return;
    }
    let cs = Cs::new("btrfs");
    let Some(_fs) = LoopFs::new("mkfs.btrfs", 512, &cs.graph) else {
        return;
    };
    let _g = Unmounter::new(&cs, true);
    let bb = busybox_available();
    let img = OciImage::write(&cs.dir.path().join("oci"), "v1", sample_layers(bb));
    let name = "localhost/ours-btrfs:v1";
    let run = |a: &[&OsStr]| cs.ours(a);
    import_image(&run, &img, name);

    let mp = first_line(&ok(&podman(&cs, &["image", "mount", name])));
    assert_rootfs(Path::new(&mp), bb, "podman image mount of our btrfs image");
    ok(&podman(&cs, &["image", "unmount", name]));

    let cid = first_line(&ok(&cs.go(&["create-container", "-n", "goctr", name])));
    let mp = first_line(&ok(&cs.go(&["mount", &cid])));
    assert_rootfs(
        Path::new(&mp),
        bb,
        "Go's mount of a container of our btrfs image",
    );
    ok(&cs.go(&["unmount", &cid]));
    let mp = first_line(&ok(&cs.ours(&["mount", &cid])));
    assert_rootfs(Path::new(&mp), bb, "our mount of Go's btrfs container");
    ok(&cs.ours(&["unmount", &cid]));
    ok(&cs.ours(&["delete-container", &cid]));

    skopeo_exports_same_layers(&cs, name, &img);
}
