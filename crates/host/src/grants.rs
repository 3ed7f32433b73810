//! What a pool grants its plugin, and the host functions that enforce it. A plugin sees
//! files and devices only through these functions: paths are resolved (symbolic links
//! included) and must land inside a granted folder or be a granted device; a read-only
//! grant refuses every write; `read-at` is capped.
//!
//! Symbolic links in a granted folder: one that leads to a file inside a granted folder
//! is that file (listed with its size, opened as it), so a folder pool may hold a disk
//! under a second name or a backing file linked from elsewhere in the folder. One that
//! leads out is not there at all: `list-files` skips it without a word about its target
//! (not its size, not whether it exists), and opening it is refused. Files inside a
//! folder are opened with `openat2(RESOLVE_BENEATH)` from the folder, so a link swapped
//! in after the check still cannot lead out.

use crate::bindings::snapport::backend::types::{Access, BackendError, FileEntry, LogLevel};
use snapport_core::extent::Device;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The most a plugin reads per `read-at` call (metadata only; bulk data moves host-side).
pub const MAX_READ_AT: u32 = 1 << 20;
/// The most entries `list-files` returns.
const MAX_LIST: usize = 100_000;
/// The most bytes of one log message that reach the operator; the rest is cut, and the
/// line says how much.
pub const MAX_LOG_LINE: usize = 4096;
/// The most log lines one plugin instance sends to the operator; after that, one line
/// says the rest are dropped.
pub const MAX_LOG_LINES: usize = 10_000;

/// A pool's grants, from the operator's configuration.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Folders whose files the plugin may list and open.
    pub folders: Vec<PathBuf>,
    /// Single files or block devices, by the name the plugin uses.
    pub devices: BTreeMap<String, PathBuf>,
    /// Plugin settings (strings), passed through as they are.
    pub settings: BTreeMap<String, String>,
    /// Whether anything may be opened read-write.
    pub writable: bool,
    /// Whether `flush` makes data durable (the operation asked for `--fsync`).
    pub sync: bool,
    /// Programs the plugin may have run, by tool name (see [`crate::tools`]).
    pub tools: BTreeMap<String, crate::tools::ToolGrant>,
    /// The one gRPC endpoint the plugin's calls go to (see [`crate::grpc`]).
    pub grpc_endpoint: Option<String>,
}

/// A file from `create-file` living under its temporary name.
struct Staged {
    temp: PathBuf,
    target: PathBuf,
    _cleanup: snapport_core::cleanup::Registration,
}

/// Receives the plugin's log lines: (plugin, level, message).
pub type Logger = Arc<dyn Fn(&str, LogLevel, &str) + Send + Sync>;

/// The per-instance state behind the host functions: the devices this plugin opened.
pub struct GrantedDevices {
    grants: Arc<Grants>,
    /// Canonical forms of the granted folders, for containment checks.
    folders: Vec<PathBuf>,
    /// By id; `None` once the plugin closed it (ids are never reused).
    devices: Vec<Option<(Arc<Device>, Access, PathBuf)>>,
    by_inode: HashMap<(u64, u64, bool), u32>,
    /// Files from `create-file` not yet published, by device.
    staged: HashMap<u32, Staged>,
    pub(crate) plugin: String,
    pub(crate) logger: Option<Logger>,
    /// Log lines this instance sent so far.
    logged: usize,
}

fn denied(msg: String) -> BackendError {
    BackendError::PermissionDenied(msg)
}

fn io_err(what: String, e: std::io::Error) -> BackendError {
    match e.kind() {
        std::io::ErrorKind::NotFound => BackendError::NotFound(format!("{what}: {e}")),
        std::io::ErrorKind::PermissionDenied => {
            BackendError::PermissionDenied(format!("{what}: {e}"))
        }
        _ => BackendError::Io(format!("{what}: {e}")),
    }
}

impl GrantedDevices {
    pub fn new(grants: Arc<Grants>, plugin: String, logger: Option<Logger>) -> GrantedDevices {
        let folders = grants
            .folders
            .iter()
            .filter_map(|f| f.canonicalize().ok())
            .collect();
        GrantedDevices {
            grants,
            folders,
            devices: Vec::new(),
            by_inode: HashMap::new(),
            staged: HashMap::new(),
            plugin,
            logger,
            logged: 0,
        }
    }

    /// Whether this instance holds `file` open read-write (and so holds its locks).
    pub fn held_for_writing(&self, file: &File) -> bool {
        file.metadata()
            .is_ok_and(|m| self.by_inode.contains_key(&(m.dev(), m.ino(), true)))
    }

    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// The device the plugin calls `id`.
    pub fn get(&self, id: u32) -> Option<Arc<Device>> {
        self.devices
            .get(id as usize)
            .and_then(Option::as_ref)
            .map(|(d, _, _)| Arc::clone(d))
    }

    /// Every device the plugin opened, by id.
    pub fn all(&self) -> Vec<Arc<Device>> {
        self.devices
            .iter()
            .flatten()
            .map(|(d, _, _)| Arc::clone(d))
            .collect()
    }

    fn entry(&self, id: u32) -> Result<&(Arc<Device>, Access, PathBuf), BackendError> {
        self.devices
            .get(id as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| BackendError::InvalidArgument(format!("device {id} is not open")))
    }

    /// Closes device `id` (a file not yet published stays staged until the operation
    /// ends). The descriptor closes once the engine holds no reader on it either: a
    /// plugin closes a published CSI device before asking the driver to unpublish it.
    pub fn close(&mut self, id: u32) {
        if let Some(slot) = self.devices.get_mut(id as usize) {
            *slot = None;
            self.by_inode.retain(|_, v| *v != id);
        }
    }

    pub fn setting(&self, key: &str) -> Option<String> {
        self.grants.settings.get(key).cloned()
    }

    pub fn granted_devices(&self) -> Vec<FileEntry> {
        self.grants
            .devices
            .iter()
            .map(|(name, path)| FileEntry {
                name: name.clone(),
                size: self
                    .open_device(path, false)
                    .and_then(|mut f| f.seek(SeekFrom::End(0)))
                    .unwrap_or(0),
            })
            .collect()
    }

    pub fn list_files(&self) -> Result<Vec<FileEntry>, BackendError> {
        if self.folders.is_empty() {
            return Err(denied("this pool grants no folder".into()));
        }
        let mut out = Vec::new();
        for folder in &self.folders {
            let entries = std::fs::read_dir(folder)
                .map_err(|e| io_err(format!("listing {}", folder.display()), e))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue; // temporary files of exports in progress, hidden files
                }
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let size = if kind.is_file() {
                    // The entry itself (lstat), never what a link it became points to.
                    entry
                        .metadata()
                        .ok()
                        .filter(|m| m.is_file())
                        .map(|m| m.len())
                } else if kind.is_symlink() {
                    self.linked_file_size(&entry.path())
                } else {
                    None
                };
                if let Some(size) = size {
                    out.push(FileEntry { name, size });
                }
                if out.len() >= MAX_LIST {
                    break;
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The size of the file the symbolic link `link` leads to, when that is a regular
    /// file inside a granted folder; `None` (nothing said) otherwise.
    fn linked_file_size(&self, link: &Path) -> Option<u64> {
        let target = link.canonicalize().ok()?;
        if !self.folders.iter().any(|f| target.starts_with(f)) {
            return None;
        }
        let meta = self
            .open_beneath(&target, libc::O_PATH)
            .ok()?
            .metadata()
            .ok()?;
        meta.is_file().then_some(meta.len())
    }

    /// Opens `path` (as [`Self::resolve`] gives it) with `flags`, non-blocking. Inside a
    /// granted folder it is opened relative to that folder with `openat2` and
    /// `RESOLVE_BENEATH`: whatever was swapped in since the check, the kernel does not
    /// leave the folder. Where `openat2` is missing (Linux before 5.6), the path is
    /// opened without following a link at its end. A granted device is opened as the
    /// operator named it.
    fn open_beneath(&self, path: &Path, flags: libc::c_int) -> std::io::Result<File> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::{AsRawFd, FromRawFd};
        // O_PATH takes no other flags (openat2 refuses them); it never blocks anyway.
        let flags = if flags & libc::O_PATH != 0 {
            flags | libc::O_CLOEXEC
        } else {
            flags | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY
        };
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
        };
        let open_at = |dir: libc::c_int, p: &Path, flags: libc::c_int| {
            let p = c(p)?;
            // SAFETY: a valid NUL-terminated path; the descriptor returned is ours.
            let fd = unsafe { libc::openat(dir, p.as_ptr(), flags) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fd is a descriptor just opened and owned by nobody else.
            Ok(unsafe { File::from_raw_fd(fd) })
        };
        let Some((folder, rel)) = self
            .folders
            .iter()
            .find_map(|f| path.strip_prefix(f).ok().map(|r| (f, r)))
        else {
            return open_at(libc::AT_FDCWD, path, flags);
        };
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(folder)?;
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        /// `struct open_how` of linux/openat2.h.
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let how = OpenHow {
            flags: flags as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
        };
        let crel = c(rel)?;
        // SAFETY: openat2 reads the path and `how` (of the size given) and returns a new
        // descriptor or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                crel.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: fd is a descriptor just opened and owned by nobody else.
            return Ok(unsafe { File::from_raw_fd(fd as libc::c_int) });
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOSYS) => open_at(libc::AT_FDCWD, path, flags | libc::O_NOFOLLOW),
            Some(libc::EXDEV) => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "it leads outside the folders this pool grants",
            )),
            _ => Err(e),
        }
    }

    /// Opens a file or block device for the plugin ([`Self::open_beneath`]); anything
    /// else (a FIFO, a character device, a folder) is refused before it can block a read
    /// or mean something other than bytes at offsets.
    fn open_device(&self, path: &Path, write: bool) -> std::io::Result<File> {
        use std::os::unix::fs::FileTypeExt;
        use std::os::unix::io::AsRawFd;
        let file = self.open_beneath(path, if write { libc::O_RDWR } else { libc::O_RDONLY })?;
        let kind = file.metadata()?.file_type();
        if !kind.is_file() && !kind.is_block_device() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file or a block device",
            ));
        }
        // Blocking again: O_NONBLOCK was for the open only.
        // SAFETY: fcntl on a descriptor this function owns.
        unsafe {
            let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            if fl < 0 || libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(file)
    }

    fn resolve(&self, name: &str, relative_to: Option<u32>) -> Result<PathBuf, BackendError> {
        if relative_to.is_none() {
            if let Some(p) = self.grants.devices.get(name) {
                return Ok(p.clone());
            }
        }
        let base = match relative_to {
            Some(id) => self
                .entry(id)?
                .2
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            None => self.folders.first().cloned().ok_or_else(|| {
                denied(format!(
                    "{name}: this pool grants no folder and no device of that name"
                ))
            })?,
        };
        let joined = base.join(name);
        let canonical = joined
            .canonicalize()
            .map_err(|e| io_err(format!("{name} (as {})", joined.display()), e))?;
        let inside = self.folders.iter().any(|f| canonical.starts_with(f))
            || self
                .grants
                .devices
                .values()
                .any(|d| d.canonicalize().is_ok_and(|d| d == canonical));
        if !inside {
            return Err(denied(format!(
                "{name} resolves to {}, outside the folders this pool grants",
                canonical.display()
            )));
        }
        Ok(canonical)
    }

    pub fn open(
        &mut self,
        name: &str,
        relative_to: Option<u32>,
        access: Access,
    ) -> Result<u32, BackendError> {
        let write = access == Access::ReadWrite;
        if write && !self.grants.writable {
            return Err(denied(format!("{name}: this pool is granted read-only")));
        }
        let path = self.resolve(name, relative_to)?;
        let file = self
            .open_device(&path, write)
            .map_err(|e| io_err(format!("opening {}", path.display()), e))?;
        // The same file open the same way is the same device (and our own locks on it
        // must not read as somebody else's).
        let meta = file
            .metadata()
            .map_err(|e| io_err(format!("{}", path.display()), e))?;
        if let Some(&id) = self.by_inode.get(&(meta.dev(), meta.ino(), write)) {
            return Ok(id);
        }
        if write {
            // Never change what QEMU has open, and keep QEMU out while we do.
            let busy = crate::locks::in_use(&file)
                .map_err(|e| io_err(format!("testing the locks of {}", path.display()), e))?;
            if busy {
                return Err(BackendError::Busy(format!(
                    "{} is in use by another process (it holds QEMU's image lock); stop the VM or tool using it, or retry later",
                    path.display()
                )));
            }
            crate::locks::lock_for_writing(&file)
                .map_err(|e| io_err(format!("locking {}", path.display()), e))?;
        }
        self.add(file, path, access)
    }

    fn add(&mut self, mut file: File, path: PathBuf, access: Access) -> Result<u32, BackendError> {
        let meta = file
            .metadata()
            .map_err(|e| io_err(format!("{}", path.display()), e))?;
        let key = (meta.dev(), meta.ino(), access == Access::ReadWrite);
        if let Some(&id) = self.by_inode.get(&key) {
            return Ok(id);
        }
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| io_err(format!("sizing {}", path.display()), e))?;
        let id = u32::try_from(self.devices.len())
            .map_err(|_| BackendError::Io("too many devices".into()))?;
        let device = Device {
            id,
            name: path.display().to_string(),
            file,
            size,
        };
        self.devices.push(Some((Arc::new(device), access, path)));
        self.by_inode.insert(key, id);
        Ok(id)
    }

    pub fn device_size(&self, id: u32) -> Result<u64, BackendError> {
        Ok(self.entry(id)?.0.size)
    }

    pub fn read_at(&self, id: u32, offset: u64, length: u32) -> Result<Vec<u8>, BackendError> {
        let dev = &self.entry(id)?.0;
        let n = u64::from(length.min(MAX_READ_AT)).min(dev.size.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; n];
        dev.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| io_err(format!("reading {n} bytes at {offset} of {}", dev.name), e))?;
        Ok(buf)
    }

    fn writable_entry(&self, id: u32) -> Result<&Arc<Device>, BackendError> {
        let (dev, access, _) = self.entry(id)?;
        if *access != Access::ReadWrite {
            return Err(denied(format!("{} is open read-only", dev.name)));
        }
        Ok(dev)
    }

    pub fn write_at(&self, id: u32, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let dev = self.writable_entry(id)?;
        if !fits_a_file(offset.checked_add(data.len() as u64)) {
            return Err(BackendError::OutOfRange(format!(
                "writing {} bytes at {offset} of {}: past the largest offset a file can have",
                data.len(),
                dev.name
            )));
        }
        dev.file.write_all_at(data, offset).map_err(|e| {
            io_err(
                format!("writing {} bytes at {offset} of {}", data.len(), dev.name),
                e,
            )
        })
    }

    pub fn set_size(&mut self, id: u32, size: u64) -> Result<(), BackendError> {
        let dev = self.writable_entry(id)?;
        if !fits_a_file(Some(size)) {
            return Err(BackendError::OutOfRange(format!(
                "sizing {} to {size} bytes: more than a file can hold",
                dev.name
            )));
        }
        dev.file
            .set_len(size)
            .map_err(|e| io_err(format!("sizing {}", dev.name), e))?;
        let (old, access, path) = self.entry(id)?;
        let file = old
            .file
            .try_clone()
            .map_err(|e| io_err(old.name.clone(), e))?;
        let updated = Device {
            id,
            name: old.name.clone(),
            file,
            size,
        };
        self.devices[id as usize] = Some((Arc::new(updated), *access, path.clone()));
        Ok(())
    }

    pub fn flush(&self, id: u32) -> Result<(), BackendError> {
        let dev = &self.entry(id)?.0;
        if !self.grants.sync {
            return Ok(());
        }
        dev.file
            .sync_all()
            .map_err(|e| io_err(format!("syncing {}", dev.name), e))
    }

    /// The first granted folder, for files the plugin creates or removes.
    fn writable_folder(&self, name: &str) -> Result<PathBuf, BackendError> {
        if !self.grants.writable {
            return Err(denied(format!("{name}: this pool is granted read-only")));
        }
        if name.is_empty() || name.starts_with('.') || name.contains('/') || name.contains('\0') {
            return Err(BackendError::InvalidArgument(format!(
                "{name:?} is not a plain file name"
            )));
        }
        self.folders
            .first()
            .cloned()
            .ok_or_else(|| denied("this pool grants no folder".into()))
    }

    /// Creates `.NAME.snapport-PID-N`, to become `NAME` on [`Self::publish_file`]. Staged
    /// files that processes which died (kill -9, power loss) left in the folder are
    /// removed first.
    pub fn create_file(&mut self, name: &str) -> Result<u32, BackendError> {
        let folder = self.writable_folder(name)?;
        let target = folder.join(name);
        if target.symlink_metadata().is_ok() {
            return Err(BackendError::Conflict(format!(
                "{} exists already",
                target.display()
            )));
        }
        remove_stale_temporaries(&folder);
        let pid = std::process::id();
        for n in 0..1000 {
            let temp = folder.join(format!(".{name}.snapport-{pid}-{n}"));
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&temp)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(format!("creating {}", temp.display()), e)),
            };
            let staged = Staged {
                _cleanup: snapport_core::cleanup::register(&temp),
                temp: temp.clone(),
                target,
            };
            let id = self.add(file, temp, Access::ReadWrite)?;
            self.staged.insert(id, staged);
            return Ok(id);
        }
        Err(BackendError::Conflict(format!(
            "too many files being created as {name}"
        )))
    }

    /// Whether device `id` is open read-write (the host may write data there).
    pub fn is_writable(&self, id: u32) -> bool {
        self.writable_entry(id).is_ok()
    }

    /// Removes every created file not yet published.
    pub fn discard_staged(&mut self) {
        for (_, staged) in self.staged.drain() {
            let _ = std::fs::remove_file(&staged.temp);
        }
    }

    /// Renames a created file to its final name; never replaces an existing file.
    pub fn publish_file(&mut self, id: u32) -> Result<(), BackendError> {
        let Some(staged) = self.staged.get(&id) else {
            return Err(BackendError::InvalidArgument(format!(
                "device {id} is not a file this plugin created"
            )));
        };
        snapport_core::output::rename_no_replace(&staged.temp, &staged.target).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                BackendError::Conflict(format!("{} exists already", staged.target.display()))
            } else {
                io_err(
                    format!(
                        "renaming {} to {}",
                        staged.temp.display(),
                        staged.target.display()
                    ),
                    e,
                )
            }
        })?;
        let staged = self.staged.remove(&id).expect("checked above");
        if let Some(entry) = self.devices[id as usize].as_mut() {
            entry.2 = staged.target;
        }
        Ok(())
    }

    /// Removes a regular file (not a folder, not through a symbolic link) from the first
    /// granted folder.
    pub fn remove_file(&mut self, name: &str) -> Result<(), BackendError> {
        let path = self.writable_folder(name)?.join(name);
        let meta = path
            .symlink_metadata()
            .map_err(|e| io_err(format!("{}", path.display()), e))?;
        if !meta.is_file() {
            return Err(denied(format!("{} is not a regular file", path.display())));
        }
        // A file QEMU has open (a running VM's disk) is not pulled from under it.
        let file =
            File::open(&path).map_err(|e| io_err(format!("opening {}", path.display()), e))?;
        let busy = !self.held_for_writing(&file)
            && crate::locks::in_use(&file)
                .map_err(|e| io_err(format!("testing the locks of {}", path.display()), e))?;
        if busy {
            return Err(BackendError::Busy(format!(
                "{} is in use by another process (it holds QEMU's image lock); stop the VM or tool using it first",
                path.display()
            )));
        }
        std::fs::remove_file(&path).map_err(|e| io_err(format!("removing {}", path.display()), e))
    }

    /// Passes a log line on, made printable (no escape sequence reaches a terminal),
    /// cut to [`MAX_LOG_LINE`] bytes, and at most [`MAX_LOG_LINES`] lines per instance:
    /// a plugin cannot flood the operator's terminal or the host's memory.
    pub fn log(&mut self, level: LogLevel, message: &str) {
        let Some(l) = &self.logger else {
            return;
        };
        self.logged = self.logged.saturating_add(1);
        if self.logged <= MAX_LOG_LINES {
            l(
                &self.plugin,
                level,
                &crate::untrusted::printable(message, MAX_LOG_LINE),
            );
        } else if self.logged == MAX_LOG_LINES + 1 {
            l(
                &self.plugin,
                LogLevel::Warn,
                &format!("logged more than {MAX_LOG_LINES} lines; the rest are dropped"),
            );
        }
    }
}

impl Drop for GrantedDevices {
    /// Files created and never published are removed with the instance that made them:
    /// a failed, trapped or abandoned import leaves nothing behind.
    fn drop(&mut self) {
        for staged in self.staged.values() {
            let _ = std::fs::remove_file(&staged.temp);
        }
    }
}

/// Removes staged files (`.NAME.snapport-PID-N`) in `folder` whose process is gone: what a
/// `kill -9` or a power loss left of an import, whatever its name.
fn remove_stale_temporaries(folder: &Path) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file
            .strip_prefix('.')
            .and_then(|f| f.rsplit_once(".snapport-"))
            .map(|(_, rest)| rest)
        else {
            continue;
        };
        let Some((Ok(pid), Ok(_))) = rest
            .split_once('-')
            .map(|(p, n)| (p.parse::<i32>(), n.parse::<u32>()))
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = pid == std::process::id() as i32
            || unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether a file can reach `end` (file offsets are signed 64-bit numbers); `None` is an
/// end that overflowed.
fn fits_a_file(end: Option<u64>) -> bool {
    end.is_some_and(|end| i64::try_from(end).is_ok())
}
