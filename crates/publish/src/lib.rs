//! `--publish`: an export served over HTTP(S) to someone on another machine, and the
//! clients that take it (`snapport fetch`).
//!
//! The server ([`server`]) is hyper's HTTP/1.1 on a small tokio runtime, TLS by rustls
//! with a fresh self-signed certificate unless one is given ([`tls`]). Every request
//! needs the publish's random 256-bit token. Content is served with `Range`, `HEAD`, a
//! strong `ETag` and the SHA-256 once known, so clients resume and verify. The client
//! ([`fetch`]) resumes from what it already has and splits the rest into parallel ranged
//! streams. Like the engine, nothing here prints: the CLI reads [`server::Status`] and
//! [`snapport_core::progress::Progress`].

pub mod content;
pub mod error;
pub mod fetch;
pub mod range;
pub mod server;
pub mod tls;
pub mod upload;

pub use error::{Error, Result};

/// A fresh random token: 256 bits from the kernel's CSPRNG, as 64 hex digits.
pub fn new_token() -> Result<String> {
    let mut b = [0u8; 32];
    let mut f = std::fs::File::open("/dev/urandom")
        .map_err(|e| Error::io("opening /dev/urandom for a token", e))?;
    std::io::Read::read_exact(&mut f, &mut b)
        .map_err(|e| Error::io("reading /dev/urandom for a token", e))?;
    Ok(hex::encode(b))
}

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
