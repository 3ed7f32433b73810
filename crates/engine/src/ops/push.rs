//! Sends an image to an `upload --publish`, resuming from what the server already has.

use crate::{Context as _, Result};
use serde::{Serialize, Serializer};
use snapport_core::progress::Progress;
use snapport_publish::upload::{push as push_file, PushOptions};
use std::path::PathBuf;
use std::time::Instant;

/// What to send where, and how to trust the server.
#[derive(Clone, Debug)]
pub struct PushRequest {
    /// The image file (raw or raw.zst).
    pub file: PathBuf,
    /// The URL `upload --publish` printed (`https://HOST:PORT/NAME?token=TOKEN`).
    pub url: String,
    /// The SHA-256 to declare for the file (default: computed from it).
    pub sha256: Option<String>,
    /// The token, when the URL does not carry it.
    pub token: Option<String>,
    /// The server certificate's SHA-256 fingerprint as the publish printed it.
    pub fingerprint: Option<String>,
    /// At most this many bytes per second.
    pub limit_rate: Option<u64>,
}

/// What a push sent and what the server made of it. Its JSON is the server's own
/// summary of the import (what `upload` prints).
#[derive(Clone, Debug)]
pub struct PushReport {
    /// The file sent.
    pub file: PathBuf,
    /// Its size.
    pub size: u64,
    /// Bytes the server already had.
    pub resumed: u64,
    /// The server's summary of the import, as it sent it.
    pub server: String,
    /// How long it took.
    pub seconds: f64,
}

impl Serialize for PushReport {
    /// The server's JSON document (a string, should it not be JSON).
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match serde_json::from_str::<serde_json::Value>(&self.server) {
            Ok(doc) => doc.serialize(s),
            Err(_) => self.server.serialize(s),
        }
    }
}

/// Sends `req.file` to `req.url`; the server imports it and answers with its summary.
/// No engine: nothing of the local configuration is involved.
pub fn push(req: &PushRequest, progress: &mut dyn Progress) -> Result<PushReport> {
    let options = PushOptions {
        file: req.file.clone(),
        url: req.url.clone(),
        token: req.token.clone(),
        fingerprint: req
            .fingerprint
            .as_deref()
            .map(snapport_publish::tls::parse_fingerprint)
            .transpose()?,
        sha256: req.sha256.clone(),
        limit_rate: req.limit_rate,
    };
    let started = Instant::now();
    let summary =
        push_file(&options, progress).with_context(|| format!("pushing {}", req.file.display()))?;
    Ok(PushReport {
        file: req.file.clone(),
        size: summary.size,
        resumed: summary.resumed,
        server: summary.server.trim().to_string(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
