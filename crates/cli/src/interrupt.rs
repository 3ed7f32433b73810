//! Interruption (Ctrl-C, SIGTERM, SIGHUP) during an export: the engine writes under a
//! temporary name and removes it when it fails, but a signal ends the process before any
//! destructor runs. The handler removes the temporary file itself and exits 130 (or
//! 128 + the signal), so an interrupted export leaves nothing behind.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The temporary file to remove, as a C string leaked for the handler's sake.
static TEMP: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_signal(sig: libc::c_int) {
    let path = TEMP.load(Ordering::SeqCst);
    // SAFETY: unlink and _exit are async-signal-safe; `path` is null or a leaked,
    // NUL-terminated C string that is never freed.
    unsafe {
        if !path.is_null() {
            libc::unlink(path);
        }
        libc::_exit(128 + sig);
    }
}

/// From now on, an interrupting signal removes `temp` before the process exits.
pub fn remove_on_signal(temp: &Path) {
    let Ok(c) = CString::new(temp.as_os_str().as_bytes()) else {
        return;
    };
    TEMP.store(c.into_raw(), Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installs a handler that only calls async-signal-safe functions.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}
