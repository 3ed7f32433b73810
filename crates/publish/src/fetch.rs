//! `snapport fetch`: the client side of `download --publish`, resumable and parallel.
//!
//! The bytes go to `FILE.part`, and what has arrived is recorded in `FILE.part.state`
//! (the item's ETag and size, and the byte ranges written). The state is saved every
//! second and only ever lists bytes already written, so after the client or the server is
//! killed, the next run (against the same URL or a new publish of the same content: the
//! ETag says) asks only for what is missing. The missing ranges are split among
//! `parallel` ranged streams.
//!
//! Verification: each stream hashes the 4 MiB groups it receives whole, in memory, as
//! they arrive (the content digest of `snapport_core::digest`, which the server sends in
//! `Repr-Digest` as `sha256-64k-4m`), so the streams share the hashing and nothing is read
//! back; groups from an earlier run are read back from the file. A server that offers only
//! the SHA-256 (`Repr-Digest: sha-256`, else `NAME.sha256`) gets the file read back and
//! hashed. Only a verified file is renamed from `FILE.part` to `FILE`. All-zero blocks are
//! not written, so a sparse disk stays sparse.

use crate::error::{Error, Result};
use base64::Engine as _;
use reqwest::blocking::{Client, Response};
use reqwest::header;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use snapport_core::digest::{
    group_hash, scanned_group_hash, ContentDigest, CONTENT_DIGEST_PREFIX, GROUP_SIZE, LEAF_SIZE,
};
use snapport_core::progress::Progress;
use snapport_core::zeros::is_zero;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct FetchOptions {
    /// `https://HOST:PORT/NAME`, optionally with `?token=TOKEN`.
    pub url: String,
    pub output: PathBuf,
    /// The token, when not in the URL.
    pub token: Option<String>,
    /// Accept exactly the certificate with this SHA-256, whoever signed it.
    pub fingerprint: Option<[u8; 32]>,
    /// Ranged streams at once.
    pub parallel: usize,
    /// Bytes per second over all streams, as `curl --limit-rate`; `None` for no limit.
    pub limit_rate: Option<u64>,
    /// Replace `output` if it exists; without it, a file that appeared under that name
    /// during the download is left as it is.
    pub replace: bool,
}

#[derive(Debug, Clone)]
pub struct FetchSummary {
    pub size: u64,
    /// Bytes already in `FILE.part` from an earlier run.
    pub resumed: u64,
    /// Bytes received in this run.
    pub received: u64,
    /// The digest verified against the server's: `sha256-64k-4m:HEX` (the content
    /// digest) or `sha256:HEX` (the plain SHA-256, when the server offers only that).
    pub digest: String,
}

/// The largest state file read back: a resume state is a few ranges, not megabytes.
const MAX_STATE_BYTES: u64 = 1 << 20;

/// What survives between runs, beside the partial file.
#[derive(Serialize, Deserialize)]
struct State {
    etag: String,
    size: u64,
    /// Written byte ranges `[start, end)`, sorted and merged.
    done: Vec<(u64, u64)>,
}

fn add_range(done: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    done.push((a, b));
    done.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(done.len());
    for &(s, e) in done.iter() {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    *done = merged;
}

fn missing(done: &[(u64, u64)], size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    for &(s, e) in done {
        if s > pos {
            out.push((pos, s));
        }
        pos = pos.max(e);
    }
    if pos < size {
        out.push((pos, size));
    }
    out
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The URL without its `token` parameter, and the token.
pub(crate) fn split_token(url: &str) -> Result<(reqwest::Url, Option<String>)> {
    let mut u = reqwest::Url::parse(url).map_err(|e| Error::with(format!("{url:?}"), e))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(Error::new(format!("{url:?} is not an http(s) URL")));
    }
    let mut token = None;
    let rest: Vec<(String, String)> = u
        .query_pairs()
        .filter_map(|(k, v)| {
            if k == "token" {
                token = Some(v.into_owned());
                None
            } else {
                Some((k.into_owned(), v.into_owned()))
            }
        })
        .collect();
    if rest.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(rest);
    }
    Ok((u, token))
}

/// A blocking client that trusts the pinned certificate, or the usual roots.
pub fn client(fingerprint: Option<[u8; 32]>) -> Result<Client> {
    let mut b = Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .timeout(None)
        .tcp_nodelay(true);
    if let Some(fp) = fingerprint {
        b = b.use_preconfigured_tls(crate::tls::pinned_client_config(fp));
    }
    b.build()
        .map_err(|e| Error::with("setting up the HTTP client", e))
}

/// One line for a response that is not what was asked for.
pub(crate) fn status_error(what: &str, r: Response) -> Error {
    let status = r.status();
    // The first line of the body, and no more than 200 bytes of it whatever was sent.
    let mut head = Vec::new();
    let _ = r.take(200).read_to_end(&mut head);
    let body = String::from_utf8_lossy(&head);
    let body: String = body
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let hint = match status {
        StatusCode::UNAUTHORIZED => " (check the token)",
        StatusCode::NOT_FOUND => " (check the name in the URL)",
        _ => "",
    };
    Error::new(format!(
        "{what}: the server answered {status}{hint}: {body}"
    ))
}

struct Job<'a> {
    client: &'a Client,
    url: &'a reqwest::Url,
    token: &'a Option<String>,
    etag: &'a str,
    size: u64,
    out: &'a Output,
    /// Streams take turns writing: concurrent writers to one file spin on its inode
    /// lock (a tenth of the CPU in a 4-stream profile).
    write_turn: &'a Mutex<()>,
    done: &'a Mutex<Vec<(u64, u64)>>,
    /// The hash of each 4 MiB group received whole in this run.
    groups: &'a Mutex<Vec<Option<[u8; 32]>>>,
    received: &'a AtomicU64,
    failed: &'a AtomicBool,
    /// The rate limit and when this run started.
    limit: Option<(u64, Instant)>,
}

impl Job<'_> {
    fn get(&self) -> reqwest::blocking::RequestBuilder {
        let r = self.client.get(self.url.clone());
        match self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Fetches `[a, b)` into the file, retrying a broken stream from where it broke.
    fn range(&self, a: u64, b: u64) -> Result<()> {
        let mut pos = a;
        let mut attempts = 0;
        while pos < b {
            if self.failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            match self.stream(pos, b) {
                Ok(p) => pos = p,
                Err((p, e, retry)) => {
                    pos = p;
                    attempts += 1;
                    if !retry || attempts >= 3 {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(500 * attempts));
                }
            }
        }
        Ok(())
    }

    /// One ranged GET; returns how far it got, and on failure whether to try again.
    fn stream(&self, a: u64, b: u64) -> std::result::Result<u64, (u64, Error, bool)> {
        // The whole item from its start needs no Range: a server that ignores ranges
        // still serves a fresh single-stream download.
        let whole = a == 0 && b == self.size;
        let req = if whole {
            self.get()
        } else {
            self.get()
                .header(header::RANGE, format!("bytes={a}-{}", b - 1))
                .header(header::IF_RANGE, self.etag)
        };
        let resp = req
            .send()
            .map_err(|e| (a, Error::with("requesting a range", e), true))?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK if whole => {}
            StatusCode::OK => {
                return Err((
                    a,
                    Error::new(
                        "the server ignores Range requests, so the download cannot resume \
                         or run in parallel; remove the .part file and fetch with --parallel 1",
                    ),
                    false,
                ))
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                return Err((a, status_error("requesting a range", resp), true))
            }
            _ => return Err((a, status_error("requesting a range", resp), false)),
        }
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let want = format!("bytes {a}-{}/{}", b - 1, self.size);
        let got = match resp.status() {
            StatusCode::OK => want.as_str(),
            _ => resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        };
        if etag != self.etag || got != want {
            return Err((
                a,
                Error::new(format!(
                    "the server sent other bytes than asked for ({got:?} with ETag {etag}, \
                     asked {want:?} of {})",
                    self.etag
                )),
                false,
            ));
        }
        let mut resp = resp;
        let mut pos = a;
        // One group, aligned for O_DIRECT.
        let mut space = vec![0u8; GROUP_SIZE as usize + DIRECT_ALIGN];
        let skip = space.as_ptr().align_offset(DIRECT_ALIGN);
        let buf = &mut space[skip..skip + GROUP_SIZE as usize];
        while pos < b {
            // Up to the next group boundary, so whole groups can be hashed in memory.
            let group = pos / GROUP_SIZE;
            let boundary = ((group + 1) * GROUP_SIZE).min(self.size);
            let want = (boundary.min(b) - pos) as usize;
            let n = read_full(&mut resp, &mut buf[..want])
                .map_err(|e| (pos, Error::io("receiving", e), true))?;
            let block = &buf[..n];
            let zero_leaves = {
                let _turn = self.write_turn.lock().unwrap_or_else(|p| p.into_inner());
                write_sparse(self.out, block, pos)
                    .map_err(|e| (pos, Error::io("writing the downloaded bytes", e), false))?
            };
            if pos == group * GROUP_SIZE && pos + n as u64 == boundary {
                let h = group_hash(block, |i| zero_leaves & (1 << i) != 0);
                self.groups.lock().unwrap_or_else(|p| p.into_inner())[group as usize] = Some(h);
            }
            add_range(
                &mut self.done.lock().unwrap_or_else(|p| p.into_inner()),
                pos,
                pos + n as u64,
            );
            let total = self.received.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            pos += n as u64;
            if n < want {
                return Err((
                    pos,
                    Error::new(format!("the stream ended at byte {pos} of {b}")),
                    true,
                ));
            }
            if let Some((rate, started)) = self.limit {
                let due = Duration::from_secs_f64(total as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        Ok(pos)
    }
}

/// Reads until `buf` is full or the stream ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes `block` (at most 4 MiB) at `pos`, skipping 64 KiB pieces that are all zeros
/// (the file was created at its full size, so they read as zeros already). Returns which
/// pieces were zeros, bit `i` for piece `i`: the content digest skips hashing them.
fn write_sparse(out: &Output, block: &[u8], pos: u64) -> std::io::Result<u64> {
    let leaf = LEAF_SIZE as usize;
    let mut zeros = 0u64;
    let mut run: Option<usize> = None;
    for (i, piece) in block.chunks(leaf).enumerate() {
        if is_zero(piece) {
            zeros |= 1 << i;
            if let Some(start) = run.take() {
                out.write_at(&block[start..i * leaf], pos + start as u64)?;
            }
        } else if run.is_none() {
            run = Some(i * leaf);
        }
    }
    if let Some(start) = run {
        out.write_at(&block[start..], pos + start as u64)?;
    }
    Ok(zeros)
}

/// The partial file, open twice: with `O_DIRECT` for aligned blocks, which skips the page
/// cache (copies into it cost more than the network on a loaded host), and plainly for
/// the rest and where the file system refuses `O_DIRECT`.
struct Output {
    file: File,
    direct: Option<File>,
}

/// What `O_DIRECT` needs aligned: memory, offsets and lengths.
const DIRECT_ALIGN: usize = 4096;

impl Output {
    fn open(path: &Path, file: File) -> Output {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        Output { file, direct }
    }

    fn write_at(&self, bytes: &[u8], pos: u64) -> std::io::Result<()> {
        match &self.direct {
            Some(d)
                if (bytes.as_ptr() as usize | bytes.len() | pos as usize)
                    .is_multiple_of(DIRECT_ALIGN) =>
            {
                d.write_all_at(bytes, pos)
            }
            _ => self.file.write_all_at(bytes, pos),
        }
    }
}

/// What `Repr-Digest` (RFC 9530) offers: the SHA-256 (`sha-256`) and the content digest
/// (`sha256-64k-4m`), each as hex.
#[derive(Default)]
struct Offered {
    sha256: Option<String>,
    content: Option<String>,
}

fn repr_digest(resp: &Response) -> Offered {
    let mut offered = Offered::default();
    let Some(v) = resp
        .headers()
        .get("repr-digest")
        .and_then(|v| v.to_str().ok())
    else {
        return offered;
    };
    for member in v.split(',') {
        let Some((key, value)) = member.trim().split_once('=') else {
            continue;
        };
        let Some(b64) = value.strip_prefix(':').and_then(|v| v.strip_suffix(':')) else {
            continue;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        if raw.len() != 32 {
            continue;
        }
        match key {
            "sha-256" => offered.sha256 = Some(hex::encode(raw)),
            "sha256-64k-4m" => {
                offered.content = Some(format!("{CONTENT_DIGEST_PREFIX}{}", hex::encode(raw)))
            }
            _ => {}
        }
    }
    offered
}

fn save_state(path: &Path, state: &State) -> Result<()> {
    let tmp = with_suffix(path, ".tmp");
    std::fs::write(&tmp, serde_json::to_vec(state).unwrap_or_default())
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Downloads `options.url` to `options.output`.
pub fn fetch(options: &FetchOptions, progress: &mut dyn Progress) -> Result<FetchSummary> {
    let (url, url_token) = split_token(&options.url)?;
    let token = options.token.clone().or(url_token);
    let client = client(options.fingerprint)?;
    let head = {
        let r = client.head(url.clone());
        let r = match &token {
            Some(t) => r.bearer_auth(t),
            None => r,
        };
        r.send()
            .map_err(|e| Error::with(format!("connecting to {url}"), e))?
    };
    if head.status() != StatusCode::OK {
        return Err(status_error(&format!("asking {url} for its size"), head));
    }
    let size = head
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .ok_or_else(|| Error::new("the server did not say the size (Content-Length)"))?;
    let etag = head
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|e| e.starts_with('"'))
        .ok_or_else(|| {
            Error::new("the server sent no strong ETag, so a download cannot be resumed safely")
        })?
        .to_string();
    let ranges = head
        .headers()
        .get(header::ACCEPT_RANGES)
        .is_some_and(|v| v.as_bytes() == b"bytes");
    let mut offered = repr_digest(&head);

    let part = with_suffix(&options.output, ".part");
    let state_path = with_suffix(&options.output, ".part.state");
    let earlier: Option<State> = snapport_core::io::read_regular_file(&state_path, MAX_STATE_BYTES)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|_| part.exists());
    let done = match earlier {
        Some(s) if s.etag == etag && s.size == size => {
            if !s.done.is_empty() && !ranges {
                return Err(Error::new(format!(
                    "the server does not take Range requests, so {} cannot be resumed; \
                     remove it to download from the start",
                    part.display()
                )));
            }
            s.done
        }
        Some(s) => {
            return Err(Error::new(format!(
                "{} holds part of other content (ETag {}, {} bytes; the server now has {etag}, \
                 {size} bytes); remove it and {} to start over",
                part.display(),
                s.etag,
                s.size,
                state_path.display()
            )))
        }
        None => Vec::new(),
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(done.is_empty())
        .write(true)
        .read(true)
        .open(&part)
        .map_err(|e| Error::io(format!("opening {}", part.display()), e))?;
    file.set_len(size)
        .map_err(|e| Error::io(format!("sizing {}", part.display()), e))?;
    let output = Output::open(
        &part,
        file.try_clone()
            .map_err(|e| Error::io(format!("opening {}", part.display()), e))?,
    );
    let resumed: u64 = done.iter().map(|(a, b)| b - a).sum();
    let todo = missing(&done, size);
    // Splitting needs ranges; without them, one stream from the start.
    let parallel = if ranges { options.parallel.max(1) } else { 1 };
    // Work units: each stream takes the next; small enough that streams end together.
    let total_missing: u64 = todo.iter().map(|(a, b)| b - a).sum();
    // Whole groups, so that each is hashed as it arrives and written aligned.
    let unit = (total_missing / (parallel as u64 * 4))
        .clamp(8 << 20, 1 << 30)
        .next_multiple_of(GROUP_SIZE);
    let mut units = Vec::new();
    for (a, b) in todo {
        let mut p = a;
        while p < b {
            let e = if parallel == 1 {
                b
            } else {
                ((p / unit + 1) * unit).min(b)
            };
            units.push((p, e));
            p = e;
        }
    }
    let queue = Mutex::new(units.into_iter());
    let done = Mutex::new(done);
    let groups = Mutex::new(vec![None; size.div_ceil(GROUP_SIZE) as usize]);
    let received = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let state_of = |done: &Mutex<Vec<(u64, u64)>>| State {
        etag: etag.clone(),
        size,
        done: done.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    };
    save_state(&state_path, &state_of(&done))?;

    progress.start(size);
    progress.advance(resumed);
    let job = Job {
        client: &client,
        url: &url,
        token: &token,
        etag: &etag,
        size,
        out: &output,
        write_turn: &Mutex::new(()),
        done: &done,
        groups: &groups,
        received: &received,
        failed: &failed,
        limit: options.limit_rate.map(|r| (r.max(1), Instant::now())),
    };
    std::thread::scope(|s| {
        let mut workers = Vec::new();
        for _ in 0..parallel {
            let (job, queue, failed, first_error) = (&job, &queue, &failed, &first_error);
            workers.push(s.spawn(move || loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                let Some((a, b)) = next else { return };
                if let Err(e) = job.range(a, b) {
                    failed.store(true, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                    return;
                }
            }));
        }
        let mut shown = 0;
        let mut saved = Instant::now();
        while !workers.iter().all(|w| w.is_finished()) {
            std::thread::sleep(Duration::from_millis(100));
            let now = received.load(Ordering::Relaxed);
            progress.advance(now - shown);
            shown = now;
            if saved.elapsed() >= Duration::from_secs(1) {
                let _ = save_state(&state_path, &state_of(&done));
                saved = Instant::now();
            }
        }
        progress.advance(received.load(Ordering::Relaxed) - shown);
    });
    save_state(&state_path, &state_of(&done))?;
    progress.finish();
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let have: u64 = state_of(&done).done.iter().map(|(a, b)| b - a).sum();
        return Err(e.context(format!(
            "downloading {url} (stopped with {have} of {size} bytes in {}; run the same \
             command again, or with the URL of a new publish of the same content, to resume)",
            part.display()
        )));
    }

    // The server's digests: from the first answer, else once it has computed them.
    if offered.sha256.is_none() {
        let sha256 = sidecar_sha256(&client, &url, &token)?;
        offered = head_digests(&client, &url, &token)?;
        offered.sha256.get_or_insert(sha256);
    }
    let (got, want) = match offered.content {
        Some(want) => {
            let groups = groups.into_inner().unwrap_or_else(|p| p.into_inner());
            (content_digest(&file, size, groups), want)
        }
        None => (
            file_sha256(&file).map(|h| format!("sha256:{h}")),
            format!("sha256:{}", offered.sha256.unwrap_or_default()),
        ),
    };
    let got = got.map_err(|e| Error::io(format!("reading back {}", part.display()), e))?;
    if got != want {
        let _ = std::fs::remove_file(&part);
        let _ = std::fs::remove_file(&state_path);
        return Err(Error::new(format!(
            "the download's digest is {got}, the server's is {want}: the bytes were damaged \
             on the way or changed at the source; the partial file was removed, fetch again"
        )));
    }
    let named = if options.replace {
        std::fs::rename(&part, &options.output)
    } else {
        snapport_core::output::rename_no_replace(&part, &options.output)
    };
    named.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::new(format!(
                "{} appeared during the download and was left as it is; the verified \
                 download stays in {} (run the same command with --force to replace it)",
                options.output.display(),
                part.display()
            ))
        } else {
            Error::io(
                format!(
                    "renaming {} to {}",
                    part.display(),
                    options.output.display()
                ),
                e,
            )
        }
    })?;
    let _ = std::fs::remove_file(&state_path);
    Ok(FetchSummary {
        size,
        resumed,
        received: received.load(Ordering::Relaxed),
        digest: want,
    })
}

/// The content digest of the file: the groups hashed as they arrived, the rest (from an
/// earlier run) read back.
fn content_digest(
    file: &File,
    size: u64,
    groups: Vec<Option<[u8; 32]>>,
) -> std::io::Result<String> {
    let mut digest = ContentDigest::new();
    let mut buf = Vec::new();
    for (g, hash) in groups.into_iter().enumerate() {
        let hash = match hash {
            Some(h) => h,
            None => {
                let at = g as u64 * GROUP_SIZE;
                buf.resize((size - at).min(GROUP_SIZE) as usize, 0);
                file.read_exact_at(&mut buf, at)?;
                scanned_group_hash(&buf)
            }
        };
        digest.push(&hash);
    }
    Ok(digest.finish())
}

/// The plain SHA-256 of the whole file, read back.
fn file_sha256(mut file: &File) -> std::io::Result<String> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Asks again for the digests the server offers, after the download.
fn head_digests(client: &Client, url: &reqwest::Url, token: &Option<String>) -> Result<Offered> {
    let r = client.head(url.clone());
    let r = match token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let resp = r
        .send()
        .map_err(|e| Error::with("asking the server for its digests", e))?;
    Ok(repr_digest(&resp))
}

/// `NAME.sha256` beside the URL, waiting while the server computes it.
fn sidecar_sha256(client: &Client, url: &reqwest::Url, token: &Option<String>) -> Result<String> {
    let mut side = url.clone();
    side.set_path(&format!("{}.sha256", url.path()));
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let r = client.get(side.clone());
        let r = match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        };
        let resp = r
            .send()
            .map_err(|e| Error::with("asking the server for the SHA-256", e))?;
        match resp.status() {
            StatusCode::OK => {
                let text = resp
                    .text()
                    .map_err(|e| Error::with("reading the server's SHA-256", e))?;
                let hex_digest = text.split_whitespace().next().unwrap_or("").to_lowercase();
                if hex_digest.len() != 64 || !hex_digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                    let shown: String = text.chars().take(70).collect();
                    return Err(Error::new(format!(
                        "the server's SHA-256 file does not start with 64 hex digits: {shown:?}"
                    )));
                }
                return Ok(hex_digest);
            }
            StatusCode::SERVICE_UNAVAILABLE if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_secs(1));
            }
            _ => return Err(status_error("asking the server for the SHA-256", resp)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_gaps_are_found() {
        let mut d = Vec::new();
        add_range(&mut d, 10, 20);
        add_range(&mut d, 30, 40);
        add_range(&mut d, 20, 30);
        assert_eq!(d, vec![(10, 40)]);
        add_range(&mut d, 50, 60);
        assert_eq!(missing(&d, 70), vec![(0, 10), (40, 50), (60, 70)]);
        assert_eq!(missing(&[], 5), vec![(0, 5)]);
        assert_eq!(missing(&[(0, 5)], 5), Vec::<(u64, u64)>::new());
    }

    #[test]
    fn token_leaves_the_url() {
        let (u, t) = split_token("https://h:1/d.raw?token=abc&x=1").unwrap();
        assert_eq!(t.as_deref(), Some("abc"));
        assert_eq!(u.as_str(), "https://h:1/d.raw?x=1");
        let (u, t) = split_token("http://h/d.raw").unwrap();
        assert_eq!((u.as_str(), t), ("http://h/d.raw", None));
        assert!(split_token("ftp://h/x").is_err());
    }
}
