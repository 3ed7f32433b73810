//! `snapport get vd|vi|vds|vm|vms [NAME]`: what a pool (or the VMs) holds.

use crate::render::{engine, human, or_dash, print_json, print_json_pretty};
use snapport_engine::ops::list::{self, ListKind, ListRequest, Listing};
use snapport_engine::Result;

#[derive(clap::Args)]
pub struct Args {
    /// vd (disks), vi (images), vds (disk snapshots), vm (VMs) or vms (VM snapshots).
    kind: String,
    /// Only this disk (for vds: this disk's snapshots).
    name: Option<String>,
    #[arg(short = 'n', long, default_value = snapport_engine::config::DEFAULT_POOL)]
    pool: String,
    /// Output: table (default), json or wide.
    #[arg(short = 'o', long = "output", visible_alias = "output-format", value_enum, default_value_t = Format::Table)]
    output: Format,
    #[arg(long, hide = true)]
    json: bool,
    /// Print nothing on success (JSON, when asked for, still prints).
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    #[value(alias = "text")]
    Table,
    Json,
    Wide,
}

pub fn run(args: Args) -> Result<()> {
    let kind = ListKind::parse(&args.kind)?;
    let req = ListRequest {
        kind,
        name: args.name,
        pool: args.pool,
    };
    let listing = list::list(&engine()?, &req)?;
    if args.json || args.output == Format::Json {
        // VMs print as their configs do, the others as documents.
        return match &listing {
            Listing::Vms(v) => {
                println!("{}", serde_json::to_string(v)?);
                Ok(())
            }
            Listing::VmSnapshots(v) => {
                print_json(v, false);
                Ok(())
            }
            _ => {
                print_json_pretty(&listing);
                Ok(())
            }
        };
    }
    if args.quiet {
        return Ok(());
    }
    match listing {
        Listing::Volumes(vols) => {
            println!("{:<32} {:>10} {:<10} PARENT", "NAME", "SIZE", "FORMAT");
            for v in &vols {
                let parent = match v.labels.get("error") {
                    Some(e) => format!("error: {e}"),
                    None => or_dash(v.parent.as_ref()),
                };
                println!(
                    "{:<32} {:>10} {:<10} {parent}",
                    v.name,
                    human(v.size),
                    v.format
                );
            }
        }
        Listing::DiskSnapshots(views) => {
            println!(
                "{:<40} {:>10} {:<12} {:<10} {:<20} ID",
                "NAME", "SIZE", "PHASE", "CONSISTENT", "CREATED"
            );
            for v in &views {
                println!(
                    "{:<40} {:>10} {:<12} {:<10} {:<20} {}",
                    v.name,
                    or_dash(v.size.map(human)),
                    v.phase,
                    if v.consistent { "yes" } else { "no" },
                    or_dash(v.created.as_ref()),
                    or_dash(v.id.as_ref())
                );
            }
        }
        Listing::Vms(vms) => {
            println!("{:<24} {:<6} DISKS", "NAME", "NICS");
            for v in &vms {
                let disks: Vec<_> = v
                    .disks
                    .iter()
                    .map(|d| format!("{}/vd/{}", d.pool, d.name))
                    .collect();
                let name = format!("vm/{}", v.name);
                println!("{name:<24} {:<6} {}", v.network.len(), disks.join(","));
            }
        }
        Listing::VmSnapshots(snaps) => {
            println!(
                "{:<32} {:<11} {:<10} {:<21} DISKS",
                "NAME", "PHASE", "CONSISTENT", "CREATED"
            );
            for s in &snaps {
                println!(
                    "{:<32} {:<11} {:<10} {:<21} {}",
                    s.name,
                    format!("{:?}", s.phase),
                    s.consistent,
                    s.created,
                    s.disks.len()
                );
            }
        }
    }
    Ok(())
}
