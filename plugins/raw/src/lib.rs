//! snapport's raw backend: each device the pool grants (a raw file or a block device) is a
//! disk `vd/NAME`, and so is each `*.raw` file in a granted folder (`NAME.image.raw` is
//! the read-only image `vi/NAME`). The map of a raw disk is one data extent: the bytes are
//! where they are. New volumes are sparse files. No snapshots: the SDK's defaults answer
//! those calls.
#![no_std]

use snapport_plugin_sdk::host;
use snapport_plugin_sdk::prelude::*;

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

fn volumes() -> Result<Vec<Raw>> {
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

fn find(volume: &str) -> Result<Raw> {
    volumes()?.into_iter().find(|v| v.name == volume).ok_or_else(|| not_found!("no raw volume {volume}"))
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

impl Backend for Plugin {
    type Volume = RawVolume;

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

    fn list_volumes() -> Result<Vec<VolumeInfo>> {
        Ok(volumes()?.iter().map(|v| info_of(&v.name, v.size, v.kind)).collect())
    }

    fn open_volume(volume: String, snapshot: Option<String>, access: Access) -> Result<RawVolume> {
        if snapshot.is_some() {
            return Err(unsupported!("raw volumes have no snapshots"));
        }
        let v = find(&volume)?;
        if access == Access::ReadWrite && v.kind == VolumeKind::Image {
            return Err(permission_denied!("vi/{volume} is a read-only image"));
        }
        let device = Device::open(&v.target, access)?;
        let info = info_of(&volume, device.size(), v.kind);
        Ok(RawVolume { device, info, created: false })
    }

    fn create_volume(name: String, size: u64, kind: VolumeKind, parent: Option<String>) -> Result<RawVolume> {
        if parent.is_some() {
            return Err(unsupported!("raw volumes cannot be thin clones; make a full copy"));
        }
        if name.is_empty() || name.starts_with('.') || name.contains('/') || name.ends_with(IMAGE_MARK) {
            return Err(invalid_argument!("{name:?} cannot name a volume"));
        }
        if find(&name).is_ok() {
            return Err(conflict!("volume {name} exists already"));
        }
        let file = match kind {
            VolumeKind::Disk => format!("{name}{SUFFIX}"),
            VolumeKind::Image => format!("{name}{IMAGE_MARK}{SUFFIX}"),
        };
        let mut device = Device::from_id(host::create_file(&file)?, &file)?;
        device.set_size(size)?;
        Ok(RawVolume { device, info: info_of(&name, size, kind), created: true })
    }

    fn delete_volume(name: String) -> Result<()> {
        let v = find(&name)?;
        if !v.file {
            return Err(unsupported!("{name} is a granted device; the operator owns it"));
        }
        host::remove_file(&v.target)
    }
}

struct RawVolume {
    device: Device,
    info: VolumeInfo,
    /// Made by `create-volume`: `commit` publishes it.
    created: bool,
}

impl Volume for RawVolume {
    fn info(&self) -> VolumeInfo {
        self.info.clone()
    }

    fn map_extents(&self, start: u64, max_extents: u32) -> Result<ExtentPage> {
        let size = self.info.size;
        let mut page = ExtentPageBuilder::new(start, max_extents);
        if start < size {
            page.push(start, size - start, data(self.device.id(), start));
        }
        Ok(page.finish(size))
    }

    /// Raw bytes live where they are: the host writes at the same offset, zeros included.
    fn allocate(&self, offset: u64, length: u64, _zero: bool) -> Result<Vec<Extent>> {
        match offset.checked_add(length) {
            Some(end) if end <= self.info.size => {
                Ok(vec![Extent { offset, length, location: data(self.device.id(), offset) }])
            }
            _ => Err(out_of_range!("{length} bytes at {offset} do not fit in {} bytes", self.info.size)),
        }
    }

    fn commit(&self) -> Result<()> {
        self.device.flush()?;
        if self.created {
            self.device.publish()?;
        }
        Ok(())
    }
}

snapport_plugin_sdk::export_plugin!(Plugin);
