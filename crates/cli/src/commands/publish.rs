//! `download --publish`: the flags of a publish server, and what it prints while it
//! serves (the ready-to-paste commands first, a spinner, how it ended).

use crate::render::{human, Bar};
use snapport_engine::ops::publish::{prepare, PublishRequest, PublishSource};
use snapport_engine::serve::{parse_duration, show_duration, ServeOptions};
use snapport_engine::Result;
use snapport_publish::server::Stopped;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct PublishArgs {
    /// Serve over HTTPS (a token, a self-signed certificate to pin) instead of writing a
    /// file; prints ready-to-paste curl and `snapport fetch` commands.
    #[arg(long)]
    pub publish: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Stop after this many complete downloads.
    #[arg(long, requires = "publish")]
    pub max_downloads: Option<u64>,
    /// Where raw.zst and qcow2 exports are prepared before being served (default: the
    /// system's temporary folder). The file never has a name: nothing stays behind.
    #[arg(long, requires = "publish")]
    pub spool_dir: Option<PathBuf>,
}

/// How a publish server listens and protects itself (download and upload `--publish`).
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
    #[arg(long, default_value = "15m", value_parser = parse_duration, requires = "publish")]
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
    #[arg(long, default_value = "30s", value_parser = parse_duration, hide = true)]
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

impl PublishArgs {
    /// Prepares and serves `source` until the server stops; prints how to download it.
    pub fn run(
        &self,
        source: PublishSource,
        zstd_level: i32,
        (encrypt_to, encrypt_to_files): (&[String], &[std::path::PathBuf]),
        quiet: bool,
        json: bool,
    ) -> Result<()> {
        let req = PublishRequest {
            source,
            zstd_level,
            serve: self.serve.options(),
            max_downloads: self.max_downloads,
            spool_dir: self.spool_dir.clone(),
            encrypt_to: encrypt_to.to_vec(),
            encrypt_to_files: encrypt_to_files.to_vec(),
        };
        let engine = crate::render::engine()?;
        let publication = prepare(&engine, &req, &mut Bar::new(quiet))?;
        let r = publication.report();
        let mut out = std::io::stdout().lock();
        if json {
            let doc = serde_json::to_value(r).expect("a report serialises");
            writeln!(out, "{doc}")?;
        } else {
            writeln!(
                out,
                "publishing {} ({}) as {} at {}",
                r.source,
                human(r.size),
                r.name,
                r.url
            )?;
            if let Some(f) = &r.fingerprint {
                writeln!(out, "certificate SHA-256 fingerprint: {f}")?;
            }
            writeln!(out, "token: {}", r.token)?;
            writeln!(out, "download with curl:\n  {}", r.curl)?;
            writeln!(
                out,
                "or with snapport (resumable, parallel, verified):\n  {}",
                r.fetch
            )?;
            writeln!(out, "index page: {}", r.index)?;
            let ttl = show_duration(Duration::from_secs(r.ttl_seconds));
            let mut stop = format!("stops after {ttl} without access");
            if let Some(n) = r.max_downloads {
                stop.push_str(&format!(" or after {n} download(s)"));
            }
            writeln!(out, "{stop}")?;
        }
        out.flush()?;
        drop(out);

        let status = publication.status();
        let live = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            let b = bar.clone();
            std::thread::spawn(move || loop {
                let st = status.status();
                let i = &st.items[0];
                let sha = if i.sha256.is_some() {
                    "known"
                } else {
                    "computing"
                };
                b.set_message(format!(
                    "sent {} · {} download(s) · {} client(s) · sha256 {sha}",
                    human(i.bytes_sent),
                    i.downloads,
                    st.clients,
                ));
                std::thread::sleep(Duration::from_millis(500));
            });
            bar
        });
        let end = publication.serve()?;
        if let Some(bar) = live {
            bar.finish_and_clear();
        }
        if json {
            // A reader that took the first line and went away does not make this fail:
            // the publish is over either way.
            let doc = serde_json::to_value(&end).expect("a report serialises");
            let _ = writeln!(std::io::stdout(), "{doc}");
        } else if !quiet {
            let reason = match &end.reason {
                Stopped::Expired(ttl) => format!("no access for {}", show_duration(*ttl)),
                Stopped::Downloaded(n) => format!("{n} download(s) done"),
                Stopped::Uploaded => "upload done".into(),
            };
            eprintln!("publish stopped: {reason} ({} sent)", human(end.bytes_sent));
        }
        Ok(())
    }
}
