//! What an interruption (Ctrl-C, SIGTERM, SIGHUP) must undo, kept where a signal handler
//! can reach it without allocating or locking. An output has no name until it is whole
//! (`snapport_core::output`); what lives under a temporary name until then (a volume being
//! imported, a live disk's temporary snapshot) is registered so that [`cleanup`] removes
//! it, because a signal ends the process before any destructor runs.
//!
//! The engine installs no handler itself: a program that wants this behaviour installs
//! its own (the CLI's `interrupt.rs`), which asks [`hold`] first, then calls [`cleanup`],
//! says what happened (with [`note_bytes`]) and exits. The state is process-wide: one
//! operation at a time per process has its interruption handled.

use std::ffi::CString;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};

/// While non-zero, a signal is held until the window closes (a frozen guest must be
/// thawed first).
static DEFERRING: AtomicUsize = AtomicUsize::new(0);
static PENDING: AtomicI32 = AtomicI32::new(0);
/// What the interruption line adds: what became of the output (a C string, freed only
/// when replaced after the handler can no longer be reading it: never, so it is leaked).
static NOTE: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

/// From now on an interruption says `text` ("nothing was written under OUTPUT").
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

/// The current note, for a signal handler: no allocation, no lock.
pub fn note_bytes() -> &'static [u8] {
    let note = NOTE.load(Ordering::SeqCst);
    if note.is_null() {
        b""
    } else {
        // SAFETY: a leaked, NUL-terminated C string that is never freed.
        unsafe { std::ffi::CStr::from_ptr(note) }.to_bytes()
    }
}

/// For a signal handler, first: whether `sig` must wait because a window is open
/// ([`defer`]). If so it is kept, and raised again when the window closes; the handler
/// returns at once.
pub fn hold(sig: libc::c_int) -> bool {
    if DEFERRING.load(Ordering::SeqCst) > 0 {
        PENDING.store(sig, Ordering::SeqCst);
        return true;
    }
    false
}

/// For a signal handler, before the process ends: deletes a live disk's temporary
/// snapshot and removes the files registered with [`snapport_core::cleanup`].
/// Async-signal-safe.
pub fn cleanup() {
    crate::live::on_signal();
    snapport_core::cleanup::remove_registered();
    remove_tree();
}

/// A folder tree to remove on interruption (`plugin test`'s scratch pool: the plugin
/// made files and subfolders in it that no one else knows of).
static TREE: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

/// The registration of [`remove_tree_on_signal`]; dropping it forgets the tree (its owner
/// removes it then).
#[must_use]
pub struct RemoveTree(());

/// From now on an interruption removes the folder `path` and everything in it. One
/// tree at a time (a later registration replaces the earlier).
pub fn remove_tree_on_signal(path: &std::path::Path) -> RemoveTree {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
        TREE.store(c.into_raw(), Ordering::SeqCst);
    }
    RemoveTree(())
}

impl Drop for RemoveTree {
    fn drop(&mut self) {
        // Leaked, never freed: a handler may be reading it.
        TREE.store(std::ptr::null_mut(), Ordering::SeqCst);
    }
}

/// Removes the registered tree with system calls only (no allocation, no lock).
fn remove_tree() {
    let path = TREE.load(Ordering::SeqCst);
    if !path.is_null() {
        // SAFETY: a leaked, NUL-terminated C string that is never freed.
        unsafe { snapport_core::cleanup::remove_tree_c(path) };
    }
}

/// Holds Ctrl-C, SIGTERM and SIGHUP back while it lives, for windows that must run to
/// their end: between freezing a guest and thawing it; while an output and its sidecars
/// get their names. A signal that came meanwhile is raised again when the guard drops,
/// and ends the process as it would have.
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
                // SAFETY: raise has no preconditions; the program's handler runs now.
                unsafe { libc::raise(sig) };
            }
        }
    }
}
