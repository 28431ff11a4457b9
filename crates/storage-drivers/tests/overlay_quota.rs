//! `overlay.size` / `overlay.inodes`: XFS project quotas on container layers.
//!
//! Runs only where the kernel has XFS quota support: inside `cargo xtask vm-test`, which hands
//! the guest a scratch disk in `VMTEST_XFS_DEV` (this host's kernel is built without
//! `CONFIG_XFS_QUOTA`, so outside the VM the test says so and returns).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use storage_drivers::{CreateOpts, MountOpts, open_driver};

struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn sh(cmd: &mut Command) {
    let st = cmd.status().expect("spawn");
    assert!(st.success(), "{cmd:?} failed");
}

fn write_bytes(path: &Path, n: usize) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        f.write_all(&chunk[..k])?;
        left -= k;
    }
    f.sync_all()
}

#[test]
fn overlay_size_quota_limits_a_container_layer() {
    let Ok(dev) = std::env::var("VMTEST_XFS_DEV") else {
        eprintln!(
            "SKIPPED: XFS project quotas run only inside `cargo xtask vm-test` \
             (VMTEST_XFS_DEV unset; this host's kernel has no XFS quota support)"
        );
        return;
    };
    let mnt = tempfile::tempdir().unwrap();
    sh(Command::new("mkfs.xfs").args(["-f", "-q"]).arg(&dev));
    sh(Command::new("mount")
        .args(["-o", "prjquota"])
        .arg(&dev)
        .arg(mnt.path()));
    let _m = Mounted(mnt.path().to_path_buf());
    let graph = mnt.path().join("root");
    let run = mnt.path().join("run");
    std::fs::create_dir_all(&graph).unwrap();
    let opts = common::options_in(&graph, &run, "overlay", vec!["overlay.size=8M".into()]);
    let driver = open_driver("overlay", &opts).expect("overlay with a size quota on XFS");
    driver.create("base", None, &CreateOpts::default()).unwrap();
    driver
        .create_read_write("ctr", Some("base"), &CreateOpts::default())
        .unwrap();
    let merged = driver.get("ctr", &MountOpts::default()).unwrap();
    // Under the limit: fine. Over it: the project quota answers ENOSPC.
    write_bytes(&merged.join("small"), 4 << 20).expect("4 MiB fit in an 8 MiB quota");
    let err = write_bytes(&merged.join("big"), 16 << 20).expect_err("16 MiB exceed the quota");
    assert_eq!(err.raw_os_error(), Some(libc_enospc()), "{err}");
    driver.put("ctr").unwrap();
    driver.remove("ctr").unwrap();
    driver.remove("base").unwrap();
    driver.cleanup().unwrap();
}

fn libc_enospc() -> i32 {
    28
}
