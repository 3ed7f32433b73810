//! The granted gRPC endpoint: the host performs unary and server-streaming calls for a
//! plugin on the one endpoint its pool names (a CSI driver's socket), and nothing else.
//! Messages are opaque bytes: the plugin encodes and decodes protobuf itself, so the host
//! needs only gRPC's framing over HTTP/2 (h2), not the service definitions.
//!
//! What a plugin cannot do: name the endpoint (the pool does), reach a service outside
//! CSI's (`/csi.v1.Identity|Controller|Node|SnapshotMetadata/...`), send or receive a
//! message over 16 MiB, keep more than 16 streams open, or wait forever (every call and
//! every message has a deadline). A server that breaks the protocol (bad framing, a
//! stream cut before its status, a non-zero `grpc-status`) is an error naming it.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::runtime::Runtime;

pub use crate::grpc_frame::MAX_MESSAGE;
/// Streams one instance may hold open.
const MAX_STREAMS: usize = 16;
/// How long connecting, a unary call, or waiting for the next streamed message may take.
const DEADLINE: Duration = Duration::from_secs(30);
/// The CSI services a plugin may call.
const SERVICES: &[&str] = &[
    "csi.v1.Identity",
    "csi.v1.Controller",
    "csi.v1.Node",
    "csi.v1.SnapshotMetadata",
];

/// Where the pool's endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

/// `unix:///abs/path.sock` or `tcp://IP:PORT` (an address, never a name to resolve).
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(format!("{s}: a unix endpoint is unix:///absolute/path"));
        }
        return Ok(Endpoint::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = s.strip_prefix("tcp://") {
        return addr
            .parse()
            .map(Endpoint::Tcp)
            .map_err(|_| format!("{s}: a tcp endpoint is tcp://IP:PORT"));
    }
    Err(format!(
        "{s}: a gRPC endpoint is unix:///path.sock or tcp://IP:PORT"
    ))
}

/// Whether `method` is a CSI method: `/csi.v1.SERVICE/Name`.
pub fn allowed_method(method: &str) -> bool {
    let Some((service, name)) = method.strip_prefix('/').and_then(|m| m.split_once('/')) else {
        return false;
    };
    SERVICES.contains(&service)
        && !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Why a call failed: the plugin may not make it, or it went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    Denied(String),
    Failed(String),
}

/// A server-streaming call in progress.
struct Stream {
    /// `None`: the server answered with its status alone (no messages).
    body: Option<h2::RecvStream>,
    buf: BytesMut,
    done: bool,
}

/// The pool's endpoint and the calls under way on it.
pub struct GrpcClient {
    endpoint: Endpoint,
    runtime: Runtime,
    streams: HashMap<u32, Stream>,
    next_id: u32,
}

/// Splits the next whole message off `buf`, if one is there.
fn next_frame(buf: &mut BytesMut, method: &str) -> Result<Option<Bytes>, String> {
    match crate::grpc_frame::message_len(buf).map_err(|e| format!("{method}: {e}"))? {
        None => Ok(None),
        Some(len) => {
            buf.advance(5);
            Ok(Some(buf.split_to(len).freeze()))
        }
    }
}

/// The call's outcome from the trailers (or headers, for a trailers-only answer).
fn status(method: &str, headers: &http::HeaderMap) -> Result<(), String> {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok());
    match code {
        Some(0) => Ok(()),
        Some(c) => {
            let msg = headers
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let name = match c {
                1 => "CANCELLED",
                3 => "INVALID_ARGUMENT",
                4 => "DEADLINE_EXCEEDED",
                5 => "NOT_FOUND",
                6 => "ALREADY_EXISTS",
                7 => "PERMISSION_DENIED",
                9 => "FAILED_PRECONDITION",
                11 => "OUT_OF_RANGE",
                12 => "UNIMPLEMENTED",
                13 => "INTERNAL",
                14 => "UNAVAILABLE",
                _ => "status",
            };
            Err(format!("{method}: {name} ({c}) {msg}")
                .trim_end()
                .to_string())
        }
        None => Err(format!(
            "{method}: the server ended the call without a grpc-status"
        )),
    }
}

impl GrpcClient {
    pub fn new(endpoint: Endpoint) -> Result<GrpcClient, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("starting the gRPC client: {e}"))?;
        Ok(GrpcClient {
            endpoint,
            runtime,
            streams: HashMap::new(),
            next_id: 1,
        })
    }

    /// Connects, sends the request, and returns the response body once the headers say
    /// the call is under way; a trailers-only answer is its status.
    async fn start(
        endpoint: &Endpoint,
        method: &str,
        request: &[u8],
    ) -> Result<Option<h2::RecvStream>, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("{method}: {what}: {e}");
        let mut send = match endpoint {
            Endpoint::Unix(path) => {
                let io = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| fail(&format!("connecting to {}", path.display()), &e))?;
                let (send, conn) = h2::client::handshake(io)
                    .await
                    .map_err(|e| fail("HTTP/2 handshake", &e))?;
                tokio::spawn(conn);
                send
            }
            Endpoint::Tcp(addr) => {
                let io = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| fail(&format!("connecting to {addr}"), &e))?;
                let (send, conn) = h2::client::handshake(io)
                    .await
                    .map_err(|e| fail("HTTP/2 handshake", &e))?;
                tokio::spawn(conn);
                send
            }
        };
        let req = http::Request::post(format!("http://localhost{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| fail("building the request", &e))?;
        send = send.ready().await.map_err(|e| fail("sending", &e))?;
        let (response, mut body) = send
            .send_request(req, false)
            .map_err(|e| fail("sending", &e))?;
        let mut framed = Vec::with_capacity(5 + request.len());
        framed.push(0);
        framed.extend_from_slice(&(request.len() as u32).to_be_bytes());
        framed.extend_from_slice(request);
        body.send_data(framed.into(), true)
            .map_err(|e| fail("sending", &e))?;
        let response = response.await.map_err(|e| fail("the response", &e))?;
        let (parts, recv) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(format!(
                "{method}: the server answered HTTP {}",
                parts.status
            ));
        }
        if parts.headers.contains_key("grpc-status") {
            status(method, &parts.headers)?;
            return Ok(None);
        }
        Ok(Some(recv))
    }

    /// Reads the next message of `s`, or its end (checking the status).
    async fn next(s: &mut Stream, method: &str) -> Result<Option<Bytes>, String> {
        loop {
            if let Some(m) = next_frame(&mut s.buf, method)? {
                return Ok(Some(m));
            }
            let Some(body) = s.body.as_mut().filter(|_| !s.done) else {
                return Ok(None);
            };
            match body.data().await {
                Some(Ok(chunk)) => {
                    let n = chunk.len();
                    s.buf.extend_from_slice(&chunk);
                    let _ = body.flow_control().release_capacity(n);
                    if s.buf.len() > MAX_MESSAGE + 5 {
                        return Err(format!(
                            "{method}: a message over the {MAX_MESSAGE}-byte limit"
                        ));
                    }
                }
                Some(Err(e)) => return Err(format!("{method}: the stream broke: {e}")),
                None => {
                    if !s.buf.is_empty() {
                        return Err(format!(
                            "{method}: the stream ended inside a message ({} bytes left over)",
                            s.buf.len()
                        ));
                    }
                    let trailers = body
                        .trailers()
                        .await
                        .map_err(|e| format!("{method}: the stream broke: {e}"))?;
                    match trailers {
                        Some(t) => status(method, &t)?,
                        None => {
                            return Err(format!(
                                "{method}: the stream was cut before the server said how the call ended"
                            ))
                        }
                    }
                    s.done = true;
                    return Ok(None);
                }
            }
        }
    }

    fn check(method: &str, request: &[u8]) -> Result<(), CallError> {
        if !allowed_method(method) {
            return Err(CallError::Denied(format!(
                "{method}: only CSI methods (/csi.v1.Identity|Controller|Node|SnapshotMetadata/...) are granted"
            )));
        }
        if request.len() > MAX_MESSAGE {
            return Err(CallError::Denied(format!(
                "{method}: a {}-byte request, over the {MAX_MESSAGE}-byte limit",
                request.len()
            )));
        }
        Ok(())
    }

    /// A unary call: exactly one message back, and an OK status.
    pub fn unary(&mut self, method: &str, request: &[u8]) -> Result<Vec<u8>, CallError> {
        Self::check(method, request)?;
        let endpoint = self.endpoint.clone();
        let call = async {
            let Some(body) = Self::start(&endpoint, method, request).await? else {
                return Err(format!("{method}: the server answered no message"));
            };
            let mut s = Stream {
                body: Some(body),
                buf: BytesMut::new(),
                done: false,
            };
            let first = Self::next(&mut s, method).await?;
            let Some(reply) = first else {
                return Err(format!("{method}: the server answered no message"));
            };
            if Self::next(&mut s, method).await?.is_some() {
                return Err(format!(
                    "{method}: the server answered a unary call with several messages"
                ));
            }
            Ok(reply.to_vec())
        };
        self.runtime
            .block_on(async { tokio::time::timeout(DEADLINE, call).await })
            .map_err(|_| {
                CallError::Failed(format!(
                    "{method}: no answer within {} s",
                    DEADLINE.as_secs()
                ))
            })?
            .map_err(CallError::Failed)
    }

    /// Starts a server-streaming call; its messages come from [`GrpcClient::next_message`].
    pub fn start_stream(&mut self, method: &str, request: &[u8]) -> Result<u32, CallError> {
        Self::check(method, request)?;
        if self.streams.len() >= MAX_STREAMS {
            return Err(CallError::Denied(format!(
                "{method}: {MAX_STREAMS} streams are open already; close one first"
            )));
        }
        let endpoint = self.endpoint.clone();
        let body = self
            .runtime
            .block_on(async {
                tokio::time::timeout(DEADLINE, Self::start(&endpoint, method, request)).await
            })
            .map_err(|_| {
                CallError::Failed(format!(
                    "{method}: no answer within {} s",
                    DEADLINE.as_secs()
                ))
            })?
            .map_err(CallError::Failed)?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        // Trailers-only and OK (`None`): a stream with no messages.
        let stream = Stream {
            body,
            buf: BytesMut::new(),
            done: false,
        };
        self.streams.insert(id, stream);
        Ok(id)
    }

    /// The next message of stream `id`, or `None` at its (successful) end.
    pub fn next_message(&mut self, id: u32) -> Result<Option<Vec<u8>>, CallError> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(CallError::Denied(format!("no open gRPC stream {id}")));
        };
        let r = self
            .runtime
            .block_on(async { tokio::time::timeout(DEADLINE, Self::next(s, "the stream")).await });
        match r {
            Ok(Ok(Some(m))) => Ok(Some(m.to_vec())),
            Ok(Ok(None)) => {
                self.streams.remove(&id);
                Ok(None)
            }
            Ok(Err(e)) => {
                self.streams.remove(&id);
                Err(CallError::Failed(e))
            }
            Err(_) => {
                self.streams.remove(&id);
                Err(CallError::Failed(format!(
                    "stream {id}: no message within {} s",
                    DEADLINE.as_secs()
                )))
            }
        }
    }

    /// Ends stream `id` early (dropping it resets the HTTP/2 stream).
    pub fn close_stream(&mut self, id: u32) {
        self.streams.remove(&id);
    }
}
