//! Known content for the conformance suite: a pattern no backend can guess, the layout of
//! the volumes the suite writes (data, explicit zero runs, holes), and the two ways bytes
//! cross the host: writing through `allocate` exactly as the import engine does, and
//! reading through the checked extent map exactly as an export does.

use snapport_core::extent::{CheckedMap, Extent, Location, VolumeSource};
use snapport_core::import::VolumeTarget;
use std::os::unix::fs::FileExt;

/// The host's write granularity: `allocate` is asked in multiples of it, except at the end.
pub const UNIT: u64 = 64 << 10;
const MIB: u64 = 1 << 20;

/// What one range of a volume holds after the suite wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Pattern bytes of this seed, written as data.
    Pattern(u64),
    /// Zeros written as data (a zero run inside data).
    Zeros,
    /// Recorded with `allocate(zero = true)` (only on plugins that declare `zero`).
    Zeroed,
}

/// One written range: `[offset, offset + length)`, `offset` a multiple of [`UNIT`].
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub offset: u64,
    pub length: u64,
    pub fill: Fill,
}

/// What the suite wrote into a volume, and so what it must read back.
#[derive(Debug, Clone)]
pub struct Layout {
    pub size: u64,
    pub runs: Vec<Run>,
}

/// Pattern bytes for `buf` at volume offset `offset`: every 8-byte word depends on the
/// seed and its own offset, so bytes read from the wrong place never match.
pub fn pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let at = offset + i as u64;
        let mut x = (at / 8) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 31;
        x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 29;
        // Never zero: a zero byte would hide a range read as a hole.
        *b = ((x >> ((at % 8) * 8)) as u8) | 1;
    }
}

impl Layout {
    /// The main volume (8 MiB: a whole number of 4 MiB LVM extents): pattern runs, a zero
    /// run written as data inside a pattern run, a range recorded as zeros when the
    /// plugin can, runs across a MiB boundary and up to the end, and never-written
    /// aligned holes between them.
    pub fn main(seed: u64, zero: bool) -> Layout {
        let mut runs = vec![
            Run {
                offset: 0,
                length: 2 * UNIT,
                fill: Fill::Pattern(seed),
            },
            Run {
                offset: MIB,
                length: UNIT,
                fill: Fill::Pattern(seed + 1),
            },
            Run {
                offset: MIB + UNIT,
                length: UNIT,
                fill: Fill::Zeros,
            },
            Run {
                offset: MIB + 2 * UNIT,
                length: 2 * UNIT,
                fill: Fill::Pattern(seed + 2),
            },
            Run {
                offset: 5 * MIB - UNIT,
                length: 3 * UNIT,
                fill: Fill::Pattern(seed + 3),
            },
            Run {
                offset: 8 * MIB - UNIT,
                length: UNIT,
                fill: Fill::Pattern(seed + 4),
            },
        ];
        if zero {
            runs.push(Run {
                offset: 3 * MIB,
                length: UNIT,
                fill: Fill::Zeroed,
            });
        }
        runs.sort_by_key(|r| r.offset);
        Layout {
            size: 8 * MIB,
            runs,
        }
    }

    /// A volume whose size is not a multiple of 64 KiB (nor of 4 KiB), written up to its
    /// last byte.
    pub fn awkward(seed: u64) -> Layout {
        let size = MIB + 4096 + 512 + 512;
        Layout {
            size,
            runs: vec![
                Run {
                    offset: 0,
                    length: UNIT,
                    fill: Fill::Pattern(seed),
                },
                Run {
                    offset: MIB,
                    length: size - MIB,
                    fill: Fill::Pattern(seed + 1),
                },
            ],
        }
    }

    /// The bytes a reader must see.
    pub fn expected(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.size as usize];
        for r in &self.runs {
            if let Fill::Pattern(seed) = r.fill {
                let span = r.offset as usize..(r.offset + r.length) as usize;
                pattern(seed, r.offset, &mut out[span]);
            }
        }
        out
    }

    /// `[offset, offset + length)` ranges of [`UNIT`] never written, in order.
    pub fn unwritten(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut pos = 0;
        for r in &self.runs {
            if r.offset > pos {
                out.push((pos, r.offset - pos));
            }
            pos = pos.max(r.offset + r.length);
        }
        if pos < self.size {
            out.push((pos, self.size - pos));
        }
        out
    }
}

/// Writes the layout's runs into `target` the way the import engine does: `allocate` for
/// each run, then the bytes of `expected` at the device offsets it answered, through the
/// host's descriptors. Ranges recorded as zeros that come back as data get zeros written.
pub fn write(
    target: &mut dyn VolumeTarget,
    layout: &Layout,
    expected: &[u8],
) -> Result<(), String> {
    let runs = &layout.runs;
    for r in runs {
        let zero = matches!(r.fill, Fill::Zeroed);
        let extents = target
            .allocate(r.offset, r.length, zero)
            .map_err(|e| format!("allocate [{}, +{}): {e}", r.offset, r.length))?;
        for e in extents {
            match e.location {
                Location::Data { device, offset } => {
                    let dev = target.device(device).map_err(|e| e.to_string())?;
                    // The host checks that allocate answers within the range asked; a
                    // plugin's numbers are still never trusted to index.
                    let span = usize::try_from(e.offset)
                        .ok()
                        .zip(usize::try_from(e.end()).ok())
                        .and_then(|(from, to)| expected.get(from..to))
                        .ok_or_else(|| {
                            format!(
                                "allocate [{}, +{}) answered [{}, +{}), outside the volume's {} bytes",
                                r.offset,
                                r.length,
                                e.offset,
                                e.length,
                                expected.len()
                            )
                        })?;
                    let zeros;
                    let bytes = if zero {
                        zeros = vec![0u8; span.len()];
                        &zeros[..]
                    } else {
                        span
                    };
                    dev.file.write_all_at(bytes, offset).map_err(|err| {
                        format!(
                            "writing {} bytes at {offset} of {}: {err}",
                            bytes.len(),
                            dev.name
                        )
                    })?;
                }
                Location::Zero if zero => {}
                other => {
                    return Err(format!(
                        "allocate [{}, +{}) answered {other:?}, which the host cannot write",
                        e.offset, e.length
                    ))
                }
            }
        }
    }
    Ok(())
}

/// The most bytes [`read`] keeps: the suite keeps only volumes it wrote (a few MiB); a
/// larger size is a plugin's number, not memory to take on its word.
pub const KEEP_CAP: u64 = 256 << 20;
/// The most extents a map may have before [`read`] gives up on it: a million extents
/// over a volume the suite reads is a plugin fragmenting its map (or lying about it),
/// and walking on would only eat time and memory.
pub const MAX_EXTENTS: u64 = 1_000_000;

/// What [`read`] keeps besides the digest.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// The bytes (at most [`KEEP_CAP`] of them).
    pub bytes: bool,
    /// The extents (else only counted).
    pub map: bool,
}

impl Keep {
    pub const NOTHING: Keep = Keep {
        bytes: false,
        map: false,
    };
    pub const MAP: Keep = Keep {
        bytes: false,
        map: true,
    };
    pub const ALL: Keep = Keep {
        bytes: true,
        map: true,
    };
}

/// A volume as read through its checked map.
pub struct Read {
    /// The map, checked (covers the volume in order, within its devices), when kept.
    pub map: Vec<Extent>,
    /// How many extents the map has (kept or not).
    pub extents: u64,
    /// The bytes, when the caller kept them.
    pub bytes: Option<Vec<u8>>,
    /// SHA-256 over the data bytes and the hole ranges: equal for two equal reads.
    pub digest: [u8; 32],
    /// Bytes read from devices or decoded.
    pub data_bytes: u64,
}

/// Reads `source` through its checked map, data bytes from the host's descriptors and
/// encoded units through the plugin's `decode`. Keeps what `keep` says; stops reading
/// data (the map is still walked whole) after `cap` data bytes. A map of more than
/// [`MAX_EXTENTS`] extents, or bytes to keep past [`KEEP_CAP`], is an error.
pub fn read(source: &mut dyn VolumeSource, keep: Keep, cap: u64) -> Result<Read, String> {
    use sha2::{Digest, Sha256};
    let size = source.size();
    if keep.bytes && size > KEEP_CAP {
        return Err(format!(
            "opens with {size} bytes, more than the {KEEP_CAP} the suite reads into memory"
        ));
    }
    let mut bytes = keep.bytes.then(|| vec![0u8; size as usize]);
    let mut hash = Sha256::new();
    let mut map = CheckedMap::new(source);
    let mut extents = Vec::new();
    let mut count = 0u64;
    let mut data_bytes = 0u64;
    let mut buf = Vec::new();
    while let Some(e) = map.next_extent().map_err(|e| e.to_string())? {
        count += 1;
        if count > MAX_EXTENTS {
            return Err(format!(
                "the extent map is too fragmented: more than {MAX_EXTENTS} extents"
            ));
        }
        if keep.map {
            extents.push(e);
        }
        if data_bytes >= cap {
            continue;
        }
        let piece: &[u8] = match e.location {
            Location::Zero | Location::Unallocated => {
                hash.update(b"hole");
                hash.update(e.offset.to_le_bytes());
                hash.update(e.length.to_le_bytes());
                continue;
            }
            Location::Data { device, offset } => {
                let dev = map.source().device(device).map_err(|e| e.to_string())?;
                buf.resize(e.length.min(cap - data_bytes) as usize, 0);
                snapport_core::io::read_exact_at(&dev, &mut buf, offset)
                    .map_err(|e| e.to_string())?;
                &buf
            }
            Location::Encoded(x) => {
                let source = map.source();
                let dev = source.device(x.device).map_err(|e| e.to_string())?;
                let stored =
                    u64::from(x.stored_length).min(dev.size.saturating_sub(x.offset)) as usize;
                let mut raw = vec![0u8; stored];
                snapport_core::io::read_exact_at(&dev, &mut raw, x.offset)
                    .map_err(|e| e.to_string())?;
                buf = source
                    .decode(x.codec, &raw, x.decoded_length)
                    .map_err(|e| e.to_string())?;
                let from = x.skip as usize;
                let end = usize::try_from(e.length)
                    .ok()
                    .and_then(|l| from.checked_add(l))
                    .unwrap_or(usize::MAX);
                if buf.len() < end {
                    return Err(format!(
                        "decoded {} bytes where the extent at {} needs {end}",
                        buf.len(),
                        e.offset
                    ));
                }
                buf.drain(..from);
                buf.truncate(e.length as usize);
                &buf
            }
        };
        hash.update(b"data");
        hash.update(e.offset.to_le_bytes());
        hash.update(piece);
        if let Some(out) = bytes.as_mut() {
            let at = e.offset as usize;
            let slot = at
                .checked_add(piece.len())
                .and_then(|end| out.get_mut(at..end))
                .ok_or_else(|| {
                    format!(
                        "the extent at {} ({} bytes) lies past the end ({size})",
                        e.offset,
                        piece.len()
                    )
                })?;
            slot.copy_from_slice(piece);
        }
        data_bytes += piece.len() as u64;
    }
    Ok(Read {
        map: extents,
        extents: count,
        bytes,
        digest: hash.finalize().into(),
        data_bytes,
    })
}

/// The first offset where `got` and `want` differ, for a failure that says where.
pub fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .or((got.len() != want.len()).then(|| got.len().min(want.len())))
}
