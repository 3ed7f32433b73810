//! `snapport restore vd/NAME --from vds/NAME@SNAP --mode dry-run|strict|best-effort`: the
//! disk's content becomes the snapshot's.
//!
//! First a conflict report. Some conflicts stop every mode (the snapshot is not `Ready`,
//! its size is not the disk's, the backend cannot restore, another snapshot operation is
//! under way); others only `strict` (snapshots taken after this one, which stay but no
//! longer follow from the disk's content). `dry-run`, the default, prints the report and
//! changes nothing.

use crate::address::Address;
use crate::context::Context;
use crate::snapshots::{self, Phase};
use anyhow::{bail, Context as _, Result};
use snapport_host::Capabilities;

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Mode {
    /// Report what would happen; change nothing.
    DryRun,
    /// Restore only when there is no conflict at all.
    Strict,
    /// Restore unless a conflict makes it impossible; report what was set aside.
    BestEffort,
}

#[derive(clap::Args)]
pub struct Args {
    /// vd/NAME.
    target: String,
    /// vds/NAME@SNAP: a snapshot of that same disk.
    #[arg(long)]
    from: String,
    #[arg(long, value_enum, default_value_t = Mode::DryRun)]
    mode: Mode,
    #[arg(short = 'n', long, default_value = crate::config::DEFAULT_POOL)]
    pool: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = crate::commands::OutputArg::Text)]
    output: crate::commands::OutputArg,
}

/// One finding of the report.
struct Conflict {
    /// Stops every mode, not only `strict`.
    fatal: bool,
    message: String,
}

pub fn run(args: Args) -> Result<()> {
    let target = Address::parse(&args.target)?;
    let Address::Disk(disk) = &target else {
        bail!("{target}: restore takes a disk, vd/NAME");
    };
    let from = Address::parse(&args.from)?;
    let Address::DiskSnapshot { disk: of, snapshot } = &from else {
        bail!("--from {from}: a disk snapshot, vds/DISK@SNAP");
    };
    if of != disk {
        bail!("{from} is a snapshot of vd/{of}, not of {target}; to make a new disk from it, use `snapport create vd/NEW --from {from}`");
    }
    let ctx = Context::new()?;
    let mut pool = ctx.pool(&args.pool)?;
    let Some(volume) = pool.list_volumes()?.into_iter().find(|v| &v.name == disk) else {
        bail!("no {target} in pool {}", args.pool);
    };
    let views = snapshots::list(&ctx.config.home, &args.pool, &mut pool, Some(disk))?;
    let Some(snap) = views.iter().find(|v| &v.name == snapshot) else {
        bail!("no {from} in pool {}", args.pool);
    };

    let mut conflicts = Vec::new();
    let mut fatal = |message: String| {
        conflicts.push(Conflict {
            fatal: true,
            message,
        })
    };
    if snap.phase != Phase::Ready {
        fatal(format!("{from} is {:?}, not Ready", snap.phase));
    }
    if let Some(size) = snap.size.filter(|&s| s != volume.size) {
        fatal(format!(
            "the size changed: {from} is of {size} bytes, {target} now has {}",
            volume.size
        ));
    }
    if !pool
        .info()?
        .capabilities
        .contains(Capabilities::SNAPSHOT_RESTORE)
    {
        fatal(format!(
            "the plugin of pool {} cannot restore snapshots in place; create a new disk from {from} instead",
            args.pool
        ));
    }
    for v in views.iter().filter(|v| {
        matches!(
            v.phase,
            Phase::Pending | Phase::InProgress | Phase::Terminating
        )
    }) {
        fatal(format!(
            "{} is {:?}: wait for it to finish",
            v.address(),
            v.phase
        ));
    }
    let newer: Vec<String> = views
        .iter()
        .filter(|v| v.phase == Phase::Ready && v.created_unix_ms > snap.created_unix_ms)
        .map(|v| v.address())
        .collect();
    if !newer.is_empty() {
        conflicts.push(Conflict {
            fatal: false,
            message: format!(
                "{} taken after {from}: kept, but the disk will no longer follow from them",
                newer.join(", ")
            ),
        });
    }

    let blocked =
        conflicts.iter().any(|c| c.fatal) || (args.mode == Mode::Strict && !conflicts.is_empty());
    let restored = args.mode != Mode::DryRun && !blocked;
    if restored {
        pool.restore_snapshot(disk, snapshot)
            .with_context(|| format!("restoring {target} from {from}"))?;
        snapshots::update(&ctx.config.home, &args.pool, |r| {
            r.heads.insert(disk.clone(), snapshot.clone());
        })?;
    }

    let mode = format!("{:?}", args.mode);
    match args.output {
        crate::commands::OutputArg::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "target": target.to_string(),
                "from": from.to_string(),
                "pool": args.pool,
                "mode": mode,
                "restored": restored,
                "conflicts": conflicts.iter().map(|c| serde_json::json!({
                    "fatal": c.fatal, "message": c.message,
                })).collect::<Vec<_>>(),
            }))?
        ),
        // A refusal says it all in its one error line.
        crate::commands::OutputArg::Text if blocked && args.mode != Mode::DryRun => {}
        crate::commands::OutputArg::Text => {
            for c in &conflicts {
                let tag = if c.fatal { "conflict" } else { "warning" };
                eprintln!("{tag}: {}", c.message);
            }
            if restored {
                eprintln!("restored {target} from {from} ({mode}); its writes since are gone");
            } else if args.mode == Mode::DryRun && !blocked {
                eprintln!(
                    "dry run: {target} would be restored from {from}, discarding its writes since; nothing changed (run with --mode strict or best-effort)"
                );
            } else if args.mode == Mode::DryRun {
                eprintln!("dry run: {target} could not be restored from {from} as things are; nothing changed");
            }
        }
    }
    if blocked && args.mode != Mode::DryRun {
        bail!(
            "{target} was not restored from {from} ({mode}): {}",
            conflicts
                .iter()
                .filter(|c| c.fatal || args.mode == Mode::Strict)
                .map(|c| c.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(())
}
