//! `snapport push`: send an image to an `upload --publish`, resuming from what the server
//! already has.

use crate::render::{human, print_json, Bar, ReportArgs};
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
    #[command(flatten)]
    report: ReportArgs,
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
    let r = push(&req, &mut Bar::new(args.report.quiet))?;
    if args.report.json() {
        print_json(&r, false);
    } else if !args.report.quiet {
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
