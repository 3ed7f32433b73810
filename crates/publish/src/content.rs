//! What a publish serves: named items with random access to their bytes.

use snapport_core::volume_reader::VolumeReader;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes a client can ask for by range. Reads block; the server calls them on its blocking
/// pool.
pub trait Content: Send + Sync {
    fn size(&self) -> u64;
    /// Hands bytes `[offset, offset + len)` to `sink` in order, in blocks of at most 1 MiB.
    fn read_range(
        &self,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()>;
}

/// A volume's logical bytes, read through its extent map (holes as zeros): raw output,
/// served without a copy anywhere.
pub struct VolumeContent(pub VolumeReader);

impl Content for VolumeContent {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read_range(
        &self,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        self.0
            .read_range(offset, len, sink)
            .map_err(std::io::Error::other)
    }
}

/// A finished file: a compressed or qcow2 export, prepared before it is served.
pub struct FileContent {
    file: File,
    size: u64,
}

impl FileContent {
    pub fn new(file: File) -> std::io::Result<FileContent> {
        let size = file.metadata()?.len();
        Ok(FileContent { file, size })
    }
}

impl Content for FileContent {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_range(
        &self,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let end = offset.saturating_add(len).min(self.size);
        let mut pos = offset;
        while pos < end {
            let n = (end - pos).min(1 << 20) as usize;
            let mut block = vec![0u8; n];
            self.file.read_exact_at(&mut block, pos)?;
            sink(block)?;
            pos += n as u64;
        }
        Ok(())
    }
}

/// What is known of an item's SHA-256: computed on the side, it may come late or fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sha256State {
    Computing,
    /// 64 lowercase hex digits.
    Known(String),
    Failed(String),
}

/// One published item: a name in the URL, its bytes, its validator and its digest.
pub struct Item {
    /// The file name it is served under (`disk.raw`): letters, digits, `.`, `_`, `-`, `@`.
    pub name: String,
    pub content: Arc<dyn Content>,
    /// A strong ETag, quoted: the same bytes under the same ETag, across server restarts,
    /// so a client can resume from another run of the same publish.
    pub etag: String,
    pub sha256: Arc<Mutex<Sha256State>>,
    /// The content digest (`sha256-64k-4m:HEX`, see `snapport_core::digest`) of the
    /// served bytes, known no later than the SHA-256. Clients verify it group by group
    /// as the bytes arrive, in parallel streams, instead of reading the file back.
    pub content_digest: Arc<Mutex<Option<String>>>,
    pub(crate) stats: ItemStats,
}

#[derive(Default)]
pub(crate) struct ItemStats {
    pub bytes_sent: AtomicU64,
    pub downloads: AtomicU64,
    pub active: AtomicU64,
}

impl Item {
    pub fn new(name: &str, content: Arc<dyn Content>, etag: String) -> Item {
        Item {
            name: name.to_string(),
            content,
            etag,
            sha256: Arc::new(Mutex::new(Sha256State::Computing)),
            content_digest: Arc::new(Mutex::new(None)),
            stats: ItemStats::default(),
        }
    }

    pub fn sha256(&self) -> Sha256State {
        self.sha256
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_sha256(&self, state: Sha256State) {
        *self.sha256.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    pub fn content_digest(&self) -> Option<String> {
        self.content_digest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn downloads(&self) -> u64 {
        self.stats.downloads.load(Ordering::Relaxed)
    }
}

/// Whether `name` may be served: a plain file name, no path, nothing to escape.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}
