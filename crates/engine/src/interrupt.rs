//! Interruption (Ctrl-C, SIGTERM, SIGHUP): an output has no name until it is whole
//! (`snapport_core::output`), and what lives under a temporary name until then (a volume
//! being imported) is registered with [`snapport_core::cleanup`], because a signal ends
//! the process before any destructor runs. The handler removes those files itself, says
//! in one line on stderr that the command was interrupted and what became of its output
//! ([`note`]), and exits 128 + the signal: 130 for SIGINT, 143 for SIGTERM.

use std::ffi::CString;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};

/// While non-zero, a signal is held until the window closes (a frozen guest must be
/// thawed first).
static DEFERRING: AtomicUsize = AtomicUsize::new(0);
static PENDING: AtomicI32 = AtomicI32::new(0);
/// What the interruption line adds: what became of the output (a leaked C string, never
/// freed: the handler may be reading it).
static NOTE: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

/// From now on an interruption says `text` after "snapport: interrupted (SIGTERM); ".
pub fn note(text: &str) {
    let ptr = CString::new(text.replace('\0', ""))
        .expect("no NUL left")
        .into_raw();
    NOTE.store(ptr, Ordering::SeqCst);
}

/// From now on an interruption says only that it happened.
pub fn clear_note() {
    NOTE.store(std::ptr::null_mut(), Ordering::SeqCst);
}

extern "C" fn on_signal(sig: libc::c_int) {
    if DEFERRING.load(Ordering::SeqCst) > 0 {
        PENDING.store(sig, Ordering::SeqCst);
        return;
    }
    crate::live::on_signal();
    snapport_core::cleanup::remove_registered();
    say_interrupted(sig);
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(128 + sig) }
}

/// `snapport: interrupted (SIGTERM); NOTE` as one write(2) to stderr: no allocation, no
/// lock (async-signal-safe).
fn say_interrupted(sig: libc::c_int) {
    let name: &[u8] = match sig {
        libc::SIGINT => b"SIGINT",
        libc::SIGTERM => b"SIGTERM",
        _ => b"SIGHUP",
    };
    let note = NOTE.load(Ordering::SeqCst);
    let note: &[u8] = if note.is_null() {
        b""
    } else {
        // SAFETY: a leaked, NUL-terminated C string that is never freed.
        unsafe { std::ffi::CStr::from_ptr(note) }.to_bytes()
    };
    let mut line = [0u8; 4352];
    let mut len = 0;
    let close: &[u8] = if note.is_empty() { b")" } else { b"); " };
    for part in [b"snapport: interrupted (" as &[u8], name, close, note] {
        // Cut short, if need be, leaving room for the newline.
        let n = part.len().min(line.len() - 1 - len);
        line[len..len + n].copy_from_slice(&part[..n]);
        len += n;
    }
    line[len] = b'\n';
    len += 1;
    // SAFETY: writes bytes from a live buffer to stderr.
    unsafe { libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), len) };
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
    for sig in SIGNALS {
        // SAFETY: installs a handler that only calls async-signal-safe functions.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            // One handler at a time: a second signal does not print a second line.
            for other in SIGNALS {
                libc::sigaddset(&mut action.sa_mask, other);
            }
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Holds Ctrl-C, SIGTERM and SIGHUP back while it lives, for windows that must run to
/// their end: between freezing a guest and thawing it; while an output and its sidecars
/// get their names. A signal that came meanwhile ends the process when the guard drops,
/// as it would have.
pub struct Deferred(());

/// Holds signals back until the returned guard drops (see [`Deferred`]).
pub fn defer() -> Deferred {
    DEFERRING.fetch_add(1, Ordering::SeqCst);
    Deferred(())
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if DEFERRING.fetch_sub(1, Ordering::SeqCst) == 1 {
            let sig = PENDING.swap(0, Ordering::SeqCst);
            if sig != 0 {
                on_signal(sig);
            }
        }
    }
}
