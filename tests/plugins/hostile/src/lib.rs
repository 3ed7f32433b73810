//! A test-only plugin that misbehaves on purpose, to prove the host survives it. The pool
//! setting `behaviour` picks the misdeed; `good` makes it an honest raw-like backend over
//! the granted device `disk`, so tests can show a recovered host working again. Volumes
//! it creates (the write path) are files in the granted folder, and the `write-*` and
//! `commit-*` behaviours lie or fail there; `grpc-csi` and `grpc-other` call the pool's gRPC
//! endpoint, a CSI method and a method outside CSI.
#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

wit_bindgen::generate!({ world: "backend-plugin", path: "../../../wit" });

use exports::snapport::backend::backend::{Guest, GuestVolume, PluginInfo, Volume as VolumeHandle};
use snapport::backend::{grpc, host};
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

fn behaviour() -> String {
    host::setting("behaviour").unwrap_or_else(|| "good".into())
}

fn info_of(size: u64) -> VolumeInfo {
    VolumeInfo {
        name: "disk".into(),
        size,
        kind: VolumeKind::Disk,
        format: "raw".into(),
        allocated: None,
        parent: None,
        labels: Vec::new(),
    }
}

fn spin() -> ! {
    let mut x: u64 = 0;
    loop {
        x = core::hint::black_box(x.wrapping_add(1));
    }
}

fn hoard() -> ! {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        chunk[0] = kept.len() as u8;
        kept.push(core::hint::black_box(chunk));
    }
}

struct Plugin;

impl Guest for Plugin {
    type Volume = Volume;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "test-hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "misbehaves on purpose (tests only)".into(),
            capabilities: Capabilities::READ | Capabilities::EXTENTS,
        }
    }

    fn list_volumes() -> Result<Vec<VolumeInfo>, BackendError> {
        match behaviour().as_str() {
            "loop-list" => spin(),
            "alloc-list" => hoard(),
            // The pool's gRPC endpoint: a CSI call, then a call outside CSI.
            "grpc-csi" => {
                let reply = grpc::unary("/csi.v1.Identity/GetPluginInfo", b"lov")?;
                let mut info = info_of(0);
                info.name = String::from_utf8(reply).map_err(|_| BackendError::Corrupt("not UTF-8".into()))?;
                return Ok(vec![info]);
            }
            "grpc-other" => {
                grpc::unary("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", b"")?;
            }
            _ => {}
        }
        let dev = host::open("disk", None, Access::ReadOnly)?;
        Ok(vec![info_of(host::device_size(dev)?)])
    }

    fn list_snapshots(_: Option<String>) -> Result<Vec<SnapshotInfo>, BackendError> {
        Ok(Vec::new())
    }

    fn open_volume(_: String, _: Option<String>, _: Access) -> Result<VolumeHandle, BackendError> {
        let device = host::open("disk", None, Access::ReadOnly)?;
        let size = host::device_size(device)?;
        Ok(VolumeHandle::new(Volume { device, size, created: None }))
    }

    fn create_volume(name: String, size: u64, _: VolumeKind, _: Option<String>) -> Result<VolumeHandle, BackendError> {
        let created = host::create_file(&name)?;
        host::set_size(created, size)?;
        let device = host::open("disk", None, Access::ReadOnly)?;
        Ok(VolumeHandle::new(Volume { device, size, created: Some(created) }))
    }

    fn delete_volume(_: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("test plugin".into()))
    }

    fn create_snapshot(_: String, _: String, _: u64) -> Result<SnapshotInfo, BackendError> {
        Err(BackendError::Unsupported("test plugin".into()))
    }

    fn delete_snapshot(_: String, _: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("test plugin".into()))
    }

    fn restore_snapshot(_: String, _: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("test plugin".into()))
    }
}

struct Volume {
    /// The granted device `disk`, read-only.
    device: u32,
    size: u64,
    /// The file `create-volume` made.
    created: Option<u32>,
}

impl Volume {
    fn data(&self, offset: u64, length: u64, at: u64) -> Extent {
        Extent { offset, length, location: Location::Data(DeviceOffset { device: self.device, offset: at }) }
    }
}

impl GuestVolume for Volume {
    fn info(&self) -> VolumeInfo {
        info_of(self.size)
    }

    fn map_extents(&self, start: u64, _: u32) -> Result<ExtentPage, BackendError> {
        let size = self.size;
        let half = size / 2;
        let page = |extents, next_offset| Ok(ExtentPage { extents, next_offset });
        match behaviour().as_str() {
            "loop" => spin(),
            "alloc" => hoard(),
            // A good first page, then a trap in the middle of the export.
            "trap" if start >= half => core::arch::wasm32::unreachable(),
            "trap" => page(vec![self.data(0, half, 0)], Some(half)),
            "overlap" => page(vec![self.data(0, half + 4096, 0), self.data(half, size - half, half)], None),
            "backwards" if start >= half => page(vec![self.data(0, size, 0)], None),
            "backwards" => page(vec![self.data(0, half, 0)], Some(half)),
            "out-of-bounds" => page(vec![self.data(0, size, size)], None),
            "past-end" => page(vec![self.data(0, size + (1 << 20), 0)], None),
            "ungranted" => page(
                vec![Extent { offset: 0, length: size, location: Location::Data(DeviceOffset { device: 4242, offset: 0 }) }],
                None,
            ),
            "short" => page(vec![self.data(0, half, 0)], None),
            _ if start >= size => page(Vec::new(), None),
            _ => page(vec![self.data(start, size - start, start)], None),
        }
    }

    fn changed_extents(&self, _: String, _: u64, _: u32) -> Result<ExtentPage, BackendError> {
        Err(BackendError::Unsupported("test plugin".into()))
    }

    fn decode(&self, _: u32, _: Vec<u8>, _: u32) -> Result<Vec<u8>, BackendError> {
        Err(BackendError::Unsupported("test plugin".into()))
    }

    fn allocate(&self, offset: u64, length: u64, _: bool) -> Result<Vec<Extent>, BackendError> {
        let Some(created) = self.created else {
            return Err(BackendError::Unsupported("test plugin".into()));
        };
        let at = |device, offset, length| Extent { offset, length, location: Location::Data(DeviceOffset { device, offset }) };
        match behaviour().as_str() {
            "write-loop" => spin(),
            "write-alloc" => hoard(),
            "write-trap" => core::arch::wasm32::unreachable(),
            // Bytes sent to the read-only device, to one never opened, half a range, more
            // than the range.
            "write-ro" => Ok(vec![at(self.device, offset, length)]),
            "write-ungranted" => Ok(vec![at(4242, offset, length)]),
            "write-short" => Ok(vec![at(created, offset, length / 2)]),
            "write-wide" => Ok(vec![at(created, offset, length + 4096)]),
            _ => Ok(vec![at(created, offset, length)]),
        }
    }

    fn commit(&self) -> Result<(), BackendError> {
        let Some(created) = self.created else {
            return Err(BackendError::Unsupported("test plugin".into()));
        };
        match behaviour().as_str() {
            "commit-trap" => core::arch::wasm32::unreachable(),
            "commit-fail" => Err(BackendError::Io("the metadata write failed".into())),
            _ => host::publish_file(created),
        }
    }
}

export!(Plugin);
