//! A qcow2 v3 image written front to back in one pass.
//!
//! The extent map is walked once before any data moves, to learn which guest clusters hold
//! data. That fixes the whole layout in advance: header, L1 table, refcount table,
//! refcount blocks and L2 tables first, then the data clusters in guest order. So the
//! image streams (to stdout too), every cluster is written exactly once, a plain SHA-256
//! of the stream is the file's `sha256sum`, and clusters that are holes in the source stay
//! unallocated (L2 entry 0) in the output.
//!
//! Field offsets and flags follow QEMU's `docs/interop/qcow2.txt`.

use crate::error::{Error, ErrorKind, Result};
pub use snapport_qcow2::layout::CLUSTER_SIZE;
use snapport_qcow2::layout::{self, HeaderFields, COPIED, L2_ENTRIES, REFCOUNTS_PER_BLOCK};

/// Which guest clusters hold data, and where everything goes in the file.
pub struct Qcow2Layout {
    size: u64,
    allocated: Vec<u64>,
    /// Allocated clusters before each 64-cluster word, for rank queries.
    rank_before: Vec<u64>,
    l1_entries: u64,
    l1_clusters: u64,
    reftable_clusters: u64,
    refblocks: u64,
    /// L1 index -> index among the L2 tables written, for L1 entries that need one.
    l2_index: Vec<Option<u64>>,
    data_clusters: u64,
}

impl Qcow2Layout {
    /// Starts a layout for a disk of `size` bytes with no cluster allocated yet.
    pub fn new(size: u64) -> Qcow2Layout {
        let clusters = size.div_ceil(CLUSTER_SIZE);
        Qcow2Layout {
            size,
            allocated: vec![0; clusters.div_ceil(64) as usize],
            rank_before: Vec::new(),
            l1_entries: clusters.div_ceil(L2_ENTRIES),
            l1_clusters: 0,
            reftable_clusters: 0,
            refblocks: 0,
            l2_index: Vec::new(),
            data_clusters: 0,
        }
    }

    /// Marks guest bytes `[offset, offset + len)` as holding data.
    pub fn mark(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = offset / CLUSTER_SIZE;
        let last = (offset + len - 1) / CLUSTER_SIZE;
        for c in first..=last {
            self.allocated[(c / 64) as usize] |= 1 << (c % 64);
        }
    }

    pub fn is_allocated(&self, cluster: u64) -> bool {
        self.allocated[(cluster / 64) as usize] & (1 << (cluster % 64)) != 0
    }

    /// Fixes the layout once every data range is marked.
    pub fn finish(&mut self) -> Result<()> {
        let mut acc = 0;
        self.rank_before = self
            .allocated
            .iter()
            .map(|w| {
                let before = acc;
                acc += u64::from(w.count_ones());
                before
            })
            .collect();
        self.data_clusters = acc;
        let mut l2_tables = 0;
        self.l2_index = (0..self.l1_entries)
            .map(|i| {
                let words = (i * L2_ENTRIES / 64) as usize
                    ..(((i + 1) * L2_ENTRIES / 64) as usize).min(self.allocated.len());
                self.allocated[words].iter().any(|w| *w != 0).then(|| {
                    l2_tables += 1;
                    l2_tables - 1
                })
            })
            .collect();
        self.l1_clusters = layout::l1_clusters(self.l1_entries);
        let (rt, rb) =
            layout::refcount_clusters(1 + self.l1_clusters + l2_tables + self.data_clusters);
        self.reftable_clusters = rt;
        self.refblocks = rb;
        if self.file_size() / CLUSTER_SIZE > (1 << 40) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "qcow2 output would be too large",
            ));
        }
        Ok(())
    }

    fn l2_tables(&self) -> u64 {
        self.l2_index.iter().flatten().count() as u64
    }

    fn metadata_clusters(&self) -> u64 {
        1 + self.l1_clusters + self.reftable_clusters + self.refblocks + self.l2_tables()
    }

    /// File offset of the first data cluster.
    pub fn data_offset(&self) -> u64 {
        self.metadata_clusters() * CLUSTER_SIZE
    }

    pub fn file_size(&self) -> u64 {
        (self.metadata_clusters() + self.data_clusters) * CLUSTER_SIZE
    }

    /// Allocated clusters before `cluster`.
    fn rank(&self, cluster: u64) -> u64 {
        let word = (cluster / 64) as usize;
        let mask = (1u64 << (cluster % 64)) - 1;
        self.rank_before[word] + u64::from((self.allocated[word] & mask).count_ones())
    }

    /// File offset of allocated guest cluster `cluster`.
    pub fn host_offset(&self, cluster: u64) -> u64 {
        self.data_offset() + self.rank(cluster) * CLUSTER_SIZE
    }

    /// Writes header, L1, refcount table, refcount blocks and L2 tables, in file order,
    /// one cluster-sized piece at a time (memory stays at a cluster whatever the size).
    pub fn write_metadata(&self, out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let cs = CLUSTER_SIZE as usize;
        let l1_off = CLUSTER_SIZE;
        let rt_off = l1_off + self.l1_clusters * CLUSTER_SIZE;
        let rb_off = rt_off + self.reftable_clusters * CLUSTER_SIZE;
        let l2_off = rb_off + self.refblocks * CLUSTER_SIZE;

        out(&layout::header_cluster(&HeaderFields {
            size: self.size,
            l1_entries: self.l1_entries,
            l1_offset: l1_off,
            refcount_table_offset: rt_off,
            refcount_table_clusters: self.reftable_clusters,
            backing: None,
        }))?;

        let mut table = vec![0u8; cs];
        let mut emit_table =
            |entries: &mut dyn Iterator<Item = u64>,
             clusters: u64,
             out: &mut dyn FnMut(&[u8]) -> Result<()>| {
                for _ in 0..clusters {
                    table.fill(0);
                    for slot in table.chunks_exact_mut(8) {
                        match entries.next() {
                            Some(v) => slot.copy_from_slice(&v.to_be_bytes()),
                            None => break,
                        }
                    }
                    out(&table)?;
                }
                Ok::<(), Error>(())
            };

        let mut l1 = self.l2_index.iter().map(|ix| match ix {
            Some(k) => (l2_off + k * CLUSTER_SIZE) | COPIED,
            None => 0,
        });
        emit_table(&mut l1, self.l1_clusters, out)?;

        let mut rt = (0..self.refblocks).map(|k| rb_off + k * CLUSTER_SIZE);
        emit_table(&mut rt, self.reftable_clusters, out)?;

        // Refcount 1 for every cluster of the file, 16 bits big-endian each.
        let total = self.file_size() / CLUSTER_SIZE;
        let mut block = vec![0u8; cs];
        for k in 0..self.refblocks {
            block.fill(0);
            let first = k * REFCOUNTS_PER_BLOCK;
            let n = total.saturating_sub(first).min(REFCOUNTS_PER_BLOCK) as usize;
            for slot in block.chunks_exact_mut(2).take(n) {
                slot.copy_from_slice(&1u16.to_be_bytes());
            }
            out(&block)?;
        }

        let clusters = self.size.div_ceil(CLUSTER_SIZE);
        for (i, ix) in self.l2_index.iter().enumerate() {
            if ix.is_none() {
                continue;
            }
            let first = i as u64 * L2_ENTRIES;
            let last = (first + L2_ENTRIES).min(clusters);
            let mut l2 = (first..last).map(|c| {
                if self.is_allocated(c) {
                    self.host_offset(c) | COPIED
                } else {
                    0
                }
            });
            emit_table(&mut l2, 1, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_counts_every_cluster_once() {
        let mut l = Qcow2Layout::new(3 * L2_ENTRIES * CLUSTER_SIZE + 5);
        l.mark(0, 1);
        l.mark(2 * L2_ENTRIES * CLUSTER_SIZE + 10, CLUSTER_SIZE);
        l.finish().unwrap();
        assert_eq!(l.data_clusters, 3);
        assert_eq!(l.l2_tables(), 1 + 1);
        let mut bytes = 0;
        l.write_metadata(&mut |b| {
            bytes += b.len() as u64;
            Ok(())
        })
        .unwrap();
        assert_eq!(bytes, l.data_offset());
        assert_eq!(l.host_offset(0), l.data_offset());
        assert_eq!(
            l.host_offset(2 * L2_ENTRIES + 1),
            l.data_offset() + 2 * CLUSTER_SIZE
        );
    }
}
