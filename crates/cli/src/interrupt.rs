//! Ctrl-C, SIGTERM and SIGHUP: the engine's cleanup ([`snapport_engine::interrupt`]) runs,
//! one line on stderr says the command was interrupted and what became of its output, and
//! the process exits 128 + the signal: 130 for SIGINT, 143 for SIGTERM.

use snapport_engine::interrupt;

extern "C" fn on_signal(sig: libc::c_int) {
    if interrupt::hold(sig) {
        return;
    }
    interrupt::cleanup();
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
    let note = interrupt::note_bytes();
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
