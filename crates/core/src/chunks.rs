//! A volume's checked extent map cut into 4 MiB chunks (the content digest's groups),
//! each listing where its bytes come from. Export and import both walk volumes this way.

use crate::digest::{GROUP_SIZE, LEAF_SIZE};
use crate::error::{Error, ErrorKind, Result};
use crate::extent::{CheckedMap, Device, Encoded, Extent, Location, VolumeSource};
use std::sync::Arc;

/// One piece of a chunk, at `at` bytes into the chunk.
pub(crate) enum Piece {
    Device {
        device: Arc<Device>,
        offset: u64,
        at: usize,
        len: usize,
    },
    Hole {
        at: usize,
        len: usize,
    },
    Decoded {
        bytes: Arc<Vec<u8>>,
        from: usize,
        at: usize,
        len: usize,
    },
}

impl Piece {
    pub fn is_hole(&self) -> bool {
        matches!(self, Piece::Hole { .. })
    }

    /// Where the piece lies in its chunk: (offset, length).
    pub fn span(&self) -> (usize, usize) {
        match self {
            Piece::Device { at, len, .. }
            | Piece::Hole { at, len }
            | Piece::Decoded { at, len, .. } => (*at, *len),
        }
    }
}

/// Bytes `[start, start + len)` of the volume and where they come from.
pub(crate) struct Chunk {
    pub start: u64,
    pub len: usize,
    pub pieces: Vec<Piece>,
}

/// Walks the map chunk by chunk; an extent that crosses a chunk boundary is split.
pub(crate) struct Chunker<'a> {
    map: CheckedMap<'a>,
    what: String,
    size: u64,
    start: u64,
    carry: Option<Extent>,
    /// The last encoded unit decoded: consecutive extents often share one.
    decoded: Option<(Encoded, Arc<Vec<u8>>)>,
}

impl<'a> Chunker<'a> {
    pub fn new(source: &'a mut dyn VolumeSource, size: u64) -> Chunker<'a> {
        Chunker::at(source, size, 0)
    }

    /// Chunks from `start` on; `start` should be a multiple of [`GROUP_SIZE`] so chunks
    /// stay the digest's groups.
    pub fn at(source: &'a mut dyn VolumeSource, size: u64, start: u64) -> Chunker<'a> {
        Chunker {
            what: source.describe(),
            map: CheckedMap::at(source, start),
            size,
            start,
            carry: None,
            decoded: None,
        }
    }

    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        let start = self.start;
        if start >= self.size {
            return Ok(None);
        }
        let len = (self.size - start).min(GROUP_SIZE) as usize;
        let end = start + len as u64;
        let mut pieces = Vec::new();
        loop {
            let e = match self.carry.take() {
                Some(e) => e,
                None => match self.map.next_extent()? {
                    Some(e) => e,
                    None => {
                        return Err(Error::new(
                            ErrorKind::Plugin,
                            format!(
                                "{}: the extent map ended at {start} before the volume's end",
                                self.what
                            ),
                        ))
                    }
                },
            };
            let piece_end = e.end().min(end);
            let at = (e.offset - start) as usize;
            let n = (piece_end - e.offset) as usize;
            let piece = match e.location {
                Location::Zero | Location::Unallocated => Piece::Hole { at, len: n },
                Location::Data { device, offset } => Piece::Device {
                    device: self.map.source().device(device)?,
                    offset,
                    at,
                    len: n,
                },
                Location::Encoded(x) => {
                    let bytes = match &self.decoded {
                        Some((k, b)) if *k == x => Arc::clone(b),
                        _ => {
                            let b = Arc::new(read_decoded(self.map.source(), &x)?);
                            self.decoded = Some((x, Arc::clone(&b)));
                            b
                        }
                    };
                    Piece::Decoded {
                        bytes,
                        from: x.skip as usize,
                        at,
                        len: n,
                    }
                }
            };
            pieces.push(piece);
            if e.end() > end {
                // The rest of this extent belongs to the next chunk.
                self.carry = Some(e.advance(end - e.offset));
                break;
            }
            if e.end() == end {
                break;
            }
        }
        self.start = end;
        Ok(Some(Chunk { start, len, pieces }))
    }
}

/// Reads an encoded unit from its device and has the plugin decode it.
fn read_decoded(source: &mut dyn VolumeSource, x: &Encoded) -> Result<Vec<u8>> {
    let dev = source.device(x.device)?;
    let stored = (u64::from(x.stored_length)).min(dev.size - x.offset) as usize;
    let mut buf = vec![0u8; stored];
    crate::io::read_exact_at(&dev, &mut buf, x.offset)?;
    let out = source.decode(x.codec, &buf, x.decoded_length)?;
    if out.len() != x.decoded_length as usize {
        return Err(Error::new(
            ErrorKind::Plugin,
            format!(
                "{} decoded {} bytes where it promised {}",
                source.describe(),
                out.len(),
                x.decoded_length
            ),
        ));
    }
    Ok(out)
}

/// Bit `i` set when leaf `i` of the chunk holds bytes from a device or a decoder; the
/// other leaves are holes, whose digest leaf is a constant.
pub(crate) fn data_leaves(pieces: &[Piece]) -> u64 {
    const _: () = assert!(GROUP_SIZE / LEAF_SIZE == 64, "one bit per leaf in a u64");
    let mut mask = 0u64;
    for p in pieces {
        if let Piece::Device { at, len, .. } | Piece::Decoded { at, len, .. } = *p {
            let first = at as u64 / LEAF_SIZE;
            let last = (at + len - 1) as u64 / LEAF_SIZE;
            for leaf in first..=last {
                mask |= 1 << leaf;
            }
        }
    }
    mask
}

/// Fills `buf` with the chunk's bytes: holes zeroed, decoded ranges copied, and device
/// ranges read when `devices` is set (an import that only probes them leaves them out).
pub(crate) fn read_pieces(pieces: &[Piece], buf: &mut [u8], devices: bool) -> Result<()> {
    for p in pieces {
        match p {
            Piece::Device {
                device,
                offset,
                at,
                len,
            } => {
                if devices {
                    crate::io::read_exact_at(device, &mut buf[*at..*at + *len], *offset)?
                }
            }
            Piece::Hole { at, len } => buf[*at..*at + *len].fill(0),
            Piece::Decoded {
                bytes,
                from,
                at,
                len,
            } => buf[*at..*at + *len].copy_from_slice(&bytes[*from..*from + *len]),
        }
    }
    Ok(())
}

/// Fills `buf` with the chunk's bytes from `from` on (bytes `[from, from + buf.len())` of
/// the chunk): what a ranged read needs of a chunk, device ranges included.
pub(crate) fn read_span(pieces: &[Piece], from: usize, buf: &mut [u8]) -> Result<()> {
    let to = from + buf.len();
    for p in pieces {
        let (at, len) = p.span();
        let (a, b) = (at.max(from), (at + len).min(to));
        if a >= b {
            continue;
        }
        let out = &mut buf[a - from..b - from];
        match p {
            Piece::Device { device, offset, .. } => {
                crate::io::read_exact_at(device, out, offset + (a - at) as u64)?
            }
            Piece::Hole { .. } => out.fill(0),
            Piece::Decoded {
                bytes, from: skip, ..
            } => {
                let s = skip + (a - at);
                out.copy_from_slice(&bytes[s..s + (b - a)])
            }
        }
    }
    Ok(())
}
