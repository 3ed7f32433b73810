//! Checks on the block metadata a CSI driver streams (GetMetadataAllocated,
//! GetMetadataDelta) before anything follows it.
//!
//! The spec promises ranges in ascending order without overlap, within the volume, all of
//! one size under `FIXED_LENGTH`, and the same `volume_capacity_bytes` in every message. A
//! driver that breaks a promise gets a [`MetadataError`] naming the range and the promise,
//! never a best guess: an export built on a wrong map would silently lose data.

use crate::msg::{BlockMetadataResponse, BlockMetadataType};
use alloc::vec::Vec;
use core::fmt;

/// What a driver's block metadata got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataError {
    /// `volume_capacity_bytes` is not the size of the volume being read.
    Capacity { said: i64, volume: u64 },
    /// `block_metadata_type` is UNKNOWN, unknown, or changed within one stream.
    Type {
        said: i32,
        before: Option<BlockMetadataType>,
    },
    /// A range with a negative offset, an empty or negative size, or one past the volume.
    OutOfRange { offset: i64, size: i64, volume: u64 },
    /// A range that starts before the end of the one before it (or before the offset asked).
    Unsorted { offset: i64, size: i64, after: u64 },
    /// `FIXED_LENGTH` ranges of different sizes.
    Length { size: i64, fixed: u64 },
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MetadataError::Capacity { said, volume } => write!(
                f,
                "the driver says the volume holds {said} bytes (volume_capacity_bytes), but it has {volume}"
            ),
            MetadataError::Type { said, before: None } => {
                write!(f, "block_metadata_type {said} is neither FIXED_LENGTH (1) nor VARIABLE_LENGTH (2)")
            }
            MetadataError::Type { said, before: Some(b) } => {
                write!(f, "block_metadata_type changed from {} to {said} within one stream", b as i32)
            }
            MetadataError::OutOfRange { offset, size, volume } => {
                write!(f, "range of {size} bytes at {offset} does not fit in the volume's {volume} bytes")
            }
            MetadataError::Unsorted { offset, size, after } => write!(
                f,
                "range of {size} bytes at {offset} overlaps or precedes what came before (up to {after}): ranges must ascend without overlap"
            ),
            MetadataError::Length { size, fixed } => {
                write!(f, "FIXED_LENGTH range of {size} bytes after ranges of {fixed} bytes")
            }
        }
    }
}

/// One stream's ranges, checked message by message.
#[derive(Debug, Clone)]
pub struct RangeCheck {
    capacity: u64,
    /// Nothing may end at or before this: the stream's `starting_offset`, then the end of
    /// the last range accepted.
    next: u64,
    /// Whether a range was accepted yet (the first may begin before `starting_offset`:
    /// a FIXED_LENGTH block that contains it).
    started: bool,
    kind: Option<BlockMetadataType>,
    fixed: Option<u64>,
}

impl RangeCheck {
    /// A stream of a volume of `capacity` bytes asked from `starting_offset`.
    pub fn new(capacity: u64, starting_offset: u64) -> RangeCheck {
        RangeCheck {
            capacity,
            next: starting_offset,
            started: false,
            kind: None,
            fixed: None,
        }
    }

    /// Where a stream that broke after the ranges accepted so far resumes: the end of the
    /// last one (the `starting_offset` of the next request).
    pub fn resume_offset(&self) -> u64 {
        self.next
    }

    /// The block metadata type the stream declared, once it has.
    pub fn kind(&self) -> Option<BlockMetadataType> {
        self.kind
    }

    /// Checks one message; answers its ranges as `(offset, length)`, clipped to start at
    /// the stream's `starting_offset`.
    pub fn message(&mut self, m: &BlockMetadataResponse) -> Result<Vec<(u64, u64)>, MetadataError> {
        if u64::try_from(m.volume_capacity_bytes).ok() != Some(self.capacity) {
            return Err(MetadataError::Capacity {
                said: m.volume_capacity_bytes,
                volume: self.capacity,
            });
        }
        let kind = match BlockMetadataType::try_from(m.block_metadata_type) {
            Ok(k @ (BlockMetadataType::FixedLength | BlockMetadataType::VariableLength)) => k,
            _ => {
                return Err(MetadataError::Type {
                    said: m.block_metadata_type,
                    before: self.kind,
                })
            }
        };
        if self.kind.is_some_and(|k| k != kind) {
            return Err(MetadataError::Type {
                said: m.block_metadata_type,
                before: self.kind,
            });
        }
        self.kind = Some(kind);
        let mut out = Vec::with_capacity(m.block_metadata.len());
        for b in &m.block_metadata {
            let (offset, size) = (b.byte_offset, b.size_bytes);
            let out_of_range = MetadataError::OutOfRange {
                offset,
                size,
                volume: self.capacity,
            };
            let (Ok(start), Ok(len)) = (u64::try_from(offset), u64::try_from(size)) else {
                return Err(out_of_range);
            };
            let end = match start.checked_add(len) {
                Some(end) if len > 0 && end <= self.capacity => end,
                _ => return Err(out_of_range),
            };
            if kind == BlockMetadataType::FixedLength {
                match self.fixed {
                    Some(fixed) if fixed != len => {
                        return Err(MetadataError::Length { size, fixed })
                    }
                    _ => self.fixed = Some(len),
                }
            }
            let precedes = if self.started {
                start < self.next
            } else {
                end <= self.next
            };
            if precedes {
                return Err(MetadataError::Unsorted {
                    offset,
                    size,
                    after: self.next,
                });
            }
            let from = start.max(self.next);
            out.push((from, end - from));
            self.next = end;
            self.started = true;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::BlockMetadata;
    use alloc::vec;

    fn msg(kind: BlockMetadataType, cap: i64, ranges: &[(i64, i64)]) -> BlockMetadataResponse {
        BlockMetadataResponse {
            block_metadata_type: kind as i32,
            volume_capacity_bytes: cap,
            block_metadata: ranges
                .iter()
                .map(|&(byte_offset, size_bytes)| BlockMetadata {
                    byte_offset,
                    size_bytes,
                })
                .collect(),
        }
    }
    use BlockMetadataType::{FixedLength as F, VariableLength as V};

    #[test]
    fn ascending_ranges_pass_across_messages() {
        let mut c = RangeCheck::new(1 << 20, 0);
        assert_eq!(
            c.message(&msg(F, 1 << 20, &[(0, 4096), (8192, 4096)]))
                .unwrap(),
            vec![(0, 4096), (8192, 4096)]
        );
        assert_eq!(
            c.message(&msg(F, 1 << 20, &[(12288, 4096)])).unwrap(),
            vec![(12288, 4096)]
        );
        assert_eq!(c.resume_offset(), 16384);
        let mut v = RangeCheck::new(1 << 20, 0);
        assert_eq!(
            v.message(&msg(V, 1 << 20, &[(0, 100), (100, 5000)]))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_block_holding_the_starting_offset_is_clipped() {
        let mut c = RangeCheck::new(1 << 20, 6000);
        assert_eq!(
            c.message(&msg(F, 1 << 20, &[(4096, 4096)])).unwrap(),
            vec![(6000, 2192)]
        );
        let mut c = RangeCheck::new(1 << 20, 8192);
        assert!(matches!(
            c.message(&msg(F, 1 << 20, &[(4096, 4096)])),
            Err(MetadataError::Unsorted { .. })
        ));
    }

    #[test]
    fn broken_promises_are_named() {
        let cap = 1 << 20;
        let bad = |kind, c: i64, r: &[(i64, i64)]| {
            RangeCheck::new(cap, 0)
                .message(&msg(kind, c, r))
                .unwrap_err()
        };
        assert!(matches!(
            bad(F, cap as i64 + 1, &[]),
            MetadataError::Capacity { .. }
        ));
        assert!(matches!(
            bad(BlockMetadataType::Unknown, cap as i64, &[]),
            MetadataError::Type { .. }
        ));
        assert!(matches!(
            bad(F, cap as i64, &[(8192, 4096), (0, 4096)]),
            MetadataError::Unsorted { .. }
        ));
        assert!(matches!(
            bad(V, cap as i64, &[(0, 8192), (4096, 4096)]),
            MetadataError::Unsorted { .. }
        ));
        assert!(matches!(
            bad(F, cap as i64, &[(0, 4096), (4096, 8192)]),
            MetadataError::Length { .. }
        ));
        assert!(matches!(
            bad(V, cap as i64, &[(cap as i64 - 10, 11)]),
            MetadataError::OutOfRange { .. }
        ));
        assert!(matches!(
            bad(V, cap as i64, &[(-1, 11)]),
            MetadataError::OutOfRange { .. }
        ));
        assert!(matches!(
            bad(V, cap as i64, &[(0, 0)]),
            MetadataError::OutOfRange { .. }
        ));
        assert!(matches!(
            bad(V, cap as i64, &[(i64::MAX, i64::MAX)]),
            MetadataError::OutOfRange { .. }
        ));
        let mut c = RangeCheck::new(cap, 0);
        c.message(&msg(F, cap as i64, &[(0, 4096)])).unwrap();
        assert!(matches!(
            c.message(&msg(V, cap as i64, &[(4096, 10)])),
            Err(MetadataError::Type { .. })
        ));
    }
}
