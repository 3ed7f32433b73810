//! A backing chain: the top image over its backing files, mapped as one volume. Ranges a
//! layer leaves unallocated show the layer below; below the last layer, or past a smaller
//! backing file's end, they stay unallocated (read as zeros).

use crate::format::{self, Image, Mapping, Medium, Result, Run, View};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// QEMU caps backing chains too (crosvm's MAX_NESTING_DEPTH is 10); 16 is generous.
pub const MAX_DEPTH: usize = 16;

/// One layer of a chain: a qcow2 image (at a chosen L1 table) or a raw file.
pub enum Layer {
    Qcow2 { image: Box<Image>, view: View },
    Raw { size: u64 },
}

impl Layer {
    pub fn size(&self) -> u64 {
        match self {
            Layer::Qcow2 { view, .. } => view.size,
            Layer::Raw { size } => *size,
        }
    }
}

/// Where a range of the volume is, naming the layer that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Data {
        layer: usize,
        offset: u64,
    },
    Zero,
    Unallocated,
    Compressed {
        layer: usize,
        offset: u64,
        stored: u32,
        decoded: u32,
        skip: u32,
        codec: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub start: u64,
    pub length: u64,
    pub location: Location,
}

/// Maps `[start, ..)` of the chain, returning at most `max` extents (at least one) and
/// where the next page starts.
pub fn map<M: Medium>(
    layers: &[(M, Layer)],
    start: u64,
    max: usize,
) -> Result<(Vec<Extent>, Option<u64>)> {
    let size = layers[0].1.size();
    let max = max.max(1);
    // Work in windows of one top-level L2 table so a page never maps much past `max`.
    let window = match &layers[0].1 {
        Layer::Qcow2 { image, .. } => image.l2_coverage(),
        Layer::Raw { .. } => u64::MAX,
    };
    let mut out = Vec::new();
    let mut pos = start;
    while pos < size && out.len() < max {
        let end = pos.saturating_add(window - pos % window).min(size);
        map_layer(layers, 0, pos, end, &mut out)?;
        pos = end;
    }
    if out.len() > max {
        out.truncate(max);
        let last = out[max - 1];
        pos = last.start + last.length;
    }
    Ok((out, (pos < size).then_some(pos)))
}

/// Maps exactly `[start, end)` of the chain into `out` (merged extents).
pub fn map_range<M: Medium>(
    layers: &[(M, Layer)],
    start: u64,
    end: u64,
    out: &mut Vec<Extent>,
) -> Result<()> {
    map_layer(layers, 0, start, end, out)
}

fn map_layer<M: Medium>(
    layers: &[(M, Layer)],
    i: usize,
    start: u64,
    end: u64,
    out: &mut Vec<Extent>,
) -> Result<()> {
    let (medium, layer) = &layers[i];
    let inside = end.min(layer.size()).max(start);
    match layer {
        Layer::Raw { .. } => {
            if inside > start {
                push(
                    out,
                    start,
                    inside - start,
                    Location::Data {
                        layer: i,
                        offset: start,
                    },
                );
            }
        }
        Layer::Qcow2 { image, view } => {
            let mut runs: Vec<Mapping> = Vec::new();
            image.map(medium, view, start, inside, &mut runs)?;
            let codec = if image.compression_type == 1 {
                format::CODEC_ZSTD
            } else {
                format::CODEC_DEFLATE
            };
            for r in runs {
                match r.run {
                    Run::Data(offset) => {
                        push(out, r.start, r.length, Location::Data { layer: i, offset })
                    }
                    Run::Zero => push(out, r.start, r.length, Location::Zero),
                    Run::Unallocated if i + 1 < layers.len() => {
                        map_layer(layers, i + 1, r.start, r.start + r.length, out)?
                    }
                    Run::Unallocated => push(out, r.start, r.length, Location::Unallocated),
                    Run::Compressed {
                        offset,
                        stored,
                        skip,
                    } => push(
                        out,
                        r.start,
                        r.length,
                        Location::Compressed {
                            layer: i,
                            offset,
                            stored,
                            decoded: image.cluster_size() as u32,
                            skip,
                            codec,
                        },
                    ),
                }
            }
        }
    }
    if inside < end {
        push(out, inside, end - inside, Location::Unallocated);
    }
    Ok(())
}

fn push(out: &mut Vec<Extent>, start: u64, length: u64, location: Location) {
    if length == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last.start + last.length == start {
            let merged = match (last.location, location) {
                (
                    Location::Data {
                        layer: a,
                        offset: x,
                    },
                    Location::Data {
                        layer: b,
                        offset: y,
                    },
                ) => a == b && x + last.length == y,
                (Location::Zero, Location::Zero)
                | (Location::Unallocated, Location::Unallocated) => true,
                _ => false,
            };
            if merged {
                last.length += length;
                return;
            }
        }
    }
    out.push(Extent {
        start,
        length,
        location,
    });
}
