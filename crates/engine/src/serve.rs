//! Starting a publish server (`snapport_publish::server`): where it listens, its TLS
//! identity and token, when it stops. Shared by what serves exports (`download
//! --publish`) and what receives an upload (`upload --publish`).

use crate::{Context as _, Result};
use snapport_publish::content::Item;
use snapport_publish::server::{Config, Server};
use snapport_publish::tls::Identity;
use snapport_publish::upload::UploadSlot;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How a publish server listens and protects itself (download and upload alike).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Where to listen, HOST:PORT (port 0 picks a free one).
    pub listen: String,
    /// Stop after this long without an access.
    pub ttl: Duration,
    /// TLS certificate chain (PEM) to serve instead of a self-signed one (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM, PKCS#8).
    pub tls_key: Option<PathBuf>,
    /// Plain HTTP: token and bytes travel in clear.
    pub no_tls: bool,
    /// Clients served at once; more get 503 (try again).
    pub max_clients: usize,
    /// Deadline for a TLS handshake, request headers, or a transfer that stalls.
    pub io_timeout: Duration,
}

impl Default for ServeOptions {
    /// Loopback on a free port, self-signed TLS, 15 minutes without access, 32 clients.
    fn default() -> Self {
        ServeOptions {
            listen: "127.0.0.1:0".into(),
            ttl: Duration::from_secs(15 * 60),
            tls_cert: None,
            tls_key: None,
            no_tls: false,
            max_clients: 32,
            io_timeout: Duration::from_secs(30),
        }
    }
}

/// `30s`, `10m`, `2h`, `1d`, or plain seconds: how a TTL is written.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 10m, 2h or 1d"))?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| format!("{s:?} is too long"))?;
    if secs == 0 {
        return Err("a duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

/// A duration as [`parse_duration`] reads it: `15m`, `2h`, `90s`.
pub fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s.is_multiple_of(86400) => format!("{}d", s / 86400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// Shell-quotes `s` for a printed command line.
pub fn sh(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The host part of a URL for a bound address: an unspecified address is shown as the
/// machine's name.
fn url_host(addr: std::net::SocketAddr) -> String {
    let ip = addr.ip();
    if ip.is_unspecified() {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let name = name.trim();
        return if name.is_empty() {
            "localhost".into()
        } else {
            name.into()
        };
    }
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    }
}

/// The TLS identity: the given certificate, or a fresh self-signed one.
fn identity(options: &ServeOptions, host: &str) -> Result<Option<Identity>> {
    if options.no_tls {
        return Ok(None);
    }
    Ok(Some(match (&options.tls_cert, &options.tls_key) {
        (Some(c), Some(k)) => Identity::from_pem_files(c, k)?,
        _ => {
            let mut names = vec![
                "localhost".to_string(),
                host.trim_matches(['[', ']']).to_string(),
            ];
            names.dedup();
            Identity::self_signed(&names)?
        }
    }))
}

/// A bound server and what clients need to reach it.
pub struct Started {
    /// The server, bound, not serving until run.
    pub server: Server,
    /// `https://HOST:PORT` (or `http://` without TLS).
    pub base: String,
    /// The bearer token clients must present.
    pub token: String,
    /// The TLS identity clients pin, if TLS.
    pub tls: Option<Identity>,
}

impl Started {
    /// The client options that trust this server: a pinned fingerprint, if TLS.
    pub fn fingerprint_arg(&self) -> String {
        match &self.tls {
            Some(t) => format!("--fingerprint {} ", t.fingerprint),
            None => String::new(),
        }
    }
}

/// Binds, makes the TLS identity and the token, and builds the server for `items` (to
/// download) and `uploads` (to receive).
pub fn start(
    options: &ServeOptions,
    items: Vec<Item>,
    uploads: Vec<Arc<UploadSlot>>,
    max_downloads: Option<u64>,
) -> Result<Started> {
    let token = snapport_publish::new_token()?;
    // Bind first: the certificate names the address actually bound.
    let listener = std::net::TcpListener::bind(&options.listen)
        .with_context(|| format!("listening on {}", options.listen))?;
    let bound = listener
        .local_addr()
        .context("reading the listening address")?;
    let host = url_host(bound);
    let tls = identity(options, &host)?;
    let config = Config {
        token: token.clone(),
        tls: tls.as_ref().map(|t| Arc::clone(&t.config)),
        ttl: Some(options.ttl),
        max_downloads,
        max_clients: options.max_clients,
        io_timeout: options.io_timeout,
    };
    let server = Server::new(listener, items, uploads, config)
        .with_context(|| format!("publishing on {bound}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    Ok(Started {
        server,
        base: format!("{scheme}://{host}:{}", bound.port()),
        token,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        for bad in ["", "0", "m", "5x", "-1s", "1.5h", "999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(show_duration(Duration::from_secs(900)), "15m");
    }

    #[test]
    fn quoting() {
        assert_eq!(sh("a b'c"), "'a b'\\''c'");
        assert_eq!(sh("https://h:1/x.raw"), "https://h:1/x.raw");
    }
}
