//! Downloads what `download --publish` serves: resumable, in parallel ranged streams,
//! verified by SHA-256 before it appears under its name.

use crate::Engine;
use crate::{Context as _, Result};
use serde::Serialize;
use snapport_core::progress::Progress;
use snapport_publish::fetch::{fetch as fetch_url, FetchOptions};
use std::path::PathBuf;
use std::time::Instant;

/// Where to fetch from, into what, and how to trust the server.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    /// The URL the publish printed (`https://HOST:PORT/NAME?token=TOKEN`).
    pub url: String,
    /// The output file; until verified the bytes are in FILE.part.
    pub output: PathBuf,
    /// Replace an existing output file once the download is verified.
    pub force: bool,
    /// Ranged streams at once.
    pub parallel: usize,
    /// The token, when the URL does not carry it.
    pub token: Option<String>,
    /// The server certificate's SHA-256 fingerprint as the publish printed it; without
    /// it, the certificate must be signed by a CA in the system roots.
    pub fingerprint: Option<String>,
    /// At most this many bytes per second.
    pub limit_rate: Option<u64>,
}

/// What a fetch received: the JSON summary of `fetch --output-format json`.
#[derive(Clone, Debug, Serialize)]
pub struct FetchReport {
    /// The output file.
    pub output: PathBuf,
    /// Its size.
    pub size: u64,
    /// Bytes already there from an earlier run.
    pub resumed: u64,
    /// Bytes received in this run.
    pub received: u64,
    /// The digest verified against the server's.
    pub digest: String,
    /// How long it took.
    pub seconds: f64,
}

/// Fetches `req.url` into `req.output`, resuming what an earlier run left in FILE.part.
pub fn fetch(
    engine: &Engine,
    req: &FetchRequest,
    progress: &mut dyn Progress,
) -> Result<FetchReport> {
    crate::output::check(&engine.config, &req.output, &[], req.force)?;
    crate::interrupt::note(&format!(
        "nothing was written under {}; what arrived is kept beside it (.part): run the \
         same command again to resume",
        req.output.display()
    ));
    let options = FetchOptions {
        url: req.url.clone(),
        output: req.output.clone(),
        token: req.token.clone(),
        fingerprint: parse_fingerprint(req.fingerprint.as_deref())?,
        parallel: req.parallel,
        limit_rate: req.limit_rate,
        replace: req.force,
    };
    let started = Instant::now();
    let summary = fetch_url(&options, progress)
        .with_context(|| format!("fetching into {}", req.output.display()))?;
    crate::interrupt::clear_note();
    Ok(FetchReport {
        output: req.output.clone(),
        size: summary.size,
        resumed: summary.resumed,
        received: summary.received,
        digest: summary.digest,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A fingerprint as the publish printed it, as bytes.
fn parse_fingerprint(text: Option<&str>) -> Result<Option<[u8; 32]>> {
    Ok(text
        .map(snapport_publish::tls::parse_fingerprint)
        .transpose()?)
}
