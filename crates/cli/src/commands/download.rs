//! `snapport download`: a disk, image or disk snapshot out to a raw, qcow2 or raw.zst file
//! or stdout; a delta since an earlier snapshot (`--since`); a VM as a bundle; or any of
//! them served over HTTPS (`--publish`).

use super::publish::PublishArgs;
use crate::render::{human, print_json, Bar, FileReportArgs};
use snapport_engine::address::Address;
use snapport_engine::format::ImageFormat;
use snapport_engine::ops::download::{
    self as op, DeltaRequest, DownloadRequest, VmDownloadRequest,
};
use snapport_engine::ops::publish::PublishSource;
use snapport_engine::{usage, Result};

#[derive(clap::Args)]
pub struct Args {
    /// What to export: vd/NAME, vi/NAME, vds/DISK@SNAPSHOT, or a VM bundle of vm/NAME
    /// or vms/VM@SNAPSHOT.
    address: String,
    /// The pool holding it.
    #[arg(short = 'n', long, default_value = snapport_engine::config::DEFAULT_POOL)]
    pool: String,
    /// Output file, or - for stdout.
    #[arg(short = 'o', long = "output", required_unless_present = "publish")]
    output: Option<String>,
    /// Output image format (default raw). A VM (vm/NAME) always downloads as a bundle:
    /// a tar of its config and disks.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// The disks' format inside a VM bundle.
    #[arg(long, value_enum, default_value_t = PayloadArg::RawZst)]
    payload: PayloadArg,
    /// Write only what changed since this earlier snapshot of the same disk
    /// (vds/DISK@BASE), as a snapport delta that `upload --onto` applies.
    #[arg(long, value_name = "vds/DISK@BASE", conflicts_with = "publish")]
    since: Option<String>,
    /// zstd compression level for raw.zst (1 fastest .. 19 smallest).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    zstd_level: i32,
    /// Content digest: chunked SHA-256 (see README), or none.
    #[arg(long, value_enum, default_value_t = DigestArg::Chunked)]
    digest: DigestArg,
    /// Also write a plain SHA-256 of the output in `sha256sum` format (FILE.sha256); a
    /// full pass over every byte, zeros included.
    #[arg(long)]
    sha256sum: bool,
    /// Make the output durable (fsync) before it appears under its name.
    #[arg(long)]
    fsync: bool,
    /// Encrypt the output to this recipient (repeatable): an age public key (age1...,
    /// from age-keygen) or an ssh-ed25519/ssh-rsa public key. The output is an age file
    /// (`age -d -i KEY` restores the image); its content digest goes to FILE.digest.age.
    #[arg(long, value_name = "RECIPIENT")]
    encrypt_to: Vec<String>,
    /// Encrypt the output to the recipients in this file, one per line (repeatable).
    #[arg(long, value_name = "FILE")]
    encrypt_to_file: Vec<std::path::PathBuf>,
    /// Replace an existing output file (and its sidecars); the old one stays whole until
    /// the new one is complete. A file or device of a pool is never replaced.
    #[arg(long, conflicts_with = "publish")]
    force: bool,
    #[command(flatten)]
    report: FileReportArgs,
    /// Copy threads (default: one per core).
    #[arg(long, default_value_t = 0, hide = true)]
    workers: usize,
    #[command(flatten)]
    publish: PublishArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Raw,
    Qcow2,
    /// Raw, compressed as zstd frames (`zstd -d` restores it).
    #[value(name = "raw.zst")]
    RawZst,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PayloadArg {
    #[value(name = "raw.zst")]
    RawZst,
    Qcow2,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DigestArg {
    Chunked,
    None,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(vm) = snapport_engine::vm::parse_vm(&args.address) {
        return download_vm(&args, vm?, None);
    }
    if let Some(vms) = snapport_engine::snapshots::parse_vms(&args.address) {
        let (vm, snapshot) = vms?;
        return download_vm(&args, vm, Some(snapshot));
    }
    let format = match args.format.unwrap_or(FormatArg::Raw) {
        FormatArg::Raw => ImageFormat::Raw,
        FormatArg::Qcow2 => ImageFormat::Qcow2,
        FormatArg::RawZst => ImageFormat::RawZst,
    };
    let address = Address::parse(&args.address)?;
    let (quiet, json) = (args.report.quiet, args.report.json());
    if args.publish.publish {
        let source = PublishSource::Volume {
            address,
            pool: args.pool.clone(),
            format,
        };
        return publish(&args, "the export", source);
    }
    let output = args.output.clone().unwrap_or_default();
    let to_stdout = output == "-";
    let since = args.since.as_deref().map(Address::parse).transpose()?;
    let engine = crate::render::engine()?;
    let mut progress = Bar::new(quiet);
    if let Some(since) = since {
        let req = DeltaRequest {
            address,
            since,
            pool: args.pool.clone(),
            output,
            force: args.force,
            encrypt_to: args.encrypt_to.clone(),
            encrypt_to_files: args.encrypt_to_file.clone(),
        };
        let r = op::download_delta(&engine, &req, &mut progress)?;
        if json {
            print_json(&r, to_stdout);
        } else if !quiet {
            eprintln!(
                "exported {} since {} in {:.2} s: {} in {} records ({} of data, {} of zeros) \
                 from {} changed; target digest {}",
                r.source,
                r.since,
                r.seconds,
                human(r.output_size),
                r.records,
                human(r.data_bytes),
                human(r.zero_bytes),
                human(r.changed_bytes),
                r.target_digest.as_deref().unwrap_or("encrypted")
            );
        }
        return Ok(());
    }
    let req = DownloadRequest {
        address,
        pool: args.pool.clone(),
        output,
        format,
        zstd_level: args.zstd_level,
        content_digest: args.digest == DigestArg::Chunked,
        sha256sum: args.sha256sum,
        fsync: args.fsync,
        force: args.force,
        workers: args.workers,
        encrypt_to: args.encrypt_to.clone(),
        encrypt_to_files: args.encrypt_to_file.clone(),
    };
    let r = op::download(&engine, &req, &mut progress)?;
    if json {
        print_json(&r, to_stdout);
    } else if !quiet {
        let rate = r.data_bytes as f64 / r.seconds.max(1e-9);
        eprintln!(
            "exported {} ({}, {} of data) to {} in {:.2} s ({}/s)",
            r.source,
            human(r.size),
            human(r.data_bytes),
            if to_stdout { "stdout" } else { &r.output },
            r.seconds,
            human(rate as u64),
        );
        if let Some(d) = &r.content_digest {
            eprintln!("content digest {d}");
        }
        if r.encrypted && !to_stdout && args.digest == DigestArg::Chunked {
            eprintln!("encrypted; content digest in {}.digest.age", r.output);
        }
        if let Some(h) = &r.sha256 {
            eprintln!("sha256 {h}");
        }
    }
    Ok(())
}

/// `download vm/NAME|vms/NAME@SNAP`: the VM's config and disks as one bundle.
/// `--publish`: serves `source` (`what`, for the refusal of `-o`) instead of writing it.
fn publish(args: &Args, what: &str, source: PublishSource) -> Result<()> {
    if args.output.is_some() {
        usage!("--publish serves {what} instead of writing it: drop -o");
    }
    args.publish.run(
        source,
        args.zstd_level,
        (&args.encrypt_to, &args.encrypt_to_file),
        args.report.quiet,
        args.report.json(),
    )
}

fn download_vm(args: &Args, vm: String, snapshot: Option<String>) -> Result<()> {
    let this = match &snapshot {
        Some(s) => format!("vms/{vm}@{s}"),
        None => format!("vm/{vm}"),
    };
    if args.format.is_some() {
        usage!("a VM downloads as a bundle (a tar); choose its disks' format with --payload raw.zst|qcow2");
    }
    if args.since.is_some() {
        usage!("{this}: --since takes a disk snapshot, not a VM");
    }
    let payload = match args.payload {
        PayloadArg::RawZst => ImageFormat::RawZst,
        PayloadArg::Qcow2 => ImageFormat::Qcow2,
    };
    let (quiet, json) = (args.report.quiet, args.report.json());
    if args.publish.publish {
        let source = PublishSource::Vm {
            vm,
            snapshot,
            payload,
        };
        return publish(args, "the bundle", source);
    }
    let Some(output) = args.output.clone() else {
        usage!("give the bundle's file with -o FILE.tar (or -o - for stdout)");
    };
    let engine = crate::render::engine()?;
    let req = VmDownloadRequest {
        vm,
        snapshot,
        output,
        payload,
        zstd_level: args.zstd_level,
        force: args.force,
        fsync: args.fsync,
        encrypt_to: args.encrypt_to.clone(),
        encrypt_to_files: args.encrypt_to_file.clone(),
    };
    let r = op::download_vm(&engine, &req, &mut Bar::new(quiet))?;
    let to_stdout = r.output == "-";
    if json {
        print_json(&r, to_stdout);
    } else if !quiet {
        eprintln!(
            "exported {this} ({} disks, {}) to {} in {:.2} s; check it with: tar -xf FILE && sha256sum -c SHA256SUMS",
            r.disks.len(),
            human(r.output_size),
            if to_stdout { "stdout" } else { &r.output },
            r.seconds,
        );
    }
    Ok(())
}
