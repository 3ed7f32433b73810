//! Output files that appear whole or not at all.
//!
//! Everything snapport writes for a user (an image, a bundle, a delta, the `.digest` and
//! `.sha256` sidecars) is first a [`PendingFile`]: an unnamed file (`O_TMPFILE`) in the
//! folder it will live in. It gets its name (`linkat`) only once it is complete, by
//! [`commit_all`]. Until then there is nothing to clean up: a process killed outright
//! (`kill -9`, the OOM killer, a power cut) leaves no file at all, and a full disk fails
//! a write before any name exists.
//!
//! Where the folder's file system has no `O_TMPFILE`, the file is created under a hidden
//! name, `.NAME.snapport-PID`, registered for removal on SIGINT/SIGTERM
//! ([`crate::cleanup`]) and removed when dropped. What a killed process left under such a
//! name is removed by [`sweep`] when the next output starts in that folder.
//!
//! Naming never replaces: a name that appeared meanwhile fails the link (`EEXIST`) and is
//! left as it is. Replacing an existing output (`--force`) links the new file under its
//! hidden name and renames it over the old one, so the old file stays whole until the
//! new one is.

use crate::cleanup;
use crate::error::{Error, ErrorKind, Result};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind as IoKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// What a hidden name carries between the file's name and the owner's PID.
const MARK: &str = ".snapport-";

/// A file being written that has no name yet (or only a hidden one).
pub struct PendingFile {
    file: File,
    /// The folder it is in.
    dir: PathBuf,
    /// The name it gets in `dir`.
    name: OsString,
    /// Its hidden name, where the file system has no unnamed files.
    hidden: Option<Hidden>,
}

/// A hidden name, removed when dropped and on interruption.
struct Hidden {
    path: PathBuf,
    _cleanup: cleanup::Registration,
}

impl Drop for Hidden {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl PendingFile {
    /// A file that becomes `path` when committed. Refuses a folder. Sweeps the folder
    /// first (see [`sweep`]).
    pub fn beside(path: &Path) -> Result<PendingFile> {
        let name = path.file_name().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{} names no file", path.display()),
            )
        })?;
        if path.is_dir() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} is a folder; name a file", path.display()),
            ));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        PendingFile::create(dir, name.to_os_string())
    }

    /// A file in `dir` that is never named: a spool, read back through its descriptor
    /// ([`PendingFile::into_file`]). `label` names it where a hidden name is needed.
    pub fn spool(dir: &Path, label: &str) -> Result<PendingFile> {
        PendingFile::create(dir.to_path_buf(), format!("spool-{label}").into())
    }

    fn create(dir: PathBuf, name: OsString) -> Result<PendingFile> {
        sweep(&dir);
        let unnamed = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o666)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir);
        match unnamed {
            Ok(file) => Ok(PendingFile::held(file, dir, name, None)),
            // EOPNOTSUPP: the file system has no unnamed files; EISDIR: the kernel has
            // no O_TMPFILE and took it for O_DIRECTORY.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
                PendingFile::create_hidden(dir, name)
            }
            Err(e) => Err(Error::io(
                format!("creating a file in {}", dir.display()),
                e,
            )),
        }
    }

    /// The fallback: a file under the hidden name `.NAME.snapport-PID`.
    fn create_hidden(dir: PathBuf, name: OsString) -> Result<PendingFile> {
        let path = hidden_path(&dir, &name);
        // Registered before it exists: a signal in between finds nothing to do.
        let registration = cleanup::register(&path);
        let file =
            create_new(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let hidden = Hidden {
            path,
            _cleanup: registration,
        };
        Ok(PendingFile::held(file, dir, name, Some(hidden)))
    }

    fn held(file: File, dir: PathBuf, name: OsString, hidden: Option<Hidden>) -> PendingFile {
        // Held until the process ends: how a sweep knows the owner is alive, whatever
        // PID namespace it runs in.
        // SAFETY: flock on a descriptor this function owns.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        PendingFile {
            file,
            dir,
            name,
            hidden,
        }
    }

    /// The folder the file is in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The name the file gets.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file.write_all_at(buf, offset).map_err(|e| {
            Error::io(
                format!(
                    "writing {} bytes at {offset} of {}",
                    buf.len(),
                    self.path().display()
                ),
                e,
            )
        })
    }

    pub fn set_len(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io(format!("sizing {}", self.path().display()), e))
    }

    /// The file, nameless from now on: it is gone once the descriptor is closed.
    pub fn into_file(self) -> File {
        // Dropping `hidden` removes the hidden name.
        self.file
    }

    /// Names the file; with `replace`, over whatever has the name.
    fn link(&self, replace: bool) -> std::io::Result<()> {
        let path = self.path();
        match (&self.hidden, replace) {
            (None, false) => link_descriptor(&self.file, &path),
            (None, true) => {
                let temp = hidden_path(&self.dir, &self.name);
                let _cleanup = cleanup::register(&temp);
                // A stale one (a dead process of the same PID) would fail the link.
                let _ = std::fs::remove_file(&temp);
                link_descriptor(&self.file, &temp)?;
                std::fs::rename(&temp, &path).inspect_err(|_| {
                    let _ = std::fs::remove_file(&temp);
                })
            }
            // The hidden name goes when `Hidden` drops.
            (Some(h), false) => match std::fs::hard_link(&h.path, &path) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => {
                    rename_no_replace(&h.path, &path)
                }
                other => other,
            },
            (Some(h), true) => std::fs::rename(&h.path, &path),
        }
    }

    fn identity(&self) -> Option<(u64, u64)> {
        self.file.metadata().ok().map(|m| (m.dev(), m.ino()))
    }
}

/// Names `output` and its `sidecars` (a `.digest`, a `.sha256`): the sidecars first, then
/// the output where its name is free (with `replace`, over what has it); with `sync`,
/// their data and names are made durable. A sidecar belongs to its output, so one that
/// has the name already (of an earlier export, or left by a killed one) is replaced.
///
/// Sidecars come first so that an output never exists without its sidecars: a reader
/// that finds the image finds its digest, and an upload verifies against it. A process
/// killed between two links (a window of microseconds) leaves the sidecars named so far
/// and no output: a `.digest` naming a file that does not exist, which verifies nothing,
/// misleads no one, and is replaced by the next export under that name. When replacing,
/// the window leaves new sidecars beside the old output: a verifying reader then refuses
/// the old output instead of accepting it.
///
/// An output name that is taken fails with [`ErrorKind::Conflict`]; the sidecars named by
/// this call are removed again, so nothing of the new output stays.
pub fn commit_all(
    sidecars: Vec<PendingFile>,
    output: PendingFile,
    replace: bool,
    sync: bool,
) -> Result<()> {
    let files: Vec<(&PendingFile, bool)> = sidecars
        .iter()
        .map(|s| (s, true))
        .chain([(&output, replace)])
        .collect();
    if sync {
        for (f, _) in &files {
            f.file
                .sync_all()
                .map_err(|e| Error::io(format!("syncing {}", f.path().display()), e))?;
        }
    }
    let mut named: Vec<(PathBuf, Option<(u64, u64)>)> = Vec::new();
    for (f, replace_it) in &files {
        let path = f.path();
        if let Err(e) = f.link(*replace_it) {
            for (p, id) in &named {
                remove_if_same(p, *id);
            }
            return Err(if e.kind() == IoKind::AlreadyExists {
                Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "{} appeared while the output was being written; it was left as it \
                         is and the new output discarded",
                        path.display()
                    ),
                )
            } else {
                Error::io(format!("naming {}", path.display()), e)
            });
        }
        named.push((path, f.identity()));
    }
    if sync {
        let mut dirs: Vec<&Path> = files.iter().map(|(f, _)| f.dir.as_path()).collect();
        dirs.dedup();
        for d in dirs {
            File::open(d)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(format!("syncing the folder {}", d.display()), e))?;
        }
    }
    Ok(())
}

impl PendingFile {
    /// [`commit_all`] of this one file, without sidecars.
    pub fn commit(self, replace: bool, sync: bool) -> Result<()> {
        commit_all(Vec::new(), self, replace, sync)
    }
}

/// Renames `from` to `to` unless `to` exists (`EEXIST` then).
pub fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    let (from, to) = (c_path(from)?, c_path(to)?);
    // SAFETY: two NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Removes what killed snapport processes left in `dir`: hidden `.NAME.snapport-PID`
/// files whose process is gone and that no process holds. The PID in the name says whose
/// it was; the lock every pending file holds until its process ends proves the owner
/// gone even where the PID means nothing (another PID namespace, a PID reused). Errors
/// are ignored: this is housekeeping.
pub fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner(&name) else {
            continue;
        };
        if pid == me || process_exists(pid) {
            continue;
        }
        let path = entry.path();
        let Ok(f) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            continue;
        }
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The PID in a hidden name `.NAME.snapport-PID`.
fn owner(name: &OsStr) -> Option<u32> {
    let bytes = name.as_bytes().strip_prefix(b".")?;
    let at = bytes
        .windows(MARK.len())
        .rposition(|w| w == MARK.as_bytes())?;
    let pid = &bytes[at + MARK.len()..];
    if at == 0 || pid.is_empty() || !pid.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(pid).ok()?.parse().ok()
}

fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn hidden_path(dir: &Path, name: &OsStr) -> PathBuf {
    let mut s = OsString::from(".");
    s.push(name);
    s.push(format!("{MARK}{}", std::process::id()));
    dir.join(s)
}

/// Creates `path`, which must not exist; a stale one (a dead process of this PID) goes.
fn create_new(path: &Path) -> std::io::Result<File> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == IoKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            open()
        }
        other => other,
    }
}

/// Gives the unnamed file behind `file` the name `to` (never replacing).
fn link_descriptor(file: &File, to: &Path) -> std::io::Result<()> {
    let to = c_path(to)?;
    let last = || Err(std::io::Error::last_os_error());
    if Path::new("/proc/self/fd").is_dir() {
        let proc = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .expect("a path without NUL");
        // SAFETY: NUL-terminated paths that outlive the call.
        let r = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                proc.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        return if r == 0 { Ok(()) } else { last() };
    }
    // No /proc: the descriptor itself (needs CAP_DAC_READ_SEARCH, as root has).
    // SAFETY: an open descriptor, an empty and a NUL-terminated path.
    let r = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        last()
    }
}

/// Removes `path` if it is still the file this call named (`id`: device and inode).
fn remove_if_same(path: &Path, id: Option<(u64, u64)>) {
    let same = std::fs::symlink_metadata(path).is_ok_and(|m| Some((m.dev(), m.ino())) == id);
    if same {
        let _ = std::fs::remove_file(path);
    }
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(IoKind::InvalidInput, "a path with a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// An unnamed pending file, or one under the fallback's hidden name.
    fn pending(dir: &Path, name: &str, unnamed: bool) -> PendingFile {
        if unnamed {
            PendingFile::create(dir.into(), name.into()).unwrap()
        } else {
            PendingFile::create_hidden(dir.into(), name.into()).unwrap()
        }
    }

    #[test]
    fn nothing_is_named_until_committed_and_nothing_stays_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        for unnamed in [true, false] {
            let f = pending(dir.path(), "out.raw", unnamed);
            assert_eq!(f.hidden.is_none(), unnamed);
            f.write_at(b"data", 0).unwrap();
            if unnamed {
                assert!(names(dir.path()).is_empty());
            } else {
                let pid = std::process::id();
                assert_eq!(names(dir.path()), [format!(".out.raw.snapport-{pid}")]);
            }
            drop(f);
            assert!(names(dir.path()).is_empty());
        }
    }

    #[test]
    fn commit_names_whole_files_and_never_replaces_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.raw");
        let written = |unnamed: bool, text: &[u8]| {
            let f = pending(dir.path(), "out.raw", unnamed);
            f.write_at(text, 0).unwrap();
            f
        };
        for unnamed in [true, false] {
            let _ = std::fs::remove_file(&out);
            written(unnamed, b"first").commit(false, true).unwrap();
            assert_eq!(std::fs::read(&out).unwrap(), b"first");
            // Taken: refused, the old file kept, the new one gone.
            let err = written(unnamed, b"second")
                .commit(false, false)
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
            assert!(err.to_string().contains("appeared"), "{err}");
            assert_eq!(std::fs::read(&out).unwrap(), b"first");
            assert_eq!(names(dir.path()), ["out.raw"]);
            // Replacing: the new content, no hidden name left.
            written(unnamed, b"third").commit(true, false).unwrap();
            assert_eq!(std::fs::read(&out).unwrap(), b"third");
            assert_eq!(names(dir.path()), ["out.raw"]);
        }
    }

    #[test]
    fn sidecars_replace_stale_ones_and_go_again_when_the_output_name_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (out, digest) = (
            dir.path().join("out.raw"),
            dir.path().join("out.raw.digest"),
        );
        // A sidecar without its output (a killed export's) is replaced.
        std::fs::write(&digest, b"stale").unwrap();
        let sidecar = PendingFile::beside(&digest).unwrap();
        sidecar.write_at(b"new digest", 0).unwrap();
        let output = PendingFile::beside(&out).unwrap();
        output.write_at(b"new output", 0).unwrap();
        commit_all(vec![sidecar], output, false, false).unwrap();
        assert_eq!(std::fs::read(&digest).unwrap(), b"new digest");
        assert_eq!(std::fs::read(&out).unwrap(), b"new output");
        // The output's name taken: the output is refused and the new sidecar removed.
        std::fs::remove_file(&digest).unwrap();
        let sidecar = PendingFile::beside(&digest).unwrap();
        let output = PendingFile::beside(&out).unwrap();
        let err = commit_all(vec![sidecar], output, false, false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert_eq!(names(dir.path()), ["out.raw"]);
        assert_eq!(std::fs::read(&out).unwrap(), b"new output");
    }

    #[test]
    fn a_spool_never_gets_a_name() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [true, false] {
            let f = pending(dir.path(), "spool-x", kind);
            f.write_at(b"abc", 0).unwrap();
            let file = f.into_file();
            assert!(names(dir.path()).is_empty());
            let mut back = [0u8; 3];
            file.read_exact_at(&mut back, 0).unwrap();
            assert_eq!(&back, b"abc");
        }
    }

    #[test]
    fn sweep_removes_only_what_dead_owners_left() {
        let dir = tempfile::tempdir().unwrap();
        // A PID that is not running: a child that has exited and been reaped.
        let dead = std::process::Command::new("true")
            .spawn()
            .and_then(|mut c| c.wait().map(|_| c.id()))
            .unwrap();
        let stale = format!(".out.raw.snapport-{dead}");
        std::fs::write(dir.path().join(&stale), b"left by kill -9").unwrap();
        // A live process's (this one's parent), one held by a live pending file, and
        // names that only look alike.
        let parent = std::os::unix::process::parent_id();
        let kept = [
            format!(".b.raw.snapport-{parent}"),
            ".c.raw.snapport-".to_string(),
            format!(".snapport-{dead}"),
            format!("d.raw.snapport-{dead}"),
            format!(".e.raw.snapport-{dead}x"),
        ];
        for k in &kept {
            std::fs::write(dir.path().join(k), b"keep").unwrap();
        }
        let live = pending(dir.path(), "live.raw", false);
        sweep(dir.path());
        let mut want: Vec<String> = kept.to_vec();
        want.push(format!(".live.raw.snapport-{}", std::process::id()));
        want.sort();
        assert_eq!(names(dir.path()), want);
        // A file whose PID looks dead but which a process still holds (another PID
        // namespace): kept too.
        let held = dir.path().join(format!(".held.snapport-{dead}"));
        std::fs::rename(
            dir.path()
                .join(format!(".live.raw.snapport-{}", std::process::id())),
            &held,
        )
        .unwrap();
        sweep(dir.path());
        assert!(held.exists());
        drop(live);
    }
}
