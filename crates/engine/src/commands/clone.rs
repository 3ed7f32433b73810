//! `snapport clone vm/SRC|vms/SRC@SNAP --to vm/NEW`: a new VM with full copies of the
//! source's disks (now, or as the snapshot has them), renamed as Deckhouse's clone
//! renames (`--name-replace OLD=NEW`, then `--name-prefix`/`--name-suffix`), with new
//! MAC addresses and IPs cleared. `strict` (the default) refuses any name that is taken;
//! `best-effort` numbers a taken disk name (`-2`, `-3`, ...) and says so; `dry-run`
//! prints the plan. All or nothing: a failed copy deletes the copies already made.

use crate::address::Address;
use crate::commands::upload::write_volume;
use crate::commands::{new_progress, OutputArg};
use crate::vm::{self, Naming};
use crate::Engine;
use crate::{bail, Context as _, Result};
use snapport_core::import::{ImportOptions, Source};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Mode {
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
    #[arg(short, long)]
    quiet: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputArg::Text)]
    output: OutputArg,
}

pub fn run(args: Args) -> Result<()> {
    let (src, snapshot) = match (
        vm::parse_vm(&args.source),
        crate::snapshots::parse_vms(&args.source),
    ) {
        (Some(v), _) => (v?, None),
        (_, Some(s)) => {
            let (v, s) = s?;
            (v, Some(s))
        }
        _ => bail!(
            "clone takes vm/NAME or vms/NAME@SNAP, not {:?}",
            args.source
        ),
    };
    let Some(new) = vm::parse_vm(&args.to) else {
        bail!("--to {:?}: the new VM, vm/NAME", args.to);
    };
    let new = new?;
    let naming = Naming::new(&args.name_prefix, &args.name_suffix, &args.name_replace)?;
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let home = &ctx.config.home;
    let config = match &snapshot {
        None => vm::load(home, &src)?,
        Some(s) => {
            let snap = crate::snapshots::vm_snapshot(home, &src, s)?;
            if snap.phase != crate::snapshots::Phase::Ready {
                bail!("{} is {:?}, not Ready", snap.address(), snap.phase);
            }
            snap.config
        }
    };
    let (mut clone, mut notes) = vm::clone_config(&config, &new, &naming, args.pool.as_deref())?;

    // Names: the VM's, and each disk's in its pool (also against the clone's own).
    let mut conflicts = Vec::new();
    let vm_taken = vm::exists(home, &new);
    if vm_taken {
        conflicts.push(format!("vm/{new} exists"));
    }
    let mut taken: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in &clone.disks {
        if !taken.contains_key(&d.pool) {
            let names = ctx
                .pool(&d.pool)?
                .list_volumes()?
                .into_iter()
                .map(|v| v.name)
                .collect();
            taken.insert(d.pool.clone(), names);
        }
    }
    for d in &mut clone.disks {
        let names = taken.get_mut(&d.pool).expect("listed above");
        if names.contains(&d.name) {
            conflicts.push(format!("vd/{} exists in pool {}", d.name, d.pool));
            if args.mode == Mode::BestEffort {
                let free = (2..)
                    .map(|n| format!("{}-{n}", d.name))
                    .find(|c| !names.contains(c))
                    .expect("some number is free");
                notes.push(format!("vd/{} is taken: vd/{free} instead", d.name));
                d.name = free;
            }
        }
        names.insert(d.name.clone());
    }
    let blocked = vm_taken || (args.mode == Mode::Strict && !conflicts.is_empty());
    if args.mode == Mode::DryRun || blocked {
        if args.mode != Mode::DryRun {
            bail!(
                "vm/{new} was not cloned from {} ({:?}): {}; rename with --name-prefix, --name-suffix or --name-replace, or --mode best-effort",
                args.source,
                args.mode,
                conflicts.join("; ")
            );
        }
        return report(&args, &new, &clone, &notes, &conflicts, false);
    }

    // The copies, each through the import path; on failure, the ones made go again.
    let mut made: Vec<(String, String)> = Vec::new();
    let copied = (|| -> Result<()> {
        for (from, to) in config.disks.iter().zip(&clone.disks) {
            let mut reader = ctx.pool(&from.pool)?;
            let backend = crate::snapshots::vm_backend_snapshot(
                &ctx.config.home,
                &from.pool,
                &mut reader,
                &from.name,
                &src,
                snapshot.as_deref(),
            )?;
            let mut volume = reader
                .open_volume(&from.name, backend.as_deref())
                .with_context(|| format!("opening vd/{} of pool {}", from.name, from.pool))?;
            let size = volume.info.size;
            let mut pool = ctx.pool(&to.pool)?;
            let mut progress = new_progress(args.quiet);
            write_volume(
                &mut pool,
                &Address::Disk(to.name.clone()),
                size,
                Source::Volume(&mut volume),
                &ImportOptions::default(),
                progress.as_mut(),
                |_| Ok(Vec::new()),
            )
            .with_context(|| format!("copying vd/{} to vd/{}", from.name, to.name))?;
            made.push((to.pool.clone(), to.name.clone()));
        }
        vm::save_new(home, &clone)
    })();
    if let Err(e) = copied {
        for (pool, name) in &made {
            if let Ok(mut p) = ctx.pool(pool) {
                let _ = p.delete_volume(name);
            }
        }
        return Err(e.context(format!(
            "vm/{new} was not cloned; the copies already made were deleted"
        )));
    }
    report(&args, &new, &clone, &notes, &conflicts, true)
}

fn report(
    args: &Args,
    new: &str,
    clone: &vm::VmConfig,
    notes: &[String],
    conflicts: &[String],
    cloned: bool,
) -> Result<()> {
    match args.output {
        OutputArg::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "target": format!("vm/{new}"),
                "source": args.source,
                "mode": format!("{:?}", args.mode),
                "cloned": cloned,
                "config": clone,
                "changes": notes,
                "conflicts": conflicts,
            }))?
        ),
        OutputArg::Text if !args.quiet => {
            for c in conflicts {
                eprintln!("conflict: {c}");
            }
            for n in notes {
                eprintln!("  {n}");
            }
            if cloned {
                eprintln!(
                    "cloned {} as vm/{new} ({} disks)",
                    args.source,
                    clone.disks.len()
                );
            } else {
                eprintln!(
                    "dry run: vm/{new} would be cloned from {} as above; nothing changed",
                    args.source
                );
            }
        }
        OutputArg::Text => {}
    }
    Ok(())
}
