//! Low-level I/O the engine needs: page-aligned buffers (this CPU's `rep movsb` is up to
//! 20x slower on buffers misaligned within a page), positional reads and in-kernel
//! copies, and the one way a file is read whole, bounded. Output files are
//! [`crate::output`]'s.

use crate::error::{Error, Result};
use crate::extent::Device;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

const PAGE: usize = 4096;

/// A zeroed, page-aligned heap buffer.
pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len.max(1), PAGE).expect("buffer layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len.max(1), PAGE).expect("buffer layout");
        // SAFETY: allocated in `new` with this same layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to len initialised (zeroed) bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// Fills `buf` from `offset` of `device`; the extent checks make a short read an I/O
/// error (the device shrank under us).
pub fn read_exact_at(device: &Device, buf: &mut [u8], offset: u64) -> Result<()> {
    device.file.read_exact_at(buf, offset).map_err(|e| {
        Error::io(
            format!("reading {} bytes at {offset} of {}", buf.len(), device.name),
            e,
        )
    })
}

/// Reads the whole of `path`, which must be a regular file of at most `cap` bytes: how
/// snapport reads every file it takes in whole (configuration, plugin components, VM
/// configs, records, keys). Opened non-blocking, so a FIFO put in its place is refused
/// instead of waiting for a writer; `/dev/zero` or a folder is refused by the type of
/// the descriptor opened, before a byte is read.
pub fn read_regular_file(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    read_regular(&mut file, cap)
}

/// Reads `file` from where it stands to its end, refusing anything but a regular file
/// (checked on the descriptor, so nothing can be swapped in between) and more than `cap`
/// bytes (at most `cap + 1` are read, whatever the file claims or grows to).
pub fn read_regular(file: &mut File, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    let meta = file.metadata()?;
    let t = meta.file_type();
    if !t.is_file() {
        let what = if t.is_dir() {
            "a folder"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "something else"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file but {what}"),
        ));
    }
    let too_big = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the {cap} bytes allowed for it"),
        )
    };
    if meta.len() > cap {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Copies `len` bytes from `device` at `from` to `out` at `to` inside the kernel
/// (`copy_file_range`), falling back to read/write where the kernel cannot.
pub fn copy_range(device: &Device, from: u64, out: &File, to: u64, len: u64) -> Result<()> {
    if !try_copy_range(device, from, out, to, len)? {
        copy_by_buffer(device, from, out, to, len)?;
    }
    Ok(())
}

/// As [`copy_range`], but where the kernel refuses to copy between these two files at
/// all (EXDEV across file systems such as tmpfs and ext4, EINVAL, ENOSYS, EOPNOTSUPP),
/// answers `Ok(false)` with nothing copied: a caller that already holds the bytes writes
/// them itself instead of reading them again.
pub fn try_copy_range(
    device: &Device,
    mut from: u64,
    out: &File,
    mut to: u64,
    mut len: u64,
) -> Result<bool> {
    let fail = |e, from: u64, len: u64| {
        Error::io(
            format!("copying {len} bytes at {from} of {}", device.name),
            e,
        )
    };
    let mut copied = false;
    while len > 0 {
        let mut off_in = from as libc::loff_t;
        let mut off_out = to as libc::loff_t;
        let want = len.min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the duration; offsets are passed by pointer.
        let n = unsafe {
            libc::copy_file_range(
                device.file.as_raw_fd(),
                &mut off_in,
                out.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                    if copied {
                        // Refused part way (not seen on Linux, which decides up front):
                        // the rest the slow way.
                        copy_by_buffer(device, from, out, to, len)?;
                        Ok(true)
                    } else {
                        Ok(false)
                    }
                }
                _ => Err(fail(err, from, len)),
            };
        }
        if n == 0 {
            return Err(fail(
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                from,
                len,
            ));
        }
        copied = true;
        from += n as u64;
        to += n as u64;
        len -= n as u64;
    }
    Ok(true)
}

/// Whether the kernel copies from `device` into `out` at all (`copy_file_range`): asked
/// with a zero-length copy, which the kernel refuses between file systems (EXDEV) before
/// it looks at the length. An export decides its data path and worker count by it.
pub fn kernel_copies(device: &Device, out: &File) -> bool {
    let (mut off_in, mut off_out) = (0 as libc::loff_t, 0 as libc::loff_t);
    // SAFETY: both descriptors are open for the duration; offsets are passed by pointer;
    // nothing is copied (length 0).
    let n = unsafe {
        libc::copy_file_range(
            device.file.as_raw_fd(),
            &mut off_in,
            out.as_raw_fd(),
            &mut off_out,
            0,
            0,
        )
    };
    n == 0
}

/// Copies through a buffer: read, then write. For where the kernel cannot copy.
pub fn copy_by_buffer(
    device: &Device,
    mut from: u64,
    out: &File,
    mut to: u64,
    mut len: u64,
) -> Result<()> {
    // One buffer per thread, kept: a fresh zeroed MiB per call cost a page fault per
    // 4 KiB, which for a sparse volume of many small extents (a thin LV's 64 KiB
    // chunks) was most of the export's time.
    thread_local! {
        static BUF: std::cell::RefCell<AlignedBuf> = std::cell::RefCell::new(AlignedBuf::new(1 << 20));
    }
    BUF.with_borrow_mut(|buf| {
        while len > 0 {
            let n = len.min(buf.len() as u64) as usize;
            read_exact_at(device, &mut buf[..n], from)?;
            out.write_all_at(&buf[..n], to)
                .map_err(|e| Error::io(format!("writing {n} bytes at {to}"), e))?;
            from += n as u64;
            to += n as u64;
            len -= n as u64;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fresh folder under the system's temporary folder, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "snapport-io-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn regular_files_up_to_the_cap_are_read() {
        let s = Scratch::new("regular");
        let f = s.0.join("f");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(read_regular_file(&f, 5).unwrap(), b"12345");
        let e = read_regular_file(&f, 4).unwrap_err();
        assert!(e.to_string().contains("larger than the 4 bytes"), "{e}");
        let e = read_regular_file(&s.0.join("none"), 4).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn other_kinds_of_file_are_refused_without_reading() {
        let s = Scratch::new("kinds");
        let fifo = s.0.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer ever comes: a blocking open would wait here forever.
        let e = read_regular_file(&fifo, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let e = read_regular_file(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        let e = read_regular_file(&s.0, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("a folder"), "{e}");
    }
}
