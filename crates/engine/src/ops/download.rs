//! Exports to a file or stdout: a disk, image or disk snapshot as raw, qcow2 or raw.zst
//! ([`download`]); what changed between two snapshots of a disk as a snapport delta
//! ([`download_delta`]); a whole VM or VM snapshot as a bundle ([`download_vm`]).

use crate::address::Address;
use crate::bundle::{self, BundleTarget};
use crate::format::ImageFormat;
use crate::output;
use crate::Engine;
use crate::{Context as _, Result};
use serde::Serialize;
use snapport_core::bundle::BundleDisk;
use snapport_core::encryption::{Recipients, Sealed};
use snapport_core::export::{self, ExportOptions, Target};
use snapport_core::output::PendingFile;
use snapport_core::progress::Progress;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A disk (vd/), image (vi/) or disk snapshot (vds/) to export.
#[derive(Clone, Debug)]
pub struct DownloadRequest {
    /// What to export.
    pub address: Address,
    /// The pool holding it.
    pub pool: String,
    /// The output file, or `-` for stdout.
    pub output: String,
    /// The image format written.
    pub format: ImageFormat,
    /// zstd level for raw.zst (1..=19).
    pub zstd_level: i32,
    /// Compute the chunked content digest (written to OUTPUT.digest).
    pub content_digest: bool,
    /// Compute a plain SHA-256 of the output (written to OUTPUT.sha256).
    pub sha256sum: bool,
    /// Make the output durable before it appears under its name.
    pub fsync: bool,
    /// Replace an existing output file (once the new one is complete).
    pub force: bool,
    /// Copy threads (0: one per core).
    pub workers: usize,
    /// Encrypt the output to these age recipients (`age1...`, ssh-ed25519, ssh-rsa).
    pub encrypt_to: Vec<String>,
    /// Encrypt the output to the recipients in these files (one per line).
    pub encrypt_to_files: Vec<PathBuf>,
}

impl DownloadRequest {
    /// The export `snapport download ADDRESS -o OUTPUT` makes: from the default pool, a
    /// sparse raw file with its content digest; change the fields for the rest.
    pub fn new(address: Address, output: impl Into<String>) -> DownloadRequest {
        DownloadRequest {
            address,
            pool: crate::config::DEFAULT_POOL.to_string(),
            output: output.into(),
            format: ImageFormat::Raw,
            zstd_level: 3,
            content_digest: true,
            sha256sum: false,
            fsync: false,
            force: false,
            workers: 0,
            encrypt_to: Vec::new(),
            encrypt_to_files: Vec::new(),
        }
    }
}

/// What an export wrote: the JSON summary of `download --output-format json`.
#[derive(Clone, Debug, Serialize)]
pub struct DownloadReport {
    /// The address exported.
    pub source: String,
    /// Its pool.
    pub pool: String,
    /// The output file as given, `-` for stdout.
    pub output: String,
    /// `raw`, `qcow2` or `raw.zst`.
    pub format: &'static str,
    /// The disk's logical size.
    pub size: u64,
    /// Bytes of the output.
    pub output_size: u64,
    /// Bytes of data read (holes are not).
    pub data_bytes: u64,
    /// The chunked content digest, when asked for (in clear only when the output is
    /// not encrypted; an encrypted output's is in OUTPUT.digest.age).
    pub content_digest: Option<String>,
    /// The output's SHA-256, when asked for (of the encrypted file, when encrypted).
    pub sha256: Option<String>,
    /// Whether the output is an age file.
    pub encrypted: bool,
    /// How long it took.
    pub seconds: f64,
}

/// Writes `req.address` to `req.output` (named only once complete, with its sidecars).
/// A disk a running QEMU holds is read from a snapshot QEMU takes for the export.
pub fn download(
    engine: &Engine,
    req: &DownloadRequest,
    progress: &mut dyn Progress,
) -> Result<DownloadReport> {
    let address = &req.address;
    let recipients = Recipients::parse(&req.encrypt_to, &req.encrypt_to_files)?;
    let object = crate::s3::output_if_object(&engine.config.home, &req.output, req.force)?;
    if req.output != "-" && object.is_none() {
        let out = Path::new(&req.output);
        let [digest_file, sum_file, digest_age] = sidecars(out);
        output::check(
            &engine.config,
            out,
            &[&digest_file, &sum_file, &digest_age],
            req.force,
        )?;
    }
    let home = &engine.config.home;
    let mut instance = engine.pool(&req.pool)?;
    let backend = crate::snapshots::backend_address(home, &req.pool, &mut instance, address)?;
    let temporary = match address {
        Address::Disk(disk) => crate::live::for_disk(home, &req.pool, &mut instance, disk)?
            .map(|live| live.temporary_snapshot(&mut instance))
            .transpose()?,
        _ => None,
    };
    let snapshot = match &temporary {
        Some(t) => Some(t.name.clone()),
        None => backend.snapshot().map(String::from),
    };
    let exported = export_volume(
        req,
        recipients.as_ref(),
        object.as_ref(),
        &mut instance,
        backend.disk(),
        snapshot.as_deref(),
        progress,
    );
    // On every path, the temporary snapshot goes once the export is done with it; one
    // that will not go is worth a warning, not another failure.
    if let Some(temporary) = temporary {
        if let Err(e) = temporary.delete() {
            progress.warn(&e.one_line());
        }
    }
    exported
}

/// An export's sidecars: OUTPUT.digest (the content digest), OUTPUT.sha256
/// (`sha256sum -c` format) and, for an encrypted export, OUTPUT.digest.age (the content
/// digest, encrypted to the same recipients).
fn sidecars(output: &Path) -> [PathBuf; 3] {
    [
        output::sidecar_path(output, ".digest"),
        output::sidecar_path(output, ".sha256"),
        output::sidecar_path(output, ".digest.age"),
    ]
}

/// The export itself, from `disk` (at `snapshot`) of the pool `instance` runs.
fn export_volume(
    req: &DownloadRequest,
    recipients: Option<&Recipients>,
    object: Option<&crate::s3::ObjectOutput>,
    instance: &mut snapport_host::Instance,
    disk: &str,
    snapshot: Option<&str>,
    progress: &mut dyn Progress,
) -> Result<DownloadReport> {
    let address = &req.address;
    let to_stdout = req.output == "-";
    let out = Path::new(&req.output);
    let mut volume = instance
        .open_volume(disk, snapshot)
        .with_context(|| format!("opening {address}"))?;
    crate::volume::check_kind(address, volume.info.kind)?;

    let pending = if to_stdout || object.is_some() {
        None
    } else {
        output::note_pending(out);
        Some(PendingFile::beside(out)?)
    };
    // An object is written as a stream (a multipart upload); room for a qcow2's tables
    // beyond the disk's size keeps its parts under S3's count.
    let upload = match object {
        Some(o) => Some(o.writer(Some(volume.info.size + volume.info.size / 32 + (64 << 20)))?),
        None => None,
    };
    let stream = || -> Result<Box<dyn Write + Send>> {
        match &upload {
            Some(w) => Ok(Box::new(w.clone())),
            None => output::stdout(),
        }
    };
    // An encrypted export is the same image written as a stream through the age writer,
    // whose output (the ciphertext) is what `--sha256sum` hashes.
    let mut sealed = None;
    let target = match (&pending, recipients) {
        (Some(file), None) => Target::Pending(file),
        (None, None) => Target::Stream(stream()?),
        (pending, Some(recipients)) => {
            let file: Box<dyn Write + Send> = match pending {
                Some(f) => Box::new(
                    f.file()
                        .try_clone()
                        .context("opening the output for writing")?,
                ),
                None => stream()?,
            };
            let s = Sealed::new(recipients, file, req.sha256sum)?;
            let writer = s.writer();
            sealed = Some(s);
            Target::Stream(Box::new(writer))
        }
    };
    let options = ExportOptions {
        format: req.format.export_format(req.zstd_level),
        // Encrypted to stdout, the digest would have nowhere to go but the report, which
        // does not carry it in clear.
        content_digest: req.content_digest && !(to_stdout && recipients.is_some()),
        stream_sha256: req.sha256sum && recipients.is_none(),
        workers: req.workers,
        sync: req.fsync,
    };
    let started = Instant::now();
    let mut summary = export::export(&mut volume, target, &options, progress)
        .with_context(|| format!("exporting {address} from pool {}", req.pool))?;
    if let Some(sealed) = &sealed {
        // The ciphertext's last chunk, and the buffer under it.
        (summary.stream_sha256, summary.output_size) = sealed.finish()?;
    }
    let seconds = started.elapsed().as_secs_f64();

    // The sidecars: (extension, content); `None` where this export writes none, so that
    // an earlier export's goes (it would describe other bytes).
    let base = match object {
        Some(o) => o.base_name().to_owned(),
        None => out
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
    };
    let line = |v: &String| format!("{v}  {base}\n").into_bytes();
    // Encrypted, the content digest is written only encrypted.
    let (plain_digest, sealed_digest) = match recipients {
        None => (summary.content_digest.as_ref().map(line), None),
        Some(r) => (
            None,
            summary
                .content_digest
                .as_ref()
                .map(|d| r.encrypt_bytes(&line(d)))
                .transpose()?,
        ),
    };
    let sidecars = [
        (".digest", plain_digest),
        (".sha256", summary.stream_sha256.as_ref().map(line)),
        (".digest.age", sealed_digest),
    ];
    if let Some(pending) = pending {
        let mut files = Vec::new();
        let mut stale = Vec::new();
        for (ext, bytes) in &sidecars {
            let path = output::sidecar_path(out, ext);
            match bytes {
                Some(b) => files.push(output::sidecar_bytes(&path, b)?),
                None => stale.push(path),
            }
        }
        output::commit(files, pending, &stale, req.force, req.fsync)?;
    }
    if let (Some(o), Some(w)) = (object, &upload) {
        o.commit(w, &sidecars)?;
    }
    if recipients.is_some() {
        // Nothing derived from the plaintext leaves in clear, the report included.
        summary.content_digest = None;
    }
    Ok(DownloadReport {
        source: address.to_string(),
        pool: req.pool.clone(),
        output: req.output.clone(),
        format: req.format.name(),
        size: summary.size,
        output_size: summary.output_size,
        data_bytes: summary.data_bytes,
        content_digest: summary.content_digest,
        sha256: summary.stream_sha256,
        encrypted: recipients.is_some(),
        seconds,
    })
}

/// What changed in one disk snapshot since an earlier one, as a snapport delta that
/// `upload --onto` applies.
#[derive(Clone, Debug)]
pub struct DeltaRequest {
    /// The newer snapshot, vds/DISK@NEW.
    pub address: Address,
    /// The base snapshot of the same disk, vds/DISK@BASE.
    pub since: Address,
    /// The pool holding them.
    pub pool: String,
    /// The output file, or `-` for stdout.
    pub output: String,
    /// Replace an existing output file (once the new one is complete).
    pub force: bool,
    /// Encrypt the delta to these age recipients (as [`DownloadRequest::encrypt_to`]).
    pub encrypt_to: Vec<String>,
    /// Encrypt the delta to the recipients in these files.
    pub encrypt_to_files: Vec<PathBuf>,
}

/// What a delta export wrote: the JSON summary of `download --since`.
#[derive(Clone, Debug, Serialize)]
pub struct DeltaReport {
    /// The newer snapshot.
    pub source: String,
    /// The base snapshot.
    pub since: String,
    /// Their pool.
    pub pool: String,
    /// The output file as given, `-` for stdout.
    pub output: String,
    /// Always `snapport-delta`.
    pub format: &'static str,
    /// Bytes of the delta file.
    pub output_size: u64,
    /// Records in the delta.
    pub records: u64,
    /// Bytes the data records carry.
    pub data_bytes: u64,
    /// Bytes the zero records cover.
    pub zero_bytes: u64,
    /// Bytes the backend reported changed.
    pub changed_bytes: u64,
    /// The base's content digest (not in clear when encrypted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_digest: Option<String>,
    /// The newer snapshot's content digest (not in clear when encrypted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_digest: Option<String>,
    /// The SHA-256 of the delta file (of the encrypted file, when encrypted).
    pub sha256: String,
    /// Whether the delta is an age file.
    pub encrypted: bool,
    /// How long it took.
    pub seconds: f64,
}

/// Writes the delta of `req.address` since `req.since` to `req.output`.
pub fn download_delta(
    engine: &Engine,
    req: &DeltaRequest,
    progress: &mut dyn Progress,
) -> Result<DeltaReport> {
    let (address, base) = (&req.address, &req.since);
    let recipients = Recipients::parse(&req.encrypt_to, &req.encrypt_to_files)?;
    let started = Instant::now();
    let done = crate::incremental::export_delta(
        engine,
        &req.pool,
        address,
        base,
        &crate::incremental::DeltaOutput {
            name: &req.output,
            force: req.force,
            recipients: recipients.as_ref(),
        },
        progress,
    )
    .with_context(|| format!("exporting {address} since {base} from pool {}", req.pool))?;
    Ok(DeltaReport {
        source: address.to_string(),
        since: base.to_string(),
        pool: req.pool.clone(),
        output: req.output.clone(),
        format: "snapport-delta",
        output_size: done
            .encrypted
            .as_ref()
            .map_or(done.summary.file_bytes, |(_, bytes)| *bytes),
        records: done.summary.footer.records,
        data_bytes: done.summary.footer.data_bytes,
        zero_bytes: done.summary.footer.zero_bytes,
        changed_bytes: done.changed_bytes,
        // Encrypted, nothing derived from the plaintext is told in clear.
        base_digest: recipients.is_none().then_some(done.base_digest),
        target_digest: recipients
            .is_none()
            .then_some(done.summary.footer.target_digest),
        sha256: done
            .encrypted
            .map_or(done.summary.file_sha256, |(sha, _)| sha),
        encrypted: recipients.is_some(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A VM (its config and every disk, now) or a VM snapshot to write as a bundle.
#[derive(Clone, Debug)]
pub struct VmDownloadRequest {
    /// The VM's name.
    pub vm: String,
    /// The VM snapshot, for vms/VM@SNAPSHOT.
    pub snapshot: Option<String>,
    /// The output file, or `-` for stdout.
    pub output: String,
    /// The disks' format inside the bundle: raw.zst or qcow2.
    pub payload: ImageFormat,
    /// zstd level for a raw.zst payload.
    pub zstd_level: i32,
    /// Replace an existing output file (once the new one is complete).
    pub force: bool,
    /// Make the output durable before it appears under its name.
    pub fsync: bool,
    /// Encrypt the bundle to these age recipients (as [`DownloadRequest::encrypt_to`]).
    pub encrypt_to: Vec<String>,
    /// Encrypt the bundle to the recipients in these files.
    pub encrypt_to_files: Vec<PathBuf>,
}

impl VmDownloadRequest {
    /// `vm/NAME` or `vms/NAME@SNAPSHOT`.
    pub fn source(&self) -> String {
        match &self.snapshot {
            Some(s) => format!("vms/{}@{s}", self.vm),
            None => format!("vm/{}", self.vm),
        }
    }
}

/// What a bundle export wrote: the JSON summary of `download vm/NAME`.
#[derive(Clone, Debug, Serialize)]
pub struct VmDownloadReport {
    /// `vm/NAME` or `vms/NAME@SNAPSHOT`.
    pub source: String,
    /// The output file as given, `-` for stdout.
    pub output: String,
    /// Always `bundle`.
    pub format: &'static str,
    /// The VM snapshot the disks come from, if any.
    pub snapshot: Option<String>,
    /// Whether the disks were captured consistently.
    pub consistent: bool,
    /// The disks' format inside the bundle.
    pub payload: String,
    /// Bytes of the bundle.
    pub output_size: u64,
    /// The bundle's SHA-256 (of the encrypted file, when encrypted).
    pub sha256: String,
    /// The disks in the bundle (encrypted, without their digests).
    pub disks: Vec<BundleDisk>,
    /// Whether the bundle is an age file.
    pub encrypted: bool,
    /// How long it took.
    pub seconds: f64,
}

/// Writes the VM (or VM snapshot) as a bundle to `req.output`, named once complete.
pub fn download_vm(
    engine: &Engine,
    req: &VmDownloadRequest,
    progress: &mut dyn Progress,
) -> Result<VmDownloadReport> {
    let source = req.source();
    let started = Instant::now();
    let object = crate::s3::output_if_object(&engine.config.home, &req.output, req.force)?;
    let pending = if req.output == "-" || object.is_some() {
        None
    } else {
        let out = Path::new(&req.output);
        output::check(&engine.config, out, &[], req.force)?;
        output::note_pending(out);
        Some(PendingFile::beside(out)?)
    };
    let recipients = Recipients::parse(&req.encrypt_to, &req.encrypt_to_files)?;
    let upload = object.as_ref().map(|o| o.writer(None)).transpose()?;
    // Where the bundle goes in order; a file not encrypted is written in place instead.
    let stream = || -> Result<Box<dyn Write + Send>> {
        Ok(match (&pending, &upload) {
            (Some(f), _) => Box::new(f.file().try_clone().context("opening the output")?),
            (None, Some(w)) => Box::new(w.clone()),
            (None, None) => output::stdout()?,
        })
    };
    let spool_dir = pending
        .as_ref()
        .map_or_else(std::env::temp_dir, |f| f.dir().to_path_buf());
    let mut sealed = None;
    let target = match (&pending, &upload, &recipients) {
        (Some(f), _, None) => BundleTarget::File(f),
        (None, None, None) => BundleTarget::Stdout,
        (_, _, None) => BundleTarget::Stream(stream()?, spool_dir),
        (_, _, Some(r)) => {
            let s = Sealed::new(r, stream()?, true)?;
            let writer = s.writer();
            sealed = Some(s);
            BundleTarget::Stream(Box::new(writer), spool_dir)
        }
    };
    let done = bundle::export_vm(
        engine,
        &req.vm,
        req.snapshot.as_deref(),
        target,
        req.payload.export_format(req.zstd_level),
        progress,
    )
    .with_context(|| format!("exporting {source}"))?;
    let mut done = done;
    if let Some(sealed) = &sealed {
        let (sha, bytes) = sealed.finish()?;
        (done.sha256, done.output_size) = (sha.unwrap_or_default(), bytes);
        // Nothing derived from the plaintext in clear: the disks' digests stay inside.
        for d in &mut done.manifest.disks {
            d.content_digest.clear();
            d.sha256.clear();
        }
    }
    if let Some(f) = pending {
        output::commit(Vec::new(), f, &[], req.force, req.fsync)?;
    }
    if let (Some(o), Some(w)) = (&object, &upload) {
        o.commit(w, &[])?;
    }
    Ok(VmDownloadReport {
        source,
        output: req.output.clone(),
        format: "bundle",
        snapshot: done.manifest.snapshot,
        consistent: done.manifest.consistent,
        payload: done.manifest.payload,
        output_size: done.output_size,
        sha256: done.sha256,
        disks: done.manifest.disks,
        encrypted: sealed.is_some(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
