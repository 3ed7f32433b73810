//! What every new qcow2 v3 image snapport writes has in common: 64 KiB clusters, 16-bit
//! refcounts, the header bytes, and the refcount structures sized to cover themselves.
//! Field offsets and flags follow QEMU's `docs/interop/qcow2.txt`.

use alloc::vec;
use alloc::vec::Vec;

pub const CLUSTER_BITS: u32 = 16;
pub const CLUSTER_SIZE: u64 = 1 << CLUSTER_BITS;
/// Entries per L2 table (standard, not extended, L2).
pub const L2_ENTRIES: u64 = CLUSTER_SIZE / 8;
/// Guest bytes one L2 table covers.
pub const L2_COVERAGE: u64 = L2_ENTRIES * CLUSTER_SIZE;
/// 16-bit refcounts (refcount_order 4), QEMU's default.
pub const REFCOUNT_ORDER: u32 = 4;
/// Refcount entries in one refcount block.
pub const REFCOUNTS_PER_BLOCK: u64 = CLUSTER_SIZE * 8 / (1 << REFCOUNT_ORDER);
/// Bit 63 of L1/L2 entries: the cluster's refcount is exactly one.
pub const COPIED: u64 = 1 << 63;
/// Bit 0 of a standard L2 entry (v3): the cluster reads as zeros.
pub const ZERO: u64 = 1;
/// Version 3 header with the compression-type byte (qcow2.txt: header_length 112).
pub const HEADER_LENGTH: u32 = 112;
/// Longest backing file name QEMU accepts.
pub const MAX_BACKING_NAME: usize = 1023;
/// Header extension "backing file format name".
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// QEMU refuses images whose L1 table would exceed 32 MiB.
pub const MAX_L1_ENTRIES: u64 = 32 * 1024 * 1024 / 8;
/// The largest virtual size a new image may have (QEMU's limit for 64 KiB clusters with
/// a 32 MiB L1 table: 2 PiB).
pub const MAX_SIZE: u64 = MAX_L1_ENTRIES * L2_COVERAGE;

/// L1 entries a disk of `size` bytes needs.
pub fn l1_entries(size: u64) -> u64 {
    size.div_ceil(L2_COVERAGE)
}

/// Clusters the L1 table of `entries` entries occupies (at least one).
pub fn l1_clusters(entries: u64) -> u64 {
    (entries * 8).div_ceil(CLUSTER_SIZE).max(1)
}

/// Refcount table clusters and refcount blocks needed when the file holds `others`
/// clusters besides them. The refcount structures count themselves too, so this iterates
/// to the fixed point.
pub fn refcount_clusters(others: u64) -> (u64, u64) {
    let (mut table, mut blocks) = (1, 1);
    loop {
        let need_blocks = (others + table + blocks).div_ceil(REFCOUNTS_PER_BLOCK);
        let need_table = (need_blocks * 8).div_ceil(CLUSTER_SIZE);
        if need_blocks <= blocks && need_table <= table {
            return (table, blocks);
        }
        table = table.max(need_table);
        blocks = blocks.max(need_blocks);
    }
}

/// Where the header points.
pub struct HeaderFields<'a> {
    pub size: u64,
    pub l1_entries: u64,
    pub l1_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u64,
    /// Backing file name and its format ("qcow2" or "raw").
    pub backing: Option<(&'a str, &'a str)>,
}

/// Cluster 0 of a new image: the v3 header, the backing-format extension when there is a
/// backing file, the end-of-extensions marker, then the backing file name.
pub fn header_cluster(h: &HeaderFields) -> Vec<u8> {
    let mut c = vec![0u8; CLUSTER_SIZE as usize];
    c[0..4].copy_from_slice(b"QFI\xfb");
    put32(&mut c, 4, 3);
    put32(&mut c, 20, CLUSTER_BITS);
    put64(&mut c, 24, h.size);
    put32(&mut c, 36, h.l1_entries as u32);
    put64(&mut c, 40, h.l1_offset);
    put64(&mut c, 48, h.refcount_table_offset);
    put32(&mut c, 56, h.refcount_table_clusters as u32);
    put32(&mut c, 96, REFCOUNT_ORDER);
    put32(&mut c, 100, HEADER_LENGTH);
    // Bytes 104..112: compression type 0 (zlib) and padding.
    let mut at = HEADER_LENGTH as usize;
    if let Some((name, format)) = h.backing {
        put32(&mut c, at, EXT_BACKING_FORMAT);
        put32(&mut c, at + 4, format.len() as u32);
        c[at + 8..at + 8 + format.len()].copy_from_slice(format.as_bytes());
        at += 8 + format.len().next_multiple_of(8);
        // End-of-extensions marker: 8 zero bytes, already there.
        at += 8;
        put64(&mut c, 8, at as u64);
        put32(&mut c, 16, name.len() as u32);
        c[at..at + name.len()].copy_from_slice(name.as_bytes());
    }
    c
}

pub fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

pub fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refcounts_cover_themselves() {
        for others in [
            0,
            1,
            REFCOUNTS_PER_BLOCK - 2,
            REFCOUNTS_PER_BLOCK - 1,
            REFCOUNTS_PER_BLOCK,
            1 << 30,
        ] {
            let (t, b) = refcount_clusters(others);
            assert!(b * REFCOUNTS_PER_BLOCK >= others + t + b, "{others}");
            assert!(t * CLUSTER_SIZE / 8 >= b, "{others}");
            // Minimal: one block fewer would not do.
            assert!(
                (b - 1) * REFCOUNTS_PER_BLOCK < others + t + b || b == 1,
                "{others}"
            );
        }
    }
}
