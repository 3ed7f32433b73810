//! Incremental exports: the bytes of one snapshot that differ from an earlier one (the
//! base), as a file that applies on top of anything holding the base's content.
//!
//! Which ranges differ comes from the backend's metadata (`changed-extents`); this module
//! reads those ranges, writes them, and keeps both ends verifiable without reading the
//! unchanged bytes: a [`LeafMap`] holds the SHA-256 of every 64 KiB leaf of a snapshot
//! (the leaves of the content digest, [`crate::digest`]), so the new snapshot's digest
//! is the base's map with the changed leaves replaced.
//!
//! The file (`snapport delta`, version 1; integers big-endian):
//!
//! ```text
//! "SNAPDLT1"
//! u32 n, n bytes: manifest, JSON (disk, base and target: name, id, size, digest)
//! records, ascending and disjoint, whole 64 KiB leaves (the last may be short):
//!     u8 kind (1 data, 2 zeros), u64 offset, u64 length, then `length` bytes for data
//! u8 0: the end of the records
//! u32 n, n bytes: footer, JSON (the target's content digest, record and byte counts)
//! 32 bytes: SHA-256 of every byte before them
//! ```

use crate::digest::{ContentDigest, LEAF_SIZE};
use crate::error::{Error, ErrorKind, Result};
use crate::extent::{Device, Extent, ExtentPage, Location, VolumeSource};
use crate::progress::Progress;
use crate::volume_reader::VolumeReader;
use crate::zeros::is_zero;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"SNAPDLT1";
const KIND_END: u8 = 0;
const KIND_DATA: u8 = 1;
const KIND_ZERO: u8 = 2;
/// Manifests and footers are small; a larger length is a damaged or hostile file.
const MAX_JSON: u32 = 1 << 20;
/// Data records are cut at this size, so a reader never needs more in memory.
const MAX_DATA_RECORD: u64 = 4 << 20;
/// The largest saved digest map loaded: a 32 TiB disk's (32 bytes per 64 KiB leaf).
const MAX_LEAF_MAP: u64 = 16 << 30;
/// The device number of the delta file in an [`Overlay`]'s map (plugins number theirs
/// from 0).
const DELTA_DEVICE: u32 = u32::MAX;

/// Which snapshot (or volume) an end of the delta is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// As addressed: `vds/DISK@SNAP`.
    pub name: String,
    /// The backend's identifier, when it has one.
    pub id: Option<String>,
    pub size: u64,
    pub created_unix_ms: Option<u64>,
    /// The content digest (`sha256-64k-4m:`): for the base, what the delta applies to.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub disk: String,
    pub base: Identity,
    pub target: Identity,
}

impl Manifest {
    pub fn new(disk: &str, base: Identity, target: Identity) -> Manifest {
        Manifest {
            format: "snapport-delta".into(),
            version: 1,
            disk: disk.into(),
            base,
            target,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    /// The content digest of the base with the delta applied.
    pub target_digest: String,
    pub records: u64,
    /// Bytes the data records carry.
    pub data_bytes: u64,
    /// Bytes the zero records cover.
    pub zero_bytes: u64,
}

/// The SHA-256 of every 64 KiB leaf of a volume, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafMap {
    pub size: u64,
    pub leaves: Vec<[u8; 32]>,
}

/// A leaf's hash (an all-zero full leaf is recognised without hashing).
pub fn leaf_hash(bytes: &[u8]) -> [u8; 32] {
    if bytes.len() == LEAF_SIZE as usize && is_zero(bytes) {
        zero_leaf()
    } else {
        Sha256::digest(bytes).into()
    }
}

fn zero_leaf() -> [u8; 32] {
    static Z: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    *Z.get_or_init(|| Sha256::digest(vec![0u8; LEAF_SIZE as usize]).into())
}

fn leaves_in(size: u64) -> usize {
    size.div_ceil(LEAF_SIZE) as usize
}

impl LeafMap {
    /// The content digest these leaves make.
    pub fn digest(&self) -> String {
        let per_group = (crate::digest::GROUP_SIZE / LEAF_SIZE) as usize;
        let mut digest = ContentDigest::new();
        for group in self.leaves.chunks(per_group) {
            let mut h = Sha256::new();
            for leaf in group {
                h.update(leaf);
            }
            digest.push(&h.finalize().into());
        }
        digest.finish()
    }

    /// Reads the whole volume once (holes cost a scan, not a hash).
    pub fn compute(reader: &VolumeReader, progress: &mut dyn Progress) -> Result<LeafMap> {
        let size = reader.size();
        let mut leaves = Vec::with_capacity(leaves_in(size));
        let mut leaf = Vec::with_capacity(LEAF_SIZE as usize);
        progress.start(size);
        reader.read_range(0, size, &mut |block| {
            progress.advance(block.len() as u64);
            let mut rest = &block[..];
            while !rest.is_empty() {
                let take = (LEAF_SIZE as usize - leaf.len()).min(rest.len());
                leaf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if leaf.len() == LEAF_SIZE as usize {
                    leaves.push(leaf_hash(&leaf));
                    leaf.clear();
                }
            }
            Ok(())
        })?;
        if !leaf.is_empty() {
            leaves.push(leaf_hash(&leaf));
        }
        progress.finish();
        Ok(LeafMap { size, leaves })
    }

    /// Saves the map under `path` (atomically), labelled with `identity`: a snapshot
    /// deleted and remade under the same name is not mistaken for the old one.
    pub fn save(&self, path: &Path, identity: &str) -> Result<()> {
        let mut bytes = format!("{identity}\n{}\n", self.size).into_bytes();
        for l in &self.leaves {
            bytes.extend_from_slice(l);
        }
        let tmp = path.with_extension("tmp");
        let io = |e| Error::io(format!("saving the digest map {}", path.display()), e);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The map saved under `path` for `identity`, if there is one and it is whole.
    pub fn load(path: &Path, identity: &str) -> Option<LeafMap> {
        let bytes = crate::io::read_regular_file(path, MAX_LEAF_MAP).ok()?;
        let (id_line, rest) = split_line(&bytes)?;
        let (size_line, leaves) = split_line(rest)?;
        if id_line != identity.as_bytes() {
            return None;
        }
        let size: u64 = std::str::from_utf8(size_line).ok()?.parse().ok()?;
        if leaves.len() != leaves_in(size) * 32 {
            return None;
        }
        Some(LeafMap {
            size,
            leaves: leaves
                .chunks_exact(32)
                .map(|c| c.try_into().unwrap())
                .collect(),
        })
    }
}

fn split_line(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == b'\n')?;
    Some((&b[..i], &b[i + 1..]))
}

/// Ranges rounded out to whole leaves (clamped to `size`), merged.
pub fn leaf_ranges(ranges: &[(u64, u64)], size: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(a, len) in ranges {
        let start = a / LEAF_SIZE * LEAF_SIZE;
        let end = (a + len)
            .div_ceil(LEAF_SIZE)
            .saturating_mul(LEAF_SIZE)
            .min(size);
        if start >= end {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.0 + last.1 >= start => last.1 = last.1.max(end - last.0),
            _ => out.push((start, end - start)),
        }
    }
    out
}

/// What writing a delta did.
#[derive(Debug, Clone)]
pub struct DeltaSummary {
    pub footer: Footer,
    /// Bytes of the delta file.
    pub file_bytes: u64,
    /// The SHA-256 of the delta file (its last 32 bytes).
    pub file_sha256: String,
}

/// How many finished pieces may wait for the hashing thread (each at most a data record).
const PIPE_DEPTH: usize = 4;

/// Writes the delta of the volume `reader` reads (the target) against `base`: the
/// `changed` ranges (from the backend), in whole leaves. Returns the target's leaf map
/// (the base's with the changed leaves replaced) and what was written. `manifest`'s
/// target digest is filled in the footer, not the manifest (it is known only at the end).
///
/// Every changed byte is hashed twice: into its leaf's hash, and into the file's
/// closing SHA-256. The second hash and the writing run on their own thread, so on two
/// cores the delta costs about one hash pass.
pub fn write_delta(
    out: &mut (dyn Write + Send),
    manifest: &Manifest,
    changed: &[(u64, u64)],
    reader: &VolumeReader,
    base: &LeafMap,
    progress: &mut dyn Progress,
) -> Result<(LeafMap, DeltaSummary)> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH);
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> std::io::Result<([u8; 32], u64)> {
            let (mut sha, mut bytes) = (Sha256::new(), 0u64);
            for piece in rx {
                sha.update(&piece);
                out.write_all(&piece)?;
                bytes += piece.len() as u64;
            }
            let sum: [u8; 32] = sha.finalize().into();
            out.write_all(&sum)?;
            out.flush()?;
            Ok((sum, bytes + 32))
        });
        let produced = produce_delta(&tx, manifest, changed, reader, base, progress);
        drop(tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the delta writer panicked")));
        // The writer's error explains a producer that found the pipe closed.
        let (sum, file_bytes) = written.map_err(|e| Error::io("writing the delta", e))?;
        let (target, footer) = produced?;
        Ok((
            target,
            DeltaSummary {
                footer,
                file_bytes,
                file_sha256: hex::encode(sum),
            },
        ))
    })
}

/// Reads the changed leaves, hashes them into the target's leaf map, and sends the
/// file's pieces (everything but the closing SHA-256) down `pipe`.
fn produce_delta(
    pipe: &std::sync::mpsc::SyncSender<Vec<u8>>,
    manifest: &Manifest,
    changed: &[(u64, u64)],
    reader: &VolumeReader,
    base: &LeafMap,
    progress: &mut dyn Progress,
) -> Result<(LeafMap, Footer)> {
    let size = reader.size();
    let mut ranges = changed.to_vec();
    // A size change: everything from the base's last (possibly short) leaf on differs.
    if base.size != size {
        let from = base.size.min(size) / LEAF_SIZE * LEAF_SIZE;
        ranges.push((from, size - from));
        ranges.sort_unstable();
    }
    let ranges = leaf_ranges(&ranges, size);
    let mut target = LeafMap {
        size,
        leaves: base.leaves.clone(),
    };
    target.leaves.resize(leaves_in(size), [0; 32]);

    let send = |piece: Vec<u8>| {
        pipe.send(piece).map_err(|_| {
            Error::io(
                "writing the delta",
                std::io::Error::other("the writer stopped"),
            )
        })
    };
    let json = serde_json::to_vec(manifest).expect("a manifest serialises");
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&(json.len() as u32).to_be_bytes());
    head.extend_from_slice(&json);
    send(head)?;

    let mut footer = Footer {
        target_digest: String::new(),
        records: 0,
        data_bytes: 0,
        zero_bytes: 0,
    };
    progress.start(ranges.iter().map(|r| r.1).sum());
    // The record being gathered: its header (length patched at the end) and data.
    struct Run {
        kind: u8,
        offset: u64,
        length: u64,
        bytes: Vec<u8>,
    }
    const HEADER: usize = 17;
    let mut run: Option<Run> = None;
    let mut flush = |run: &mut Option<Run>| -> Result<()> {
        if let Some(mut r) = run.take() {
            r.bytes[9..HEADER].copy_from_slice(&r.length.to_be_bytes());
            if r.kind == KIND_DATA {
                footer.data_bytes += r.length;
            } else {
                footer.zero_bytes += r.length;
            }
            footer.records += 1;
            send(r.bytes)?;
        }
        Ok(())
    };
    for &(start, len) in &ranges {
        let mut leaf = Vec::with_capacity(LEAF_SIZE as usize);
        let mut pos = start;
        let mut pending: Result<()> = Ok(());
        reader
            .read_range(start, len, &mut |block| {
                progress.advance(block.len() as u64);
                let mut rest = &block[..];
                while !rest.is_empty() {
                    let leaf_end = (pos / LEAF_SIZE + 1) * LEAF_SIZE;
                    let want = (leaf_end.min(start + len) - pos) as usize - leaf.len();
                    let want = want.min(rest.len());
                    leaf.extend_from_slice(&rest[..want]);
                    rest = &rest[want..];
                    let whole = (leaf_end.min(size) - pos) as usize;
                    if leaf.len() < whole {
                        continue;
                    }
                    target.leaves[(pos / LEAF_SIZE) as usize] = leaf_hash(&leaf);
                    let kind = if is_zero(&leaf) { KIND_ZERO } else { KIND_DATA };
                    let continues = run.as_ref().is_some_and(|r| {
                        r.kind == kind
                            && r.offset + r.length == pos
                            && (kind == KIND_ZERO
                                || r.length + leaf.len() as u64 <= MAX_DATA_RECORD)
                    });
                    if !continues {
                        if let Err(e) = flush(&mut run) {
                            pending = Err(e);
                            return Err(std::io::Error::other("delta write failed"));
                        }
                        let cap = if kind == KIND_DATA {
                            HEADER + (MAX_DATA_RECORD.min(len) as usize)
                        } else {
                            HEADER
                        };
                        let mut bytes = Vec::with_capacity(cap);
                        bytes.push(kind);
                        bytes.extend_from_slice(&pos.to_be_bytes());
                        bytes.extend_from_slice(&[0; 8]);
                        run = Some(Run {
                            kind,
                            offset: pos,
                            length: 0,
                            bytes,
                        });
                    }
                    let r = run.as_mut().expect("a run was just started");
                    if kind == KIND_DATA {
                        r.bytes.extend_from_slice(&leaf);
                    }
                    r.length += leaf.len() as u64;
                    pos += leaf.len() as u64;
                    leaf.clear();
                }
                Ok(())
            })
            .map_err(|e| match std::mem::replace(&mut pending, Ok(())) {
                Err(p) => p,
                Ok(()) => e,
            })?;
    }
    flush(&mut run)?;
    progress.finish();
    footer.target_digest = target.digest();
    let json = serde_json::to_vec(&footer).expect("a footer serialises");
    let mut tail = vec![KIND_END];
    tail.extend_from_slice(&(json.len() as u32).to_be_bytes());
    tail.extend_from_slice(&json);
    send(tail)?;
    Ok((target, footer))
}

/// One record of a delta file, located in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub length: u64,
    /// Where the data starts in the delta file; `None` for a zero record.
    pub data_at: Option<u64>,
}

/// A delta file, read through and verified.
#[derive(Debug, Clone)]
pub struct Delta {
    pub manifest: Manifest,
    pub footer: Footer,
    pub records: Vec<Record>,
}

fn bad(what: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("not a valid snapport delta: {}", what.into()),
    )
}

/// Reads a whole delta (data is hashed and skipped, not kept): checks its structure, the
/// records against the target's size, and the closing SHA-256.
pub fn read_delta(input: &mut dyn Read) -> Result<Delta> {
    struct Counted<'a> {
        input: &'a mut dyn Read,
        sha: Sha256,
        pos: u64,
    }
    impl Counted<'_> {
        fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
            self.input.read_exact(buf).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    bad(format!("it ends inside {what} (byte {})", self.pos))
                } else {
                    Error::io("reading the delta", e)
                }
            })?;
            self.sha.update(&*buf);
            self.pos += buf.len() as u64;
            Ok(())
        }
        fn u64(&mut self, what: &str) -> Result<u64> {
            let mut b = [0u8; 8];
            self.exact(&mut b, what)?;
            Ok(u64::from_be_bytes(b))
        }
        fn json<T: serde::de::DeserializeOwned>(&mut self, what: &str) -> Result<T> {
            let mut b = [0u8; 4];
            self.exact(&mut b, what)?;
            let n = u32::from_be_bytes(b);
            if n > MAX_JSON {
                return Err(bad(format!("its {what} claims {n} bytes")));
            }
            let mut v = vec![0u8; n as usize];
            self.exact(&mut v, what)?;
            serde_json::from_slice(&v).map_err(|e| bad(format!("its {what}: {e}")))
        }
    }
    let mut r = Counted {
        input,
        sha: Sha256::new(),
        pos: 0,
    };
    let mut magic = [0u8; 8];
    r.exact(&mut magic, "the magic")?;
    if &magic != MAGIC {
        return Err(bad("no SNAPDLT1 magic at the start"));
    }
    let manifest: Manifest = r.json("manifest")?;
    if manifest.format != "snapport-delta" || manifest.version != 1 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "a delta of format {:?} version {}; this snapport reads snapport-delta version 1",
                manifest.format, manifest.version
            ),
        ));
    }
    let size = manifest.target.size;
    let mut records = Vec::new();
    let mut end = 0u64;
    let (mut data_bytes, mut zero_bytes) = (0u64, 0u64);
    let mut sink = vec![0u8; 1 << 16];
    loop {
        let mut kind = [0u8; 1];
        r.exact(&mut kind, "a record")?;
        if kind[0] == KIND_END {
            break;
        }
        if kind[0] != KIND_DATA && kind[0] != KIND_ZERO {
            return Err(bad(format!(
                "record kind {} at byte {}",
                kind[0],
                r.pos - 1
            )));
        }
        let offset = r.u64("a record")?;
        let length = r.u64("a record")?;
        let fits = offset
            .checked_add(length)
            .is_some_and(|e| e <= size && length > 0);
        if !fits || offset < end {
            return Err(bad(format!(
                "a record of {length} bytes at {offset} (after {end}, in a disk of {size} bytes)"
            )));
        }
        if kind[0] == KIND_DATA && length > MAX_DATA_RECORD {
            return Err(bad(format!("a data record of {length} bytes")));
        }
        end = offset + length;
        let data_at = (kind[0] == KIND_DATA).then_some(r.pos);
        if kind[0] == KIND_DATA {
            let mut left = length;
            while left > 0 {
                let n = left.min(sink.len() as u64) as usize;
                r.exact(&mut sink[..n], "a data record")?;
                left -= n as u64;
            }
            data_bytes += length;
        } else {
            zero_bytes += length;
        }
        records.push(Record {
            offset,
            length,
            data_at,
        });
    }
    let footer: Footer = r.json("footer")?;
    if footer.records != records.len() as u64
        || footer.data_bytes != data_bytes
        || footer.zero_bytes != zero_bytes
    {
        return Err(bad("its footer does not count what it holds"));
    }
    let want: [u8; 32] = r.sha.clone().finalize().into();
    let mut got = [0u8; 32];
    r.input
        .read_exact(&mut got)
        .map_err(|_| bad("it ends before its closing SHA-256"))?;
    if got != want {
        return Err(bad(
            "its closing SHA-256 does not match its bytes (damaged or truncated)",
        ));
    }
    let mut extra = [0u8; 1];
    if r.input
        .read(&mut extra)
        .map_err(|e| Error::io("reading the delta", e))?
        > 0
    {
        return Err(bad("bytes follow its closing SHA-256"));
    }
    Ok(Delta {
        manifest,
        footer,
        records,
    })
}

/// The base volume with a delta's records over it: what the target volume holds. The
/// import engine reads it like any volume (and checks its map like any plugin's).
pub struct Overlay<'a> {
    base: &'a mut dyn VolumeSource,
    delta: Arc<Device>,
    records: &'a [Record],
    size: u64,
}

impl<'a> Overlay<'a> {
    /// `delta` is the delta file, opened for reading, whose records are `records`.
    pub fn new(
        base: &'a mut dyn VolumeSource,
        delta: std::fs::File,
        records: &'a [Record],
        size: u64,
    ) -> Result<Overlay<'a>> {
        let len = delta
            .metadata()
            .map_err(|e| Error::io("reading the delta", e))?
            .len();
        Ok(Overlay {
            base,
            delta: Arc::new(Device {
                id: DELTA_DEVICE,
                name: "the delta".into(),
                file: delta,
                size: len,
            }),
            records,
            size,
        })
    }
}

impl VolumeSource for Overlay<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn map_page(&mut self, start: u64) -> Result<ExtentPage> {
        const MAX: usize = 4096;
        let mut extents: Vec<Extent> = Vec::new();
        let mut pos = start;
        let mut i = self.records.partition_point(|r| r.offset + r.length <= pos);
        while pos < self.size && extents.len() < MAX {
            match self.records.get(i) {
                Some(r) if r.offset <= pos => {
                    let location = match r.data_at {
                        Some(at) => Location::Data {
                            device: DELTA_DEVICE,
                            offset: at + (pos - r.offset),
                        },
                        None => Location::Zero,
                    };
                    let end = r.offset + r.length;
                    extents.push(Extent {
                        offset: pos,
                        length: end - pos,
                        location,
                    });
                    pos = end;
                    i += 1;
                }
                next => {
                    let until = next.map_or(self.size, |r| r.offset);
                    let base_size = self.base.size();
                    if pos >= base_size {
                        extents.push(Extent {
                            offset: pos,
                            length: until - pos,
                            location: Location::Zero,
                        });
                        pos = until;
                        continue;
                    }
                    let page = self.base.map_page(pos)?;
                    if page.extents.is_empty() {
                        return Err(Error::new(
                            ErrorKind::Plugin,
                            format!("{} mapped nothing at {pos}", self.base.describe()),
                        ));
                    }
                    let stop = until.min(base_size);
                    for e in page.extents {
                        if e.offset != pos || pos >= stop {
                            break;
                        }
                        let length = e.length.min(stop - pos);
                        extents.push(Extent {
                            offset: pos,
                            length,
                            location: e.location,
                        });
                        pos += length;
                    }
                }
            }
        }
        Ok(ExtentPage {
            extents,
            next_offset: (pos < self.size).then_some(pos),
        })
    }

    fn device(&self, id: u32) -> Result<Arc<Device>> {
        if id == DELTA_DEVICE {
            Ok(Arc::clone(&self.delta))
        } else {
            self.base.device(id)
        }
    }

    fn decode(&mut self, codec: u32, stored: &[u8], decoded_length: u32) -> Result<Vec<u8>> {
        self.base.decode(codec, stored, decoded_length)
    }

    fn describe(&self) -> String {
        format!("{} with the delta over it", self.base.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_ranges_round_out_and_merge() {
        let l = LEAF_SIZE;
        assert_eq!(
            leaf_ranges(&[(1, 10), (l + 5, 1), (3 * l, l)], 10 * l),
            [(0, 2 * l), (3 * l, l)]
        );
        // Clamped to a short last leaf.
        assert_eq!(leaf_ranges(&[(l + 1, 3)], l + 100), [(l, 100)]);
    }

    #[test]
    fn leaf_map_digest_is_the_content_digest() {
        let mut bytes = vec![0u8; (5 << 20) + 1234];
        for (i, b) in bytes.iter_mut().enumerate().step_by(4099) {
            *b = i as u8 | 1;
        }
        let map = LeafMap {
            size: bytes.len() as u64,
            leaves: bytes.chunks(LEAF_SIZE as usize).map(leaf_hash).collect(),
        };
        let mut h = crate::digest::ContentHasher::new();
        h.update(&bytes);
        assert_eq!(map.digest(), h.finish());
    }

    #[test]
    fn damaged_deltas_are_refused() {
        let manifest = Manifest::new(
            "d",
            Identity {
                name: "vds/d@a".into(),
                id: None,
                size: 1 << 20,
                created_unix_ms: None,
                digest: None,
            },
            Identity {
                name: "vds/d@b".into(),
                id: None,
                size: 1 << 20,
                created_unix_ms: None,
                digest: None,
            },
        );
        // A delta written by hand: one data record, one zero record.
        let mut body = MAGIC.to_vec();
        let json = serde_json::to_vec(&manifest).unwrap();
        let first_data = (8 + 4 + json.len() + 17) as u64;
        body.extend((json.len() as u32).to_be_bytes());
        body.extend(json);
        body.push(KIND_DATA);
        body.extend(0u64.to_be_bytes());
        body.extend(4u64.to_be_bytes());
        body.extend([1, 2, 3, 4]);
        body.push(KIND_ZERO);
        body.extend(LEAF_SIZE.to_be_bytes());
        body.extend(LEAF_SIZE.to_be_bytes());
        body.push(KIND_END);
        let footer = Footer {
            target_digest: "x".into(),
            records: 2,
            data_bytes: 4,
            zero_bytes: LEAF_SIZE,
        };
        let json = serde_json::to_vec(&footer).unwrap();
        body.extend((json.len() as u32).to_be_bytes());
        body.extend(json);
        let sha: [u8; 32] = Sha256::digest(&body).into();
        let mut good = body.clone();
        good.extend(sha);
        let d = read_delta(&mut &good[..]).unwrap();
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.records[0].data_at, Some(first_data));
        assert_eq!(d.records[1].data_at, None);
        // Every flipped byte and every truncation is refused.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(read_delta(&mut &bad[..]).is_err(), "flip at {i}");
        }
        for n in 0..good.len() {
            assert!(read_delta(&mut &good[..n]).is_err(), "cut at {n}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(read_delta(&mut &longer[..]).is_err());
    }
}
