//! TRANSITIONAL: the publish server flags of the engine's own `upload --publish`, until
//! upload is an operation under a thin CLI command. Everything else of publishing is in
//! [`crate::serve`] and [`crate::ops::publish`].

use crate::serve::{ServeOptions, Started};
use crate::Result;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::serve::{sh, show_duration};

/// How a publish server listens and protects itself.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Where to listen, HOST:PORT (port 0 picks a free one).
    #[arg(
        long = "address",
        id = "listen",
        default_value = "127.0.0.1:0",
        requires = "publish"
    )]
    pub listen: String,
    /// Stop after this long without an access (30s, 10m, 2h, 1d).
    #[arg(long, default_value = "15m", value_parser = crate::serve::parse_duration, requires = "publish")]
    pub ttl: Duration,
    /// TLS certificate chain (PEM) to serve instead of a self-signed one.
    #[arg(long, requires_all = ["publish", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM, PKCS#8).
    #[arg(long, requires_all = ["publish", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// Plain HTTP: token and bytes travel in clear. Only on a network you trust.
    #[arg(long, requires = "publish", conflicts_with = "tls_cert")]
    pub no_tls: bool,
    /// Clients served at once; more get 503 (try again).
    #[arg(long, default_value_t = 32, requires = "publish")]
    pub max_clients: usize,
    /// Deadline for a TLS handshake, request headers, or a transfer that stalls.
    #[arg(long, default_value = "30s", value_parser = crate::serve::parse_duration, hide = true)]
    pub io_timeout: Duration,
}

impl ServeArgs {
    /// The flags as the server's options.
    pub fn options(&self) -> ServeOptions {
        ServeOptions {
            listen: self.listen.clone(),
            ttl: self.ttl,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            no_tls: self.no_tls,
            max_clients: self.max_clients,
            io_timeout: self.io_timeout,
        }
    }
}

/// [`crate::serve::start`] with the flags.
pub fn start(
    serve: &ServeArgs,
    items: Vec<snapport_publish::content::Item>,
    uploads: Vec<Arc<snapport_publish::upload::UploadSlot>>,
    max_downloads: Option<u64>,
) -> Result<Started> {
    crate::serve::start(&serve.options(), items, uploads, max_downloads)
}
