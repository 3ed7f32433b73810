//! `snapport delete vd/NAME|vi/NAME|vds/DISK@SNAP`: removes a volume, unless another
//! volume reads through to it (a thin clone's image; `--force` deletes anyway and names
//! what breaks), or a disk snapshot (`Terminating` until the backend is done).

use crate::address::Address;
use crate::commands::create::check_kind;
use crate::commands::OutputArg;
use crate::snapshots::{self, Phase};
use crate::Engine;
use crate::{bail, Context as _, Result};

#[derive(clap::Args)]
pub struct Args {
    /// vd/NAME, vi/NAME or vds/DISK@SNAP.
    target: String,
    #[arg(short = 'n', long, default_value = crate::config::DEFAULT_POOL)]
    pool: String,
    /// Delete even though other volumes depend on it (they become unreadable).
    #[arg(long)]
    force: bool,
    #[arg(short, long)]
    quiet: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputArg::Text)]
    output: OutputArg,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(vms) = snapshots::parse_vms(&args.target) {
        let (vm, name) = vms?;
        return delete_vm_snapshot(&args, &vm, &name);
    }
    let target = Address::parse(&args.target)?;
    if let Address::DiskSnapshot { disk, snapshot } = &target {
        return delete_snapshot(&args, &target, disk, snapshot);
    }
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let mut pool = ctx.pool(&args.pool)?;
    let volumes = pool.list_volumes()?;
    let name = target.disk();
    let Some(volume) = volumes.iter().find(|v| v.name == name) else {
        bail!("no {target} in pool {}", args.pool);
    };
    check_kind(&target, volume.kind)?;
    let dependents: Vec<String> = volumes
        .iter()
        .filter(|v| v.parent.as_deref() == Some(name))
        .map(|v| format!("vd/{}", v.name))
        .collect();
    if !dependents.is_empty() && !args.force {
        bail!(
            "{target} is what {} read(s) through to; delete those first, or --force (they become unreadable)",
            dependents.join(", ")
        );
    }
    crate::live::refuse_if_held(&mut pool, name, &format!("deleting {target}"))?;
    pool.delete_volume(name)
        .with_context(|| format!("deleting {target} from pool {}", args.pool))?;
    match args.output {
        OutputArg::Json => println!(
            "{}",
            serde_json::json!({ "deleted": target.to_string(), "pool": args.pool, "broken": dependents })
        ),
        OutputArg::Text if !args.quiet => {
            eprintln!("deleted {target} from pool {}", args.pool);
            if !dependents.is_empty() {
                eprintln!(
                    "warning: {} can no longer be read: their image is gone",
                    dependents.join(", ")
                );
            }
        }
        OutputArg::Text => {}
    }
    Ok(())
}

fn delete_snapshot(args: &Args, target: &Address, disk: &str, name: &str) -> Result<()> {
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let home = &ctx.config.home;
    let mut pool = ctx.pool(&args.pool)?;
    let views = snapshots::list(home, &args.pool, &mut pool, Some(disk))?;
    let Some(view) = snapshots::find(&views, name) else {
        bail!("no {target} in pool {}", args.pool);
    };
    crate::live::remove_snapshot(home, &args.pool, &mut pool, view)?;
    match args.output {
        OutputArg::Json => println!(
            "{}",
            serde_json::json!({ "deleted": target.to_string(), "pool": args.pool })
        ),
        OutputArg::Text if !args.quiet => eprintln!("deleted {target} from pool {}", args.pool),
        OutputArg::Text => {}
    }
    Ok(())
}

/// `delete vms/VM@NAME`: each disk's snapshot (those still there), then the record.
fn delete_vm_snapshot(args: &Args, vm: &str, name: &str) -> Result<()> {
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let home = &ctx.config.home;
    let snap = snapshots::vm_snapshot(home, vm, name)?;
    let this = snap.address();
    if matches!(snap.phase, Phase::Pending | Phase::InProgress) {
        bail!("{this} is {:?}: wait for it to finish", snap.phase);
    }
    snapshots::update_vms(home, |m| {
        if let Some(s) = m.get_mut(&snapshots::key(vm, name)) {
            s.phase = Phase::Terminating;
        }
    })?;
    // Each disk's snapshot through its backend, by the backend's name of it (on CSI,
    // the driver's snapshot ID); one already gone is said, not skipped in silence.
    let mut gone = Vec::new();
    for d in &snap.config.disks {
        let mut pool = ctx.pool(&d.pool)?;
        let views = snapshots::list(home, &d.pool, &mut pool, Some(&d.name))?;
        match snapshots::of_vm(&views, vm, name, snap.created_unix_ms) {
            Some(view) => crate::live::remove_snapshot(home, &d.pool, &mut pool, view)
                .with_context(|| format!("deleting {this}"))?,
            None => gone.push(format!("vds/{}@{name}", d.name)),
        }
    }
    if !gone.is_empty() && args.output == OutputArg::Text && !args.quiet {
        eprintln!("note: {} no longer there", gone.join(", "));
    }
    snapshots::update_vms(home, |m| m.remove(&snapshots::key(vm, name)))?;
    match args.output {
        OutputArg::Json => println!("{}", serde_json::json!({ "deleted": this })),
        OutputArg::Text if !args.quiet => eprintln!("deleted {this} and its disk snapshots"),
        OutputArg::Text => {}
    }
    Ok(())
}
