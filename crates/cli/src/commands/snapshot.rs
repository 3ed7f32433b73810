//! `snapport snapshot create|gc`: take snapshots of a disk or a VM; clean up what died
//! or failed snapshot operations left.

use crate::render::{engine, print_json, print_json_pretty, Bar, ReportArgs};
use snapport_engine::ops::snapshot::{
    self, Consistency, CreateReport, CreateRequest, GcRequest, Target,
};
use snapport_engine::Result;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Take a snapshot of a disk, or of all of a VM's disks at once.
    Create(CreateArgs),
    /// Clean up what died or failed snapshot operations left: backend snapshots a
    /// rollback could not delete, attempts a killed process left half-done, and records
    /// of failed attempts.
    Gc(GcArgs),
}

#[derive(clap::Args)]
pub struct GcArgs {
    /// vd/NAME or vm/NAME (default: every disk of the pool).
    target: Option<String>,
    #[arg(short = 'n', long, default_value = snapport_engine::config::DEFAULT_POOL)]
    pool: String,
    #[command(flatten)]
    out: ReportArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ConsistencyArg {
    /// Fail unless the guest's file systems are frozen or the disk is not in use.
    Required,
    /// Take it anyway and record `consistent: false` when that cannot be ensured.
    BestEffort,
}

#[derive(clap::Args)]
pub struct CreateArgs {
    /// vd/NAME, or vm/NAME for all of a VM's disks under one freeze.
    target: String,
    /// The snapshot's name, unique per disk (default: the UTC date and time to the
    /// millisecond, `20261124-064012.345`, with `-2`, `-3`… if taken).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, value_enum, default_value_t = ConsistencyArg::BestEffort)]
    consistency: ConsistencyArg,
    /// A note kept with the snapshot.
    #[arg(long)]
    comment: Option<String>,
    /// The QEMU guest agent's Unix socket: the guest's file systems are frozen while the
    /// snapshot is taken.
    #[arg(long, value_name = "SOCKET")]
    guest_agent: Option<std::path::PathBuf>,
    /// A command (`sh -c`) run before the snapshot, after the pool's own; repeatable, run
    /// in order. A failure means "not quiesced".
    #[arg(long = "pre-hook", value_name = "CMD")]
    pre_hooks: Vec<String>,
    /// A command run after the snapshot (and the thaw) on every path; repeatable.
    #[arg(long = "post-hook", value_name = "CMD")]
    post_hooks: Vec<String>,
    #[arg(short = 'n', long, default_value = snapport_engine::config::DEFAULT_POOL)]
    pool: String,
    #[command(flatten)]
    out: ReportArgs,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Create(args) => create(args),
        Command::Gc(args) => gc(args),
    }
}

fn create(args: CreateArgs) -> Result<()> {
    let req = CreateRequest {
        target: Target::parse(&args.target, "snapshot create takes a disk, vd/NAME")?,
        name: args.name,
        consistency: match args.consistency {
            ConsistencyArg::Required => Consistency::Required,
            ConsistencyArg::BestEffort => Consistency::BestEffort,
        },
        comment: args.comment,
        guest_agent: args.guest_agent,
        pre_hooks: args.pre_hooks,
        post_hooks: args.post_hooks,
        pool: args.pool,
    };
    let r = snapshot::create(&engine()?, &req, &mut Bar::lines(args.out.quiet))?;
    if args.out.json() {
        print_json_pretty(&r);
        return Ok(());
    }
    if !args.out.text() {
        return Ok(());
    }
    match &r {
        CreateReport::Disk(d) => {
            let s = &d.snapshot;
            let how = if s.consistent {
                "consistent"
            } else if d.in_use {
                "not consistent: the disk is in use and its guest was not frozen"
            } else {
                "not consistent: quiescing failed"
            };
            let id = s.id.as_deref().unwrap_or("-");
            eprintln!(
                "created {} in pool {} (Ready, {how}; backend ID {id})",
                s.name, s.pool
            );
        }
        CreateReport::Vm(v) => {
            let how = if v.consistent {
                "consistent"
            } else {
                "not consistent"
            };
            eprintln!("created {} ({} disks, Ready, {how})", v.name, v.disks.len());
        }
    }
    Ok(())
}

fn gc(args: GcArgs) -> Result<()> {
    let what = "snapshot gc takes a disk, vd/NAME, or a VM, vm/NAME";
    let req = GcRequest {
        target: args
            .target
            .as_deref()
            .map(|t| Target::parse(t, what))
            .transpose()?,
        pool: args.pool,
    };
    let r = snapshot::gc(&engine()?, &req)?;
    if args.out.json() {
        print_json(&r, false);
        return Ok(());
    }
    if args.out.text() {
        r.removed.iter().for_each(|line| eprintln!("{line}"));
        if r.removed.is_empty() {
            eprintln!("nothing to clean up");
        }
    }
    Ok(())
}
