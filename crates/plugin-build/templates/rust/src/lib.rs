//! A snapport storage backend: the `*.raw` files in the pool's first granted folder are
//! its volumes. `NAME.raw` is the disk `vd/NAME`, `NAME.image.raw` the read-only image
//! `vi/NAME`. A raw file's bytes are where they are, so a volume's map is one `data`
//! extent and a write goes to the same offset of the file.
//!
//! Start here: change what a volume is (`volumes`), how it maps (`map_extents`), and what
//! `info` declares. Every call left out answers `unsupported` through the SDK's defaults,
//! which is what `snapport plugin test` expects of a capability not declared.
//!
//! Build: `snapport plugin build`; check: `snapport plugin test {{name}}.wasm`.
#![no_std]

use snapport_plugin_sdk::prelude::*;

/// The granted folder this plugin keeps its volumes in: the pool's first (`folders`).
const FOLDER: FolderId = 0;
const SUFFIX: &str = ".raw";
const IMAGE_MARK: &str = ".image";

/// A volume found in the folder.
struct Found {
    name: String,
    kind: VolumeKind,
    /// The file's path inside the folder.
    path: String,
    size: u64,
}

/// Volumes are the `*.raw` files directly in the folder (subfolders are left alone).
fn volumes() -> Result<Vec<Found>> {
    if folders::granted().is_empty() {
        return Err(invalid_argument!(
            "the pool grants no folder: give it one in `folders` for the volumes"
        ));
    }
    let mut out = Vec::new();
    for entry in folders::list(FOLDER, "")? {
        if entry.kind != EntryKind::File {
            continue;
        }
        let Some(stem) = entry.name.strip_suffix(SUFFIX) else {
            continue;
        };
        let (name, kind) = match stem.strip_suffix(IMAGE_MARK) {
            Some(n) => (n, VolumeKind::Image),
            None => (stem, VolumeKind::Disk),
        };
        if !name.is_empty() {
            out.push(Found {
                name: name.to_owned(),
                kind,
                path: entry.name.clone(),
                size: entry.size,
            });
        }
    }
    Ok(out)
}

fn find(name: &str) -> Result<Found> {
    volumes()?
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| not_found!("no volume {name} (no {name}.raw)"))
}

fn volume_info(name: &str, size: u64, kind: VolumeKind) -> VolumeInfo {
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
    type Volume = RawFile;

    fn info() -> PluginInfo {
        PluginInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "raw files in a granted folder".into(),
            capabilities: Capabilities::READ
                | Capabilities::WRITE
                | Capabilities::VOLUME_CREATE
                | Capabilities::VOLUME_DELETE,
        }
    }

    fn list_volumes() -> Result<Vec<VolumeInfo>> {
        Ok(volumes()?
            .iter()
            .map(|v| volume_info(&v.name, v.size, v.kind))
            .collect())
    }

    fn open_volume(volume: String, snapshot: Option<String>, access: Access) -> Result<RawFile> {
        let found = find(&volume)?;
        if let Some(s) = snapshot {
            return Err(not_found!(
                "{volume} has no snapshot {s}: raw files have none"
            ));
        }
        if access == Access::ReadWrite && found.kind == VolumeKind::Image {
            return Err(permission_denied!("vi/{volume} is a read-only image"));
        }
        let file = Device::open_in(FOLDER, &found.path, access)?;
        let info = volume_info(&volume, file.size(), found.kind);
        Ok(RawFile {
            file,
            info,
            created: false,
        })
    }

    /// A new sparse file, hidden until `commit` publishes it: an interrupted upload never
    /// leaves a half-written volume under its name.
    fn create_volume(
        name: String,
        size: u64,
        kind: VolumeKind,
        parent: Option<String>,
    ) -> Result<RawFile> {
        if parent.is_some() {
            return Err(unsupported!(
                "raw files cannot be thin clones; make a full copy"
            ));
        }
        if name.is_empty()
            || name.starts_with('.')
            || name.contains(['/', '\0'])
            || name.ends_with(IMAGE_MARK)
        {
            return Err(invalid_argument!(
                "{name:?} cannot name a volume (no '/', no leading '.', no {IMAGE_MARK:?} ending)"
            ));
        }
        if find(&name).is_ok() {
            return Err(conflict!("volume {name} exists already"));
        }
        let path = match kind {
            VolumeKind::Disk => format!("{name}{SUFFIX}"),
            VolumeKind::Image => format!("{name}{IMAGE_MARK}{SUFFIX}"),
        };
        let mut file = Device::create_in(FOLDER, &path)?;
        file.set_size(size)?;
        Ok(RawFile {
            file,
            info: volume_info(&name, size, kind),
            created: true,
        })
    }

    fn delete_volume(name: String) -> Result<()> {
        let found = find(&name)?;
        folders::remove(FOLDER, &found.path)
    }
}

/// An open raw file.
struct RawFile {
    file: Device,
    info: VolumeInfo,
    /// Made by `create_volume`: `commit` gives it its name.
    created: bool,
}

impl Volume for RawFile {
    fn info(&self) -> VolumeInfo {
        self.info.clone()
    }

    fn map_extents(&self, start: u64, max_extents: u32) -> Result<ExtentPage> {
        let size = self.info.size;
        let mut page = ExtentPageBuilder::new(start, max_extents);
        if start < size {
            page.push(start, size - start, data(self.file.id(), start));
        }
        Ok(page.finish(size))
    }

    /// The host writes the bytes (zeros included) at the same offset of the file.
    fn allocate(&self, offset: u64, length: u64, _zero: bool) -> Result<Vec<Extent>> {
        match offset.checked_add(length) {
            Some(end) if end <= self.info.size => Ok(vec![Extent {
                offset,
                length,
                location: data(self.file.id(), offset),
            }]),
            _ => Err(out_of_range!(
                "{length} bytes at {offset} do not fit in {} bytes",
                self.info.size
            )),
        }
    }

    fn commit(&self) -> Result<()> {
        self.file.flush()?;
        if self.created {
            self.file.publish()?;
        }
        Ok(())
    }
}

snapport_plugin_sdk::export_plugin!(Plugin);
