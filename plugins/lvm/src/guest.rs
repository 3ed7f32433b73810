//! The component glue, on the plugin SDK: host devices as `Medium`s, VGs found on them,
//! LVs as volumes.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use snapport_lvm::label::{read_label, read_metadata};
use snapport_lvm::thin::{delta, DeltaKind, Run, ThinPool};
use snapport_lvm::vg::{LogicalVolume, SegmentKind, VolumeGroup};
use snapport_lvm::Medium;

use snapport_plugin_sdk::{
    export_plugin, host, tools, Access, Backend, BackendError, Capabilities, DeviceOffset, Extent, ExtentPage, Label,
    Location, PluginInfo, SnapshotInfo, SnapshotPhase, Volume as SdkVolume, VolumeInfo, VolumeKind, READ_CHUNK,
};

/// Grants named `lv:LV` (or `lv:VG/LV`) are the activated device nodes of thin LVs,
/// which writes into them go through: only the kernel may change an active pool's
/// metadata.
const LV_NODE: &str = "lv:";

/// Extents in one page of the map.
const PAGE_BYTES: u64 = 1 << 30;

/// A granted device opened read-only through the host.
#[derive(Clone)]
struct Device {
    name: String,
    id: u32,
    size: u64,
}

impl Medium for Device {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> snapport_lvm::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let want = ((buf.len() - done) as u64).min(READ_CHUNK) as u32;
            let at = offset + done as u64;
            let got = host::read_at(self.id, at, want).map_err(|e| snapport_lvm::Error::Io(e.message().to_string()))?;
            if got.is_empty() {
                return Err(snapport_lvm::Error::Io(format!("{}: unexpected end at {at}", self.name)));
            }
            buf[done..done + got.len()].copy_from_slice(&got);
            done += got.len();
        }
        Ok(())
    }
}

/// An LV of linear and striped segments read through the granted devices: how the
/// plugin reads a thin pool's metadata volume.
struct LvMedium<'a> {
    vg: &'a VolumeGroup,
    lv: &'a LogicalVolume,
    devices: &'a [Option<Device>],
}

impl Medium for LvMedium<'_> {
    fn size(&self) -> u64 {
        self.vg.lv_size(self.lv)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> snapport_lvm::Result<()> {
        let mut done = 0usize;
        for p in self.vg.map(self.lv, offset, buf.len() as u64)? {
            let Some(dev) = &self.devices[p.pv] else {
                return Err(snapport_lvm::Error::Io(not_granted(self.vg, self.lv, p.pv)));
            };
            dev.read_exact_at(p.offset, &mut buf[done..done + p.length as usize])?;
            done += p.length as usize;
        }
        Ok(())
    }
}

fn not_granted(vg: &VolumeGroup, lv: &LogicalVolume, pv: usize) -> String {
    let pv = &vg.pvs[pv];
    format!("{} lies partly on {} ({}) of VG {}, which the pool does not grant", lv.name, pv.name, pv.id, vg.name)
}

fn lvm_error(what: &str, e: snapport_lvm::Error) -> BackendError {
    match e {
        snapport_lvm::Error::Corrupt(s) => BackendError::Corrupt(format!("{what}: {s}")),
        snapport_lvm::Error::Unsupported(s) => BackendError::Unsupported(format!("{what}: {s}")),
        snapport_lvm::Error::Io(s) => BackendError::Io(format!("{what}: {s}")),
    }
}

/// The pool's volume groups: every granted device's label and metadata copies, the
/// newest copy of each VG, and which device holds which of its PVs.
struct Pool {
    devices: Vec<Device>,
    vgs: Vec<(VolumeGroup, Vec<Option<usize>>)>,
}

fn scan() -> Result<Pool, BackendError> {
    let mut devices = Vec::new();
    let mut uuids = Vec::new();
    let mut copies: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for entry in host::granted_devices() {
        // An LV's activated device node, for writes into thin LVs: not a PV.
        if entry.name.starts_with(LV_NODE) {
            continue;
        }
        let id = host::open(&entry.name, None, Access::ReadOnly)?;
        let dev = Device { name: entry.name.clone(), id, size: host::device_size(id)? };
        let what = format!("device {}", entry.name);
        let label = read_label(&dev).map_err(|e| lvm_error(&what, e))?;
        for area in &label.metadata_areas {
            if let Some(copy) = read_metadata(&dev, *area).map_err(|e| lvm_error(&what, e))? {
                // Grouped by the VG's id: one VG may span several devices.
                let vg = VolumeGroup::from_text(&copy.text).map_err(|e| lvm_error(&what, e))?;
                copies.entry(vg.id.clone()).or_default().push(copy.text);
            }
        }
        uuids.push(label.uuid);
        devices.push(dev);
    }
    let mut vgs = Vec::new();
    for texts in copies.values() {
        let refs: Vec<&[u8]> = texts.iter().map(|t| &t[..]).collect();
        let vg = VolumeGroup::newest(&refs).map_err(|e| lvm_error("the pool's metadata", e))?;
        let holders = vg.pvs.iter().map(|pv| uuids.iter().position(|u| *u == pv.id)).collect();
        vgs.push((vg, holders));
    }
    Ok(Pool { devices, vgs })
}

impl Pool {
    /// The name a disk of VG `g` goes by.
    fn name(&self, g: usize, lv: &LogicalVolume) -> String {
        if self.vgs.len() > 1 {
            format!("{}-{}", self.vgs[g].0.name, lv.name)
        } else {
            lv.name.clone()
        }
    }

    /// Every disk under its volume name, with its VG and LV index: the visible LVs but
    /// thin pools (not volumes) and thin snapshots (snapshots of their origin's disk).
    fn volumes(&self) -> Vec<(String, usize, usize)> {
        let mut out = Vec::new();
        for (g, (vg, _)) in self.vgs.iter().enumerate() {
            for (l, lv) in vg.lvs.iter().enumerate() {
                if lv.visible() && lv.thin_pool().is_none() && root(vg, l) == l {
                    out.push((self.name(g, lv), g, l));
                }
            }
        }
        out
    }

    /// The thin snapshots of each disk: (disk name, VG, LV index of the snapshot).
    fn snapshots(&self) -> Vec<(String, usize, usize)> {
        let mut out = Vec::new();
        for (g, (vg, _)) in self.vgs.iter().enumerate() {
            for l in 0..vg.lvs.len() {
                let r = root(vg, l);
                if r != l && vg.lvs[r].visible() {
                    out.push((self.name(g, &vg.lvs[r]), g, l));
                }
            }
        }
        out
    }

    /// The host devices of VG `g`'s PVs, by PV index; `None`: not granted.
    fn pv_devices(&self, g: usize) -> Vec<Option<Device>> {
        self.vgs[g].1.iter().map(|h| h.map(|i| self.devices[i].clone())).collect()
    }
}

/// The LV a thin snapshot was taken from, followed back to the first that is no snapshot
/// (a snapshot of a snapshot belongs to the same disk); `l` itself for any other LV.
fn root(vg: &VolumeGroup, l: usize) -> usize {
    let mut at = l;
    // At most one step per LV: a cycle of origins ends where it started.
    for _ in 0..vg.lvs.len() {
        let Some((_, _, Some(origin))) = vg.lvs[at].thin() else { return at };
        match vg.lvs.iter().position(|o| o.name == origin) {
            Some(o) if o != l => at = o,
            _ => return at,
        }
    }
    at
}

/// The LV's type as LVM names it: its first segment's (an LV has at least one).
fn kind_of(lv: &LogicalVolume) -> &str {
    lv.segments.first().map_or("empty", |s| s.kind.type_name())
}

/// `thin`: a thin LV's device id and the bytes its pool maps for it.
fn info_of(name: &str, vg: &VolumeGroup, lv: &LogicalVolume, thin: Option<(u64, u64)>) -> VolumeInfo {
    VolumeInfo {
        name: name.into(),
        size: vg.lv_size(lv),
        kind: VolumeKind::Disk,
        format: format!("lvm-{}", kind_of(lv)),
        allocated: thin.map(|t| t.1),
        parent: None,
        labels: labels(vg, lv, thin.map(|t| t.0)),
    }
}

struct Plugin;

impl Backend for Plugin {
    type Volume = Volume;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "lvm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "LVM2 volume groups read from their physical volumes".into(),
            capabilities: Capabilities::READ
                | Capabilities::WRITE
                | Capabilities::EXTENTS
                | Capabilities::CHANGED_BLOCKS,
        }
    }

    fn list_volumes() -> Result<Vec<VolumeInfo>, BackendError> {
        let pool = scan()?;
        let mut out = Vec::new();
        for (name, g, l) in pool.volumes() {
            out.push(open(&pool, &name, g, l)?.info.clone());
        }
        Ok(out)
    }

    fn list_snapshots(volume: Option<String>) -> Result<Vec<SnapshotInfo>, BackendError> {
        let pool = scan()?;
        let mut out = Vec::new();
        for (disk, g, l) in pool.snapshots() {
            if volume.as_ref().is_some_and(|v| *v != disk) {
                continue;
            }
            let vg = &pool.vgs[g].0;
            let lv = &vg.lvs[l];
            let (_, device_id, origin) = lv.thin().expect("snapshots are thin LVs");
            // A snapshot of a snapshot names the one it was taken from.
            let parent = origin.filter(|o| vg.lv(o).is_some_and(|o| o.thin().is_some_and(|t| t.2.is_some())));
            out.push(SnapshotInfo {
                name: lv.name.clone(),
                volume: disk,
                id: lv.id.clone(),
                size: vg.lv_size(lv),
                created_unix_ms: lv.creation_time.map(|t| t.saturating_mul(1000)),
                parent: parent.map(ToString::to_string),
                phase: SnapshotPhase::Ready,
                // LVM does not record whether the guest was quiesced.
                consistent: false,
                labels: labels(vg, lv, Some(device_id)),
            });
        }
        Ok(out)
    }

    fn open_volume(volume: String, snapshot: Option<String>, access: Access) -> Result<Volume, BackendError> {
        if access == Access::ReadWrite && snapshot.is_some() {
            return Err(BackendError::PermissionDenied("snapshots are read-only".into()));
        }
        let pool = scan()?;
        let found = match &snapshot {
            None => pool.volumes().into_iter().find(|(n, _, _)| *n == volume),
            Some(snap) => pool
                .snapshots()
                .into_iter()
                .find(|(disk, g, l)| *disk == volume && pool.vgs[*g].0.lvs[*l].name == *snap),
        };
        let Some((name, g, l)) = found else {
            return Err(BackendError::NotFound(match snapshot {
                None => format!("no logical volume {volume}"),
                Some(snap) => format!("no thin snapshot {snap} of {volume}"),
            }));
        };
        let mut opened = open(&pool, &name, g, l)?;
        if access == Access::ReadWrite {
            opened.open_for_writing()?;
        }
        Ok(opened)
    }

    /// `lvcreate --name NAME --size SIZEb VG` through the pool's granted tool: a linear
    /// LV, written in place, removed again (`lvremove`) if dropped before `commit`.
    fn create_volume(
        name: String,
        size: u64,
        kind: VolumeKind,
        parent: Option<String>,
    ) -> Result<Volume, BackendError> {
        if kind == VolumeKind::Image || parent.is_some() {
            return Err(BackendError::Unsupported(
                "an LVM pool holds disks (vd/): no read-only images, no clones".into(),
            ));
        }
        let pool = scan()?;
        let g = target_vg(&pool)?;
        let vg = &pool.vgs[g].0;
        if !lv_name_ok(&name) {
            return Err(BackendError::InvalidArgument(format!("{name:?} is not a name LVM takes for an LV")));
        }
        if vg.lv(&name).is_some() {
            return Err(BackendError::Conflict(format!(
                "VG {} has an LV {name} already (write into it with upload --in-place)",
                vg.name
            )));
        }
        if size == 0 || size % vg.extent_size != 0 {
            return Err(BackendError::InvalidArgument(format!(
                "LVs of VG {} are whole extents of {} bytes, and {size} bytes is not: give --size as a multiple",
                vg.name, vg.extent_size
            )));
        }
        let args = ["--name".to_string(), name.clone(), "--size".to_string(), format!("{size}b"), vg.name.clone()];
        lvm_tool("lvcreate", &args, &format!("creating LV {name}"))?;
        let pool = scan()?;
        let Some(l) = pool.vgs[g].0.lvs.iter().position(|lv| lv.name == name) else {
            return Err(BackendError::Io(format!("lvcreate succeeded, but VG {} has no LV {name} after it", vg.name)));
        };
        let mut volume = open(&pool, &pool.name(g, &pool.vgs[g].0.lvs[l]), g, l)?;
        volume.created = true;
        // Its extents hold whatever was there: the host must write the zeros too.
        volume.info.labels.push(Label { key: "unzeroed".into(), value: "true".into() });
        volume.open_for_writing()?;
        Ok(volume)
    }

    /// `lvremove` of the LV and of its thin snapshots, in one command.
    fn delete_volume(volume: String) -> Result<(), BackendError> {
        let pool = scan()?;
        let Some((_, g, l)) = pool.volumes().into_iter().find(|(n, _, _)| *n == volume) else {
            return Err(BackendError::NotFound(format!("no logical volume {volume}")));
        };
        let vg = &pool.vgs[g].0;
        let mut args = Vec::from(["--yes".to_string()]);
        for (disk, sg, sl) in pool.snapshots() {
            if disk == volume && sg == g {
                args.push(format!("{}/{}", vg.name, vg.lvs[sl].name));
            }
        }
        args.push(format!("{}/{}", vg.name, vg.lvs[l].name));
        lvm_tool("lvremove", &args, &format!("removing {volume}"))
    }

    /// `lvcreate --snapshot --name NAME VG/LV`: a thin snapshot of a thin LV.
    fn create_snapshot(volume: String, name: String, _: u64) -> Result<SnapshotInfo, BackendError> {
        let pool = scan()?;
        let Some((_, g, l)) = pool.volumes().into_iter().find(|(n, _, _)| *n == volume) else {
            return Err(BackendError::NotFound(format!("no logical volume {volume}")));
        };
        let vg = &pool.vgs[g].0;
        let lv = &vg.lvs[l];
        if lv.thin().is_none() {
            return Err(BackendError::Unsupported(format!(
                "{volume} is a {} LV: LVM's snapshots of it are copy-on-write volumes this plugin does not read; thin LVs snapshot",
                kind_of(lv)
            )));
        }
        if !lv_name_ok(&name) {
            return Err(BackendError::InvalidArgument(format!("{name:?} is not a name LVM takes for an LV")));
        }
        if vg.lv(&name).is_some() {
            return Err(BackendError::Conflict(format!("VG {} has an LV {name} already", vg.name)));
        }
        let args = ["--snapshot".to_string(), "--name".to_string(), name.clone(), format!("{}/{}", vg.name, lv.name)];
        lvm_tool("lvcreate", &args, &format!("snapshotting {volume}"))?;
        Plugin::list_snapshots(Some(volume.clone()))?.into_iter().find(|s| s.name == name).ok_or_else(|| {
            BackendError::Io(format!("lvcreate succeeded, but {volume} has no thin snapshot {name} after it"))
        })
    }

    fn delete_snapshot(volume: String, name: String) -> Result<(), BackendError> {
        let pool = scan()?;
        let Some((_, g, l)) =
            pool.snapshots().into_iter().find(|(disk, g, l)| *disk == volume && pool.vgs[*g].0.lvs[*l].name == name)
        else {
            return Err(BackendError::NotFound(format!("no thin snapshot {name} of {volume}")));
        };
        let vg = &pool.vgs[g].0;
        lvm_tool(
            "lvremove",
            &["--yes".to_string(), format!("{}/{}", vg.name, vg.lvs[l].name)],
            &format!("removing snapshot {name} of {volume}"),
        )
    }
}

/// The VG new LVs go into: the pool's only one, or the one setting `vg` names.
fn target_vg(pool: &Pool) -> Result<usize, BackendError> {
    match host::setting("vg") {
        Some(name) => {
            pool.vgs.iter().position(|(vg, _)| vg.name == name).ok_or_else(|| {
                BackendError::NotFound(format!("the pool's setting vg = {name:?} names no VG on its PVs"))
            })
        }
        None if pool.vgs.len() == 1 => Ok(0),
        None => Err(BackendError::InvalidArgument(format!(
            "the pool's PVs hold {} VGs: name the one for new LVs with the setting vg",
            pool.vgs.len()
        ))),
    }
}

/// LVM's rule for LV names, kept narrow: letters, digits and `+_.-`, not starting
/// with `-`, and none of the names LVM reserves for its own hidden LVs.
fn lv_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
        && !["_tmeta", "_tdata", "_pmspare", "_mlog", "_mimage", "_rimage", "_rmeta", "_vorigin", "snapshot", "pvmove"]
            .iter()
            .any(|r| name.contains(r))
}

/// Runs an LVM tool the pool grants; a tool not granted, or a failed run, is an error
/// that names the command and carries LVM's own last line.
fn lvm_tool(tool: &str, args: &[String], doing: &str) -> Result<(), BackendError> {
    if !tools::granted(tool) {
        return Err(BackendError::Unsupported(format!(
            "{doing} needs {tool}, which this pool does not grant ([pools.NAME.tools.{tool}] in the configuration)"
        )));
    }
    let out = tools::run(tool, args)?;
    if out.status != 0 {
        let why = out.stderr.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no message");
        return Err(BackendError::Io(format!(
            "{doing}: {tool} {} failed (exit {}): {why}",
            args.join(" "),
            out.status
        )));
    }
    Ok(())
}

fn labels(vg: &VolumeGroup, lv: &LogicalVolume, device_id: Option<u64>) -> Vec<Label> {
    let mut out = Vec::from([
        Label { key: "vg".into(), value: vg.name.clone() },
        Label { key: "lv".into(), value: lv.name.clone() },
    ]);
    if let Some(id) = device_id {
        out.push(Label { key: "thin-device-id".into(), value: format!("{id}") });
    }
    out
}

/// A thin LV's place in its pool: the pool's data LV and chunk size, and the LV's
/// mapped blocks, checked to lie inside the data LV.
struct Thin {
    pool: String,
    device_id: u64,
    metadata: LogicalVolume,
    data: LogicalVolume,
    chunk: u64,
    runs: Vec<Run>,
}

/// Reads thin device `device_id`'s mapped blocks from its pool's metadata LV.
fn thin_runs(
    vg: &VolumeGroup,
    devices: &[Option<Device>],
    metadata: &LogicalVolume,
    data: &LogicalVolume,
    chunk: u64,
    device_id: u64,
    what: &str,
) -> Result<Vec<Run>, BackendError> {
    let medium = LvMedium { vg, lv: metadata, devices };
    let tp = ThinPool::open(&medium).map_err(|e| lvm_error(what, e))?;
    if tp.data_block_size != chunk {
        return Err(BackendError::Corrupt(format!(
            "{what}: the pool's metadata has {}-byte blocks, its LV {chunk}-byte chunks",
            tp.data_block_size
        )));
    }
    let runs = tp.runs(device_id).map_err(|e| lvm_error(what, e))?;
    // Byte offsets are computed unchecked from here on: they must fit.
    if let Some(r) = runs.iter().find(|r| r.virt.checked_add(r.len).and_then(|e| e.checked_mul(chunk)).is_none()) {
        return Err(BackendError::Corrupt(format!("{what}: block {} is past any possible volume size", r.virt)));
    }
    let data_blocks = vg.lv_size(data) / chunk;
    if let Some(r) = runs.iter().find(|r| r.data + r.len > data_blocks) {
        return Err(BackendError::Corrupt(format!(
            "{what}: block {} maps to data block {}, past the {data_blocks} blocks of {}",
            r.virt,
            r.data + r.len - 1,
            data.name
        )));
    }
    Ok(runs)
}

/// The open volume `name`: LV `l` of VG `g`, with a thin LV's mapping read up front.
fn open(pool: &Pool, name: &str, g: usize, l: usize) -> Result<Volume, BackendError> {
    let vg = &pool.vgs[g].0;
    let lv = vg.lvs[l].clone();
    let devices = pool.pv_devices(g);
    let what = format!("{name} ({}/{})", vg.name, lv.name);
    let thin = match lv.thin() {
        None => None,
        Some((pool_name, device_id, _)) => {
            let pool_lv = vg.lv(pool_name).and_then(|p| p.thin_pool().map(|t| (p, t)));
            let Some((_, (metadata, data, chunk))) = pool_lv else {
                return Err(BackendError::Corrupt(format!("{what}: its thin pool {pool_name} is not in the VG")));
            };
            let (Some(metadata), Some(data)) = (vg.lv(metadata), vg.lv(data)) else {
                return Err(BackendError::Corrupt(format!(
                    "{what}: thin pool {pool_name} lacks its metadata or data LV"
                )));
            };
            let runs = thin_runs(vg, &devices, metadata, data, chunk, device_id, &what)?;
            Some(Thin {
                pool: pool_name.into(),
                device_id,
                metadata: metadata.clone(),
                data: data.clone(),
                chunk,
                runs,
            })
        }
    };
    let mapped =
        thin.as_ref().map(|t| (t.device_id, t.runs.iter().map(|r| r.len).sum::<u64>().saturating_mul(t.chunk)));
    let info = info_of(name, vg, &lv, mapped);
    Ok(Volume {
        info,
        vg: vg.clone(),
        lv,
        devices,
        thin,
        writable: false,
        created: false,
        node: None,
        changes: core::cell::RefCell::new(None),
        committed: core::cell::Cell::new(false),
    })
}

struct Volume {
    info: VolumeInfo,
    vg: VolumeGroup,
    lv: LogicalVolume,
    /// The host device holding each PV of the VG, by PV index; `None`: not granted.
    devices: Vec<Option<Device>>,
    thin: Option<Thin>,
    /// Opened for writing: `devices` are the PVs opened read-write.
    writable: bool,
    /// Made by `create-volume`: removed again unless committed.
    created: bool,
    /// A thin LV opened for writing: its activated device node (see [`LV_NODE`]).
    node: Option<u32>,
    /// `changed-extents`' last answer in full: the base it was asked against and
    /// `thin_delta`'s ranges, kept for the next page.
    changes: core::cell::RefCell<Option<(String, Vec<(DeltaKind, u64, u64)>)>>,
    committed: core::cell::Cell<bool>,
}

impl Drop for Volume {
    /// A created LV dropped before `commit` goes away again (best effort: if `lvremove`
    /// fails, the LV stays, listed, and the error was the operation's anyway).
    fn drop(&mut self) {
        if self.created && !self.committed.get() {
            let name = format!("{}/{}", self.vg.name, self.lv.name);
            let _ = lvm_tool("lvremove", &["--yes".to_string(), name], "removing an unfinished LV");
        }
    }
}

/// Fills a page: extents are pushed until `max` of them or `PAGE_BYTES` past `start`.
struct Page {
    start: u64,
    max: usize,
    extents: Vec<Extent>,
}

impl Page {
    fn full(&self) -> bool {
        self.extents.len() >= self.max
            || self.extents.last().is_some_and(|e| e.offset + e.length - self.start >= PAGE_BYTES)
    }

    fn push(&mut self, offset: u64, length: u64, location: Location) {
        match (self.extents.last_mut(), &location) {
            (Some(last), Location::Zero)
                if last.offset + last.length == offset && matches!(last.location, Location::Zero) =>
            {
                last.length += length
            }
            _ => self.extents.push(Extent { offset, length, location }),
        }
    }

    /// The page, and where the next one starts when `more` is left after its end.
    fn finish(self, more: u64) -> ExtentPage {
        let end = self.extents.last().map_or(self.start, |e| e.offset + e.length);
        ExtentPage { next_offset: (end < more).then_some(end), extents: self.extents }
    }
}

impl Volume {
    /// Opens for an in-place write (the host refuses unless the pool is writable) an LV
    /// LVM lets be written: a linear or striped LV through its PVs, reopened read-write;
    /// a thin LV through its activated device node, granted as `lv:LV`.
    fn open_for_writing(&mut self) -> Result<(), BackendError> {
        let what = self.what();
        if !self.lv.status.iter().any(|s| s == "WRITE") {
            return Err(BackendError::PermissionDenied(format!(
                "{what} is read-only in LVM's metadata (no WRITE status)"
            )));
        }
        if self.thin.is_some() {
            // Writing a thin LV allocates chunks in its pool's metadata, which only the
            // kernel may change while the pool is active: the bytes go through the LV's
            // own device node, which the pool must grant.
            let names = [format!("{LV_NODE}{}", self.lv.name), format!("{LV_NODE}{}/{}", self.vg.name, self.lv.name)];
            let Some(entry) = host::granted_devices().into_iter().find(|e| names.contains(&e.name)) else {
                return Err(BackendError::Unsupported(format!(
                    "{what} is a thin LV: it is written through its activated device (only the kernel may allocate its chunks); grant it as \"{}\" = \"/dev/{}/{}\"",
                    names[0], self.vg.name, self.lv.name
                )));
            };
            let id = host::open(&entry.name, None, Access::ReadWrite)?;
            let size = host::device_size(id)?;
            if size != self.info.size {
                return Err(BackendError::InvalidArgument(format!(
                    "{}, granted as {what}'s device, is {size} bytes, the LV {}",
                    entry.name, self.info.size
                )));
            }
            self.node = Some(id);
            self.writable = true;
            return Ok(());
        }
        if let Some(seg) = self.lv.segments.iter().find(|s| !matches!(s.kind, SegmentKind::Striped { .. })) {
            return Err(BackendError::Unsupported(format!(
                "{what} has a {} segment; only linear and striped LVs are written",
                seg.kind.type_name()
            )));
        }
        for dev in self.devices.iter_mut().flatten() {
            dev.id = host::open(&dev.name, None, Access::ReadWrite)?;
        }
        self.writable = true;
        Ok(())
    }

    fn what(&self) -> String {
        format!("{} ({}/{})", self.info.name, self.vg.name, self.lv.name)
    }

    /// Data extents for LV bytes `[from, to)` of `lv`, which lie on the PVs.
    fn place(&self, lv: &LogicalVolume, at: u64, from: u64, to: u64, page: &mut Page) -> Result<(), BackendError> {
        let what = self.what();
        let mut pos = at;
        for p in self.vg.map(lv, from, to - from).map_err(|e| lvm_error(&what, e))? {
            let Some(dev) = &self.devices[p.pv] else {
                return Err(BackendError::NotFound(format!("{}: {}", self.info.name, not_granted(&self.vg, lv, p.pv))));
            };
            page.push(pos, p.length, Location::Data(DeviceOffset { device: dev.id, offset: p.offset }));
            pos += p.length;
            if page.full() {
                break;
            }
        }
        Ok(())
    }

    /// Extents of thin LV bytes `[from, to)`: mapped chunks on the pool's data LV,
    /// unmapped ones zero.
    fn thin_extents(&self, thin: &Thin, from: u64, to: u64, page: &mut Page) -> Result<(), BackendError> {
        let c = thin.chunk;
        let mut pos = from;
        let mut i = thin.runs.partition_point(|r| (r.virt + r.len) * c <= from);
        while pos < to && !page.full() {
            match thin.runs.get(i) {
                Some(r) if r.virt * c <= pos => {
                    let end = ((r.virt + r.len) * c).min(to);
                    let into = pos - r.virt * c;
                    self.place(&thin.data, pos, r.data * c + into, r.data * c + into + (end - pos), page)?;
                    pos = page.extents.last().map_or(end, |e| e.offset + e.length);
                    if pos >= end {
                        i += 1;
                    }
                }
                next => {
                    let end = next.map_or(to, |r| (r.virt * c).min(to));
                    page.push(pos, end - pos, Location::Zero);
                    pos = end;
                }
            }
        }
        Ok(())
    }
}

impl SdkVolume for Volume {
    fn info(&self) -> VolumeInfo {
        self.info.clone()
    }

    /// A page covers up to 1 GiB of the LV: data extents on the PVs' devices, and for a
    /// thin LV zero extents where no chunk is mapped.
    fn map_extents(&self, start: u64, max_extents: u32) -> Result<ExtentPage, BackendError> {
        let size = self.info.size;
        let mut page = Page { start, max: max_extents.max(1) as usize, extents: Vec::new() };
        if start >= size {
            return Ok(page.finish(size));
        }
        let end = size.min(start.saturating_add(PAGE_BYTES));
        match &self.thin {
            Some(thin) => self.thin_extents(thin, start, end, &mut page)?,
            None => self.place(&self.lv, start, start, end, &mut page)?,
        }
        Ok(page.finish(size))
    }

    /// Between two thin LVs of one pool, from the pool's mapping trees alone (what
    /// `thin_delta` reports): chunks mapped differently or on one side only. A chunk
    /// this LV no longer maps reads as zero.
    fn changed_extents(&self, base: String, start: u64, max_extents: u32) -> Result<ExtentPage, BackendError> {
        let what = self.what();
        let Some(thin) = &self.thin else {
            return Err(BackendError::Unsupported(format!(
                "{what} is not a thin LV: changed extents come from thin pools"
            )));
        };
        let Some(base_lv) = self.vg.lv(&base) else {
            return Err(BackendError::NotFound(format!("no LV {base} in VG {} to compare {what} with", self.vg.name)));
        };
        let Some((base_pool, base_id, _)) = base_lv.thin().filter(|t| t.0 == thin.pool) else {
            return Err(BackendError::Unsupported(format!(
                "{base} is not a thin LV of pool {}, as {what} is: no changed extents between them",
                thin.pool
            )));
        };
        // The host asks page by page: the base's tree is walked and compared once.
        let mut cached = self.changes.borrow_mut();
        if cached.as_ref().is_none_or(|(b, _)| *b != base) {
            let base_what = format!("{}/{base} (thin device {base_id} of {base_pool})", self.vg.name);
            let base_runs =
                thin_runs(&self.vg, &self.devices, &thin.metadata, &thin.data, thin.chunk, base_id, &base_what)?;
            *cached = Some((base.clone(), delta(&base_runs, &thin.runs)));
        }
        let changes = &cached.as_ref().expect("set above").1;
        let size = self.info.size;
        let c = thin.chunk;
        let mut page = Page { start, max: max_extents.max(1) as usize, extents: Vec::new() };
        let mut more = start;
        let first = changes.partition_point(|(_, block, len)| (block + len) * c <= start);
        for &(kind, block, len) in &changes[first..] {
            let from = (block * c).max(start);
            let to = ((block + len) * c).min(size);
            if kind == DeltaKind::Same || from >= to {
                continue;
            }
            if page.full() {
                more = size;
                break;
            }
            match kind {
                DeltaKind::LeftOnly => page.push(from, to - from, Location::Zero),
                _ => self.thin_extents(thin, from, to, &mut page)?,
            }
            more = to;
        }
        Ok(page.finish(more))
    }

    /// Where bytes of an LV opened for writing go: for a linear or striped LV the same PV
    /// places reads come from; for a thin LV the same offset of its device node. Zeros
    /// too: the host writes them, as it would any data.
    fn allocate(&self, offset: u64, length: u64, _zero: bool) -> Result<Vec<Extent>, BackendError> {
        if !self.writable {
            return Err(BackendError::PermissionDenied(format!("{} is open read-only", self.what())));
        }
        if offset.checked_add(length).is_none_or(|end| end > self.info.size) {
            return Err(BackendError::OutOfRange(format!(
                "[{offset}, +{length}) is past the end of {} ({} bytes)",
                self.what(),
                self.info.size
            )));
        }
        if let Some(device) = self.node {
            return Ok(Vec::from([Extent {
                offset,
                length,
                location: Location::Data(DeviceOffset { device, offset }),
            }]));
        }
        let mut page = Page { start: offset, max: usize::MAX, extents: Vec::new() };
        let mut pos = offset;
        // A page stops at PAGE_BYTES; the host asks for much less, but loop regardless.
        while pos < offset + length {
            page.start = pos;
            self.place(&self.lv, pos, pos, offset + length, &mut page)?;
            pos = page.extents.last().map_or(offset + length, |e| e.offset + e.length);
        }
        Ok(page.extents)
    }

    /// Nothing to persist: an LV's map does not change when its bytes do.
    fn commit(&self) -> Result<(), BackendError> {
        if !self.writable {
            return Err(BackendError::PermissionDenied(format!("{} is open read-only", self.what())));
        }
        self.committed.set(true);
        Ok(())
    }
}

export_plugin!(Plugin);
