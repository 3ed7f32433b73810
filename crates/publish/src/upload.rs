//! `upload --publish`: the server side of a resumable upload, and `snapport push`.
//!
//! The protocol is a small subset of tus's ideas over plain `PUT`/`HEAD`:
//! - `HEAD /NAME` answers `Upload-Offset` (bytes received so far) and, once declared,
//!   `Upload-Length`.
//! - `PUT /NAME` with `Upload-Length` (the whole upload's size), `Upload-Sha256` (its
//!   SHA-256) and `Upload-Offset` (where this body starts; it must be the server's
//!   offset, else 409 with the right one). The body's bytes are acknowledged as they are
//!   received. The `PUT` that brings the last byte waits for the import to be verified
//!   and committed, and answers 201 with a JSON summary, or 422 with the reason (then
//!   nothing was imported).
//!
//! A connection that breaks leaves the offset where it was: `push` asks for it and sends
//! the rest. Bytes flow through a bounded channel to the import thread, which reads them
//! as a stream ([`UploadReader`]): the upload is never spooled.

use crate::error::{Error, Result};
use bytes::Bytes;
use std::sync::{Arc, Condvar, Mutex};

/// What the client declared on its first `PUT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub length: u64,
    /// 64 lowercase hex digits.
    pub sha256: String,
}

#[derive(Default)]
pub(crate) struct SlotState {
    pub declared: Option<Declared>,
    /// Bytes received and handed to the import.
    pub offset: u64,
    /// A `PUT` is streaming now.
    pub busy: bool,
    /// A `PUT` ran past the declared length: the import is told so, not a short stream.
    pub overrun: bool,
    /// The import's outcome: a JSON summary, or why it failed.
    pub outcome: Option<std::result::Result<String, String>>,
}

/// One upload the server waits for, under the name `name`.
pub struct UploadSlot {
    pub name: String,
    pub(crate) state: Mutex<SlotState>,
    pub(crate) changed: Condvar,
    /// The channel to the import; taken (closed) when the last byte is in.
    pub(crate) tx: Mutex<Option<tokio::sync::mpsc::Sender<Bytes>>>,
    /// Woken when the outcome is known.
    pub(crate) outcome_ready: tokio::sync::Notify,
}

/// The import side: waits for the declaration, then reads the bytes.
pub struct UploadReader {
    slot: Arc<UploadSlot>,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl UploadSlot {
    pub fn new(name: &str) -> (Arc<UploadSlot>, UploadReader) {
        // 8 blocks of what hyper hands over (up to a few hundred KiB each).
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let slot = Arc::new(UploadSlot {
            name: name.to_string(),
            state: Mutex::new(SlotState::default()),
            changed: Condvar::new(),
            tx: Mutex::new(Some(tx)),
            outcome_ready: tokio::sync::Notify::new(),
        });
        let reader = UploadReader {
            slot: Arc::clone(&slot),
            rx,
            current: Bytes::new(),
        };
        (slot, reader)
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the import's outcome; the waiting `PUT` answers with it.
    pub fn finish(&self, outcome: std::result::Result<String, String>) {
        self.lock().outcome = Some(outcome);
        self.outcome_ready.notify_waiters();
        self.outcome_ready.notify_one();
    }

    pub fn is_finished(&self) -> bool {
        self.lock().outcome.is_some()
    }

    /// Stops waiting for bytes: the import sees its stream end early and fails.
    pub(crate) fn abandon(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    pub fn offset(&self) -> u64 {
        self.lock().offset
    }
}

impl UploadReader {
    /// Blocks until a client has declared the upload (or the server gave up: `None`).
    pub fn wait_declared(&self) -> Option<Declared> {
        let mut st = self.slot.lock();
        loop {
            if let Some(d) = &st.declared {
                return Some(d.clone());
            }
            if self
                .slot
                .tx
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none()
            {
                return None;
            }
            st = self
                .slot
                .changed
                .wait_timeout(st, std::time::Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl std::io::Read for UploadReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => {
                    let st = self.slot.lock();
                    return match (&st.declared, st.overrun) {
                        (Some(d), true) => Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            overrun_message(d.length),
                        )),
                        _ => Ok(0),
                    };
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// Why an upload whose body ran past its declared length was refused.
pub(crate) fn overrun_message(length: u64) -> String {
    format!("the upload's body was longer than its Upload-Length of {length} bytes")
}

/// Reads the upload headers of a `PUT`.
pub(crate) fn declared_of(
    headers: &hyper::HeaderMap,
) -> std::result::Result<(Declared, u64), String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let length = get("upload-length")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or("Upload-Length (the whole upload's size in bytes) is required")?;
    let sha256 = get("upload-sha256")
        .map(str::to_ascii_lowercase)
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("Upload-Sha256 (64 hex digits, the whole upload's SHA-256) is required")?;
    let offset = match get("upload-offset") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| "Upload-Offset must be a number of bytes")?,
    };
    Ok((Declared { length, sha256 }, offset))
}

pub use crate::fetch::client;

/// Options of `snapport push`.
pub struct PushOptions {
    pub file: std::path::PathBuf,
    pub url: String,
    pub token: Option<String>,
    pub fingerprint: Option<[u8; 32]>,
    /// The SHA-256 to declare; computed from the file when `None`.
    pub sha256: Option<String>,
    pub limit_rate: Option<u64>,
}

#[derive(Debug)]
pub struct PushSummary {
    pub size: u64,
    /// Bytes the server already had.
    pub resumed: u64,
    /// The server's JSON summary of the import.
    pub server: String,
}

/// Sends `options.file` to an `upload --publish`, from the offset the server already
/// has, retrying a broken connection a few times.
pub fn push(
    options: &PushOptions,
    progress: &mut dyn snapport_core::progress::Progress,
) -> Result<PushSummary> {
    use reqwest::StatusCode;
    use std::io::{Read, Seek};
    let (url, url_token) = crate::fetch::split_token(&options.url)?;
    let token = options.token.clone().or(url_token);
    let client = client(options.fingerprint)?;
    let mut file = std::fs::File::open(&options.file)
        .map_err(|e| Error::io(format!("opening {}", options.file.display()), e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io(format!("reading {}", options.file.display()), e))?
        .len();
    let sha256 = match &options.sha256 {
        Some(s) => s.to_ascii_lowercase(),
        None => {
            let f = file
                .try_clone()
                .map_err(|e| Error::io("opening the file again", e))?;
            sha256_of(f).map_err(|e| Error::io(format!("hashing {}", options.file.display()), e))?
        }
    };
    let auth = |r: reqwest::blocking::RequestBuilder| match &token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let mut resumed = None;
    let mut attempts = 0;
    progress.start(size);
    let mut shown = 0u64;
    loop {
        let head = auth(client.head(url.clone()))
            .send()
            .map_err(|e| Error::with(format!("connecting to {url}"), e))?;
        if head.status() != StatusCode::OK {
            return Err(crate::fetch::status_error(
                "asking for the upload's offset",
                head,
            ));
        }
        let num = |name: &str| {
            head.headers()
                .get(name)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        };
        let offset = num("upload-offset")
            .ok_or_else(|| Error::new("the server did not say its Upload-Offset"))?;
        if let Some(l) = num("upload-length") {
            if l != size {
                return Err(Error::new(format!(
                    "the server is receiving an upload of {l} bytes, not this file's {size}"
                )));
            }
        }
        if offset > size {
            return Err(Error::new(format!(
                "the server says it has {offset} bytes of a {size}-byte file"
            )));
        }
        resumed.get_or_insert(offset);
        progress.advance(offset.saturating_sub(shown));
        shown = shown.max(offset);
        file.seek(std::io::SeekFrom::Start(offset))
            .map_err(|e| Error::io("seeking in the file", e))?;
        let reader = Paced {
            inner: file
                .try_clone()
                .map_err(|e| Error::io("opening the file again", e))?
                .take(size - offset),
            rate: options.limit_rate,
            sent: 0,
            started: std::time::Instant::now(),
        };
        let body = reqwest::blocking::Body::sized(reader, size - offset);
        let sent = auth(client.put(url.clone()))
            .header("upload-length", size.to_string())
            .header("upload-sha256", &sha256)
            .header("upload-offset", offset.to_string())
            .body(body)
            .send();
        match sent {
            Ok(r) if r.status() == StatusCode::CREATED => {
                progress.advance(size - shown);
                progress.finish();
                let server = r
                    .text()
                    .map_err(|e| Error::with("reading the server's summary", e))?;
                return Ok(PushSummary {
                    size,
                    resumed: resumed.unwrap_or(0),
                    server,
                });
            }
            Ok(r) if r.status() == StatusCode::CONFLICT => {}
            Ok(r) => return Err(crate::fetch::status_error("uploading", r)),
            Err(e) => {
                if attempts >= 3 {
                    return Err(Error::with(
                        "uploading (run the same command again to resume from what the server has)",
                        e,
                    ));
                }
            }
        }
        attempts += 1;
        std::thread::sleep(std::time::Duration::from_millis(500 * attempts));
    }
}

/// A reader held to a byte rate.
struct Paced<R> {
    inner: R,
    rate: Option<u64>,
    sent: u64,
    started: std::time::Instant,
}

impl<R: std::io::Read> std::io::Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        if let Some(rate) = self.rate {
            let due = std::time::Duration::from_secs_f64(self.sent as f64 / rate.max(1) as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        Ok(n)
    }
}

fn sha256_of(mut f: std::fs::File) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
