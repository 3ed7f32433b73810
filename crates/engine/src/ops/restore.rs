//! `restore`: a disk's content becomes one of its snapshot's; a VM's disks and config
//! become a VM snapshot's.
//!
//! First a conflict report. Some conflicts stop every mode (the snapshot is not `Ready`,
//! its size is not the disk's, the backend cannot restore, another snapshot operation is
//! under way); others only `strict` (snapshots taken after this one, which stay but no
//! longer follow from the disk's content). `DryRun` reports and changes nothing.
//!
//! A backend that cannot restore in place but can write (CSI has no in-place restore)
//! is restored by copy: the snapshot's bytes, read through the plugin, written over the
//! disk, zeros included. Not atomic: a copy that fails half-way says the disk holds part
//! of the snapshot, and the same restore again finishes the job.

use crate::address::Address;
use crate::snapshots::{self, Phase};
use crate::Engine;
use crate::{bail, Context as _, Result};
use serde::Serialize;
use snapport_core::progress::Progress;
use snapport_host::Capabilities;

/// How far a restore goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Report what would happen; change nothing.
    DryRun,
    /// Restore only when there is no conflict at all.
    Strict,
    /// Restore unless a conflict makes it impossible; report what was set aside.
    BestEffort,
}

/// What is restored from what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A disk (`vd/NAME`) from one of its snapshots (`vds/NAME@SNAP`).
    Disk {
        /// The disk.
        target: Address,
        /// The snapshot.
        from: Address,
    },
    /// A VM (`vm/NAME`): every disk and the config, from a VM snapshot `vms/VM@SNAP`.
    Vm {
        /// The VM.
        vm: String,
        /// The VM the snapshot is of.
        of: String,
        /// The VM snapshot's name.
        snapshot: String,
    },
}

impl Target {
    /// `vd/NAME` with `vds/NAME@SNAP`, or `vm/NAME` with `vms/NAME@SNAP`, as typed; a
    /// malformed address is a usage error.
    pub fn parse(target: &str, from: &str) -> Result<Target> {
        if let Some(vm) = crate::vm::parse_vm(target) {
            let vm = vm?;
            let (of, snapshot) = match snapshots::parse_vms(from) {
                Some(v) => v?,
                None => {
                    return Err(crate::Error::usage(format!(
                        "--from {from}: a VM snapshot, vms/VM@SNAP"
                    )))
                }
            };
            return Ok(Target::Vm { vm, of, snapshot });
        }
        Ok(Target::Disk {
            target: Address::parse(target)?,
            from: Address::parse(from)?,
        })
    }
}

/// A restore request.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// What from what.
    pub target: Target,
    /// How far to go.
    pub mode: Mode,
    /// The pool of the disk (a VM's disks name their pools).
    pub pool: String,
}

/// One finding of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    /// Stops every mode, not only `strict`.
    pub fatal: bool,
    /// What it is.
    pub message: String,
}

/// What a disk restore found and did (`restore vd/... -o json`).
#[derive(Debug, Clone, Serialize)]
pub struct DiskRestoreReport {
    /// `vd/NAME`.
    pub target: String,
    /// `vds/NAME@SNAP`.
    pub from: String,
    /// The pool.
    pub pool: String,
    /// `DryRun`, `Strict` or `BestEffort`.
    pub mode: String,
    /// The disk's content is the snapshot's now.
    pub restored: bool,
    /// By copying the snapshot's bytes (the backend cannot restore in place).
    pub by_copy: bool,
    /// What the report found.
    pub conflicts: Vec<Conflict>,
}

/// What a VM restore found and did (`restore vm/... -o json`).
#[derive(Debug, Clone, Serialize)]
pub struct VmRestoreReport {
    /// `vm/NAME`.
    pub target: String,
    /// `vms/NAME@SNAP`.
    pub from: String,
    /// `DryRun`, `Strict` or `BestEffort`.
    pub mode: String,
    /// The disks and config are the snapshot's now.
    pub restored: bool,
    /// Disks (`vd/NAME`) left out of the restored VM because they are gone (only when
    /// restored).
    pub dropped: Vec<String>,
    /// What the report found.
    pub conflicts: Vec<Conflict>,
    /// How many disks were (or would be) restored.
    #[serde(skip)]
    pub disks: usize,
}

/// What [`restore`] found and did; its JSON is the disk's or the VM's report.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RestoreReport {
    /// A disk restore.
    Disk(DiskRestoreReport),
    /// A VM restore.
    Vm(VmRestoreReport),
}

impl RestoreReport {
    /// The conflicts found.
    pub fn conflicts(&self) -> &[Conflict] {
        match self {
            RestoreReport::Disk(r) => &r.conflicts,
            RestoreReport::Vm(r) => &r.conflicts,
        }
    }

    /// Why the restore was refused: the conflicts that stopped it. None when it was
    /// done, or for a dry run (which refuses nothing). The request failed with this.
    pub fn refusal(&self, mode: Mode) -> Option<String> {
        let (target, from, mode_name, restored) = match self {
            RestoreReport::Disk(r) => (&r.target, &r.from, &r.mode, r.restored),
            RestoreReport::Vm(r) => (&r.target, &r.from, &r.mode, r.restored),
        };
        if restored || mode == Mode::DryRun {
            return None;
        }
        Some(format!(
            "{target} was not restored from {from} ({mode_name}): {}",
            self.conflicts()
                .iter()
                .filter(|c| c.fatal || mode == Mode::Strict)
                .map(|c| c.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ))
    }

    /// Whether a conflict stops the restore in `mode` (a dry run says so, too).
    pub fn blocked(&self, mode: Mode) -> bool {
        blocked(self.conflicts(), mode)
    }
}

fn blocked(conflicts: &[Conflict], mode: Mode) -> bool {
    conflicts.iter().any(|c| c.fatal) || (mode == Mode::Strict && !conflicts.is_empty())
}

/// `restore`: the conflict report, and the restore unless a dry run or a conflict stops
/// it. A refused restore is not an error here: the report says so ([`RestoreReport::
/// refusal`]) and the caller fails with it. A copy reports its bytes to `progress`.
pub fn restore(
    engine: &Engine,
    req: &RestoreRequest,
    progress: &mut dyn Progress,
) -> Result<RestoreReport> {
    let (target, from) = match &req.target {
        Target::Vm { vm, of, snapshot } => {
            if of != vm {
                bail!("vms/{of}@{snapshot} is a snapshot of vm/{of}, not of vm/{vm}");
            }
            return restore_vm(engine, req, vm, snapshot, progress).map(RestoreReport::Vm);
        }
        Target::Disk { target, from } => (target, from),
    };
    let Address::Disk(disk) = target else {
        bail!("{target}: restore takes a disk, vd/NAME");
    };
    let Address::DiskSnapshot { disk: of, snapshot } = from else {
        bail!("--from {from}: a disk snapshot, vds/DISK@SNAP");
    };
    if of != disk {
        bail!("{from} is a snapshot of vd/{of}, not of {target}; to make a new disk from it, use `snapport create vd/NEW --from {from}`");
    }
    let (conflicts, mut pool, restore) = match check_disk(engine, &req.pool, disk, snapshot, None)?
    {
        Found::Missing(why) => bail!("{why}"),
        Found::Present(c, pool, restore) => (c, pool, restore),
    };
    let restored = req.mode != Mode::DryRun && !blocked(&conflicts, req.mode);
    if restored {
        crate::live::refuse_if_held(&mut pool, disk, &format!("restoring {target}"))?;
        restore.run(engine, &mut pool, progress)?;
    }
    Ok(RestoreReport::Disk(DiskRestoreReport {
        target: target.to_string(),
        from: from.to_string(),
        pool: req.pool.clone(),
        mode: format!("{:?}", req.mode),
        restored,
        by_copy: restore.by_copy,
        conflicts,
    }))
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
    fn run(
        &self,
        ctx: &Engine,
        instance: &mut snapport_host::Instance,
        progress: &mut dyn Progress,
    ) -> Result<()> {
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
            // H-import moves write_into to a domain module; the lead fixes this path.
            crate::volume::write_into(
                instance,
                &Address::Disk(self.disk.clone()),
                size,
                snapport_core::import::Source::Volume(&mut source),
                &snapport_core::import::ImportOptions::default(),
                progress,
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
fn restore_vm(
    ctx: &Engine,
    req: &RestoreRequest,
    vm: &str,
    name: &str,
    progress: &mut dyn Progress,
) -> Result<VmRestoreReport> {
    let home = &ctx.config.home;
    let snap = snapshots::vm_snapshot(home, vm, name)?;
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
            ctx,
            &d.pool,
            &d.name,
            name,
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
    let restored = req.mode != Mode::DryRun && !blocked(&conflicts, req.mode);
    if restored {
        for (pool, restore) in &mut work {
            let disk = restore.disk.clone();
            crate::live::refuse_if_held(pool, &disk, &format!("restoring vm/{vm}"))?;
        }
        for (pool, restore) in &mut work {
            restore.run(ctx, pool, progress)?;
        }
        let mut config = snap.config.clone();
        config.disks.retain(|d| !dropped.contains(&d.name));
        crate::vm::save(home, &config)?;
    }
    Ok(VmRestoreReport {
        target: format!("vm/{vm}"),
        from,
        mode: format!("{:?}", req.mode),
        restored,
        dropped: if restored {
            dropped.iter().map(|d| format!("vd/{d}")).collect()
        } else {
            Vec::new()
        },
        conflicts,
        disks: work.len(),
    })
}
