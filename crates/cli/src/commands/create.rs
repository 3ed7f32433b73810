//! `snapport create vd/NAME|vi/NAME --from ...`: a disk or image from an image, a disk
//! or a snapshot (full copy, or `--thin`); `create vm/NAME --config FILE` records a VM.

use crate::render::{engine, human, print_json, Bar, ReportArgs};
use snapport_engine::address::Address;
use snapport_engine::ops::create as op;
use snapport_engine::{usage, Result};

#[derive(clap::Args)]
pub struct Args {
    /// The new volume: vd/NAME or vi/NAME.
    target: String,
    /// What it starts as: vi/NAME, vd/NAME or vds/DISK@SNAPSHOT (same pool).
    #[arg(long, required_unless_present = "config")]
    from: Option<String>,
    /// For vm/NAME: the VM's config, a JSON document with its name, disks (name, pool)
    /// and network identifiers (mac, ip); other fields are kept as written.
    #[arg(long, conflicts_with_all = ["from", "thin", "size"])]
    config: Option<std::path::PathBuf>,
    #[arg(short = 'n', long, default_value = snapport_engine::config::DEFAULT_POOL)]
    pool: String,
    /// A thin clone of the image instead of a full copy: instant, shares the image's
    /// data; the image cannot be deleted while clones need it.
    #[arg(long)]
    thin: bool,
    /// Size of the new volume (at least the source's; default: the source's).
    #[arg(long)]
    size: Option<String>,
    /// Make the new volume durable (fsync) before it appears under its name.
    #[arg(long)]
    fsync: bool,
    #[command(flatten)]
    report: ReportArgs,
}

pub fn run(args: Args) -> Result<()> {
    let (json, quiet) = (args.report.json(), args.report.quiet);
    if let Some(vm) = snapport_engine::vm::parse_vm(&args.target) {
        let name = vm?;
        let Some(config) = args.config else {
            usage!("vm/{name}: give its config with --config FILE (JSON: name, disks, network)");
        };
        let cfg = op::create_vm(&engine()?, &op::CreateVmRequest { name, config })?;
        if json {
            println!("{}", serde_json::to_string(&cfg)?);
        } else if !quiet {
            eprintln!("created vm/{} ({} disks)", cfg.name, cfg.disks.len());
        }
        return Ok(());
    }
    let target = Address::parse(&args.target)?;
    let Some(from) = &args.from else {
        usage!("{target}: give what it starts as with --from (--config is for vm/NAME)");
    };
    let request = op::CreateRequest {
        from: Address::parse(from)?,
        size: args
            .size
            .as_deref()
            .map(snapport_engine::source::parse_size)
            .transpose()?,
        target,
        pool: args.pool,
        thin: args.thin,
        fsync: args.fsync,
    };
    let r = op::create(&engine()?, &request, &mut Bar::new(quiet))?;
    if json {
        print_json(&r, false);
        return Ok(());
    }
    if !quiet {
        let target = &request.target;
        let made = if r.volume == target.disk() {
            target.to_string()
        } else {
            format!("{target} as vd/{} (the backend's name)", r.volume)
        };
        eprintln!(
            "created {made} ({}, {} of {}, {} written) in pool {} in {:.2} s",
            human(r.size),
            r.mode,
            r.from,
            human(r.written_bytes),
            r.pool,
            r.seconds
        );
    }
    Ok(())
}
