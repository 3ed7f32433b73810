//! `snapport delete vd/NAME|vi/NAME|vds/DISK@SNAP|vms/VM@SNAP`.

use crate::render::{engine, print_json, ReportArgs};
use snapport_engine::ops::delete::{self, DeleteRequest, Target};
use snapport_engine::Result;

#[derive(clap::Args)]
pub struct Args {
    /// vd/NAME, vi/NAME, vds/DISK@SNAP or vms/VM@SNAP.
    target: String,
    #[arg(short = 'n', long, default_value = snapport_engine::config::DEFAULT_POOL)]
    pool: String,
    /// Delete even though other volumes depend on it (they become unreadable).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    out: ReportArgs,
}

pub fn run(args: Args) -> Result<()> {
    let req = DeleteRequest {
        target: Target::parse(&args.target)?,
        pool: args.pool,
        force: args.force,
    };
    let r = delete::delete(&engine()?, &req)?;
    if args.out.json() {
        print_json(&r, false);
        return Ok(());
    }
    if !args.out.text() {
        return Ok(());
    }
    match &r.pool {
        Some(pool) => eprintln!("deleted {} from pool {pool}", r.deleted),
        None => {
            if !r.already_gone.is_empty() {
                eprintln!("note: {} no longer there", r.already_gone.join(", "));
            }
            eprintln!("deleted {} and its disk snapshots", r.deleted);
        }
    }
    if let Some(broken) = r.broken.filter(|b| !b.is_empty()) {
        let broken = broken.join(", ");
        eprintln!("warning: {broken} can no longer be read: their image is gone");
    }
    Ok(())
}
