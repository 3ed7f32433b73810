//! Thin-pool metadata (the kernel's dm-thin persistent format, what `thin_dump` reads),
//! read from the pool's metadata volume without device-mapper:
//!
//! ```text
//! block 0, superblock: u32 csum, u32 flags, u64 blocknr, 16-byte uuid, u64 magic
//!     27022010, u32 version, u32 time, u64 transaction, u64 held root, 128+128 bytes of
//!     space map roots (ignored), u64 data mapping root, u64 device details root,
//!     u32 data block size (sectors), u32 metadata block size (sectors), u64 metadata blocks
//! btree node: u32 csum, u32 flags (1 internal, 2 leaf), u64 blocknr, u32 entries,
//!     u32 max entries, u32 value size, u32 padding, u64 keys[max], values[max]
//! mapping: a two-level tree, device id -> root of that device's tree, virtual block ->
//!     u64 (data block << 24 | time); device details: device id -> 24 bytes
//! ```
//!
//! Checksums are CRC-32C (seeded with !0, no final inversion) of each block after its
//! first four bytes, XORed with a per-kind constant. Every block number is checked to lie
//! inside the metadata, keys to ascend, and no node to be visited twice on one path down
//! or more than the metadata has blocks, so a cyclic or hostile tree ends in an error.

use crate::{corrupt, Error, Medium, Result};
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

pub const BLOCK: u64 = 4096;
const MAGIC: u64 = 27_022_010;
const SUPERBLOCK_XOR: u32 = 160_774;
const BTREE_XOR: u32 = 121_107;
const INTERNAL: u32 = 1;
const LEAF: u32 = 2;
const MAX_DEPTH: usize = 16;

/// CRC-32C (Castagnoli, reflected), seeded with `!0`, without the final inversion: the
/// kernel's `crc32c(~0, ...)` that dm-persistent-data uses.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
        }
    }
    c
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A thin device's details (`thin_dump`'s `<device>` attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Details {
    pub mapped_blocks: u64,
    pub transaction: u64,
    pub creation_time: u32,
    pub snapshotted_time: u32,
}

/// A run of mapped blocks: virtual blocks `[virt, virt + len)` at data blocks
/// `[data, data + len)`, all written at `time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub virt: u64,
    pub data: u64,
    pub len: u64,
    pub time: u32,
}

/// What a range of virtual blocks is between two devices (`thin_delta`'s elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaKind {
    Same,
    Different,
    LeftOnly,
    RightOnly,
}

/// An open thin-pool metadata volume.
pub struct ThinPool<'a, M: Medium + ?Sized> {
    m: &'a M,
    pub nr_blocks: u64,
    /// Data block size in bytes.
    pub data_block_size: u64,
    pub time: u32,
    pub transaction: u64,
    mapping_root: u64,
    details_root: u64,
}

impl<'a, M: Medium + ?Sized> ThinPool<'a, M> {
    /// Reads and checks the superblock.
    pub fn open(m: &'a M) -> Result<ThinPool<'a, M>> {
        if m.size() < BLOCK {
            return corrupt("the thin-pool metadata is smaller than one block");
        }
        let mut b = vec![0u8; BLOCK as usize];
        m.read_exact_at(0, &mut b)?;
        if u64_at(&b, 32) != MAGIC {
            return corrupt("no thin-pool superblock magic at block 0");
        }
        if crc32c(&b[4..]) ^ SUPERBLOCK_XOR != u32_at(&b, 0) {
            return corrupt("the thin-pool superblock's checksum is wrong");
        }
        let version = u32_at(&b, 40);
        if !(1..=2).contains(&version) {
            return Err(Error::Unsupported(format!(
                "thin-pool metadata version {version}"
            )));
        }
        if u32_at(&b, 340) != 8 {
            return Err(Error::Unsupported(format!(
                "metadata block size {} sectors (4 KiB blocks are read)",
                u32_at(&b, 340)
            )));
        }
        let data_block_size = u64::from(u32_at(&b, 336)) * 512;
        if data_block_size == 0 {
            return corrupt("a data block size of 0");
        }
        let nr_blocks = u64_at(&b, 344).min(m.size() / BLOCK);
        Ok(ThinPool {
            m,
            nr_blocks,
            data_block_size,
            time: u32_at(&b, 44),
            transaction: u64_at(&b, 48),
            mapping_root: u64_at(&b, 320),
            details_root: u64_at(&b, 328),
        })
    }

    /// A checked btree node: (is leaf, keys, values as raw bytes, value size).
    fn node(&self, block: u64, value_size: usize) -> Result<(bool, Vec<u64>, Vec<u8>)> {
        if block == 0 || block >= self.nr_blocks {
            return corrupt(format!(
                "a btree node at block {block}, outside the metadata's {} blocks",
                self.nr_blocks
            ));
        }
        let mut b = vec![0u8; BLOCK as usize];
        self.m.read_exact_at(block * BLOCK, &mut b)?;
        if crc32c(&b[4..]) ^ BTREE_XOR != u32_at(&b, 0) {
            return corrupt(format!(
                "the btree node at block {block} has a wrong checksum"
            ));
        }
        if u64_at(&b, 8) != block {
            return corrupt(format!(
                "the btree node at block {block} says it is block {}",
                u64_at(&b, 8)
            ));
        }
        let flags = u32_at(&b, 4);
        let (n, max, vsize) = (
            u32_at(&b, 16) as usize,
            u32_at(&b, 20) as usize,
            u32_at(&b, 24) as usize,
        );
        let leaf = match flags {
            INTERNAL => false,
            LEAF => true,
            f => return corrupt(format!("the btree node at block {block} has flags {f}")),
        };
        let want = if leaf { value_size } else { 8 };
        if vsize != want || n > max || 32 + max * (8 + vsize) > BLOCK as usize {
            return corrupt(format!(
                "the btree node at block {block} has an impossible layout"
            ));
        }
        let keys: Vec<u64> = (0..n).map(|i| u64_at(&b, 32 + i * 8)).collect();
        if keys.windows(2).any(|w| w[0] >= w[1]) {
            return corrupt(format!(
                "the btree node at block {block} has keys out of order"
            ));
        }
        let vstart = 32 + max * 8;
        Ok((leaf, keys, b[vstart..vstart + n * vsize].to_vec()))
    }

    /// Every (key, value) of the tree at `root`, in key order. Walks at most as many
    /// nodes as the metadata has blocks, never deeper than [`MAX_DEPTH`], and checks that
    /// keys stay inside the bounds their parent gave.
    fn walk(&self, root: u64, value_size: usize, out: &mut Vec<(u64, Vec<u8>)>) -> Result<()> {
        let mut budget = self.nr_blocks;
        self.walk_node(root, value_size, 0, (0, u64::MAX), &mut budget, out)
    }

    fn walk_node(
        &self,
        block: u64,
        value_size: usize,
        depth: usize,
        (low, high): (u64, u64),
        budget: &mut u64,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<()> {
        if depth > MAX_DEPTH || *budget == 0 {
            return corrupt(format!(
                "the btree through block {block} is cyclic or too deep"
            ));
        }
        *budget -= 1;
        let (leaf, keys, values) = self.node(block, value_size)?;
        if keys.first().is_some_and(|&k| k < low) || keys.last().is_some_and(|&k| k > high) {
            return corrupt(format!(
                "the btree node at block {block} holds keys outside its parent's range"
            ));
        }
        for (i, &k) in keys.iter().enumerate() {
            if leaf {
                out.push((k, values[i * value_size..(i + 1) * value_size].to_vec()));
            } else {
                let child = u64_at(&values, i * 8);
                let next = keys.get(i + 1).map_or(high, |&n| n - 1);
                self.walk_node(child, value_size, depth + 1, (k, next), budget, out)?;
            }
        }
        Ok(())
    }

    /// The thin devices and their details, by device id.
    pub fn devices(&self) -> Result<BTreeMap<u64, Details>> {
        let mut raw = Vec::new();
        self.walk(self.details_root, 24, &mut raw)?;
        Ok(raw
            .into_iter()
            .map(|(id, v)| {
                (
                    id,
                    Details {
                        mapped_blocks: u64_at(&v, 0),
                        transaction: u64_at(&v, 8),
                        creation_time: u32_at(&v, 16),
                        snapshotted_time: u32_at(&v, 20),
                    },
                )
            })
            .collect())
    }

    /// The mapped blocks of device `dev`, merged into runs, in order.
    pub fn runs(&self, dev: u64) -> Result<Vec<Run>> {
        let mut top = Vec::new();
        self.walk(self.mapping_root, 8, &mut top)?;
        let Some((_, root)) = top.iter().find(|(k, _)| *k == dev) else {
            return Err(Error::Corrupt(format!(
                "thin device {dev} has no mapping tree"
            )));
        };
        let mut leaves = Vec::new();
        self.walk(u64_at(root, 0), 8, &mut leaves)?;
        let data_blocks = u64::MAX >> 24;
        let mut runs: Vec<Run> = Vec::new();
        for (virt, v) in leaves {
            let packed = u64_at(&v, 0);
            let (data, time) = (packed >> 24, (packed & 0xff_ffff) as u32);
            if data >= data_blocks {
                return corrupt(format!(
                    "thin device {dev} maps block {virt} to data block {data}"
                ));
            }
            match runs.last_mut() {
                Some(r) if r.virt + r.len == virt && r.data + r.len == data && r.time == time => {
                    r.len += 1
                }
                _ => runs.push(Run {
                    virt,
                    data,
                    len: 1,
                    time,
                }),
            }
        }
        Ok(runs)
    }
}

/// Compares two devices' runs block by block, as `thin_delta` does: ranges of virtual
/// blocks that are the same (same data block), different, or mapped on one side only.
/// Adjacent ranges of one kind are merged.
pub fn delta(left: &[Run], right: &[Run]) -> Vec<(DeltaKind, u64, u64)> {
    // Cut both sides at every boundary, then classify each piece.
    let mut cuts: Vec<u64> = Vec::new();
    for r in left.iter().chain(right) {
        cuts.push(r.virt);
        cuts.push(r.virt + r.len);
    }
    cuts.sort_unstable();
    cuts.dedup();
    let at = |runs: &[Run], v: u64| -> Option<u64> {
        let i = runs.partition_point(|r| r.virt + r.len <= v);
        runs.get(i)
            .filter(|r| r.virt <= v)
            .map(|r| r.data + (v - r.virt))
    };
    let mut out: Vec<(DeltaKind, u64, u64)> = Vec::new();
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let kind = match (at(left, a), at(right, a)) {
            (None, None) => continue,
            (Some(x), Some(y)) if x == y => DeltaKind::Same,
            (Some(_), Some(_)) => DeltaKind::Different,
            (Some(_), None) => DeltaKind::LeftOnly,
            (None, Some(_)) => DeltaKind::RightOnly,
        };
        match out.last_mut() {
            Some((k, begin, len)) if *k == kind && *begin + *len == a => *len += b - a,
            _ => out.push((kind, a, b - a)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C over "123456789" is 0xe3069283, with the
        // final inversion this variant leaves out.
        assert_eq!(!crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn delta_classifies_and_merges() {
        let left = [
            Run {
                virt: 0,
                data: 10,
                len: 4,
                time: 0,
            },
            Run {
                virt: 10,
                data: 50,
                len: 1,
                time: 0,
            },
        ];
        let right = [
            Run {
                virt: 0,
                data: 10,
                len: 2,
                time: 0,
            },
            Run {
                virt: 2,
                data: 90,
                len: 4,
                time: 1,
            },
        ];
        assert_eq!(
            delta(&left, &right),
            [
                (DeltaKind::Same, 0, 2),
                (DeltaKind::Different, 2, 2),
                (DeltaKind::RightOnly, 4, 2),
                (DeltaKind::LeftOnly, 10, 1),
            ]
        );
    }

    #[test]
    fn garbage_is_refused() {
        let zeros = vec![0u8; 16 * 4096];
        assert!(ThinPool::open(&zeros[..]).is_err());
    }
}
