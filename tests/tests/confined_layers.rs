//! Reading a layer's files never reaches the host (issue 22, defect 1).
//!
//! `diff`: hostile layers reach a host file through a symbolic link where a regular file
//! was recorded (in a directory on the path, or in place of the file itself, or in an
//! overlay lower layer), or hold a FIFO or a device node there: `diff -u` must fail with an
//! error naming the entry and its output must hold no byte of the host file. `copy`: a path
//! named in a layer resolves inside the layer, reading and writing. The host file is a
//! marker with random content in the test's own temporary directory, outside the store. On
//! every driver (`<test>::vfs`, `::overlay`, `::btrfs` on a loop-mounted btrfs,
//! `::fuse_overlayfs`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use storage_tests::fs::DriverStore;
use storage_tests::tars::TarBuilder;
use storage_tests::{is_root, ok, require};
use storage_testsupport::per_driver;

per_driver!(symlinked_directory_on_the_path: vfs, overlay, btrfs, fuse_overlayfs);
per_driver!(symlink_in_place_of_a_recorded_file: vfs, overlay, btrfs, fuse_overlayfs);
per_driver!(fifo_or_device_in_place_of_a_recorded_file: vfs, overlay, btrfs, fuse_overlayfs);
per_driver!(copy_stays_in_the_layers: vfs, overlay, btrfs, fuse_overlayfs);

/// A host file with random content, outside the store.
struct Marker {
    path: PathBuf,
    content: Vec<u8>,
}

impl Marker {
    fn new(dir: &Path) -> Marker {
        let mut random = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .expect("/dev/urandom");
        let line = format!("HOST-MARKER-{}\n", hex(&random));
        let content = line.repeat(9600 / line.len()).into_bytes();
        let host = dir.join("host");
        std::fs::create_dir_all(&host).expect("mkdir host");
        let path = host.join("marker");
        std::fs::write(&path, &content).expect("write marker");
        Marker { path, content }
    }

    /// Whether `out` holds any of the marker (its random line, or any 64 bytes of it).
    fn leaked_into(&self, out: &[u8]) -> bool {
        let needle = &self.content[12..76];
        out.windows(needle.len()).any(|w| w == needle)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn import(cs: &DriverStore, tar: &[u8], parent: Option<&str>) -> String {
    let file = cs.dir.path().join(format!("layer-{}.tar", tar.len()));
    std::fs::write(&file, tar).expect("write tar");
    let f = file.to_string_lossy().into_owned();
    let mut args = vec!["import-layer", "-f", f.as_str()];
    if let Some(p) = parent {
        args.push(p);
    }
    ok(&cs.ours(&args)).trim().to_string()
}

/// The directory holding layer `id`'s own files.
fn layer_dir(cs: &DriverStore, id: &str) -> PathBuf {
    match cs.driver.as_str() {
        "vfs" => cs.graph.join("vfs/dir").join(id),
        "overlay" => cs.graph.join("overlay").join(id).join("diff"),
        "btrfs" => cs.graph.join("btrfs/subvolumes").join(id),
        other => panic!("no layer directory for {other}"),
    }
}

/// `diff -u ID` fails, names the entry and why, and its output holds nothing of the marker.
fn assert_diff_refuses(cs: &DriverStore, id: &str, marker: &Marker, entry: &str, why: &str) {
    // A reader blocked on a FIFO would hang: bounded (this measures nothing).
    let out = cs.ours_bounded(&["diff", "-u", id], Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !marker.leaked_into(&out.stdout),
        "{}: diff wrote the host file {} into its output (stderr: {stderr})",
        cs.driver,
        marker.path.display()
    );
    assert!(!out.status.success(), "{}: diff succeeded", cs.driver);
    assert!(
        stderr.contains(entry) && stderr.contains(why),
        "{}: the error names neither {entry:?} nor {why:?}: {stderr}",
        cs.driver
    );
}

fn store(driver: &str) -> Option<DriverStore> {
    if !require(
        is_root(),
        "root (layer files owned by others, device nodes)",
    ) {
        return None;
    }
    DriverStore::new(driver)
}

/// `rl -> /` and a recorded `rl/<host dir>/marker`: extraction resolves `rl` inside the
/// layer (so the file lands in the layer), a reader following `rl` reads the host's file.
fn symlinked_directory_on_the_path(driver: &str) {
    let Some(cs) = store(driver) else { return };
    let marker = Marker::new(cs.dir.path());
    let rel = marker
        .path
        .strip_prefix("/")
        .expect("absolute marker path")
        .to_string_lossy()
        .into_owned();
    let name = format!("rl/{rel}");
    let fake = vec![b'L'; marker.content.len()];
    let tar = TarBuilder::new()
        .symlink("rl", "/")
        .file(&name, 0o644, &fake)
        .finish();
    let id = import(&cs, &tar, None);
    assert_eq!(
        std::fs::read(layer_dir(&cs, &id).join(&rel)).expect("extracted inside the layer"),
        fake
    );
    assert_diff_refuses(
        &cs,
        &id,
        &marker,
        &name,
        "a directory on the path is a symbolic link (not followed in a layer)",
    );
}

/// A regular `x` recorded first, then a symlink `/x` to the host file (another recorded
/// name, the same file on disk); on overlay also a symlink in a lower layer where the
/// upper's recorded `x` went missing.
fn symlink_in_place_of_a_recorded_file(driver: &str) {
    let Some(cs) = store(driver) else { return };
    let marker = Marker::new(cs.dir.path());
    let target = marker.path.to_string_lossy().into_owned();
    let fake = vec![b'X'; marker.content.len()];
    let tar = TarBuilder::new()
        .file("x", 0o644, &fake)
        .symlink_raw("/x", &target)
        .finish();
    let id = import(&cs, &tar, None);
    assert!(
        layer_dir(&cs, &id).join("x").is_symlink(),
        "the later entry replaced the file"
    );
    assert_diff_refuses(
        &cs,
        &id,
        &marker,
        "/x",
        "is a symbolic link (not followed in a layer)",
    );
    if driver != "overlay" {
        return;
    }
    // Overlay reads a recorded file from the layer's own diff, then from each lower.
    let lower = import(&cs, &TarBuilder::new().symlink("y", &target).finish(), None);
    let upper = import(
        &cs,
        &TarBuilder::new().file("y", 0o644, &fake).finish(),
        Some(&lower),
    );
    std::fs::remove_file(layer_dir(&cs, &upper).join("y")).expect("remove the upper's y");
    assert_diff_refuses(
        &cs,
        &upper,
        &marker,
        "/y",
        "is a symbolic link (not followed in a layer)",
    );
}

/// A FIFO (a reader would block) and a device node (`/dev/null`'s numbers) put where a
/// regular file was recorded.
fn fifo_or_device_in_place_of_a_recorded_file(driver: &str) {
    let Some(cs) = store(driver) else { return };
    let marker = Marker::new(cs.dir.path());
    let content = vec![b'F'; 4096];
    let tar = TarBuilder::new()
        .file("fifo", 0o644, &content)
        .file("dev", 0o644, &content)
        .finish();
    let id = import(&cs, &tar, None);
    let dir = layer_dir(&cs, &id);
    for (name, node) in [
        ("fifo", rustix::fs::FileType::Fifo),
        ("dev", rustix::fs::FileType::CharacterDevice),
    ] {
        std::fs::remove_file(dir.join(name)).expect("remove the recorded file");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join(name),
            node,
            rustix::fs::Mode::from_raw_mode(0o644),
            rustix::fs::makedev(1, 3),
        )
        .expect("mknod");
    }
    assert_diff_refuses(&cs, &id, &marker, "/fifo", "is a FIFO, not a regular file");
    std::fs::remove_file(dir.join("fifo")).expect("remove the FIFO");
    std::fs::write(dir.join("fifo"), &content).expect("restore the file");
    assert_diff_refuses(
        &cs,
        &id,
        &marker,
        "/dev",
        "is a character device, not a regular file",
    );
}

/// `copy LAYER:/lnk/marker OUT` where `lnk` links to the marker's directory reads inside
/// the layer (nothing there: it fails), and `copy SRC LAYER:/lnk/new` does not write into
/// the host directory.
fn copy_stays_in_the_layers(driver: &str) {
    let Some(cs) = store(driver) else { return };
    let marker = Marker::new(cs.dir.path());
    let host_dir = marker.path.parent().expect("marker dir");
    let tar = TarBuilder::new()
        .symlink("lnk", &host_dir.to_string_lossy())
        .finish();
    let id = import(&cs, &tar, None);
    let out = cs.dir.path().join("copied-out");
    let got = cs.ours(&["copy", &format!("{id}:/lnk/marker"), &out.to_string_lossy()]);
    let copied = std::fs::read(&out).unwrap_or_default();
    assert!(
        !marker.leaked_into(&copied),
        "{}: copy read the host file through the layer's link",
        cs.driver
    );
    assert!(
        !got.status.success(),
        "{}: copy of a missing file succeeded",
        cs.driver
    );
    let src = cs.dir.path().join("payload");
    std::fs::write(&src, b"payload").expect("write payload");
    let _ = cs.ours(&["copy", &src.to_string_lossy(), &format!("{id}:/lnk/new")]);
    assert!(
        !host_dir.join("new").exists(),
        "{}: copy wrote into the host directory through the layer's link",
        cs.driver
    );
    assert_eq!(ok(&cs.ours(&["mounted", &id])), "", "nothing stays mounted");
}
