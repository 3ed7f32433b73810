//! `snapport upload`: an image (file, stdin or URL) into a pool as a new disk or image; a
//! delta onto its base (`--onto`); a VM bundle as a new VM; or received over HTTPS.

use crate::render::{engine, human, print_json, Bar, ReportArgs};
use snapport_engine::address::Address;
use snapport_engine::ops::upload::{self as op, UploadReport, WriteOptions};
use snapport_engine::s3;
use snapport_engine::source::{parse_size, InputFormat};
use snapport_engine::{usage, Result};

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
    serve: super::publish::ServeArgs,
    /// The pool to create it in.
    #[arg(short = 'n', long, default_value = snapport_engine::config::DEFAULT_POOL)]
    pool: String,
    /// Size of the new volume (e.g. 20G); default: the source's. Needed for a stream
    /// whose size is unknown (raw on stdin, zstd not written by snapport).
    #[arg(long)]
    size: Option<String>,
    /// Input format; default: detected from the content (never from the name).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
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
    /// Decrypt an age-encrypted source (download --encrypt-to) with this key file: an
    /// age identity (age-keygen) or an unencrypted ssh-ed25519/ssh-rsa private key.
    #[arg(long, value_name = "KEYFILE")]
    identity: Option<std::path::PathBuf>,
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
    #[command(flatten)]
    report: ReportArgs,
    /// Copy threads (default: one per core).
    #[arg(long, default_value_t = 0, hide = true)]
    workers: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Raw,
    Qcow2,
    /// zstd-compressed raw (one or many frames).
    #[value(name = "raw.zst")]
    RawZst,
}

pub fn run(args: Args) -> Result<()> {
    let (json, quiet) = (args.report.json(), args.report.quiet);
    let mut bar = Bar::new(quiet);
    if args.publish {
        if args.target.is_some() {
            usage!("--publish receives the image over HTTPS: give only the new volume, as in snapport upload --publish vd/NAME");
        }
        let target = Address::parse(&args.source)?;
        let write = write_options(&args)?;
        let engine = engine()?;
        let request = op::ReceiveRequest {
            target,
            digest: args.digest,
            serve: args.serve.options(),
            write,
        };
        let receiving = op::receive(&engine, request)?;
        let i = &receiving.info;
        if json {
            print_json(i, false);
        } else {
            println!("waiting for an upload to {} at {}", i.target, i.url);
            if let Some(f) = &i.fingerprint {
                println!("certificate SHA-256 fingerprint: {f}");
            }
            println!("token: {}", i.token);
            println!("send it (resumable; raw or raw.zst):\n  {}", i.push);
            let ttl = std::time::Duration::from_secs(i.ttl_seconds);
            let ttl = snapport_engine::serve::show_duration(ttl);
            println!("stops after {ttl} without access");
        }
        std::io::Write::flush(&mut std::io::stdout())?;
        let report = receiving.finish(&engine, &mut bar)?;
        return render(&report, json, quiet);
    }
    let Some(target) = args.target.as_deref() else {
        usage!("give the image and the new volume: snapport upload FILE vd/NAME (or snapport upload --publish vd/NAME)");
    };
    if let Some(vm) = snapport_engine::vm::parse_vm(target) {
        let name = vm?;
        if args.in_place {
            usage!("--in-place writes into an existing disk vd/NAME; a VM bundle always makes new disks");
        }
        if args.onto.is_some() || args.size.is_some() || args.format.is_some() {
            usage!("vm/{name}: a bundle brings its own disks; --onto, --size and --format apply to single disks");
        }
        let naming = snapport_engine::vm::Naming::new(
            &args.name_prefix,
            &args.name_suffix,
            &args.name_replace,
        )?;
        let request = op::VmRequest {
            source: args.source,
            name,
            pool: args.pool,
            naming,
            fsync: args.fsync,
            identity: args.identity.clone(),
        };
        let r = op::upload_vm(&engine()?, &request, &mut bar)?;
        if json {
            print_json(&r, false);
        } else if !quiet {
            eprintln!("created {} from a bundle of vm/{} in {:.2} s ({} disks, each verified by content digest)",
                r.target, r.from_vm, r.seconds, r.disks.len());
            for n in &r.changes {
                eprintln!("  {n}");
            }
        }
        return Ok(());
    }
    let target = Address::parse(target)?;
    if let Some(onto) = &args.onto {
        let onto = Address::parse(onto)?;
        if args.source == "-" || (args.source.contains("://") && !s3::is_s3(&args.source)) {
            usage!("--onto applies a delta file; save the delta to a file first");
        }
        let request = op::DeltaRequest {
            source: args.source.clone(),
            target,
            onto,
            pool: args.pool,
            fsync: args.fsync,
            identity: args.identity.clone(),
        };
        let r = op::upload_delta(&engine()?, &request, &mut bar)?;
        if json {
            print_json(&r, false);
        } else if !quiet {
            eprintln!("created {} in pool {}: {} with the delta to {} applied ({} records), content digest {} verified, in {:.2} s",
                r.target, r.pool, r.onto, r.from, r.records,
                r.content_digest.as_deref().unwrap_or("-"), r.seconds);
        }
        return Ok(());
    }
    let write = write_options(&args)?;
    let request = op::UploadRequest {
        source: args.source,
        target,
        digest: args.digest,
        sha256: args.sha256,
        sidecars: !args.no_sidecars,
        identity: args.identity,
        write,
    };
    let report = op::upload(&engine()?, &request, &mut bar)?;
    render(&report, json, quiet)
}

/// How the new volume is written.
fn write_options(args: &Args) -> Result<WriteOptions> {
    Ok(WriteOptions {
        pool: args.pool.clone(),
        size: args.size.as_deref().map(parse_size).transpose()?,
        format: args.format.map(|f| match f {
            FormatArg::Raw => InputFormat::Raw,
            FormatArg::Qcow2 => InputFormat::Qcow2,
            FormatArg::RawZst => InputFormat::RawZst,
        }),
        in_place: args.in_place,
        fsync: args.fsync,
        workers: args.workers,
    })
}

/// An upload's summary: JSON on stdout, or lines on stderr.
fn render(r: &UploadReport, json: bool, quiet: bool) -> Result<()> {
    if json {
        print_json(r, false);
        return Ok(());
    }
    if quiet {
        return Ok(());
    }
    if r.target != r.requested {
        eprintln!("pool {} made {} as {}", r.pool, r.requested, r.target);
    }
    eprintln!(
        "uploaded {} ({}, {}, {} written) to {} in pool {} in {:.2} s",
        r.source,
        r.format.name(),
        human(r.source_size),
        human(r.written_bytes),
        r.target,
        r.pool,
        r.seconds
    );
    if r.verified.is_empty() {
        eprintln!("not verified: no digest came with the source (--digest, --sha256 or a .digest/.sha256 file beside it)");
    } else {
        eprintln!("verified: {}", r.verified.join(", "));
    }
    Ok(())
}
