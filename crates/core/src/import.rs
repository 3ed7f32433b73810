//! Import: a source (a volume with an extent map, or a byte stream) written into a new
//! volume whose backend says where each byte goes.
//!
//! The engine cuts the source into the same 4 MiB chunks as export. Workers (one per
//! core) read a chunk, find its 64 KiB leaves that are all zeros, hash it for the content
//! digest when asked (zero leaves cost nothing), ask the target where the other leaves
//! go (`allocate`) and write them there with their own file descriptors. Zeros are never
//! written to a fresh volume: holes in the source, and zeros inside data, stay
//! unallocated, so a sparse image stays sparse. The coordinator folds the chunks' digests
//! in order. Nothing is committed here: the caller compares digests, then commits, so a
//! mismatch leaves no volume behind.

use crate::chunks::{data_leaves, read_pieces, Chunk, Chunker, Piece};
use crate::digest::{group_hash, ContentDigest, StreamDigest, GROUP_SIZE, LEAF_SIZE};
use crate::error::{Error, ErrorKind, Result};
use crate::extent::{Device, Extent, Location, VolumeSource};
use crate::io::{copy_by_buffer, try_copy_range, AlignedBuf};
use crate::progress::Progress;
use crate::zeros::is_zero;
use std::collections::BTreeMap;
use std::io::{ErrorKind as IoErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

/// A volume being written, as a backend presents it.
pub trait VolumeTarget: Send {
    fn size(&self) -> u64;
    /// Whether ranges never written might read as something other than zeros (a volume
    /// that existed before, or a thin clone): zeros must then be recorded or written.
    fn needs_zeroing(&self) -> bool;
    /// Where bytes `[offset, offset + length)` go (`data` extents), or, with `zero`, the
    /// range recorded as zeros (`zero` extents, or `data` extents to fill with zeros).
    /// Extents cover the range exactly, in order.
    fn allocate(&mut self, offset: u64, length: u64, zero: bool) -> Result<Vec<Extent>>;
    /// A device named by `allocate`, open for writing.
    fn device(&self, id: u32) -> Result<Arc<Device>>;
    /// Everything is written: make the volume whole and visible under its name.
    fn commit(&mut self) -> Result<()>;
    fn describe(&self) -> String;
}

/// Where the bytes come from.
pub enum Source<'a> {
    /// A volume with an extent map: a file, a qcow2 image read by its plugin, a pool
    /// volume. Holes in its map are never read.
    Volume(&'a mut dyn VolumeSource),
    /// Bytes in order (stdin, a URL, a decompressor). With `length`, the stream must
    /// carry exactly that many bytes; without, at most the target's size.
    Stream {
        reader: &'a mut (dyn Read + Send),
        length: Option<u64>,
    },
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Compute the content digest (`sha256-64k-4m:`) of the source's bytes.
    pub content_digest: bool,
    /// Compute the plain SHA-256 of the source's logical bytes (a raw file's `sha256sum`).
    pub content_sha256: bool,
    /// Worker threads; 0 picks one per core.
    pub workers: usize,
}

#[derive(Debug, Clone)]
pub struct ImportSummary {
    /// The source's logical length (the digests cover exactly these bytes).
    pub source_size: u64,
    /// Bytes written to the target (data that is not zeros).
    pub written_bytes: u64,
    pub content_digest: Option<String>,
    pub content_sha256: Option<String>,
    /// The name the pool gave the volume written, where the caller knows it (a CSI
    /// driver picks the volume ID itself).
    pub volume: Option<String>,
}

enum Input {
    Pieces(Vec<Piece>),
    Filled(AlignedBuf),
}

struct Job {
    seq: u64,
    start: u64,
    len: usize,
    input: Input,
}

struct Done {
    seq: u64,
    len: usize,
    hash: Option<[u8; 32]>,
    /// The chunk's bytes, when the coordinator needs them in order (plain SHA-256).
    buf: Option<AlignedBuf>,
    written: u64,
}

/// Writes `source` into `target`. The target is left uncommitted: compare the summary's
/// digests with what the source promised, then call [`VolumeTarget::commit`].
pub fn import(
    source: Source<'_>,
    target: &mut dyn VolumeTarget,
    options: &ImportOptions,
    progress: &mut dyn Progress,
) -> Result<ImportSummary> {
    let target_size = target.size();
    let workers = match options.workers {
        0 => std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(8),
        n => n,
    };
    let in_flight_max = workers * 2 + 2;
    let zeroing = target.needs_zeroing();
    let target = Writer::new(target);
    let buffers = Mutex::new(Vec::<AlignedBuf>::new());
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(in_flight_max);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Result<Done>>();
    let mut coord = Coordinator {
        content: options.content_digest.then(ContentDigest::new),
        sha: options.content_sha256.then(StreamDigest::default),
        progress: &mut *progress,
        pending: BTreeMap::new(),
        next: 0,
        in_flight: 0,
        in_flight_max,
        written: 0,
        buffers: &buffers,
    };
    let keep = options.content_sha256;
    let hash = options.content_digest;
    let source_size = match &source {
        Source::Volume(v) => v.size(),
        Source::Stream { length, .. } => length.unwrap_or(target_size),
    };
    coord.progress.start(source_size);
    let source_size = std::thread::scope(|scope| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let (target, job_rx, buffers) = (&target, &job_rx, &buffers);
            scope.spawn(move || worker(target, job_rx, &done_tx, buffers, hash, keep, zeroing));
        }
        drop(done_tx);
        let r = match source {
            Source::Volume(v) => coord.drive_volume(v, target_size, zeroing, &job_tx, &done_rx),
            Source::Stream { reader, length } => {
                coord.drive_stream(reader, length, target_size, &job_tx, &done_rx)
            }
        };
        let r = r.and_then(|n| {
            while coord.in_flight > 0 {
                coord.wait(&done_rx)?;
            }
            Ok(n)
        });
        drop(job_tx);
        for _ in done_rx.iter() {}
        r
    })?;
    let target = target.target.into_inner().unwrap();
    if zeroing && source_size < target_size {
        // The tail past the source reads as zeros in the new volume.
        zero_range(target, source_size, target_size - source_size)?;
    }
    coord.progress.finish();
    Ok(ImportSummary {
        source_size,
        written_bytes: coord.written,
        content_digest: coord.content.map(ContentDigest::finish),
        content_sha256: coord.sha.map(StreamDigest::finish),
        volume: None,
    })
}

struct Coordinator<'a> {
    content: Option<ContentDigest>,
    sha: Option<StreamDigest>,
    progress: &'a mut dyn Progress,
    pending: BTreeMap<u64, Done>,
    next: u64,
    in_flight: usize,
    in_flight_max: usize,
    written: u64,
    buffers: &'a Mutex<Vec<AlignedBuf>>,
}

impl Coordinator<'_> {
    fn drive_volume(
        &mut self,
        source: &mut dyn VolumeSource,
        target_size: u64,
        zeroing: bool,
        job_tx: &SyncSender<Job>,
        done_rx: &Receiver<Result<Done>>,
    ) -> Result<u64> {
        let size = source.size();
        if size > target_size {
            return Err(too_large(size, target_size));
        }
        let mut chunks = Chunker::new(source, size);
        let mut seq = 0;
        while let Some(Chunk { start, len, pieces }) = chunks.next_chunk()? {
            if pieces.iter().all(Piece::is_hole) && !zeroing {
                self.accept(Done {
                    seq,
                    len,
                    hash: None,
                    buf: None,
                    written: 0,
                })?;
            } else {
                self.send(
                    Job {
                        seq,
                        start,
                        len,
                        input: Input::Pieces(pieces),
                    },
                    job_tx,
                    done_rx,
                )?;
            }
            seq += 1;
        }
        Ok(size)
    }

    fn drive_stream(
        &mut self,
        reader: &mut (dyn Read + Send),
        length: Option<u64>,
        target_size: u64,
        job_tx: &SyncSender<Job>,
        done_rx: &Receiver<Result<Done>>,
    ) -> Result<u64> {
        let limit = length.unwrap_or(target_size);
        if limit > target_size {
            return Err(too_large(limit, target_size));
        }
        let mut start = 0u64;
        let mut seq = 0;
        loop {
            let mut buf = self
                .buffers
                .lock()
                .unwrap()
                .pop()
                .unwrap_or_else(|| AlignedBuf::new(GROUP_SIZE as usize));
            let want = (limit - start).min(GROUP_SIZE) as usize;
            let n = read_full(reader, &mut buf[..want])?;
            if n > 0 {
                self.send(
                    Job {
                        seq,
                        start,
                        len: n,
                        input: Input::Filled(buf),
                    },
                    job_tx,
                    done_rx,
                )?;
                seq += 1;
                start += n as u64;
            } else {
                self.buffers.lock().unwrap().push(buf);
            }
            if n < want {
                break;
            }
            if start == limit {
                // Anything more is more than the target (or the declared length) holds.
                let mut probe = [0u8; 1];
                if read_full(reader, &mut probe)? > 0 {
                    return Err(match length {
                        Some(l) => Error::new(
                            ErrorKind::Corrupt,
                            format!("the source carries more than the {l} bytes it declared"),
                        ),
                        None => Error::new(
                            ErrorKind::InvalidInput,
                            format!(
                                "the source is larger than the target's {target_size} bytes; give a larger --size"
                            ),
                        ),
                    });
                }
                break;
            }
        }
        if let Some(l) = length {
            if start < l {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "the source ended after {start} of the {l} bytes it declared (truncated?)"
                    ),
                ));
            }
        }
        Ok(start)
    }

    fn send(
        &mut self,
        job: Job,
        job_tx: &SyncSender<Job>,
        done_rx: &Receiver<Result<Done>>,
    ) -> Result<()> {
        while self.in_flight >= self.in_flight_max {
            self.wait(done_rx)?;
        }
        self.in_flight += 1;
        job_tx
            .send(job)
            .map_err(|_| Error::new(ErrorKind::Io, "import workers stopped unexpectedly"))?;
        while let Ok(d) = done_rx.try_recv() {
            self.in_flight -= 1;
            self.accept(d?)?;
        }
        Ok(())
    }

    fn wait(&mut self, done_rx: &Receiver<Result<Done>>) -> Result<()> {
        let d = done_rx
            .recv()
            .map_err(|_| Error::new(ErrorKind::Io, "import workers stopped unexpectedly"))??;
        self.in_flight -= 1;
        self.accept(d)
    }

    /// Folds finished chunks into the digests in order.
    fn accept(&mut self, d: Done) -> Result<()> {
        self.pending.insert(d.seq, d);
        while let Some(d) = self.pending.remove(&self.next) {
            if let Some(c) = &mut self.content {
                match &d.hash {
                    Some(h) => c.push(h),
                    None => c.push_zero(d.len as u64),
                }
            }
            if let Some(s) = &mut self.sha {
                match &d.buf {
                    Some(b) => s.update(&b[..d.len]),
                    None => s.update_zeros(d.len as u64),
                }
            }
            if let Some(b) = d.buf {
                self.buffers.lock().unwrap().push(b);
            }
            self.written += d.written;
            self.progress.advance(d.len as u64);
            self.next += 1;
        }
        Ok(())
    }
}

fn too_large(size: u64, target: u64) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("the source's {size} bytes do not fit in the target's {target} bytes; give a larger --size"),
    )
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
pub(crate) fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == IoErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading the source", e)),
        }
    }
    Ok(n)
}

fn worker(
    target: &Writer<'_>,
    jobs: &Mutex<Receiver<Job>>,
    done: &Sender<Result<Done>>,
    buffers: &Mutex<Vec<AlignedBuf>>,
    hash: bool,
    keep: bool,
    zeroing: bool,
) {
    loop {
        let job = match jobs.lock().unwrap().recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let r = process(target, job, buffers, hash, keep, zeroing);
        let failed = r.is_err();
        if done.send(r).is_err() || failed {
            return;
        }
    }
}

fn process(
    target: &Writer<'_>,
    job: Job,
    buffers: &Mutex<Vec<AlignedBuf>>,
    hash: bool,
    keep: bool,
    zeroing: bool,
) -> Result<Done> {
    let leaves = job.len.div_ceil(LEAF_SIZE as usize);
    // Whether every byte must be in memory: to hash it, or to hand it back in order.
    let full = hash || keep;
    let (mut buf, candidates, pieces) = match job.input {
        Input::Filled(b) => (Some(b), u64::MAX, Vec::new()),
        Input::Pieces(pieces) => {
            let mask = data_leaves(&pieces);
            if mask == 0 {
                (None, 0, pieces)
            } else {
                let mut b = buffers
                    .lock()
                    .unwrap()
                    .pop()
                    .unwrap_or_else(|| AlignedBuf::new(GROUP_SIZE as usize));
                // Without `full`, device ranges are probed below and copied in the kernel.
                read_pieces(&pieces, &mut b[..job.len], full)?;
                (Some(b), mask, pieces)
            }
        }
    };
    // Leaves holding something other than zeros: the only ones written or hashed.
    let mut nonzero = 0u64;
    if let Some(b) = &mut buf {
        for i in 0..leaves {
            let from = i * LEAF_SIZE as usize;
            let to = (from + LEAF_SIZE as usize).min(job.len);
            let data = candidates & (1 << i) != 0
                && if full || pieces.is_empty() {
                    !is_zero(&b[from..to])
                } else {
                    probe(&pieces, from, to, b)?
                };
            if data {
                nonzero |= 1 << i;
            }
        }
    }
    let h = match (&buf, hash) {
        (Some(b), true) if nonzero != 0 => {
            Some(group_hash(&b[..job.len], |i| nonzero & (1 << i) == 0))
        }
        _ => None,
    };
    let mut written = 0;
    let leaf_range = |a: usize, z: usize| {
        let from = a * LEAF_SIZE as usize;
        let to = (z * LEAF_SIZE as usize).min(job.len);
        (from, to)
    };
    let mut i = 0;
    while i < leaves {
        let data = nonzero & (1 << i) != 0;
        let mut j = i + 1;
        while j < leaves && (nonzero & (1 << j) != 0) == data {
            j += 1;
        }
        let (from, to) = leaf_range(i, j);
        let offset = job.start + from as u64;
        let len = (to - from) as u64;
        if data {
            let bytes = buf.as_ref().expect("data leaves come from a buffer");
            let chunk = ChunkBytes {
                start: job.start,
                bytes,
                pieces: &pieces,
                whole: full || pieces.is_empty(),
            };
            write_run(target, offset, len, Some(&chunk))?;
            written += len;
        } else if zeroing {
            write_run(target, offset, len, None)?;
        }
        i = j;
    }
    let buf = match buf {
        Some(b) if !keep || nonzero == 0 => {
            buffers.lock().unwrap().push(b);
            None
        }
        other => other,
    };
    Ok(Done {
        seq: job.seq,
        len: job.len,
        hash: h,
        buf,
        written,
    })
}

/// The target, and the turn to write to it. Writes into one file serialize on its inode
/// lock in the kernel anyway; taking turns here lets a waiting worker sleep (and the core
/// read and probe the next chunk) instead of spinning on that lock, which profiling
/// showed took a third of the CPU.
struct Writer<'a> {
    target: Mutex<&'a mut dyn VolumeTarget>,
    io: Mutex<()>,
    /// Whether the kernel copies from the source into the target (`copy_file_range`);
    /// false once it refused (EXDEV: a file on ext4 into a pool on tmpfs), and from then
    /// on a chunk read whole (to be hashed) is written from memory, never read again.
    kernel_copy: AtomicBool,
}

impl<'a> Writer<'a> {
    fn new(target: &'a mut dyn VolumeTarget) -> Writer<'a> {
        Writer {
            target: Mutex::new(target),
            io: Mutex::new(()),
            kernel_copy: AtomicBool::new(true),
        }
    }
}

/// A chunk's bytes: in memory, and, for ranges read from a device, still there to copy
/// from inside the kernel.
struct ChunkBytes<'a> {
    start: u64,
    bytes: &'a [u8],
    pieces: &'a [Piece],
    /// Whether `bytes` holds the whole chunk (it was read to be hashed or kept), not only
    /// the probes of its leaves.
    whole: bool,
}

impl ChunkBytes<'_> {
    /// Writes chunk bytes `[from, from + len)` (chunk-relative) to `device` at `at`. Ranges
    /// that came from a device are copied with `copy_file_range` (measured here: about
    /// 2.5 GB/s, where writing from user memory runs at about 1 GB/s); the rest is
    /// written from the buffer. Where the kernel refuses to copy (`kernel_copy` false),
    /// a chunk held whole is written from memory: its bytes were read once, to be hashed,
    /// and are not read a second time.
    fn write(
        &self,
        (from, len): (usize, usize),
        device: &Device,
        at: u64,
        kernel_copy: &AtomicBool,
    ) -> Result<()> {
        let end = from + len;
        let mut pos = from;
        while pos < end {
            let piece = self.pieces.iter().find(|p| {
                let (a, l) = p.span();
                a <= pos && pos < a + l
            });
            let to = at + (pos - from) as u64;
            match piece {
                Some(Piece::Device {
                    device: src,
                    offset,
                    at: pa,
                    len: pl,
                }) => {
                    let n = (pa + pl).min(end) - pos;
                    let from_src = offset + (pos - pa) as u64;
                    let copied = kernel_copy.load(Ordering::Relaxed)
                        && try_copy_range(src, from_src, &device.file, to, n as u64)
                            .map_err(|e| no_space(e, device))?;
                    if !copied {
                        kernel_copy.store(false, Ordering::Relaxed);
                        if self.whole {
                            write_at(device, &self.bytes[pos..pos + n], to)?;
                        } else {
                            copy_by_buffer(src, from_src, &device.file, to, n as u64)
                                .map_err(|e| no_space(e, device))?;
                        }
                    }
                    pos += n;
                }
                Some(
                    Piece::Hole { at: pa, len: pl }
                    | Piece::Decoded {
                        at: pa, len: pl, ..
                    },
                ) => {
                    let n = (pa + pl).min(end) - pos;
                    write_at(device, &self.bytes[pos..pos + n], to)?;
                    pos += n;
                }
                None => {
                    write_at(device, &self.bytes[pos..end], to)?;
                    pos = end;
                }
            }
        }
        Ok(())
    }
}

/// Bytes of a leaf read to learn it holds data: most data shows in its first 4 KiB, so
/// a leaf of data costs one small read, and only a leaf that starts with zeros is read
/// whole. The data itself then moves in the kernel (`copy_file_range`).
const PROBE: usize = 4096;

/// Whether chunk bytes `[from, to)` hold anything but zeros, reading device ranges into
/// `buf` only as far as needed.
fn probe(pieces: &[Piece], from: usize, to: usize, buf: &mut [u8]) -> Result<bool> {
    for p in pieces {
        let (at, len) = p.span();
        let (s, e) = (from.max(at), to.min(at + len));
        if s >= e {
            continue;
        }
        match p {
            Piece::Device { device, offset, .. } => {
                let head = (s + PROBE).min(e);
                for (a, z) in [(s, head), (head, e)] {
                    if a < z {
                        crate::io::read_exact_at(device, &mut buf[a..z], offset + (a - at) as u64)?;
                        if !is_zero(&buf[a..z]) {
                            return Ok(true);
                        }
                    }
                }
            }
            _ => {
                if !is_zero(&buf[s..e]) {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// Allocates `[offset, offset + len)` in the target and writes the chunk's bytes there,
/// or (`None`) records zeros, writing them where the target cannot record them. The target
/// is locked only while it answers.
fn write_run(
    target: &Writer<'_>,
    offset: u64,
    len: u64,
    chunk: Option<&ChunkBytes<'_>>,
) -> Result<()> {
    let placed: Vec<(Extent, Option<Arc<Device>>)> = {
        let mut t = target.target.lock().unwrap();
        let extents = t.allocate(offset, len, chunk.is_none())?;
        extents
            .into_iter()
            .map(|e| match e.location {
                Location::Data { device, .. } => t.device(device).map(|d| (e, Some(d))),
                _ => Ok((e, None)),
            })
            .collect::<Result<_>>()?
    };
    static ZEROS: [u8; LEAF_SIZE as usize] = [0; LEAF_SIZE as usize];
    let _io = target.io.lock().unwrap();
    for (e, device) in placed {
        let (Location::Data { offset: at, .. }, Some(device)) = (e.location, device) else {
            continue;
        };
        match chunk {
            Some(c) => c.write(
                ((e.offset - c.start) as usize, e.length as usize),
                &device,
                at,
                &target.kernel_copy,
            )?,
            None => {
                let mut done = 0;
                while done < e.length {
                    let n = (e.length - done).min(ZEROS.len() as u64) as usize;
                    write_at(&device, &ZEROS[..n], at + done)?;
                    done += n as u64;
                }
            }
        }
    }
    Ok(())
}

/// Says "no space left" in words an operator acts on.
fn no_space(e: Error, device: &Device) -> Error {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        Error::new(
            ErrorKind::Io,
            format!(
                "writing {}: no space left on the device; free space or pick another pool",
                device.name
            ),
        )
    } else {
        e
    }
}

fn write_at(device: &Device, bytes: &[u8], offset: u64) -> Result<()> {
    device
        .file
        .write_all_at(bytes, offset)
        .map_err(|e| {
            Error::io(
                format!(
                    "writing {} bytes at {offset} of {}",
                    bytes.len(),
                    device.name
                ),
                e,
            )
        })
        .map_err(|e| no_space(e, device))
}

fn zero_range(target: &mut dyn VolumeTarget, offset: u64, len: u64) -> Result<()> {
    let t = Writer::new(target);
    let mut at = offset;
    while at < offset + len {
        let n = (offset + len - at).min(GROUP_SIZE);
        write_run(&t, at, n, None)?;
        at += n;
    }
    Ok(())
}
