//! snapport embedded in another program: export a disk, take a snapshot of it, and import
//! an image as a new disk, through the library alone — no `snapport` binary, no command
//! line, nothing printed by the engine.
//!
//!     SNAPPORT_HOME=HOME cargo run --release -p snapport-engine --example embed -- \
//!         DISK OUTPUT.raw IMAGE
//!
//! DISK is a disk of HOME's default pool, OUTPUT.raw where its export goes, and IMAGE a
//! raw, qcow2 or raw.zst file that becomes the new disk `DISK-copy`. Prints the three
//! reports as JSON lines on stdout.

use snapport_core::progress::{NoProgress, Progress};
use snapport_engine::address::Address;
use snapport_engine::ops::download::{download, DownloadRequest};
use snapport_engine::ops::snapshot::{self, CreateRequest, Target};
use snapport_engine::ops::upload::{upload, UploadRequest};
use snapport_engine::{Engine, Error, Result};
use std::process::ExitCode;

/// The caller's side of progress: here, counting bytes (a service could export them as
/// metrics).
#[derive(Default)]
struct Counter {
    total: u64,
    done: u64,
}

impl Progress for Counter {
    fn start(&mut self, total: u64) {
        self.total = total;
    }
    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
    }
}

fn run(disk: &str, output: &str, image: &str) -> Result<()> {
    // The configuration from $SNAPPORT_HOME; plugin log lines dropped (pass a logger to
    // keep them).
    let engine = Engine::new(None)?;

    let mut counter = Counter::default();
    let exported = download(
        &engine,
        &DownloadRequest::new(Address::Disk(disk.into()), output),
        &mut counter,
    )?;
    if counter.done != counter.total {
        return Err(Error::msg(format!(
            "progress said {} of {} bytes",
            counter.done, counter.total
        )));
    }
    println!("{}", serde_json::to_string(&exported)?);

    let mut request = CreateRequest::new(Target::Disk(disk.into()));
    request.name = Some("embedded".into());
    request.comment = Some("taken by examples/embed.rs".into());
    let taken = snapshot::create(&engine, &request, &mut NoProgress)?;
    println!("{}", serde_json::to_string(&taken)?);

    let imported = upload(
        &engine,
        &UploadRequest::new(image, Address::Disk(format!("{disk}-copy"))),
        &mut NoProgress,
    )?;
    println!("{}", serde_json::to_string(&imported)?);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [disk, output, image] = args.as_slice() else {
        eprintln!("usage: embed DISK OUTPUT.raw IMAGE");
        return ExitCode::from(2);
    };
    match run(disk, output, image) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {}", e.one_line());
            ExitCode::FAILURE
        }
    }
}
