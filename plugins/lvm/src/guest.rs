//! The component glue: host devices as `Medium`s, VGs found on them, LVs as volumes.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use snapport_lvm::label::{read_label, read_metadata};
use snapport_lvm::vg::{LogicalVolume, SegmentKind, VolumeGroup};
use snapport_lvm::Medium;

wit_bindgen::generate!({ world: "backend-plugin", path: "../../wit" });

use exports::snapport::backend::backend::{Guest, GuestVolume, PluginInfo, Volume as VolumeHandle};
use snapport::backend::host;
use snapport::backend::types::{
    Access, BackendError, Capabilities, DeviceOffset, Extent, ExtentPage, Location, SnapshotInfo, VolumeInfo,
    VolumeKind,
};

#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// The host caps `read-at` at 1 MiB.
const READ_CHUNK: u64 = 1 << 20;
/// Extents in one page of the map.
const PAGE_BYTES: u64 = 1 << 30;

/// A granted device opened read-only through the host.
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
            let got = host::read_at(self.id, at, want).map_err(|e| snapport_lvm::Error::Io(describe(&e)))?;
            if got.is_empty() {
                return Err(snapport_lvm::Error::Io(format!("{}: unexpected end at {at}", self.name)));
            }
            buf[done..done + got.len()].copy_from_slice(&got);
            done += got.len();
        }
        Ok(())
    }
}

fn describe(e: &BackendError) -> String {
    match e {
        BackendError::NotFound(s)
        | BackendError::InvalidArgument(s)
        | BackendError::Unsupported(s)
        | BackendError::PermissionDenied(s)
        | BackendError::OutOfRange(s)
        | BackendError::Corrupt(s)
        | BackendError::Busy(s)
        | BackendError::Conflict(s)
        | BackendError::Io(s) => s.clone(),
    }
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
    /// Every LV under its volume name.
    fn volumes(&self) -> Vec<(String, usize, usize)> {
        let several = self.vgs.len() > 1;
        let mut out = Vec::new();
        for (g, (vg, _)) in self.vgs.iter().enumerate() {
            for (l, lv) in vg.lvs.iter().enumerate() {
                let name = if several { format!("{}-{}", vg.name, lv.name) } else { lv.name.clone() };
                out.push((name, g, l));
            }
        }
        out
    }
}

fn kind_of(lv: &LogicalVolume) -> String {
    match lv.segments.first().map(|s| &s.kind) {
        Some(SegmentKind::Other(t)) => t.clone(),
        _ => "linear".into(),
    }
}

fn info_of(name: &str, vg: &VolumeGroup, lv: &LogicalVolume) -> VolumeInfo {
    VolumeInfo {
        name: name.into(),
        size: vg.lv_size(lv),
        kind: VolumeKind::Disk,
        format: format!("lvm-{}", kind_of(lv)),
        allocated: None,
        parent: None,
        labels: Vec::from([("vg".to_string(), vg.name.clone()), ("lv".to_string(), lv.name.clone())])
            .into_iter()
            .map(|(key, value)| snapport::backend::types::Label { key, value })
            .collect(),
    }
}

struct Plugin;

impl Guest for Plugin {
    type Volume = Volume;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "lvm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "LVM2 volume groups read from their physical volumes".into(),
            capabilities: Capabilities::READ | Capabilities::EXTENTS,
        }
    }

    fn list_volumes() -> Result<Vec<VolumeInfo>, BackendError> {
        let pool = scan()?;
        Ok(pool
            .volumes()
            .iter()
            .map(|(name, g, l)| {
                let vg = &pool.vgs[*g].0;
                info_of(name, vg, &vg.lvs[*l])
            })
            .collect())
    }

    fn list_snapshots(_: Option<String>) -> Result<Vec<SnapshotInfo>, BackendError> {
        Ok(Vec::new())
    }

    fn open_volume(volume: String, snapshot: Option<String>, access: Access) -> Result<VolumeHandle, BackendError> {
        if snapshot.is_some() {
            return Err(BackendError::Unsupported("LVM snapshots are not read yet".into()));
        }
        if access == Access::ReadWrite {
            return Err(BackendError::Unsupported("this lvm plugin reads; writes come next".into()));
        }
        let pool = scan()?;
        let Some((_, g, l)) = pool.volumes().into_iter().find(|(n, _, _)| *n == volume) else {
            return Err(BackendError::NotFound(format!("no logical volume {volume}")));
        };
        let (vg, holders) = &pool.vgs[g];
        let lv = vg.lvs[l].clone();
        let info = info_of(&volume, vg, &lv);
        Ok(VolumeHandle::new(Volume {
            info,
            vg: vg.clone(),
            lv,
            devices: holders.iter().map(|h| h.map(|i| pool.devices[i].id)).collect(),
        }))
    }

    fn create_volume(_: String, _: u64, _: VolumeKind, _: Option<String>) -> Result<VolumeHandle, BackendError> {
        Err(BackendError::Unsupported("creating LVs needs LVM's tools; not granted to this pool".into()))
    }

    fn delete_volume(_: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("removing LVs needs LVM's tools; not granted to this pool".into()))
    }

    fn create_snapshot(_: String, _: String, _: u64) -> Result<SnapshotInfo, BackendError> {
        Err(BackendError::Unsupported("LVM snapshots need LVM's tools; not granted to this pool".into()))
    }

    fn delete_snapshot(_: String, _: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("LVM snapshots need LVM's tools; not granted to this pool".into()))
    }

    fn restore_snapshot(_: String, _: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("LVM snapshots need LVM's tools; not granted to this pool".into()))
    }
}

struct Volume {
    info: VolumeInfo,
    vg: VolumeGroup,
    lv: LogicalVolume,
    /// The host device holding each PV of the VG, by PV index; `None`: not granted.
    devices: Vec<Option<u32>>,
}

impl GuestVolume for Volume {
    fn info(&self) -> VolumeInfo {
        self.info.clone()
    }

    /// A page covers up to 1 GiB of the LV, as data extents on the PVs' devices.
    fn map_extents(&self, start: u64, max_extents: u32) -> Result<ExtentPage, BackendError> {
        let size = self.info.size;
        if start >= size {
            return Ok(ExtentPage { extents: Vec::new(), next_offset: None });
        }
        let end = size.min(start.saturating_add(PAGE_BYTES));
        let what = format!("vd/{}", self.info.name);
        let pieces = self.vg.map(&self.lv, start, end - start).map_err(|e| lvm_error(&what, e))?;
        let mut extents = Vec::new();
        let mut pos = start;
        for p in pieces {
            if extents.len() >= max_extents.max(1) as usize {
                break;
            }
            let Some(device) = self.devices[p.pv] else {
                let pv = &self.vg.pvs[p.pv];
                return Err(BackendError::NotFound(format!(
                    "{what} lies partly on {} ({}) of VG {}, which the pool does not grant",
                    pv.name, pv.id, self.vg.name
                )));
            };
            extents.push(Extent {
                offset: pos,
                length: p.length,
                location: Location::Data(DeviceOffset { device, offset: p.offset }),
            });
            pos += p.length;
        }
        Ok(ExtentPage { extents, next_offset: (pos < size).then_some(pos) })
    }

    fn changed_extents(&self, _: String, _: u64, _: u32) -> Result<ExtentPage, BackendError> {
        Err(BackendError::Unsupported("changed extents need thin volumes, not read yet".into()))
    }

    fn decode(&self, codec: u32, _: Vec<u8>, _: u32) -> Result<Vec<u8>, BackendError> {
        Err(BackendError::Unsupported(format!("LVM volumes have no codec {codec}")))
    }

    fn allocate(&self, _: u64, _: u64, _: bool) -> Result<Vec<Extent>, BackendError> {
        Err(BackendError::Unsupported("this lvm plugin reads; writes come next".into()))
    }

    fn commit(&self) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("this lvm plugin reads; writes come next".into()))
    }
}

export!(Plugin);
