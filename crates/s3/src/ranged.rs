//! An object read in order through ranged GETs made in parallel: the import side.
//!
//! Range `i` is fetched by connection `i mod parallel`, which hands it over a channel
//! of one; the reader takes range `i` from that channel, so ranges arrive in order
//! with at most `2 × parallel` of them in memory. The object's ETag from the first look
//! is sent with every range (`If-Match`): an object replaced while it is read fails
//! the read instead of mixing two objects' bytes.

use crate::{Client, Result};
use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

/// Bytes per ranged GET.
pub const RANGE_BYTES: usize = 8 << 20;

/// Object `key` as a byte stream, read ahead by `parallel` connections.
pub struct RangeReader {
    ranges: Vec<Receiver<Result<Vec<u8>>>>,
    count: u64,
    next: u64,
    current: Vec<u8>,
    at: usize,
}

impl RangeReader {
    /// Reads `size` bytes of `key` (its size and ETag as [`Client::look`] found them).
    pub fn new(
        client: Arc<Client>,
        key: &str,
        size: u64,
        etag: Option<String>,
        parallel: usize,
    ) -> RangeReader {
        let parallel = parallel.max(1);
        let count = size.div_ceil(RANGE_BYTES as u64);
        let ranges = (0..parallel as u64)
            .map(|first| {
                let (tx, rx) = sync_channel(1);
                let (client, key, etag) = (Arc::clone(&client), key.to_owned(), etag.clone());
                std::thread::spawn(move || {
                    let mut i = first;
                    while i < count {
                        let offset = i * RANGE_BYTES as u64;
                        let len = (size - offset).min(RANGE_BYTES as u64) as usize;
                        let got = client.read_range(&key, offset, len, etag.as_deref());
                        let failed = got.is_err();
                        // The reader is gone (done, or failed elsewhere): stop.
                        if tx.send(got).is_err() || failed {
                            return;
                        }
                        i += parallel as u64;
                    }
                });
                rx
            })
            .collect();
        RangeReader {
            ranges,
            count,
            next: 0,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.current.len() {
            if self.next == self.count {
                return Ok(0);
            }
            let lane = (self.next % self.ranges.len() as u64) as usize;
            self.current = match self.ranges[lane].recv() {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                Err(_) => return Err(std::io::Error::other("a range reader stopped")),
            };
            self.at = 0;
            self.next += 1;
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
