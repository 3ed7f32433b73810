//! `snapport push`: send an image to an `upload --publish`, resuming from what the server
//! already has.

use crate::commands::human;
use crate::{Context as _, Result};
use snapport_publish::upload::{push, PushOptions};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The image file (raw or raw.zst).
    file: PathBuf,
    /// The URL `upload --publish` printed (https://HOST:PORT/NAME?token=TOKEN).
    url: String,
    /// The SHA-256 to declare for the file (default: computed from it).
    #[arg(long)]
    sha256: Option<String>,
    #[command(flatten)]
    client: crate::commands::fetch::ClientArgs,
}

pub fn run(args: Args) -> Result<()> {
    let c = &args.client;
    let options = PushOptions {
        file: args.file.clone(),
        url: args.url.clone(),
        token: c.token.clone(),
        fingerprint: c.fingerprint()?,
        sha256: args.sha256.clone(),
        limit_rate: c.limit_rate,
    };
    let mut progress = crate::commands::new_progress(c.quiet);
    let started = Instant::now();
    let summary = push(&options, progress.as_mut())
        .with_context(|| format!("pushing {}", args.file.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    if c.json {
        println!("{}", summary.server.trim());
    } else if !c.quiet {
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
