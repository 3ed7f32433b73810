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
        unsafe { remove_at(libc::AT_FDCWD, path) };
    }
}

/// Removes the folder `path` and everything in it now, as an interruption would: at
/// any depth, never following a link (what `plugin test` uses for its scratch pools).
pub fn remove_tree_now(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: a NUL-terminated C string that lives across the call.
        unsafe { remove_at(libc::AT_FDCWD, c.as_ptr()) };
    }
}

/// Folder reads [`remove_at`] makes at most: enough for some hundred thousand folders,
/// and an end when an entry cannot be removed (it would be visited again and again).
const MAX_SCANS: u64 = 1 << 20;

/// Removes `name` (relative to `dir`): a file or link by unlinking it, a folder by
/// emptying it first, never following a link. Any depth (a plugin may nest thousands of
/// folders; a path that long is past PATH_MAX, and recursion would need a stack per
/// level): it holds one descriptor, goes down into one subfolder at a time and back up
/// through `..`, and removes a folder from its parent once a scan finds it empty.
///
/// # Safety
/// `name` must be a NUL-terminated C string and `dir` a folder descriptor or `AT_FDCWD`.
unsafe fn remove_at(dir: libc::c_int, name: *const libc::c_char) {
    const OPEN: libc::c_int =
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY (every call below): plain system calls on descriptors this function opened
    // and names from the kernel's own directory entries, NUL-terminated.
    unsafe {
        if libc::unlinkat(dir, name, 0) == 0 {
            return;
        }
        let mut fd = libc::openat(dir, name, OPEN);
        if fd < 0 {
            return;
        }
        let mut depth = 0u64;
        let mut buf = [0u8; 4096];
        for _ in 0..MAX_SCANS {
            libc::lseek(fd, 0, libc::SEEK_SET);
            let (mut removed, mut descended) = (false, false);
            'read: loop {
                let n = libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len());
                if n <= 0 {
                    break;
                }
                let mut at = 0usize;
                while at + 19 < n as usize {
                    // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
                    let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                    let entry = buf.as_ptr().add(at + 19).cast::<libc::c_char>();
                    let byte = |i: usize| buf.get(at + i).copied().unwrap_or(0);
                    let dot =
                        byte(19) == b'.' && (byte(20) == 0 || (byte(20) == b'.' && byte(21) == 0));
                    if !dot {
                        if libc::unlinkat(fd, entry, 0) == 0
                            || libc::unlinkat(fd, entry, libc::AT_REMOVEDIR) == 0
                        {
                            removed = true;
                        } else {
                            let child = libc::openat(fd, entry, OPEN);
                            if child >= 0 {
                                libc::close(fd);
                                fd = child;
                                depth += 1;
                                descended = true;
                                break 'read;
                            }
                        }
                    }
                    if reclen == 0 {
                        break;
                    }
                    at += reclen;
                }
            }
            // Removing entries while reading the folder may skip some: scan it again
            // until a scan removes nothing.
            if descended || removed {
                continue;
            }
            if depth == 0 {
                libc::close(fd);
                libc::unlinkat(dir, name, libc::AT_REMOVEDIR);
                return;
            }
            // Emptied as far as it goes: back up; the parent's next scan removes it.
            let parent = libc::openat(fd, c"..".as_ptr(), OPEN);
            libc::close(fd);
            if parent < 0 {
                return;
            }
            fd = parent;
            depth -= 1;
        }
        libc::close(fd);
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
