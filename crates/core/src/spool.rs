//! A stream whose length nobody said (a pipe, stdin, a response without a length): a new
//! volume's size must be known before it is created, so the stream first lands in a file
//! without a name (`O_TMPFILE`) in a folder of the pool, and its size is what arrived.
//! All-zero 64 KiB blocks stay holes, so a sparse stream stays sparse; nothing is ever
//! visible in the folder, and a killed process leaves nothing behind.

use crate::digest::LEAF_SIZE;
use crate::error::{Error, ErrorKind, Result};
use crate::import::read_full;
use crate::output::PendingFile;
use crate::progress::Progress;
use crate::raw_file::RawFile;
use crate::zeros::is_zero;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes read at a time.
const BLOCK: usize = 4 << 20;

/// Reads `reader` to its end into an unnamed file in `folder`, and returns that file as
/// a raw volume of exactly the bytes that arrived. A stream longer than the file system
/// holding `folder` fails (a disk of unknown length cannot be larger than where it is
/// going), as does one that fills it; either way nothing is left in `folder`.
pub fn spool(reader: &mut dyn Read, folder: &Path, progress: &mut dyn Progress) -> Result<RawFile> {
    // Nameless from the start (or, without O_TMPFILE, from here on): gone when closed.
    let file = PendingFile::spool(folder, "upload")?.into_file();
    let limit = file_system_size(folder)?;
    let full = |e: std::io::Error, at: u64| {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            Error::new(
                ErrorKind::Io,
                format!(
                    "the source's length is unknown, so it is first stored in {}, which is full after {at} bytes; give --size, or free space",
                    folder.display()
                ),
            )
        } else {
            Error::io(format!("storing the source in {}", folder.display()), e)
        }
    };
    progress.start(0);
    let mut buf = vec![0u8; BLOCK];
    let mut size = 0u64;
    loop {
        let n = read_full(reader, &mut buf)?;
        if n == 0 {
            break;
        }
        if size + n as u64 > limit {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the source runs past {limit} bytes, the size of the file system holding {}: a source of unknown length cannot be larger; give --size",
                    folder.display()
                ),
            ));
        }
        for (i, leaf) in buf[..n].chunks(LEAF_SIZE as usize).enumerate() {
            if !is_zero(leaf) {
                let at = size + (i as u64) * LEAF_SIZE;
                file.write_all_at(leaf, at).map_err(|e| full(e, at))?;
            }
        }
        size += n as u64;
        progress.advance(n as u64);
        if n < buf.len() {
            break;
        }
    }
    file.set_len(size).map_err(|e| full(e, size))?;
    progress.finish();
    RawFile::from_file(file, "the source".into())
}

/// Bytes the file system holding `folder` has in all.
fn file_system_size(folder: &Path) -> Result<u64> {
    let c = std::ffi::CString::new(folder.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "a folder name holds a NUL byte"))?;
    // SAFETY: statvfs is plain integers, for which all zeros is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statvfs the call fills.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::io(
            format!("sizing the file system of {}", folder.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok((st.f_blocks as u64).saturating_mul(st.f_frsize as u64))
}
