//! What snapport knows of disk snapshots beyond what a backend stores: the phase of an
//! operation under way or failed, whether a snapshot is consistent, the operator's
//! comment, the snapshot taken before it, and which snapshot a disk's content came from.
//!
//! A qcow2 snapshot table has no room for these (and a CSI snapshot or an LVM volume has
//! different room), so they live beside the pools: `$SNAPPORT_HOME/state/POOL/
//! snapshots.json`, changed under an exclusive lock so that concurrent commands (a cron
//! `prune` and an operator's `snapshot create`) see each other's phases. The backend
//! stays the truth about what exists: a record of a snapshot the backend no longer lists
//! is dropped, and a snapshot made by another tool (`qemu-img snapshot -c`) shows as
//! `Ready`, not consistent.

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use snapport_host::{SnapshotInfo, SnapshotPhase};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One snapshot as snapport records it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    pub phase: Phase,
    pub consistent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_unix_ms: Option<u64>,
    /// Why the last operation on it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Pending,
    InProgress,
    #[default]
    Ready,
    Failed,
    Terminating,
}

impl From<SnapshotPhase> for Phase {
    fn from(p: SnapshotPhase) -> Phase {
        match p {
            SnapshotPhase::Pending => Phase::Pending,
            SnapshotPhase::InProgress => Phase::InProgress,
            SnapshotPhase::Ready => Phase::Ready,
            SnapshotPhase::Failed => Phase::Failed,
            SnapshotPhase::Terminating => Phase::Terminating,
        }
    }
}

/// The records of one pool: snapshots by `DISK@NAME`, and each disk's head (the snapshot
/// its content was last taken as or restored from).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Records {
    #[serde(default)]
    pub snapshots: BTreeMap<String, Record>,
    #[serde(default)]
    pub heads: BTreeMap<String, String>,
    /// VM snapshots by `VM@NAME`; only in the VM records ([`update_vms`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vm_snapshots: BTreeMap<String, VmSnapshot>,
}

/// A VM snapshot: one disk snapshot of the same name per disk, taken under one freeze,
/// and the VM's config as it was.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmSnapshot {
    pub vm: String,
    pub name: String,
    pub phase: Phase,
    pub consistent: bool,
    pub created_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub config: crate::vm::VmConfig,
}

impl VmSnapshot {
    pub fn address(&self) -> String {
        format!("vms/{}@{}", self.vm, self.name)
    }
}

/// The VM snapshot records live under `state/.vms/` (no pool name starts with '.'),
/// locked like a pool's: a VM spans pools.
const VM_STATE: &str = ".vms";

pub fn update_vms<R>(
    home: &Path,
    f: impl FnOnce(&mut BTreeMap<String, VmSnapshot>) -> R,
) -> Result<R> {
    update(home, VM_STATE, |r| f(&mut r.vm_snapshots))
}

/// `vms/VM@NAME` → (VM, NAME); `None` when `s` is not a VM snapshot address at all.
pub fn parse_vms(s: &str) -> Option<Result<(String, String)>> {
    let rest = s.strip_prefix("vms/")?;
    let Some((vm, snap)) = rest.split_once('@') else {
        return Some(Err(anyhow::anyhow!(
            "{s:?}: a VM snapshot is vms/VM@SNAPSHOT"
        )));
    };
    let check =
        |what: &str, name: &str| crate::address::check_name(&format!("{s:?}: {what}"), name);
    Some(
        check("the VM", vm)
            .and_then(|()| check("the snapshot", snap))
            .map(|()| (vm.to_string(), snap.to_string())),
    )
}

/// The VM snapshot `vms/VM@NAME`, which must exist.
pub fn vm_snapshot(home: &Path, vm: &str, name: &str) -> Result<VmSnapshot> {
    update_vms(home, |m| m.get(&key(vm, name)).cloned())?
        .ok_or_else(|| anyhow::anyhow!("no vms/{vm}@{name}; `snapport get vms` lists them"))
}

pub fn key(disk: &str, name: &str) -> String {
    format!("{disk}@{name}")
}

/// The most a records file holds: some 50 000 snapshots' records.
const MAX_RECORDS_BYTES: u64 = 16 << 20;

/// The records file of a pool, locked while this value lives.
pub struct Store {
    file: File,
    path: PathBuf,
    pub records: Records,
}

impl Store {
    /// Opens and locks the records of `pool` under `home`.
    pub fn open(home: &Path, pool: &str) -> Result<Store> {
        let dir = home.join("state").join(pool);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("snapshots.json");
        // Non-blocking, and read as a regular file only: a FIFO there must not hang.
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        let text = snapport_core::io::read_regular(&mut file, MAX_RECORDS_BYTES)
            .with_context(|| format!("reading {}", path.display()))?;
        let records = if text.trim_ascii().is_empty() {
            Records::default()
        } else {
            serde_json::from_slice(&text).with_context(|| {
                format!(
                    "{} is not a snapport snapshot record file; move it away to start afresh",
                    path.display()
                )
            })?
        };
        Ok(Store {
            file,
            path,
            records,
        })
    }

    /// Writes the records back (still locked): a phase change is visible to other
    /// commands as soon as this returns.
    pub fn save(&mut self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.records)?;
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            f.write_all(text.as_bytes())?;
            f.sync_data()
        };
        write(&mut self.file).with_context(|| format!("writing {}", self.path.display()))
    }
}

/// A snapshot as the commands show it: the backend's facts and snapport's record.
#[derive(Debug, Clone)]
pub struct View {
    pub disk: String,
    pub name: String,
    pub id: Option<String>,
    pub size: Option<u64>,
    pub created_unix_ms: Option<u64>,
    pub phase: Phase,
    pub consistent: bool,
    pub comment: Option<String>,
    pub parent: Option<String>,
    pub error: Option<String>,
}

impl View {
    pub fn address(&self) -> String {
        format!("vds/{}@{}", self.disk, self.name)
    }

    pub fn to_json(&self, pool: &str) -> serde_json::Value {
        serde_json::json!({
            "name": self.address(),
            "pool": pool,
            "disk": self.disk,
            "snapshot": self.name,
            "id": self.id,
            "size": self.size,
            "created_unix_ms": self.created_unix_ms,
            "created": self.created_unix_ms.map(utc),
            "phase": format!("{:?}", self.phase),
            "consistent": self.consistent,
            "comment": self.comment,
            "parent": self.parent.as_ref().map(|p| format!("vds/{}@{p}", self.disk)),
            "error": self.error,
        })
    }
}

/// Joins what the backend lists with the records, oldest first. Records of snapshots
/// the backend no longer has are dropped from `records` unless an operation is under
/// way or failed (then they show with that phase).
pub fn merge(listed: Vec<SnapshotInfo>, records: &mut Records, disk: Option<&str>) -> Vec<View> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for s in listed {
        let k = key(&s.volume, &s.name);
        seen.insert(k.clone());
        let r = records.snapshots.get(&k).cloned().unwrap_or(Record {
            phase: s.phase.into(),
            consistent: s.consistent,
            ..Record::default()
        });
        out.push(View {
            disk: s.volume,
            name: s.name,
            id: Some(s.id),
            size: Some(s.size),
            created_unix_ms: s.created_unix_ms.or(r.created_unix_ms),
            // The backend has it whole: only a delete under way or failed says otherwise.
            phase: if r.phase == Phase::Terminating {
                Phase::Terminating
            } else {
                Phase::Ready
            },
            consistent: r.consistent || s.consistent,
            comment: r.comment,
            parent: r.parent.or(s.parent),
            error: r.error,
        });
    }
    records.snapshots.retain(|k, r| {
        seen.contains(k) || matches!(r.phase, Phase::Pending | Phase::InProgress | Phase::Failed)
    });
    for (k, r) in &records.snapshots {
        if seen.contains(k) {
            continue;
        }
        let Some((d, n)) = k.split_once('@') else {
            continue;
        };
        if disk.is_some_and(|want| want != d) {
            continue;
        }
        out.push(View {
            disk: d.into(),
            name: n.into(),
            id: None,
            size: None,
            created_unix_ms: r.created_unix_ms,
            phase: r.phase,
            consistent: r.consistent,
            comment: r.comment.clone(),
            parent: r.parent.clone(),
            error: r.error.clone(),
        });
    }
    out.sort_by(|a, b| {
        (&a.disk, a.created_unix_ms, &a.name).cmp(&(&b.disk, b.created_unix_ms, &b.name))
    });
    out
}

/// `2026-11-24T06:40:12Z` for Unix milliseconds (UTC, what operators paste into logs).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The snapshots of `disk` (or of every disk) in `pool`, joined with the records, which
/// are tidied on the way.
pub fn list(
    home: &Path,
    pool: &str,
    instance: &mut snapport_host::Instance,
    disk: Option<&str>,
) -> Result<Vec<View>> {
    let listed = instance.list_snapshots(disk)?;
    let mut store = Store::open(home, pool)?;
    let views = merge(listed, &mut store.records, disk);
    store.save()?;
    Ok(views)
}

/// Changes the records of `pool` under the lock: `f` sees them fresh from the file.
pub fn update<R>(home: &Path, pool: &str, f: impl FnOnce(&mut Records) -> R) -> Result<R> {
    let mut store = Store::open(home, pool)?;
    let r = f(&mut store.records);
    store.save()?;
    Ok(r)
}

/// Deletes the snapshot `view` shows: `Terminating` while the backend works (and after,
/// with the reason, if it fails), then its record goes, its children hang from its
/// parent, and a disk whose content came from it follows its parent too.
pub fn remove(
    home: &Path,
    pool: &str,
    instance: &mut snapport_host::Instance,
    view: &View,
) -> Result<()> {
    let (disk, name) = (view.disk.as_str(), view.name.as_str());
    if matches!(view.phase, Phase::Pending | Phase::InProgress) {
        anyhow::bail!(
            "{} is {:?}: wait for it to finish",
            view.address(),
            view.phase
        );
    }
    let k = key(disk, name);
    // A snapshot that never came to be is only a record.
    if view.id.is_some() {
        update(home, pool, |r| {
            let rec = r.snapshots.entry(k.clone()).or_default();
            rec.phase = Phase::Terminating;
            rec.error = None;
        })?;
        if let Err(e) = instance.delete_snapshot(disk, name) {
            let e = anyhow::Error::new(e).context(format!("deleting {}", view.address()));
            let why = format!("{e:#}");
            update(home, pool, |r| {
                if let Some(rec) = r.snapshots.get_mut(&k) {
                    rec.error = Some(why);
                }
            })?;
            return Err(e);
        }
    }
    update(home, pool, |r| {
        let parent = r
            .snapshots
            .remove(&k)
            .and_then(|rec| rec.parent)
            .or(view.parent.clone());
        for (other, rec) in r.snapshots.iter_mut() {
            if other.split_once('@').is_some_and(|(d, _)| d == disk)
                && rec.parent.as_deref() == Some(name)
            {
                rec.parent = parent.clone();
            }
        }
        if r.heads.get(disk).map(String::as_str) == Some(name) {
            match &parent {
                Some(p) => r.heads.insert(disk.to_string(), p.clone()),
                None => r.heads.remove(disk),
            };
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_matches_known_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        // `date -u -d @951782400` : leap day of a century leap year.
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_502_412_000), "2026-11-24T06:40:12Z");
    }
}
