//! Whole-VM bundles (the format: `snapport_core::bundle`): `download vm/NAME -o FILE.tar`
//! and `upload FILE.tar vm/NEW`.
//!
//! Export makes each disk's payload first (in unnamed spool files beside the output),
//! because a tar header needs the member's size and SHA256SUMS goes first; then it
//! writes the archive. Import streams: every member is checked against SHA256SUMS as it
//! passes, each disk is imported through the ordinary import path (content digest
//! verified, committed only when whole), and when anything fails the disks this import
//! already created are deleted and no VM config is written.

use crate::address::Address;
use crate::source::{self, HashingReader};
use crate::vm::{self, Naming, VmConfig};
use crate::volume::{write_volume, ZstdSource};
use crate::Engine;
use crate::{bail, format_err, Context as _, Result};
use sha2::{Digest, Sha256};
use snapport_core::bundle::{
    self, BundleDisk, BundleWriter, Manifest, MemberReader, CONFIG, MANIFEST, SUMS,
};
use snapport_core::export::{self, ExportOptions, Format, Target};
use snapport_core::import::{ImportOptions, ImportSummary, Source};
use snapport_core::output::PendingFile;
use snapport_core::progress::Progress;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A folder for an imported bundle's qcow2 payloads (the qcow2 plugin opens them by
/// name), removed with everything in it when dropped.
struct Spool(PathBuf);

impl Spool {
    fn in_folder(parent: &Path) -> Result<Spool> {
        let dir = parent.join(format!(".snapport-bundle-{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Spool(dir))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a bundle goes.
pub enum BundleTarget<'a> {
    /// The process's stdout, written in order.
    Stdout,
    /// Another stream written in order (an object's multipart upload, an encrypted
    /// file); the disks' payloads are spooled in the folder given.
    Stream(Box<dyn Write + Send>, PathBuf),
    /// A file not named yet: its caller names it, or serves it, once it is whole. The
    /// disks' payloads are spooled beside it.
    File(&'a PendingFile),
}

/// What a bundle export wrote.
pub struct BundleExport {
    /// The manifest written into the bundle.
    pub manifest: Manifest,
    /// Bytes of the whole archive.
    pub output_size: u64,
    /// SHA-256 of the whole archive.
    pub sha256: String,
}

/// Counts and hashes what goes out (the whole archive's SHA-256, for the summary).
struct Counting<W: Write> {
    out: W,
    sha: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Writes vm/`name` (its config and every disk) as a bundle to `target`; with
/// `snapshot`, the VM snapshot vms/`name`@`snapshot` (the config and the disks as they
/// were then). `payload` is the disks' format inside: [`Format::RawZst`] or
/// [`Format::Qcow2`]. Each disk's export is a stage of `progress`.
pub fn export_vm(
    ctx: &Engine,
    name: &str,
    snapshot: Option<&str>,
    target: BundleTarget,
    payload: Format,
    progress: &mut dyn Progress,
) -> Result<BundleExport> {
    let home = &ctx.config.home;
    let (cfg, taken) = match snapshot {
        None => (vm::load(home, name)?, None),
        Some(s) => {
            let snap = crate::snapshots::vm_snapshot(home, name, s)?;
            if snap.phase != crate::snapshots::Phase::Ready {
                bail!("{} is {:?}, not Ready", snap.address(), snap.phase);
            }
            (snap.config.clone(), Some(snap))
        }
    };
    let (format, ext) = match payload {
        Format::RawZst { .. } => (payload, "raw.zst"),
        Format::Qcow2 => (payload, "qcow2"),
        Format::Raw => bail!("a bundle carries its disks as raw.zst or qcow2 (--payload)"),
    };
    // Payloads are spooled in files that never get a name: nothing of them outlives the
    // process, however it ends.
    let spool_dir = match &target {
        BundleTarget::File(f) => f.dir().to_path_buf(),
        BundleTarget::Stdout => std::env::temp_dir(),
        BundleTarget::Stream(_, dir) => dir.clone(),
    };
    let mut disks = Vec::new();
    for (i, d) in cfg.disks.iter().enumerate() {
        let mut instance = ctx.pool(&d.pool)?;
        let backend = crate::snapshots::vm_backend_snapshot(
            &ctx.config.home,
            &d.pool,
            &mut instance,
            &d.name,
            name,
            snapshot,
        )?;
        let mut volume = instance
            .open_volume(&d.name, backend.as_deref())
            .with_context(|| format!("vm/{name}: opening vd/{} of pool {}", d.name, d.pool))?;
        let spool = PendingFile::spool(&spool_dir, &format!("bundle-{i}.{ext}"))?;
        let options = ExportOptions {
            format,
            content_digest: true,
            stream_sha256: true,
            workers: 0,
            sync: false,
        };
        progress.stage(&format!("exporting vd/{} of pool {}", d.name, d.pool));
        let s = export::export(&mut volume, Target::Pending(&spool), &options, progress)
            .with_context(|| format!("vm/{name}: exporting vd/{} of pool {}", d.name, d.pool))?;
        disks.push((
            BundleDisk {
                name: d.name.clone(),
                pool: d.pool.clone(),
                size: s.size,
                file: format!("disks/{}.{ext}", d.name),
                content_digest: s.content_digest.context("the export computed no digest")?,
                sha256: s.stream_sha256.context("the export computed no SHA-256")?,
            },
            spool,
        ));
    }
    let manifest = Manifest {
        format: bundle::FORMAT.into(),
        version: bundle::VERSION,
        vm: cfg.name.clone(),
        created_unix_ms: crate::snapshots::now_ms(),
        snapshot: taken.as_ref().map(|t| t.address()),
        consistent: taken.as_ref().is_some_and(|t| t.consistent),
        payload: ext.into(),
        disks: disks.iter().map(|d| d.0.clone()).collect(),
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    let config_json = serde_json::to_vec_pretty(&cfg).expect("a config serialises");
    let mut sums = vec![
        (
            MANIFEST.to_string(),
            hex::encode(Sha256::digest(&manifest_json)),
        ),
        (
            CONFIG.to_string(),
            hex::encode(Sha256::digest(&config_json)),
        ),
    ];
    sums.extend(
        disks
            .iter()
            .map(|(d, _)| (d.file.clone(), d.sha256.clone())),
    );
    let sums = bundle::format_sums(&sums);

    let out: Box<dyn Write> = match target {
        BundleTarget::File(f) => Box::new(f.file().try_clone().context("opening the output")?),
        BundleTarget::Stream(w, _) => w,
        BundleTarget::Stdout => crate::output::stdout()?,
    };
    let counting = Counting {
        out: BufWriter::with_capacity(1 << 20, out),
        sha: Sha256::new(),
        bytes: 0,
    };
    let mut tar = BundleWriter::new(counting, manifest.created_unix_ms / 1000);
    tar.add(SUMS, sums.len() as u64, &mut sums.as_bytes())?;
    tar.add(
        MANIFEST,
        manifest_json.len() as u64,
        &mut &manifest_json[..],
    )?;
    tar.add(CONFIG, config_json.len() as u64, &mut &config_json[..])?;
    for (d, spool) in &disks {
        let mut f = spool.file();
        // A zstd payload was written through the descriptor's own offset.
        f.seek(SeekFrom::Start(0))
            .context("reading back a spooled payload")?;
        let len = f.metadata()?.len();
        tar.add(&d.file, len, &mut f)?;
    }
    let mut counting = tar.finish()?;
    counting.flush().context("writing the bundle")?;
    let (output_size, sha256) = (counting.bytes, hex::encode(counting.sha.finalize()));
    drop(counting.out);
    Ok(BundleExport {
        manifest,
        output_size,
        sha256,
    })
}

/// What a bundle import created.
pub struct BundleImport {
    /// The bundle's manifest (the VM it was made from, its disks).
    pub manifest: Manifest,
    /// The new VM's config, as saved.
    pub config: VmConfig,
    /// What changed from the bundle's VM (names, MAC addresses, IPs), a line each.
    pub notes: Vec<String>,
    /// Each disk's import, in the config's order.
    pub disks: Vec<ImportSummary>,
}

fn next_named<R: Read>(members: &mut MemberReader<R>, want: &str) -> Result<bundle::Member> {
    match members.next_member()? {
        Some(m) if m.path == want => Ok(m),
        Some(m) => bail!(
            "not a valid snapport bundle: {} where {want} belongs",
            m.path
        ),
        None => bail!("not a valid snapport bundle: it ends before {want}"),
    }
}

/// A small member, read whole and checked against SHA256SUMS.
fn small_checked<R: Read>(
    members: &mut MemberReader<R>,
    want: &str,
    sums: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let m = next_named(members, want)?;
    let bytes = members.read_small(&m)?;
    let got = hex::encode(Sha256::digest(&bytes));
    if sums.get(want) != Some(&got) {
        bail!("{want} does not match its line in {SUMS} (damaged bundle)");
    }
    Ok(bytes)
}

/// Imports the bundle `source` (a file, - or a URL, an object; decrypted with
/// `identities` if it is an age file) as the new vm/`new_name` in `pool`;
/// `progress` sees each disk's import.
pub fn import_vm(
    ctx: &Engine,
    (source, identities): (&str, Option<&snapport_core::encryption::Identities>),
    new_name: &str,
    pool: &str,
    naming: &Naming,
    fsync: bool,
    progress: &mut dyn Progress,
) -> Result<BundleImport> {
    let home = &ctx.config.home;
    if vm::exists(home, new_name) {
        bail!("vm/{new_name} already exists; choose another name (nothing was created)");
    }
    let input = source::open(source)?;
    // An encrypted bundle is decrypted as it streams (age authenticates every chunk; the
    // members' digests inside are checked as for any bundle).
    let reader = if snapport_core::encryption::is_age(&input.head()?) {
        let Some(identities) = identities else {
            bail!("{source} is encrypted (an age file): give --identity KEYFILE, the age or ssh key it was encrypted to; nothing was created");
        };
        identities.decrypt(
            std::io::BufReader::with_capacity(1 << 20, input.into_reader()?),
            source,
        )?
    } else {
        input.into_reader()?
    };
    let mut members = MemberReader::new(std::io::BufReader::with_capacity(1 << 20, reader));
    let m = next_named(&mut members, SUMS)?;
    let text = members.read_small(&m)?;
    let sums = bundle::parse_sums(
        std::str::from_utf8(&text)
            .map_err(|_| format_err!("not a valid snapport bundle: {SUMS} is not text"))?,
    )?;
    let manifest: Manifest = serde_json::from_slice(&small_checked(&mut members, MANIFEST, &sums)?)
        .context("not a valid snapport bundle: its manifest")?;
    bundle::check_manifest(&manifest, &sums)?;
    let config = vm::parse(
        &small_checked(&mut members, CONFIG, &sums)?,
        "the bundle's vm.json",
    )?;
    let same_disks = manifest.disks.len() == config.disks.len()
        && manifest
            .disks
            .iter()
            .zip(&config.disks)
            .all(|(a, b)| a.name == b.name);
    if !same_disks {
        bail!("not a valid snapport bundle: its manifest and vm.json list different disks");
    }
    let (new_config, notes) = vm::clone_config(&config, new_name, naming, Some(pool))?;

    // Strict: every name is free before anything is written.
    let mut instance = ctx.pool_with(pool, fsync)?;
    let existing: std::collections::BTreeSet<String> = instance
        .list_volumes()?
        .into_iter()
        .map(|v| v.name)
        .collect();
    let taken: Vec<_> = new_config
        .disks
        .iter()
        .filter(|d| existing.contains(&d.name))
        .map(|d| format!("vd/{}", d.name))
        .collect();
    if !taken.is_empty() {
        bail!(
            "{} already exist in pool {pool}; rename with --name-prefix, --name-suffix or --name-replace OLD=NEW (nothing was created)",
            taken.join(", ")
        );
    }

    let mut created: Vec<String> = Vec::new();
    let mut summaries = Vec::new();
    // qcow2 payloads need random access: each goes to a file here first.
    let spool = match manifest.payload.as_str() {
        "qcow2" => Some(Spool::in_folder(home)?),
        _ => None,
    };
    let result = (|| -> Result<()> {
        for (d, new) in manifest.disks.iter().zip(&new_config.disks) {
            let member = next_named(&mut members, &d.file)?;
            let target = Address::Disk(new.name.clone());
            let hash = Arc::new(Mutex::new(Sha256::new()));
            let options = ImportOptions {
                content_digest: true,
                content_sha256: false,
                workers: 0,
            };
            let verify = |s: &ImportSummary| -> Result<Vec<String>> {
                let sha = hex::encode(hash.lock().unwrap().clone().finalize());
                if sha != d.sha256 {
                    bail!(
                        "{} does not match its line in {SUMS} (damaged bundle)",
                        d.file
                    );
                }
                if s.content_digest.as_deref() != Some(d.content_digest.as_str()) {
                    bail!("{}: the content digest differs from the manifest's", d.file);
                }
                Ok(Vec::new())
            };
            let hashing = HashingReader {
                inner: &mut members,
                hash: Arc::clone(&hash),
            };
            let context = || format!("importing {} as {target}", d.file);
            let (summary, _) = if manifest.payload == "raw.zst" {
                let decoder = zstd::stream::read::Decoder::new(hashing)
                    .context("starting the zstd decoder")?;
                let mut reader = ZstdSource(decoder);
                write_volume(
                    &mut instance,
                    &target,
                    d.size,
                    Source::Stream {
                        reader: &mut reader,
                        length: Some(d.size),
                    },
                    &options,
                    &mut *progress,
                    verify,
                )
                .with_context(context)?
            } else {
                let spool = spool.as_ref().expect("a spool for qcow2 payloads");
                let path = spool.0.join("payload.qcow2");
                let mut f = std::fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let mut hashing = hashing;
                let n = std::io::copy(&mut hashing, &mut f).with_context(context)?;
                if n != member.size {
                    bail!("not a valid snapport bundle: {} is cut short", d.file);
                }
                drop(f);
                let (mut reader, name) = ctx.file_source(&path)?;
                let mut volume = reader.open_volume(&name, None).with_context(context)?;
                if volume.info.size != d.size {
                    bail!(
                        "{}: a qcow2 of {} bytes where the manifest says {}",
                        d.file,
                        volume.info.size,
                        d.size
                    );
                }
                write_volume(
                    &mut instance,
                    &target,
                    d.size,
                    Source::Volume(&mut volume),
                    &options,
                    &mut *progress,
                    verify,
                )
                .with_context(context)?
            };
            created.push(new.name.clone());
            summaries.push(summary);
        }
        if let Some(extra) = members.next_member()? {
            bail!(
                "not a valid snapport bundle: {} follows the last disk",
                extra.path
            );
        }
        vm::save_new(home, &new_config)
    })();
    if let Err(e) = result {
        let mut left = Vec::new();
        for name in &created {
            if let Err(d) = instance.delete_volume(name) {
                left.push(format!("vd/{name} ({d})"));
            }
        }
        return Err(if created.is_empty() {
            e.context(format!(
                "vm/{new_name} was not created; no disk was imported"
            ))
        } else if left.is_empty() {
            let names: Vec<String> = created.iter().map(|n| format!("vd/{n}")).collect();
            e.context(format!(
                "vm/{new_name} was not created; the disks already imported were deleted: {}",
                names.join(", ")
            ))
        } else {
            e.context(format!(
                "vm/{new_name} was not created; could not delete {}",
                left.join(", ")
            ))
        });
    }
    Ok(BundleImport {
        manifest,
        config: new_config,
        notes,
        disks: summaries,
    })
}
