//! `snapport push`: send an image to an `upload --publish`, resuming from what the server
//! already has.

use super::download::{human, print_json, Bar, OutputFormat};
use snapport_engine::ops::push::{push, PushRequest};
use snapport_engine::Result;
use std::path::PathBuf;

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
    client: super::fetch::ClientArgs,
    /// The summary as text or JSON (the server's summary of the import, on stdout).
    #[arg(short = 'o', long = "output", alias = "output-format", value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    #[arg(long, hide = true)]
    json: bool,
    /// No progress bar, no summary (JSON, when asked for, still prints).
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    let req = PushRequest {
        file: args.file,
        url: args.url,
        sha256: args.sha256,
        token: args.client.token,
        fingerprint: args.client.fingerprint,
        limit_rate: args.client.limit_rate,
    };
    let r = push(&req, &mut Bar::new(args.quiet))?;
    if args.json || args.output == OutputFormat::Json {
        print_json(&r, false);
    } else if !args.quiet {
        let resumed = if r.resumed > 0 {
            format!(", resumed at {}", human(r.resumed))
        } else {
            String::new()
        };
        eprintln!(
            "pushed {} ({}{resumed}) in {:.2} s; the server imported and verified it: {}",
            r.file.display(),
            human(r.size),
            r.seconds,
            r.server
        );
    }
    Ok(())
}
