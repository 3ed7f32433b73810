//! A test-only backend that breaks the contract on purpose, one way per value of the pool
//! setting `behaviour`, so that `snapport plugin test` is seen to catch each:
//!
//! - `honest`: raw files `NAME.img` in the first granted folder, read, written, created
//!   and deleted as the WIT says (the suite passes it);
//! - `wrong-bytes`: the map points 4 KiB off, at bytes of the same file that are not the
//!   volume's there;
//! - `lying-extents`: declares `extents` and calls the first 64 KiB of every volume
//!   `zero`, data or not;
//! - `panic`: panics in `list-volumes`, with a message (the SDK's panic handler hands it
//!   to the host);
//! - `bad-unsupported`: answers calls of capabilities it does not declare with success
//!   (`delete-snapshot`) or the wrong error (`restore-snapshot`);
//! - `no-text`: every error it answers has an empty text;
//! - `refuse`: declares volume-create and volume-delete but refuses to create any
//!   volume (`permission-denied`), so a suite that skipped refusals would pass it;
//! - `slow`: as `honest`, but `list-volumes` spins for a few seconds first (a test
//!   interrupts the suite meanwhile).
#![no_std]

use snapport_plugin_sdk::host;
use snapport_plugin_sdk::prelude::*;

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
    Refuse,
    Slow,
}

fn behaviour() -> Result<Behaviour> {
    let b = host::setting("behaviour").unwrap_or_default();
    Ok(match b.as_str() {
        "honest" => Behaviour::Honest,
        "wrong-bytes" => Behaviour::WrongBytes,
        "lying-extents" => Behaviour::LyingExtents,
        "panic" => Behaviour::Panic,
        "bad-unsupported" => Behaviour::BadUnsupported,
        "no-text" => Behaviour::NoText,
        "refuse" => Behaviour::Refuse,
        "slow" => Behaviour::Slow,
        _ => {
            return Err(invalid_argument!(
                "setting behaviour = {b:?}: give honest, wrong-bytes, lying-extents, panic, bad-unsupported, no-text, refuse or slow"
            ))
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

/// What a call of a capability not declared answers (the SDK's defaults say the same,
/// with text; `no-text` needs its own).
fn refuse(what: &str) -> BackendError {
    said(unsupported!("the broken test plugin does not {what}"))
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

fn volumes() -> Result<Vec<VolumeInfo>> {
    behaviour()?;
    let files = host::list_files().map_err(said)?;
    Ok(files.iter().filter_map(|f| f.name.strip_suffix(SUFFIX).map(|n| info_of(n, f.size))).collect())
}

fn find(name: &str) -> Result<VolumeInfo> {
    volumes()?.into_iter().find(|v| v.name == name).ok_or_else(|| said(not_found!("no volume {name}")))
}

struct Plugin;

impl Backend for Plugin {
    type Volume = Broken;

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

    fn list_volumes() -> Result<Vec<VolumeInfo>> {
        match behaviour()? {
            Behaviour::Panic => panic!("the broken test plugin panics in list-volumes on purpose"),
            Behaviour::Slow => {
                let mut x = 1u64;
                for i in 0..3_000_000_000u64 {
                    x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
                }
                core::hint::black_box(x);
            }
            _ => {}
        }
        volumes()
    }

    fn open_volume(volume: String, snapshot: Option<String>, access: Access) -> Result<Broken> {
        let v = find(&volume)?;
        if snapshot.is_some() {
            return Err(said(not_found!("{volume} has no snapshots")));
        }
        let device = Device::open(&format!("{volume}{SUFFIX}"), access).map_err(said)?;
        Ok(Broken { device, info: v, created: false })
    }

    fn create_volume(name: String, size: u64, _: VolumeKind, parent: Option<String>) -> Result<Broken> {
        if parent.is_some() {
            return Err(refuse("make thin clones"));
        }
        if is(Behaviour::Refuse) {
            return Err(permission_denied!("the broken test plugin refuses to create {name}"));
        }
        if find(&name).is_ok() {
            return Err(said(conflict!("volume {name} exists already")));
        }
        let file = format!("{name}{SUFFIX}");
        let mut device = Device::from_id(host::create_file(&file).map_err(said)?, &file).map_err(said)?;
        device.set_size(size).map_err(said)?;
        Ok(Broken { device, info: info_of(&name, size), created: true })
    }

    fn delete_volume(name: String) -> Result<()> {
        find(&name)?;
        host::remove_file(&format!("{name}{SUFFIX}")).map_err(said)
    }

    fn create_snapshot(_: String, _: String, _: u64) -> Result<SnapshotInfo> {
        Err(refuse("take snapshots"))
    }

    fn delete_snapshot(_: String, _: String) -> Result<()> {
        if is(Behaviour::BadUnsupported) {
            return Ok(());
        }
        Err(refuse("delete snapshots"))
    }

    fn restore_snapshot(volume: String, name: String) -> Result<()> {
        if is(Behaviour::BadUnsupported) {
            return Err(not_found!("no snapshot {name} of {volume}"));
        }
        Err(refuse("restore snapshots"))
    }
}

struct Broken {
    device: Device,
    info: VolumeInfo,
    created: bool,
}

impl Volume for Broken {
    fn info(&self) -> VolumeInfo {
        self.info.clone()
    }

    /// One data extent, or the misdeed's version of it.
    fn map_extents(&self, start: u64, max_extents: u32) -> Result<ExtentPage> {
        let (size, id) = (self.info.size, self.device.id());
        let map = match behaviour() {
            Ok(Behaviour::WrongBytes) if size > SKEW => {
                vec![(0, size - SKEW, data(id, SKEW)), (size - SKEW, SKEW, data(id, 0))]
            }
            Ok(Behaviour::LyingExtents) if size > 65536 => {
                vec![(0, 65536, Location::Zero), (65536, size - 65536, data(id, 65536))]
            }
            _ => vec![(0, size, data(id, 0))],
        };
        let mut page = ExtentPageBuilder::new(start, max_extents);
        for (offset, length, location) in map {
            let end = offset + length;
            if end <= start || length == 0 {
                continue;
            }
            let cut = start.saturating_sub(offset);
            let location = match location {
                Location::Data(d) => data(d.device, d.offset + cut),
                other => other,
            };
            if !page.push(offset + cut, length - cut, location) {
                break;
            }
        }
        Ok(page.finish(size))
    }

    fn changed_extents(&self, _: String, _: u64, _: u32) -> Result<ExtentPage> {
        Err(refuse("keep snapshots"))
    }

    fn decode(&self, codec: u32, _: Vec<u8>, _: u32) -> Result<Vec<u8>> {
        Err(refuse(&format!("know codec {codec}")))
    }

    fn allocate(&self, offset: u64, length: u64, _: bool) -> Result<Vec<Extent>> {
        match offset.checked_add(length) {
            Some(end) if end <= self.info.size => {
                Ok(vec![Extent { offset, length, location: data(self.device.id(), offset) }])
            }
            _ => Err(said(out_of_range!("{length} bytes at {offset} do not fit in {} bytes", self.info.size))),
        }
    }

    fn commit(&self) -> Result<()> {
        self.device.flush().map_err(said)?;
        if self.created {
            self.device.publish().map_err(said)?;
        }
        Ok(())
    }
}

snapport_plugin_sdk::export_plugin!(Plugin);
