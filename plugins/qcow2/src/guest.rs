//! The component glue: host-backed media and the exported backend, on the plugin SDK.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use snapport_plugin_sdk::{
    export_plugin, host, Access, Backend, BackendError, Capabilities, DeviceOffset, EncodedRef, Extent, ExtentPage,
    FileEntry, Label, Location as WitLocation, PluginInfo, SnapshotInfo, SnapshotPhase, Volume, VolumeInfo, VolumeKind,
};
use snapport_qcow2::chain::{self, Layer, Location, MAX_DEPTH};
use snapport_qcow2::format::{self, Image, Medium, Snapshot};
use snapport_qcow2::snapshot::{self, MediumMut};
use snapport_qcow2::writer::NewImage;

/// L2 tables one `changed-extents` page looks at, at most.
const CHANGED_WINDOWS: usize = 256;

/// An extent of the chain as the WIT names it: devices instead of layers.
fn wit_extent(layers: &[(Device, Layer)], e: chain::Extent) -> Extent {
    let device = |layer: usize| layers[layer].0.id;
    Extent {
        offset: e.start,
        length: e.length,
        location: match e.location {
            Location::Data { layer, offset } => WitLocation::Data(DeviceOffset { device: device(layer), offset }),
            Location::Zero => WitLocation::Zero,
            Location::Unallocated => WitLocation::Unallocated,
            Location::Compressed { layer, offset, stored, decoded, skip, codec } => WitLocation::Encoded(EncodedRef {
                device: device(layer),
                offset,
                stored_length: stored,
                decoded_length: decoded,
                skip,
                codec,
            }),
        },
    }
}

/// The host caps `read-at` at 1 MiB.
const READ_CHUNK: u64 = 1 << 20;
const IMAGE_SUFFIXES: &[&str] = &[".qcow2", ".raw", ".img"];
/// `NAME.image.qcow2` is the read-only image `vi/NAME`; other image files are disks.
const IMAGE_MARK: &str = ".image";

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
            let got = host::read_at(self.id, at, want).map_err(|e| format::Error::Io(e.message().to_owned()))?;
            if got.is_empty() {
                return Err(format::Error::Io(format!("unexpected end of device at {at}")));
            }
            buf[done..done + got.len()].copy_from_slice(&got);
            done += got.len();
        }
        Ok(())
    }
}

/// A disk file opened read-write for in-place metadata changes (snapshots).
struct WritableDevice {
    id: u32,
    size: Cell<u64>,
}

impl WritableDevice {
    fn open(name: &str) -> Result<WritableDevice, BackendError> {
        let id = host::open(name, None, Access::ReadWrite)?;
        let size = Cell::new(host::device_size(id)?);
        Ok(WritableDevice { id, size })
    }
}

impl Medium for WritableDevice {
    fn size(&self) -> u64 {
        self.size.get()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> format::Result<()> {
        Device { id: self.id, size: self.size.get() }.read_exact_at(offset, buf)
    }
}

impl MediumMut for WritableDevice {
    fn write_all_at(&self, offset: u64, bytes: &[u8]) -> format::Result<()> {
        let end = offset + bytes.len() as u64;
        // The host reads no further than the size it knows: grow it first.
        if end > self.size.get() {
            host::set_size(self.id, end).map_err(|e| format::Error::Io(e.message().to_owned()))?;
            self.size.set(end);
        }
        host::write_at(self.id, offset, bytes).map_err(|e| format::Error::Io(e.message().to_owned()))
    }
}

/// The qcow2 file of disk `volume`, open for a snapshot change, and its parsed header.
fn snapshot_target(volume: &str) -> Result<(String, WritableDevice, Image), BackendError> {
    let pool_file = find(volume)?;
    if pool_file.kind == VolumeKind::Image {
        return Err(BackendError::PermissionDenied(format!(
            "vi/{volume} is a read-only image; snapshots are of disks"
        )));
    }
    let file = pool_file.file.name;
    let dev = WritableDevice::open(&file)?;
    let mut magic = [0u8; 4];
    if dev.size() < 4 || dev.read_exact_at(0, &mut magic).is_err() || !format::is_qcow2(&magic) {
        return Err(BackendError::Unsupported(format!("{file} is a raw file: only qcow2 disks have snapshots")));
    }
    let image = Image::open(&dev).map_err(|e| format_error(&file, e))?;
    Ok((file, dev, image))
}

/// `name` must name a snapshot of `image` (by name, else by id).
fn existing(image: &Image, volume: &str, name: &str) -> Result<(), BackendError> {
    if image.snapshots.iter().any(|s| s.name == name || s.id == name) {
        Ok(())
    } else {
        Err(BackendError::NotFound(format!("disk {volume} has no snapshot {name}")))
    }
}

fn snapshot_info(volume: &str, s: &Snapshot) -> SnapshotInfo {
    SnapshotInfo {
        name: s.name.clone(),
        volume: volume.to_owned(),
        id: s.id.clone(),
        size: s.disk_size,
        created_unix_ms: Some(u64::from(s.date_sec) * 1000 + u64::from(s.date_nsec) / 1_000_000),
        parent: None,
        phase: SnapshotPhase::Ready,
        consistent: false,
        labels: Vec::new(),
    }
}

fn format_error(file: &str, e: format::Error) -> BackendError {
    match e {
        format::Error::Corrupt(m) => BackendError::Corrupt(format!("{file}: {m}")),
        format::Error::Unsupported(m) => BackendError::Unsupported(format!("{file}: not supported: {m}")),
        format::Error::Io(m) => BackendError::Io(format!("{file}: {m}")),
        format::Error::Invalid(m) => BackendError::InvalidArgument(format!("{file}: {m}")),
    }
}

/// A volume of the pool: its name, kind and file (or granted device).
struct PoolFile {
    name: String,
    kind: VolumeKind,
    file: FileEntry,
}

/// The volumes of the pool: image files in the granted folders, and granted devices
/// (by their grant name: how the host hands a single file to this plugin).
fn image_files() -> Result<Vec<PoolFile>, BackendError> {
    let mut out = Vec::new();
    for entry in host::granted_devices() {
        out.push(PoolFile { name: entry.name.clone(), kind: VolumeKind::Disk, file: entry });
    }
    let files = match host::list_files() {
        Ok(f) => f,
        // A pool of devices only has no folder to list.
        Err(BackendError::PermissionDenied(_)) if !out.is_empty() => Vec::new(),
        Err(e) => return Err(e),
    };
    for entry in files {
        if let Some(stem) = IMAGE_SUFFIXES.iter().find_map(|s| entry.name.strip_suffix(s)) {
            let (name, kind) = match stem.strip_suffix(IMAGE_MARK) {
                Some(n) => (n, VolumeKind::Image),
                None => (stem, VolumeKind::Disk),
            };
            if !name.is_empty() {
                out.push(PoolFile { name: name.to_owned(), kind, file: entry });
            }
        }
    }
    Ok(out)
}

fn find(volume: &str) -> Result<PoolFile, BackendError> {
    let mut hits = image_files()?.into_iter().filter(|f| f.name == volume);
    match (hits.next(), hits.next()) {
        (Some(f), None) => Ok(f),
        (Some(a), Some(b)) => Err(BackendError::Conflict(format!(
            "two files could be volume {volume}: {} and {}; rename one",
            a.file.name, b.file.name
        ))),
        (None, _) => Err(BackendError::NotFound(format!(
            "no volume {volume} (no {volume}.qcow2, .raw, .img or {volume}.image.qcow2)"
        ))),
    }
}

fn file_of(volume: &str) -> Result<String, BackendError> {
    find(volume).map(|f| f.file.name)
}

/// The volume a backing file name refers to, when it is a file of this pool.
fn volume_of_file(backing: &str) -> String {
    image_files()
        .ok()
        .and_then(|files| files.into_iter().find(|f| f.file.name == backing))
        .map_or_else(|| backing.to_owned(), |f| f.name)
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
            Layer::Qcow2 { image: Box::new(image), view }
        } else if snapshot.is_some() && layers.is_empty() {
            return Err(BackendError::NotFound(format!("{name} is a raw file: it has no snapshots")));
        } else {
            Layer::Raw { size: dev.size }
        };
        layers.push((dev, layer));
    }
    Ok(layers)
}

fn volume_info(f: &PoolFile) -> VolumeInfo {
    let file = &f.file;
    let mut info = VolumeInfo {
        name: f.name.clone(),
        size: file.size,
        kind: f.kind,
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
                info.parent = image.backing_file.as_deref().map(volume_of_file);
            }
        }
        Err(e) => {
            info.format = "unreadable".into();
            info.labels.push(Label { key: "error".into(), value: e.message().to_owned() });
        }
    }
    info
}

struct Plugin;

impl Backend for Plugin {
    type Volume = Qcow2Volume;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "qcow2".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "a folder of qcow2 and raw image files".into(),
            capabilities: Capabilities::READ
                | Capabilities::EXTENTS
                | Capabilities::WRITE
                | Capabilities::ZERO
                | Capabilities::VOLUME_CREATE
                | Capabilities::VOLUME_DELETE
                | Capabilities::THIN_CLONE
                | Capabilities::SNAPSHOT_CREATE
                | Capabilities::SNAPSHOT_DELETE
                | Capabilities::SNAPSHOT_RESTORE
                | Capabilities::CHANGED_BLOCKS,
        }
    }

    fn list_volumes() -> Result<Vec<VolumeInfo>, BackendError> {
        Ok(image_files()?.iter().map(volume_info).collect())
    }

    fn list_snapshots(volume: Option<String>) -> Result<Vec<SnapshotInfo>, BackendError> {
        let mut out = Vec::new();
        for PoolFile { name: stem, file: f, .. } in image_files()? {
            if volume.as_ref().is_some_and(|v| *v != stem) {
                continue;
            }
            let dev = Device::open(&f.name, None)?;
            if !format::is_qcow2(&first_bytes(&dev)?) {
                continue;
            }
            let image = Image::open(&dev).map_err(|e| format_error(&f.name, e))?;
            out.extend(image.snapshots.iter().map(|s| snapshot_info(&stem, s)));
        }
        if let Some(v) = volume {
            if out.is_empty() {
                file_of(&v)?;
            }
        }
        Ok(out)
    }

    fn open_volume(volume: String, snapshot: Option<String>, access: Access) -> Result<Qcow2Volume, BackendError> {
        let pool_file = find(&volume)?;
        if access == Access::ReadWrite {
            return Err(match pool_file.kind {
                VolumeKind::Image => BackendError::PermissionDenied(format!("vi/{volume} is a read-only image")),
                VolumeKind::Disk => BackendError::Unsupported(
                    "writing into an existing qcow2 volume is not supported; create a new volume".into(),
                ),
            });
        }
        let file = pool_file.file.name;
        let layers = open_chain(&file, snapshot.as_deref())?;
        let top = &layers[0].1;
        let info = VolumeInfo {
            name: match &snapshot {
                Some(s) => format!("{volume}@{s}"),
                None => volume.clone(),
            },
            size: top.size(),
            kind: pool_file.kind,
            format: match top {
                Layer::Qcow2 { .. } => "qcow2".into(),
                Layer::Raw { .. } => "raw".into(),
            },
            allocated: None,
            parent: match top {
                Layer::Qcow2 { image, .. } => image.backing_file.as_deref().map(volume_of_file),
                Layer::Raw { .. } => None,
            },
            labels: Vec::new(),
        };
        Ok(Qcow2Volume::Reader { layers, info })
    }

    fn create_volume(
        name: String,
        size: u64,
        kind: VolumeKind,
        parent: Option<String>,
    ) -> Result<Qcow2Volume, BackendError> {
        if name.is_empty() || name.starts_with('.') || name.contains('/') || name.ends_with(IMAGE_MARK) {
            return Err(BackendError::InvalidArgument(format!(
                "{name:?} cannot name a volume (no '/', no leading '.', no {IMAGE_MARK:?} ending)"
            )));
        }
        if find(&name).is_ok() {
            return Err(BackendError::Conflict(format!("volume {name} exists already")));
        }
        let backing = match &parent {
            None => None,
            Some(p) => {
                let base = find(p)?;
                if base.kind != VolumeKind::Image {
                    return Err(BackendError::InvalidArgument(format!(
                        "{p} is a disk; thin clones are made from images (vi/), which never change under them"
                    )));
                }
                let layers = open_chain(&base.file.name, None)?;
                let (format, base_size) = match &layers[0].1 {
                    Layer::Qcow2 { view, .. } => ("qcow2", view.size),
                    Layer::Raw { size } => ("raw", *size),
                };
                if size < base_size {
                    return Err(BackendError::InvalidArgument(format!(
                        "a clone of {p} needs at least its {base_size} bytes"
                    )));
                }
                Some((base.file.name, format.to_owned()))
            }
        };
        // QEMU reads a qcow2 size in whole 512-byte sectors, rounding down: round up so
        // the last bytes are not lost to it.
        let size = size.next_multiple_of(512);
        let image = NewImage::new(size, backing).map_err(|e| format_error(&name, e))?;
        let file = match kind {
            VolumeKind::Disk => format!("{name}.qcow2"),
            VolumeKind::Image => format!("{name}{IMAGE_MARK}.qcow2"),
        };
        let device = host::create_file(&file)?;
        let info = VolumeInfo { name, size, kind, format: "qcow2".into(), allocated: None, parent, labels: Vec::new() };
        Ok(Qcow2Volume::Writer { device, file, image: RefCell::new(image), info })
    }

    fn delete_volume(name: String) -> Result<(), BackendError> {
        host::remove_file(&file_of(&name)?)
    }

    /// A qcow2 internal snapshot, as `qemu-img snapshot -c` makes it.
    fn create_snapshot(volume: String, name: String, created_unix_ms: u64) -> Result<SnapshotInfo, BackendError> {
        let (file, dev, image) = snapshot_target(&volume)?;
        if let Some(s) = image.snapshots.iter().find(|s| s.name == name || s.id == name) {
            return Err(BackendError::Conflict(format!(
                "disk {volume} has a snapshot {name} already (id {}, name {})",
                s.id, s.name
            )));
        }
        let date = ((created_unix_ms / 1000) as u32, (created_unix_ms % 1000) as u32 * 1_000_000);
        let made = snapshot::create(&dev, &name, date).map_err(|e| format_error(&file, e))?;
        host::flush(dev.id)?;
        Ok(snapshot_info(&volume, &made))
    }

    fn delete_snapshot(volume: String, name: String) -> Result<(), BackendError> {
        let (file, dev, image) = snapshot_target(&volume)?;
        existing(&image, &volume, &name)?;
        snapshot::delete(&dev, &name).map_err(|e| format_error(&file, e))?;
        host::flush(dev.id)
    }

    fn restore_snapshot(volume: String, name: String) -> Result<(), BackendError> {
        let (file, dev, image) = snapshot_target(&volume)?;
        existing(&image, &volume, &name)?;
        snapshot::revert(&dev, &name).map_err(|e| format_error(&file, e))?;
        host::flush(dev.id)
    }
}

enum Qcow2Volume {
    /// Open for reading: the chain of layers.
    Reader { layers: Vec<(Device, Layer)>, info: VolumeInfo },
    /// Being created: a new image whose data the host writes where `allocate` says.
    Writer { device: u32, file: String, image: RefCell<NewImage>, info: VolumeInfo },
}

fn read_only() -> BackendError {
    BackendError::InvalidArgument("the volume is open for reading".into())
}

impl Volume for Qcow2Volume {
    fn info(&self) -> VolumeInfo {
        match self {
            Qcow2Volume::Reader { info, .. } | Qcow2Volume::Writer { info, .. } => info.clone(),
        }
    }

    fn map_extents(&self, start: u64, max_extents: u32) -> Result<ExtentPage, BackendError> {
        let Qcow2Volume::Reader { layers, info } = self else {
            return Err(BackendError::InvalidArgument("a volume being written has no map yet".into()));
        };
        let (extents, next) =
            chain::map(layers, start, max_extents as usize).map_err(|e| format_error(&info.name, e))?;
        let extents = extents.into_iter().map(|e| wit_extent(layers, e)).collect();
        Ok(ExtentPage { extents, next_offset: next })
    }

    /// From the L1 and L2 tables of this view and the base snapshot: clusters whose
    /// entries differ (see `Image::differing`), mapped in this view.
    fn changed_extents(&self, base: String, start: u64, max_extents: u32) -> Result<ExtentPage, BackendError> {
        let Qcow2Volume::Reader { layers, info } = self else {
            return Err(BackendError::InvalidArgument("a volume being written has no map yet".into()));
        };
        let (dev, Layer::Qcow2 { image, view }) = &layers[0] else {
            return Err(BackendError::Unsupported(format!("{} is a raw file: it has no snapshots", info.name)));
        };
        let fail = |e| format_error(&info.name, e);
        let base_view = image
            .view(dev, Some(&base))
            .map_err(fail)?
            .ok_or_else(|| BackendError::NotFound(format!("{} has no snapshot {base}", info.name)))?;
        let max = (max_extents as usize).max(1);
        let window = image.l2_coverage();
        let mut ranges = Vec::new();
        let mut pos = start;
        let mut windows = 0;
        // A page covers at most this many L2 tables, so a call stays short even where
        // little changed.
        while pos < view.size && ranges.len() < max && windows < CHANGED_WINDOWS {
            let end = (pos - pos % window).saturating_add(window).min(view.size);
            image.differing(dev, view, &base_view, pos, end, &mut ranges).map_err(fail)?;
            pos = end;
            windows += 1;
        }
        let mut extents = Vec::new();
        for (a, len) in ranges {
            let mut mapped = Vec::new();
            chain::map_range(layers, a, a + len, &mut mapped).map_err(fail)?;
            extents.extend(mapped.into_iter().map(|e| wit_extent(layers, e)));
        }
        if extents.len() > max {
            extents.truncate(max);
            let last = &extents[max - 1];
            pos = last.offset + last.length;
        }
        Ok(ExtentPage { extents, next_offset: (pos < view.size).then_some(pos) })
    }

    fn decode(&self, codec: u32, stored: Vec<u8>, decoded_length: u32) -> Result<Vec<u8>, BackendError> {
        let name = match self {
            Qcow2Volume::Reader { info, .. } | Qcow2Volume::Writer { info, .. } => &info.name,
        };
        format::decode(codec, &stored, decoded_length as usize).map_err(|e| format_error(name, e))
    }

    fn allocate(&self, offset: u64, length: u64, zero: bool) -> Result<Vec<Extent>, BackendError> {
        let Qcow2Volume::Writer { device, file, image, .. } = self else {
            return Err(read_only());
        };
        let mut image = image.borrow_mut();
        if zero {
            image.zero(offset, length).map_err(|e| format_error(file, e))?;
            return Ok(alloc::vec![Extent { offset, length, location: WitLocation::Zero }]);
        }
        let placed = image.allocate(offset, length).map_err(|e| format_error(file, e))?;
        Ok(placed
            .into_iter()
            .map(|p| Extent {
                offset: p.guest,
                length: p.length,
                location: WitLocation::Data(DeviceOffset { device: *device, offset: p.host }),
            })
            .collect())
    }

    /// Appends the tables, writes the header last, makes it durable and gives the file
    /// its name: before that instant the file is hidden and has no valid header.
    fn commit(&self) -> Result<(), BackendError> {
        let Qcow2Volume::Writer { device, file, image, .. } = self else {
            return Err(read_only());
        };
        let image = image.borrow();
        let mut failed = None;
        let size = image
            .finish(&mut |at, bytes| {
                host::write_at(*device, at, bytes).map_err(|e| {
                    let m = e.message().to_owned();
                    failed = Some(e);
                    format::Error::Io(m)
                })
            })
            .map_err(|e| failed.take().unwrap_or_else(|| format_error(file, e)))?;
        host::set_size(*device, size)?;
        host::flush(*device)?;
        host::publish_file(*device)
    }
}

export_plugin!(Plugin);
