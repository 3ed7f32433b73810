//! `snapport clone vm/SRC|vms/SRC@SNAP --to vm/NEW`: a new VM with full copies of the
//! source's disks, renamed, with new MAC addresses; `--mode dry-run` prints the plan.

use crate::render::{engine, print_json_pretty, Bar, ReportArgs};
use snapport_engine::ops::clone::{self as op, CloneMode};
use snapport_engine::vm::{parse_vm, Naming};
use snapport_engine::{usage, Result};

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// Print the plan (names, conflicts); change nothing.
    DryRun,
    /// Refuse when any name is taken.
    Strict,
    /// Number taken disk names until free, and report it.
    BestEffort,
}

#[derive(clap::Args)]
pub struct Args {
    /// vm/NAME or vms/NAME@SNAP.
    source: String,
    /// The new VM: vm/NEW.
    #[arg(long)]
    to: String,
    #[arg(long, value_enum, default_value_t = Mode::Strict)]
    mode: Mode,
    /// Put this in front of every disk name.
    #[arg(long, default_value = "")]
    name_prefix: String,
    /// Put this after every disk name.
    #[arg(long, default_value = "")]
    name_suffix: String,
    /// Replace OLD by NEW in every disk name (repeatable; before prefix and suffix).
    /// Without any naming flag, the old VM name in a disk name becomes the new one.
    #[arg(long, value_name = "OLD=NEW")]
    name_replace: Vec<String>,
    /// Put every copy in this pool (default: each in its source's pool).
    #[arg(short = 'n', long)]
    pool: Option<String>,
    #[command(flatten)]
    report: ReportArgs,
}

pub fn run(args: Args) -> Result<()> {
    let (vm, snapshot) = match (
        parse_vm(&args.source),
        snapport_engine::snapshots::parse_vms(&args.source),
    ) {
        (Some(v), _) => (v?, None),
        (_, Some(s)) => s.map(|(v, s)| (v, Some(s)))?,
        _ => {
            usage!(
                "clone takes vm/NAME or vms/NAME@SNAP, not {:?}",
                args.source
            )
        }
    };
    let Some(new) = parse_vm(&args.to) else {
        usage!("--to {:?}: the new VM, vm/NAME", args.to);
    };
    let request = op::CloneRequest {
        vm,
        snapshot,
        new: new?,
        mode: match args.mode {
            Mode::DryRun => CloneMode::DryRun,
            Mode::Strict => CloneMode::Strict,
            Mode::BestEffort => CloneMode::BestEffort,
        },
        naming: Naming::new(&args.name_prefix, &args.name_suffix, &args.name_replace)?,
        pool: args.pool,
    };
    let r = op::clone(&engine()?, &request, &mut Bar::new(args.report.quiet))?;
    if args.report.json() {
        print_json_pretty(&r);
        return Ok(());
    }
    if !args.report.quiet {
        for c in &r.conflicts {
            eprintln!("conflict: {c}");
        }
        for n in &r.changes {
            eprintln!("  {n}");
        }
        if r.cloned {
            let n = r.config.disks.len();
            eprintln!("cloned {} as {} ({n} disks)", r.source, r.target);
        } else {
            eprintln!(
                "dry run: {} would be cloned from {} as above; nothing changed",
                r.target, r.source
            );
        }
    }
    Ok(())
}
