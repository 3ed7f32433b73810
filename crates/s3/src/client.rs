//! The requests snapport makes of an S3 server, each signed (AWS Signature V4, as a
//! presigned URL: rusty-s3) and sent with the blocking reqwest client. Error answers
//! become one line that says what to do; transient failures (a dropped connection, a
//! 500 or 503) are tried again a few times, since a part of an upload or a range of a
//! download is held in memory and can be sent again.

use crate::settings::{Addressing, Settings};
use crate::{xml, Error, ErrorKind, ObjectPath, Result};
use bytes::Bytes;
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::StatusCode;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::io::Read;
use std::time::Duration;

/// How long a signed request stays valid: it is signed just before it is sent.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// Tries of a request that failed in passing (the first one included).
const TRIES: u32 = 4;
/// How long a request may take: two minutes, and a second more per MiB it carries (a
/// connection slower than 1 MiB/s fails, and is tried again).
fn deadline(bytes: usize) -> Duration {
    Duration::from_secs(120 + (bytes >> 20) as u64)
}

/// An answer's body read for an error message or a small document.
const MAX_ANSWER: u64 = 1 << 20;

/// A client for one bucket.
pub struct Client {
    http: reqwest::blocking::Client,
    bucket: Bucket,
    credentials: Option<Credentials>,
    settings: Settings,
}

/// What a request was, for messages: "reading s3://b/k".
fn what(doing: &str, path: &str) -> String {
    format!("{doing} {path}")
}

impl Client {
    /// A client for `bucket` with `settings`.
    pub fn new(settings: &Settings, bucket: &str) -> Result<Client> {
        let style = match settings.addressing {
            Addressing::Path => UrlStyle::Path,
            Addressing::Virtual => UrlStyle::VirtualHost,
        };
        let b = Bucket::new(
            settings.endpoint.clone(),
            style,
            bucket.to_owned(),
            settings.region.clone(),
        )
        .map_err(|e| {
            Error::new(
                ErrorKind::Settings,
                format!(
                    "bucket {bucket} at {}: {e:?} (an IP address endpoint needs path-style addressing)",
                    settings.endpoint
                ),
            )
        })?;
        let http = reqwest::blocking::Client::builder()
            // Per request instead (see `deadline`): a part can be large.
            .timeout(None)
            .connect_timeout(Duration::from_secs(30))
            // A redirect is S3 saying the bucket lives in another region: said, not
            // followed (the signature is for this host).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::new(ErrorKind::Other, format!("starting the HTTP client: {e}")))?;
        Ok(Client {
            http,
            bucket: b,
            credentials: settings.credentials.as_ref().map(|(k, s, t)| match t {
                Some(t) => Credentials::new_with_token(k.clone(), s.clone(), t.clone()),
                None => Credentials::new(k.clone(), s.clone()),
            }),
            settings: settings.clone(),
        })
    }

    /// The client's bucket.
    pub fn bucket(&self) -> &str {
        self.bucket.name()
    }

    /// The endpoint the client talks to (for journal entries and messages).
    pub fn endpoint(&self) -> &str {
        self.settings.endpoint.as_str()
    }

    fn path(&self, key: &str) -> String {
        ObjectPath {
            bucket: self.bucket.name().to_owned(),
            key: key.to_owned(),
        }
        .to_string()
    }

    /// Sends the request `build` makes, again after a transient failure; an error answer
    /// becomes an [`Error`] saying `doing`.
    fn send(&self, doing: &str, build: &dyn Fn() -> RequestBuilder) -> Result<Response> {
        let failed = |e: reqwest::Error| {
            Error::new(
                ErrorKind::Other,
                // Never the URL: a presigned one carries the key id and a session token.
                format!(
                    "{doing}: {} ({})",
                    one_line(&e.without_url()),
                    self.settings.endpoint
                ),
            )
        };
        let mut tries = 0;
        loop {
            tries += 1;
            let last = tries >= TRIES;
            let mut request = build().build().map_err(failed)?;
            // What the request carries, or what a range brings back at most.
            let carries = request
                .body()
                .and_then(|b| b.as_bytes())
                .map_or(0, <[u8]>::len)
                .max(8 << 20);
            *request.timeout_mut() = Some(deadline(carries));
            // A POST (start or complete an upload) is sent once, unless it surely never
            // arrived: a second start would leave an upload no one records, a second
            // completion fails on the upload the first one completed.
            let resendable = request.method() != reqwest::Method::POST;
            match self.http.execute(request) {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) => {
                    let status = r.status();
                    let transient =
                        status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                    if transient && resendable && !last {
                        std::thread::sleep(Duration::from_millis(250 << tries));
                        continue;
                    }
                    return Err(self.refusal(doing, r));
                }
                Err(e)
                    if !last
                        && (e.is_connect()
                            || (resendable && (e.is_timeout() || e.is_request()))) =>
                {
                    std::thread::sleep(Duration::from_millis(250 << tries));
                }
                Err(e) => return Err(failed(e)),
            }
        }
    }

    /// The error an answer that is not a success says, in words a user acts on.
    fn refusal(&self, doing: &str, r: Response) -> Error {
        let status = r.status();
        let region = r
            .headers()
            .get("x-amz-bucket-region")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let (true, Some(region)) = (
            status.is_redirection() || status == StatusCode::BAD_REQUEST,
            &region,
        ) {
            if *region != self.settings.region {
                return Error::new(
                    ErrorKind::Settings,
                    format!(
                        "{doing}: bucket {} is in region {region}, not {}; set AWS_REGION={region}",
                        self.bucket.name(),
                        self.settings.region
                    ),
                );
            }
        }
        let mut body = String::new();
        let _ = r.take(MAX_ANSWER).read_to_string(&mut body);
        let (code, message) = match xml::error(&body) {
            Some((code, message)) => (code, message),
            None => (String::new(), None),
        };
        let said = match &message {
            Some(m) if !m.is_empty() => format!("{code}: {m}"),
            _ if !code.is_empty() => code.clone(),
            _ => format!("the server answered {status}"),
        };
        let bucket = self.bucket.name();
        let (kind, advice) = match (code.as_str(), status) {
            ("NoSuchBucket", _) => (ErrorKind::NotFound, format!("no bucket {bucket} at {}", self.settings.endpoint)),
            ("NoSuchKey", _) => (ErrorKind::NotFound, "no such object".to_owned()),
            ("NoSuchUpload", _) => (ErrorKind::NotFound, "the upload is gone (aborted by another export of the same key?)".to_owned()),
            ("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "InvalidToken" | "ExpiredToken", _)
            | (_, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED) => (
                ErrorKind::Denied,
                format!(
                    "the server refused the credentials from {} ({said}); check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
                    self.settings.credentials_from
                ),
            ),
            ("NotImplemented", _) | (_, StatusCode::NOT_IMPLEMENTED) => (ErrorKind::NotImplemented, said.clone()),
            ("PreconditionFailed", _) | (_, StatusCode::PRECONDITION_FAILED) => (
                ErrorKind::Other,
                "the object changed while it was read; read it again".to_owned(),
            ),
            (_, StatusCode::NOT_FOUND) => (ErrorKind::NotFound, "not found".to_owned()),
            _ => (ErrorKind::Other, said.clone()),
        };
        let text = if advice == said || advice.contains(&said) {
            advice
        } else if matches!(kind, ErrorKind::NotFound) && !said.starts_with("the server") {
            format!("{advice} ({said})")
        } else {
            advice
        };
        Error::new(kind, format!("{doing}: {text}"))
    }

    fn signed<'a>(&self, action: impl S3Action<'a>) -> url::Url {
        action.sign(SIGNED_FOR)
    }

    /// Whether the bucket exists and the credentials may use it.
    pub fn check_bucket(&self) -> Result<()> {
        let doing = format!("opening bucket s3://{}", self.bucket.name());
        let r = self.send(&doing, &|| {
            self.http
                .head(self.signed(self.bucket.head_bucket(self.credentials.as_ref())))
        });
        match r {
            // HEAD answers carry no body: a 404 on the bucket is the bucket.
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "{doing}: no bucket {} at {}",
                    self.bucket.name(),
                    self.settings.endpoint
                ),
            )),
            other => other.map(|_| ()),
        }
    }

    /// The size and ETag of object `key`, or `None` if there is none.
    pub fn look(&self, key: &str) -> Result<Option<(u64, Option<String>)>> {
        let path = self.path(key);
        let r = self.send(&what("looking at", &path), &|| {
            self.http
                .head(self.signed(self.bucket.head_object(self.credentials.as_ref(), key)))
        });
        let r = match r {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let header = |name| {
            r.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let size = header(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Other,
                    format!("looking at {path}: the answer has no Content-Length"),
                )
            })?;
        Ok(Some((size, header(reqwest::header::ETAG))))
    }

    /// `len` bytes of object `key` from `offset`; exactly that many, or an error. With
    /// `etag`, only from the object that has it (`If-Match`).
    pub fn read_range(
        &self,
        key: &str,
        offset: u64,
        len: usize,
        etag: Option<&str>,
    ) -> Result<Vec<u8>> {
        let path = self.path(key);
        let doing = format!("reading {path} at {offset}");
        let mut tries = 0;
        loop {
            tries += 1;
            let range = format!("bytes={offset}-{}", offset + len as u64 - 1);
            let r = self.send(&doing, &|| {
                let get = self.bucket.get_object(self.credentials.as_ref(), key);
                let request = self
                    .http
                    .get(self.signed(get))
                    .header(reqwest::header::RANGE, &range);
                match etag {
                    Some(tag) => request.header(reqwest::header::IF_MATCH, tag),
                    None => request,
                }
            })?;
            if r.status() != StatusCode::PARTIAL_CONTENT
                && !(offset == 0 && r.status() == StatusCode::OK)
            {
                return Err(Error::new(
                    ErrorKind::Other,
                    format!("{doing}: the server ignored the range ({})", r.status()),
                ));
            }
            let mut buf = Vec::with_capacity(len);
            match r.take(len as u64 + 1).read_to_end(&mut buf) {
                Ok(_) if buf.len() == len => return Ok(buf),
                Ok(_) if buf.len() > len && offset == 0 => {
                    buf.truncate(len);
                    return Ok(buf);
                }
                Ok(_) => {
                    return Err(Error::new(
                        ErrorKind::Other,
                        format!(
                            "{doing}: {} bytes came, {len} were asked (did the object change?)",
                            buf.len()
                        ),
                    ))
                }
                // The body broke off: the range is asked again.
                Err(e) if tries < TRIES => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(250 << tries));
                }
                Err(e) => return Err(Error::new(ErrorKind::Other, format!("{doing}: {e}"))),
            }
        }
    }

    /// A small object whole (a sidecar), at most `cap` bytes; `None` if there is none.
    pub fn read_small(&self, key: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let path = self.path(key);
        let r = self.send(&what("reading", &path), &|| {
            self.http
                .get(self.signed(self.bucket.get_object(self.credentials.as_ref(), key)))
        });
        let r = match r {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = Vec::new();
        r.take(cap + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::new(ErrorKind::Other, format!("reading {path}: {e}")))?;
        if buf.len() as u64 > cap {
            return Err(Error::new(
                ErrorKind::Other,
                format!("reading {path}: larger than the {cap} bytes it can be"),
            ));
        }
        Ok(Some(buf))
    }

    /// Writes object `key` in one request (a sidecar; an output smaller than a part).
    pub fn write(&self, key: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(key);
        self.send(&what("writing", &path), &|| {
            self.http
                .put(self.signed(self.bucket.put_object(self.credentials.as_ref(), key)))
                .body(bytes.clone())
        })?;
        Ok(())
    }

    /// Removes object `key`; one that is not there is no error.
    pub fn remove(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match self.send(&what("removing", &path), &|| {
            self.http
                .delete(self.signed(self.bucket.delete_object(self.credentials.as_ref(), key)))
        }) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Starts a multipart upload to `key`: its upload id.
    pub fn start_upload(&self, key: &str) -> Result<String> {
        let path = self.path(key);
        let doing = what("starting the upload to", &path);
        let r = self.send(&doing, &|| {
            self.http.post(
                self.signed(
                    self.bucket
                        .create_multipart_upload(self.credentials.as_ref(), key),
                ),
            )
        })?;
        let body = body_text(r, &doing)?;
        xml::element(&body, "UploadId")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Other,
                    format!("{doing}: the answer has no UploadId"),
                )
            })
    }

    /// Sends part `number` (from 1) of upload `id`: its ETag.
    pub fn send_part(&self, key: &str, id: &str, number: u16, body: Bytes) -> Result<String> {
        let doing = format!("sending part {number} of {}", self.path(key));
        let r =
            self.send(&doing, &|| {
                self.http
                    .put(self.signed(self.bucket.upload_part(
                        self.credentials.as_ref(),
                        key,
                        number,
                        id,
                    )))
                    .body(body.clone())
            })?;
        r.headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Error::new(ErrorKind::Other, format!("{doing}: the answer has no ETag")))
    }

    /// Completes upload `id` from its parts' ETags (part 1 first): the object appears.
    pub fn complete_upload(&self, key: &str, id: &str, etags: &[String]) -> Result<()> {
        let doing = format!("completing the upload to {}", self.path(key));
        let action = self.bucket.complete_multipart_upload(
            self.credentials.as_ref(),
            key,
            id,
            etags.iter().map(String::as_str),
        );
        let url = self.signed(action.clone());
        let body = action.body();
        let r = self.send(&doing, &|| self.http.post(url.clone()).body(body.clone()))?;
        // S3 answers 200 before the object is assembled and may put an error in the body
        // of that 200 (AWS documents this); only a CompleteMultipartUploadResult is done.
        let text = body_text(r, &doing)?;
        if let Some((code, message)) = xml::error(&text) {
            return Err(Error::new(
                ErrorKind::Other,
                format!("{doing}: {code}: {}", message.unwrap_or_default()),
            ));
        }
        if !text.contains("<CompleteMultipartUploadResult") {
            return Err(Error::new(
                ErrorKind::Other,
                format!("{doing}: the answer is not a CompleteMultipartUploadResult"),
            ));
        }
        Ok(())
    }

    /// Aborts upload `id` to `key`: its parts go. One already gone is no error.
    pub fn abort_upload(&self, key: &str, id: &str) -> Result<()> {
        let doing = format!("aborting the unfinished upload to {}", self.path(key));
        match self.send(&doing, &|| {
            self.http
                .delete(self.signed(self.bucket.abort_multipart_upload(
                    self.credentials.as_ref(),
                    key,
                    id,
                )))
        }) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The ids of unfinished multipart uploads to exactly `key` (ListMultipartUploads,
    /// every page). `None` where the server does not list them (s3s-fs, for one).
    pub fn unfinished_uploads(&self, key: &str) -> Result<Option<Vec<String>>> {
        let doing = format!("listing unfinished uploads to {}", self.path(key));
        let mut ids = Vec::new();
        let mut marker: Option<(String, String)> = None;
        for _ in 0..1000 {
            let mut query: Vec<(&str, &str)> = Vec::new();
            if let Some((k, _)) = &marker {
                query.push(("key-marker", k));
            }
            query.push(("prefix", key));
            if let Some((_, u)) = &marker {
                query.push(("upload-id-marker", u));
            }
            query.push(("uploads", ""));
            let url = match &self.credentials {
                Some(c) => rusty_s3::signing::sign(
                    &jiff::Timestamp::now(),
                    rusty_s3::Method::Get,
                    self.bucket.base_url().clone(),
                    c.key(),
                    c.secret(),
                    c.token(),
                    self.bucket.region(),
                    SIGNED_FOR.as_secs(),
                    query.iter().copied(),
                    std::iter::empty(),
                ),
                None => {
                    let mut u = self.bucket.base_url().clone();
                    u.query_pairs_mut().extend_pairs(query.iter().copied());
                    u
                }
            };
            let r = match self.send(&doing, &|| self.http.get(url.clone())) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::NotImplemented => return Ok(None),
                Err(e) => return Err(e),
            };
            let text = body_text(r, &doing)?;
            let page = xml::uploads_page(&text).ok_or_else(|| {
                Error::new(
                    ErrorKind::Other,
                    format!("{doing}: the answer is not a list of uploads"),
                )
            })?;
            ids.extend(
                page.uploads
                    .into_iter()
                    .filter(|(k, _)| k == key)
                    .map(|(_, id)| id),
            );
            match page.next {
                Some(next) if Some(&next) != marker.as_ref() => marker = Some(next),
                _ => return Ok(Some(ids)),
            }
        }
        Ok(Some(ids))
    }
}

/// An answer's body as text, at most [`MAX_ANSWER`] bytes.
fn body_text(r: Response, doing: &str) -> Result<String> {
    let mut text = String::new();
    r.take(MAX_ANSWER)
        .read_to_string(&mut text)
        .map_err(|e| Error::new(ErrorKind::Other, format!("{doing}: {e}")))?;
    Ok(text)
}

/// A reqwest error and its causes on one line.
fn one_line(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}
