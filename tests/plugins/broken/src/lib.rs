//! A test-only backend that breaks the contract on purpose, one way per value of the pool
//! setting `behaviour`, so that `snapport plugin test` is seen to catch each:
//!
//! - `honest`: raw files `NAME.img` in the first granted folder, read, written, created
//!   and deleted as the WIT says (the suite passes it);
//! - `wrong-bytes`: the map points 4 KiB off, at bytes of the same file that are not the
//!   volume's there;
//! - `lying-extents`: declares `extents` and calls the first 64 KiB of every volume
//!   `zero`, data or not;
//! - `panic`: panics in `list-volumes`, with a message;
//! - `bad-unsupported`: answers calls of capabilities it does not declare with success
//!   (`delete-snapshot`) or the wrong error (`restore-snapshot`);
//! - `no-text`: every error it answers has an empty text.
#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

wit_bindgen::generate!({ world: "backend-plugin", path: "../../../wit" });

use exports::snapport::backend::backend::{Guest, GuestVolume, PluginInfo, Volume as VolumeHandle};
use snapport::backend::host;
use snapport::backend::types::{
    Access, BackendError, Capabilities, DeviceOffset, Extent, ExtentPage, Location, SnapshotInfo, VolumeInfo,
    VolumeKind,
};

#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// Sends the panic's message to the host (`host.panicked`), then traps.
#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    use core::fmt::Write;
    struct Buf {
        bytes: [u8; 1024],
        len: usize,
    }
    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            // Whole characters only, so the text stays UTF-8.
            for c in s.chars() {
                let mut tmp = [0u8; 4];
                let c = c.encode_utf8(&mut tmp).as_bytes();
                if self.len + c.len() > self.bytes.len() {
                    return Ok(());
                }
                self.bytes[self.len..self.len + c.len()].copy_from_slice(c);
                self.len += c.len();
            }
            Ok(())
        }
    }
    let mut buf = Buf { bytes: [0; 1024], len: 0 };
    let _ = write!(buf, "{}", info.message());
    if let Some(at) = info.location() {
        let _ = write!(buf, " at {}:{}", at.file(), at.line());
    }
    host::panicked(core::str::from_utf8(&buf.bytes[..buf.len]).unwrap_or("panic"));
    core::arch::wasm32::unreachable()
}

const SUFFIX: &str = ".img";
/// How far `wrong-bytes` points off.
const SKEW: u64 = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Honest,
    WrongBytes,
    LyingExtents,
    Panic,
    BadUnsupported,
    NoText,
}

fn behaviour() -> Result<Behaviour, BackendError> {
    let b = host::setting("behaviour").unwrap_or_default();
    Ok(match b.as_str() {
        "honest" => Behaviour::Honest,
        "wrong-bytes" => Behaviour::WrongBytes,
        "lying-extents" => Behaviour::LyingExtents,
        "panic" => Behaviour::Panic,
        "bad-unsupported" => Behaviour::BadUnsupported,
        "no-text" => Behaviour::NoText,
        _ => {
            return Err(BackendError::InvalidArgument(format!(
                "setting behaviour = {b:?}: give honest, wrong-bytes, lying-extents, panic, bad-unsupported or no-text"
            )))
        }
    })
}

fn is(b: Behaviour) -> bool {
    behaviour().is_ok_and(|x| x == b)
}

/// `e`, with its text taken away under `no-text`.
fn said(e: BackendError) -> BackendError {
    if !is(Behaviour::NoText) {
        return e;
    }
    let none = String::new();
    match e {
        BackendError::NotFound(_) => BackendError::NotFound(none),
        BackendError::InvalidArgument(_) => BackendError::InvalidArgument(none),
        BackendError::Unsupported(_) => BackendError::Unsupported(none),
        BackendError::PermissionDenied(_) => BackendError::PermissionDenied(none),
        BackendError::OutOfRange(_) => BackendError::OutOfRange(none),
        BackendError::Corrupt(_) => BackendError::Corrupt(none),
        BackendError::Busy(_) => BackendError::Busy(none),
        BackendError::Conflict(_) => BackendError::Conflict(none),
        BackendError::Io(_) => BackendError::Io(none),
    }
}

fn unsupported(what: &str) -> BackendError {
    said(BackendError::Unsupported(format!("the broken test plugin does not {what}")))
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

fn volumes() -> Result<Vec<VolumeInfo>, BackendError> {
    behaviour()?;
    let files = host::list_files().map_err(said)?;
    Ok(files.iter().filter_map(|f| f.name.strip_suffix(SUFFIX).map(|n| info_of(n, f.size))).collect())
}

fn find(name: &str) -> Result<VolumeInfo, BackendError> {
    volumes()?
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| said(BackendError::NotFound(format!("no volume {name}"))))
}

struct Plugin;

impl Guest for Plugin {
    type Volume = Volume;

    fn info() -> PluginInfo {
        let mut capabilities =
            Capabilities::READ | Capabilities::WRITE | Capabilities::VOLUME_CREATE | Capabilities::VOLUME_DELETE;
        if is(Behaviour::LyingExtents) {
            capabilities = capabilities | Capabilities::EXTENTS;
        }
        PluginInfo {
            name: "broken".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "a test plugin that breaks the contract as its setting behaviour says".into(),
            capabilities,
        }
    }

    fn list_volumes() -> Result<Vec<VolumeInfo>, BackendError> {
        if is(Behaviour::Panic) {
            panic!("the broken test plugin panics in list-volumes on purpose");
        }
        volumes()
    }

    fn list_snapshots(_: Option<String>) -> Result<Vec<SnapshotInfo>, BackendError> {
        Ok(Vec::new())
    }

    fn open_volume(volume: String, snapshot: Option<String>, access: Access) -> Result<VolumeHandle, BackendError> {
        let v = find(&volume)?;
        if snapshot.is_some() {
            return Err(said(BackendError::NotFound(format!("{volume} has no snapshots"))));
        }
        let device = host::open(&format!("{volume}{SUFFIX}"), None, access).map_err(said)?;
        Ok(VolumeHandle::new(Volume { device, info: v, created: false }))
    }

    fn create_volume(
        name: String,
        size: u64,
        _: VolumeKind,
        parent: Option<String>,
    ) -> Result<VolumeHandle, BackendError> {
        if parent.is_some() {
            return Err(unsupported("make thin clones"));
        }
        if find(&name).is_ok() {
            return Err(said(BackendError::Conflict(format!("volume {name} exists already"))));
        }
        let device = host::create_file(&format!("{name}{SUFFIX}")).map_err(said)?;
        host::set_size(device, size).map_err(said)?;
        Ok(VolumeHandle::new(Volume { device, info: info_of(&name, size), created: true }))
    }

    fn delete_volume(name: String) -> Result<(), BackendError> {
        find(&name)?;
        host::remove_file(&format!("{name}{SUFFIX}")).map_err(said)
    }

    fn create_snapshot(_: String, _: String, _: u64) -> Result<SnapshotInfo, BackendError> {
        Err(unsupported("take snapshots"))
    }

    fn delete_snapshot(_: String, _: String) -> Result<(), BackendError> {
        if is(Behaviour::BadUnsupported) {
            return Ok(());
        }
        Err(unsupported("delete snapshots"))
    }

    fn restore_snapshot(volume: String, name: String) -> Result<(), BackendError> {
        if is(Behaviour::BadUnsupported) {
            return Err(BackendError::NotFound(format!("no snapshot {name} of {volume}")));
        }
        Err(unsupported("restore snapshots"))
    }
}

struct Volume {
    device: u32,
    info: VolumeInfo,
    created: bool,
}

impl Volume {
    fn data(&self, offset: u64, length: u64, at: u64) -> Extent {
        Extent { offset, length, location: Location::Data(DeviceOffset { device: self.device, offset: at }) }
    }

    /// The whole map: one data extent, or the misdeed's version of it.
    fn map(&self) -> Vec<Extent> {
        let size = self.info.size;
        if size == 0 {
            return Vec::new();
        }
        match behaviour() {
            Ok(Behaviour::WrongBytes) if size > SKEW => {
                vec![self.data(0, size - SKEW, SKEW), self.data(size - SKEW, SKEW, 0)]
            }
            Ok(Behaviour::LyingExtents) if size > 65536 => {
                vec![
                    Extent { offset: 0, length: 65536, location: Location::Zero },
                    self.data(65536, size - 65536, 65536),
                ]
            }
            _ => vec![self.data(0, size, 0)],
        }
    }
}

impl GuestVolume for Volume {
    fn info(&self) -> VolumeInfo {
        self.info.clone()
    }

    fn map_extents(&self, start: u64, _: u32) -> Result<ExtentPage, BackendError> {
        let mut extents = Vec::new();
        for e in self.map() {
            let end = e.offset + e.length;
            if end <= start {
                continue;
            }
            if e.offset >= start {
                extents.push(e);
                continue;
            }
            let cut = start - e.offset;
            let location = match e.location {
                Location::Data(d) => Location::Data(DeviceOffset { device: d.device, offset: d.offset + cut }),
                other => other,
            };
            extents.push(Extent { offset: start, length: e.length - cut, location });
        }
        Ok(ExtentPage { extents, next_offset: None })
    }

    fn changed_extents(&self, _: String, _: u64, _: u32) -> Result<ExtentPage, BackendError> {
        Err(unsupported("keep snapshots"))
    }

    fn decode(&self, codec: u32, _: Vec<u8>, _: u32) -> Result<Vec<u8>, BackendError> {
        Err(unsupported(&format!("know codec {codec}")))
    }

    fn allocate(&self, offset: u64, length: u64, _: bool) -> Result<Vec<Extent>, BackendError> {
        match offset.checked_add(length) {
            Some(end) if end <= self.info.size => Ok(vec![self.data(offset, length, offset)]),
            _ => Err(said(BackendError::OutOfRange(format!(
                "{length} bytes at {offset} do not fit in {} bytes",
                self.info.size
            )))),
        }
    }

    fn commit(&self) -> Result<(), BackendError> {
        host::flush(self.device).map_err(said)?;
        if self.created {
            host::publish_file(self.device).map_err(said)?;
        }
        Ok(())
    }
}

export!(Plugin);
