//! QEMU's image locks, so that snapport and QEMU never change one image at once.
//!
//! QEMU (block/file-posix.c, `raw_apply_lock_bytes`) marks every image it opens with
//! shared open-file-description locks: byte `100 + p` for each permission `p` it uses
//! (0 consistent read, 1 write, ...) and byte `200 + p` for each it will not share. A
//! running VM, `qemu-img` and `qemu-nbd` all do. Any lock in `[100, 300)` held by another
//! open file description therefore means "in use", and holding bytes 101 (we write) and
//! 201 (nobody else may) keeps QEMU from opening the image for writing while snapport
//! changes its metadata, as QEMU keeps `qemu-img` out of a running VM's disk.

use std::fs::File;
use std::os::fd::AsRawFd;

const FIRST: i64 = 100;
const LAST: i64 = 300;
const PERM_WRITE: i64 = 1;

fn flock(kind: i16, start: i64, len: i64) -> libc::flock {
    // SAFETY: `flock` is plain old data; zero is a valid value for every field.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind;
    l.l_whence = libc::SEEK_SET as i16;
    l.l_start = start;
    l.l_len = len;
    l
}

/// Whether another open file description (another process, or another open of the same
/// file) holds a QEMU lock byte of `file`.
pub fn in_use(file: &File) -> std::io::Result<bool> {
    let mut l = flock(libc::F_WRLCK as i16, FIRST, LAST - FIRST);
    // SAFETY: a valid descriptor and a valid `flock` the call may fill in.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut l) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(l.l_type != libc::F_UNLCK as i16)
}

/// Takes the locks of a writer that shares writing with nobody. They last as long as
/// the file stays open.
pub fn lock_for_writing(file: &File) -> std::io::Result<()> {
    for byte in [FIRST + PERM_WRITE, 200 + PERM_WRITE] {
        let l = flock(libc::F_RDLCK as i16, byte, 1);
        // SAFETY: a valid descriptor and a valid `flock`.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &l) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
