//! A real S3 server for the tests: s3s-fs (crates.io, the file-system backend of the s3s
//! S3 service library), in this process, on a loopback port, over a temporary folder,
//! with SigV4 authentication of one access key.
//!
//! How it behaves, as its source (s3s-fs 0.14.1, src/s3.rs and src/fs.rs) has it, quirks
//! included, which the tests rely on or work around:
//! - an object is the file ROOT/BUCKET/KEY, written under a temporary name and renamed
//!   when complete; a bucket is a folder of ROOT;
//! - a multipart upload is `.upload-ID.json` in ROOT, its parts `.upload_id-ID.part-N`
//!   there too, all removed by AbortMultipartUpload or CompleteMultipartUpload;
//! - ListMultipartUploads is not implemented (501 NotImplemented): an upload left by a
//!   killed client can be found only by the client's own record, or in ROOT;
//! - CompleteMultipartUpload refuses a part under 5 MiB but the last (EntityTooSmall);
//! - a part's ETag is the MD5 of its bytes.
//!
//! Every request's operation name and key are recorded (an access check that lets every signed
//! request through, as s3s's default one does), so a test can see a multipart upload
//! happen. Faults a real service has, on demand: an operation refused (403 AccessDenied,
//! as a bucket policy or a quota answers), and a completion that assembles the object but
//! answers 500 InternalError (AWS documents that a CompleteMultipartUpload may fail after
//! its work is done, and a lost answer looks the same to a client).
#![allow(dead_code)]

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const ACCESS_KEY: &str = "snapport-test";
pub const SECRET_KEY: &str = "snapport-test-secret-key";
pub const BUCKET: &str = "backups";

pub struct S3Server {
    pub root: tempfile::TempDir,
    pub port: u16,
    ops: Arc<Mutex<Vec<String>>>,
    faults: Arc<Mutex<Faults>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Faults {
    /// Operations (`UploadPart`) refused before they run.
    refused: Vec<String>,
    /// Completions that assemble the object, then answer 500.
    fail_completion_answers: bool,
}

struct Recorder {
    ops: Arc<Mutex<Vec<String>>>,
    faults: Arc<Mutex<Faults>>,
}

#[async_trait::async_trait]
impl S3Access for Recorder {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> s3s::S3Result<()> {
        let key = cx.s3_path().get_object_key().unwrap_or_default();
        let op = cx.s3_op().name();
        self.ops.lock().unwrap().push(format!("{op} {key}"));
        if self.faults.lock().unwrap().refused.iter().any(|r| r == op) {
            return Err(s3s::s3_error!(AccessDenied, "Access Denied"));
        }
        match cx.credentials() {
            Some(_) => Ok(()),
            None => Err(s3s::s3_error!(AccessDenied, "Signature is required")),
        }
    }
}

/// The S3 service with the faults of [`Faults`] that happen after an operation ran.
#[derive(Clone)]
struct Faulty {
    service: s3s::service::S3Service,
    faults: Arc<Mutex<Faults>>,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Faulty {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        // CompleteMultipartUpload: a POST to the key with the upload's id.
        let completion = req.method() == http::Method::POST
            && req.uri().query().is_some_and(|q| q.contains("uploadId="));
        let fail_answer = completion && self.faults.lock().unwrap().fail_completion_answers;
        let service = self.service.clone();
        Box::pin(async move {
            let answer = service.call(req.map(s3s::Body::from)).await?;
            // Only a completion that took effect: s3s's own refusals stay as they are.
            if !fail_answer || !answer.status().is_success() {
                return Ok(answer);
            }
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>";
            Ok(http::Response::builder()
                .status(500)
                .header("content-type", "application/xml")
                .body(s3s::Body::from(body.to_owned()))
                .unwrap())
        })
    }
}

impl S3Server {
    /// A server with the bucket [`BUCKET`].
    pub fn start() -> S3Server {
        let root = tempfile::Builder::new()
            .prefix("snapport-s3-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let ops = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Mutex::new(Faults::default()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let dir = root.path().to_path_buf();
        let recorder = Recorder {
            ops: Arc::clone(&ops),
            faults: Arc::clone(&faults),
        };
        let faults_after = Arc::clone(&faults);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let fs = s3s_fs::FileSystem::new(&dir).unwrap();
                let mut b = S3ServiceBuilder::new(fs);
                b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
                b.set_access(recorder);
                let service = Faulty {
                    service: b.build(),
                    faults: faults_after,
                };
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                let http = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            let conn = http
                                .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                                .into_owned();
                            tokio::spawn(async move {
                                let _ = conn.await;
                            });
                        }
                        _ = &mut stopped => break,
                    }
                }
            });
        });
        let port = port_rx.recv().unwrap();
        S3Server {
            root,
            port,
            ops,
            faults,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a snapport needs to use this server (and nothing of the
    /// machine's own AWS files).
    pub fn env(&self, home: &Path) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            (
                "AWS_CONFIG_FILE",
                home.join("no-aws-config").display().to_string(),
            ),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                home.join("no-aws-credentials").display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The file holding object `key` of [`BUCKET`].
    pub fn object(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    /// The multipart uploads the server still holds (its `.upload*` files).
    pub fn unfinished(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".upload"))
            .collect();
        names.sort();
        names
    }

    /// Refuses operation `op` (`UploadPart`, `CompleteMultipartUpload`) from now on with
    /// 403 AccessDenied, before it does anything.
    pub fn refuse(&self, op: &str) {
        self.faults.lock().unwrap().refused.push(op.to_owned());
    }

    /// From now on a CompleteMultipartUpload assembles the object, then answers 500.
    pub fn fail_completion_answers(&self) {
        self.faults.lock().unwrap().fail_completion_answers = true;
    }

    /// No more faults.
    pub fn heal(&self) {
        *self.faults.lock().unwrap() = Faults::default();
    }

    /// The operations asked so far, each with its key (`PutObject KEY`, `UploadPart
    /// KEY`, `HeadBucket `), and forgets them.
    pub fn take_ops(&self) -> Vec<String> {
        std::mem::take(&mut *self.ops.lock().unwrap())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
