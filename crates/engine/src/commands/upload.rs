//! `snapport upload`: an image (file, stdin or URL) into a pool as a new disk (`vd/`) or
//! read-only image (`vi/`), verified, and committed only when whole.

use crate::address::Address;
use crate::commands::{human, new_progress, OutputArg};
use crate::source::{self, Expected, HashingReader, Input, InputFormat};
use crate::Engine;
use crate::{bail, Context as _, Result};
use sha2::{Digest, Sha256};
use snapport_core::extent::VolumeSource;
use snapport_core::import::{import, ImportOptions, ImportSummary, Source, VolumeTarget};
use snapport_core::progress::Progress;
use snapport_core::raw_file::RawFile;
use snapport_core::spool::spool;
use snapport_host::{Instance, VolumeKind, WritableVolume};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The image: a file, - for stdin, or an http(s):// URL. With --publish, the new
    /// volume instead.
    source: String,
    /// The new volume: vd/NAME (a writable disk) or vi/NAME (a read-only image).
    target: Option<String>,
    /// Receive the image over HTTPS instead (`snapport push FILE URL`, resumable);
    /// prints the URL, token and certificate fingerprint.
    #[arg(long)]
    publish: bool,
    #[command(flatten)]
    serve: crate::commands::publish::ServeArgs,
    /// The pool to create it in.
    #[arg(short = 'n', long, default_value = crate::config::DEFAULT_POOL)]
    pool: String,
    /// Size of the new volume (e.g. 20G); default: the source's. Needed for a stream
    /// whose size is unknown (raw on stdin, zstd not written by snapport).
    #[arg(long)]
    size: Option<String>,
    /// Input format; default: detected from the content (never from the name).
    #[arg(long, value_enum)]
    format: Option<InputFormat>,
    /// Expected content digest (sha256-64k-4m:...), as `download` prints and writes to
    /// FILE.digest.
    #[arg(long)]
    digest: Option<String>,
    /// Expected SHA-256 of the source's bytes as given (what `sha256sum` prints).
    #[arg(long)]
    sha256: Option<String>,
    /// Do not look for SOURCE.digest and SOURCE.sha256 beside the source.
    #[arg(long)]
    no_sidecars: bool,
    /// The source is a snapport delta (`download --since`): apply it onto this volume
    /// or snapshot, which must hold the delta's base content (checked by digest).
    #[arg(long, value_name = "vds/..|vd/..|vi/..")]
    onto: Option<String>,
    /// For a VM bundle (upload FILE.tar vm/NEW): put this in front of every disk name.
    #[arg(long, default_value = "")]
    name_prefix: String,
    /// For a VM bundle: put this after every disk name.
    #[arg(long, default_value = "")]
    name_suffix: String,
    /// For a VM bundle: replace OLD by NEW in every disk name (repeatable; before the
    /// prefix and suffix). Without any naming flag, the old VM name in a disk name becomes
    /// the new one (or NEW- goes in front).
    #[arg(long, value_name = "OLD=NEW")]
    name_replace: Vec<String>,
    /// Write into the existing disk vd/NAME instead of creating one, for backends that
    /// cannot create volumes (an LVM pool writes into an existing LV). The disk must be
    /// exactly the image's size. Not atomic: if the import fails or a digest does not
    /// match, the disk holds some of the image, and snapport says so.
    #[arg(long, conflicts_with_all = ["onto", "publish"])]
    in_place: bool,
    /// Make the volume durable (fsync) before it appears under its name.
    #[arg(long)]
    fsync: bool,
    /// No progress bar, no summary.
    #[arg(short, long)]
    quiet: bool,
    /// Summary format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputArg::Text)]
    output: OutputArg,
    /// Copy threads (default: one per core).
    #[arg(long, default_value_t = 0, hide = true)]
    workers: usize,
}

/// The kind of volume an address asks to create.
pub fn kind_of(address: &Address) -> Result<VolumeKind> {
    match address {
        Address::Disk(_) => Ok(VolumeKind::Disk),
        Address::Image(_) => Ok(VolumeKind::Image),
        Address::DiskSnapshot { .. } => {
            bail!(
                "{address}: new volumes are vd/NAME or vi/NAME; snapshots are taken, not uploaded"
            )
        }
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

/// Creates the volume, fills it, checks the digests, and only then commits. Any error
/// drops the uncommitted volume, which removes it.
pub fn write_volume(
    pool: &mut Instance,
    target: &Address,
    size: u64,
    source: Source<'_>,
    options: &ImportOptions,
    progress: &mut dyn Progress,
    verify: impl FnOnce(&ImportSummary) -> Result<Vec<String>>,
) -> Result<(ImportSummary, Vec<String>)> {
    let mut volume = pool.create_volume(target.disk(), size, kind_of(target)?, None)?;
    fill(&mut volume, source, options, progress, verify)
}

/// Imports into `volume`, checks the digests, and only then commits.
fn fill(
    volume: &mut WritableVolume<'_>,
    source: Source<'_>,
    options: &ImportOptions,
    progress: &mut dyn Progress,
    verify: impl FnOnce(&ImportSummary) -> Result<Vec<String>>,
) -> Result<(ImportSummary, Vec<String>)> {
    let mut summary = import(source, volume, options, progress)?;
    summary.volume = Some(volume.info.name.clone());
    let verified = verify(&summary)?;
    volume.commit()?;
    Ok((summary, verified))
}

/// Like [`write_volume`], or with `in_place` into the existing disk `target`, which must
/// be `size` bytes: written, checked, committed; a failure after the first write says
/// the disk now holds part of the image (there is no staging to drop).
#[allow(clippy::too_many_arguments)]
pub fn write_into(
    pool: &mut Instance,
    target: &Address,
    size: u64,
    source: Source<'_>,
    options: &ImportOptions,
    progress: &mut dyn Progress,
    verify: impl FnOnce(&ImportSummary) -> Result<Vec<String>>,
    in_place: bool,
) -> Result<(ImportSummary, Vec<String>)> {
    if !in_place {
        return write_volume(pool, target, size, source, options, progress, verify);
    }
    let mut volume = pool.open_volume_for_write(target.disk())?;
    let have = VolumeTarget::size(&volume);
    if have != size {
        bail!("{target} is {have} bytes and the image {size}: --in-place writes into a disk of exactly the image's size; nothing was written");
    }
    fill(&mut volume, source, options, progress, verify).with_context(|| {
        format!("{target} was written in place and now holds part of the image; upload it again")
    })
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
    Ok(verified)
}

pub fn run(args: Args) -> Result<()> {
    if args.publish {
        if args.target.is_some() {
            bail!("--publish receives the image over HTTPS: give only the new volume, as in snapport upload --publish vd/NAME");
        }
        return serve_upload(args);
    }
    let Some(target) = args.target.as_deref() else {
        bail!("give the image and the new volume: snapport upload FILE vd/NAME (or snapport upload --publish vd/NAME)");
    };
    if let Some(vm) = crate::vm::parse_vm(target) {
        if args.in_place {
            bail!("--in-place writes into an existing disk vd/NAME; a VM bundle always makes new disks");
        }
        return upload_vm(&args, &vm?);
    }
    let target = Address::parse(target)?;
    kind_of(&target)?;
    if args.in_place && !matches!(target, Address::Disk(_)) {
        bail!("--in-place writes into an existing disk: give vd/NAME, not {target}");
    }
    if let Some(onto) = &args.onto {
        return upload_delta(&args, &target, &Address::parse(onto)?);
    }
    let expected = source::expected(
        &args.source,
        args.digest.clone(),
        args.sha256.clone(),
        !args.no_sidecars,
    )?;
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let input = source::open(&args.source)?;
    let what = match args.source.as_str() {
        "-" => "stdin",
        s => s,
    };
    let started = Instant::now();
    let (format, summary, verified) = import_input(&args, &ctx, &target, input, &expected, what)?;
    let seconds = started.elapsed().as_secs_f64();
    report(&args, what, &target, format, &summary, &verified, seconds)
}

/// `upload --publish`: waits for a push, imports it as it arrives, answers the pusher
/// with the outcome.
fn serve_upload(args: Args) -> Result<()> {
    use snapport_publish::upload::UploadSlot;
    let target = Address::parse(&args.source)?;
    kind_of(&target)?;
    let name = target.disk().to_string();
    if !snapport_publish::content::valid_name(&name) {
        bail!("{target}: to receive it over HTTP, the name must be letters, digits, '.', '_', '-' or '@'");
    }
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    // Refused now rather than after the whole upload has crossed the network.
    let existing = ctx.pool(&args.pool)?.list_volumes()?;
    if existing.iter().any(|v| v.name == name) {
        bail!(
            "{name} already exists in pool {}; delete it first or choose another name",
            args.pool
        );
    }
    let (slot, reader) = UploadSlot::new(&name);
    let started =
        crate::commands::publish::start(&args.serve, Vec::new(), vec![Arc::clone(&slot)], None)?;
    let url = format!("{}/{name}", started.base);
    let sh = crate::commands::publish::sh;
    let push = format!(
        "snapport push {}FILE {}",
        started.fingerprint_arg(),
        sh(&format!("{url}?token={}", started.token))
    );
    if args.output == OutputArg::Json {
        let doc = serde_json::json!({
            "target": target.to_string(),
            "pool": args.pool,
            "url": url,
            "token": started.token,
            "fingerprint": started.tls.as_ref().map(|t| &t.fingerprint),
            "pinned_pubkey": started.tls.as_ref().map(|t| &t.pinned_pubkey),
            "ttl_seconds": args.serve.ttl.as_secs(),
            "push": push,
        });
        println!("{doc}");
    } else {
        println!("waiting for an upload to {target} at {url}");
        if let Some(t) = &started.tls {
            println!("certificate SHA-256 fingerprint: {}", t.fingerprint);
        }
        println!("token: {}", started.token);
        println!("send it (resumable; raw or raw.zst):\n  {push}");
        println!(
            "stops after {} without access",
            crate::commands::publish::show_duration(args.serve.ttl)
        );
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    let server = started.server;
    let serving = std::thread::spawn(move || server.run());
    let started_at = Instant::now();
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
        let mut expected = source::expected("-", args.digest.clone(), None, false)?;
        expected.sha256 = Some((declared.sha256, "the uploader's Upload-Sha256".into()));
        import_input(&args, &ctx, &target, input, &expected, "the upload")
    })();
    let seconds = started_at.elapsed().as_secs_f64();
    match &result {
        Ok((format, summary, verified)) => slot.finish(Ok(summary_json(
            &args,
            "the upload",
            &target,
            *format,
            summary,
            verified,
            seconds,
        )
        .to_string())),
        Err(e) => slot.finish(Err(format!("{e:#}"))),
    }
    let stopped = serving
        .join()
        .map_err(|_| crate::format_err!("the upload server failed"))?;
    let (format, summary, verified) = result?;
    stopped?;
    report(
        &args,
        "the upload",
        &target,
        format,
        &summary,
        &verified,
        seconds,
    )
}

/// Detects the input's format and imports it into a new volume, verified.
fn import_input(
    args: &Args,
    ctx: &Engine,
    target: &Address,
    input: Input,
    expected: &Expected,
    what: &str,
) -> Result<(InputFormat, ImportSummary, Vec<String>)> {
    let given = args.size.as_deref().map(source::parse_size).transpose()?;
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
    let format = match args.format {
        // The plugin decides raw or qcow2 by content: a forced qcow2 must be one.
        Some(InputFormat::Qcow2) if !head.starts_with(snapport_core::detect::QCOW2_MAGIC) => {
            bail!("{what} is not qcow2 (no QFI\\xfb magic at its start)")
        }
        Some(f) => f,
        None => source::detect(&head, what)?,
    };
    let mut pool = ctx.pool_with(&args.pool, args.fsync)?;
    let mut progress = new_progress(args.quiet);
    let mut options = ImportOptions {
        content_digest: expected.content.is_some(),
        content_sha256: false,
        workers: args.workers,
    };
    let context = || format!("uploading {what} to {target} in pool {}", args.pool);
    let (summary, verified) = match (format, input) {
        (InputFormat::Qcow2, Input::File(path)) => {
            let (mut reader, name) = ctx.file_source(&path)?;
            let mut volume = reader.open_volume(&name, None).with_context(|| format!("reading {what}"))?;
            let size = target_size(given, Some(volume.info.size), what)?;
            let sha = expected.sha256.as_ref().map(|_| source::sha256_file(&path)).transpose()?;
            write_into(
                &mut pool,
                target,
                size,
                Source::Volume(&mut volume),
                &options,
                progress.as_mut(),
                |s| check(expected, s.content_digest.as_deref(), sha.as_deref()),
                args.in_place,
            )
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
                progress.as_mut(),
                |s| check(expected, s.content_digest.as_deref(), s.content_sha256.as_deref()),
                args.in_place,
            )
        }
        (InputFormat::Raw, input @ Input::Stream { .. }) => {
            let Input::Stream { length, .. } = &input else { unreachable!() };
            let length = *length;
            options.content_sha256 = expected.sha256.is_some();
            let mut reader = input.into_reader()?;
            let stream = Stream { reader: &mut reader, length, given, what };
            write_stream(&mut pool, ctx, args, target, stream, &options, progress.as_mut(), |s| {
                check(expected, s.content_digest.as_deref(), s.content_sha256.as_deref())
            })
        }
        (InputFormat::RawZst, input) => {
            if compressed_qcow2(&head) {
                bail!("{what} is a zstd-compressed qcow2 image; decompress it first (zstd -d), then upload the qcow2 file");
            }
            let recorded = snapport_core::zst::read_size_frame(&head);
            let hash = Arc::new(Mutex::new(Sha256::new()));
            let hashing = HashingReader { inner: input.into_reader()?, hash: Arc::clone(&hash) };
            let decoder = zstd::stream::read::Decoder::new(hashing).context("starting the zstd decoder")?;
            let mut reader = ZstdSource(decoder);
            let stream = Stream { reader: &mut reader, length: recorded, given, what };
            write_stream(&mut pool, ctx, args, target, stream, &options, progress.as_mut(), |s| {
                let sha = expected.sha256.as_ref().map(|_| hex::encode(hash.lock().unwrap().clone().finalize()));
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
    args: &Args,
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
            args.in_place,
        );
    }
    if args.in_place {
        bail!("the size of {what} is unknown until all of it is read, and --in-place needs it first: give --size");
    }
    let config = ctx.config.pool(&args.pool)?;
    let folder = match config.folders.first() {
        Some(f) if config.writable && config.grpc_endpoint.is_none() => f,
        _ => bail!(
            "the size of {what} is unknown until all of it is read, and pool {} must know a new volume's size before it is made: give --size",
            args.pool
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

/// The decompressed stream. zstd's own errors are named as what they are, a damaged
/// stream; at its end, whatever follows the last frame is read too, so the SHA-256 of the
/// compressed bytes covers all of them.
pub(crate) struct ZstdSource<R: std::io::BufRead>(
    pub(crate) zstd::stream::read::Decoder<'static, R>,
);

impl<R: std::io::BufRead> std::io::Read for ZstdSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf) {
            Ok(0) if !buf.is_empty() => {
                std::io::copy(self.0.get_mut(), &mut std::io::sink())?;
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Other | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                Err(std::io::Error::new(
                    e.kind(),
                    format!("the zstd stream is damaged or cut short ({e})"),
                ))
            }
            Err(e) => Err(e),
        }
    }
}

/// An upload's summary as JSON: what `-o json` prints, and what `upload --publish`
/// answers the pusher with.
fn summary_json(
    args: &Args,
    what: &str,
    target: &Address,
    format: InputFormat,
    summary: &ImportSummary,
    verified: &[String],
    seconds: f64,
) -> serde_json::Value {
    let made = made_address(target, summary);
    serde_json::json!({
        "source": what,
        "target": made.to_string(),
        "requested": target.to_string(),
        "id": made.disk(),
        "pool": args.pool,
        "format": format.name(),
        "source_size": summary.source_size,
        "written_bytes": summary.written_bytes,
        "content_digest": summary.content_digest,
        "verified": verified,
        "seconds": seconds,
    })
}

/// The volume an upload made: the target, under the name the pool gave it (a CSI
/// driver picks the volume ID).
fn made_address(target: &Address, summary: &ImportSummary) -> Address {
    match (target, &summary.volume) {
        (Address::Disk(_), Some(v)) => Address::Disk(v.clone()),
        (Address::Image(_), Some(v)) => Address::Image(v.clone()),
        _ => target.clone(),
    }
}

fn report(
    args: &Args,
    what: &str,
    target: &Address,
    format: InputFormat,
    summary: &ImportSummary,
    verified: &[String],
    seconds: f64,
) -> Result<()> {
    match args.output {
        OutputArg::Json => {
            let doc = summary_json(args, what, target, format, summary, verified, seconds);
            println!("{doc}");
        }
        OutputArg::Text if !args.quiet => {
            let made = made_address(target, summary);
            if made != *target {
                eprintln!("pool {} made {target} as {made}", args.pool);
            }
            eprintln!(
                "uploaded {} ({}, {}, {} written) to {made} in pool {} in {seconds:.2} s",
                what,
                format.name(),
                human(summary.source_size),
                human(summary.written_bytes),
                args.pool
            );
            if verified.is_empty() {
                eprintln!("not verified: no digest came with the source (--digest, --sha256 or a .digest/.sha256 file beside it)");
            } else {
                eprintln!("verified: {}", verified.join(", "));
            }
        }
        OutputArg::Text => {}
    }
    Ok(())
}

/// `upload DELTA vd/NAME --onto ADDRESS`.
fn upload_delta(args: &Args, target: &Address, onto: &Address) -> Result<()> {
    if args.source == "-" || args.source.contains("://") {
        bail!("--onto applies a delta file; save the delta to a file first");
    }
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let started = Instant::now();
    let (delta, summary) = crate::incremental::apply_delta(
        &ctx,
        &args.pool,
        std::path::Path::new(&args.source),
        target,
        onto,
        args.fsync,
        args.quiet,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let made = made_address(target, &summary);
    let target = &made;
    match args.output {
        OutputArg::Json => println!(
            "{}",
            serde_json::json!({
                "target": target.to_string(),
                "id": target.disk(),
                "pool": args.pool,
                "onto": onto.to_string(),
                "base": delta.manifest.base.name,
                "from": delta.manifest.target.name,
                "size": delta.manifest.target.size,
                "records": delta.footer.records,
                "written_bytes": summary.written_bytes,
                "content_digest": summary.content_digest,
                "seconds": seconds,
            })
        ),
        OutputArg::Text if !args.quiet => eprintln!(
            "created {target} in pool {}: {onto} with the delta to {} applied ({} records), content digest {} verified, in {seconds:.2} s",
            args.pool,
            delta.manifest.target.name,
            delta.footer.records,
            summary.content_digest.as_deref().unwrap_or("-"),
        ),
        OutputArg::Text => {}
    }
    Ok(())
}

/// `upload FILE.tar vm/NEW`: a bundle as a new VM, its disks cloned under new names.
fn upload_vm(args: &Args, name: &str) -> Result<()> {
    if args.onto.is_some() || args.size.is_some() || args.format.is_some() {
        bail!("vm/{name}: a bundle brings its own disks; --onto, --size and --format apply to single disks");
    }
    let naming = crate::vm::Naming::new(&args.name_prefix, &args.name_suffix, &args.name_replace)?;
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let started = Instant::now();
    let done = crate::bundle::import_vm(
        &ctx,
        &args.source,
        name,
        &args.pool,
        &naming,
        args.fsync,
        args.quiet,
    )
    .with_context(|| format!("uploading {} as vm/{name}", args.source))?;
    let seconds = started.elapsed().as_secs_f64();
    match args.output {
        OutputArg::Json => println!(
            "{}",
            serde_json::json!({
                "target": format!("vm/{name}"),
                "pool": args.pool,
                "from_vm": done.manifest.vm,
                "disks": done.config.disks.iter().zip(&done.disks).map(|(d, s)| serde_json::json!({
                    "name": format!("vd/{}", d.name),
                    "written_bytes": s.written_bytes,
                    "content_digest": s.content_digest,
                })).collect::<Vec<_>>(),
                "changes": done.notes,
                "seconds": seconds,
            })
        ),
        OutputArg::Text if !args.quiet => {
            eprintln!(
                "created vm/{name} from a bundle of vm/{} in {seconds:.2} s ({} disks, each verified by content digest)",
                done.manifest.vm,
                done.disks.len()
            );
            for n in &done.notes {
                eprintln!("  {n}");
            }
        }
        OutputArg::Text => {}
    }
    Ok(())
}
