//! The component glue: WIT bindings, host-backed media and the exported backend.

use crate::chain::{self, Layer, Location, MAX_DEPTH};
use crate::format::{self, Image, Medium};
use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

wit_bindgen::generate!({ world: "backend-plugin", path: "../../wit" });

use exports::snapport::backend::backend::{Guest, GuestVolume, PluginInfo, Volume as VolumeHandle};
use snapport::backend::host;
use snapport::backend::types::{
    Access, BackendError, Capabilities, DeviceOffset, EncodedRef, Extent, ExtentPage, FileEntry, Location as WitLocation,
    SnapshotInfo, SnapshotPhase, VolumeInfo, VolumeKind,
};

#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// The host caps `read-at` at 1 MiB.
const READ_CHUNK: u64 = 1 << 20;
const IMAGE_SUFFIXES: &[&str] = &[".qcow2", ".raw", ".img"];

/// A device opened through the host, read through `read-at`.
struct Device {
    id: u32,
    size: u64,
}

impl Device {
    fn open(name: &str, relative_to: Option<u32>) -> Result<Device, BackendError> {
        let id = host::open(name, relative_to, Access::ReadOnly)?;
        let size = host::device_size(id)?;
        Ok(Device { id, size })
    }
}

impl Medium for Device {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> format::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let want = ((buf.len() - done) as u64).min(READ_CHUNK) as u32;
            let at = offset + done as u64;
            let got = host::read_at(self.id, at, want).map_err(|e| format::Error::Io(describe(&e)))?;
            if got.is_empty() {
                return Err(format::Error::Io(format!("unexpected end of device at {at}")));
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

fn format_error(file: &str, e: format::Error) -> BackendError {
    match e {
        format::Error::Corrupt(m) => BackendError::Corrupt(format!("{file}: {m}")),
        format::Error::Unsupported(m) => BackendError::Unsupported(format!("{file}: not supported: {m}")),
        format::Error::Io(m) => BackendError::Io(format!("{file}: {m}")),
    }
}

/// The image files of the pool, as (volume name, file name).
fn image_files() -> Result<Vec<(String, FileEntry)>, BackendError> {
    let mut out = Vec::new();
    for entry in host::list_files()? {
        if let Some(stem) = IMAGE_SUFFIXES.iter().find_map(|s| entry.name.strip_suffix(s)) {
            if !stem.is_empty() {
                out.push((stem.to_owned(), entry));
            }
        }
    }
    Ok(out)
}

fn file_of(volume: &str) -> Result<String, BackendError> {
    let files = image_files()?;
    let mut hits = files.iter().filter(|(stem, _)| stem == volume);
    match (hits.next(), hits.next()) {
        (Some((_, f)), None) => Ok(f.name.clone()),
        (Some((_, a)), Some((_, b))) => Err(BackendError::Conflict(format!(
            "two files could be vd/{volume}: {} and {}; rename one",
            a.name, b.name
        ))),
        (None, _) => Err(BackendError::NotFound(format!("no disk {volume} (no {volume}.qcow2, .raw or .img)"))),
    }
}

fn first_bytes(dev: &Device) -> Result<[u8; 4], BackendError> {
    let mut magic = [0u8; 4];
    if dev.size >= 4 {
        host::read_at(dev.id, 0, 4).map(|b| magic.copy_from_slice(&b[..4]))?;
    }
    Ok(magic)
}

/// Opens `file` and its backing chain, mapping the top layer at `snapshot`.
fn open_chain(file: &str, snapshot: Option<&str>) -> Result<Vec<(Device, Layer)>, BackendError> {
    let mut layers: Vec<(Device, Layer)> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut next = Some((file.to_owned(), None::<u32>, None::<String>));
    while let Some((name, relative_to, declared_format)) = next.take() {
        if layers.len() == MAX_DEPTH {
            return Err(BackendError::Corrupt(format!(
                "{file}: backing chain deeper than {MAX_DEPTH} ({})",
                names.join(" -> ")
            )));
        }
        let dev = Device::open(&name, relative_to)?;
        if layers.iter().any(|(d, _)| d.id == dev.id) {
            names.push(name);
            return Err(BackendError::Corrupt(format!("{file}: backing chain loops: {}", names.join(" -> "))));
        }
        names.push(name.clone());
        let is_qcow2 = match declared_format.as_deref() {
            Some("raw") => false,
            _ => format::is_qcow2(&first_bytes(&dev)?),
        };
        // Content decides between raw and qcow2, except that a file that says it is qcow2
        // and is not must not be exported as raw bytes.
        if !is_qcow2 && (name.ends_with(".qcow2") || declared_format.as_deref() == Some("qcow2")) {
            return Err(BackendError::Corrupt(format!("{name}: no qcow2 magic (QFI\\xfb) at the start of the file")));
        }
        let layer = if is_qcow2 {
            let image = Image::open(&dev).map_err(|e| format_error(&name, e))?;
            let which = if layers.is_empty() { snapshot } else { None };
            let view = image
                .view(&dev, which)
                .map_err(|e| format_error(&name, e))?
                .ok_or_else(|| BackendError::NotFound(format!("{name} has no snapshot {}", which.unwrap_or(""))))?;
            if let Some(b) = &image.backing_file {
                next = Some((b.clone(), Some(dev.id), image.backing_format.clone()));
            }
            Layer::Qcow2 { image, view }
        } else if snapshot.is_some() && layers.is_empty() {
            return Err(BackendError::NotFound(format!("{name} is a raw file: it has no snapshots")));
        } else {
            Layer::Raw { size: dev.size }
        };
        layers.push((dev, layer));
    }
    Ok(layers)
}

fn volume_info(name: &str, file: &FileEntry) -> VolumeInfo {
    let mut info = VolumeInfo {
        name: name.to_owned(),
        size: file.size,
        kind: VolumeKind::Disk,
        format: "raw".into(),
        allocated: None,
        parent: None,
        labels: Vec::new(),
    };
    match open_chain(&file.name, None) {
        Ok(layers) => {
            if let Layer::Qcow2 { image, view } = &layers[0].1 {
                info.format = "qcow2".into();
                info.size = view.size;
                info.parent = image.backing_file.clone();
            }
        }
        Err(e) => {
            info.format = "unreadable".into();
            info.labels.push(snapport::backend::types::Label { key: "error".into(), value: describe(&e) });
        }
    }
    info
}

struct Plugin;

impl Guest for Plugin {
    type Volume = Volume;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "qcow2".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "a folder of qcow2 and raw image files".into(),
            capabilities: Capabilities::READ | Capabilities::EXTENTS,
        }
    }

    fn list_volumes() -> Result<Vec<VolumeInfo>, BackendError> {
        Ok(image_files()?.iter().map(|(stem, f)| volume_info(stem, f)).collect())
    }

    fn list_snapshots(volume: Option<String>) -> Result<Vec<SnapshotInfo>, BackendError> {
        let mut out = Vec::new();
        for (stem, f) in image_files()? {
            if volume.as_ref().is_some_and(|v| *v != stem) {
                continue;
            }
            let dev = Device::open(&f.name, None)?;
            if !format::is_qcow2(&first_bytes(&dev)?) {
                continue;
            }
            let image = Image::open(&dev).map_err(|e| format_error(&f.name, e))?;
            for s in &image.snapshots {
                out.push(SnapshotInfo {
                    name: s.name.clone(),
                    volume: stem.clone(),
                    id: s.id.clone(),
                    size: s.disk_size,
                    created_unix_ms: Some(u64::from(s.date_sec) * 1000 + u64::from(s.date_nsec) / 1_000_000),
                    parent: None,
                    phase: SnapshotPhase::Ready,
                    consistent: false,
                    labels: Vec::new(),
                });
            }
        }
        if let Some(v) = volume {
            if out.is_empty() {
                file_of(&v)?;
            }
        }
        Ok(out)
    }

    fn open_volume(volume: String, snapshot: Option<String>, access: Access) -> Result<VolumeHandle, BackendError> {
        if access == Access::ReadWrite {
            return Err(BackendError::Unsupported("the qcow2 plugin cannot write volumes yet".into()));
        }
        let file = file_of(&volume)?;
        let layers = open_chain(&file, snapshot.as_deref())?;
        let top = &layers[0].1;
        let info = VolumeInfo {
            name: match &snapshot {
                Some(s) => format!("{volume}@{s}"),
                None => volume.clone(),
            },
            size: top.size(),
            kind: VolumeKind::Disk,
            format: match top {
                Layer::Qcow2 { .. } => "qcow2".into(),
                Layer::Raw { .. } => "raw".into(),
            },
            allocated: None,
            parent: match top {
                Layer::Qcow2 { image, .. } => image.backing_file.clone(),
                Layer::Raw { .. } => None,
            },
            labels: Vec::new(),
        };
        Ok(VolumeHandle::new(Volume { layers, info }))
    }

    fn create_volume(_: String, _: u64, _: VolumeKind) -> Result<VolumeHandle, BackendError> {
        Err(BackendError::Unsupported("the qcow2 plugin cannot create volumes yet".into()))
    }

    fn delete_volume(_: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("the qcow2 plugin cannot delete volumes yet".into()))
    }

    fn create_snapshot(_: String, _: String) -> Result<SnapshotInfo, BackendError> {
        Err(BackendError::Unsupported("the qcow2 plugin cannot create snapshots yet".into()))
    }

    fn delete_snapshot(_: String, _: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("the qcow2 plugin cannot delete snapshots yet".into()))
    }
}

struct Volume {
    layers: Vec<(Device, Layer)>,
    info: VolumeInfo,
}

impl GuestVolume for Volume {
    fn info(&self) -> VolumeInfo {
        self.info.clone()
    }

    fn map_extents(&self, start: u64, max_extents: u32) -> Result<ExtentPage, BackendError> {
        let (extents, next) = chain::map(&self.layers, start, max_extents as usize)
            .map_err(|e| format_error(&self.info.name, e))?;
        let device = |layer: usize| self.layers[layer].0.id;
        let extents = extents
            .into_iter()
            .map(|e| Extent {
                offset: e.start,
                length: e.length,
                location: match e.location {
                    Location::Data { layer, offset } => WitLocation::Data(DeviceOffset { device: device(layer), offset }),
                    Location::Zero => WitLocation::Zero,
                    Location::Unallocated => WitLocation::Unallocated,
                    Location::Compressed { layer, offset, stored, decoded, skip, codec } => {
                        WitLocation::Encoded(EncodedRef {
                            device: device(layer),
                            offset,
                            stored_length: stored,
                            decoded_length: decoded,
                            skip,
                            codec,
                        })
                    }
                },
            })
            .collect();
        Ok(ExtentPage { extents, next_offset: next })
    }

    fn changed_extents(&self, _: String, _: u64, _: u32) -> Result<ExtentPage, BackendError> {
        Err(BackendError::Unsupported("changed extents between qcow2 snapshots are not implemented yet".into()))
    }

    fn decode(&self, codec: u32, stored: Vec<u8>, decoded_length: u32) -> Result<Vec<u8>, BackendError> {
        format::decode(codec, &stored, decoded_length as usize).map_err(|e| format_error(&self.info.name, e))
    }

    fn allocate(&self, _: u64, _: u64, _: bool) -> Result<Vec<Extent>, BackendError> {
        Err(BackendError::Unsupported("the qcow2 plugin cannot write volumes yet".into()))
    }

    fn commit(&self) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("the qcow2 plugin cannot write volumes yet".into()))
    }
}

export!(Plugin);

