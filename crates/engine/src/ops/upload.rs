//! Upload: an image (file, stdin or URL) into a pool as a new disk (`vd/`) or read-only
//! image (`vi/`), verified, and committed only when whole; a snapport delta applied onto
//! a volume holding its base; a VM bundle as a new VM; or an image received over HTTPS
//! from `snapport push`.

use crate::address::Address;
use crate::source::{self, Expected, HashingReader, Input, InputFormat};
use crate::vm::Naming;
use crate::volume::{kind_of, made_address, write_into, write_volume, ZstdSource};
use crate::Engine;
use crate::{bail, Context as _, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use snapport_core::extent::VolumeSource;
use snapport_core::import::{ImportOptions, ImportSummary, Source};
use snapport_core::progress::Progress;
use snapport_core::raw_file::RawFile;
use snapport_core::spool::spool;
use snapport_host::Instance;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How the new volume is written, whatever the image comes from.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// The pool to create it in.
    pub pool: String,
    /// Size of the new volume; default: the source's. Needed for a stream whose size is
    /// unknown (raw on stdin, zstd not written by snapport) in pools that must know it.
    pub size: Option<u64>,
    /// The input format; `None` detects it from the content (never from the name).
    pub format: Option<InputFormat>,
    /// Write into the existing disk instead of creating one (not atomic; the disk must
    /// be exactly the image's size).
    pub in_place: bool,
    /// Make the volume durable before it appears under its name.
    pub fsync: bool,
    /// Copy threads (0: one per core).
    pub workers: usize,
}

/// `upload SOURCE vd/NAME|vi/NAME`.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    /// The image: a file, `-` for stdin, or an http(s):// URL.
    pub source: String,
    /// The new volume (or with `in_place`, the existing disk).
    pub target: Address,
    /// Expected content digest (`sha256-64k-4m:...`).
    pub digest: Option<String>,
    /// Expected SHA-256 of the source's bytes as given.
    pub sha256: Option<String>,
    /// Look for SOURCE.digest and SOURCE.sha256 beside the source (and, for an
    /// encrypted source, SOURCE.digest.age).
    pub sidecars: bool,
    /// The key file that decrypts an age-encrypted source.
    pub identity: Option<PathBuf>,
    /// How the volume is written.
    pub write: WriteOptions,
}

impl UploadRequest {
    /// The import `snapport upload SOURCE TARGET` makes: into the default pool, the
    /// format detected, verified by the sidecars a download wrote when they are there.
    pub fn new(source: impl Into<String>, target: Address) -> UploadRequest {
        UploadRequest {
            source: source.into(),
            target,
            digest: None,
            sha256: None,
            sidecars: true,
            identity: None,
            write: WriteOptions {
                pool: crate::config::DEFAULT_POOL.to_string(),
                ..WriteOptions::default()
            },
        }
    }
}

/// What an upload made: the JSON document `upload -o json` prints and `upload --publish`
/// answers the pusher with. (Fields in alphabetical order, as the document has them.)
#[derive(Debug, Clone, Serialize)]
pub struct UploadReport {
    /// The content digest computed while importing, if one was.
    pub content_digest: Option<String>,
    /// The source's format.
    pub format: InputFormat,
    /// The new volume's name in the pool (the backend's, e.g. a CSI volume ID).
    pub id: String,
    /// The pool.
    pub pool: String,
    /// The address asked for.
    pub requested: String,
    /// Wall-clock seconds of the import.
    pub seconds: f64,
    /// The source as named for people ("stdin", "the upload", or the path/URL).
    pub source: String,
    /// Logical bytes of the source.
    pub source_size: u64,
    /// The volume made (`requested` under the pool's name for it).
    pub target: String,
    /// What was verified ("content digest from FILE.digest", ...); empty: nothing.
    pub verified: Vec<String>,
    /// Bytes written to the volume (holes skipped).
    pub written_bytes: u64,
}

/// Imports an image into a new volume (or in place), verified against the digests given
/// or found beside it, committed only when whole.
pub fn upload(
    engine: &Engine,
    req: &UploadRequest,
    progress: &mut dyn Progress,
) -> Result<UploadReport> {
    let target = &req.target;
    kind_of(target)?;
    if req.write.in_place && !matches!(target, Address::Disk(_)) {
        bail!("--in-place writes into an existing disk: give vd/NAME, not {target}");
    }
    let identities = req
        .identity
        .as_deref()
        .map(snapport_core::encryption::Identities::read)
        .transpose()?;
    let mut expected = source::expected(
        &req.source,
        req.digest.clone(),
        req.sha256.clone(),
        req.sidecars,
    )?;
    let mut input = source::open(&req.source)?;
    // A decrypted qcow2, stored to be read at random; removed when the import is done.
    let _copy: Option<source::LocalCopy>;
    let what = match req.source.as_str() {
        "-" => "stdin",
        s => s,
    };
    if snapport_core::encryption::is_age(&input.head()?) {
        let Some(identities) = &identities else {
            bail!("{what} is encrypted (an age file): give --identity KEYFILE, the age or ssh key it was encrypted to; nothing was imported");
        };
        let (plain, copy) = decrypted(input, identities, &mut expected, req, what)?;
        input = plain;
        _copy = copy;
    }
    let started = Instant::now();
    let (format, summary, verified) =
        import_input(&req.write, engine, target, input, &expected, what, progress)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(report(
        &req.write.pool,
        what,
        target,
        format,
        &summary,
        verified,
        seconds,
    ))
}

/// An age-encrypted source as the stream of its plaintext, decrypted as it is read.
/// The expected content digest comes from --digest or SOURCE.digest.age (decrypted);
/// an expected SHA-256 (--sha256, SOURCE.sha256) is of the encrypted bytes as given.
fn decrypted(
    input: Input,
    identities: &snapport_core::encryption::Identities,
    expected: &mut Expected,
    req: &UploadRequest,
    what: &str,
) -> Result<(Input, Option<source::LocalCopy>)> {
    if expected.content.is_none() && req.sidecars {
        expected.content = source::sealed_digest(&req.source, identities)?;
    }
    let cipher = expected
        .sha256
        .take()
        .map(|(want, from)| source::CipherCheck {
            want,
            from,
            hash: Arc::new(Mutex::new(Sha256::new())),
        });
    let reader = input.into_reader()?;
    let reader: Box<dyn std::io::Read + Send> = match &cipher {
        Some(c) => Box::new(HashingReader {
            inner: reader,
            hash: Arc::clone(&c.hash),
        }),
        None => reader,
    };
    expected.cipher = cipher;
    let mut plain = identities.decrypt(std::io::BufReader::with_capacity(1 << 20, reader), what)?;
    let head = source::read_head(&mut plain).with_context(|| format!("decrypting {what}"))?;
    if head.starts_with(snapport_core::detect::QCOW2_MAGIC) {
        // qcow2 is read at random: its plaintext is stored once in a private folder
        // (all of the ciphertext is read, and hashed, on the way).
        let copy = source::LocalCopy::new(
            std::io::Read::chain(std::io::Cursor::new(head), plain),
            what,
        )?;
        return Ok((Input::File(copy.path().to_path_buf()), Some(copy)));
    }
    Ok((
        Input::Stream {
            reader: plain,
            head,
            length: None,
            endless: false,
        },
        None,
    ))
}

/// A delta `source` as a file to read at random: the file itself, or a private copy of
/// an object (`s3://`), and of the plaintext of an age file (decrypted with `identity`,
/// else refused) — one copy, decrypted as it is fetched.
fn delta_file(
    source: &str,
    identity: Option<&std::path::Path>,
) -> Result<(PathBuf, Option<source::LocalCopy>)> {
    let is_object = crate::s3::is_s3(source);
    let input = source::open(source)?;
    if !is_object && !matches!(input, Input::File(_)) {
        bail!("--onto applies a delta file or object; save the delta to a file first");
    }
    let encrypted = snapport_core::encryption::is_age(&input.head()?);
    if !encrypted && !is_object {
        return Ok((PathBuf::from(source), None));
    }
    let reader = input.into_reader()?;
    let copy = if encrypted {
        let Some(identity) = identity else {
            bail!("{source} is encrypted (an age file): give --identity KEYFILE, the age or ssh key it was encrypted to; nothing was imported");
        };
        let identities = snapport_core::encryption::Identities::read(identity)?;
        let plain =
            identities.decrypt(std::io::BufReader::with_capacity(1 << 20, reader), source)?;
        source::LocalCopy::new(plain, source)?
    } else {
        source::LocalCopy::new(reader, source)?
    };
    Ok((copy.path().to_path_buf(), Some(copy)))
}

/// `upload DELTA vd/NAME --onto ADDRESS`.
#[derive(Debug, Clone)]
pub struct DeltaRequest {
    /// The delta (`download --since` wrote it): a file or `s3://BUCKET/KEY`.
    pub source: String,
    /// The new volume.
    pub target: Address,
    /// What holds the delta's base content (checked by digest before anything is
    /// written).
    pub onto: Address,
    /// The pool of `onto` and of the new volume.
    pub pool: String,
    /// Make the volume durable before it appears under its name.
    pub fsync: bool,
    /// The key an encrypted delta is decrypted with.
    pub identity: Option<PathBuf>,
}

/// What applying a delta made: the JSON document of `upload --onto -o json`.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaReport {
    /// The delta's base snapshot (its name as the delta records it).
    pub base: String,
    /// The new volume's content digest (the delta's target's).
    pub content_digest: Option<String>,
    /// The snapshot the delta leads to.
    pub from: String,
    /// The new volume's name in the pool.
    pub id: String,
    /// What it was applied onto.
    pub onto: String,
    /// The pool.
    pub pool: String,
    /// Records in the delta.
    pub records: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The new volume's size.
    pub size: u64,
    /// The volume made.
    pub target: String,
    /// Bytes written.
    pub written_bytes: u64,
}

/// Applies a delta onto `onto` as a new volume; nothing is created unless `onto` holds
/// the base content and the result has the delta's target digest.
pub fn upload_delta(
    engine: &Engine,
    req: &DeltaRequest,
    progress: &mut dyn Progress,
) -> Result<DeltaReport> {
    kind_of(&req.target)?;
    let started = Instant::now();
    // A delta is read at random: an object or an encrypted one is copied first.
    let (file, _copy) = delta_file(&req.source, req.identity.as_deref())?;
    let (delta, summary) = crate::incremental::apply_delta(
        engine,
        &req.pool,
        &file,
        &req.target,
        &req.onto,
        req.fsync,
        progress,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let made = made_address(&req.target, summary.volume.as_deref());
    Ok(DeltaReport {
        base: delta.manifest.base.name.clone(),
        content_digest: summary.content_digest,
        from: delta.manifest.target.name.clone(),
        id: made.disk().to_string(),
        onto: req.onto.to_string(),
        pool: req.pool.clone(),
        records: delta.footer.records,
        seconds,
        size: delta.manifest.target.size,
        target: made.to_string(),
        written_bytes: summary.written_bytes,
    })
}

/// `upload FILE.tar vm/NEW`: a bundle as a new VM, its disks under new names.
#[derive(Debug, Clone)]
pub struct VmRequest {
    /// The bundle: a file, `-` or a URL.
    pub source: String,
    /// The new VM's name (without `vm/`).
    pub name: String,
    /// The pool for every disk.
    pub pool: String,
    /// How disk names change.
    pub naming: Naming,
    /// Make every disk durable before it appears under its name.
    pub fsync: bool,
    /// The key an encrypted bundle is decrypted with.
    pub identity: Option<PathBuf>,
}

/// One disk a bundle import made.
#[derive(Debug, Clone, Serialize)]
pub struct VmDisk {
    /// Its verified content digest.
    pub content_digest: Option<String>,
    /// `vd/NAME`.
    pub name: String,
    /// Bytes written.
    pub written_bytes: u64,
}

/// What a bundle import made: the JSON document of `upload FILE.tar vm/NEW -o json`.
#[derive(Debug, Clone, Serialize)]
pub struct VmReport {
    /// What changed from the bundle's VM, a line each.
    pub changes: Vec<String>,
    /// The new disks, in the VM's order.
    pub disks: Vec<VmDisk>,
    /// The VM the bundle was made from.
    pub from_vm: String,
    /// The pool.
    pub pool: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// `vm/NEW`.
    pub target: String,
}

/// Imports a VM bundle as a new VM: all its disks or nothing.
pub fn upload_vm(
    engine: &Engine,
    req: &VmRequest,
    progress: &mut dyn Progress,
) -> Result<VmReport> {
    let name = &req.name;
    let started = Instant::now();
    let identities = req
        .identity
        .as_deref()
        .map(snapport_core::encryption::Identities::read)
        .transpose()?;
    let done = crate::bundle::import_vm(
        engine,
        (&req.source, identities.as_ref()),
        name,
        &req.pool,
        &req.naming,
        req.fsync,
        progress,
    )
    .with_context(|| format!("uploading {} as vm/{name}", req.source))?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(VmReport {
        changes: done.notes,
        disks: done
            .config
            .disks
            .iter()
            .zip(&done.disks)
            .map(|(d, s)| VmDisk {
                content_digest: s.content_digest.clone(),
                name: format!("vd/{}", d.name),
                written_bytes: s.written_bytes,
            })
            .collect(),
        from_vm: done.manifest.vm,
        pool: req.pool.clone(),
        seconds,
        target: format!("vm/{name}"),
    })
}

/// `upload --publish vd/NAME`: receive the image over HTTPS from `snapport push`.
pub struct ReceiveRequest {
    /// The new volume.
    pub target: Address,
    /// Expected content digest, besides the pusher's SHA-256.
    pub digest: Option<String>,
    /// How the publish server listens and protects itself.
    pub serve: crate::serve::ServeOptions,
    /// How the volume is written (`in_place` is not used).
    pub write: WriteOptions,
}

/// Where to push: the JSON document `upload --publish -o json` prints first.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiveInfo {
    /// SHA-256 fingerprint of the server's certificate (none over plain HTTP).
    pub fingerprint: Option<String>,
    /// curl's `--pinnedpubkey` for the certificate.
    pub pinned_pubkey: Option<String>,
    /// The pool.
    pub pool: String,
    /// The command that sends a file (`FILE` to replace).
    pub push: String,
    /// The new volume.
    pub target: String,
    /// The access token.
    pub token: String,
    /// The server stops after this long without access.
    pub ttl_seconds: u64,
    /// Where to push.
    pub url: String,
}

/// A receive server started and not yet serving: tell someone [`Receiving::info`], then
/// [`Receiving::finish`].
pub struct Receiving {
    /// Where and how to push.
    pub info: ReceiveInfo,
    slot: Arc<snapport_publish::upload::UploadSlot>,
    reader: snapport_publish::upload::UploadReader,
    server: snapport_publish::server::Server,
    target: Address,
    digest: Option<String>,
    write: WriteOptions,
}

/// Starts the server that receives an image as the new volume; refused at once when the
/// name is taken or cannot travel in a URL.
pub fn receive(engine: &Engine, req: ReceiveRequest) -> Result<Receiving> {
    use snapport_publish::upload::UploadSlot;
    let target = req.target;
    kind_of(&target)?;
    let name = target.disk().to_string();
    if !snapport_publish::content::valid_name(&name) {
        bail!("{target}: to receive it over HTTP, the name must be letters, digits, '.', '_', '-' or '@'");
    }
    let pool = &req.write.pool;
    // Refused now rather than after the whole upload has crossed the network.
    let existing = engine.pool(pool)?.list_volumes()?;
    if existing.iter().any(|v| v.name == name) {
        bail!("{name} already exists in pool {pool}; delete it first or choose another name");
    }
    let (slot, reader) = UploadSlot::new(&name);
    let started = crate::serve::start(&req.serve, Vec::new(), vec![Arc::clone(&slot)], None)?;
    let url = format!("{}/{name}", started.base);
    let push = format!(
        "snapport push {}FILE {}",
        started.fingerprint_arg(),
        crate::serve::sh(&format!("{url}?token={}", started.token))
    );
    let info = ReceiveInfo {
        fingerprint: started.tls.as_ref().map(|t| t.fingerprint.clone()),
        pinned_pubkey: started.tls.as_ref().map(|t| t.pinned_pubkey.clone()),
        pool: pool.clone(),
        push,
        target: target.to_string(),
        token: started.token.clone(),
        ttl_seconds: req.serve.ttl.as_secs(),
        url,
    };
    Ok(Receiving {
        info,
        slot,
        reader,
        server: started.server,
        target,
        digest: req.digest,
        write: req.write,
    })
}

impl Receiving {
    /// Serves until one push arrives (or the server stops), imports it as it arrives,
    /// and answers the pusher with the outcome.
    pub fn finish(self, engine: &Engine, progress: &mut dyn Progress) -> Result<UploadReport> {
        let Receiving {
            slot,
            reader,
            server,
            target,
            digest,
            write,
            ..
        } = self;
        let serving = std::thread::spawn(move || server.run());
        let started_at = Instant::now();
        let what = "the upload";
        let result = (|| {
            let Some(declared) = reader.wait_declared() else {
                bail!("no upload came before the server stopped; nothing was imported");
            };
            let mut stream: Box<dyn std::io::Read + Send> = Box::new(reader);
            let head = source::read_head(&mut stream).context("receiving the upload")?;
            let input = Input::Stream {
                reader: stream,
                head,
                length: Some(declared.length),
                endless: false,
            };
            let mut expected = source::expected("-", digest, None, false)?;
            expected.sha256 = Some((declared.sha256, "the uploader's Upload-Sha256".into()));
            import_input(&write, engine, &target, input, &expected, what, progress)
        })();
        let seconds = started_at.elapsed().as_secs_f64();
        let result = result.map(|(format, summary, verified)| {
            report(
                &write.pool,
                what,
                &target,
                format,
                &summary,
                verified,
                seconds,
            )
        });
        match &result {
            Ok(r) => slot.finish(Ok(serde_json::to_value(r)?.to_string())),
            Err(e) => slot.finish(Err(format!("{e:#}"))),
        }
        let stopped = serving
            .join()
            .map_err(|_| crate::format_err!("the upload server failed"))?;
        let report = result?;
        stopped?;
        Ok(report)
    }
}

/// The report of an import of `what` into `target`.
fn report(
    pool: &str,
    what: &str,
    target: &Address,
    format: InputFormat,
    summary: &ImportSummary,
    verified: Vec<String>,
    seconds: f64,
) -> UploadReport {
    let made = made_address(target, summary.volume.as_deref());
    UploadReport {
        content_digest: summary.content_digest.clone(),
        format,
        id: made.disk().to_string(),
        pool: pool.to_string(),
        requested: target.to_string(),
        seconds,
        source: what.to_string(),
        source_size: summary.source_size,
        target: made.to_string(),
        verified,
        written_bytes: summary.written_bytes,
    }
}

/// The new volume's size: the one given, or the source's; never smaller than the source.
fn target_size(given: Option<u64>, source: Option<u64>, what: &str) -> Result<u64> {
    match (given, source) {
        (Some(g), Some(s)) if g < s => {
            bail!("{what} holds {s} bytes, more than --size {g}; give a larger --size")
        }
        (Some(g), _) => Ok(g),
        (None, Some(s)) => Ok(s),
        (None, None) => {
            bail!("the size of {what} is unknown until all of it is read; give --size")
        }
    }
}

/// Compares what was computed with what was promised; returns what was verified.
fn check(expected: &Expected, content: Option<&str>, sha256: Option<&str>) -> Result<Vec<String>> {
    let mut verified = Vec::new();
    if let Some((want, from)) = &expected.content {
        let got = content.unwrap_or("(not computed)");
        if got != want {
            bail!("content digest mismatch: {from} says {want}, the source's content is {got}; nothing was imported");
        }
        verified.push(format!("content digest from {from}"));
    }
    if let Some((want, from)) = &expected.sha256 {
        let got = sha256.unwrap_or("(not computed)");
        if got != want {
            bail!("SHA-256 mismatch: {from} says {want}, the source's bytes hash to {got}; nothing was imported");
        }
        verified.push(format!("sha256 from {from}"));
    }
    if let Some(c) = &expected.cipher {
        let got = hex::encode(c.hash.lock().unwrap().clone().finalize());
        if got != c.want {
            bail!("SHA-256 mismatch: {} says {}, the encrypted source hashes to {got}; nothing was imported", c.from, c.want);
        }
        verified.push(format!("sha256 of the encrypted source from {}", c.from));
    }
    Ok(verified)
}

/// Detects the input's format and imports it into a new volume, verified.
fn import_input(
    opts: &WriteOptions,
    ctx: &Engine,
    target: &Address,
    input: Input,
    expected: &Expected,
    what: &str,
    progress: &mut dyn Progress,
) -> Result<(InputFormat, ImportSummary, Vec<String>)> {
    let given = opts.size;
    if let Input::Stream {
        endless: true,
        length: None,
        ..
    } = &input
    {
        if given.is_none() {
            bail!("{what} is a character device, which may never end: give --size (the bytes to take from it); nothing was imported");
        }
    }
    let head = input.head()?;
    let format = match opts.format {
        // The plugin decides raw or qcow2 by content: a forced qcow2 must be one.
        Some(InputFormat::Qcow2) if !head.starts_with(snapport_core::detect::QCOW2_MAGIC) => {
            bail!("{what} is not qcow2 (no QFI\\xfb magic at its start)")
        }
        Some(f) => f,
        None => source::detect(&head, what)?,
    };
    let mut pool = ctx.pool_with(&opts.pool, opts.fsync)?;
    let mut options = ImportOptions {
        content_digest: expected.content.is_some(),
        content_sha256: false,
        workers: opts.workers,
    };
    let context = || format!("uploading {what} to {target} in pool {}", opts.pool);
    let (summary, verified) = match (format, input) {
        (InputFormat::Qcow2, Input::File(path)) => {
            let (mut reader, name) = ctx.file_source(&path)?;
            let mut volume = reader
                .open_volume(&name, None)
                .with_context(|| format!("reading {what}"))?;
            let size = target_size(given, Some(volume.info.size), what)?;
            let sha = expected
                .sha256
                .as_ref()
                .map(|_| source::sha256_file(&path))
                .transpose()?;
            write_into(
                &mut pool,
                target,
                size,
                Source::Volume(&mut volume),
                &options,
                progress,
                |s| check(expected, s.content_digest.as_deref(), sha.as_deref()),
                opts.in_place,
            )
        }
        (InputFormat::Qcow2, input @ Input::Stream { .. }) if crate::s3::is_s3(what) => {
            // An object has a size and is read again only at a price: it is stored once
            // in a private folder and read from there as a file.
            let copy = source::LocalCopy::new(input.into_reader()?, what)?;
            return import_input(
                opts,
                ctx,
                target,
                Input::File(copy.path().to_path_buf()),
                expected,
                what,
                progress,
            );
        }
        (InputFormat::Qcow2, Input::Stream { .. }) => bail!(
            "{what} is qcow2, which needs random access: upload it from a file, or send raw or raw.zst (snapport download --format raw.zst)"
        ),
        (InputFormat::Raw, Input::File(path)) => {
            let mut file = RawFile::open(&path)?;
            let size = target_size(given, Some(VolumeSource::size(&file)), what)?;
            options.content_sha256 = expected.sha256.is_some();
            write_into(
                &mut pool,
                target,
                size,
                Source::Volume(&mut file),
                &options,
                progress,
                |s| {
                    check(
                        expected,
                        s.content_digest.as_deref(),
                        s.content_sha256.as_deref(),
                    )
                },
                opts.in_place,
            )
        }
        (InputFormat::Raw, input @ Input::Stream { .. }) => {
            let Input::Stream { length, .. } = &input else {
                unreachable!()
            };
            let length = *length;
            options.content_sha256 = expected.sha256.is_some();
            let mut reader = input.into_reader()?;
            let stream = Stream {
                reader: &mut reader,
                length,
                given,
                what,
            };
            write_stream(&mut pool, ctx, opts, target, stream, &options, progress, |s| {
                check(
                    expected,
                    s.content_digest.as_deref(),
                    s.content_sha256.as_deref(),
                )
            })
        }
        (InputFormat::RawZst, input) => {
            if compressed_qcow2(&head) {
                bail!("{what} is a zstd-compressed qcow2 image; decompress it first (zstd -d), then upload the qcow2 file");
            }
            let recorded = snapport_core::zst::read_size_frame(&head);
            let hash = Arc::new(Mutex::new(Sha256::new()));
            let hashing = HashingReader {
                inner: input.into_reader()?,
                hash: Arc::clone(&hash),
            };
            let decoder =
                zstd::stream::read::Decoder::new(hashing).context("starting the zstd decoder")?;
            let mut reader = ZstdSource(decoder);
            let stream = Stream {
                reader: &mut reader,
                length: recorded,
                given,
                what,
            };
            write_stream(&mut pool, ctx, opts, target, stream, &options, progress, |s| {
                let sha = expected
                    .sha256
                    .as_ref()
                    .map(|_| hex::encode(hash.lock().unwrap().clone().finalize()));
                check(expected, s.content_digest.as_deref(), sha.as_deref())
            })
        }
    }
    .with_context(context)?;
    Ok((format, summary, verified))
}

/// A source read in order.
struct Stream<'a> {
    reader: &'a mut (dyn std::io::Read + Send),
    /// What the source declared (Content-Length, snapport's zstd size frame), if anything.
    length: Option<u64>,
    /// --size.
    given: Option<u64>,
    what: &'a str,
}

/// Imports a stream: straight into the new volume when its size is known (given or
/// declared); otherwise first into an unnamed file in the pool's folder, so that the
/// volume is made with the size that arrived. Only a pool whose volumes are files in
/// its folders (writable, no CSI endpoint) can do that: others must know a volume's size
/// before they make it (LVM, CSI), and then --size is asked for.
#[allow(clippy::too_many_arguments)]
fn write_stream(
    pool: &mut Instance,
    ctx: &Engine,
    opts: &WriteOptions,
    target: &Address,
    stream: Stream<'_>,
    options: &ImportOptions,
    progress: &mut dyn Progress,
    verify: impl FnOnce(&ImportSummary) -> Result<Vec<String>>,
) -> Result<(ImportSummary, Vec<String>)> {
    let Stream {
        reader,
        length,
        given,
        what,
    } = stream;
    if given.is_some() || length.is_some() {
        let size = target_size(given, length, what)?;
        let source = Source::Stream { reader, length };
        return write_into(
            pool,
            target,
            size,
            source,
            options,
            progress,
            verify,
            opts.in_place,
        );
    }
    if opts.in_place {
        bail!("the size of {what} is unknown until all of it is read, and --in-place needs it first: give --size");
    }
    let config = ctx.config.pool(&opts.pool)?;
    let folder = match config.folders.first() {
        Some(f) if config.writable && config.grpc_endpoint.is_none() => f,
        _ => bail!(
            "the size of {what} is unknown until all of it is read, and pool {} must know a new volume's size before it is made: give --size",
            opts.pool
        ),
    };
    let mut file = spool(reader, folder, progress)?;
    let size = VolumeSource::size(&file);
    write_volume(
        pool,
        target,
        size,
        Source::Volume(&mut file),
        options,
        progress,
        verify,
    )
}

/// Whether the zstd stream starting with `head` decompresses to a qcow2 image (which
/// would otherwise be imported as raw bytes).
fn compressed_qcow2(head: &[u8]) -> bool {
    let Ok(mut d) = zstd::stream::read::Decoder::new(head) else {
        return false;
    };
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut d, &mut magic).is_ok() && &magic == b"QFI\xfb"
}
