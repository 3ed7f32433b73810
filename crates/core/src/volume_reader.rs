//! Random access to a volume's logical bytes from any number of threads.
//!
//! A plugin instance is single-threaded and owned by one thread, so that thread answers
//! map requests ([`serve_plans`]): "where do the bytes of these 4 MiB chunks come from".
//! Readers ([`VolumeReader`], cheap to clone) take those plans and read the devices with
//! their own file descriptors, so many ranged reads (an HTTP server's clients) proceed in
//! parallel while the plugin only ever answers metadata questions.

use crate::chunks::{read_span, Chunk, Chunker};
use crate::digest::GROUP_SIZE;
use crate::error::{Error, ErrorKind, Result};
use crate::extent::{ExtentPage, VolumeSource};
use std::sync::mpsc;

/// Chunks asked for in one request: 32 MiB of plans per round trip to the map thread.
const PLAN_BATCH: u64 = 8;
/// The largest block handed to a reader's sink.
pub const BLOCK_SIZE: usize = 1 << 20;

/// A request to the map thread: plans for chunks `first..first + count`.
pub struct PlanRequest {
    first: u64,
    count: u64,
    reply: mpsc::Sender<Result<Vec<Chunk>>>,
}

/// Answers plan requests from `source` until every [`VolumeReader`] is dropped. Runs on
/// the thread that owns the plugin instance.
pub fn serve_plans(source: &mut dyn VolumeSource, requests: mpsc::Receiver<PlanRequest>) {
    let size = source.size();
    let mut source = LastPage { source, page: None };
    for r in requests {
        let mut chunker = Chunker::at(&mut source, size, r.first * GROUP_SIZE);
        let mut plans = Vec::new();
        let answer = loop {
            if plans.len() as u64 == r.count {
                break Ok(plans);
            }
            match chunker.next_chunk() {
                Ok(Some(c)) => plans.push(c),
                Ok(None) => break Ok(plans),
                Err(e) => break Err(e),
            }
        };
        // A reader that went away no longer wants its answer.
        let _ = r.reply.send(answer);
    }
}

/// A source that keeps the last map page its plugin gave and answers from it while a
/// request starts inside it. Readers ask for chunks near one another (a delta's records,
/// an HTTP client's next range), and one page of a dense volume can cover all of it:
/// without this, every request would have the plugin map the rest of the volume again.
/// The pages still pass the map's checks on every use.
struct LastPage<'a> {
    source: &'a mut dyn VolumeSource,
    /// Where the page was asked for, and the page.
    page: Option<(u64, ExtentPage)>,
}

impl VolumeSource for LastPage<'_> {
    fn size(&self) -> u64 {
        self.source.size()
    }

    fn map_page(&mut self, start: u64) -> Result<ExtentPage> {
        if let Some((from, page)) = &self.page {
            let end = page.extents.last().map_or(*from, |e| e.end());
            // (A page that is not in order, a lie the checks will catch, finds nothing.)
            let i = page.extents.partition_point(|e| e.end() <= start);
            if let Some(first) = page
                .extents
                .get(i)
                .filter(|_| (*from..end).contains(&start))
            {
                let mut extents = vec![first.advance(start.saturating_sub(first.offset))];
                extents.extend_from_slice(&page.extents[i + 1..]);
                return Ok(ExtentPage {
                    extents,
                    next_offset: page.next_offset,
                });
            }
        }
        let page = self.source.map_page(start)?;
        self.page = Some((start, page.clone()));
        Ok(page)
    }

    fn device(&self, id: u32) -> Result<std::sync::Arc<crate::extent::Device>> {
        self.source.device(id)
    }

    fn decode(&mut self, codec: u32, stored: &[u8], decoded_length: u32) -> Result<Vec<u8>> {
        self.source.decode(codec, stored, decoded_length)
    }

    fn describe(&self) -> String {
        self.source.describe()
    }
}

/// Reads ranges of a volume's logical bytes (holes as zeros), from any thread.
#[derive(Clone)]
pub struct VolumeReader {
    requests: mpsc::Sender<PlanRequest>,
    size: u64,
}

impl VolumeReader {
    /// A reader of a volume of `size` bytes and the receiving end for [`serve_plans`].
    pub fn new(size: u64) -> (VolumeReader, mpsc::Receiver<PlanRequest>) {
        let (requests, rx) = mpsc::channel();
        (VolumeReader { requests, size }, rx)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn plans(&self, first: u64, count: u64) -> Result<Vec<Chunk>> {
        let (reply, answer) = mpsc::channel();
        let gone = || Error::new(ErrorKind::Plugin, "the volume's map thread has stopped");
        self.requests
            .send(PlanRequest {
                first,
                count,
                reply,
            })
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    /// Hands bytes `[offset, offset + len)` to `sink` in order, in blocks of at most
    /// [`BLOCK_SIZE`]. A sink error stops the read and is returned as an I/O error.
    pub fn read_range(
        &self,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
    ) -> Result<()> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "bytes {offset}+{len} are past the volume's end ({})",
                        self.size
                    ),
                )
            })?;
        let mut pos = offset;
        while pos < end {
            let first = pos / GROUP_SIZE;
            let last = (end - 1) / GROUP_SIZE;
            let plans = self.plans(first, (last - first + 1).min(PLAN_BATCH))?;
            if plans.is_empty() {
                return Err(Error::new(
                    ErrorKind::Plugin,
                    format!("the volume's map ended before byte {pos}"),
                ));
            }
            for chunk in plans {
                let chunk_end = chunk.start + chunk.len as u64;
                while pos < end.min(chunk_end) {
                    let n = (end.min(chunk_end) - pos).min(BLOCK_SIZE as u64) as usize;
                    let mut block = vec![0u8; n];
                    read_span(&chunk.pieces, (pos - chunk.start) as usize, &mut block)?;
                    sink(block).map_err(|e| Error::io("sending the bytes read", e))?;
                    pos += n as u64;
                }
            }
        }
        Ok(())
    }
}
