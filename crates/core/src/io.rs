//! Low-level I/O the engine needs: page-aligned buffers (this CPU's `rep movsb` is up to
//! 20x slower on buffers misaligned within a page), positional reads and in-kernel
//! copies. Output files are [`crate::output`]'s.

use crate::error::{Error, Result};
use crate::extent::Device;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

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

/// Copies `len` bytes from `device` at `from` to `out` at `to` inside the kernel
/// (`copy_file_range`), falling back to read/write where the kernel cannot.
pub fn copy_range(
    device: &Device,
    mut from: u64,
    out: &File,
    mut to: u64,
    mut len: u64,
) -> Result<()> {
    let fail = |e, from: u64, len: u64| {
        Error::io(
            format!("copying {len} bytes at {from} of {}", device.name),
            e,
        )
    };
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
                    copy_by_buffer(device, from, out, to, len)
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
        from += n as u64;
        to += n as u64;
        len -= n as u64;
    }
    Ok(())
}

fn copy_by_buffer(
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
