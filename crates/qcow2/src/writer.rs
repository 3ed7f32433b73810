//! A new qcow2 v3 image filled in any order: the import path.
//!
//! The caller asks where guest clusters go ([`NewImage::allocate`]) and writes the data
//! there itself; this type only keeps the L2 tables. Data clusters are appended from
//! cluster 1 on in the order they are asked for, so the file grows front to back while
//! data streams in. [`NewImage::finish`] then appends the L2 tables, the L1 table and the
//! refcount structures, and rewrites cluster 0 with a header that points at them. Until
//! then cluster 0 is zeros, which no qcow2 reader accepts: a file cut short is never
//! mistaken for an image.

use crate::format::{Error, Result};
use crate::layout::{
    self, HeaderFields, CLUSTER_SIZE, COPIED, L2_ENTRIES, MAX_BACKING_NAME, MAX_SIZE,
    REFCOUNTS_PER_BLOCK, ZERO,
};
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// Host offset bits of a standard L2 entry.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// Guest bytes `[guest, guest + length)` go to file offset `host` onwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub guest: u64,
    pub length: u64,
    pub host: u64,
}

pub struct NewImage {
    size: u64,
    backing: Option<(String, String)>,
    /// L2 tables by L1 index, created when a cluster they cover is first touched.
    l2: BTreeMap<u64, Vec<u64>>,
    /// The next free cluster of the file; cluster 0 is the header.
    next: u64,
}

impl NewImage {
    /// An empty image of `size` bytes, over `backing` = (file name, format) if given.
    pub fn new(size: u64, backing: Option<(String, String)>) -> Result<NewImage> {
        if size > MAX_SIZE {
            return Err(Error::Invalid(format!(
                "{size} bytes is more than a qcow2 image can hold ({MAX_SIZE})"
            )));
        }
        if let Some((name, format)) = &backing {
            if name.is_empty() || name.len() > MAX_BACKING_NAME || format.len() > 16 {
                return Err(Error::Invalid(format!(
                    "backing file name {name:?} is empty or too long"
                )));
            }
        }
        Ok(NewImage {
            size,
            backing,
            l2: BTreeMap::new(),
            next: 1,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Clusters allocated for data so far.
    pub fn data_clusters(&self) -> u64 {
        self.next - 1
    }

    fn check(&self, offset: u64, length: u64) -> Result<()> {
        let end = offset.checked_add(length).filter(|&e| e <= self.size);
        let Some(end) = end else {
            return Err(Error::Invalid(format!(
                "{length} bytes at {offset} run past the disk's {} bytes",
                self.size
            )));
        };
        // The end may fall inside the disk's last cluster (a source shorter than the disk).
        let in_last_cluster = end > 0 && (end - 1) / CLUSTER_SIZE == (self.size - 1) / CLUSTER_SIZE;
        if !offset.is_multiple_of(CLUSTER_SIZE)
            || (!end.is_multiple_of(CLUSTER_SIZE) && !in_last_cluster)
        {
            return Err(Error::Invalid(format!(
                "{length} bytes at {offset} are not aligned to the {CLUSTER_SIZE}-byte cluster"
            )));
        }
        Ok(())
    }

    fn entry(&mut self, cluster: u64) -> &mut u64 {
        let table = self
            .l2
            .entry(cluster / L2_ENTRIES)
            .or_insert_with(|| vec![0; L2_ENTRIES as usize]);
        &mut table[(cluster % L2_ENTRIES) as usize]
    }

    /// Where to write guest bytes `[offset, offset + length)`: clusters allocated before
    /// keep their place, new ones are appended. Adjacent runs are merged.
    pub fn allocate(&mut self, offset: u64, length: u64) -> Result<Vec<Placed>> {
        self.check(offset, length)?;
        let mut out: Vec<Placed> = Vec::new();
        let mut guest = offset;
        let end = offset + length;
        while guest < end {
            let cluster = guest / CLUSTER_SIZE;
            let mut next = self.next;
            let e = self.entry(cluster);
            let host = if *e & OFFSET_MASK != 0 {
                *e & OFFSET_MASK
            } else {
                let host = next * CLUSTER_SIZE;
                next += 1;
                host
            };
            *e = host | COPIED;
            self.next = next;
            let len = (CLUSTER_SIZE - guest % CLUSTER_SIZE).min(end - guest);
            match out.last_mut() {
                Some(p) if p.host + p.length == host && p.guest + p.length == guest => {
                    p.length += len
                }
                _ => out.push(Placed {
                    guest,
                    length: len,
                    host,
                }),
            }
            guest += len;
        }
        Ok(out)
    }

    /// Records `[offset, offset + length)` as zeros. Without a backing file, clusters never
    /// allocated read as zeros already and stay unallocated; over a backing file they get
    /// the zero flag so the backing data does not show through.
    pub fn zero(&mut self, offset: u64, length: u64) -> Result<()> {
        self.check(offset, length)?;
        let first = offset / CLUSTER_SIZE;
        let last = (offset + length).div_ceil(CLUSTER_SIZE);
        for cluster in first..last {
            let has_backing = self.backing.is_some();
            if !has_backing && !self.l2.contains_key(&(cluster / L2_ENTRIES)) {
                continue;
            }
            let e = self.entry(cluster);
            if *e & OFFSET_MASK != 0 {
                // Keeps the cluster (its refcount stays one) but reads it as zeros.
                *e |= ZERO;
            } else if has_backing {
                *e = ZERO;
            }
        }
        Ok(())
    }

    /// The metadata that makes the file an image, as (file offset, bytes) in file order
    /// with the header last; returns the file's final size. `out` gets one cluster-sized
    /// piece at a time, the L2 tables are the only memory this holds.
    pub fn finish(&self, out: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<u64> {
        let cs = CLUSTER_SIZE;
        let l1_entries = layout::l1_entries(self.size);
        let l1_clusters = layout::l1_clusters(l1_entries);
        let l2_start = self.next;
        let l1_start = l2_start + self.l2.len() as u64;
        let others = l1_start + l1_clusters;
        let (table_clusters, blocks) = layout::refcount_clusters(others);
        let table_start = others;
        let blocks_start = table_start + table_clusters;
        let total = blocks_start + blocks;
        if total * cs > OFFSET_MASK {
            return Err(Error::Invalid(
                "the image would outgrow qcow2's 64 PiB offsets".into(),
            ));
        }

        let mut buf = vec![0u8; cs as usize];
        let mut l1 = vec![0u64; l1_entries as usize];
        for (k, (index, table)) in self.l2.iter().enumerate() {
            let at = (l2_start + k as u64) * cs;
            l1[*index as usize] = at | COPIED;
            for (slot, v) in buf.chunks_exact_mut(8).zip(table) {
                slot.copy_from_slice(&v.to_be_bytes());
            }
            out(at, &buf)?;
        }
        emit_table(
            &mut buf,
            l1_start * cs,
            l1_clusters,
            &mut l1.into_iter(),
            out,
        )?;
        let mut table = (0..blocks).map(|k| (blocks_start + k) * cs);
        emit_table(&mut buf, table_start * cs, table_clusters, &mut table, out)?;
        // Every cluster of the file, header to the last refcount block, is used once.
        for k in 0..blocks {
            buf.fill(0);
            let n = total
                .saturating_sub(k * REFCOUNTS_PER_BLOCK)
                .min(REFCOUNTS_PER_BLOCK) as usize;
            for slot in buf.chunks_exact_mut(2).take(n) {
                slot.copy_from_slice(&1u16.to_be_bytes());
            }
            out((blocks_start + k) * cs, &buf)?;
        }
        let header = layout::header_cluster(&HeaderFields {
            size: self.size,
            l1_entries,
            l1_offset: l1_start * cs,
            refcount_table_offset: table_start * cs,
            refcount_table_clusters: table_clusters,
            backing: self.backing.as_ref().map(|(n, f)| (n.as_str(), f.as_str())),
        });
        out(0, &header)?;
        Ok(total * cs)
    }
}

/// Writes a table of big-endian u64 entries over `clusters` clusters from `at`.
fn emit_table(
    buf: &mut [u8],
    at: u64,
    clusters: u64,
    entries: &mut dyn Iterator<Item = u64>,
    out: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    for k in 0..clusters {
        buf.fill(0);
        for slot in buf.chunks_exact_mut(8) {
            match entries.next() {
                Some(v) => slot.copy_from_slice(&v.to_be_bytes()),
                None => break,
            }
        }
        out(at + k * CLUSTER_SIZE, buf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{self, Layer, Location};
    use crate::format::Image;
    use crate::layout::L2_COVERAGE;

    /// Builds an image in memory, then reads it back with the crate's own reader.
    fn build(size: u64, writes: &[(u64, u64)], zeros: &[(u64, u64)]) -> (Vec<u8>, Vec<Placed>) {
        let mut img = NewImage::new(size, None).unwrap();
        let mut placed = Vec::new();
        for &(o, l) in writes {
            placed.extend(img.allocate(o, l).unwrap());
        }
        for &(o, l) in zeros {
            img.zero(o, l).unwrap();
        }
        let mut file = Vec::new();
        let len = img
            .finish(&mut |at, bytes| {
                let end = at as usize + bytes.len();
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[at as usize..end].copy_from_slice(bytes);
                Ok(())
            })
            .unwrap();
        assert_eq!(len as usize, file.len());
        (file, placed)
    }

    #[test]
    fn out_of_order_writes_map_back() {
        let size = 3 * L2_COVERAGE + 12345;
        let writes = [
            (L2_COVERAGE * 2, 3 * CLUSTER_SIZE),
            (0, CLUSTER_SIZE),
            (size - 12345, 12345),
        ];
        let (file, placed) = build(size, &writes, &[]);
        assert_eq!(
            placed[0],
            Placed {
                guest: L2_COVERAGE * 2,
                length: 3 * CLUSTER_SIZE,
                host: CLUSTER_SIZE
            }
        );
        let image = Image::open(&file[..]).unwrap();
        let view = image.view(&file[..], None).unwrap().unwrap();
        let layers = vec![(
            &file[..],
            Layer::Qcow2 {
                image: Box::new(image),
                view,
            },
        )];
        let (extents, _) = chain::map(&layers, 0, 100).unwrap();
        let data: Vec<(u64, u64, u64)> = extents
            .iter()
            .filter_map(|e| match e.location {
                Location::Data { offset, .. } => Some((e.start, e.length, offset)),
                _ => None,
            })
            .collect();
        assert_eq!(
            data,
            vec![
                (0, CLUSTER_SIZE, 4 * CLUSTER_SIZE),
                (L2_COVERAGE * 2, 3 * CLUSTER_SIZE, CLUSTER_SIZE),
                (size - 12345, 12345, 5 * CLUSTER_SIZE)
            ]
        );
    }

    #[test]
    fn unaligned_and_oversized_requests_are_refused() {
        let mut img = NewImage::new(10 * CLUSTER_SIZE, None).unwrap();
        assert!(img.allocate(1, CLUSTER_SIZE).is_err());
        assert!(img.allocate(0, 11 * CLUSTER_SIZE).is_err());
        assert!(img.allocate(u64::MAX - 5, 10).is_err());
        assert!(NewImage::new(MAX_SIZE + 1, None).is_err());
    }
}
