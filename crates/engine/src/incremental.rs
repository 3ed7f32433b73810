//! Incremental exports and their application: `download vds/D@NEW --since vds/D@BASE`
//! and `upload DELTA vd/NAME --onto ADDRESS` (see `snapport_core::delta` for the file).
//!
//! Both ends need a snapshot's digest without reading the whole snapshot each time: the
//! leaf map of a snapshot is kept under `state/POOL/digests/`, labelled with the
//! snapshot's backend id, date and size (snapshots never change; one deleted and made
//! again under the same name gets a new label). The first delta from a base computes
//! its map once; every delta saves its target's map, so the next delta of a chain finds
//! its base's ready.

use crate::address::Address;
use crate::snapshots::{self, Phase};
use crate::Engine;
use crate::{bail, Context as _, Result};
use snapport_core::delta::{self, Identity, LeafMap, Manifest, Overlay};
use snapport_core::import::{ImportOptions, Source};
use snapport_core::output::PendingFile;
use snapport_core::progress::Progress;
use snapport_core::volume_reader::{serve_plans, VolumeReader};
use snapport_host::Instance;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// A snapshot as a delta names it, and the label of its leaf map.
struct Snap {
    identity: Identity,
    label: String,
    /// The backend's name of it, what plugin calls take (CSI: the snapshot ID).
    backend: Address,
}

fn snap(home: &Path, pool: &str, instance: &mut Instance, disk: &str, name: &str) -> Result<Snap> {
    let views = snapshots::list(home, pool, instance, Some(disk))?;
    let Some(v) = snapshots::find(&views, name) else {
        bail!("no vds/{disk}@{name} in pool {pool}");
    };
    if v.phase != Phase::Ready || v.size.is_none() {
        bail!("{} is {:?}, not Ready", v.address(), v.phase);
    }
    let size = v.size.unwrap_or_default();
    Ok(Snap {
        backend: Address::DiskSnapshot {
            disk: disk.into(),
            snapshot: v
                .backend_name
                .clone()
                .ok_or_else(|| crate::format_err!("the backend does not list {}", v.address()))?,
        },
        label: format!(
            "{}:{}:{}",
            v.id.as_deref().unwrap_or(""),
            v.created_unix_ms.unwrap_or(0),
            size
        ),
        identity: Identity {
            name: v.address(),
            id: v.id.clone(),
            size,
            created_unix_ms: v.created_unix_ms,
            digest: None,
        },
    })
}

fn map_path(home: &Path, pool: &str, disk: &str, name: &str) -> PathBuf {
    home.join("state")
        .join(pool)
        .join("digests")
        .join(format!("{disk}@{name}.leaves"))
}

/// Reads `address` through `instance` on a second thread while this one answers the
/// plugin's map questions; `work` gets the reader.
fn with_reader<T: Send>(
    instance: &mut Instance,
    address: &Address,
    work: impl FnOnce(VolumeReader) -> snapport_core::Result<T> + Send,
) -> Result<T> {
    let mut volume = instance
        .open_volume(address.disk(), address.snapshot())
        .with_context(|| format!("opening {address}"))?;
    let (reader, requests) = VolumeReader::new(volume.info.size);
    let result = std::thread::scope(|s| {
        let worker = s.spawn(move || work(reader));
        serve_plans(&mut volume, requests);
        worker.join()
    });
    match result {
        Ok(r) => Ok(r?),
        Err(_) => bail!("reading {address}: the worker thread panicked"),
    }
}

/// The leaf map of `address`: from the store when `label` names a saved one, else read
/// in full (and saved when labelled).
fn leaf_map(
    instance: &mut Instance,
    address: &Address,
    store: Option<(&Path, &str)>,
    progress: &mut dyn Progress,
) -> Result<LeafMap> {
    if let Some((path, label)) = store {
        if let Some(m) = LeafMap::load(path, label) {
            return Ok(m);
        }
    }
    progress.stage(&format!("reading {address} once for its digest map"));
    let map = with_reader(instance, address, |reader| {
        LeafMap::compute(&reader, progress)
    })?;
    if let Some((path, label)) = store {
        map.save(path, label)?;
    }
    Ok(map)
}

/// What `download --since` did.
pub struct DeltaExport {
    /// What the delta file holds (records, bytes, target digest).
    pub summary: delta::DeltaSummary,
    /// The base snapshot's content digest, recorded in the delta.
    pub base_digest: String,
    /// Bytes the backend listed as changed since the base.
    pub changed_bytes: u64,
    /// The SHA-256 and size of the encrypted file, when encrypted.
    pub encrypted: Option<(String, u64)>,
}

/// Where a delta goes: a file, `-` for stdout or an object; an existing file or object
/// replaced only with `force`; encrypted to `recipients` if any.
pub struct DeltaOutput<'a> {
    /// The file, `-` or `s3://BUCKET/KEY`.
    pub name: &'a str,
    /// Replace an existing one (once the new one is complete).
    pub force: bool,
    /// Encrypt to these age recipients.
    pub recipients: Option<&'a snapport_core::encryption::Recipients>,
}

/// Writes the delta of `new` (vds/D@NEW) since `base` (vds/D@BASE) to `out`. Reading the base
/// for its digest map (the first time) is a stage of `progress`.
pub fn export_delta(
    ctx: &Engine,
    pool: &str,
    new: &Address,
    base: &Address,
    out: &DeltaOutput,
    progress: &mut dyn Progress,
) -> Result<DeltaExport> {
    let (output, force, recipients) = (out.name, out.force, out.recipients);
    let (
        Address::DiskSnapshot { disk, snapshot },
        Address::DiskSnapshot {
            disk: base_disk,
            snapshot: base_name,
        },
    ) = (new, base)
    else {
        bail!(
            "--since takes two snapshots of one disk: download vds/DISK@NEW --since vds/DISK@BASE"
        );
    };
    if disk != base_disk {
        bail!("{base} is a snapshot of vd/{base_disk}, not of vd/{disk}: a delta is between snapshots of one disk");
    }
    let object = crate::s3::output_if_object(&ctx.config.home, output, force)?;
    let to_stdout = output == "-" || object.is_some();
    if !to_stdout {
        crate::output::check(&ctx.config, Path::new(output), &[], force)?;
    }
    let home = &ctx.config.home;
    let mut instance = ctx.pool(pool)?;
    let target = snap(home, pool, &mut instance, disk, snapshot)?;
    let mut base_snap = snap(home, pool, &mut instance, disk, base_name)?;
    let base_path = map_path(home, pool, disk, base_name);
    let base_map = leaf_map(
        &mut instance,
        &base_snap.backend,
        Some((&base_path, &base_snap.label)),
        &mut *progress,
    )?;
    let base_digest = base_map.digest();
    base_snap.identity.digest = Some(base_digest.clone());
    let base_backend = base_snap.backend.snapshot().unwrap_or_default().to_string();
    let manifest = Manifest::new(disk, base_snap.identity, target.identity);

    let mut volume = instance
        .open_volume(disk, target.backend.snapshot())
        .with_context(|| format!("opening {new}"))?;
    let changed = volume
        .changed_ranges(&base_backend)
        .with_context(|| format!("listing what changed in {new} since {base}"))?;
    let changed_bytes = changed.iter().map(|r| r.1).sum();

    let file = if to_stdout {
        None
    } else {
        crate::output::note_pending(Path::new(output));
        Some(PendingFile::beside(Path::new(output))?)
    };
    // A delta holds at most the disk's bytes, with a header per record.
    let upload = object
        .as_ref()
        .map(|o| o.writer(Some(volume.info.size + volume.info.size / 32 + (64 << 20))))
        .transpose()?;
    let base_sink: Box<dyn Write + Send> = match (&file, &upload) {
        (Some(f), _) => Box::new(f.file().try_clone().context("opening the output")?),
        (None, Some(w)) => Box::new(w.clone()),
        (None, None) => crate::output::stdout()?,
    };
    // Encrypted, the delta is written through the age writer (which buffers below).
    let (mut sink, sealed): (Box<dyn Write + Send>, _) = match recipients {
        Some(r) => {
            let sealed = snapport_core::encryption::Sealed::new(r, base_sink, true)?;
            (Box::new(sealed.writer()), Some(sealed))
        }
        None => (Box::new(BufWriter::with_capacity(1 << 20, base_sink)), None),
    };
    let (reader, requests) = VolumeReader::new(volume.info.size);
    let written = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            // Taken by value: the plan server stops when the last reader is dropped.
            let reader = reader;
            delta::write_delta(&mut sink, &manifest, &changed, &reader, &base_map, progress)
        });
        serve_plans(&mut volume, requests);
        worker.join()
    });
    drop(sink);
    let (target_map, summary) = match written {
        Ok(r) => r.with_context(|| format!("writing the delta of {new} since {base}"))?,
        Err(_) => bail!("writing the delta: the worker thread panicked"),
    };
    let encrypted = match sealed {
        Some(s) => {
            let (sha, bytes) = s.finish()?;
            Some((sha.unwrap_or_default(), bytes))
        }
        None => None,
    };
    if let Some(f) = file {
        crate::output::commit(Vec::new(), f, &[], force, false)?;
    }
    if let (Some(o), Some(w)) = (&object, &upload) {
        o.commit(w, &[])?;
    }
    target_map.save(&map_path(home, pool, disk, snapshot), &target.label)?;
    Ok(DeltaExport {
        summary,
        base_digest,
        changed_bytes,
        encrypted,
    })
}

/// Applies the delta in `file` onto `onto` (anything holding the delta's base content:
/// the base snapshot, a disk restored from it, the result of the previous delta) as the
/// new volume `target`. Refused before anything is written when `onto`'s content is not
/// the base's; the new volume appears only once its digest is the delta's target's.
/// Reading `onto` for its digest map and writing the new volume go to `progress`.
pub fn apply_delta(
    ctx: &Engine,
    pool_name: &str,
    file: &Path,
    target: &Address,
    onto: &Address,
    fsync: bool,
    progress: &mut dyn Progress,
) -> Result<(delta::Delta, snapport_core::import::ImportSummary)> {
    let delta = delta::read_delta(&mut BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    ))
    .with_context(|| format!("reading {}", file.display()))?;
    let manifest = &delta.manifest;
    let Some(want) = manifest.base.digest.clone() else {
        bail!(
            "{} records no digest of its base: it cannot be checked, so it is not applied",
            file.display()
        );
    };
    let home = &ctx.config.home;
    let mut reader = ctx.pool(pool_name)?;
    let (store, onto_backend) = match onto {
        Address::DiskSnapshot { disk, snapshot } => {
            let s = snap(home, pool_name, &mut reader, disk, snapshot)?;
            (
                Some((map_path(home, pool_name, disk, snapshot), s.label)),
                s.backend,
            )
        }
        // A disk changes: its content is read every time.
        _ => (None, onto.clone()),
    };
    let base_map = leaf_map(
        &mut reader,
        &onto_backend,
        store.as_ref().map(|(p, l)| (p.as_path(), l.as_str())),
        &mut *progress,
    )?;
    let got = base_map.digest();
    if got != want || base_map.size != manifest.base.size {
        bail!(
            "{onto} is not the base of this delta: its content digest is {got} ({} bytes); the delta applies to {} ({want}, {} bytes); nothing was created",
            base_map.size,
            manifest.base.name,
            manifest.base.size
        );
    }

    let mut base = reader
        .open_volume(onto_backend.disk(), onto_backend.snapshot())
        .with_context(|| format!("opening {onto}"))?;
    let mut overlay = Overlay::new(
        &mut base,
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        &delta.records,
        manifest.target.size,
    )?;
    let mut pool = ctx.pool_with(pool_name, fsync)?;
    let options = ImportOptions {
        content_digest: true,
        ..ImportOptions::default()
    };
    let want_target = delta.footer.target_digest.clone();
    let (summary, _) = crate::volume::write_volume(
        &mut pool,
        target,
        manifest.target.size,
        Source::Volume(&mut overlay),
        &options,
        progress,
        |s| {
            let got = s.content_digest.clone().unwrap_or_default();
            if got != want_target {
                bail!("{onto} with the delta applied has content digest {got}, not the delta's {want_target}; nothing was created");
            }
            Ok(vec![format!("content digest {got}")])
        },
    )
    .with_context(|| format!("applying {} onto {onto} as {target}", file.display()))?;
    Ok((delta, summary))
}
