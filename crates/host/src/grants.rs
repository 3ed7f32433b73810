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
//!
//! The 0.1.2 calls address each granted folder by its number (its place in the
//! operator's list, kept even when the folder is missing) and a path inside it, checked
//! as text first (no `..`, no hidden name, no NUL, at most 4 KiB) and then opened from the
//! folder with `RESOLVE_BENEATH` only: a link may lead anywhere inside its own folder,
//! never out of it, not even into another granted folder. What they create is made with
//! the `*at` calls on the opened parent folder, never by a path the kernel resolves anew.

use crate::bindings::snapport::backend::types::{
    Access, BackendError, EntryKind, FileEntry, FolderEntry, GrantedFolder, LogLevel,
};
use snapport_core::extent::Device;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The most a plugin reads per `read-at` call (metadata only; bulk data moves host-side).
pub const MAX_READ_AT: u32 = 1 << 20;
/// The most entries `list-files` returns, and the most `list-folder` takes (more is
/// `out-of-range`: a plugin must not act on a listing cut short without knowing).
const MAX_LIST: usize = 100_000;
/// The longest path the 0.1.2 calls take (Linux's `PATH_MAX`).
const MAX_PATH: usize = 4096;
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
    /// Canonical forms of the granted folders, by folder id (the operator's order); `None`
    /// for one that does not exist now, which keeps its number so that the ids of the
    /// others never shift.
    folders: Vec<Option<PathBuf>>,
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
            .map(|f| f.canonicalize().ok())
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
        if self.existing_folders().next().is_none() {
            return Err(denied("this pool grants no folder".into()));
        }
        let mut out = Vec::new();
        for folder in self.existing_folders() {
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
                // Refused whole, never cut short (a cut listing would hide volumes).
                if out.len() > MAX_LIST {
                    return Err(BackendError::OutOfRange(format!(
                        "the granted folders hold more than the {MAX_LIST} files a listing holds"
                    )));
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
        if !self.existing_folders().any(|f| target.starts_with(f)) {
            return None;
        }
        let meta = self
            .open_beneath(&target, libc::O_PATH)
            .ok()?
            .metadata()
            .ok()?;
        meta.is_file().then_some(meta.len())
    }

    /// The granted folders that exist, in the operator's order.
    fn existing_folders(&self) -> impl Iterator<Item = &PathBuf> {
        self.folders.iter().flatten()
    }

    /// Opens `path` (as [`Self::resolve`] gives it) with `flags`, non-blocking. Inside a
    /// granted folder it is opened relative to that folder with [`open_under`]; a
    /// granted device is opened as the operator named it.
    fn open_beneath(&self, path: &Path, flags: libc::c_int) -> std::io::Result<File> {
        let flags = nonblocking(flags);
        match self
            .existing_folders()
            .find_map(|f| path.strip_prefix(f).ok().map(|r| (f, r)))
        {
            Some((folder, rel)) => open_under(folder, rel, flags),
            None => open_at(libc::AT_FDCWD, path, flags),
        }
    }

    /// Opens a file or block device for the plugin ([`Self::open_beneath`]); anything
    /// else (a FIFO, a character device, a folder) is refused before it can block a read
    /// or mean something other than bytes at offsets.
    fn open_device(&self, path: &Path, write: bool) -> std::io::Result<File> {
        let file = self.open_beneath(path, if write { libc::O_RDWR } else { libc::O_RDONLY })?;
        device_file(file)
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
            None => self.existing_folders().next().cloned().ok_or_else(|| {
                denied(format!(
                    "{name}: this pool grants no folder and no device of that name"
                ))
            })?,
        };
        let joined = base.join(name);
        let canonical = joined
            .canonicalize()
            .map_err(|e| io_err(format!("{name} (as {})", joined.display()), e))?;
        let inside = self.existing_folders().any(|f| canonical.starts_with(f))
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
        self.opened(file, path, access)
    }

    /// Gives the plugin a device number for `file`, opened as `access` from `path`.
    fn opened(&mut self, file: File, path: PathBuf, access: Access) -> Result<u32, BackendError> {
        let write = access == Access::ReadWrite;
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

    /// Writes `data` at `offset`; a write past the end grows the file, and the device's
    /// size with it, so `read-at` and `device-size` see the bytes just written.
    pub fn write_at(&mut self, id: u32, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let dev = self.writable_entry(id)?;
        let end = offset.checked_add(data.len() as u64);
        if !fits_a_file(end) {
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
        })?;
        match end {
            // An empty write writes nothing, and grows nothing.
            Some(end) if !data.is_empty() && end > dev.size => self.resized(id, end),
            _ => Ok(()),
        }
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
        self.resized(id, size)
    }

    /// Replaces device `id`'s entry by one of the new `size`: readers the engine already
    /// holds keep the size they were made with.
    fn resized(&mut self, id: u32, size: u64) -> Result<(), BackendError> {
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
        self.existing_folders()
            .next()
            .cloned()
            .ok_or_else(|| denied("this pool grants no folder".into()))
    }

    /// Creates `.NAME.snapport-PID-N` in the first granted folder, to become `NAME` on
    /// [`Self::publish_file`].
    pub fn create_file(&mut self, name: &str) -> Result<u32, BackendError> {
        let folder = self.writable_folder(name)?;
        let dir = open_under(&folder, Path::new(""), libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| io_err(format!("opening {}", folder.display()), e))?;
        self.stage(&dir, &folder, name)
    }

    /// Creates `.NAME.snapport-PID-N` in the open folder `dir` (at `dir_path`), to become
    /// `NAME` on [`Self::publish_file`]. Staged files that processes which died (kill -9,
    /// power loss) left in that folder are removed first.
    fn stage(&mut self, dir: &File, dir_path: &Path, name: &str) -> Result<u32, BackendError> {
        let target = dir_path.join(name);
        if open_in_dir(dir, name, libc::O_PATH).is_ok() {
            return Err(BackendError::Conflict(format!(
                "{} exists already",
                target.display()
            )));
        }
        remove_stale_temporaries(dir_path);
        let pid = std::process::id();
        for n in 0..1000 {
            let temp_name = format!(".{name}.snapport-{pid}-{n}");
            let temp = dir_path.join(&temp_name);
            let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
            let file = match open_in_dir(dir, &temp_name, flags).and_then(device_file) {
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
        let file =
            File::open(&path).map_err(|e| io_err(format!("opening {}", path.display()), e))?;
        self.check_not_in_use(&file, &path)?;
        std::fs::remove_file(&path).map_err(|e| io_err(format!("removing {}", path.display()), e))
    }

    /// A file QEMU has open (a running VM's disk) is not pulled from under it: `busy`
    /// when another process holds QEMU's image lock on `file` (shown as `path`).
    fn check_not_in_use(&self, file: &File, path: &Path) -> Result<(), BackendError> {
        let busy = !self.held_for_writing(file)
            && crate::locks::in_use(file)
                .map_err(|e| io_err(format!("testing the locks of {}", path.display()), e))?;
        if busy {
            return Err(BackendError::Busy(format!(
                "{} is in use by another process (it holds QEMU's image lock); stop the VM or tool using it first",
                path.display()
            )));
        }
        Ok(())
    }

    // 0.1.2: folders as trees, each granted folder addressed by its number.

    /// The canonical granted folder `id`; `not-found` past the operator's list or for a
    /// folder that does not exist (it keeps its number).
    fn folder(&self, id: u32) -> Result<PathBuf, BackendError> {
        match self.folders.get(id as usize) {
            Some(Some(folder)) => Ok(folder.clone()),
            Some(None) => Err(BackendError::NotFound(format!(
                "granted folder {id} ({}) does not exist",
                folder_name(&self.grants.folders[id as usize])
            ))),
            None if self.folders.is_empty() => Err(BackendError::NotFound(format!(
                "folder {id}: this pool grants no folder"
            ))),
            None => Err(BackendError::NotFound(format!(
                "folder {id}: this pool grants folders 0 to {}",
                self.folders.len() - 1
            ))),
        }
    }

    /// Granted folder `id` for a call that writes into it (`what`), with the folder that
    /// will hold `path` opened beneath it: `(folder, parent, name)`.
    fn parent_for_writing(
        &self,
        id: u32,
        path: &str,
        what: &str,
    ) -> Result<(PathBuf, File, String), BackendError> {
        check_path(path, false)?;
        let folder = self.folder(id)?;
        if !self.grants.writable {
            return Err(denied(format!(
                "{what} {path} in folder {id}: this pool is granted read-only"
            )));
        }
        let (parent, name) = split_path(path);
        let dir = open_under(&folder, Path::new(parent), libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| path_err(format!("folder {parent:?} of {path} in folder {id}"), e))?;
        Ok((folder, dir, name.to_string()))
    }

    pub fn granted_folders(&self) -> Vec<GrantedFolder> {
        self.grants
            .folders
            .iter()
            .enumerate()
            .map(|(id, f)| GrantedFolder {
                id: id as u32,
                name: folder_name(f),
                writable: self.grants.writable,
            })
            .collect()
    }

    /// The entries of folder `path` in granted folder `id`: files, folders and block
    /// devices, and symbolic links to one of those that stay inside the granted folder
    /// (checked as `open-in` would open them); sorted by name, hidden names and names
    /// that are not UTF-8 (a plugin could not name them back) left out.
    pub fn list_folder(&self, id: u32, path: &str) -> Result<Vec<FolderEntry>, BackendError> {
        check_path(path, true)?;
        let folder = self.folder(id)?;
        let shown = format!("folder {path:?} in folder {id}");
        let dir = open_under(&folder, Path::new(path), libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| path_err(shown.clone(), e))?;
        let names = read_names(&dir, MAX_LIST)
            .map_err(|e| io_err(format!("listing {shown}"), e))?
            .map_err(|n| {
                BackendError::OutOfRange(format!(
                    "{shown} holds {n} entries, more than the {MAX_LIST} a listing holds"
                ))
            })?;
        let mut out = Vec::new();
        for name in names {
            let Ok(name) = String::from_utf8(name) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let Ok(node) = open_in_dir(&dir, &name, libc::O_PATH) else {
                continue; // gone meanwhile
            };
            let Ok(mut meta) = node.metadata() else {
                continue;
            };
            let rel = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            if meta.file_type().is_symlink() {
                // Where it leads, if that is inside this folder; unlisted otherwise,
                // without a word about its target.
                match open_under(&folder, Path::new(&rel), libc::O_PATH).and_then(|f| f.metadata())
                {
                    Ok(m) => meta = m,
                    Err(_) => continue,
                }
            }
            use std::os::unix::fs::FileTypeExt;
            let kind = meta.file_type();
            let (kind, size) = if kind.is_file() {
                (EntryKind::File, meta.len())
            } else if kind.is_dir() {
                (EntryKind::Folder, 0)
            } else if kind.is_block_device() {
                let size = open_under(&folder, Path::new(&rel), libc::O_RDONLY)
                    .and_then(|mut f| f.seek(SeekFrom::End(0)))
                    .unwrap_or(0);
                (EntryKind::BlockDevice, size)
            } else {
                continue;
            };
            out.push(FolderEntry { name, kind, size });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Opens the file or block device at `path` in granted folder `id`, beneath it.
    pub fn open_in(&mut self, id: u32, path: &str, access: Access) -> Result<u32, BackendError> {
        check_path(path, false)?;
        let folder = self.folder(id)?;
        let write = access == Access::ReadWrite;
        if write && !self.grants.writable {
            return Err(denied(format!(
                "{path} in folder {id}: this pool is granted read-only"
            )));
        }
        let full = folder.join(path);
        let flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
        let file = open_under(&folder, Path::new(path), flags)
            .and_then(device_file)
            .map_err(|e| path_err(format!("opening {}", full.display()), e))?;
        self.opened(file, full, access)
    }

    /// Creates the folder `path` in granted folder `id`.
    pub fn create_folder(&mut self, id: u32, path: &str) -> Result<(), BackendError> {
        use std::os::unix::io::AsRawFd;
        let (folder, dir, name) = self.parent_for_writing(id, path, "creating")?;
        let c = c_path(Path::new(&name)).map_err(|e| io_err(name.clone(), e))?;
        // SAFETY: mkdirat with a descriptor we hold and a NUL-terminated name.
        if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o777) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        let shown = folder.join(path);
        Err(match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                BackendError::Conflict(format!("{} exists already", shown.display()))
            }
            _ => path_err(format!("creating {}", shown.display()), e),
        })
    }

    /// Creates `path` in granted folder `id` as [`Self::create_file`] does, staged in the
    /// folder that will hold it.
    pub fn create_file_in(&mut self, id: u32, path: &str) -> Result<u32, BackendError> {
        use std::os::unix::io::AsRawFd;
        let (folder, dir, name) = self.parent_for_writing(id, path, "creating")?;
        // The real path of the folder opened, for the staged file's cleanup (by path, so a
        // signal handler can do it) and the rename that publishes it.
        let dir_path = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))
            .or_else(|_| folder.join(split_path(path).0).canonicalize())
            .map_err(|e| io_err(format!("{path} in folder {id}"), e))?;
        if !dir_path.starts_with(&folder) {
            return Err(denied(format!(
                "{path} in folder {id}: it leads outside the folders this pool grants"
            )));
        }
        self.stage(&dir, &dir_path, &name)
    }

    /// Removes the file, symbolic link or empty folder at `path` in granted folder `id`.
    pub fn remove_in(&mut self, id: u32, path: &str) -> Result<(), BackendError> {
        use std::os::unix::io::AsRawFd;
        let (folder, dir, name) = self.parent_for_writing(id, path, "removing")?;
        let shown = folder.join(path);
        let node = open_in_dir(&dir, &name, libc::O_PATH)
            .and_then(|f| f.metadata())
            .map_err(|e| path_err(format!("{}", shown.display()), e))?;
        let kind = node.file_type();
        let flags = if kind.is_dir() {
            libc::AT_REMOVEDIR
        } else if kind.is_symlink() {
            0
        } else if kind.is_file() {
            let file = open_in_dir(&dir, &name, libc::O_RDONLY)
                .map_err(|e| path_err(format!("opening {}", shown.display()), e))?;
            self.check_not_in_use(&file, &shown)?;
            0
        } else {
            return Err(denied(format!(
                "{} is neither a regular file nor a folder",
                shown.display()
            )));
        };
        let c = c_path(Path::new(&name)).map_err(|e| io_err(name.clone(), e))?;
        // SAFETY: unlinkat with a descriptor we hold and a NUL-terminated name.
        if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        Err(match e.raw_os_error() {
            Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => {
                BackendError::Conflict(format!("{} is a folder that is not empty", shown.display()))
            }
            _ => path_err(format!("removing {}", shown.display()), e),
        })
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

/// `flags` as every open of the host wants them: close-on-exec, and non-blocking for the
/// open itself (a FIFO or a tape must not hang it) unless it is `O_PATH`, which takes no
/// other flags (openat2 refuses them) and never blocks anyway.
fn nonblocking(flags: libc::c_int) -> libc::c_int {
    if flags & libc::O_PATH != 0 {
        flags | libc::O_CLOEXEC
    } else {
        flags | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY
    }
}

fn c_path(p: &Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// `openat(dir, path, flags, mode)` as a [`File`].
fn open_at(dir: libc::c_int, path: &Path, flags: libc::c_int) -> std::io::Result<File> {
    use std::os::unix::io::FromRawFd;
    let p = c_path(path)?;
    // SAFETY: a valid NUL-terminated path; the mode is read only with O_CREAT.
    let fd = unsafe { libc::openat(dir, p.as_ptr(), flags, 0o666 as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a descriptor just opened and owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens the one name `name` (no `/`) inside the open folder `dir`, never following a
/// symbolic link there (`O_NOFOLLOW`; with `O_PATH` the link itself is opened).
fn open_in_dir(dir: &File, name: &str, flags: libc::c_int) -> std::io::Result<File> {
    use std::os::unix::io::AsRawFd;
    debug_assert!(!name.contains('/'));
    open_at(
        dir.as_raw_fd(),
        Path::new(name),
        nonblocking(flags) | libc::O_NOFOLLOW,
    )
}

/// Opens `rel` inside `folder` (a canonical granted folder) with `openat2` and
/// `RESOLVE_BENEATH`: whatever symbolic link is met or swapped in, the kernel does not
/// leave the folder (`EXDEV`, answered as permission denied). Where `openat2` is missing
/// (Linux before 5.6), the canonical path must lie inside the folder and is opened
/// without following a link at its end.
fn open_under(folder: &Path, rel: &Path, flags: libc::c_int) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::{AsRawFd, FromRawFd};
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
        flags: nonblocking(flags) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    let crel = c_path(rel)?;
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
    let outside = || {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "it leads outside the folders this pool grants",
        )
    };
    match e.raw_os_error() {
        Some(libc::ENOSYS) => {
            let canonical = folder.join(rel).canonicalize()?;
            if !canonical.starts_with(folder) {
                return Err(outside());
            }
            open_at(
                libc::AT_FDCWD,
                &canonical,
                nonblocking(flags) | libc::O_NOFOLLOW,
            )
        }
        Some(libc::EXDEV) => Err(outside()),
        _ => Err(e),
    }
}

/// `file` if it is a regular file or a block device, made blocking again (`O_NONBLOCK`
/// was for the open only); anything else is refused.
fn device_file(file: File) -> std::io::Result<File> {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::io::AsRawFd;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() && !kind.is_block_device() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "not a regular file or a block device",
        ));
    }
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if fl < 0 || libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// Checks a 0.1.2 `path` (see `wit/backend.wit`): names separated by `/`, none empty,
/// `.`, `..` or hidden, no NUL, at most [`MAX_PATH`] bytes. `""` (the folder itself) only
/// where `empty_ok`. Checked as text before anything touches the file system, so no
/// path trick depends on what the folder holds.
fn check_path(path: &str, empty_ok: bool) -> Result<(), BackendError> {
    let bad = |why: &str| {
        Err(BackendError::InvalidArgument(format!(
            "{:?}: {why}",
            crate::untrusted::printable(path, 200)
        )))
    };
    if path.is_empty() {
        return if empty_ok {
            Ok(())
        } else {
            bad("an empty path names no file")
        };
    }
    if path.len() > MAX_PATH {
        return Err(BackendError::InvalidArgument(format!(
            "a path of {} bytes; paths hold at most {MAX_PATH}",
            path.len()
        )));
    }
    if path.contains('\0') {
        return bad("a path holds no NUL");
    }
    for part in path.split('/') {
        if part.is_empty() {
            return bad("an empty name (paths are relative to the granted folder: no leading, trailing or double `/`)");
        }
        if part == "." || part == ".." {
            return bad("`.` and `..` are not names here; paths stay inside the granted folder");
        }
        if part.starts_with('.') {
            return bad("names starting with `.` are hidden (the host's temporary files)");
        }
    }
    Ok(())
}

/// `path` split into its parent folder (`""` for the granted folder) and its last name.
fn split_path(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// A folder's last path component, as the plugin sees it in `granted-folders`.
fn folder_name(folder: &Path) -> String {
    folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| folder.display().to_string())
}

/// An error of the file system on `what`, as a backend error: what is not there (a
/// missing name, a file where a folder was expected) is `not-found`.
fn path_err(what: String, e: std::io::Error) -> BackendError {
    match e.raw_os_error() {
        Some(libc::ENOTDIR) => BackendError::NotFound(format!("{what}: not a folder")),
        Some(libc::ELOOP) | Some(libc::EISDIR) => denied(format!("{what}: {e}")),
        _ => io_err(what, e),
    }
}

/// The names in the open folder `dir` not starting with `.` (hidden names, `.` and `..`
/// are skipped, never stored), as bytes; how many there are (`Err`) when more than `max`.
fn read_names(dir: &File, max: usize) -> std::io::Result<Result<Vec<Vec<u8>>, usize>> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: dup of a descriptor we hold; fdopendir takes the copy and closedir closes
    // it; readdir's entries are read before the next call.
    unsafe {
        let fd = libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = libc::fdopendir(fd);
        if stream.is_null() {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        let mut names = Vec::new();
        let mut visible = 0usize;
        let result = loop {
            *libc::__errno_location() = 0;
            let entry = libc::readdir(stream);
            if entry.is_null() {
                let errno = *libc::__errno_location();
                break if errno == 0 {
                    Ok(Ok(names))
                } else {
                    Err(std::io::Error::from_raw_os_error(errno))
                };
            }
            let name = std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()).to_bytes();
            if name.starts_with(b".") {
                // Hidden names are never listed: not kept either, however many.
                continue;
            }
            visible += 1;
            if visible > max {
                // Counted on, to say how many: without keeping them.
                names.clear();
                continue;
            }
            names.push(name.to_vec());
        };
        libc::closedir(stream);
        match result {
            Ok(Ok(_)) if visible > max => Ok(Err(visible)),
            r => r,
        }
    }
}
