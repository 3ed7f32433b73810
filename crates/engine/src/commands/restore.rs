//! `snapport restore vd/NAME --from vds/NAME@SNAP --mode dry-run|strict|best-effort`: the
//! disk's content becomes the snapshot's.
//!
//! First a conflict report. Some conflicts stop every mode (the snapshot is not `Ready`,
//! its size is not the disk's, the backend cannot restore, another snapshot operation is
//! under way); others only `strict` (snapshots taken after this one, which stay but no
//! longer follow from the disk's content). `dry-run`, the default, prints the report and
//! changes nothing.
//!
//! A backend that cannot restore in place but can write (CSI has no in-place restore)
//! is restored by copy: the snapshot's bytes, read through the plugin, written over the
//! disk, zeros included. Not atomic: a copy that fails half-way says the disk holds part
//! of the snapshot, and the same restore again finishes the job.

use crate::address::Address;
use crate::snapshots::{self, Phase};
use crate::Engine;
use crate::{bail, Context as _, Result};
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
    /// vd/NAME, or vm/NAME for all of a VM's disks and its config.
    target: String,
    /// vds/NAME@SNAP: a snapshot of that same disk (for a VM, vms/VM@SNAP).
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
    if let Some(vm) = crate::vm::parse_vm(&args.target) {
        return restore_vm(&args, &vm?);
    }
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
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let (conflicts, mut pool, restore) = match check_disk(&ctx, &args.pool, disk, snapshot, None)? {
        Found::Missing(why) => bail!("{why}"),
        Found::Present(c, pool, restore) => (c, pool, restore),
    };
    let blocked =
        conflicts.iter().any(|c| c.fatal) || (args.mode == Mode::Strict && !conflicts.is_empty());
    let restored = args.mode != Mode::DryRun && !blocked;
    if restored {
        crate::live::refuse_if_held(&mut pool, disk, &format!("restoring {target}"))?;
        restore.run(
            &ctx,
            &mut pool,
            args.output != crate::commands::OutputArg::Text,
        )?;
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
                "by_copy": restore.by_copy,
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
                let how = if restore.by_copy {
                    ", by copy: the backend cannot restore in place"
                } else {
                    ""
                };
                eprintln!("restored {target} from {from} ({mode}{how}); its writes since are gone");
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

/// What restoring one disk from one of its snapshots meets.
enum Found {
    /// The disk or the snapshot is not there (a missing dependency, for a VM).
    Missing(String),
    /// The conflicts, the pool's instance, and how the disk is restored.
    Present(Vec<Conflict>, Box<snapport_host::Instance>, Box<Restore>),
}

/// How one disk is restored from one snapshot.
struct Restore {
    disk: String,
    pool: String,
    snapshot: snapshots::View,
    /// The backend cannot restore in place: the snapshot's bytes are copied over the disk.
    by_copy: bool,
}

impl Restore {
    fn run(&self, ctx: &Engine, instance: &mut snapport_host::Instance, quiet: bool) -> Result<()> {
        let what = || {
            format!(
                "restoring vd/{} from {}",
                self.disk,
                self.snapshot.address()
            )
        };
        let Some(backend_name) = self.snapshot.backend_name.as_deref() else {
            bail!(
                "{}: the backend does not list {}",
                what(),
                self.snapshot.address()
            );
        };
        if !self.by_copy {
            instance
                .restore_snapshot(&self.disk, backend_name)
                .with_context(what)?;
        } else {
            let mut reader = ctx.pool(&self.pool)?;
            let mut source = reader
                .open_volume(&self.disk, Some(backend_name))
                .with_context(what)?;
            let size = source.info.size;
            let mut progress = crate::commands::new_progress(quiet);
            crate::commands::upload::write_into(
                instance,
                &Address::Disk(self.disk.clone()),
                size,
                snapport_core::import::Source::Volume(&mut source),
                &snapport_core::import::ImportOptions::default(),
                progress.as_mut(),
                |_| Ok(Vec::new()),
                true,
            )
            .with_context(what)?;
        }
        snapshots::update(&ctx.config.home, &self.pool, |r| {
            r.heads
                .insert(self.disk.clone(), self.snapshot.name.clone());
        })
    }
}

/// The conflict report for restoring vd/`disk` of `pool_name` from its snapshot
/// `snapshot`, and the pool's instance to do it with.
/// For a VM (`vm`: its name and the VM snapshot's date), the disk snapshot must be the
/// VM snapshot's ([`snapshots::of_vm`]).
fn check_disk(
    ctx: &Engine,
    pool_name: &str,
    disk: &str,
    snapshot: &str,
    vm: Option<(&str, u64)>,
) -> Result<Found> {
    let target = format!("vd/{disk}");
    let from = format!("vds/{disk}@{snapshot}");
    let mut pool = ctx.pool(pool_name)?;
    let Some(volume) = pool.list_volumes()?.into_iter().find(|v| v.name == disk) else {
        return Ok(Found::Missing(format!("no {target} in pool {pool_name}")));
    };
    let views = snapshots::list(&ctx.config.home, pool_name, &mut pool, Some(disk))?;
    let found = match vm {
        Some((vm, created)) => snapshots::of_vm(&views, vm, snapshot, created),
        None => snapshots::find(&views, snapshot),
    };
    let Some(snap) = found else {
        return Ok(Found::Missing(format!("no {from} in pool {pool_name}")));
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
    let capabilities = pool.info()?.capabilities;
    let by_copy = !capabilities.contains(Capabilities::SNAPSHOT_RESTORE);
    if by_copy && !capabilities.contains(Capabilities::WRITE) {
        fatal(format!(
            "the plugin of pool {pool_name} can neither restore snapshots in place nor write disks; create a new disk from {from} instead"
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

    let restore = Box::new(Restore {
        disk: disk.to_string(),
        pool: pool_name.to_string(),
        snapshot: snap.clone(),
        by_copy,
    });
    Ok(Found::Present(conflicts, Box::new(pool), restore))
}

/// `restore vm/NAME --from vms/NAME@SNAP`: every disk from its snapshot, and the config
/// as it was. A disk (or its snapshot) that is gone is a missing dependency: `strict`
/// refuses, `best-effort` leaves it out (and out of the restored config) and says so.
/// A conflict that stops one disk stops the whole VM: it is restored all together.
fn restore_vm(args: &Args, vm: &str) -> Result<()> {
    let (of, name) = match snapshots::parse_vms(&args.from) {
        Some(v) => v?,
        None => bail!("--from {}: a VM snapshot, vms/VM@SNAP", args.from),
    };
    if of != vm {
        bail!("{} is a snapshot of vm/{of}, not of vm/{vm}", args.from);
    }
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let home = &ctx.config.home;
    let snap = snapshots::vm_snapshot(home, vm, &name)?;
    let from = snap.address();
    let current = crate::vm::load(home, vm)?;
    let mut conflicts = Vec::new();
    if snap.phase != Phase::Ready {
        conflicts.push(Conflict {
            fatal: true,
            message: format!("{from} is {:?}, not Ready", snap.phase),
        });
    }
    let mut dropped = Vec::new();
    let mut work = Vec::new();
    for d in &snap.config.disks {
        match check_disk(
            &ctx,
            &d.pool,
            &d.name,
            &name,
            Some((vm, snap.created_unix_ms)),
        )? {
            Found::Missing(why) => {
                dropped.push(d.name.clone());
                conflicts.push(Conflict {
                    fatal: false,
                    message: format!(
                        "missing dependency: {why} (best-effort leaves vd/{} out)",
                        d.name
                    ),
                });
            }
            Found::Present(c, pool, restore) => {
                conflicts.extend(c);
                work.push((pool, restore));
            }
        }
    }
    if work.is_empty() {
        conflicts.push(Conflict {
            fatal: true,
            message: format!("none of {from}'s disks is there to restore"),
        });
    }
    let now: Vec<_> = current.disks.iter().map(|d| (&d.pool, &d.name)).collect();
    let then: Vec<_> = snap
        .config
        .disks
        .iter()
        .map(|d| (&d.pool, &d.name))
        .collect();
    if now != then {
        conflicts.push(Conflict {
            fatal: false,
            message: format!(
                "vm/{vm}'s disks changed since {from}; its config goes back to the snapshot's"
            ),
        });
    }
    let blocked =
        conflicts.iter().any(|c| c.fatal) || (args.mode == Mode::Strict && !conflicts.is_empty());
    let restored = args.mode != Mode::DryRun && !blocked;
    if restored {
        for (pool, restore) in &mut work {
            let disk = restore.disk.clone();
            crate::live::refuse_if_held(pool, &disk, &format!("restoring vm/{vm}"))?;
        }
        for (pool, restore) in &mut work {
            restore.run(&ctx, pool, args.output != crate::commands::OutputArg::Text)?;
        }
        let mut config = snap.config.clone();
        config.disks.retain(|d| !dropped.contains(&d.name));
        crate::vm::save(home, &config)?;
    }
    let mode = format!("{:?}", args.mode);
    match args.output {
        crate::commands::OutputArg::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "target": format!("vm/{vm}"),
                "from": from,
                "mode": mode,
                "restored": restored,
                "dropped": if restored { dropped.iter().map(|d| format!("vd/{d}")).collect() } else { Vec::new() },
                "conflicts": conflicts.iter().map(|c| serde_json::json!({
                    "fatal": c.fatal, "message": c.message,
                })).collect::<Vec<_>>(),
            }))?
        ),
        crate::commands::OutputArg::Text if blocked && args.mode != Mode::DryRun => {}
        crate::commands::OutputArg::Text => {
            for c in &conflicts {
                eprintln!(
                    "{}: {}",
                    if c.fatal { "conflict" } else { "warning" },
                    c.message
                );
            }
            if restored {
                eprintln!(
                    "restored vm/{vm} from {from} ({mode}): {} disks{}",
                    work.len(),
                    if dropped.is_empty() {
                        String::new()
                    } else {
                        format!(", left out: {}", dropped.join(", "))
                    }
                );
            } else if !blocked {
                eprintln!("dry run: vm/{vm} would be restored from {from}; nothing changed (run with --mode strict or best-effort)");
            } else {
                eprintln!("dry run: vm/{vm} could not be restored from {from} as things are; nothing changed");
            }
        }
    }
    if blocked && args.mode != Mode::DryRun {
        bail!(
            "vm/{vm} was not restored from {from} ({mode}): {}",
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
