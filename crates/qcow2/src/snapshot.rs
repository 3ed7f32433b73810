//! Internal snapshots, written in place the way QEMU writes them, so that `qemu-img
//! snapshot -l` lists what snapport made, `qemu-img check` finds every count right, and
//! QEMU reverts to them.
//!
//! A snapshot is a copy of the active L1 table plus one more reference on every cluster
//! that table reaches: its L2 tables and the data they point to (QEMU counts a data
//! cluster once per L1 table that reaches it, and `qemu-img check` verifies exactly
//! that). Clusters referenced more than once lose their `COPIED` flag, so the next guest
//! write copies them instead of changing the snapshot.
//!
//! Every change is ordered so that a crash at any point leaves an image QEMU opens and
//! reads correctly, at worst with leaked clusters (`qemu-img check -r leaks` reclaims
//! them): refcounts go up before anything points at new clusters, the header's snapshot
//! count and table offset (one 12-byte write) are the commit point, and refcounts come
//! down only after nothing points at the clusters any more.

use crate::format::{Error, Image, Medium, Result, Snapshot};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

/// An image that can also be written: metadata only, through the same offsets.
pub trait MediumMut: Medium {
    /// Writes `bytes` at `offset`, growing the medium when they end past it.
    fn write_all_at(&self, offset: u64, bytes: &[u8]) -> Result<()>;
}

/// Bits 9-55 of an L1 or standard L2 entry, bits 9-63 of a refcount table entry.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const REFTABLE_OFFSET_MASK: u64 = !0x1ff;
const COMPRESSED: u64 = 1 << 62;
const COPIED: u64 = 1 << 63;
/// Header bytes 60..72: `nb_snapshots` (u32) then `snapshots_offset` (u64).
const HEADER_SNAPSHOTS: u64 = 60;
/// QEMU's limits: QCOW_MAX_SNAPSHOTS and QCOW_MAX_SNAPSHOTS_SIZE.
const MAX_SNAPSHOTS: usize = 65536;
const MAX_TABLE_BYTES: usize = 64 << 20;
/// Extra data QEMU writes after each entry: vm_state_size_large, disk_size, icount.
const EXTRA_DATA: usize = 24;
/// Longest snapshot name snapport writes (QEMU's `name_size` is 16-bit; 255 keeps names
/// printable on one line everywhere).
pub const MAX_NAME: usize = 255;

/// Takes snapshot `name` of the active state, dated `date` (Unix seconds and
/// nanoseconds: the plugin has no clock, the host says when). Returns it as listed.
pub fn create<M: MediumMut + ?Sized>(m: &M, name: &str, date: (u32, u32)) -> Result<Snapshot> {
    let image = writable(m)?;
    check_name(name)?;
    if let Some(s) = image
        .snapshots
        .iter()
        .find(|s| s.name == name || s.id == name)
    {
        return Err(Error::Invalid(format!(
            "a snapshot named {name:?} exists already (id {}, name {:?})",
            s.id, s.name
        )));
    }
    if image.snapshots.len() >= MAX_SNAPSHOTS {
        return Err(Error::Invalid(format!(
            "the image has {MAX_SNAPSHOTS} snapshots, QEMU's limit"
        )));
    }
    let mut rc = Refcounts::load(m, &image)?;
    let l1 = read_l1(m, image.l1_table_offset, image.l1_size)?;

    // One more reference on everything the active table reaches.
    update_tree(m, &image, &mut rc, &l1, 1)?;
    // The copy of the active L1 table the snapshot keeps (COPIED means nothing there).
    let l1_bytes = l1.len() * 8;
    let copy = rc.allocate(clusters(&image, l1_bytes as u64))?;
    let id = (image
        .snapshots
        .iter()
        .filter_map(|s| s.id.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1)
    .to_string();
    let mut entry = vec![0u8; 40 + EXTRA_DATA];
    put64(&mut entry, 0, copy);
    put32(&mut entry, 8, image.l1_size);
    put16(&mut entry, 12, id.len() as u16);
    put16(&mut entry, 14, name.len() as u16);
    put32(&mut entry, 16, date.0);
    put32(&mut entry, 20, date.1);
    put32(&mut entry, 36, EXTRA_DATA as u32);
    put64(&mut entry, 48, image.size);
    put64(&mut entry, 56, u64::MAX);
    entry.extend_from_slice(id.as_bytes());
    entry.extend_from_slice(name.as_bytes());
    let mut entries: Vec<&[u8]> = image.snapshots.iter().map(|s| &s.entry[..]).collect();
    entries.push(&entry);
    let table = table_bytes(&entries)?;
    let table_at = rc.allocate(clusters(&image, table.len() as u64))?;

    // 1. Counts up (a crash from here on leaks, nothing worse).
    rc.write(m)?;
    // 2. Nothing is COPIED any more: every cluster now has two references.
    mark_copied(m, &image, &rc, image.l1_table_offset, &l1)?;
    // 3. The snapshot's L1 table and the new snapshot table, where nothing points yet.
    let plain: Vec<u64> = l1.iter().map(|e| e & !COPIED).collect();
    m.write_all_at(copy, &words(&plain))?;
    m.write_all_at(table_at, &table)?;
    // 4. Commit.
    commit(m, entries.len(), table_at)?;
    // 5. The old table is garbage now.
    free_table(&image, &mut rc)?;
    rc.write(m)?;

    let after = Image::open(m)?;
    after
        .snapshots
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            Error::Io(format!(
                "snapshot {name:?} is not in the table just written"
            ))
        })
}

/// Deletes snapshot `name` (or the one whose id is `name`).
pub fn delete<M: MediumMut + ?Sized>(m: &M, name: &str) -> Result<()> {
    let image = writable(m)?;
    let index = find(&image, name)?;
    let gone = &image.snapshots[index];
    let mut rc = Refcounts::load(m, &image)?;
    let entries: Vec<&[u8]> = image
        .snapshots
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != index)
        .map(|(_, s)| &s.entry[..])
        .collect();
    let table = table_bytes(&entries)?;
    let table_at = if entries.is_empty() {
        0
    } else {
        rc.allocate(clusters(&image, table.len() as u64))?
    };
    rc.write(m)?;
    if table_at != 0 {
        m.write_all_at(table_at, &table)?;
    }
    // Commit: from here the snapshot is gone; what follows only reclaims its clusters.
    commit(m, entries.len(), table_at)?;
    free_table(&image, &mut rc)?;
    let l1 = read_l1(m, gone.l1_table_offset, gone.l1_size)?;
    update_tree(m, &image, &mut rc, &l1, -1)?;
    free_range(
        &image,
        &mut rc,
        gone.l1_table_offset,
        u64::from(gone.l1_size) * 8,
    )?;
    rc.write(m)?;
    // Clusters the active state alone holds now may be written in place again.
    let active = read_l1(m, image.l1_table_offset, image.l1_size)?;
    mark_copied(m, &image, &rc, image.l1_table_offset, &active)
}

/// Makes the active state snapshot `name`'s (QEMU's `qemu-img snapshot -a`): what the
/// disk held since is dropped, the snapshot stays. The snapshot must have the disk's
/// current size.
pub fn revert<M: MediumMut + ?Sized>(m: &M, name: &str) -> Result<()> {
    let image = writable(m)?;
    let snap = &image.snapshots[find(&image, name)?];
    if snap.disk_size != image.size {
        return Err(Error::Unsupported(format!(
            "snapshot {:?} is of a {}-byte disk and the disk now has {} bytes",
            snap.name, snap.disk_size, image.size
        )));
    }
    if snap.l1_size > image.l1_size {
        return Err(Error::Unsupported(format!(
            "snapshot {:?} has a larger L1 table than the disk",
            snap.name
        )));
    }
    let mut rc = Refcounts::load(m, &image)?;
    let old = read_l1(m, image.l1_table_offset, image.l1_size)?;
    let mut new = read_l1(m, snap.l1_table_offset, snap.l1_size)?;
    new.resize(old.len(), 0);
    // The snapshot's tree gains the active table's reference; then the active table
    // points at it (a crash between leaks the old tree); then the old tree is released.
    update_tree(m, &image, &mut rc, &new, 1)?;
    rc.write(m)?;
    let plain: Vec<u64> = new.iter().map(|e| e & !COPIED).collect();
    m.write_all_at(image.l1_table_offset, &words(&plain))?;
    update_tree(m, &image, &mut rc, &old, -1)?;
    rc.write(m)?;
    mark_copied(m, &image, &rc, image.l1_table_offset, &plain)
}

/// The image, when snapport may change it.
fn writable<M: Medium + ?Sized>(m: &M) -> Result<Image> {
    let image = Image::open(m)?;
    if image.dirty {
        return Err(Error::Unsupported(
            "the image is marked dirty (lazy refcounts, not closed cleanly): its counts cannot be trusted; run `qemu-img check -r all` first".into(),
        ));
    }
    Ok(image)
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{name:?} cannot name a snapshot (1 to {MAX_NAME} bytes, no control characters)"
        )));
    }
    Ok(())
}

fn find(image: &Image, name: &str) -> Result<usize> {
    image
        .snapshots
        .iter()
        .position(|s| s.name == name)
        .or_else(|| image.snapshots.iter().position(|s| s.id == name))
        .ok_or_else(|| Error::Invalid(format!("the image has no snapshot {name:?}")))
}

/// The snapshot table: each entry padded to 8 bytes.
fn table_bytes(entries: &[&[u8]]) -> Result<Vec<u8>> {
    let mut table = Vec::new();
    for e in entries {
        table.extend_from_slice(e);
        table.resize(table.len().next_multiple_of(8), 0);
    }
    if table.len() > MAX_TABLE_BYTES {
        return Err(Error::Invalid(format!(
            "a snapshot table of {} bytes exceeds QEMU's {MAX_TABLE_BYTES}",
            table.len()
        )));
    }
    Ok(table)
}

/// The commit point: the header's snapshot count and table offset, in one write.
fn commit<M: MediumMut + ?Sized>(m: &M, count: usize, table_at: u64) -> Result<()> {
    let mut h = [0u8; 12];
    put32(&mut h, 0, count as u32);
    put64(&mut h, 4, table_at);
    m.write_all_at(HEADER_SNAPSHOTS, &h)
}

fn free_table(image: &Image, rc: &mut Refcounts) -> Result<()> {
    let len: usize = image
        .snapshots
        .iter()
        .map(|s| s.entry.len().next_multiple_of(8))
        .sum();
    if image.snapshots.is_empty() {
        return Ok(());
    }
    free_range(image, rc, image.snapshots_offset, len as u64)
}

/// Drops one reference on each cluster of `[offset, offset + len)`.
fn free_range(image: &Image, rc: &mut Refcounts, offset: u64, len: u64) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let bits = image.cluster_bits;
    for c in offset >> bits..=(offset + len - 1) >> bits {
        rc.add(c, -1)?;
    }
    Ok(())
}

fn clusters(image: &Image, bytes: u64) -> u64 {
    bytes.div_ceil(image.cluster_size()).max(1)
}

fn read_l1<M: Medium + ?Sized>(m: &M, offset: u64, entries: u32) -> Result<Vec<u64>> {
    let mut raw = vec![0u8; entries as usize * 8];
    m.read_exact_at(offset, &mut raw)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
        .collect())
}

fn words(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_be_bytes()).collect()
}

/// Reads the L2 table at `offset` after checking it is where an L2 table may be.
fn read_l2<M: Medium + ?Sized>(m: &M, image: &Image, offset: u64) -> Result<Vec<u64>> {
    image.check_table("L2 table", offset, image.cluster_size())?;
    if let Some((o, l)) = image.overlaps_metadata(offset, image.cluster_size()) {
        return Err(Error::Corrupt(format!(
            "L2 table at {offset:#x} overlaps metadata at {o:#x}+{l:#x}"
        )));
    }
    read_l1(m, offset, (image.cluster_size() / 8) as u32)
}

/// The host clusters an L2 entry holds: none, one, or the span of a compressed cluster
/// (which may share its clusters with its neighbours; each reference counts).
fn entry_clusters(image: &Image, entry: u64) -> Result<Option<(u64, u64)>> {
    let bits = image.cluster_bits;
    if entry & COMPRESSED != 0 {
        let x = 62 - (bits - 8);
        let offset = entry & ((1u64 << x) - 1);
        let sectors = ((entry >> x) & ((1u64 << (bits - 8)) - 1)) + 1;
        let len = sectors * 512 - (offset & 511);
        if offset >= image.file_size {
            return Err(Error::Corrupt(format!(
                "compressed cluster at {offset:#x} is past the end of the file"
            )));
        }
        return Ok(Some((offset >> bits, (offset + len - 1) >> bits)));
    }
    let host = entry & OFFSET_MASK;
    if host == 0 {
        return Ok(None);
    }
    if host & (image.cluster_size() - 1) != 0 || host >= image.file_size {
        return Err(Error::Corrupt(format!(
            "data cluster at {host:#x} is unaligned or past the end of the file"
        )));
    }
    Ok(Some((host >> bits, host >> bits)))
}

/// Adds `delta` to the refcount of every cluster `l1` reaches.
fn update_tree<M: Medium + ?Sized>(
    m: &M,
    image: &Image,
    rc: &mut Refcounts,
    l1: &[u64],
    delta: i64,
) -> Result<()> {
    let stride = (image.l2_entry_bytes() / 8) as usize;
    for &l1e in l1 {
        let l2_at = l1e & OFFSET_MASK;
        if l2_at == 0 {
            continue;
        }
        let l2 = read_l2(m, image, l2_at)?;
        for &entry in l2.iter().step_by(stride) {
            if let Some((first, last)) = entry_clusters(image, entry)? {
                for c in first..=last {
                    rc.add(c, delta)?;
                }
            }
        }
        rc.add(l2_at >> image.cluster_bits, delta)?;
    }
    Ok(())
}

/// Sets `COPIED` on the active table's entries exactly where the refcount is one (what
/// `qemu-img check` verifies), rewriting only the tables that change.
fn mark_copied<M: MediumMut + ?Sized>(
    m: &M,
    image: &Image,
    rc: &Refcounts,
    l1_offset: u64,
    l1: &[u64],
) -> Result<()> {
    let stride = (image.l2_entry_bytes() / 8) as usize;
    let bits = image.cluster_bits;
    let mut new_l1 = l1.to_vec();
    for e in new_l1.iter_mut() {
        let l2_at = *e & OFFSET_MASK;
        if l2_at == 0 {
            continue;
        }
        let mut l2 = read_l2(m, image, l2_at)?;
        let mut changed = false;
        for entry in l2.iter_mut().step_by(stride) {
            if *entry & COMPRESSED != 0 || *entry & OFFSET_MASK == 0 {
                continue;
            }
            let want = rc.get((*entry & OFFSET_MASK) >> bits)? == 1;
            let fixed = if want {
                *entry | COPIED
            } else {
                *entry & !COPIED
            };
            changed |= fixed != *entry;
            *entry = fixed;
        }
        if changed {
            m.write_all_at(l2_at, &words(&l2))?;
        }
        *e = if rc.get(l2_at >> bits)? == 1 {
            *e | COPIED
        } else {
            *e & !COPIED
        };
    }
    if new_l1 != l1 {
        m.write_all_at(l1_offset, &words(&new_l1))?;
    }
    Ok(())
}

/// The image's refcounts, read block by block as needed and written back in order:
/// new blocks, then the table entries that point at them, then changed blocks.
struct Refcounts {
    cluster_bits: u32,
    /// Bits per refcount.
    width: u32,
    /// log2 of the refcounts one block holds.
    per_block_bits: u32,
    table_offset: u64,
    table: Vec<u64>,
    blocks: BTreeMap<u64, Vec<u8>>,
    changed: BTreeSet<u64>,
    /// Blocks created here, whose table entries must be written after them.
    added: BTreeSet<u64>,
    /// Where the search for free clusters starts.
    hint: u64,
    /// Clusters in the file when it was opened.
    file_clusters: u64,
}

impl Refcounts {
    fn load<M: Medium + ?Sized>(m: &M, image: &Image) -> Result<Refcounts> {
        let entries = (u64::from(image.refcount_table_clusters) << image.cluster_bits) / 8;
        let mut table = read_l1(m, image.refcount_table_offset, entries as u32)?;
        for e in table.iter_mut() {
            *e &= REFTABLE_OFFSET_MASK;
        }
        let width = 1u32 << image.refcount_order;
        let mut rc = Refcounts {
            cluster_bits: image.cluster_bits,
            width,
            per_block_bits: image.cluster_bits + 3 - image.refcount_order,
            table_offset: image.refcount_table_offset,
            table,
            blocks: BTreeMap::new(),
            changed: BTreeSet::new(),
            added: BTreeSet::new(),
            hint: 1,
            file_clusters: image.file_size.div_ceil(image.cluster_size()),
        };
        // Read every block now: the counts are small (one 64 KiB block covers 2 GiB of
        // file at QEMU's defaults) and `get` can then be shared.
        for index in 0..rc.table.len() as u64 {
            let at = rc.table[index as usize];
            if at == 0 {
                continue;
            }
            image.check_table("refcount block", at, image.cluster_size())?;
            let mut block = vec![0u8; image.cluster_size() as usize];
            m.read_exact_at(at, &mut block)?;
            rc.blocks.insert(index, block);
        }
        Ok(rc)
    }

    fn max(&self) -> u64 {
        if self.width == 64 {
            u64::MAX >> 1
        } else {
            (1u64 << self.width) - 1
        }
    }

    fn split(&self, cluster: u64) -> (u64, usize) {
        (
            cluster >> self.per_block_bits,
            (cluster & ((1 << self.per_block_bits) - 1)) as usize,
        )
    }

    fn get(&self, cluster: u64) -> Result<u64> {
        let (index, i) = self.split(cluster);
        let Some(block) = self.blocks.get(&index) else {
            return Ok(0);
        };
        Ok(read_entry(block, self.width, i))
    }

    fn add(&mut self, cluster: u64, delta: i64) -> Result<()> {
        let now = self.get(cluster)?;
        let new = now.checked_add_signed(delta).filter(|&n| n <= self.max());
        let Some(new) = new else {
            return Err(if delta < 0 {
                Error::Corrupt(format!(
                    "cluster {:#x} has refcount {now} and one more reference is being dropped",
                    cluster << self.cluster_bits
                ))
            } else {
                Error::Unsupported(format!(
                    "cluster {:#x} already has the most references a {}-bit refcount holds",
                    cluster << self.cluster_bits,
                    self.width
                ))
            });
        };
        self.set(cluster, new)
    }

    fn set(&mut self, cluster: u64, value: u64) -> Result<()> {
        let (index, i) = self.split(cluster);
        if !self.blocks.contains_key(&index) {
            self.create_block(index)?;
        }
        let block = self.blocks.get_mut(&index).expect("just made");
        write_entry(block, self.width, i, value);
        self.changed.insert(index);
        if value == 0 && cluster < self.hint {
            self.hint = cluster.max(1);
        }
        Ok(())
    }

    /// A block for clusters nobody counts yet: placed at the first cluster it covers,
    /// which it counts itself (nothing lives there, or it would have a block).
    fn create_block(&mut self, index: u64) -> Result<()> {
        if index as usize >= self.table.len() {
            return Err(Error::Unsupported(
                "the refcount table is full; `qemu-img convert` the image to a new one".into(),
            ));
        }
        let at = index
            .checked_mul(1 << (self.per_block_bits + self.cluster_bits))
            .filter(|&at| at & !OFFSET_MASK == 0)
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "refcount block {index} would lie past the largest offset qcow2 can name"
                ))
            })?;
        self.table[index as usize] = at;
        self.blocks
            .insert(index, vec![0u8; 1 << self.cluster_bits as usize]);
        self.added.insert(index);
        let (_, i) = self.split(at >> self.cluster_bits);
        let width = self.width;
        write_entry(self.blocks.get_mut(&index).unwrap(), width, i, 1);
        self.changed.insert(index);
        Ok(())
    }

    /// `n` contiguous free clusters, counted as used; the first fit after the header.
    fn allocate(&mut self, n: u64) -> Result<u64> {
        let mut start = self.hint.max(1);
        let mut c = start;
        // Past the end of the file every cluster is free in a sound image: a search that
        // runs on far beyond it is following refcounts that lie.
        let give_up = self.file_clusters + n + (2 << self.per_block_bits);
        loop {
            if c > give_up {
                return Err(Error::Corrupt(
                    "the refcounts claim clusters far past the end of the file".into(),
                ));
            }
            let (index, _) = self.split(c);
            if !self.blocks.contains_key(&index) {
                self.create_block(index)?;
            }
            if self.get(c)? == 0 {
                if c + 1 - start == n {
                    break;
                }
            } else {
                start = c + 1;
            }
            c += 1;
        }
        for x in start..start + n {
            self.set(x, 1)?;
        }
        if start == self.hint {
            self.hint = start + n;
        }
        Ok(start << self.cluster_bits)
    }

    /// Writes what changed: new blocks, their table entries, then the other blocks.
    fn write<M: MediumMut + ?Sized>(&mut self, m: &M) -> Result<()> {
        for &index in &self.added {
            m.write_all_at(self.table[index as usize], &self.blocks[&index])?;
        }
        for &index in &self.added {
            let mut e = [0u8; 8];
            e.copy_from_slice(&self.table[index as usize].to_be_bytes());
            m.write_all_at(self.table_offset + index * 8, &e)?;
        }
        for &index in &self.changed {
            if !self.added.contains(&index) {
                m.write_all_at(self.table[index as usize], &self.blocks[&index])?;
            }
        }
        self.added.clear();
        self.changed.clear();
        Ok(())
    }
}

/// Refcount `i` of a block of `width`-bit entries: big-endian for whole bytes, and
/// (QEMU's order) from the low bits of each byte up for narrower ones.
fn read_entry(block: &[u8], width: u32, i: usize) -> u64 {
    if width >= 8 {
        let n = (width / 8) as usize;
        block[i * n..i * n + n]
            .iter()
            .fold(0u64, |v, &b| v << 8 | u64::from(b))
    } else {
        let per = (8 / width) as usize;
        let shift = (i % per) as u32 * width;
        u64::from(block[i / per] >> shift) & ((1 << width) - 1)
    }
}

fn write_entry(block: &mut [u8], width: u32, i: usize, value: u64) {
    if width >= 8 {
        let n = (width / 8) as usize;
        block[i * n..i * n + n].copy_from_slice(&value.to_be_bytes()[8 - n..]);
    } else {
        let per = (8 / width) as usize;
        let shift = (i % per) as u32 * width;
        let mask = (((1u16 << width) - 1) as u8) << shift;
        let b = &mut block[i / per];
        *b = (*b & !mask) | ((value as u8) << shift & mask);
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refcount_entries_round_trip_at_every_width() {
        for order in 0..=6u32 {
            let width = 1u32 << order;
            let mut block = vec![0u8; 64];
            let count = 64 * 8 / width as usize;
            let max = if width == 64 {
                u64::MAX >> 1
            } else {
                (1u64 << width) - 1
            };
            for i in 0..count {
                write_entry(&mut block, width, i, (i as u64 * 7) & max);
            }
            for i in 0..count {
                assert_eq!(read_entry(&block, width, i), (i as u64 * 7) & max);
            }
        }
        // QEMU's layout for 16-bit refcounts: big-endian pairs.
        let mut block = vec![0u8; 4];
        write_entry(&mut block, 16, 1, 0x0102);
        assert_eq!(block, [0, 0, 1, 2]);
        // And for 1-bit refcounts: bit 0 of byte 0 is cluster 0.
        let mut block = vec![0u8; 1];
        write_entry(&mut block, 1, 3, 1);
        assert_eq!(block, [0b1000]);
    }
}
