//! What a publish serves: named items with random access to their bytes.

use snapport_core::volume_reader::VolumeReader;
use std::collections::HashMap;
use std::fs::File;
use std::net::IpAddr;
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
    /// Per client address, what partial responses delivered (see [`Item::delivered`]).
    partial: Mutex<HashMap<IpAddr, Coverage>>,
}

/// Client addresses whose partial deliveries are tracked per item, and ranges per address:
/// beyond them a delivery is not recorded (it can only count a download later, never
/// earlier).
const MAX_TRACKED_CLIENTS: usize = 256;
const MAX_TRACKED_RANGES: usize = 1024;

/// The byte ranges delivered to one client: sorted, disjoint, non-adjacent `[start, end)`.
#[derive(Default, Debug)]
pub(crate) struct Coverage(Vec<(u64, u64)>);

impl Coverage {
    /// Adds `[start, end)`, merged with what it overlaps or touches; `false` (and nothing
    /// added) when that would make more than `MAX_TRACKED_RANGES` ranges.
    fn add(&mut self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        let first = self.0.partition_point(|&(_, e)| e < start);
        let last = self.0.partition_point(|&(s, _)| s <= end);
        if first == last && self.0.len() >= MAX_TRACKED_RANGES {
            return false;
        }
        let merged = self.0[first..last]
            .iter()
            .fold((start, end), |(s, e), &(a, b)| (s.min(a), e.max(b)));
        self.0.splice(first..last, [merged]);
        true
    }

    fn covers(&self, size: u64) -> bool {
        matches!(self.0[..], [(0, end)] if end >= size)
    }
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

    /// Records that one response handed `len` bytes from `start` to the connection of
    /// `client`, and counts the complete downloads that makes.
    ///
    /// A download is complete when the whole item was delivered: by one response that
    /// carried every byte, or by partial responses (ranges, or transfers cut off and
    /// resumed) that together delivered every byte to the same client address; those
    /// then count once, and that client's tally starts again. So a probe of a few bytes
    /// never counts, a resumed transfer or the parallel ranges of a `fetch` count once
    /// when they complete the file, and two clients that each got half do not count.
    /// Parallel partial downloads by several clients behind one address at the same time
    /// may count as one: the count errs towards serving longer, never towards stopping
    /// before a client has its bytes.
    pub(crate) fn delivered(&self, client: IpAddr, start: u64, len: u64) {
        let size = self.content.size();
        if len == 0 {
            return;
        }
        if start == 0 && len >= size {
            self.stats.downloads.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut partial = self.stats.partial.lock().unwrap_or_else(|p| p.into_inner());
        if !partial.contains_key(&client) && partial.len() >= MAX_TRACKED_CLIENTS {
            return;
        }
        let coverage = partial.entry(client).or_default();
        if coverage.add(start, start.saturating_add(len)) && coverage.covers(size) {
            partial.remove(&client);
            self.stats.downloads.fetch_add(1, Ordering::Relaxed);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Sized(u64);

    impl Content for Sized {
        fn size(&self) -> u64 {
            self.0
        }

        fn read_range(
            &self,
            _: u64,
            _: u64,
            _: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
        ) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn coverage_merges_overlapping_and_touching_ranges() {
        let mut c = Coverage::default();
        assert!(c.add(10, 20) && c.add(30, 40) && c.add(0, 5));
        assert_eq!(c.0, [(0, 5), (10, 20), (30, 40)]);
        assert!(c.add(5, 10));
        assert_eq!(c.0, [(0, 20), (30, 40)]);
        assert!(c.add(15, 35));
        assert_eq!(c.0, [(0, 40)]);
        assert!(c.covers(40) && !c.covers(41));
        let mut c = Coverage::default();
        for i in 0..MAX_TRACKED_RANGES as u64 {
            assert!(c.add(i * 2, i * 2 + 1));
        }
        assert!(!c.add(1 << 40, 1 << 41), "bounded");
        assert!(c.add(1, 2), "a merge is always taken");
    }

    #[test]
    fn downloads_count_whole_deliveries_per_client() {
        let item = Item::new("x", Arc::new(Sized(4096)), "\"e\"".into());
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "::1".parse().unwrap());
        item.delivered(a, 0, 1);
        item.delivered(a, 0, 1024);
        item.delivered(a, 4095, 1);
        assert_eq!(
            item.downloads(),
            0,
            "probes are not downloads, even of the end"
        );
        item.delivered(a, 0, 4096);
        assert_eq!(item.downloads(), 1, "one whole response");
        // A cut transfer resumed: once, when the file is complete.
        item.delivered(b, 0, 1600);
        item.delivered(b, 1600, 1200);
        assert_eq!(item.downloads(), 1);
        item.delivered(b, 2800, 1296);
        assert_eq!(item.downloads(), 2);
        // Halves to two clients are not a download.
        item.delivered(b, 0, 2048);
        item.delivered("10.0.0.1".parse().unwrap(), 2048, 2048);
        assert_eq!(item.downloads(), 2);
    }
}
