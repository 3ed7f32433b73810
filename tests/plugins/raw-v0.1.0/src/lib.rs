//! The raw backend as it was written against snapport:backend@0.1.0, before the SDK,
//! kept frozen here: what a plugin author who built before 0.1.1 ships.
//! tests/conformance.rs runs a pool on it. Do not port it; it must not change.
//!
//! snapport's raw backend: each device the pool grants (a raw file or a block device) is a
//! disk `vd/NAME`, and so is each `*.raw` file in a granted folder (`NAME.image.raw` is
//! the read-only image `vi/NAME`). The map of a raw disk is one data extent: the bytes are
//! where they are. New volumes are sparse files.
#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

// Frozen against 0.1.0: the proof that plugins of an earlier version keep loading.
wit_bindgen::generate!({ world: "backend-plugin", path: "../../../wit/v0.1.0" });

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

const SUFFIX: &str = ".raw";
const IMAGE_MARK: &str = ".image";

/// A volume: its name, what to pass to `host::open`, its size and kind.
struct Raw {
    name: String,
    target: String,
    size: u64,
    kind: VolumeKind,
    /// A file in a folder (which `delete-volume` may remove), not a granted device.
    file: bool,
}

fn volumes() -> Result<Vec<Raw>, BackendError> {
    let mut out: Vec<Raw> = host::granted_devices()
        .into_iter()
        .map(|d| Raw { name: d.name.clone(), target: d.name, size: d.size, kind: VolumeKind::Disk, file: false })
        .collect();
    // A pool without folders has no files to list; that is not an error here.
    if let Ok(files) = host::list_files() {
        for f in files {
            if let Some(stem) = f.name.strip_suffix(SUFFIX) {
                let (name, kind) = match stem.strip_suffix(IMAGE_MARK) {
                    Some(n) => (n, VolumeKind::Image),
                    None => (stem, VolumeKind::Disk),
                };
                out.push(Raw { name: name.into(), target: f.name.clone(), size: f.size, kind, file: true });
            }
        }
    }
    Ok(out)
}

fn find(volume: &str) -> Result<Raw, BackendError> {
    volumes()?
        .into_iter()
        .find(|v| v.name == volume)
        .ok_or_else(|| BackendError::NotFound(format!("no raw volume {volume}")))
}

fn info_of(name: &str, size: u64, kind: VolumeKind) -> VolumeInfo {
    VolumeInfo {
        name: name.into(),
        size,
        kind,
        format: "raw".into(),
        allocated: None,
        parent: None,
        labels: Vec::new(),
    }
}

struct Plugin;

impl Guest for Plugin {
    type Volume = Volume;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "raw".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "raw files and block devices".into(),
            capabilities: Capabilities::READ
                | Capabilities::WRITE
                | Capabilities::VOLUME_CREATE
                | Capabilities::VOLUME_DELETE,
        }
    }

    fn list_volumes() -> Result<Vec<VolumeInfo>, BackendError> {
        Ok(volumes()?.iter().map(|v| info_of(&v.name, v.size, v.kind)).collect())
    }

    fn list_snapshots(_: Option<String>) -> Result<Vec<SnapshotInfo>, BackendError> {
        Ok(Vec::new())
    }

    fn open_volume(volume: String, snapshot: Option<String>, access: Access) -> Result<VolumeHandle, BackendError> {
        if snapshot.is_some() {
            return Err(BackendError::Unsupported("raw volumes have no snapshots".into()));
        }
        let v = find(&volume)?;
        if access == Access::ReadWrite && v.kind == VolumeKind::Image {
            return Err(BackendError::PermissionDenied(format!("vi/{volume} is a read-only image")));
        }
        let device = host::open(&v.target, None, access)?;
        let size = host::device_size(device)?;
        Ok(VolumeHandle::new(Volume { device, info: info_of(&volume, size, v.kind), created: false }))
    }

    fn create_volume(
        name: String,
        size: u64,
        kind: VolumeKind,
        parent: Option<String>,
    ) -> Result<VolumeHandle, BackendError> {
        if parent.is_some() {
            return Err(BackendError::Unsupported("raw volumes cannot be thin clones; make a full copy".into()));
        }
        if name.is_empty() || name.starts_with('.') || name.contains('/') || name.ends_with(IMAGE_MARK) {
            return Err(BackendError::InvalidArgument(format!("{name:?} cannot name a volume")));
        }
        if find(&name).is_ok() {
            return Err(BackendError::Conflict(format!("volume {name} exists already")));
        }
        let file = match kind {
            VolumeKind::Disk => format!("{name}{SUFFIX}"),
            VolumeKind::Image => format!("{name}{IMAGE_MARK}{SUFFIX}"),
        };
        let device = host::create_file(&file)?;
        host::set_size(device, size)?;
        Ok(VolumeHandle::new(Volume { device, info: info_of(&name, size, kind), created: true }))
    }

    fn delete_volume(name: String) -> Result<(), BackendError> {
        let v = find(&name)?;
        if !v.file {
            return Err(BackendError::Unsupported(format!("{name} is a granted device; the operator owns it")));
        }
        host::remove_file(&v.target)
    }

    fn create_snapshot(_: String, _: String, _: u64) -> Result<SnapshotInfo, BackendError> {
        Err(BackendError::Unsupported("raw volumes have no snapshots".into()))
    }

    fn delete_snapshot(_: String, _: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("raw volumes have no snapshots".into()))
    }

    fn restore_snapshot(_: String, _: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("raw volumes have no snapshots".into()))
    }
}

struct Volume {
    device: u32,
    info: VolumeInfo,
    /// Made by `create-volume`: `commit` publishes it.
    created: bool,
}

impl Volume {
    fn data(&self, offset: u64, length: u64) -> Extent {
        Extent { offset, length, location: Location::Data(DeviceOffset { device: self.device, offset }) }
    }
}

impl GuestVolume for Volume {
    fn info(&self) -> VolumeInfo {
        self.info.clone()
    }

    fn map_extents(&self, start: u64, _: u32) -> Result<ExtentPage, BackendError> {
        let size = self.info.size;
        let extents = if start < size { vec![self.data(start, size - start)] } else { Vec::new() };
        Ok(ExtentPage { extents, next_offset: None })
    }

    fn changed_extents(&self, _: String, _: u64, _: u32) -> Result<ExtentPage, BackendError> {
        Err(BackendError::Unsupported("raw volumes have no snapshots".into()))
    }

    fn decode(&self, codec: u32, _: Vec<u8>, _: u32) -> Result<Vec<u8>, BackendError> {
        Err(BackendError::Unsupported(format!("raw volumes have no codec {codec}")))
    }

    /// Raw bytes live where they are: the host writes at the same offset, zeros included.
    fn allocate(&self, offset: u64, length: u64, _zero: bool) -> Result<Vec<Extent>, BackendError> {
        match offset.checked_add(length) {
            Some(end) if end <= self.info.size => Ok(vec![self.data(offset, length)]),
            _ => Err(BackendError::OutOfRange(format!(
                "{} bytes at {offset} do not fit in {} bytes",
                length, self.info.size
            ))),
        }
    }

    fn commit(&self) -> Result<(), BackendError> {
        host::flush(self.device)?;
        if self.created {
            host::publish_file(self.device)?;
        }
        Ok(())
    }
}

export!(Plugin);
