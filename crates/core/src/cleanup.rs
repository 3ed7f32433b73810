//! Temporary files to remove when the process is interrupted.
//!
//! What snapport writes under a temporary name until it is whole (a volume being
//! imported; an output where the file system has no unnamed files, see
//! [`crate::output`]) is removed by its owner on failure. A signal ends the process
//! before any destructor runs, so owners also register the path here, and the signal
//! handler calls [`remove_registered`], which only uses async-signal-safe calls.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};

const SLOTS: usize = 64;

/// Registered paths as leaked C strings (never freed: a handler may be reading one).
static PATHS: [AtomicPtr<libc::c_char>; SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];

/// A registered path; dropping it unregisters (the file is then the owner's business).
#[must_use]
pub struct Registration(Option<usize>);

/// Registers `path` for removal on interruption. More than 64 at once are not tracked
/// (a process of snapport's holds one or two).
pub fn register(path: &Path) -> Registration {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return Registration(None);
    };
    let ptr = c.into_raw();
    for (i, slot) in PATHS.iter().enumerate() {
        if slot
            .compare_exchange(
                std::ptr::null_mut(),
                ptr,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            return Registration(Some(i));
        }
    }
    Registration(None)
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            PATHS[i].store(std::ptr::null_mut(), Ordering::SeqCst);
        }
    }
}

/// Unlinks every registered path. Async-signal-safe: for signal handlers.
pub fn remove_registered() {
    for slot in &PATHS {
        let p = slot.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: `p` is a leaked, NUL-terminated C string that is never freed.
            unsafe {
                libc::unlink(p);
            }
        }
    }
}
