//! `snapport prune [vd/NAME] [--keep-* N] [--apply]`: applies a retention policy to each
//! disk's snapshots. Without `--apply` it only lists what would go, so the same command
//! line shows the plan and then carries it out (from cron or a systemd timer).

use crate::address::Address;
use crate::commands::OutputArg;
use crate::retention::{self, Policy, Verdict};
use crate::snapshots::{self, Phase, View};
use crate::Engine;
use crate::{bail, Result};
use std::collections::BTreeMap;

#[derive(clap::Args)]
pub struct Args {
    /// Only this disk's snapshots (vd/NAME); default: every disk of the pool.
    target: Option<String>,
    #[arg(short = 'n', long, default_value = crate::config::DEFAULT_POOL)]
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
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputArg::Text)]
    output: OutputArg,
}

pub fn run(args: Args) -> Result<()> {
    let disk = match args.target.as_deref().map(Address::parse).transpose()? {
        None => None,
        Some(Address::Disk(d)) => Some(d),
        Some(other) => bail!("{other}: prune takes a disk, vd/NAME"),
    };
    let cli = Policy {
        keep_last: args.keep_last,
        keep_hourly: args.keep_hourly,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_yearly: args.keep_yearly,
    };
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let policy = if cli.is_empty() {
        ctx.config
            .pool(&args.pool)?
            .retention
            .clone()
            .unwrap_or_default()
    } else {
        cli
    };
    if policy.is_empty() {
        bail!(
            "no retention policy: give --keep-last, --keep-daily, ... or set [pools.{}.retention] in the configuration",
            args.pool
        );
    }
    let mut pool = ctx.pool(&args.pool)?;
    let views = snapshots::list(&ctx.config.home, &args.pool, &mut pool, disk.as_deref())?;
    let mut by_disk: BTreeMap<&str, Vec<&View>> = BTreeMap::new();
    for v in &views {
        by_disk.entry(v.disk.as_str()).or_default().push(v);
    }
    // (view, verdict) for every snapshot, in listing order.
    let mut plan: Vec<(&View, Verdict)> = Vec::new();
    for list in by_disk.values() {
        // Only whole snapshots with a date take part; the others stay, as they are.
        let (eligible, others): (Vec<&View>, Vec<&View>) = list
            .iter()
            .partition(|v| v.phase == Phase::Ready && v.created_unix_ms.is_some());
        let times: Vec<u64> = eligible
            .iter()
            .map(|v| v.created_unix_ms.unwrap())
            .collect();
        for (v, verdict) in eligible.iter().zip(retention::decide(&policy, &times)) {
            plan.push((v, verdict));
        }
        for v in others {
            plan.push((v, Verdict::Keep("not Ready or undated")));
        }
    }

    let mut failures = Vec::new();
    let mut removed = Vec::new();
    if args.apply {
        for (v, verdict) in &plan {
            if *verdict == Verdict::Remove {
                match crate::live::remove_snapshot(&ctx.config.home, &args.pool, &mut pool, v) {
                    Ok(()) => removed.push(v.address()),
                    Err(e) => failures.push(format!("{}: {e:#}", v.address())),
                }
            }
        }
    }

    let action = |verdict: &Verdict| match verdict {
        Verdict::Keep(_) => "keep",
        Verdict::Remove if args.apply => "removed",
        Verdict::Remove => "remove",
    };
    match args.output {
        OutputArg::Json => {
            let docs: Vec<_> = plan
                .iter()
                .map(|(v, verdict)| {
                    serde_json::json!({
                        "name": v.address(),
                        "created": v.created_unix_ms.map(snapshots::utc),
                        "action": if args.apply && *verdict == Verdict::Remove && !removed.contains(&v.address()) {
                            "failed"
                        } else {
                            action(verdict)
                        },
                        "reason": match verdict { Verdict::Keep(r) => Some(*r), Verdict::Remove => None },
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "pool": args.pool,
                    "dry_run": !args.apply,
                    "snapshots": docs,
                }))?
            );
        }
        OutputArg::Text => {
            println!("{:<40} {:<20} {:<8} REASON", "NAME", "CREATED", "ACTION");
            for (v, verdict) in &plan {
                println!(
                    "{:<40} {:<20} {:<8} {}",
                    v.address(),
                    v.created_unix_ms.map_or_else(|| "-".into(), snapshots::utc),
                    action(verdict),
                    match verdict {
                        Verdict::Keep(r) => r,
                        Verdict::Remove => "",
                    }
                );
            }
            if !args.apply {
                eprintln!("dry run: nothing deleted (add --apply to delete what says remove)");
            }
        }
    }
    if !failures.is_empty() {
        bail!("prune could not delete {}", failures.join("; "));
    }
    Ok(())
}
