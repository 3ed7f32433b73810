//! `snapport push`: send an image to an `upload --publish`, resuming from what the server
//! already has.

use crate::commands::human;
use anyhow::{Context as _, Result};
use snapport_publish::upload::{push, PushOptions};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The image file (raw or raw.zst).
    file: PathBuf,
    /// The URL `upload --publish` printed (https://HOST:PORT/NAME?token=TOKEN).
    url: String,
    /// The server certificate's SHA-256 fingerprint, as printed by `upload --publish`.
    #[arg(long)]
    fingerprint: Option<String>,
    /// The token, when the URL does not carry it.
    #[arg(long)]
    token: Option<String>,
    /// The SHA-256 to declare for the file (default: computed from it).
    #[arg(long)]
    sha256: Option<String>,
    /// At most this many bytes per second (K, M, G suffixes count in 1024s).
    #[arg(long, value_parser = crate::source::parse_size)]
    limit_rate: Option<u64>,
    /// No progress bar, no summary.
    #[arg(short, long)]
    quiet: bool,
    /// Print the server's summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let fingerprint = args
        .fingerprint
        .as_deref()
        .map(snapport_publish::tls::parse_fingerprint)
        .transpose()?;
    let options = PushOptions {
        file: args.file.clone(),
        url: args.url.clone(),
        token: args.token.clone(),
        fingerprint,
        sha256: args.sha256.clone(),
        limit_rate: args.limit_rate,
    };
    let mut progress = crate::commands::new_progress(args.quiet);
    let started = Instant::now();
    let summary = push(&options, progress.as_mut())
        .with_context(|| format!("pushing {}", args.file.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", summary.server.trim());
    } else if !args.quiet {
        let resumed = if summary.resumed > 0 {
            format!(", resumed at {}", human(summary.resumed))
        } else {
            String::new()
        };
        eprintln!(
            "pushed {} ({}{resumed}) in {seconds:.2} s; the server imported and verified it: {}",
            args.file.display(),
            human(summary.size),
            summary.server.trim()
        );
    }
    Ok(())
}
