//! `snapport prune [vd/NAME] [--keep-* N] [--apply]`: applies a retention policy to each
//! disk's snapshots; without `--apply` it only lists what would go.

use crate::render::{engine, or_dash, print_json_pretty, ReportArgs};
use snapport_engine::address::Address;
use snapport_engine::ops::prune::{self, PruneRequest};
use snapport_engine::retention::Policy;
use snapport_engine::{bail, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Only this disk's snapshots (vd/NAME); default: every disk of the pool.
    target: Option<String>,
    #[arg(short = 'n', long, default_value = snapport_engine::config::DEFAULT_POOL)]
    pool: String,
    /// Keep the N newest.
    #[arg(long)]
    keep_last: Option<usize>,
    /// Keep the newest of each of the last N hours (that have snapshots).
    #[arg(long)]
    keep_hourly: Option<usize>,
    #[arg(long)]
    keep_daily: Option<usize>,
    #[arg(long)]
    keep_weekly: Option<usize>,
    #[arg(long)]
    keep_monthly: Option<usize>,
    #[arg(long)]
    keep_yearly: Option<usize>,
    /// Delete what the policy does not keep (default: only list it).
    #[arg(long)]
    apply: bool,
    #[command(flatten)]
    out: ReportArgs,
}

pub fn run(args: Args) -> Result<()> {
    let req = PruneRequest {
        target: args.target.as_deref().map(Address::parse).transpose()?,
        pool: args.pool,
        policy: Policy {
            keep_last: args.keep_last,
            keep_hourly: args.keep_hourly,
            keep_daily: args.keep_daily,
            keep_weekly: args.keep_weekly,
            keep_monthly: args.keep_monthly,
            keep_yearly: args.keep_yearly,
        },
        apply: args.apply,
    };
    let r = prune::prune(&engine()?, &req)?;
    if args.out.json() {
        print_json_pretty(&r);
    } else if args.out.text() {
        println!("{:<40} {:<20} {:<8} REASON", "NAME", "CREATED", "ACTION");
        for s in &r.snapshots {
            let action = if s.action == "failed" {
                "removed"
            } else {
                s.action
            };
            let (created, reason) = (or_dash(s.created.as_ref()), s.reason.unwrap_or_default());
            println!("{:<40} {created:<20} {action:<8} {reason}", s.name);
        }
        if r.dry_run {
            eprintln!("dry run: nothing deleted (add --apply to delete what says remove)");
        }
    }
    if !r.failures.is_empty() {
        bail!("prune could not delete {}", r.failures.join("; "));
    }
    Ok(())
}
