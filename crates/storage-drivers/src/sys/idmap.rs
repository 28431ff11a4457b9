//! Idmapped mounts (Go's `pkg/idmap`): a user namespace carrying a layer's maps, and
//! `open_tree` + `mount_setattr(MOUNT_ATTR_IDMAP)` + `move_mount` to attach an
//! ID-shifted view of a directory.
//!
//! The user namespace belongs to a short-lived forked child that does nothing but
//! `unshare(CLONE_NEWUSER)` and wait; its `/proc/<pid>/ns/user` is kept open and the
//! child is reaped at once.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use rustix::fs::CWD;
use rustix::mount::{MoveMountFlags, OpenTreeFlags};
use storage_types::IdMap;

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

/// A user namespace whose maps are `uid_map`/`gid_map` (container → host).
pub(crate) fn user_namespace(uid_map: &[IdMap], gid_map: &[IdMap]) -> std::io::Result<OwnedFd> {
    let (parent_end, child_end) = UnixStream::pair()?;
    let child_fd = child_end.as_raw_fd();
    // SAFETY: after fork the child of this multithreaded process only makes
    // async-signal-safe system calls (unshare, write, read, _exit) on memory that was
    // set up before the fork; it never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; the byte buffers live on this stack frame.
        unsafe {
            let ok: u8 = u8::from(libc::unshare(libc::CLONE_NEWUSER) == 0);
            libc::write(child_fd, (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            libc::read(child_fd, (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    drop(child_end);
    let result = (|| {
        let mut parent_end = &parent_end;
        let mut ok = [0u8; 1];
        parent_end.read_exact(&mut ok)?;
        if ok[0] != 1 {
            return Err(std::io::Error::other("unshare(CLONE_NEWUSER) failed"));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), map_text(uid_map))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), map_text(gid_map))?;
        let fd = rustix::fs::open(
            format!("/proc/{pid}/ns/user"),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(fd)
    })();
    let _ = (&parent_end).write_all(&[0]);
    drop(parent_end);
    let mut status = 0;
    // SAFETY: `pid` is our own child; `status` is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    result
}

/// Attaches an ID-mapped view of `src` at `target` (non-recursive).
pub(crate) fn idmapped_mount(src: &Path, target: &Path, userns: &OwnedFd) -> std::io::Result<()> {
    let tree = rustix::mount::open_tree(
        CWD,
        src,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `tree` is an open mount fd, the path is a NUL-terminated empty string,
    // and `attr` is a valid `struct mount_attr` whose size is passed along.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    rustix::mount::move_mount(
        &tree,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_and_idmapped_view() {
        if !rustix::process::geteuid().is_root() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "needs root in CI"
            );
            eprintln!("SKIPPING: idmapped mounts need root");
            return;
        }
        let map = |host_id| IdMap {
            container_id: 0,
            host_id,
            size: 65536,
        };
        let ns = user_namespace(&[map(100_000)], &[map(200_000)]).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let dst = tmp.path().join("dst");
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
        std::os::unix::fs::lchown(src.join("f"), Some(0), Some(0)).unwrap();
        idmapped_mount(&src, &dst, &ns).unwrap();
        let md = std::fs::metadata(dst.join("f"));
        let _ = rustix::mount::unmount(&dst, rustix::mount::UnmountFlags::DETACH);
        let md = md.unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((md.uid(), md.gid()), (100_000, 200_000));
    }
}
