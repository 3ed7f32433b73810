//! The qcow2 on-disk format, read side: header, snapshot table, L1/L2 mapping, compressed
//! cluster decoding. Pure and `no_std`: it sees the image only through [`Medium`], so the
//! same code runs in the guest (over host `read-at`) and natively under the fuzzer.
//!
//! Layout and field meanings follow QEMU's `docs/interop/qcow2.txt`. Everything read from
//! the image is hostile until checked: offsets against the file size, tables against the
//! other metadata, counts against QEMU's own limits.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

/// "QFI\xfb" (qcow2.txt, header byte 0).
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// QEMU's QCOW_MAX_SNAPSHOTS.
const MAX_SNAPSHOTS: u32 = 65536;
/// QEMU's QCOW_MAX_L1_SIZE is 32 MiB of entries.
const MAX_L1_ENTRIES: u32 = 32 * 1024 * 1024 / 8;
/// QEMU's QCOW_MAX_REFTABLE_SIZE is 8 MiB.
const MAX_REFTABLE_CLUSTERS_BYTES: u64 = 8 * 1024 * 1024;
/// Bits 9-55 of an L1 or standard L2 entry: the host cluster offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_COMPRESSED: u64 = 1 << 62;
/// Bit 63 of L1 and L2 entries: refcount exactly one (not part of what the entry names).
const COPIED: u64 = 1 << 63;
const L2_ZERO: u64 = 1;
/// Incompatible feature bits (qcow2.txt, header byte 72).
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
/// Header extension types (qcow2.txt, "Header extensions").
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;

/// Codec numbers this plugin puts in encoded extents and takes back in `decode`.
pub const CODEC_DEFLATE: u32 = 1;
pub const CODEC_ZSTD: u32 = 2;

/// Why a qcow2 image could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The metadata is inconsistent or hostile.
    Corrupt(String),
    /// Valid qcow2 that this reader does not handle (encryption, external data file).
    Unsupported(String),
    /// The medium failed (the host's message).
    Io(String),
    /// A request to the writer that cannot be met (unaligned, past the end, too large).
    Invalid(String),
}

pub type Result<T> = core::result::Result<T, Error>;

fn corrupt<T>(msg: String) -> Result<T> {
    Err(Error::Corrupt(msg))
}

/// Where the image bytes come from.
pub trait Medium {
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; a read past the end is an error, not a short read.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
}

impl<T: Medium + ?Sized> Medium for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

impl Medium for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = usize::try_from(offset).map_err(|_| Error::Io("offset too large".into()))?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= self.len())
            .ok_or_else(|| {
                Error::Io(format!(
                    "read of {} bytes at {offset} past the end",
                    buf.len()
                ))
            })?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

/// True when `first_bytes` start with the qcow2 magic.
pub fn is_qcow2(first_bytes: &[u8]) -> bool {
    first_bytes.len() >= 4 && first_bytes[..4] == MAGIC
}

/// A snapshot from the image's snapshot table.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    pub l1_table_offset: u64,
    pub l1_size: u32,
    pub disk_size: u64,
    pub date_sec: u32,
    pub date_nsec: u32,
    pub vm_state_size: u64,
    /// The table entry as stored (without its padding): kept whole when the table is
    /// rewritten, so fields this reader does not know survive.
    pub(crate) entry: Vec<u8>,
}

/// The parsed header and tables of one qcow2 file (one layer of a chain).
#[derive(Debug)]
pub struct Image {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub extended_l2: bool,
    pub compression_type: u8,
    pub dirty: bool,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    pub snapshots: Vec<Snapshot>,
    pub(crate) file_size: u64,
    pub(crate) l1_size: u32,
    pub(crate) l1_table_offset: u64,
    pub(crate) refcount_order: u32,
    pub(crate) refcount_table_offset: u64,
    pub(crate) refcount_table_clusters: u32,
    pub(crate) snapshots_offset: u64,
    /// Metadata ranges (offset, length) no data or L2 cluster may overlap.
    metadata: Vec<(u64, u64)>,
    l2_cache: RefCell<Option<(u64, Vec<u64>)>>,
}

/// One run of a layer's mapping, before backing layers are consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Stored at this host offset of the image file.
    Data(u64),
    /// Reads as zeros (a zero cluster or subcluster).
    Zero,
    /// Not allocated in this layer: the backing layer (or zeros) shows through.
    Unallocated,
    /// A compressed cluster; `skip` bytes of the decoded cluster precede the run.
    Compressed { offset: u64, stored: u32, skip: u32 },
}

/// A guest range and its run in one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub length: u64,
    pub run: Run,
}

impl Image {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    pub(crate) fn l2_entry_bytes(&self) -> u64 {
        if self.extended_l2 {
            16
        } else {
            8
        }
    }

    fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_bytes()
    }

    /// Guest bytes covered by one L2 table.
    pub fn l2_coverage(&self) -> u64 {
        self.l2_entries() << self.cluster_bits
    }

    /// Parses and checks the header, header extensions and snapshot table.
    pub fn open<M: Medium + ?Sized>(m: &M) -> Result<Image> {
        let file_size = m.size();
        if file_size < 72 {
            return corrupt(format!(
                "file of {file_size} bytes is too short for a qcow2 header (72 bytes)"
            ));
        }
        let mut h = [0u8; 112];
        let n = file_size.min(112) as usize;
        m.read_exact_at(0, &mut h[..n])?;
        if !is_qcow2(&h) {
            return corrupt("no qcow2 magic".into());
        }
        let version = be32(&h, 4);
        if version != 2 && version != 3 {
            return Err(Error::Unsupported(format!(
                "qcow2 version {version} (only 2 and 3 exist)"
            )));
        }
        let backing_file_offset = be64(&h, 8);
        let backing_file_size = be32(&h, 16);
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return corrupt(format!(
                "cluster_bits {cluster_bits} outside 9..=21 (512 B to 2 MiB clusters)"
            ));
        }
        let cluster_size = 1u64 << cluster_bits;
        let size = be64(&h, 24);
        let crypt_method = be32(&h, 32);
        if crypt_method != 0 {
            return Err(Error::Unsupported("encrypted qcow2 images".into()));
        }
        let l1_size = be32(&h, 36);
        let l1_table_offset = be64(&h, 40);
        let refcount_table_offset = be64(&h, 48);
        let refcount_table_clusters = be32(&h, 56);
        let nb_snapshots = be32(&h, 60);
        let snapshots_offset = be64(&h, 64);

        let (mut incompatible, mut header_length, mut compression_type) = (0u64, 72u32, 0u8);
        // Version 2 has 16-bit refcounts only.
        let mut refcount_order = 4;
        if version == 3 {
            if file_size < 104 {
                return corrupt("version 3 header is truncated (needs 104 bytes)".into());
            }
            incompatible = be64(&h, 72);
            refcount_order = be32(&h, 96);
            header_length = be32(&h, 100);
            if refcount_order > 6 {
                return corrupt(format!("refcount_order {refcount_order} > 6"));
            }
            if header_length < 104 || u64::from(header_length) > cluster_size.min(file_size) {
                return corrupt(format!("header_length {header_length} is out of range"));
            }
            if header_length > 104 {
                compression_type = h[104];
            }
        }
        if incompatible & !INCOMPAT_KNOWN != 0 {
            return Err(Error::Unsupported(format!(
                "unknown incompatible features {:#x}",
                incompatible & !INCOMPAT_KNOWN
            )));
        }
        if incompatible & INCOMPAT_CORRUPT != 0 {
            return corrupt(
                "image is marked corrupt by QEMU; repair it with `qemu-img check -r all`".into(),
            );
        }
        if incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(Error::Unsupported(
                "qcow2 with an external data file".into(),
            ));
        }
        if (incompatible & INCOMPAT_COMPRESSION != 0) != (compression_type != 0) {
            return corrupt(format!(
                "compression type {compression_type} disagrees with the compression-type feature bit"
            ));
        }
        if compression_type > 1 {
            return Err(Error::Unsupported(format!(
                "compression type {compression_type}"
            )));
        }
        let extended_l2 = incompatible & INCOMPAT_EXTL2 != 0;
        if extended_l2 && cluster_bits < 14 {
            return corrupt("extended L2 entries need clusters of at least 16 KiB".into());
        }

        let mut image = Image {
            version,
            cluster_bits,
            size,
            extended_l2,
            compression_type,
            dirty: incompatible & INCOMPAT_DIRTY != 0,
            backing_file: None,
            backing_format: None,
            snapshots: Vec::new(),
            file_size,
            l1_size,
            l1_table_offset,
            refcount_order,
            refcount_table_offset,
            refcount_table_clusters,
            snapshots_offset,
            metadata: vec![(0, cluster_size)],
            l2_cache: RefCell::new(None),
        };

        // The active L1 table must cover the virtual size.
        image.check_l1(l1_table_offset, l1_size, size, "active L1 table")?;
        image
            .metadata
            .push((l1_table_offset, u64::from(l1_size) * 8));

        let reftable_bytes = u64::from(refcount_table_clusters) << cluster_bits;
        if reftable_bytes > MAX_REFTABLE_CLUSTERS_BYTES {
            return corrupt(format!(
                "refcount table of {reftable_bytes} bytes is too large"
            ));
        }
        image.check_table("refcount table", refcount_table_offset, reftable_bytes)?;
        image.metadata.push((refcount_table_offset, reftable_bytes));

        if backing_file_offset != 0 {
            if backing_file_size == 0 || backing_file_size > 1023 {
                return corrupt(format!(
                    "backing file name of {backing_file_size} bytes (1..=1023)"
                ));
            }
            let end = backing_file_offset.checked_add(u64::from(backing_file_size));
            if end.is_none_or(|e| e > cluster_size || e > file_size) {
                return corrupt("backing file name lies outside the header cluster".into());
            }
            let mut name = vec![0u8; backing_file_size as usize];
            m.read_exact_at(backing_file_offset, &mut name)?;
            let name = String::from_utf8(name)
                .map_err(|_| Error::Corrupt("backing file name is not UTF-8".into()))?;
            image.backing_file = Some(name);
        }
        image.read_extensions(m, header_length)?;

        if nb_snapshots > MAX_SNAPSHOTS {
            return corrupt(format!(
                "{nb_snapshots} snapshots (QEMU allows {MAX_SNAPSHOTS})"
            ));
        }
        if nb_snapshots > 0 {
            image.read_snapshots(m, snapshots_offset, nb_snapshots)?;
        }
        Ok(image)
    }

    /// Checks that `[offset, offset + len)` is cluster-aligned and inside the file.
    pub(crate) fn check_table(&self, what: &str, offset: u64, len: u64) -> Result<()> {
        if offset & (self.cluster_size() - 1) != 0 {
            return corrupt(format!("{what} at {offset:#x} is not cluster-aligned"));
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.file_size => Ok(()),
            _ => corrupt(format!(
                "{what} at {offset:#x} ({len} bytes) runs past the end of the file ({} bytes)",
                self.file_size
            )),
        }
    }

    fn check_l1(&self, offset: u64, entries: u32, size: u64, what: &str) -> Result<()> {
        if entries > MAX_L1_ENTRIES {
            return corrupt(format!(
                "{what} has {entries} entries (QEMU allows {MAX_L1_ENTRIES})"
            ));
        }
        let needed = size.div_ceil(self.l2_coverage());
        if u64::from(entries) < needed {
            return corrupt(format!(
                "{what} has {entries} entries but {size} bytes need {needed}"
            ));
        }
        self.check_table(what, offset, u64::from(entries) * 8)?;
        if entries > 0 && offset < self.cluster_size() {
            return corrupt(format!("{what} overlaps the header"));
        }
        Ok(())
    }

    fn read_extensions<M: Medium + ?Sized>(&mut self, m: &M, header_length: u32) -> Result<()> {
        let cluster = self.cluster_size().min(self.file_size);
        let mut at = u64::from(header_length);
        while at + 8 <= cluster {
            let mut eh = [0u8; 8];
            m.read_exact_at(at, &mut eh)?;
            let (kind, len) = (be32(&eh, 0), u64::from(be32(&eh, 4)));
            if kind == EXT_END {
                break;
            }
            let data_end = at + 8 + len;
            if data_end > cluster {
                return corrupt(format!(
                    "header extension {kind:#x} runs past the header cluster"
                ));
            }
            if kind == EXT_BACKING_FORMAT {
                let mut v = vec![0u8; len as usize];
                m.read_exact_at(at + 8, &mut v)?;
                self.backing_format = Some(String::from_utf8_lossy(&v).into_owned());
            }
            at = (data_end + 7) & !7;
        }
        Ok(())
    }

    fn read_snapshots<M: Medium + ?Sized>(&mut self, m: &M, offset: u64, count: u32) -> Result<()> {
        if offset & 7 != 0 || offset < self.cluster_size() {
            return corrupt(format!("snapshot table at {offset:#x} is misplaced"));
        }
        let mut at = offset;
        for i in 0..count {
            let mut e = [0u8; 40];
            if at.checked_add(40).is_none_or(|end| end > self.file_size) {
                return corrupt(format!(
                    "snapshot table entry {i} runs past the end of the file"
                ));
            }
            m.read_exact_at(at, &mut e)?;
            let l1_table_offset = be64(&e, 0);
            let l1_size = be32(&e, 8);
            let id_len = u64::from(be16(&e, 12));
            let name_len = u64::from(be16(&e, 14));
            let extra_len = u64::from(be32(&e, 36));
            if extra_len > 1024 {
                return corrupt(format!("snapshot {i} has {extra_len} bytes of extra data"));
            }
            let total = 40 + extra_len + id_len + name_len;
            if at + total > self.file_size {
                return corrupt(format!(
                    "snapshot table entry {i} runs past the end of the file"
                ));
            }
            let mut rest = vec![0u8; (total - 40) as usize];
            m.read_exact_at(at + 40, &mut rest)?;
            let extra = &rest[..extra_len as usize];
            let vm_state_size = if extra.len() >= 8 {
                be64(extra, 0)
            } else {
                u64::from(be32(&e, 32))
            };
            let disk_size = if extra.len() >= 16 {
                be64(extra, 8)
            } else {
                self.size
            };
            let id = &rest[extra_len as usize..(extra_len + id_len) as usize];
            let name = &rest[(extra_len + id_len) as usize..];
            let snapshot = Snapshot {
                id: String::from_utf8_lossy(id).into_owned(),
                name: String::from_utf8_lossy(name).into_owned(),
                l1_table_offset,
                l1_size,
                disk_size,
                date_sec: be32(&e, 16),
                date_nsec: be32(&e, 20),
                vm_state_size,
                entry: [&e[..], &rest[..]].concat(),
            };
            self.check_l1(
                l1_table_offset,
                l1_size,
                disk_size,
                &format!("L1 table of snapshot {:?}", snapshot.name),
            )?;
            self.metadata
                .push((l1_table_offset, u64::from(l1_size) * 8));
            self.snapshots.push(snapshot);
            at = (at + total + 7) & !7;
        }
        self.metadata.push((offset, at - offset));
        Ok(())
    }

    /// Reads the L1 table to map: the active one, or a snapshot's (looked up by name, then
    /// by id). `None` when there is no such snapshot.
    pub fn view<M: Medium + ?Sized>(&self, m: &M, snapshot: Option<&str>) -> Result<Option<View>> {
        let (offset, entries, size) = match snapshot {
            None => (self.l1_table_offset, self.l1_size, self.size),
            Some(s) => match self
                .snapshots
                .iter()
                .find(|x| x.name == s)
                .or_else(|| self.snapshots.iter().find(|x| x.id == s))
            {
                Some(x) => (x.l1_table_offset, x.l1_size, x.disk_size),
                None => return Ok(None),
            },
        };
        // Only the entries that cover the virtual size are ever consulted.
        let used = size.div_ceil(self.l2_coverage()).min(u64::from(entries)) as usize;
        let mut raw = vec![0u8; used * 8];
        m.read_exact_at(offset, &mut raw)?;
        let l1 = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect();
        Ok(Some(View { l1, size }))
    }

    pub(crate) fn overlaps_metadata(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        self.metadata
            .iter()
            .copied()
            .find(|&(o, l)| l > 0 && offset < o.saturating_add(l) && o < offset.saturating_add(len))
    }

    /// Reads (or takes from the one-table cache) the L2 table at `offset`.
    fn with_l2<M: Medium + ?Sized, R>(
        &self,
        m: &M,
        offset: u64,
        f: impl FnOnce(&[u64]) -> R,
    ) -> Result<R> {
        let mut cache = self.l2_cache.borrow_mut();
        if cache.as_ref().is_none_or(|(o, _)| *o != offset) {
            *cache = Some((offset, self.read_l2(m, offset)?));
        }
        Ok(f(&cache.as_ref().unwrap().1))
    }

    /// The words of the L2 table at `offset`, checked like every table this reader
    /// follows; a zero offset (no table) reads as all zero words.
    fn l2_words<M: Medium + ?Sized>(&self, m: &M, offset: u64) -> Result<Vec<u64>> {
        if offset == 0 {
            return Ok(vec![0; (self.cluster_size() / 8) as usize]);
        }
        self.read_l2(m, offset)
    }

    /// Reads the L2 table at `offset` after checking it lies where a table may.
    fn read_l2<M: Medium + ?Sized>(&self, m: &M, offset: u64) -> Result<Vec<u64>> {
        self.check_table("L2 table", offset, self.cluster_size())?;
        if let Some((o, l)) = self.overlaps_metadata(offset, self.cluster_size()) {
            return corrupt(format!(
                "L2 table at {offset:#x} overlaps metadata at {o:#x}+{l:#x}"
            ));
        }
        let mut raw = vec![0u8; self.cluster_size() as usize];
        m.read_exact_at(offset, &mut raw)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect())
    }

    /// Appends to `out` the guest ranges within `[start, end)` where `new` and `base`
    /// (two views of this image: snapshots, or the active state and a snapshot) may hold
    /// different bytes, from the tables alone: a range whose L1 entry names the same L2
    /// table, or whose L2 entries are equal (same cluster, same flags), is the same data,
    /// because a cluster two views share is never written in place (its refcount is
    /// above one, so QEMU copies it first). Whole clusters, merged; `end` must not
    /// exceed `new.size`. Ranges past `base.size` always differ.
    pub fn differing<M: Medium + ?Sized>(
        &self,
        m: &M,
        new: &View,
        base: &View,
        start: u64,
        end: u64,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        let mut add = |a: u64, b: u64| {
            let (a, b) = (a.max(start), b.min(end));
            if a >= b {
                return;
            }
            match out.last_mut() {
                Some(last) if last.0 + last.1 == a => last.1 += b - a,
                _ => out.push((a, b - a)),
            }
        };
        let cs = self.cluster_size();
        let coverage = self.l2_coverage();
        let stride = (self.l2_entry_bytes() / 8) as usize;
        let mut pos = start;
        while pos < end {
            let index = pos / coverage;
            let table_start = index * coverage;
            let table_end = (table_start + coverage).min(end);
            if table_start >= base.size {
                add(pos, table_end);
                pos = table_end;
                continue;
            }
            let entry = |v: &View| v.l1.get(index as usize).copied().unwrap_or(0) & OFFSET_MASK;
            let (a, b) = (entry(new), entry(base));
            if a != b {
                let (na, nb) = (self.l2_words(m, a)?, self.l2_words(m, b)?);
                let mut c = pos / cs * cs;
                while c < table_end {
                    let i = ((c - table_start) / cs) as usize * stride;
                    let same = (na[i] & !COPIED) == (nb[i] & !COPIED)
                        && (stride == 1 || na[i + 1] == nb[i + 1]);
                    if !same || c + cs > base.size {
                        add(c, c + cs);
                    }
                    c += cs;
                }
            } else if table_end > base.size {
                add(base.size, table_end);
            }
            pos = table_end;
        }
        Ok(())
    }

    /// Maps guest bytes `[start, end)` of `view` in this layer alone, appending merged
    /// mappings to `out`. `end` must not exceed `view.size`.
    pub fn map<M: Medium + ?Sized>(
        &self,
        m: &M,
        view: &View,
        start: u64,
        end: u64,
        out: &mut Vec<Mapping>,
    ) -> Result<()> {
        let cs = self.cluster_size();
        let coverage = self.l2_coverage();
        let mut pos = start;
        while pos < end {
            let l1_index = pos / coverage;
            let l2_end = ((l1_index + 1) * coverage).min(end);
            let l1e = view.l1.get(l1_index as usize).copied().unwrap_or(0);
            let l2_offset = l1e & OFFSET_MASK;
            if l2_offset == 0 {
                push(out, pos, l2_end - pos, Run::Unallocated);
                pos = l2_end;
                continue;
            }
            self.with_l2(m, l2_offset, |l2| -> Result<()> {
                while pos < l2_end {
                    let cluster_index = (pos % coverage) / cs;
                    let cluster_start = pos & !(cs - 1);
                    let cluster_end = (cluster_start + cs).min(l2_end);
                    let stride = (self.l2_entry_bytes() / 8) as usize;
                    let i = cluster_index as usize * stride;
                    let entry = l2[i];
                    let bitmap = if self.extended_l2 { l2[i + 1] } else { 0 };
                    self.map_cluster(entry, bitmap, cluster_start, pos, cluster_end, out)?;
                    pos = cluster_end;
                }
                Ok(())
            })??;
        }
        Ok(())
    }

    /// Maps `[pos, end)` inside the one cluster starting at `cluster_start`.
    fn map_cluster(
        &self,
        entry: u64,
        bitmap: u64,
        cluster_start: u64,
        pos: u64,
        end: u64,
        out: &mut Vec<Mapping>,
    ) -> Result<()> {
        let cs = self.cluster_size();
        if entry & L2_COMPRESSED != 0 {
            let x = 62 - (self.cluster_bits - 8);
            let offset = entry & ((1u64 << x) - 1);
            let sectors = ((entry >> x) & ((1u64 << (62 - x)) - 1)) + 1;
            let stored = sectors * 512 - (offset & 511);
            if offset >= self.file_size {
                return corrupt(format!(
                    "compressed cluster for guest offset {cluster_start:#x} at {offset:#x} is past the end of the file"
                ));
            }
            if let Some((o, l)) =
                self.overlaps_metadata(offset, stored.min(self.file_size - offset))
            {
                return corrupt(format!(
                    "compressed cluster at {offset:#x} overlaps metadata at {o:#x}+{l:#x}"
                ));
            }
            let skip = (pos - cluster_start) as u32;
            push(
                out,
                pos,
                end - pos,
                Run::Compressed {
                    offset,
                    stored: stored as u32,
                    skip,
                },
            );
            return Ok(());
        }
        let host = entry & OFFSET_MASK;
        if !self.extended_l2 {
            let zero = self.version >= 3 && entry & L2_ZERO != 0;
            if zero {
                push(out, pos, end - pos, Run::Zero);
            } else if host == 0 {
                push(out, pos, end - pos, Run::Unallocated);
            } else {
                self.check_data(host, cluster_start)?;
                self.push_data(out, pos, end, host + (pos - cluster_start));
            }
            return Ok(());
        }
        // Extended L2: 32 subclusters, bitmap bits 0-31 "allocated", 32-63 "reads as zero".
        let sc = cs / 32;
        if host != 0 {
            self.check_data(host, cluster_start)?;
        }
        let mut p = pos;
        while p < end {
            let i = (p - cluster_start) / sc;
            let sc_end = (cluster_start + (i + 1) * sc).min(end);
            let alloc = bitmap & (1 << i) != 0;
            let zero = bitmap & (1 << (32 + i)) != 0;
            match (alloc, zero) {
                (true, true) => {
                    return corrupt(format!(
                        "subcluster {i} of guest cluster {cluster_start:#x} is both allocated and zero"
                    ))
                }
                (true, false) if host == 0 => {
                    return corrupt(format!(
                        "subcluster {i} of guest cluster {cluster_start:#x} is allocated in an unallocated cluster"
                    ))
                }
                (true, false) => self.push_data(out, p, sc_end, host + (p - cluster_start)),
                (false, true) => push(out, p, sc_end - p, Run::Zero),
                (false, false) => push(out, p, sc_end - p, Run::Unallocated),
            }
            p = sc_end;
        }
        Ok(())
    }

    fn check_data(&self, host: u64, guest: u64) -> Result<()> {
        let cs = self.cluster_size();
        if host & (cs - 1) != 0 {
            return corrupt(format!(
                "data cluster for guest offset {guest:#x} at {host:#x} is not cluster-aligned"
            ));
        }
        if host >= self.file_size {
            return corrupt(format!(
                "data cluster for guest offset {guest:#x} at {host:#x} is past the end of the file ({} bytes)",
                self.file_size
            ));
        }
        if let Some((o, l)) = self.overlaps_metadata(host, cs) {
            return corrupt(format!(
                "data cluster for guest offset {guest:#x} at {host:#x} overlaps metadata at {o:#x}+{l:#x}"
            ));
        }
        Ok(())
    }

    /// Data that QEMU may leave short at the end of the file reads as zeros there.
    fn push_data(&self, out: &mut Vec<Mapping>, pos: u64, end: u64, host: u64) {
        let in_file = (self.file_size.saturating_sub(host)).min(end - pos);
        if in_file > 0 {
            push(out, pos, in_file, Run::Data(host));
        }
        if in_file < end - pos {
            push(out, pos + in_file, end - pos - in_file, Run::Zero);
        }
    }
}

/// The L1 table to map (active or a snapshot's) and the virtual size it covers.
#[derive(Debug, Clone)]
pub struct View {
    l1: Vec<u64>,
    pub size: u64,
}

/// Appends a mapping, merging it into the previous one where they continue each other.
fn push(out: &mut Vec<Mapping>, start: u64, length: u64, run: Run) {
    if length == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last.start + last.length == start {
            let merged = match (last.run, run) {
                (Run::Data(a), Run::Data(b)) => a + last.length == b,
                (Run::Zero, Run::Zero) | (Run::Unallocated, Run::Unallocated) => true,
                _ => false,
            };
            if merged {
                last.length += length;
                return;
            }
        }
    }
    out.push(Mapping { start, length, run });
}

/// Decodes one compressed cluster into exactly `decoded_len` bytes. Bytes after the end of
/// the compressed stream are padding (the stored length is rounded up to sectors).
pub fn decode(codec: u32, stored: &[u8], decoded_len: usize) -> Result<Vec<u8>> {
    match codec {
        CODEC_DEFLATE => inflate_raw(stored, decoded_len),
        CODEC_ZSTD => unzstd(stored, decoded_len),
        other => Err(Error::Unsupported(format!("codec {other}"))),
    }
}

/// QEMU writes raw deflate (no zlib header, window bits -12) and accepts the result once
/// the output is full, whatever follows in the input.
fn inflate_raw(stored: &[u8], decoded_len: usize) -> Result<Vec<u8>> {
    use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
    use miniz_oxide::inflate::TINFLStatus;
    let mut out = vec![0u8; decoded_len];
    let mut state = DecompressorOxide::new();
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, _, written) = decompress(&mut state, stored, &mut out, 0, flags);
    match status {
        TINFLStatus::Done | TINFLStatus::HasMoreOutput if written == decoded_len => Ok(out),
        _ => corrupt(format!(
            "compressed cluster does not inflate to {decoded_len} bytes ({status:?} after {written})"
        )),
    }
}

/// QEMU writes one zstd frame per cluster and reads until the output is full.
fn unzstd(stored: &[u8], decoded_len: usize) -> Result<Vec<u8>> {
    use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
    use ruzstd::io::Read;
    let mut decoder = FrameDecoder::new();
    let mut src = stored;
    decoder
        .init(&mut src)
        .map_err(|e| Error::Corrupt(format!("zstd frame header: {e:?}")))?;
    decoder
        .decode_blocks(&mut src, BlockDecodingStrategy::UptoBytes(decoded_len))
        .map_err(|e| Error::Corrupt(format!("zstd cluster: {e:?}")))?;
    let mut out = vec![0u8; decoded_len];
    let mut got = 0;
    while got < decoded_len {
        let n = decoder
            .read(&mut out[got..])
            .map_err(|e| Error::Corrupt(format!("zstd cluster: {e:?}")))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    if got != decoded_len {
        return corrupt(format!(
            "compressed cluster decodes to {got} bytes, not {decoded_len}"
        ));
    }
    Ok(out)
}
