//! `delete`: a volume, unless another volume reads through to it (a thin clone's image;
//! `force` deletes anyway and names what breaks), a disk snapshot (`Terminating` until
//! the backend is done), or a VM snapshot with its disk snapshots.

use crate::address::Address;
use crate::snapshots::{self, Phase};
use crate::Engine;
use crate::{bail, Context as _, Result};
use serde::Serialize;

/// What [`delete`] deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `vd/NAME`, `vi/NAME` or `vds/DISK@SNAP`.
    Address(Address),
    /// `vms/VM@NAME`.
    VmSnapshot {
        /// The VM.
        vm: String,
        /// The VM snapshot's name.
        name: String,
    },
}

impl Target {
    /// `vms/VM@NAME` or an [`Address`]; a malformed one is a usage error.
    pub fn parse(s: &str) -> Result<Target> {
        if let Some(vms) = snapshots::parse_vms(s) {
            let (vm, name) = vms?;
            return Ok(Target::VmSnapshot { vm, name });
        }
        Ok(Target::Address(Address::parse(s)?))
    }
}

/// A delete request.
#[derive(Debug, Clone)]
pub struct DeleteRequest {
    /// What goes.
    pub target: Target,
    /// The pool (of a volume or disk snapshot).
    pub pool: String,
    /// Delete a volume even though others read through to it (they become unreadable).
    pub force: bool,
}

/// What was deleted.
#[derive(Debug, Clone, Serialize)]
pub struct DeleteReport {
    /// The address deleted.
    pub deleted: String,
    /// The pool (none for a VM snapshot, whose disks may span pools).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// For a volume: the volumes that read through to it and can no longer be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<Vec<String>>,
    /// For a VM snapshot: its disk snapshots that were already gone.
    #[serde(skip)]
    pub already_gone: Vec<String>,
}

/// `delete`: see the module. A disk a running QEMU holds is not deleted; its snapshots
/// are deleted through QEMU.
pub fn delete(engine: &Engine, req: &DeleteRequest) -> Result<DeleteReport> {
    let target = match &req.target {
        Target::VmSnapshot { vm, name } => return delete_vm_snapshot(engine, vm, name),
        Target::Address(a) => a,
    };
    let home = &engine.config.home;
    let mut pool = engine.pool(&req.pool)?;
    if let Address::DiskSnapshot { disk, snapshot } = target {
        let views = snapshots::list(home, &req.pool, &mut pool, Some(disk))?;
        let Some(view) = snapshots::find(&views, snapshot) else {
            bail!("no {target} in pool {}", req.pool);
        };
        crate::live::remove_snapshot(home, &req.pool, &mut pool, view)?;
        return Ok(DeleteReport {
            deleted: target.to_string(),
            pool: Some(req.pool.clone()),
            broken: None,
            already_gone: Vec::new(),
        });
    }
    let volumes = pool.list_volumes()?;
    let name = target.disk();
    let Some(volume) = volumes.iter().find(|v| v.name == name) else {
        bail!("no {target} in pool {}", req.pool);
    };
    // H-import moves check_kind to a domain module; the lead fixes this path at merge.
    crate::volume::check_kind(target, volume.kind)?;
    let dependents: Vec<String> = volumes
        .iter()
        .filter(|v| v.parent.as_deref() == Some(name))
        .map(|v| format!("vd/{}", v.name))
        .collect();
    if !dependents.is_empty() && !req.force {
        bail!(
            "{target} is what {} read(s) through to; delete those first, or --force (they become unreadable)",
            dependents.join(", ")
        );
    }
    crate::live::refuse_if_held(&mut pool, name, &format!("deleting {target}"))?;
    pool.delete_volume(name)
        .with_context(|| format!("deleting {target} from pool {}", req.pool))?;
    Ok(DeleteReport {
        deleted: target.to_string(),
        pool: Some(req.pool.clone()),
        broken: Some(dependents),
        already_gone: Vec::new(),
    })
}

/// `delete vms/VM@NAME`: each disk's snapshot (those still there), then the record.
fn delete_vm_snapshot(engine: &Engine, vm: &str, name: &str) -> Result<DeleteReport> {
    let home = &engine.config.home;
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
        let mut pool = engine.pool(&d.pool)?;
        let views = snapshots::list(home, &d.pool, &mut pool, Some(&d.name))?;
        match snapshots::of_vm(&views, vm, name, snap.created_unix_ms) {
            Some(view) => crate::live::remove_snapshot(home, &d.pool, &mut pool, view)
                .with_context(|| format!("deleting {this}"))?,
            None => gone.push(format!("vds/{}@{name}", d.name)),
        }
    }
    snapshots::update_vms(home, |m| m.remove(&snapshots::key(vm, name)))?;
    Ok(DeleteReport {
        deleted: this,
        pool: None,
        broken: None,
        already_gone: gone,
    })
}
