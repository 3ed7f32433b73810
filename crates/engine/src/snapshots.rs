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

use crate::address::Address;
/// Re-exported: callers that met these here keep finding them.
pub use crate::clock::{now_ms, utc};
use crate::{Context as _, Result};
use serde::{Deserialize, Serialize};
use snapport_host::{SnapshotInfo, SnapshotPhase};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One snapshot as snapport records it.
///
/// A record is the snapshot's identity on snapport's side: which disk, the name users
/// address it by, and — once the backend made it — the backend's ID (and its creation
/// time, since a qcow2 image gives a deleted snapshot's ID to the next one). A listing is
/// matched to records by ID, never by name: on CSI the name sent to CreateSnapshot is
/// only an idempotency key and the snapshot is the ID the driver answered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// The disk (`D` of `vds/D@S`); filled from the key for records of format 1.
    #[serde(default)]
    pub disk: String,
    /// The name users address the snapshot by, unique per disk.
    #[serde(default)]
    pub name: String,
    /// The backend's ID of the snapshot; none until the backend made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What the backend calls it, the name every plugin call takes (CSI: the ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_name: Option<String>,
    /// The creation time the backend gives the snapshot, part of its identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_created_unix_ms: Option<u64>,
    /// Where the snapshot's last operation stands.
    pub phase: Phase,
    /// Taken with the guest quiesced (or the disk unused).
    pub consistent: bool,
    /// The operator's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The snapshot taken before it (its name on the same disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// When snapport asked for it, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_unix_ms: Option<u64>,
    /// Why the last operation on it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The process working on it while `Pending` or `InProgress`: when that process is
    /// gone, the operation died with it and what it left is cleaned up (`live::collect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// The VM snapshot (`vms/VM@NAME`) it is part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// The backend was asked to make it (the record went `InProgress`): a failure after
    /// that may have left a snapshot, so the record stays until `snapshot gc`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub asked: bool,
}

impl Record {
    /// Whether `s`, as the backend lists it, is the snapshot this record is of.
    fn is(&self, s: &SnapshotInfo) -> bool {
        if self.disk != s.volume {
            return false;
        }
        match &self.id {
            Some(id) => {
                id == &s.id
                    && (self.backend_created_unix_ms.is_none()
                        || s.created_unix_ms.is_none()
                        || self.backend_created_unix_ms == s.created_unix_ms)
            }
            // A record from before IDs were kept: the backend's name was its name.
            None => {
                matches!(self.phase, Phase::Ready | Phase::Terminating)
                    && self.backend_name.as_deref() == Some(&s.name)
            }
        }
    }

    /// Takes the backend's facts of the snapshot it is of.
    pub fn made(&mut self, s: &SnapshotInfo) {
        self.id = Some(s.id.clone());
        self.backend_name = Some(s.name.clone());
        self.backend_created_unix_ms = s.created_unix_ms;
    }
}

/// A process, by PID and start time (so a reused PID is not taken for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The process ID.
    pub pid: u32,
    /// Its start time, clock ticks since boot (field 22 of `/proc/PID/stat`).
    pub start: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether the process still runs (the same one: same start time). Unless /proc
    /// says for sure that it is gone, it is taken to run: a live operation's snapshot
    /// must never be collected.
    pub fn alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(_) => true,
            Ok(stat) => parse_start_time(&stat).is_none_or(|s| s == self.start),
        }
    }
}

/// Field 22 of `/proc/PID/stat`, the start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Where a snapshot (or a VM snapshot) stands, as CSI names the phases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Recorded, not asked of the backend yet.
    Pending,
    /// Asked of the backend, no answer yet.
    InProgress,
    /// Taken and readable.
    #[default]
    Ready,
    /// The backend failed it, or the process that asked died: `snapshot gc` cleans up.
    Failed,
    /// Being deleted.
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

/// The records of one pool: its disks' snapshots, and each disk's head (the snapshot its
/// content was last taken as or restored from).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Records {
    /// Every disk snapshot's record.
    #[serde(default, rename = "disk_snapshots")]
    pub list: Vec<Record>,
    /// Format 1 kept records by `DISK@NAME`; read once and moved into `list`.
    #[serde(default, skip_serializing)]
    snapshots: BTreeMap<String, Record>,
    /// By disk: the snapshot its content was last taken as or restored from.
    #[serde(default)]
    pub heads: BTreeMap<String, String>,
    /// VM snapshots by `VM@NAME`; only in the VM records ([`update_vms`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vm_snapshots: BTreeMap<String, VmSnapshot>,
}

impl Records {
    /// Moves format-1 records into the list: their name was the backend's name.
    fn upgrade(&mut self) {
        for (k, mut r) in std::mem::take(&mut self.snapshots) {
            let Some((disk, name)) = k.split_once('@') else {
                continue;
            };
            r.disk = disk.into();
            r.name = name.into();
            r.backend_name = Some(name.into());
            self.list.push(r);
        }
    }

    /// The record of `vds/DISK@NAME`.
    pub fn get(&self, disk: &str, name: &str) -> Option<&Record> {
        self.list.iter().find(|r| r.disk == disk && r.name == name)
    }

    /// The record of `vds/DISK@NAME`, to change.
    pub fn get_mut(&mut self, disk: &str, name: &str) -> Option<&mut Record> {
        self.list
            .iter_mut()
            .find(|r| r.disk == disk && r.name == name)
    }

    /// Drops the record of `vds/DISK@NAME`: its children hang from its parent, and a
    /// disk whose content came from it follows its parent too.
    pub fn remove(&mut self, disk: &str, name: &str) -> Option<Record> {
        let at = self
            .list
            .iter()
            .position(|r| r.disk == disk && r.name == name)?;
        let gone = self.list.remove(at);
        self.forget(disk, name, gone.parent.clone());
        Some(gone)
    }

    /// Children and head of `vds/DISK@NAME` move to `parent`.
    fn forget(&mut self, disk: &str, name: &str, parent: Option<String>) {
        for r in self.list.iter_mut() {
            if r.disk == disk && r.parent.as_deref() == Some(name) {
                r.parent = parent.clone();
            }
        }
        if self.heads.get(disk).map(String::as_str) == Some(name) {
            match &parent {
                Some(p) => self.heads.insert(disk.to_string(), p.clone()),
                None => self.heads.remove(disk),
            };
        }
    }
}

/// A VM snapshot: one disk snapshot of the same name per disk, taken under one freeze,
/// and the VM's config as it was.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmSnapshot {
    /// The VM.
    pub vm: String,
    /// The VM snapshot's name, also each disk snapshot's.
    pub name: String,
    /// Where the snapshot's last operation stands.
    pub phase: Phase,
    /// Taken with the guest quiesced (or the disk unused).
    pub consistent: bool,
    /// When it was taken, Unix milliseconds.
    pub created_unix_ms: u64,
    /// The operator's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Why the last operation on it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The process taking it while `Pending` or `InProgress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// The VM's config when it was taken.
    pub config: crate::vm::VmConfig,
}

impl VmSnapshot {
    /// Its address.
    pub fn address(&self) -> String {
        format!("vms/{}@{}", self.vm, self.name)
    }
}

/// The VM snapshot records live under `state/.vms/` (no pool name starts with '.'),
/// locked like a pool's: a VM spans pools.
const VM_STATE: &str = ".vms";

/// Changes the VM snapshot records under their lock (see [`update`]).
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
        return Some(Err(crate::Error::usage(format!(
            "{s:?}: a VM snapshot is vms/VM@SNAPSHOT"
        ))));
    };
    let check =
        |what: &str, name: &str| crate::address::check_name(&format!("{s:?}: {what}"), name);
    Some(
        check("the VM", vm)
            .and_then(|()| check("the snapshot", snap))
            .map(|()| (vm.to_string(), snap.to_string()))
            .map_err(crate::Error::into_usage),
    )
}

/// The VM snapshot `vms/VM@NAME`, which must exist.
pub fn vm_snapshot(home: &Path, vm: &str, name: &str) -> Result<VmSnapshot> {
    update_vms(home, |m| m.get(&key(vm, name)).cloned())?
        .ok_or_else(|| crate::format_err!("no vms/{vm}@{name}; `snapport get vms` lists them"))
}

/// `DISK@NAME` (or `VM@NAME`): how records are keyed.
pub fn key(disk: &str, name: &str) -> String {
    format!("{disk}@{name}")
}

/// The most a records file holds: some 50 000 snapshots' records.
const MAX_RECORDS_BYTES: u64 = 16 << 20;

/// The records file of a pool, locked while this value lives.
pub struct Store {
    file: File,
    path: PathBuf,
    /// The records as read (change them, then [`Store::save`]).
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
        let mut records: Records = records;
        records.upgrade();
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
    /// The disk (`D` of `vds/D@S`).
    pub disk: String,
    /// The name users address it by: the recorded name, or the backend's name for a
    /// snapshot snapport did not make.
    pub name: String,
    /// The backend's ID; none when the backend does not list it.
    pub id: Option<String>,
    /// The backend's name of it, what plugin calls take; none when not listed.
    pub backend_name: Option<String>,
    /// Its size in bytes; none when the backend does not list it.
    pub size: Option<u64>,
    /// When it was taken, Unix milliseconds (as recorded, else as the backend says).
    pub created_unix_ms: Option<u64>,
    /// Where the snapshot's last operation stands.
    pub phase: Phase,
    /// Taken with the guest quiesced (or the disk unused).
    pub consistent: bool,
    /// The operator's note.
    pub comment: Option<String>,
    /// The snapshot taken before it (its name on the same disk).
    pub parent: Option<String>,
    /// Why the last operation on it failed.
    pub error: Option<String>,
    /// The backend was asked to make it (see [`Record::asked`]).
    pub asked: bool,
    /// The VM snapshot it is part of, `vms/VM@NAME`.
    pub vm: Option<String>,
}

impl View {
    /// Its address.
    pub fn address(&self) -> String {
        format!("vds/{}@{}", self.disk, self.name)
    }

    /// The snapshot as commands report it (`get vds -o json`, `describe`, `snapshot
    /// create`): the view of it in `pool`.
    pub fn doc(&self, pool: &str) -> SnapshotDoc {
        SnapshotDoc {
            name: self.address(),
            pool: pool.to_string(),
            disk: self.disk.clone(),
            snapshot: self.name.clone(),
            id: self.id.clone(),
            backend_name: self.backend_name.clone(),
            size: self.size,
            created_unix_ms: self.created_unix_ms,
            created: self.created_unix_ms.map(utc),
            phase: format!("{:?}", self.phase),
            consistent: self.consistent,
            comment: self.comment.clone(),
            parent: self
                .parent
                .as_ref()
                .map(|p| format!("vds/{}@{p}", self.disk)),
            error: self.error.clone(),
        }
    }
}

/// One disk snapshot as reports carry it (one element of `get vds -o json`): every field
/// is always there, `null` when unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDoc {
    /// Its address, `vds/DISK@NAME`.
    pub name: String,
    /// The pool it is in.
    pub pool: String,
    /// The disk (`DISK`).
    pub disk: String,
    /// The snapshot's name (`NAME`).
    pub snapshot: String,
    /// The backend's ID of it; none when the backend does not list it.
    pub id: Option<String>,
    /// The backend's name of it, what plugin calls take.
    pub backend_name: Option<String>,
    /// Its size in bytes, as the backend lists it.
    pub size: Option<u64>,
    /// When it was taken, Unix milliseconds.
    pub created_unix_ms: Option<u64>,
    /// When it was taken, UTC (`2026-11-24T06:40:12Z`).
    pub created: Option<String>,
    /// `Pending`, `InProgress`, `Ready`, `Failed` or `Terminating`.
    pub phase: String,
    /// Whether it was taken with the guest quiesced (or the disk unused).
    pub consistent: bool,
    /// The operator's note.
    pub comment: Option<String>,
    /// The snapshot taken before it, `vds/DISK@NAME`.
    pub parent: Option<String>,
    /// Why the last operation on it failed.
    pub error: Option<String>,
}

/// A VM snapshot as reports carry it (`get vms -o json`, `snapshot create vm/NAME`).
#[derive(Debug, Clone, Serialize)]
pub struct VmSnapshotDoc {
    /// Its address, `vms/VM@NAME`.
    pub name: String,
    /// The VM.
    pub vm: String,
    /// Its phase.
    pub phase: Phase,
    /// Whether it was taken with the guest quiesced (or its disks unused).
    pub consistent: bool,
    /// When it was taken, UTC.
    pub created: String,
    /// When it was taken, Unix milliseconds.
    pub created_unix_ms: u64,
    /// The operator's note.
    pub comment: Option<String>,
    /// Why the last operation on it failed.
    pub error: Option<String>,
    /// Its disk snapshots, one per disk of the VM.
    pub disks: Vec<VmDiskSnapshotDoc>,
}

/// One disk's snapshot within a [`VmSnapshotDoc`].
#[derive(Debug, Clone, Serialize)]
pub struct VmDiskSnapshotDoc {
    /// `vds/DISK@NAME`.
    pub snapshot: String,
    /// The pool of the disk.
    pub pool: String,
    /// The backend's ID of it, as recorded.
    pub id: Option<String>,
}

impl VmSnapshot {
    /// The VM snapshot as reports carry it, with each disk snapshot's backend ID as
    /// recorded in its pool's records under `home`.
    pub fn doc(&self, home: &Path) -> Result<VmSnapshotDoc> {
        let mut disks = Vec::new();
        for d in &self.config.disks {
            let store = Store::open(home, &d.pool)?;
            let id = store
                .records
                .get(&d.name, &self.name)
                .and_then(|r| r.id.clone());
            disks.push(VmDiskSnapshotDoc {
                snapshot: format!("vds/{}@{}", d.name, self.name),
                pool: d.pool.clone(),
                id,
            });
        }
        Ok(VmSnapshotDoc {
            name: self.address(),
            vm: self.vm.clone(),
            phase: self.phase,
            consistent: self.consistent,
            created: utc(self.created_unix_ms),
            created_unix_ms: self.created_unix_ms,
            comment: self.comment.clone(),
            error: self.error.clone(),
            disks,
        })
    }
}

/// The snapshot `vds/DISK@NAME` of `views` (one disk's): by name, or else by the
/// backend's ID, so `vds/D@ID` reaches a snapshot on CSI as the driver names it.
pub fn find<'a>(views: &'a [View], name: &str) -> Option<&'a View> {
    views.iter().find(|v| v.name == name).or_else(|| {
        let mut by_id = views.iter().filter(|v| v.id.as_deref() == Some(name));
        let first = by_id.next()?;
        by_id.next().is_none().then_some(first)
    })
}

/// The disk snapshot of VM snapshot `vms/VM@NAME` among `views` (one disk's): named
/// exactly `name`, no ID fallback, and recorded as part of that VM snapshot — or, for
/// records from before VM membership was kept, dated as it (`created`: a VM snapshot
/// dates every disk's record alike). A disk snapshot taken under the same name later,
/// by itself, is not the VM's.
pub fn of_vm<'a>(views: &'a [View], vm: &str, name: &str, created: u64) -> Option<&'a View> {
    let address = format!("vms/{vm}@{name}");
    views.iter().find(|v| {
        v.name == name
            && match &v.vm {
                Some(m) => *m == address,
                None => v.created_unix_ms == Some(created),
            }
    })
}

/// The backend's name of the disk snapshot of `vms/VM@NAME` on `disk` (see [`of_vm`]);
/// none stays none.
pub fn vm_backend_snapshot(
    home: &Path,
    pool: &str,
    instance: &mut snapport_host::Instance,
    disk: &str,
    vm: &str,
    name: Option<&str>,
) -> Result<Option<String>> {
    let Some(name) = name else {
        return Ok(None);
    };
    let created = vm_snapshot(home, vm, name)?.created_unix_ms;
    let views = list(home, pool, instance, Some(disk))?;
    let v = of_vm(&views, vm, name, created).ok_or_else(|| {
        crate::format_err!("vms/{vm}@{name}: no snapshot of vd/{disk} in pool {pool} belongs to it")
    })?;
    match &v.backend_name {
        Some(b) => Ok(Some(b.clone())),
        None => crate::bail!(
            "{} is {:?}: the backend holds no such snapshot; `snapport snapshot gc vm/{vm}` clears it",
            v.address(),
            v.phase
        ),
    }
}

/// Joins what the backend lists with the records, oldest first, and tidies the records
/// of the disk listed (of every disk with none): a record whose snapshot the backend no
/// longer has is dropped unless an operation on it is under way or failed (then it shows
/// with that phase). Records of other disks are not touched.
pub fn merge(listed: Vec<SnapshotInfo>, records: &mut Records, disk: Option<&str>) -> Vec<View> {
    let mut out = Vec::new();
    let mut seen = vec![false; records.list.len()];
    for s in listed {
        if disk.is_some_and(|d| d != s.volume) {
            continue;
        }
        let at = records.list.iter().position(|r| r.is(&s));
        let view = match at {
            Some(i) => {
                seen[i] = true;
                let r = &mut records.list[i];
                if r.id.is_none() {
                    r.made(&s);
                }
                View {
                    disk: s.volume,
                    name: r.name.clone(),
                    id: Some(s.id),
                    backend_name: Some(s.name),
                    size: Some(s.size),
                    created_unix_ms: r.created_unix_ms.or(s.created_unix_ms),
                    // The backend has it whole: only an operation under way or failed
                    // says otherwise.
                    phase: match r.phase {
                        Phase::Pending | Phase::Ready => Phase::Ready,
                        p => p,
                    },
                    consistent: r.consistent || s.consistent,
                    comment: r.comment.clone(),
                    parent: r.parent.clone().or(s.parent),
                    error: r.error.clone(),
                    asked: r.asked,
                    vm: r.vm.clone(),
                }
            }
            None => View {
                disk: s.volume,
                name: s.name.clone(),
                id: Some(s.id),
                backend_name: Some(s.name),
                size: Some(s.size),
                created_unix_ms: s.created_unix_ms,
                phase: Phase::Ready,
                consistent: s.consistent,
                comment: None,
                parent: s.parent,
                error: None,
                asked: false,
                vm: None,
            },
        };
        out.push(view);
    }
    // Records of the disk listed that the backend no longer has.
    let mut gone = Vec::new();
    let mut kept = Vec::new();
    for (r, seen) in std::mem::take(&mut records.list).into_iter().zip(seen) {
        let listed_disk = disk.is_none_or(|d| d == r.disk);
        if seen || !listed_disk {
            kept.push(r);
        } else if matches!(r.phase, Phase::Pending | Phase::InProgress | Phase::Failed) {
            out.push(View {
                disk: r.disk.clone(),
                name: r.name.clone(),
                id: None,
                backend_name: None,
                size: None,
                created_unix_ms: r.created_unix_ms,
                phase: r.phase,
                consistent: r.consistent,
                comment: r.comment.clone(),
                parent: r.parent.clone(),
                error: r.error.clone(),
                asked: r.asked,
                vm: r.vm.clone(),
            });
            kept.push(r);
        } else {
            gone.push(r);
        }
    }
    records.list = kept;
    for r in gone {
        records.forget(&r.disk, &r.name, r.parent.clone());
        for v in out.iter_mut() {
            if v.disk == r.disk && v.parent.as_deref() == Some(r.name.as_str()) {
                v.parent = r.parent.clone();
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.disk, a.created_unix_ms, &a.name).cmp(&(&b.disk, b.created_unix_ms, &b.name))
    });
    out
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

/// The snapshot `vds/DISK@NAME` of `pool`, which must exist.
pub fn view(
    home: &Path,
    pool: &str,
    instance: &mut snapport_host::Instance,
    disk: &str,
    name: &str,
) -> Result<View> {
    let views = list(home, pool, instance, Some(disk))?;
    find(&views, name).cloned().ok_or_else(|| {
        crate::format_err!(
            "no vds/{disk}@{name} in pool {pool}; `snapport get vds {disk} -n {pool}` lists them"
        )
    })
}

/// `address` as the plugin of `pool` knows it: a snapshot's name becomes the backend's
/// name of the snapshot users call so (on CSI, the driver's snapshot ID). Disks and
/// images pass as they are.
pub fn backend_address(
    home: &Path,
    pool: &str,
    instance: &mut snapport_host::Instance,
    address: &Address,
) -> Result<Address> {
    let Address::DiskSnapshot { disk, snapshot } = address else {
        return Ok(address.clone());
    };
    let v = view(home, pool, instance, disk, snapshot)?;
    let Some(backend_name) = v.backend_name.clone() else {
        crate::bail!(
            "{} is {:?}: the backend holds no such snapshot{}; `snapport snapshot gc vd/{disk} -n {pool}` clears the record",
            v.address(),
            v.phase,
            v.error.map(|e| format!(" ({e})")).unwrap_or_default()
        );
    };
    Ok(Address::DiskSnapshot {
        disk: disk.clone(),
        snapshot: backend_name,
    })
}

/// Changes the records of `pool` under the lock: `f` sees them fresh from the file.
pub fn update<R>(home: &Path, pool: &str, f: impl FnOnce(&mut Records) -> R) -> Result<R> {
    let mut store = Store::open(home, pool)?;
    let r = f(&mut store.records);
    store.save()?;
    Ok(r)
}

/// Deletes the snapshot `view` shows, through the backend by the backend's name of it:
/// `Terminating` while the backend works (and after, with the reason, if it fails), then
/// its record goes, its children hang from its parent, and a disk whose content came
/// from it follows its parent too.
pub fn remove(
    home: &Path,
    pool: &str,
    instance: &mut snapport_host::Instance,
    view: &View,
) -> Result<()> {
    let (disk, name) = (view.disk.as_str(), view.name.as_str());
    if matches!(view.phase, Phase::Pending | Phase::InProgress) {
        crate::bail!(
            "{} is {:?}: wait for it to finish",
            view.address(),
            view.phase
        );
    }
    // A snapshot that never came to be is only a record.
    if let Some(backend_name) = &view.backend_name {
        update(home, pool, |r| {
            if r.get(disk, name).is_none() {
                // Made by another tool: recorded now, so the phase shows.
                r.list.push(Record {
                    disk: disk.into(),
                    name: name.into(),
                    id: view.id.clone(),
                    backend_name: Some(backend_name.clone()),
                    parent: view.parent.clone(),
                    created_unix_ms: view.created_unix_ms,
                    ..Record::default()
                });
            }
            let rec = r.get_mut(disk, name).expect("recorded above");
            rec.phase = Phase::Terminating;
            rec.error = None;
        })?;
        if let Err(e) = instance.delete_snapshot(disk, backend_name) {
            let e = crate::Error::new(e).context(format!("deleting {}", view.address()));
            let why = format!("{e:#}");
            update(home, pool, |r| {
                if let Some(rec) = r.get_mut(disk, name) {
                    rec.error = Some(why);
                }
            })?;
            return Err(e);
        }
    }
    update(home, pool, |r| {
        if r.remove(disk, name).is_none() {
            r.forget(disk, name, view.parent.clone());
        }
    })
}
