//! The exported interface as two traits with defaults, and their glue to the generated
//! bindings.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::bindings::exports::snapport::backend::backend::{
    Guest, GuestVolume, Volume as VolumeHandle,
};
use crate::{
    Access, BackendError, Extent, ExtentPage, PluginInfo, Result, SnapshotInfo, VolumeInfo,
    VolumeKind,
};

/// A storage backend: the plugin's side of `interface backend`.
///
/// `info`, `list_volumes` and `open_volume` are required; every other call has a default
/// that answers `unsupported` ("NAME does not ..."), which is what the host expects of a
/// call whose capability the plugin does not declare. `list_snapshots` defaults to no
/// snapshots. A plugin instance lives for one operation: keep no state between calls
/// beyond what a volume holds.
pub trait Backend: 'static {
    /// An open volume (or snapshot of one).
    type Volume: Volume;

    /// Who the plugin is and what it can do (capabilities). Must not touch any device:
    /// the host calls it to inspect a plugin, and the defaults call it for the name.
    fn info() -> PluginInfo;

    /// Volumes of the pool (disks and images).
    fn list_volumes() -> Result<Vec<VolumeInfo>>;

    /// Snapshots of one volume, or of every volume with none.
    fn list_snapshots(volume: Option<String>) -> Result<Vec<SnapshotInfo>> {
        let _ = volume;
        Ok(Vec::new())
    }

    /// Opens `volume`, or its snapshot `snapshot`, for reading (or writing).
    fn open_volume(
        volume: String,
        snapshot: Option<String>,
        access: Access,
    ) -> Result<Self::Volume>;

    /// Creates a volume of `size` bytes, listed only after the volume's `commit`
    /// (capability `volume-create`; with `parent`, `thin-clone`).
    fn create_volume(
        name: String,
        size: u64,
        kind: VolumeKind,
        parent: Option<String>,
    ) -> Result<Self::Volume> {
        let _ = (name, size, kind, parent);
        Err(unsupported_by(&Self::info().name, "create volumes"))
    }

    /// Removes a volume and what the backend keeps for it (capability `volume-delete`).
    fn delete_volume(name: String) -> Result<()> {
        let _ = name;
        Err(unsupported_by(&Self::info().name, "delete volumes"))
    }

    /// Takes a snapshot (capability `snapshot-create`).
    fn create_snapshot(volume: String, name: String, created_unix_ms: u64) -> Result<SnapshotInfo> {
        let _ = (volume, name, created_unix_ms);
        Err(unsupported_by(&Self::info().name, "create snapshots"))
    }

    /// Deletes a snapshot (capability `snapshot-delete`).
    fn delete_snapshot(volume: String, name: String) -> Result<()> {
        let _ = (volume, name);
        Err(unsupported_by(&Self::info().name, "delete snapshots"))
    }

    /// Makes a volume's content that of its snapshot (capability `snapshot-restore`).
    fn restore_snapshot(volume: String, name: String) -> Result<()> {
        let _ = (volume, name);
        Err(unsupported_by(&Self::info().name, "restore snapshots"))
    }
}

/// An open volume: the plugin's side of `resource volume`. Dropped when the host lets go
/// of it, so `Drop` is the place to release what it holds.
///
/// `info` and `map_extents` are required; the write path (`allocate`, `commit`),
/// `changed_extents` and `decode` default to `unsupported`.
pub trait Volume: 'static {
    /// The volume's name, size, kind and format.
    fn info(&self) -> VolumeInfo;

    /// Extents covering the volume from `start` on, at most `max_extents` of them, in
    /// order: [`ExtentPageBuilder`](crate::ExtentPageBuilder) merges and pages them.
    fn map_extents(&self, start: u64, max_extents: u32) -> Result<ExtentPage>;

    /// Extents that may differ from snapshot `base` (capability `changed-blocks`).
    fn changed_extents(&self, base: String, start: u64, max_extents: u32) -> Result<ExtentPage> {
        let _ = (base, start, max_extents);
        Err(unsupported_by(&plugin_name(), "report changed extents"))
    }

    /// Decodes what the host read for an `encoded` extent the plugin answered.
    fn decode(&self, codec: u32, stored: Vec<u8>, decoded_length: u32) -> Result<Vec<u8>> {
        let _ = (stored, decoded_length);
        Err(unsupported_by(
            &plugin_name(),
            &format!("decode codec {codec}"),
        ))
    }

    /// Write path: where the host writes `[offset, offset + length)` (capability `write`).
    fn allocate(&self, offset: u64, length: u64, zero: bool) -> Result<Vec<Extent>> {
        let _ = (offset, length, zero);
        Err(unsupported_by(&plugin_name(), "write volumes"))
    }

    /// Write path: the host wrote everything; make the volume whole (capability `write`).
    fn commit(&self) -> Result<()> {
        Err(unsupported_by(&plugin_name(), "write volumes"))
    }
}

fn unsupported_by(plugin: &str, what: &str) -> BackendError {
    BackendError::Unsupported(format!("{plugin} does not {what}"))
}

/// The plugin's name for the volumes' default answers, which cannot call
/// `Backend::info` (a volume does not know its backend type). Set, leaked once, by the
/// first call that hands out a volume; a plugin instance is single-threaded.
static PLUGIN_NAME: AtomicPtr<String> = AtomicPtr::new(core::ptr::null_mut());

fn remember_name<B: Backend>() {
    if PLUGIN_NAME.load(Ordering::Relaxed).is_null() {
        let name = Box::into_raw(Box::new(B::info().name));
        PLUGIN_NAME.store(name, Ordering::Relaxed);
    }
}

fn plugin_name() -> String {
    let name = PLUGIN_NAME.load(Ordering::Relaxed);
    // SAFETY: the pointer is null or comes from `Box::into_raw` in `remember_name`, and
    // that box is never freed nor replaced.
    match unsafe { name.as_ref() } {
        Some(n) => n.clone(),
        None => String::from("this plugin"),
    }
}

impl<B: Backend> Guest for B {
    type Volume = B::Volume;

    fn info() -> PluginInfo {
        <B as Backend>::info()
    }

    fn list_volumes() -> Result<Vec<VolumeInfo>> {
        <B as Backend>::list_volumes()
    }

    fn list_snapshots(volume: Option<String>) -> Result<Vec<SnapshotInfo>> {
        <B as Backend>::list_snapshots(volume)
    }

    fn open_volume(
        volume: String,
        snapshot: Option<String>,
        access: Access,
    ) -> Result<VolumeHandle> {
        remember_name::<B>();
        <B as Backend>::open_volume(volume, snapshot, access).map(VolumeHandle::new)
    }

    fn create_volume(
        name: String,
        size: u64,
        kind: VolumeKind,
        parent: Option<String>,
    ) -> Result<VolumeHandle> {
        remember_name::<B>();
        <B as Backend>::create_volume(name, size, kind, parent).map(VolumeHandle::new)
    }

    fn delete_volume(name: String) -> Result<()> {
        <B as Backend>::delete_volume(name)
    }

    fn create_snapshot(volume: String, name: String, created_unix_ms: u64) -> Result<SnapshotInfo> {
        <B as Backend>::create_snapshot(volume, name, created_unix_ms)
    }

    fn delete_snapshot(volume: String, name: String) -> Result<()> {
        <B as Backend>::delete_snapshot(volume, name)
    }

    fn restore_snapshot(volume: String, name: String) -> Result<()> {
        <B as Backend>::restore_snapshot(volume, name)
    }
}

impl<V: Volume> GuestVolume for V {
    fn info(&self) -> VolumeInfo {
        <V as Volume>::info(self)
    }

    fn map_extents(&self, start: u64, max_extents: u32) -> Result<ExtentPage> {
        <V as Volume>::map_extents(self, start, max_extents)
    }

    fn changed_extents(&self, base: String, start: u64, max_extents: u32) -> Result<ExtentPage> {
        <V as Volume>::changed_extents(self, base, start, max_extents)
    }

    fn decode(&self, codec: u32, stored: Vec<u8>, decoded_length: u32) -> Result<Vec<u8>> {
        <V as Volume>::decode(self, codec, stored, decoded_length)
    }

    fn allocate(&self, offset: u64, length: u64, zero: bool) -> Result<Vec<Extent>> {
        <V as Volume>::allocate(self, offset, length, zero)
    }

    fn commit(&self) -> Result<()> {
        <V as Volume>::commit(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capabilities, ExtentPageBuilder};

    struct Quiet;
    struct QuietVolume;

    impl Backend for Quiet {
        type Volume = QuietVolume;
        fn info() -> PluginInfo {
            PluginInfo {
                name: "quiet".into(),
                version: "1".into(),
                description: "declares reading only".into(),
                capabilities: Capabilities::READ,
            }
        }
        fn list_volumes() -> Result<Vec<VolumeInfo>> {
            Ok(Vec::new())
        }
        fn open_volume(_: String, _: Option<String>, _: Access) -> Result<QuietVolume> {
            Ok(QuietVolume)
        }
    }

    impl Volume for QuietVolume {
        fn info(&self) -> VolumeInfo {
            VolumeInfo {
                name: "v".into(),
                size: 0,
                kind: VolumeKind::Disk,
                format: "raw".into(),
                allocated: None,
                parent: None,
                labels: Vec::new(),
            }
        }
        fn map_extents(&self, start: u64, max_extents: u32) -> Result<ExtentPage> {
            Ok(ExtentPageBuilder::new(start, max_extents).finish(0))
        }
    }

    fn unsupported(text: &str) -> BackendError {
        BackendError::Unsupported(text.into())
    }

    /// Through the generated `Guest` trait, as the component's exports call them.
    #[test]
    fn undeclared_calls_answer_unsupported_naming_the_plugin() {
        assert_eq!(<Quiet as Guest>::list_snapshots(None), Ok(Vec::new()));
        let created = <Quiet as Guest>::create_volume("n".into(), 1, VolumeKind::Disk, None);
        assert_eq!(
            created.err(),
            Some(unsupported("quiet does not create volumes"))
        );
        assert_eq!(
            <Quiet as Guest>::delete_volume("n".into()),
            Err(unsupported("quiet does not delete volumes"))
        );
        assert_eq!(
            <Quiet as Guest>::create_snapshot("v".into(), "s".into(), 0).err(),
            Some(unsupported("quiet does not create snapshots"))
        );
        assert_eq!(
            <Quiet as Guest>::delete_snapshot("v".into(), "s".into()),
            Err(unsupported("quiet does not delete snapshots"))
        );
        assert_eq!(
            <Quiet as Guest>::restore_snapshot("v".into(), "s".into()),
            Err(unsupported("quiet does not restore snapshots"))
        );
    }

    #[test]
    fn a_volume_s_undeclared_calls_name_the_plugin_that_opened_it() {
        remember_name::<Quiet>();
        let v = QuietVolume;
        assert_eq!(
            GuestVolume::changed_extents(&v, "s".into(), 0, 8),
            Err(unsupported("quiet does not report changed extents"))
        );
        assert_eq!(
            GuestVolume::decode(&v, 3, Vec::new(), 0),
            Err(unsupported("quiet does not decode codec 3"))
        );
        assert_eq!(
            GuestVolume::allocate(&v, 0, 1, false),
            Err(unsupported("quiet does not write volumes"))
        );
        assert_eq!(
            GuestVolume::commit(&v),
            Err(unsupported("quiet does not write volumes"))
        );
        assert_eq!(
            GuestVolume::map_extents(&v, 0, 8).map(|p| p.extents.len()),
            Ok(0)
        );
    }
}
