//! The publish server: HTTP/1.1 (hyper) over TLS (rustls) or plain TCP, on a small tokio
//! runtime.
//!
//! Routes, all behind the token (`Authorization: Bearer TOKEN`, or `?token=TOKEN` for a
//! browser; anywhere else it is not looked for):
//! - `GET|HEAD /NAME`: the item, with `Content-Length`, single `Range`s (206, or 416
//!   beyond the end; several ranges or a malformed header get the whole item, as RFC 9110
//!   allows), `If-Range`, a strong `ETag`, and `Repr-Digest: sha-256=:BASE64:` (RFC 9530)
//!   once the SHA-256 is known, with `sha256-64k-4m=:BASE64:` beside it: the content
//!   digest of `snapport_core::digest`, which a client checks per 4 MiB group in
//!   parallel streams (recipients ignore algorithms they do not know).
//! - `GET|HEAD /NAME.sha256`: the digest in `sha256sum` format; 503 with `Retry-After`
//!   while it is being computed.
//! - `GET /` (`/index.html`): an HTML page listing the items, their sizes, digests and
//!   live progress; `GET /status.json`: the same as JSON.
//!
//! Bounds: a connection is a stranger until its first request carries the token. At most
//! [`MAX_STRANGERS`] strangers are open at once (more wait in the kernel's backlog), and
//! each must finish its TLS handshake and its first request's headers within
//! [`GREETING_TIMEOUT`] (or `io_timeout`, if shorter), else it is closed. A request
//! without the token gets 401 and its connection is closed. Once its token is checked, a
//! connection is served if fewer than `max_clients` are (else 503, and closed); so
//! strangers, however many, idle or flooding, never hold a served client's place. Each
//! served connection holds at most one response of a few MiB in flight; request headers,
//! or a read or write that makes no progress for `io_timeout`, close it (slow-loris and
//! stalled readers). The server stops when nobody has used it for `ttl` (counted from the
//! last request that carried the token, as Deckhouse does: strangers do not keep it up)
//! or after `max_downloads` complete downloads (see `Item::delivered`).

use crate::content::{Item, Sha256State};
use crate::error::{Error, Result};
use crate::range::{parse_range, Ranged};
use crate::upload::{declared_of, overrun_message, UploadSlot};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use snapport_core::digest::CONTENT_DIGEST_PREFIX;
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Connections open at once that have not yet shown the token (in their TLS handshake,
/// or before their first request): bounded apart from the served ones.
pub const MAX_STRANGERS: usize = 256;

/// From accept to the end of the first request's headers, TLS handshake included.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(5);

/// How a publish behaves.
pub struct Config {
    /// The secret every request must carry.
    pub token: String,
    /// TLS, or plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Stop after this long without an authorized access.
    pub ttl: Option<Duration>,
    /// Stop after this many complete downloads (see `Item::delivered`), once the
    /// responses in flight are done.
    pub max_downloads: Option<u64>,
    /// Connections served at once (once their token is checked).
    pub max_clients: usize,
    /// Header and stalled read/write deadline (and the greeting's, if shorter than
    /// [`GREETING_TIMEOUT`]).
    pub io_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            token: String::new(),
            tls: None,
            ttl: None,
            max_downloads: None,
            max_clients: 32,
            io_timeout: Duration::from_secs(30),
        }
    }
}

/// Why the server stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// Nobody used it for the TTL.
    Expired(Duration),
    /// `max_downloads` complete downloads were served.
    Downloaded(u64),
    /// The upload came in and its import is done (committed or refused).
    Uploaded,
}

/// A snapshot of the server's state, for a progress display or `/status.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub items: Vec<ItemStatus>,
    /// Served connections (their token checked) open now.
    pub clients: u64,
    /// Connections with the token turned away because `max_clients` were served.
    pub rejected: u64,
    /// Seconds since the last authorized access.
    pub idle_seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemStatus {
    pub name: String,
    pub size: u64,
    pub etag: String,
    pub sha256: Option<String>,
    /// `sha256-64k-4m:HEX`, once known.
    pub digest: Option<String>,
    pub bytes_sent: u64,
    pub downloads: u64,
    /// Responses streaming now.
    pub active: u64,
}

struct Shared {
    items: Vec<Item>,
    uploads: Vec<Arc<UploadSlot>>,
    config: Config,
    started: Instant,
    /// Milliseconds from `started` to the last authorized access.
    last_access: AtomicU64,
    /// Requests whose response is not finished.
    in_flight: AtomicU64,
    clients: AtomicU64,
    rejected: AtomicU64,
}

impl Shared {
    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_access.fetch_max(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_access.load(Ordering::Relaxed)))
    }

    fn should_stop(&self) -> Option<Stopped> {
        let idle = self.in_flight.load(Ordering::Relaxed) == 0;
        if idle && !self.uploads.is_empty() && self.uploads.iter().all(|u| u.is_finished()) {
            return Some(Stopped::Uploaded);
        }
        if let Some(max) = self.config.max_downloads {
            let done: u64 = self.items.iter().map(Item::downloads).sum();
            if done >= max {
                return Some(Stopped::Downloaded(done));
            }
        }
        match self.config.ttl {
            Some(ttl) if self.in_flight.load(Ordering::Relaxed) == 0 && self.idle() > ttl => {
                Some(Stopped::Expired(ttl))
            }
            _ => None,
        }
    }

    fn status(&self) -> Status {
        Status {
            items: self
                .items
                .iter()
                .map(|i| ItemStatus {
                    name: i.name.clone(),
                    size: i.content.size(),
                    etag: i.etag.clone(),
                    sha256: match i.sha256() {
                        Sha256State::Known(h) => Some(h),
                        _ => None,
                    },
                    digest: i.content_digest(),
                    bytes_sent: i.stats.bytes_sent.load(Ordering::Relaxed),
                    downloads: i.downloads(),
                    active: i.stats.active.load(Ordering::Relaxed),
                })
                .collect(),
            clients: self.clients.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            idle_seconds: self.idle().as_secs_f64(),
        }
    }
}

/// A bound, not yet running, publish server.
pub struct Server {
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
}

/// Reads the state of a running server from another thread.
#[derive(Clone)]
pub struct StatusHandle(Arc<Shared>);

impl StatusHandle {
    pub fn status(&self) -> Status {
        self.0.status()
    }
}

impl Server {
    /// A server for `items` on a bound listener (bound by the caller, who may need its
    /// address first, for the certificate).
    pub fn new(
        listener: std::net::TcpListener,
        items: Vec<Item>,
        uploads: Vec<Arc<UploadSlot>>,
        config: Config,
    ) -> Result<Server> {
        let names = items.iter().map(|i| i.name.as_str());
        if let Some(bad) = names
            .chain(uploads.iter().map(|u| u.name.as_str()))
            .find(|n| !crate::content::valid_name(n))
        {
            return Err(Error::new(format!(
                "{bad:?} cannot be served: a name is letters, digits, '.', '_', '-' or '@'"
            )));
        }
        if config.token.len() < 32 {
            return Err(Error::new(
                "a publish token must have at least 32 characters",
            ));
        }
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("setting up the listening socket", e))?;
        Ok(Server {
            listener,
            shared: Arc::new(Shared {
                items,
                uploads,
                config,
                started: Instant::now(),
                last_access: AtomicU64::new(0),
                in_flight: AtomicU64::new(0),
                clients: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
            }),
        })
    }

    pub fn local_addr(&self) -> Result<std::net::SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("reading the listening address", e))
    }

    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle(Arc::clone(&self.shared))
    }

    /// Serves until the TTL expires or the downloads are done; blocks the calling thread.
    pub fn run(self) -> Result<Stopped> {
        let max_clients = self.shared.config.max_clients.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            // One blocking reader per streaming response, at most one per connection.
            .max_blocking_threads(max_clients + 4)
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the server's runtime", e))?;
        runtime.block_on(accept_loop(self.listener, self.shared, max_clients))
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    max_clients: usize,
) -> Result<Stopped> {
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| Error::io("setting up the listening socket", e))?;
    let gates = Arc::new(Gates {
        strangers: Arc::new(Semaphore::new(MAX_STRANGERS)),
        served: Arc::new(Semaphore::new(max_clients)),
    });
    let tls = shared
        .config
        .tls
        .as_ref()
        .map(|c| tokio_rustls::TlsAcceptor::from(Arc::clone(c)));
    let accepting = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                // A place among the strangers first: when they are all taken, the next
                // connections wait in the backlog until one is served, refused or timed out.
                let Ok(stranger) = Arc::clone(&gates.strangers).acquire_owned().await else {
                    return;
                };
                let Ok((tcp, peer)) = listener.accept().await else {
                    // Out of descriptors or a reset before accept: wait, go on.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let gate = Arc::new(Gate {
                    shared: Arc::clone(&shared),
                    gates: Arc::clone(&gates),
                    peer: peer.ip().to_canonical(),
                    stranger: Mutex::new(Some(stranger)),
                    served: Mutex::new(None),
                    authenticated: AtomicBool::new(false),
                });
                tokio::spawn(connection(tcp, tls.clone(), gate));
            }
        })
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let stopped = loop {
        tick.tick().await;
        if let Some(s) = shared.should_stop() {
            break s;
        }
    };
    // Stops accepting and closes the listener.
    accepting.abort();
    let _ = accepting.await;
    // An upload that never finished will not: its import sees the stream end.
    for u in &shared.uploads {
        u.abandon();
    }
    // Let responses in flight finish (a parallel download's other ranges), within the
    // deadline a stalled one would get anyway.
    let deadline = Instant::now() + shared.config.io_timeout;
    while shared.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(stopped)
}

/// The two bounds on connections: strangers, and served clients.
struct Gates {
    strangers: Arc<Semaphore>,
    served: Arc<Semaphore>,
}

/// One connection's place: among the strangers until a request shows the token, then
/// among the served clients (or refused).
struct Gate {
    shared: Arc<Shared>,
    gates: Arc<Gates>,
    /// Who delivered bytes count for (see `Item::delivered`).
    peer: IpAddr,
    stranger: Mutex<Option<OwnedSemaphorePermit>>,
    served: Mutex<Option<Served>>,
    authenticated: AtomicBool,
}

/// A served client's place; counted in `clients` while it is held.
struct Served {
    _permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shared.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// A request carried the token: moves the connection from the strangers to the
    /// served clients; `false` if all `max_clients` places are taken.
    fn admit(&self) -> bool {
        if self.is_authenticated() {
            return true;
        }
        let Ok(permit) = Arc::clone(&self.gates.served).try_acquire_owned() else {
            self.shared.rejected.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        self.shared.clients.fetch_add(1, Ordering::Relaxed);
        *lock(&self.served) = Some(Served {
            _permit: permit,
            shared: Arc::clone(&self.shared),
        });
        lock(&self.stranger).take();
        self.authenticated.store(true, Ordering::Relaxed);
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn connection(
    tcp: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    gate: Arc<Gate>,
) {
    let _ = tcp.set_nodelay(true);
    let t = gate.shared.config.io_timeout;
    // The handshake and the first request's headers, both within this.
    let greeting = tokio::time::Instant::now() + t.min(GREETING_TIMEOUT);
    let mut io = tokio_io_timeout::TimeoutStream::new(tcp);
    io.set_read_timeout(Some(t));
    io.set_write_timeout(Some(t));
    let io = Box::pin(io);
    match tls {
        Some(acceptor) => {
            if let Ok(Ok(stream)) = tokio::time::timeout_at(greeting, acceptor.accept(io)).await {
                serve_http(stream, gate, greeting).await
            }
        }
        None => serve_http(io, gate, greeting).await,
    }
}

async fn serve_http<I>(io: I, gate: Arc<Gate>, greeting: tokio::time::Instant)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let t = gate.shared.config.io_timeout;
    let service = {
        let gate = Arc::clone(&gate);
        hyper::service::service_fn(move |req| {
            let gate = Arc::clone(&gate);
            async move { Ok::<_, Infallible>(respond(req, &gate).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(t)
        .max_buf_size(64 << 10)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = &mut conn => return,
        _ = tokio::time::sleep_until(greeting) => {}
    }
    // Still a stranger at the greeting's deadline: closed (dropping the connection closes
    // its socket).
    if gate.is_authenticated() {
        let _ = conn.await;
    }
}

/// The answer to one request: 401 (and the connection closed) without the token, 503
/// (closed too) when the token is right but every served place is taken.
async fn respond(req: Request<Incoming>, gate: &Gate) -> Response<Body> {
    let shared = &gate.shared;
    if !authorized(&req, &shared.config.token) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "a valid token is required (Authorization: Bearer TOKEN)",
        );
        let h = r.headers_mut();
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    if !gate.admit() {
        return busy();
    }
    handle(req, shared, gate.peer).await
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("ascii"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // The token may sit in the page's URL: never hand it to another site.
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

fn busy() -> Response<Body> {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many clients; try again shortly",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The token, where it may be: a Bearer `Authorization` header, else a `token` query
/// parameter. A wrong header is not rescued by a right query.
fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        return v
            .to_str()
            .ok()
            .and_then(|s| s.strip_prefix("Bearer "))
            .is_some_and(|t| crate::same_secret(t.trim().as_bytes(), token.as_bytes()));
    }
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .is_some_and(|t| crate::same_secret(t.as_bytes(), token.as_bytes()))
}

/// Decrements the in-flight count when a response is done (or dropped).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: &Arc<Shared>) -> InFlight {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(shared))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request that carried the token.
async fn handle(req: Request<Incoming>, shared: &Arc<Shared>, peer: IpAddr) -> Response<Body> {
    shared.touch();
    let slot = req
        .uri()
        .path()
        .strip_prefix('/')
        .and_then(|n| shared.uploads.iter().find(|u| u.name == n))
        .cloned();
    if let Some(slot) = slot {
        return match *req.method() {
            Method::HEAD => upload_offset(&slot),
            Method::PUT => receive(req, shared, slot).await,
            _ => {
                let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only HEAD and PUT");
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("HEAD, PUT"));
                r
            }
        };
    }
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
    };
    let path = req.uri().path();
    let response = match path {
        "/" | "/index.html" => full(
            StatusCode::OK,
            "text/html; charset=utf-8",
            index_page(&shared.status(), &shared.config.token),
        ),
        "/status.json" => full(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec(&shared.status()).unwrap_or_default(),
        ),
        _ => {
            let name = &path[1..];
            if let Some(i) = shared.items.iter().position(|i| i.name == name) {
                serve_item(&req, shared, i, peer)
            } else if let Some(i) = name
                .strip_suffix(".sha256")
                .and_then(|n| shared.items.iter().position(|i| i.name == n))
            {
                serve_sha256(&shared.items[i])
            } else {
                text(
                    StatusCode::NOT_FOUND,
                    "nothing is published under that name",
                )
            }
        }
    };
    if head {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, empty());
    }
    response
}

/// `HEAD` of an upload: how much of it has arrived.
fn upload_offset(slot: &UploadSlot) -> Response<Body> {
    let st = slot.lock();
    let mut r = Response::new(empty());
    let h = r.headers_mut();
    h.insert("upload-offset", HeaderValue::from(st.offset));
    if let Some(d) = &st.declared {
        h.insert("upload-length", HeaderValue::from(d.length));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn conflict(message: &str, offset: u64) -> Response<Body> {
    let mut r = text(StatusCode::CONFLICT, message);
    r.headers_mut()
        .insert("upload-offset", HeaderValue::from(offset));
    r
}

/// Resets an upload's busy flag when its `PUT` ends, however it ends.
struct Busy(Arc<UploadSlot>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.lock().busy = false;
    }
}

/// A `PUT` of (the rest of) an upload: its bytes go to the import as they arrive.
async fn receive(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    slot: Arc<UploadSlot>,
) -> Response<Body> {
    let (declared, offset) = match declared_of(req.headers()) {
        Ok(x) => x,
        Err(m) => return text(StatusCode::BAD_REQUEST, &m),
    };
    {
        let mut st = slot.lock();
        if st.outcome.is_some() {
            return conflict("this upload is already complete", st.offset);
        }
        if st.declared.as_ref().is_some_and(|d| *d != declared) {
            return conflict(
                "another upload (other Upload-Length or Upload-Sha256) is in progress",
                st.offset,
            );
        }
        if st.busy {
            return conflict("another PUT is sending this upload now", st.offset);
        }
        if offset != st.offset {
            return conflict("Upload-Offset is not the offset received so far", st.offset);
        }
        st.declared = Some(declared.clone());
        st.busy = true;
    }
    slot.changed.notify_all();
    let _busy = Busy(Arc::clone(&slot));
    let _in_flight = InFlight::new(shared);
    let Some(tx) = slot.tx.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
        return conflict("this upload is no longer received", slot.offset());
    };
    let mut body = req.into_body();
    let mut import_ended = false;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The client went away: what arrived stays acknowledged.
            return text(StatusCode::BAD_REQUEST, "the request body broke off");
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let n = data.len() as u64;
        if slot.offset() + n > declared.length {
            drop(tx);
            slot.lock().overrun = true;
            slot.abandon();
            discard_rest(&mut body).await;
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "{}: refused, nothing was imported",
                    overrun_message(declared.length)
                ),
            );
        }
        if tx.send(data).await.is_err() {
            import_ended = true;
            break;
        }
        slot.lock().offset += n;
        shared.touch();
    }
    drop(tx);
    if !import_ended && slot.offset() < declared.length {
        // A complete request with fewer bytes: the client sends the rest later.
        let mut r = upload_offset(&slot);
        *r.status_mut() = StatusCode::NO_CONTENT;
        return r;
    }
    // Everything is in (or the import stopped): close the stream, wait for the verdict.
    slot.abandon();
    let outcome = loop {
        let ready = slot.outcome_ready.notified();
        if let Some(o) = slot.lock().outcome.clone() {
            break o;
        }
        ready.await;
    };
    match outcome {
        Ok(summary) => full(StatusCode::CREATED, "application/json", summary),
        Err(why) => text(StatusCode::UNPROCESSABLE_ENTITY, &why),
    }
}

/// Reads and drops what remains of a refused request body, up to 16 MiB and 5 s: a
/// socket closed with bytes unread is reset, and the client would lose the answer.
async fn discard_rest(body: &mut Incoming) {
    let mut left: u64 = 16 << 20;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            match left.checked_sub(n) {
                Some(l) if l > 0 => left = l,
                _ => break,
            }
        }
    })
    .await;
}

fn empty() -> Body {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn serve_sha256(item: &Item) -> Response<Body> {
    match item.sha256() {
        Sha256State::Known(h) => full(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            format!("{h}  {}\n", item.name),
        ),
        Sha256State::Computing => {
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the SHA-256 is still being computed; try again shortly",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            r
        }
        Sha256State::Failed(why) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("computing the SHA-256 failed: {why}"),
        ),
    }
}

fn serve_item(
    req: &Request<Incoming>,
    shared: &Arc<Shared>,
    index: usize,
    peer: IpAddr,
) -> Response<Body> {
    let item = &shared.items[index];
    let size = item.content.size();
    let mut ranged = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(Ranged::Whole, |v| parse_range(v, size));
    // If-Range: a range only of the bytes the client already has part of.
    if let Some(v) = req.headers().get(header::IF_RANGE) {
        if v.as_bytes() != item.etag.as_bytes() {
            ranged = Ranged::Whole;
        }
    }
    let (status, start, len) = match ranged {
        Ranged::Whole => (StatusCode::OK, 0, size),
        Ranged::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        Ranged::Unsatisfiable => {
            let mut r = text(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "the range is past the end",
            );
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            return r;
        }
    };
    let body = if *req.method() == Method::HEAD || len == 0 {
        empty()
    } else {
        stream_body(shared, index, start, len, peer)
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    let v = |s: &str| HeaderValue::from_str(s).expect("ascii header");
    h.insert(header::CONTENT_TYPE, v("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, v(&len.to_string()));
    h.insert(header::ACCEPT_RANGES, v("bytes"));
    h.insert(header::ETAG, v(&item.etag));
    h.insert(header::CACHE_CONTROL, v("no-store"));
    h.insert(
        header::CONTENT_DISPOSITION,
        v(&format!("attachment; filename=\"{}\"", item.name)),
    );
    if let Sha256State::Known(hex_digest) = item.sha256() {
        let b64 = |hex_digest: &str| {
            hex::decode(hex_digest)
                .ok()
                .map(|raw| base64::engine::general_purpose::STANDARD.encode(raw))
        };
        let mut members: Vec<String> = b64(&hex_digest)
            .map(|b| format!("sha-256=:{b}:"))
            .into_iter()
            .collect();
        if let Some(d) = item.content_digest() {
            let hex_part = d.strip_prefix(CONTENT_DIGEST_PREFIX).unwrap_or_default();
            members.extend(b64(hex_part).map(|b| format!("sha256-64k-4m=:{b}:")));
        }
        if !members.is_empty() {
            h.insert("repr-digest", v(&members.join(", ")));
        }
    }
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            v(&format!("bytes {start}-{}/{size}", start + len - 1)),
        );
    }
    r
}

/// The item's bytes `[start, start + len)`, read on the blocking pool and handed to
/// hyper through a channel of a few 1 MiB blocks: memory per response stays bounded
/// however slow the client is, and a client that goes away stops the reader. What it
/// delivered is recorded for `peer` when it ends, however it ends.
fn stream_body(shared: &Arc<Shared>, index: usize, start: u64, len: u64, peer: IpAddr) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(3);
    let content = Arc::clone(&shared.items[index].content);
    tokio::task::spawn_blocking(move || {
        let r = content.read_range(start, len, &mut |block| {
            tx.blocking_send(Ok(Bytes::from(block)))
                .map_err(|_| std::io::Error::other("the client went away"))
        });
        if let Err(e) = r {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let item = &shared.items[index];
    item.stats.active.fetch_add(1, Ordering::Relaxed);
    ChannelBody {
        rx,
        start,
        sent: 0,
        remaining: len,
        peer,
        shared: Arc::clone(shared),
        index,
        _in_flight: InFlight::new(shared),
    }
    .boxed()
}

struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    /// Where the response starts in the item, and the bytes handed to the connection.
    start: u64,
    sent: u64,
    remaining: u64,
    peer: IpAddr,
    shared: Arc<Shared>,
    index: usize,
    _in_flight: InFlight,
}

impl Drop for ChannelBody {
    fn drop(&mut self) {
        let item = &self.shared.items[self.index];
        item.delivered(self.peer, self.start, self.sent);
        item.stats.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, std::io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(block))) => {
                let n = block.len() as u64;
                let this = &mut *self;
                this.remaining = this.remaining.saturating_sub(n);
                this.sent += n;
                let stats = &this.shared.items[this.index].stats;
                stats.bytes_sent.fetch_add(n, Ordering::Relaxed);
                this.shared.touch();
                Poll::Ready(Some(Ok(Frame::data(block))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) if self.remaining > 0 => Poll::Ready(Some(Err(
                std::io::Error::other("the reader stopped before the end of the range"),
            ))),
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The index: what is published, with links that carry the token (the page itself was
/// reached with it), refreshed every two seconds for live progress. No script runs.
fn index_page(status: &Status, token: &str) -> String {
    let mut rows = String::new();
    for i in &status.items {
        let name = html_escape(&i.name);
        let sha = i
            .sha256
            .as_deref()
            .map_or_else(|| "computing…".to_string(), html_escape);
        rows.push_str(&format!(
            "<tr><td><a href=\"/{name}?token={token}\" download>{name}</a></td>\
             <td data-bytes=\"{size}\">{hsize}</td><td class=\"sha\"><code>{sha}</code></td>\
             <td>{sent}</td><td>{downloads}</td><td>{active}</td></tr>\n",
            size = i.size,
            hsize = human(i.size),
            sent = human(i.bytes_sent),
            downloads = i.downloads,
            active = i.active,
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"2\">\
         <title>snapport publish</title>\
         <style>body{{font-family:sans-serif}}td,th{{padding:2px 10px;text-align:left}}\
         .sha code{{font-size:smaller}}</style></head>\n<body>\
         <h1>snapport publish</h1>\n<table id=\"items\">\
         <tr><th>name</th><th>size</th><th>sha256</th><th>sent</th><th>downloads</th>\
         <th>streaming</th></tr>\n{rows}</table>\n\
         <p>{clients} client(s) connected.</p></body></html>\n",
        clients = status.clients,
    )
}
