//! Create: a disk from an image or a snapshot (CloudStack's "volume from snapshot",
//! Deckhouse's `dataSource`), or an image from a disk or a snapshot. A full copy by
//! default; thin makes a disk that reads through to its image (a qcow2 overlay in qcow2
//! pools). Also: recording a VM whose disks exist.

use crate::address::Address;
use crate::vm::VmConfig;
use crate::volume::{check_kind, kind_of, write_volume};
use crate::Engine;
use crate::{bail, Context as _, Result};
use serde::Serialize;
use snapport_core::import::{ImportOptions, Source, VolumeTarget};
use snapport_core::progress::Progress;
use snapport_host::VolumeKind;
use std::time::Instant;

/// `create vd/NAME|vi/NAME --from ADDRESS`.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The new volume.
    pub target: Address,
    /// What it starts as: vi/, vd/ or vds/ of the same pool.
    pub from: Address,
    /// The pool.
    pub pool: String,
    /// A thin clone of the image instead of a full copy.
    pub thin: bool,
    /// Size of the new volume (at least the source's; default: the source's).
    pub size: Option<u64>,
    /// Make the new volume durable before it appears under its name.
    pub fsync: bool,
}

/// What `create` made: the JSON document of `create -o json`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateReport {
    /// The source's address.
    pub from: String,
    /// "full copy", "thin clone" or "copied by the backend".
    pub mode: String,
    /// The pool.
    pub pool: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The new volume's size.
    pub size: u64,
    /// The address asked for.
    pub target: String,
    /// The name the backend gave the new volume.
    pub volume: String,
    /// Bytes copied here (0 for thin or backend copies).
    pub written_bytes: u64,
}

/// Creates `target` from `from`: copied by the backend when it copies its own
/// snapshots, thin when asked, else a full copy through the import path.
pub fn create(
    engine: &Engine,
    req: &CreateRequest,
    progress: &mut dyn Progress,
) -> Result<CreateReport> {
    let (target, from, given) = (&req.target, &req.from, req.size);
    let kind = kind_of(target)?;
    let mut pool = engine.pool_with(&req.pool, req.fsync)?;
    let context = || format!("creating {target} from {from} in pool {}", req.pool);
    let started = Instant::now();
    let report = |made: String, size: u64, mode: &str, written: u64| CreateReport {
        from: from.to_string(),
        mode: mode.to_string(),
        pool: req.pool.clone(),
        seconds: started.elapsed().as_secs_f64(),
        size,
        target: target.to_string(),
        volume: made,
        written_bytes: written,
    };

    // A backend that copies its own snapshots (CSI: CreateVolume with the snapshot as
    // content source) says so with the label `copies` = `backend`: no bytes move here.
    let backend_from =
        crate::snapshots::backend_address(&engine.config.home, &req.pool, &mut pool, from)?;
    if let (Address::DiskSnapshot { disk, snapshot }, false) = (&backend_from, req.thin) {
        let listed = pool.list_snapshots(Some(disk)).with_context(context)?;
        let copied = listed.iter().find(|s| {
            &s.name == snapshot
                && s.labels
                    .iter()
                    .any(|l| l.key == "copies" && l.value == "backend")
        });
        if let Some(source) = copied {
            let size = match given {
                Some(g) if g < source.size => {
                    bail!("--size {g} is smaller than {from} ({} bytes)", source.size)
                }
                Some(g) => g,
                None => source.size,
            };
            let parent = format!("{disk}@{snapshot}");
            let mut new = pool
                .create_volume(target.disk(), size, kind, Some(&parent))
                .with_context(context)?;
            let made = new.info.name.clone();
            VolumeTarget::commit(&mut new).with_context(context)?;
            let size = new.info.size;
            drop(new);
            return Ok(report(made, size, "copied by the backend", 0));
        }
    }

    // The source, read through its own instance of the pool's plugin.
    let mut reader = engine.pool(&req.pool)?;
    let mut volume = reader
        .open_volume(backend_from.disk(), backend_from.snapshot())
        .with_context(|| format!("opening {from}"))?;
    check_kind(from, volume.info.kind)?;
    let source_size = volume.info.size;
    let size = match given {
        Some(g) if g < source_size => {
            bail!("--size {g} is smaller than {from} ({source_size} bytes)")
        }
        Some(g) => g,
        None => source_size,
    };

    let mode;
    let written;
    if req.thin {
        if !matches!(from, Address::Image(_)) || kind != VolumeKind::Disk {
            bail!("--thin makes a disk (vd/) from an image (vi/), which never changes under it; {from} needs a full copy (drop --thin), or first: snapport create vi/NAME --from {from}");
        }
        drop(volume);
        let mut new = pool
            .create_volume(target.disk(), size, kind, Some(from.disk()))
            .with_context(context)?;
        VolumeTarget::commit(&mut new).with_context(context)?;
        mode = "thin clone";
        written = 0;
    } else {
        let (summary, _) = write_volume(
            &mut pool,
            target,
            size,
            Source::Volume(&mut volume),
            &ImportOptions::default(),
            progress,
            |_| Ok(Vec::new()),
        )
        .with_context(context)?;
        mode = "full copy";
        written = summary.written_bytes;
    }
    Ok(report(target.disk().to_string(), size, mode, written))
}

/// `create vm/NAME --config FILE`.
#[derive(Debug, Clone)]
pub struct CreateVmRequest {
    /// The VM's name (without `vm/`); the config must name it so.
    pub name: String,
    /// The VM's config, a JSON document with its name, disks (name, pool) and network
    /// identifiers (mac, ip); other fields are kept as written.
    pub config: std::path::PathBuf,
}

/// Records a VM whose disks exist in their pools; returns its config as saved (the JSON
/// document of `create vm/NAME -o json`).
pub fn create_vm(engine: &Engine, req: &CreateVmRequest) -> Result<VmConfig> {
    let (name, path) = (&req.name, &req.config);
    let text = snapport_core::io::read_regular_file(path, crate::vm::MAX_CONFIG_BYTES)
        .with_context(|| format!("reading {}", path.display()))?;
    let cfg = crate::vm::parse(&text, &path.display().to_string())?;
    if &cfg.name != name {
        bail!(
            "{} names the VM {:?}, not {name:?}",
            path.display(),
            cfg.name
        );
    }
    for d in &cfg.disks {
        let mut pool = engine.pool(&d.pool)?;
        pool.open_volume(&d.name, None)
            .with_context(|| format!("vm/{name}: its disk vd/{} in pool {}", d.name, d.pool))?;
    }
    crate::vm::save_new(&engine.config.home, &cfg)?;
    Ok(cfg)
}
