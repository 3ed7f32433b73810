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

/// Removes the folder `path` and everything in it: at any depth, never following a
/// link, with system calls only (no allocation once the path is a C string). What an
/// interruption does to `plugin test`'s scratch pool, and its owner when done.
pub fn remove_tree(path: &Path) {
    if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: a NUL-terminated C string that lives across the call.
        unsafe { remove_at(libc::AT_FDCWD, c.as_ptr()) };
    }
}

/// [`remove_tree`] for a signal handler: `path` already a C string. Async-signal-safe.
///
/// # Safety
/// `path` must be a NUL-terminated C string.
pub unsafe fn remove_tree_c(path: *const libc::c_char) {
    // SAFETY: the caller's promise.
    unsafe { remove_at(libc::AT_FDCWD, path) }
}

/// Folder reads [`remove_at`] makes at most: a backstop against a tree that something
/// else keeps filling; a tree a plugin can make (paths under PATH_MAX) needs far fewer.
const MAX_SCANS: u64 = 1 << 26;
/// Folders that could not be emptied (an immutable file, a mount point, a read-only
/// folder) [`remove_at`] remembers, by device and inode, so as not to go down into them
/// again; past this many it gives up rather than loop.
const MAX_STUCK: usize = 256;

/// Folders on the way down [`remove_at`] keeps open, to go back up without `..`.
const HELD: usize = 64;

/// Removes `name` (relative to `dir`): a file or link by unlinking it, a folder by
/// emptying it first, never following a link. Any depth (a plugin may nest thousands of
/// folders; a path that long is past PATH_MAX, and recursion would need a stack per
/// level), with at most [`HELD`] + 1 descriptors: it goes down one subfolder at a time
/// and keeps the last [`HELD`] folders on its way open, to go back up to. It never climbs
/// through `..` (a folder renamed meanwhile would lead it out of the tree): above the
/// folders it holds, it starts again from the top. A folder's next scan removes a
/// subfolder emptied meanwhile. A folder left non-empty is remembered and not entered
/// again, so one stuck entry costs one visit and its siblings are still removed.
///
/// # Safety
/// `name` must be a NUL-terminated C string and `dir` a folder descriptor or `AT_FDCWD`.
unsafe fn remove_at(dir: libc::c_int, name: *const libc::c_char) {
    const OPEN: libc::c_int =
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY (every call below): plain system calls on descriptors this function opened
    // and names from the kernel's own directory entries, NUL-terminated; `stat` is
    // plain old data that fstat fills.
    unsafe {
        if libc::unlinkat(dir, name, 0) == 0 {
            return;
        }
        let top = libc::openat(dir, name, OPEN);
        if top < 0 {
            return;
        }
        let identity = |fd: libc::c_int| -> Option<(u64, u64)> {
            let mut st: libc::stat = std::mem::zeroed();
            (libc::fstat(fd, &mut st) == 0).then_some((st.st_dev, st.st_ino))
        };
        let mut stuck = [(0u64, 0u64); MAX_STUCK];
        let mut stuck_len = 0usize;
        // held[d % HELD] is the folder at depth d, for d in lowest..=depth (0: the top).
        let mut held = [-1 as libc::c_int; HELD];
        held[0] = top;
        let (mut depth, mut lowest) = (0usize, 0usize);
        let release = |held: &[libc::c_int; HELD], lowest: usize, depth: usize| {
            for d in lowest.max(1)..=depth {
                libc::close(held[d % HELD]);
            }
            libc::close(top);
        };
        let mut buf = [0u8; 4096];
        for _ in 0..MAX_SCANS {
            let fd = held[depth % HELD];
            libc::lseek(fd, 0, libc::SEEK_SET);
            let (mut removed, mut descended, mut seen) = (false, false, false);
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
                        seen = true;
                        if libc::unlinkat(fd, entry, 0) == 0
                            || libc::unlinkat(fd, entry, libc::AT_REMOVEDIR) == 0
                        {
                            removed = true;
                        } else {
                            let child = libc::openat(fd, entry, OPEN);
                            if child >= 0 {
                                let known = identity(child)
                                    .is_some_and(|id| stuck[..stuck_len].contains(&id));
                                if known {
                                    libc::close(child);
                                } else {
                                    depth += 1;
                                    if depth - lowest >= HELD {
                                        // The oldest held folder makes room (the top
                                        // stays open: it is `top`).
                                        if lowest > 0 {
                                            libc::close(held[lowest % HELD]);
                                        }
                                        lowest += 1;
                                    }
                                    held[depth % HELD] = child;
                                    descended = true;
                                    break 'read;
                                }
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
                release(&held, lowest, 0);
                libc::unlinkat(dir, name, libc::AT_REMOVEDIR);
                return;
            }
            // Nothing more to remove down here: if it is empty, its parent's next scan
            // removes it; if not, it is stuck, and not entered again.
            if seen {
                match identity(fd) {
                    Some(id) if stuck_len < MAX_STUCK => {
                        stuck[stuck_len] = id;
                        stuck_len += 1;
                    }
                    _ => {
                        release(&held, lowest, depth);
                        return;
                    }
                }
            }
            libc::close(fd);
            depth -= 1;
            if depth < lowest {
                // The parent is no longer held: start again from the top.
                depth = 0;
                lowest = 0;
                held[0] = top;
            }
        }
        release(&held, lowest, depth);
    }
}

#[cfg(test)]
mod tests {
    use super::remove_tree;
    use std::ffi::CString;

    /// A chain of folders deeper than any path can name (3,000 levels, a file in each)
    /// is removed whole.
    #[test]
    fn removes_a_tree_deeper_than_path_max() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("pool");
        std::fs::create_dir(&root).unwrap();
        let top = std::fs::File::open(&root).unwrap();
        let name = CString::new("ddddd").unwrap();
        let file = CString::new("f").unwrap();
        // SAFETY: plain system calls on descriptors opened here, NUL-terminated names.
        unsafe {
            use std::os::unix::io::AsRawFd;
            let mut fd = libc::dup(top.as_raw_fd());
            for _ in 0..3000 {
                assert_eq!(libc::mkdirat(fd, name.as_ptr(), 0o755), 0);
                let f = libc::openat(fd, file.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
                assert!(f >= 0);
                libc::close(f);
                let next = libc::openat(fd, name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
                assert!(next >= 0);
                libc::close(fd);
                fd = next;
            }
            libc::close(fd);
        }
        drop(top);
        remove_tree(&root);
        assert!(!root.exists(), "the tree is left");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    /// One entry that cannot be removed (an immutable file) keeps its folders, and only
    /// them: every sibling is removed, and the walk ends.
    #[test]
    fn a_stuck_entry_keeps_its_folders_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("pool");
        for n in 1..=5 {
            let d = root.join(format!("s{n}/deeper"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f"), b"x").unwrap();
        }
        // Whichever sN the folder lists first: the stuck one must not hide the others.
        let stuck = root.join("s1/deeper/f");
        let chattr = |flag: &str| {
            std::process::Command::new("chattr")
                .arg(flag)
                .arg(&stuck)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !chattr("+i") {
            eprintln!("skip: chattr +i is refused here (not root, or the file system has no immutable flag)");
            return;
        }
        remove_tree(&root);
        let left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let kept = stuck.exists();
        assert!(chattr("-i"));
        assert_eq!(left, [std::ffi::OsString::from("s1")]);
        assert!(kept);
        remove_tree(&root);
        assert!(!root.exists());
    }
}
