//! `snapport fetch`: download what `download --publish` serves, resumably, in parallel
//! ranged streams, verified by SHA-256 before it appears under its name.

use crate::commands::human;
use crate::{Context as _, Result};
use snapport_publish::fetch::{fetch, FetchOptions};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The URL `download --publish` printed (https://HOST:PORT/NAME?token=TOKEN).
    url: String,
    /// Output file. Until verified, the bytes are in FILE.part (and FILE.part.state says
    /// which): run the same command again to resume.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Replace an existing output file once the download is verified. A file or device
    /// of a pool is never replaced.
    #[arg(long)]
    force: bool,
    /// Ranged streams at once (one when the server does not announce ranges).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    #[command(flatten)]
    client: ClientArgs,
}

/// What `fetch` and `push` share: how to trust and reach the server, and what to print.
#[derive(clap::Args)]
pub struct ClientArgs {
    /// The server certificate's SHA-256 fingerprint, as the publish printed it; without
    /// it, the certificate must be signed by a CA in the system roots.
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// The token, when the URL does not carry it.
    #[arg(long)]
    pub token: Option<String>,
    /// At most this many bytes per second (a suffix K, M or G counts in 1024s), as
    /// curl's --limit-rate.
    #[arg(long, value_parser = |s: &str| crate::source::parse_size(s).map_err(|e| e.to_string()))]
    pub limit_rate: Option<u64>,
    /// No progress bar, no summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl ClientArgs {
    pub fn fingerprint(&self) -> Result<Option<[u8; 32]>> {
        Ok(self
            .fingerprint
            .as_deref()
            .map(snapport_publish::tls::parse_fingerprint)
            .transpose()?)
    }
}

pub fn run(args: Args) -> Result<()> {
    let c = &args.client;
    let config = crate::config::Config::load()?;
    crate::output::check(&config, &args.output, &[], args.force)?;
    crate::interrupt::note(&format!(
        "nothing was written under {}; what arrived is kept beside it (.part): run the \
         same command again to resume",
        args.output.display()
    ));
    let options = FetchOptions {
        url: args.url.clone(),
        output: args.output.clone(),
        token: c.token.clone(),
        fingerprint: c.fingerprint()?,
        parallel: args.parallel.into(),
        limit_rate: c.limit_rate,
        replace: args.force,
    };
    let mut progress = crate::commands::new_progress(c.quiet);
    let started = Instant::now();
    let summary = fetch(&options, progress.as_mut())
        .with_context(|| format!("fetching into {}", args.output.display()))?;
    crate::interrupt::clear_note();
    let seconds = started.elapsed().as_secs_f64();
    if c.json {
        let doc = serde_json::json!({
            "output": args.output,
            "size": summary.size,
            "resumed": summary.resumed,
            "received": summary.received,
            "digest": summary.digest,
            "seconds": seconds,
        });
        println!("{doc}");
    } else if !c.quiet {
        let resumed = if summary.resumed > 0 {
            format!(", {} of it from an earlier run", human(summary.resumed))
        } else {
            String::new()
        };
        eprintln!(
            "fetched {} ({}{resumed}) in {seconds:.2} s ({}/s); {} verified",
            args.output.display(),
            human(summary.size),
            human((summary.received as f64 / seconds.max(1e-9)) as u64),
            summary.digest
        );
    }
    Ok(())
}
