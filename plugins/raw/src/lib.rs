//! snapport's raw backend: each device the pool grants (a raw file or a block device) is a
//! disk `vd/NAME`, and so is each `*.raw` file in a granted folder. The map of a raw disk
//! is one data extent: the bytes are where they are.
#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

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

const SUFFIX: &str = ".raw";

/// (volume name, what to pass to `host::open`)
fn volumes() -> Result<Vec<(String, String, u64)>, BackendError> {
    let mut out: Vec<(String, String, u64)> =
        host::granted_devices().into_iter().map(|d| (d.name.clone(), d.name, d.size)).collect();
    // A pool without folders has no files to list; that is not an error here.
    if let Ok(files) = host::list_files() {
        for f in files {
            if let Some(stem) = f.name.strip_suffix(SUFFIX) {
                out.push((stem.into(), f.name.clone(), f.size));
            }
        }
    }
    Ok(out)
}

fn info_of(name: &str, size: u64) -> VolumeInfo {
    VolumeInfo {
        name: name.into(),
        size,
        kind: VolumeKind::Disk,
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
            capabilities: Capabilities::READ | Capabilities::WRITE | Capabilities::VOLUME_CREATE,
        }
    }

    fn list_volumes() -> Result<Vec<VolumeInfo>, BackendError> {
        Ok(volumes()?.iter().map(|(n, _, size)| info_of(n, *size)).collect())
    }

    fn list_snapshots(_: Option<String>) -> Result<Vec<SnapshotInfo>, BackendError> {
        Ok(Vec::new())
    }

    fn open_volume(volume: String, snapshot: Option<String>, access: Access) -> Result<VolumeHandle, BackendError> {
        if snapshot.is_some() {
            return Err(BackendError::Unsupported("raw volumes have no snapshots".into()));
        }
        let (_, target, _) = volumes()?
            .into_iter()
            .find(|(n, _, _)| *n == volume)
            .ok_or_else(|| BackendError::NotFound(format!("no raw disk {volume}")))?;
        let device = host::open(&target, None, access)?;
        let size = host::device_size(device)?;
        Ok(VolumeHandle::new(Volume { device, info: info_of(&volume, size) }))
    }

    fn create_volume(name: String, size: u64, _: VolumeKind) -> Result<VolumeHandle, BackendError> {
        let device = host::create_file(&format!("{name}{SUFFIX}"))?;
        host::set_size(device, size)?;
        Ok(VolumeHandle::new(Volume { device, info: info_of(&name, size) }))
    }

    fn delete_volume(_: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("deleting raw volumes is not implemented yet".into()))
    }

    fn create_snapshot(_: String, _: String) -> Result<SnapshotInfo, BackendError> {
        Err(BackendError::Unsupported("raw volumes have no snapshots".into()))
    }

    fn delete_snapshot(_: String, _: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("raw volumes have no snapshots".into()))
    }
}

struct Volume {
    device: u32,
    info: VolumeInfo,
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
        host::flush(self.device)
    }
}

export!(Plugin);
