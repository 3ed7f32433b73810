//! `snapport fetch`: download what `download --publish` serves, resumably, in parallel
//! ranged streams, verified by SHA-256 before it appears under its name.

use crate::render::{human, print_json, Bar, FileReportArgs};
use snapport_engine::ops::fetch::{fetch, FetchRequest};
use snapport_engine::Result;
use std::path::PathBuf;

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
    #[command(flatten)]
    report: FileReportArgs,
}

/// What `fetch` and `push` share: how to trust and reach the server.
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
    #[arg(long, value_parser = |s: &str| snapport_engine::source::parse_size(s).map_err(|e| e.to_string()))]
    pub limit_rate: Option<u64>,
}

pub fn run(args: Args) -> Result<()> {
    let engine = crate::render::engine()?;
    let req = FetchRequest {
        url: args.url,
        output: args.output,
        force: args.force,
        parallel: args.parallel.into(),
        token: args.client.token,
        fingerprint: args.client.fingerprint,
        limit_rate: args.client.limit_rate,
    };
    let quiet = args.report.quiet;
    let r = fetch(&engine, &req, &mut Bar::new(quiet))?;
    if args.report.json() {
        print_json(&r, false);
    } else if !quiet {
        let resumed = if r.resumed > 0 {
            format!(", {} of it from an earlier run", human(r.resumed))
        } else {
            String::new()
        };
        eprintln!(
            "fetched {} ({}{resumed}) in {:.2} s ({}/s); {} verified",
            r.output.display(),
            human(r.size),
            r.seconds,
            human((r.received as f64 / r.seconds.max(1e-9)) as u64),
            r.digest
        );
    }
    Ok(())
}
