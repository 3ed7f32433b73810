//! `prune`: applies a retention policy to each disk's snapshots. Without `apply` it only
//! lists what would go, so the same request shows the plan and then carries it out
//! (from cron or a systemd timer).

use crate::address::Address;
use crate::retention::{self, Policy, Verdict};
use crate::snapshots::{self, Phase, View};
use crate::Engine;
use crate::{bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// A prune request.
#[derive(Debug, Clone)]
pub struct PruneRequest {
    /// Only this disk's snapshots (`vd/NAME`); none: every disk of the pool.
    pub target: Option<Address>,
    /// The pool.
    pub pool: String,
    /// The policy; an empty one means the pool's `retention` from the configuration.
    pub policy: Policy,
    /// Delete what the policy does not keep (otherwise only list it).
    pub apply: bool,
}

/// The verdict on every snapshot (`prune -o json`).
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// The pool.
    pub pool: String,
    /// Nothing was deleted: the request did not say `apply`.
    pub dry_run: bool,
    /// Every snapshot of the disks looked at, by disk, oldest first per rule.
    pub snapshots: Vec<PruneEntry>,
    /// The snapshots that could not be deleted, each with why; the request failed when
    /// there is any (the report still says what was done).
    #[serde(skip)]
    pub failures: Vec<String>,
}

/// One snapshot's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct PruneEntry {
    /// `vds/DISK@NAME`.
    pub name: String,
    /// When it was taken, UTC.
    pub created: Option<String>,
    /// `keep`, `remove` (dry run), `removed`, or `failed` (to remove, but the delete
    /// failed).
    pub action: &'static str,
    /// The rule that keeps it (`keep-last`, `keep-daily`, ...); none for one to remove.
    pub reason: Option<&'static str>,
}

/// `prune`: see the module. Only `Ready` snapshots with a date take part; the others
/// stay. A snapshot a running QEMU holds the disk of is deleted through QEMU.
pub fn prune(engine: &Engine, req: &PruneRequest) -> Result<PruneReport> {
    let disk = match &req.target {
        None => None,
        Some(Address::Disk(d)) => Some(d.as_str()),
        Some(other) => bail!("{other}: prune takes a disk, vd/NAME"),
    };
    let policy = if req.policy.is_empty() {
        engine
            .config
            .pool(&req.pool)?
            .retention
            .clone()
            .unwrap_or_default()
    } else {
        req.policy.clone()
    };
    if policy.is_empty() {
        bail!(
            "no retention policy: give --keep-last, --keep-daily, ... or set [pools.{}.retention] in the configuration",
            req.pool
        );
    }
    let home = &engine.config.home;
    let mut pool = engine.pool(&req.pool)?;
    let views = snapshots::list(home, &req.pool, &mut pool, disk)?;
    let mut by_disk: BTreeMap<&str, Vec<&View>> = BTreeMap::new();
    for v in &views {
        by_disk.entry(v.disk.as_str()).or_default().push(v);
    }
    // (view, verdict) for every snapshot, in listing order.
    let mut plan: Vec<(&View, Verdict)> = Vec::new();
    for list in by_disk.values() {
        // Only whole snapshots with a date take part; the others stay, as they are.
        let (eligible, others): (Vec<&View>, Vec<&View>) = list
            .iter()
            .partition(|v| v.phase == Phase::Ready && v.created_unix_ms.is_some());
        let times: Vec<u64> = eligible
            .iter()
            .map(|v| v.created_unix_ms.unwrap())
            .collect();
        for (v, verdict) in eligible.iter().zip(retention::decide(&policy, &times)) {
            plan.push((v, verdict));
        }
        for v in others {
            plan.push((v, Verdict::Keep("not Ready or undated")));
        }
    }

    let mut failures = Vec::new();
    let mut entries = Vec::new();
    for (v, verdict) in &plan {
        let action = match verdict {
            Verdict::Keep(_) => "keep",
            Verdict::Remove if !req.apply => "remove",
            Verdict::Remove => match crate::live::remove_snapshot(home, &req.pool, &mut pool, v) {
                Ok(()) => "removed",
                Err(e) => {
                    failures.push(format!("{}: {e:#}", v.address()));
                    "failed"
                }
            },
        };
        entries.push(PruneEntry {
            name: v.address(),
            created: v.created_unix_ms.map(snapshots::utc),
            action,
            reason: match verdict {
                Verdict::Keep(r) => Some(*r),
                Verdict::Remove => None,
            },
        });
    }
    Ok(PruneReport {
        pool: req.pool.clone(),
        dry_run: !req.apply,
        snapshots: entries,
        failures,
    })
}
