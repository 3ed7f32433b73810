//! What a pool (or the VMs) holds, read without changing anything but the tidying of
//! records: `get` ([`list`]), `describe` ([`describe`]) and `tree` ([`tree`]).

use crate::address::Address;
use crate::snapshots::{self, SnapshotDoc, View, VmSnapshotDoc};
use crate::vm::VmConfig;
use crate::Engine;
use crate::{bail, Result};
use serde::Serialize;
use snapport_host::VolumeKind;
use std::collections::BTreeMap;

/// What [`list`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `vd`: the disks of a pool.
    Disks,
    /// `vi`: the images of a pool.
    Images,
    /// `vds`: the disk snapshots of a pool (of one disk with a name).
    DiskSnapshots,
    /// `vm`: the VMs (they span pools).
    Vms,
    /// `vms`: the VM snapshots.
    VmSnapshots,
}

impl ListKind {
    /// The kind its short name (`vd`, `vi`, `vds`, `vm`, `vms`) names.
    pub fn parse(s: &str) -> Result<ListKind> {
        Ok(match s {
            "vd" => ListKind::Disks,
            "vi" => ListKind::Images,
            "vds" => ListKind::DiskSnapshots,
            "vm" => ListKind::Vms,
            "vms" => ListKind::VmSnapshots,
            other => bail!(
                "get {other}: this snapport lists vd (disks), vi (images), vds (disk snapshots), vm (VMs) and vms (VM snapshots)"
            ),
        })
    }
}

/// A listing request.
#[derive(Debug, Clone)]
pub struct ListRequest {
    /// What to list.
    pub kind: ListKind,
    /// Only this one: the volume, the VM, or (vds) the disk whose snapshots, (vms) the
    /// VM whose snapshots.
    pub name: Option<String>,
    /// The pool (not used for VMs and VM snapshots).
    pub pool: String,
}

/// A disk or image as `get vd|vi -o json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeDoc {
    /// `vd/NAME` or `vi/NAME`.
    pub name: String,
    /// The pool it is in.
    pub pool: String,
    /// Virtual size in bytes.
    pub size: u64,
    /// The backend's format ("qcow2", "raw", "lvm-thin").
    pub format: String,
    /// The volume it reads through, if any.
    pub parent: Option<String>,
    /// The backend's labels (an `error` label says why the volume cannot be read).
    pub labels: BTreeMap<String, String>,
}

/// What [`list`] found; its JSON is the list itself.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Listing {
    /// Disks or images.
    Volumes(Vec<VolumeDoc>),
    /// Disk snapshots, oldest first per disk.
    DiskSnapshots(Vec<SnapshotDoc>),
    /// VM configs.
    Vms(Vec<VmConfig>),
    /// VM snapshots, by VM, oldest first.
    VmSnapshots(Vec<VmSnapshotDoc>),
}

/// `get`: the volumes, disk snapshots, VMs or VM snapshots asked for. Naming one that is
/// not there is an error (except for snapshots: a disk with none lists none).
pub fn list(engine: &Engine, req: &ListRequest) -> Result<Listing> {
    let home = &engine.config.home;
    match req.kind {
        ListKind::Vms => {
            let mut vms = crate::vm::list(home)?;
            if let Some(n) = &req.name {
                vms.retain(|v| &v.name == n);
                if vms.is_empty() {
                    bail!("no vm/{n}");
                }
            }
            Ok(Listing::Vms(vms))
        }
        ListKind::VmSnapshots => {
            let mut snaps: Vec<_> =
                snapshots::update_vms(home, |m| m.values().cloned().collect::<Vec<_>>())?;
            if let Some(n) = &req.name {
                snaps.retain(|s| &s.vm == n);
            }
            snaps.sort_by_key(|s| (s.vm.clone(), s.created_unix_ms));
            let docs = snaps.iter().map(|s| s.doc(home)).collect::<Result<_>>()?;
            Ok(Listing::VmSnapshots(docs))
        }
        ListKind::DiskSnapshots => {
            let mut instance = engine.pool(&req.pool)?;
            let views = snapshots::list(home, &req.pool, &mut instance, req.name.as_deref())?;
            Ok(Listing::DiskSnapshots(
                views.iter().map(|v| v.doc(&req.pool)).collect(),
            ))
        }
        ListKind::Disks | ListKind::Images => {
            let mut instance = engine.pool(&req.pool)?;
            let (want, kind) = if req.kind == ListKind::Disks {
                (VolumeKind::Disk, "vd")
            } else {
                (VolumeKind::Image, "vi")
            };
            let mut vols = instance.list_volumes()?;
            vols.retain(|v| v.kind == want);
            if let Some(n) = &req.name {
                vols.retain(|v| &v.name == n);
                if vols.is_empty() {
                    bail!("no {kind}/{n} in pool {}", req.pool);
                }
            }
            Ok(Listing::Volumes(
                vols.into_iter()
                    .map(|v| VolumeDoc {
                        name: format!("{kind}/{}", v.name),
                        pool: req.pool.clone(),
                        size: v.size,
                        format: v.format,
                        parent: v.parent,
                        labels: v.labels.into_iter().map(|l| (l.key, l.value)).collect(),
                    })
                    .collect(),
            ))
        }
    }
}

/// A request about one disk (`describe` takes a snapshot, `tree` a disk).
#[derive(Debug, Clone)]
pub struct TargetRequest {
    /// `vds/DISK@SNAP` for [`describe`], `vd/NAME` for [`tree`].
    pub target: Address,
    /// The pool.
    pub pool: String,
}

/// `describe`: one disk snapshot, found by name or by the backend's ID.
pub fn describe(engine: &Engine, req: &TargetRequest) -> Result<SnapshotDoc> {
    let target = &req.target;
    let Address::DiskSnapshot { disk, snapshot } = target else {
        bail!("{target}: describe takes a disk snapshot, vds/DISK@SNAP");
    };
    let mut pool = engine.pool(&req.pool)?;
    let views = snapshots::list(&engine.config.home, &req.pool, &mut pool, Some(disk))?;
    let Some(v) = snapshots::find(&views, snapshot) else {
        bail!("no {target} in pool {}", req.pool);
    };
    Ok(v.doc(&req.pool))
}

/// A disk's snapshots as a family tree (`tree -o json`).
#[derive(Debug, Clone, Serialize)]
pub struct Tree {
    /// The disk, `vd/NAME`.
    pub disk: String,
    /// The pool.
    pub pool: String,
    /// The snapshot the disk's content was last taken as or restored from: the disk's
    /// present (`(now)`) hangs under it; none (or one no longer listed): at the root.
    pub head: Option<String>,
    /// The snapshots with no parent among the listed ones, oldest first.
    pub roots: Vec<TreeNode>,
}

/// One snapshot in a [`Tree`]: the fields of `get vds -o json`, and its children.
#[derive(Debug, Clone, Serialize)]
pub struct TreeNode {
    /// The snapshot as `get vds -o json` shows it.
    #[serde(flatten)]
    pub snapshot: SnapshotDoc,
    /// The snapshots taken after it from its content, oldest first.
    pub children: Vec<TreeNode>,
}

/// `tree`: the disk's snapshots, each under the snapshot it was taken after.
pub fn tree(engine: &Engine, req: &TargetRequest) -> Result<Tree> {
    let target = &req.target;
    let Address::Disk(disk) = target else {
        bail!("{target}: tree takes a disk, vd/NAME");
    };
    let home = &engine.config.home;
    let mut pool = engine.pool(&req.pool)?;
    if !pool.list_volumes()?.iter().any(|v| &v.name == disk) {
        bail!("no {target} in pool {}", req.pool);
    }
    let views = snapshots::list(home, &req.pool, &mut pool, Some(disk))?;
    let head = snapshots::update(home, &req.pool, |r| r.heads.get(disk).cloned())?;
    let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
    fn node(all: &[View], v: &View, pool: &str) -> TreeNode {
        TreeNode {
            snapshot: v.doc(pool),
            children: all
                .iter()
                .filter(|c| c.parent.as_deref() == Some(v.name.as_str()))
                .map(|c| node(all, c, pool))
                .collect(),
        }
    }
    let roots = views
        .iter()
        .filter(|v| v.parent.as_deref().is_none_or(|p| !names.contains(&p)))
        .map(|v| node(&views, v, &req.pool))
        .collect();
    Ok(Tree {
        disk: target.to_string(),
        pool: req.pool.clone(),
        head: head.filter(|h| names.contains(&h.as_str())),
        roots,
    })
}
