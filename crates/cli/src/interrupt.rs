//! Interruption (Ctrl-C, SIGTERM, SIGHUP): everything snapport writes lives under a
//! temporary name until it is whole, but a signal ends the process before any destructor
//! runs. The handler removes the registered temporary files itself
//! ([`snapport_core::cleanup`]) and exits 128 + the signal, so an interrupted export or
//! import leaves nothing behind.

extern "C" fn on_signal(sig: libc::c_int) {
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
