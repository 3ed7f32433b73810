//! Clone: a new VM with full copies of a VM's disks (now, or as one of its snapshots has
//! them), renamed as Deckhouse's clone renames (replacements, then prefix and suffix),
//! with new MAC addresses and IPs cleared. [`CloneMode::Strict`] refuses any name that
//! is taken; [`CloneMode::BestEffort`] numbers a taken disk name (`-2`, `-3`, ...) and
//! says so; [`CloneMode::DryRun`] only plans. All or nothing: a failed copy deletes the
//! copies already made.

use crate::address::Address;
use crate::vm::{self, Naming, VmConfig};
use crate::volume::write_volume;
use crate::Engine;
use crate::{bail, Context as _, Result};
use serde::Serialize;
use snapport_core::import::{ImportOptions, Source};
use snapport_core::progress::Progress;
use std::collections::{BTreeMap, BTreeSet};

/// What a clone does about names that are taken. Serialized (and shown in messages) as
/// `DryRun`, `Strict`, `BestEffort`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub enum CloneMode {
    /// Plan (names, conflicts); change nothing.
    DryRun,
    /// Refuse when any name is taken.
    Strict,
    /// Number taken disk names until free, and report it.
    BestEffort,
}

/// `clone vm/SRC|vms/SRC@SNAP --to vm/NEW`.
#[derive(Debug, Clone)]
pub struct CloneRequest {
    /// The source VM's name.
    pub vm: String,
    /// A snapshot of it to clone as it was (vms/VM@SNAP), or `None` for now.
    pub snapshot: Option<String>,
    /// The new VM's name.
    pub new: String,
    /// What to do about taken names.
    pub mode: CloneMode,
    /// How disk names change.
    pub naming: Naming,
    /// Put every copy in this pool (`None`: each in its source's pool).
    pub pool: Option<String>,
}

impl CloneRequest {
    /// The source as addressed: `vm/NAME` or `vms/NAME@SNAP`.
    pub fn source(&self) -> String {
        match &self.snapshot {
            None => format!("vm/{}", self.vm),
            Some(s) => format!("vms/{}@{s}", self.vm),
        }
    }
}

/// What a clone made (or would make): the JSON document of `clone -o json`.
#[derive(Debug, Clone, Serialize)]
pub struct CloneReport {
    /// What changed from the source's config (names, MACs, IPs), a line each.
    pub changes: Vec<String>,
    /// Whether the VM was made (false for a dry run).
    pub cloned: bool,
    /// The new VM's config.
    pub config: VmConfig,
    /// Names that were taken.
    pub conflicts: Vec<String>,
    /// The mode.
    pub mode: CloneMode,
    /// `vm/SRC` or `vms/SRC@SNAP`.
    pub source: String,
    /// `vm/NEW`.
    pub target: String,
}

/// Clones a VM (or plans it, in [`CloneMode::DryRun`]); each disk copy goes through
/// `progress`.
pub fn clone(
    engine: &Engine,
    req: &CloneRequest,
    progress: &mut dyn Progress,
) -> Result<CloneReport> {
    let (src, snapshot, new) = (&req.vm, &req.snapshot, &req.new);
    let home = &engine.config.home;
    let config = match snapshot {
        None => vm::load(home, src)?,
        Some(s) => {
            let snap = crate::snapshots::vm_snapshot(home, src, s)?;
            if snap.phase != crate::snapshots::Phase::Ready {
                bail!("{} is {:?}, not Ready", snap.address(), snap.phase);
            }
            snap.config
        }
    };
    let (mut clone, mut notes) = vm::clone_config(&config, new, &req.naming, req.pool.as_deref())?;

    // Names: the VM's, and each disk's in its pool (also against the clone's own).
    let mut conflicts = Vec::new();
    let vm_taken = vm::exists(home, new);
    if vm_taken {
        conflicts.push(format!("vm/{new} exists"));
    }
    let mut taken: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in &clone.disks {
        if !taken.contains_key(&d.pool) {
            let names = engine
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
            if req.mode == CloneMode::BestEffort {
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
    let report =
        |clone: VmConfig, notes: Vec<String>, conflicts: Vec<String>, cloned: bool| CloneReport {
            changes: notes,
            cloned,
            config: clone,
            conflicts,
            mode: req.mode,
            source: req.source(),
            target: format!("vm/{new}"),
        };
    let blocked = vm_taken || (req.mode == CloneMode::Strict && !conflicts.is_empty());
    if req.mode == CloneMode::DryRun || blocked {
        if req.mode != CloneMode::DryRun {
            bail!(
                "vm/{new} was not cloned from {} ({:?}): {}; rename with --name-prefix, --name-suffix or --name-replace, or --mode best-effort",
                req.source(),
                req.mode,
                conflicts.join("; ")
            );
        }
        return Ok(report(clone, notes, conflicts, false));
    }

    // The copies, each through the import path; on failure, the ones made go again.
    let mut made: Vec<(String, String)> = Vec::new();
    let copied = (|| -> Result<()> {
        for (from, to) in config.disks.iter().zip(&clone.disks) {
            let mut reader = engine.pool(&from.pool)?;
            let backend = crate::snapshots::vm_backend_snapshot(
                home,
                &from.pool,
                &mut reader,
                &from.name,
                src,
                snapshot.as_deref(),
            )?;
            let mut volume = reader
                .open_volume(&from.name, backend.as_deref())
                .with_context(|| format!("opening vd/{} of pool {}", from.name, from.pool))?;
            let size = volume.info.size;
            let mut pool = engine.pool(&to.pool)?;
            write_volume(
                &mut pool,
                &Address::Disk(to.name.clone()),
                size,
                Source::Volume(&mut volume),
                &ImportOptions::default(),
                &mut *progress,
                |_| Ok(Vec::new()),
            )
            .with_context(|| format!("copying vd/{} to vd/{}", from.name, to.name))?;
            made.push((to.pool.clone(), to.name.clone()));
        }
        vm::save_new(home, &clone)
    })();
    if let Err(e) = copied {
        for (pool, name) in &made {
            if let Ok(mut p) = engine.pool(pool) {
                let _ = p.delete_volume(name);
            }
        }
        return Err(e.context(format!(
            "vm/{new} was not cloned; the copies already made were deleted"
        )));
    }
    Ok(report(clone, notes, conflicts, true))
}
