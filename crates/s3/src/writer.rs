//! An export's output stream into an object: parts of a multipart upload sent in
//! parallel, with bounded memory, the object appearing only on [`complete`].
//!
//! Memory: one part being filled, one waiting, and one in flight per connection:
//! `(parallel + 2) × part_size` at most (96 MiB by default).
//!
//! [`complete`]: MultipartWriter::complete

use crate::journal::{self, Claim, Entry};
use crate::{Client, Error, ErrorKind, Result};
use bytes::Bytes;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// S3's limits: at most 10,000 parts, each at least 5 MiB but the last.
const MAX_PARTS: u64 = 10_000;
const MIN_PART: usize = 5 << 20;
const MAX_PART: u64 = 5 << 30;

/// How an output is cut and sent.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Bytes per part (the last may be smaller).
    pub part_size: usize,
    /// Parts in flight at once.
    pub parallel: usize,
    /// Where the journal of uploads in flight lives.
    pub journal: PathBuf,
    /// Double the part size every 2,000 parts: for a stream of unknown length (a bundle,
    /// a delta), which then fits up to 968 GiB (992,000 MiB) in 10,000 parts, with memory growing
    /// only past 31 GiB.
    pub grow: bool,
}

impl WriterOptions {
    /// Parts of 16 MiB, or larger where `expected` bytes would need more than 9,000 of
    /// them (headroom below S3's 10,000 for a stream that comes out a little larger than
    /// expected, as a qcow2 does with its tables); four in flight, fewer when larger.
    pub fn for_size(expected: u64, journal: PathBuf) -> WriterOptions {
        let mib = 1u64 << 20;
        let part = expected.div_ceil(9_000).div_ceil(mib) * mib;
        let part = part.clamp(16 * mib, MAX_PART);
        WriterOptions {
            part_size: part as usize,
            // Larger parts, fewer in flight: 96 MiB in all up to 16 MiB parts (disks up
            // to 140 GiB), then three parts' worth.
            parallel: (64 * mib / part).clamp(1, 4) as usize,
            journal,
            grow: false,
        }
    }

    /// Parts of 16 MiB that grow (see [`WriterOptions::grow`]); four in flight.
    pub fn for_unknown_size(journal: PathBuf) -> WriterOptions {
        WriterOptions {
            grow: true,
            ..WriterOptions::for_size(0, journal)
        }
    }
}

/// An output stream into object `key`; clones share it (one goes to the export, one
/// stays to [`complete`](MultipartWriter::complete) it).
#[derive(Clone)]
pub struct MultipartWriter(Arc<Mutex<State>>);

struct State {
    client: Arc<Client>,
    key: String,
    options: WriterOptions,
    /// The part being filled.
    buf: Vec<u8>,
    /// Parts handed to the senders, and their bytes.
    parts: u16,
    sent: u64,
    /// Started on the first full part; an output smaller than one part is a single PUT.
    upload: Option<Upload>,
    claim: Option<Claim>,
    /// Every part is sent and acknowledged; only the completion is left.
    sent_all: bool,
    /// A write failed: the output is short, and can never be completed.
    broken: bool,
    done: bool,
}

struct Upload {
    id: String,
    queue: Option<SyncSender<(u16, Bytes)>>,
    senders: Vec<JoinHandle<()>>,
    etags: Arc<Mutex<Vec<Option<String>>>>,
    failed: Arc<Mutex<Option<Error>>>,
}

impl MultipartWriter {
    /// A writer to `key`. First cleans up after processes that died mid-upload: this
    /// key's unfinished upload in the journal, the key's unfinished uploads the server
    /// lists (left by any machine; some servers list none), and the journal's other
    /// abandoned uploads at the same endpoint.
    pub fn start(
        client: Arc<Client>,
        key: &str,
        options: WriterOptions,
    ) -> Result<MultipartWriter> {
        let claim = journal::claim(&options.journal, client.endpoint(), client.bucket(), key)?;
        if let Some(previous) = &claim.previous {
            client.abort_upload(&previous.key, &previous.upload_id)?;
        }
        match client.unfinished_uploads(key) {
            Ok(Some(ids)) => {
                for id in ids {
                    client.abort_upload(key, &id)?;
                }
            }
            // Not listed (the server lacks the call, or the credentials lack
            // s3:ListBucketMultipartUploads): the journal is what there is.
            Ok(None) => {}
            Err(e) if matches!(e.kind(), ErrorKind::Denied | ErrorKind::NotImplemented) => {}
            Err(e) => return Err(e),
        }
        for (other, entry) in journal::abandoned(&options.journal) {
            if entry.endpoint == client.endpoint()
                && entry.bucket == client.bucket()
                && client.abort_upload(&entry.key, &entry.upload_id).is_ok()
            {
                other.clear();
            }
        }
        Ok(MultipartWriter(Arc::new(Mutex::new(State {
            client,
            key: key.to_owned(),
            buf: Vec::with_capacity(options.part_size.min(MIN_PART)),
            options,
            parts: 0,
            sent: 0,
            upload: None,
            claim: Some(claim),
            sent_all: false,
            broken: false,
            done: false,
        }))))
    }

    /// Sends what is left and waits until every part is acknowledged; a part that failed
    /// fails this. What remains is [`complete`](MultipartWriter::complete), one request.
    pub fn send_rest(&self) -> Result<()> {
        let mut state = self.0.lock().unwrap();
        state.send_rest()
    }

    /// Sends what is left if [`send_rest`](MultipartWriter::send_rest) did not, and
    /// completes the upload: the object appears under its key with every byte written.
    /// Its size.
    pub fn complete(&self) -> Result<u64> {
        let mut state = self.0.lock().unwrap();
        if state.done {
            return Err(Error::new(
                ErrorKind::Other,
                "the upload was completed twice",
            ));
        }
        state.send_rest()?;
        let size = state.sent + state.buf.len() as u64;
        let key = state.key.clone();
        match &state.upload {
            None => {
                let body = Bytes::from(std::mem::take(&mut state.buf));
                state.client.write(&key, body)?;
            }
            Some(upload) => {
                let etags: Option<Vec<String>> =
                    upload.etags.lock().unwrap().iter().cloned().collect();
                let etags = etags.ok_or_else(|| {
                    Error::new(ErrorKind::Other, "a part of the upload went unsent")
                })?;
                let id = upload.id.clone();
                state.client.complete_upload(&key, &id, &etags)?;
            }
        }
        state.done = true;
        if let Some(claim) = state.claim.take() {
            claim.clear();
        }
        Ok(size)
    }

    /// A [`complete`](MultipartWriter::complete) that failed took effect all the same
    /// (the caller sees the new object under the key): there is no upload left to abort,
    /// and its journal entry goes.
    pub fn completed_anyway(&self) {
        let mut state = self.0.lock().unwrap();
        state.done = true;
        if let Some(claim) = state.claim.take() {
            claim.clear();
        }
    }
}

impl State {
    fn send_rest(&mut self) -> Result<()> {
        if self.broken {
            return Err(Error::new(
                ErrorKind::Other,
                "a write to the upload failed: the output is incomplete",
            ));
        }
        if self.sent_all || self.upload.is_none() {
            // Nothing sent yet: the whole output is one PUT at completion.
            return Ok(());
        }
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        let upload = self.upload.as_mut().expect("started");
        upload.queue = None;
        for s in upload.senders.drain(..) {
            let _ = s.join();
        }
        if let Some(e) = upload.failed.lock().unwrap().take() {
            self.broken = true;
            return Err(e);
        }
        self.sent_all = true;
        Ok(())
    }

    /// Hands the filled buffer to the senders (starting the upload on the first part).
    fn send_part(&mut self) -> Result<()> {
        if self.upload.is_none() {
            self.start_upload()?;
        }
        let upload = self.upload.as_ref().expect("started");
        if let Some(e) = upload.failed.lock().unwrap().as_ref() {
            return Err(Error::new(e.kind(), e.to_string()));
        }
        if u64::from(self.parts) >= MAX_PARTS {
            return Err(Error::new(
                ErrorKind::Other,
                format!(
                    "the output outgrew S3's 10,000 parts of {} MiB",
                    self.options.part_size >> 20
                ),
            ));
        }
        self.parts += 1;
        self.sent += self.buf.len() as u64;
        upload.etags.lock().unwrap().push(None);
        if self.options.grow && self.parts.is_multiple_of(2_000) {
            self.options.part_size = (self.options.part_size * 2).min(MAX_PART as usize);
        }
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(self.options.part_size));
        let queue = upload.queue.as_ref().expect("open until completed");
        queue
            .send((self.parts, Bytes::from(part)))
            .map_err(|_| Error::new(ErrorKind::Other, "the part senders stopped"))
    }

    fn start_upload(&mut self) -> Result<()> {
        let id = self.client.start_upload(&self.key)?;
        let entry = Entry {
            endpoint: self.client.endpoint().to_owned(),
            bucket: self.client.bucket().to_owned(),
            key: self.key.clone(),
            upload_id: id.clone(),
        };
        if let Err(e) = self.claim.as_mut().expect("held until done").record(&entry) {
            let _ = self.client.abort_upload(&self.key, &id);
            return Err(e);
        }
        let (queue, parts) = sync_channel::<(u16, Bytes)>(1);
        let parts = Arc::new(Mutex::new(parts));
        let etags = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(None));
        let senders = (0..self.options.parallel.max(1))
            .map(|_| {
                let (client, key, id) = (Arc::clone(&self.client), self.key.clone(), id.clone());
                let (parts, etags, failed) =
                    (Arc::clone(&parts), Arc::clone(&etags), Arc::clone(&failed));
                std::thread::spawn(move || sender(&client, &key, &id, &parts, &etags, &failed))
            })
            .collect();
        self.upload = Some(Upload {
            id,
            queue: Some(queue),
            senders,
            etags,
            failed,
        });
        Ok(())
    }
}

/// One connection's loop: sends parts until the queue closes; after a failure anywhere,
/// only drains the queue (the upload is aborted).
fn sender(
    client: &Client,
    key: &str,
    id: &str,
    parts: &Mutex<Receiver<(u16, Bytes)>>,
    etags: &Mutex<Vec<Option<String>>>,
    failed: &Mutex<Option<Error>>,
) {
    loop {
        let next = parts.lock().unwrap().recv();
        let Ok((number, body)) = next else { return };
        if failed.lock().unwrap().is_some() {
            continue;
        }
        match client.send_part(key, id, number, body) {
            Ok(etag) => etags.lock().unwrap()[usize::from(number) - 1] = Some(etag),
            Err(e) => {
                failed.lock().unwrap().get_or_insert(e);
            }
        }
    }
}

impl Write for MultipartWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut state = self.0.lock().unwrap();
        if state.done || state.sent_all {
            return Err(std::io::Error::other("the upload is already complete"));
        }
        let room = state.options.part_size.saturating_sub(state.buf.len());
        let n = room.min(data.len());
        state.buf.extend_from_slice(&data[..n]);
        if state.broken {
            return Err(std::io::Error::other(
                "an earlier write to the upload failed",
            ));
        }
        if state.buf.len() >= state.options.part_size {
            if let Err(e) = state.send_part() {
                state.broken = true;
                return Err(std::io::Error::other(e.to_string()));
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for State {
    /// Not completed (a failure, an early return): the upload is aborted, so that its
    /// parts do not stay stored (and billed) unseen. If the abort fails, the journal
    /// entry stays for the next export to try again.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(mut upload) = self.upload.take() {
            upload.queue = None;
            for s in upload.senders.drain(..) {
                let _ = s.join();
            }
            if self.client.abort_upload(&self.key, &upload.id).is_err() {
                return;
            }
        }
        if let Some(claim) = self.claim.take() {
            claim.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_keep_under_the_part_limit() {
        let j = PathBuf::from("/j");
        assert_eq!(
            WriterOptions::for_size(2 << 30, j.clone()).part_size,
            16 << 20
        );
        let big = WriterOptions::for_size(1 << 40, j.clone()).part_size as u64;
        assert!(
            big.is_multiple_of(1 << 20) && (1u64 << 40).div_ceil(big) <= 9_000,
            "{big}"
        );
        assert_eq!(
            WriterOptions::for_size(u64::MAX, j.clone()).part_size as u64,
            MAX_PART
        );
        // Growing from 16 MiB, doubling every 2,000 parts, 10,000 parts hold 992,000 MiB.
        let grown: u64 = (0..5).map(|level| 2_000 * ((16u64 << 20) << level)).sum();
        assert_eq!(grown, 992_000 << 20);
        assert!(WriterOptions::for_unknown_size(j).grow);
    }
}
