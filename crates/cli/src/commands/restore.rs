//! `snapport restore vd/NAME --from vds/NAME@SNAP --mode dry-run|strict|best-effort`
//! (or `vm/NAME --from vms/NAME@SNAP`): the disk's content becomes the snapshot's.

use crate::render::{engine, print_json_pretty, Bar, ReportArgs};
use snapport_engine::ops::restore::{self, Mode, RestoreReport, RestoreRequest, Target};
use snapport_engine::{Error, Result};

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum ModeArg {
    /// Report what would happen; change nothing.
    DryRun,
    /// Restore only when there is no conflict at all.
    Strict,
    /// Restore unless a conflict makes it impossible; report what was set aside.
    BestEffort,
}

#[derive(clap::Args)]
pub struct Args {
    /// vd/NAME, or vm/NAME for all of a VM's disks and its config.
    target: String,
    /// vds/NAME@SNAP: a snapshot of that same disk (for a VM, vms/VM@SNAP).
    #[arg(long)]
    from: String,
    #[arg(long, value_enum, default_value_t = ModeArg::DryRun)]
    mode: ModeArg,
    #[arg(short = 'n', long, default_value = snapport_engine::config::DEFAULT_POOL)]
    pool: String,
    #[command(flatten)]
    out: ReportArgs,
}

pub fn run(args: Args) -> Result<()> {
    let mode = match args.mode {
        ModeArg::DryRun => Mode::DryRun,
        ModeArg::Strict => Mode::Strict,
        ModeArg::BestEffort => Mode::BestEffort,
    };
    let req = RestoreRequest {
        target: Target::parse(&args.target, &args.from)?,
        mode,
        pool: args.pool,
    };
    let mut bar = if args.out.json() {
        Bar::lines(args.out.quiet)
    } else {
        Bar::new(args.out.quiet)
    };
    let r = restore::restore(&engine()?, &req, &mut bar)?;
    let refusal = r.refusal(mode);
    if args.out.json() {
        print_json_pretty(&r);
    } else if args.out.text() && refusal.is_none() {
        // A refusal says it all in its one error line.
        for c in r.conflicts() {
            eprintln!(
                "{}: {}",
                if c.fatal { "conflict" } else { "warning" },
                c.message
            );
        }
        let blocked = r.blocked(mode);
        match &r {
            RestoreReport::Disk(d) => {
                let (target, from, m) = (&d.target, &d.from, &d.mode);
                if d.restored {
                    let how = if d.by_copy {
                        ", by copy: the backend cannot restore in place"
                    } else {
                        ""
                    };
                    eprintln!(
                        "restored {target} from {from} ({m}{how}); its writes since are gone"
                    );
                } else if !blocked {
                    eprintln!("dry run: {target} would be restored from {from}, discarding its writes since; nothing changed (run with --mode strict or best-effort)");
                } else {
                    eprintln!("dry run: {target} could not be restored from {from} as things are; nothing changed");
                }
            }
            RestoreReport::Vm(v) => {
                let (target, from, m) = (&v.target, &v.from, &v.mode);
                if v.restored {
                    let names: Vec<_> = v
                        .dropped
                        .iter()
                        .map(|d| d.trim_start_matches("vd/"))
                        .collect();
                    let left = if names.is_empty() {
                        String::new()
                    } else {
                        format!(", left out: {}", names.join(", "))
                    };
                    eprintln!(
                        "restored {target} from {from} ({m}): {} disks{left}",
                        v.disks
                    );
                } else if !blocked {
                    eprintln!("dry run: {target} would be restored from {from}; nothing changed (run with --mode strict or best-effort)");
                } else {
                    eprintln!("dry run: {target} could not be restored from {from} as things are; nothing changed");
                }
            }
        }
    }
    match refusal {
        Some(why) => Err(Error::msg(why)),
        None => Ok(()),
    }
}
