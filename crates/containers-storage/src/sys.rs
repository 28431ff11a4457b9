//! The system calls of this crate that need `unsafe`: the `FIDEDUPERANGE` ioctl of
//! `dedup`. The rest of the crate is checked by `#![deny(unsafe_code)]`.

use std::fs::File;
use std::os::fd::AsRawFd;

/// `struct file_dedupe_range` with one `file_dedupe_range_info`.
#[repr(C)]
struct DedupeRange {
    src_offset: u64,
    src_length: u64,
    dest_count: u16,
    reserved1: u16,
    reserved2: u32,
    dest_fd: i64,
    dest_offset: u64,
    bytes_deduped: u64,
    status: i32,
    reserved: u32,
}

/// `_IOWR(0x94, 54, struct file_dedupe_range)` (24-byte header).
const FIDEDUPERANGE: libc::c_ulong = 0xC018_9436;

/// `FIDEDUPERANGE` of `len` bytes of `src` at `src_offset` onto `dst` at `dst_offset`: the
/// bytes the kernel reports deduplicated (its per-destination `status` is not looked at,
/// as in Go: a range that differs reports 0 bytes). Errors are those of the ioctl itself.
pub(crate) fn dedupe_range(
    src: &File,
    src_offset: u64,
    len: u64,
    dst: &File,
    dst_offset: u64,
) -> std::io::Result<u64> {
    let mut arg = DedupeRange {
        src_offset,
        src_length: len,
        dest_count: 1,
        reserved1: 0,
        reserved2: 0,
        dest_fd: i64::from(dst.as_raw_fd()),
        dest_offset: dst_offset,
        bytes_deduped: 0,
        status: 0,
        reserved: 0,
    };
    // SAFETY: `arg` is a properly laid out `file_dedupe_range` followed by exactly
    // `dest_count` (1) info records; both descriptors are open for the whole call and the
    // kernel only writes inside `arg`.
    let rc = unsafe {
        libc::ioctl(
            src.as_raw_fd(),
            FIDEDUPERANGE as _,
            &mut arg as *mut DedupeRange,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(arg.bytes_deduped)
}
