//! Granted devices and files in granted folders, through the host's calls.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::{host, Access, BackendError, DeviceId, FolderId, Result};

/// The most bytes one `read-at` returns (the host caps it at 1 MiB); longer reads here
/// are split into calls of this size.
pub const READ_CHUNK: u64 = 1 << 20;

/// A device the host opened for this plugin: a granted block device or file, or a file
/// inside a granted folder. It knows its size as the host reported it.
///
/// Dropping it does not close it: the host hands out the same number to every opening of
/// the same file, so another `Device` may hold it; [`Device::close`] says when to let go.
/// Everything the plugin opened is closed when its instance ends anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    id: DeviceId,
    size: u64,
    /// What it was opened as, for error texts.
    name: String,
}

impl Device {
    /// Opens a granted device by its grant name, or a file by its path in the first
    /// granted folder (`host::open`).
    pub fn open(name: &str, access: Access) -> Result<Device> {
        Device::opened(host::open(name, None, access)?, name)
    }

    /// Opens `name` relative to the folder of `base`: a qcow2 backing file next to its
    /// overlay.
    pub fn open_relative(name: &str, base: &Device, access: Access) -> Result<Device> {
        Device::opened(host::open(name, Some(base.id), access)?, name)
    }

    /// Opens the file or block device at `path` inside granted folder `folder`.
    pub fn open_in(folder: FolderId, path: &str, access: Access) -> Result<Device> {
        Device::opened(host::open_in(folder, path, access)?, path)
    }

    /// Creates the file `path` inside granted folder `folder`, empty and open read-write,
    /// under a hidden temporary name until [`Device::publish`]: the host removes it if
    /// the operation fails first. `conflict` if `path` exists.
    pub fn create_in(folder: FolderId, path: &str) -> Result<Device> {
        Device::opened(host::create_file_in(folder, path)?, path)
    }

    /// A device this plugin opened by number (from `host::open` and friends).
    pub fn from_id(id: DeviceId, name: &str) -> Result<Device> {
        Device::opened(id, name)
    }

    fn opened(id: DeviceId, name: &str) -> Result<Device> {
        let size = host::device_size(id).map_err(|e| e.context(name))?;
        Ok(Device {
            id,
            size,
            name: String::from(name),
        })
    }

    /// The host's number for it, which `data` extents name.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// Size in bytes, as opened or last set through [`Device::set_size`].
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The name or path it was opened by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fills `buf` from `offset` (metadata: bulk data goes in extents, not through the
    /// plugin). `out-of-range` if the device ends first.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let want = ((buf.len() - done) as u64).min(READ_CHUNK) as u32;
            let at = offset
                .checked_add(done as u64)
                .ok_or_else(|| self.past_end(offset, buf.len()))?;
            let got = host::read_at(self.id, at, want).map_err(|e| e.context(&self.name))?;
            if got.is_empty() || got.len() > buf.len() - done {
                return Err(self.past_end(offset, buf.len()));
            }
            buf[done..done + got.len()].copy_from_slice(&got);
            done += got.len();
        }
        Ok(())
    }

    /// `length` bytes from `offset`, all of them or `out-of-range`.
    pub fn read_vec(&self, offset: u64, length: usize) -> Result<Vec<u8>> {
        let mut buf = alloc::vec![0u8; length];
        self.read_exact_at(offset, &mut buf)?;
        Ok(buf)
    }

    fn past_end(&self, offset: u64, length: usize) -> BackendError {
        BackendError::OutOfRange(format!(
            "{}: {length} bytes at {offset} run past its end ({} bytes)",
            self.name, self.size
        ))
    }

    /// Writes metadata at `offset` (the device must be open read-write); a file grows to
    /// hold it, and the size known here follows.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        host::write_at(self.id, offset, bytes).map_err(|e| e.context(&self.name))?;
        self.size = self.size.max(offset.saturating_add(bytes.len() as u64));
        Ok(())
    }

    /// Makes the device (a file) `size` bytes long; growing leaves a sparse hole.
    pub fn set_size(&mut self, size: u64) -> Result<()> {
        host::set_size(self.id, size).map_err(|e| e.context(&self.name))?;
        self.size = size;
        Ok(())
    }

    /// Makes what was written durable when the operation asked for it (`--fsync`).
    pub fn flush(&self) -> Result<()> {
        host::flush(self.id).map_err(|e| e.context(&self.name))
    }

    /// Gives a file from [`Device::create_in`] (or `host::create_file`) its final name,
    /// atomically: the volume appears whole or not at all. `conflict` if the name was
    /// taken meanwhile.
    pub fn publish(&self) -> Result<()> {
        host::publish_file(self.id).map_err(|e| e.context(&self.name))
    }

    /// Releases the device now (a CSI volume is unpublished only once nobody holds it).
    pub fn close(self) {
        host::close(self.id)
    }
}

/// Granted folders: listing, creating and removing inside them by path. A path is
/// relative to the folder, names separated by `/`, none hidden (starting with `.`),
/// `""` for the folder itself.
pub mod folders {
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;

    use crate::{host, EntryKind, FolderEntry, FolderId, GrantedFolder, Result};

    /// The pool's granted folders, in the operator's order: `id` is what the other calls
    /// take. A folder that is missing keeps its number and answers `not-found`.
    pub fn granted() -> Vec<GrantedFolder> {
        host::granted_folders()
    }

    /// The first granted folder, if the pool grants one: where a plugin of one folder
    /// keeps its volumes.
    pub fn first() -> Option<GrantedFolder> {
        granted().into_iter().next()
    }

    /// Entries of folder `path` in granted folder `folder`, sorted by name, hidden names
    /// left out.
    pub fn list(folder: FolderId, path: &str) -> Result<Vec<FolderEntry>> {
        host::list_folder(folder, path)
    }

    /// Every file and block device below `path` (subfolders walked, at most `depth`
    /// levels down; 0 lists `path` only), as paths relative to the granted folder, with
    /// their entries. A subfolder that vanishes while walking is skipped.
    pub fn walk(folder: FolderId, path: &str, depth: u32) -> Result<Vec<(String, FolderEntry)>> {
        let mut out = Vec::new();
        walk_into(folder, path, depth, &mut out, true)?;
        Ok(out)
    }

    fn walk_into(
        folder: FolderId,
        path: &str,
        depth: u32,
        out: &mut Vec<(String, FolderEntry)>,
        top: bool,
    ) -> Result<()> {
        let entries = match list(folder, path) {
            Ok(e) => e,
            Err(crate::BackendError::NotFound(_)) if !top => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let full = join(path, &entry.name);
            match entry.kind {
                EntryKind::Folder if depth > 0 => walk_into(folder, &full, depth - 1, out, false)?,
                EntryKind::Folder => {}
                EntryKind::File | EntryKind::BlockDevice => out.push((full, entry)),
            }
        }
        Ok(())
    }

    /// `parent/name`, or `name` when `parent` is the folder itself (`""`).
    pub fn join(parent: &str, name: &str) -> String {
        if parent.is_empty() {
            String::from(name)
        } else {
            format!("{parent}/{name}")
        }
    }

    /// Creates folder `path` (its parent must exist); `conflict` if the name exists.
    pub fn create(folder: FolderId, path: &str) -> Result<()> {
        host::create_folder(folder, path)
    }

    /// Removes the file, or the empty folder, at `path`.
    pub fn remove(folder: FolderId, path: &str) -> Result<()> {
        host::remove_in(folder, path)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn join_leaves_the_root_out() {
            assert_eq!(super::join("", "a.raw"), "a.raw");
            assert_eq!(super::join("vm/disks", "a.raw"), "vm/disks/a.raw");
        }
    }
}
