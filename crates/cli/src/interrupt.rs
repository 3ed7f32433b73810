//! Interruption (Ctrl-C, SIGTERM, SIGHUP): everything snapport writes lives under a
//! temporary name until it is whole, but a signal ends the process before any destructor
//! runs. The handler removes the registered temporary files itself
//! ([`snapport_core::cleanup`]) and exits 128 + the signal, so an interrupted export or
//! import leaves nothing behind.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// While non-zero, a signal is held until the window closes (a frozen guest must be
/// thawed first).
static DEFERRING: AtomicUsize = AtomicUsize::new(0);
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    if DEFERRING.load(Ordering::SeqCst) > 0 {
        PENDING.store(sig, Ordering::SeqCst);
        return;
    }
    snapport_core::cleanup::remove_registered();
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(128 + sig) }
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
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

/// Holds Ctrl-C, SIGTERM and SIGHUP back while it lives: the window between freezing a
/// guest and thawing it must run to its end. A signal that came meanwhile ends the
/// process when the guard drops, as it would have.
pub struct Deferred(());

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
