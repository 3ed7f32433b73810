//! `snapport download`: a disk or disk snapshot out to a raw or qcow2 file, or stdout.

use crate::address::Address;
use crate::commands::human;
use crate::output;
use crate::progress::Bar;
use crate::Engine;
use crate::{Context as _, Result};
use snapport_core::export::{self, ExportOptions, Format, Target};
use snapport_core::output::PendingFile;
use snapport_core::progress::{NoProgress, Progress};
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// What to export: vd/NAME, vi/NAME, vds/DISK@SNAPSHOT, or a VM bundle of vm/NAME
    /// or vms/VM@SNAPSHOT.
    address: String,
    /// The pool holding it.
    #[arg(short = 'n', long, default_value = crate::config::DEFAULT_POOL)]
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
    /// Replace an existing output file (and its sidecars); the old one stays whole until
    /// the new one is complete. A file or device of a pool is never replaced.
    #[arg(long, conflicts_with = "publish")]
    force: bool,
    /// No progress bar, no summary.
    #[arg(short, long)]
    quiet: bool,
    /// Print the summary as JSON (on stdout, or on stderr when the image goes to stdout).
    #[arg(long)]
    json: bool,
    /// Copy threads (default: one per core).
    #[arg(long, default_value_t = 0, hide = true)]
    workers: usize,
    #[command(flatten)]
    publish: crate::commands::publish::PublishArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    Raw,
    Qcow2,
    /// Raw, compressed as zstd frames (`zstd -d` restores it).
    #[value(name = "raw.zst")]
    RawZst,
}

impl FormatArg {
    pub fn name(self) -> &'static str {
        match self {
            FormatArg::Raw => "raw",
            FormatArg::Qcow2 => "qcow2",
            FormatArg::RawZst => "raw.zst",
        }
    }
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
    if let Some(vm) = crate::vm::parse_vm(&args.address) {
        return download_vm(&args, &vm?, None);
    }
    if let Some(vms) = crate::snapshots::parse_vms(&args.address) {
        let (vm, snap) = vms?;
        return download_vm(&args, &vm, Some(&snap));
    }
    let format = args.format.unwrap_or(FormatArg::Raw);
    let address = Address::parse(&args.address)?;
    if args.publish.publish {
        if args.output.is_some() {
            crate::bail!("--publish serves the export instead of writing it: drop -o");
        }
        return crate::commands::publish::serve_export(
            &address,
            &args.pool,
            format,
            args.zstd_level,
            &args.publish,
            args.quiet,
            args.json,
        );
    }
    let output = args.output.clone().unwrap_or_default();
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    if let Some(since) = &args.since {
        let base = Address::parse(since)?;
        let started = Instant::now();
        let done = crate::incremental::export_delta(
            &ctx,
            &args.pool,
            &address,
            &base,
            &output,
            args.force,
            crate::commands::new_progress(args.quiet).as_mut(),
        )
        .with_context(|| format!("exporting {address} since {base} from pool {}", args.pool))?;
        let seconds = started.elapsed().as_secs_f64();
        if args.json {
            let doc = serde_json::json!({
                "source": address.to_string(),
                "since": base.to_string(),
                "pool": args.pool,
                "output": output,
                "format": "snapport-delta",
                "output_size": done.summary.file_bytes,
                "records": done.summary.footer.records,
                "data_bytes": done.summary.footer.data_bytes,
                "zero_bytes": done.summary.footer.zero_bytes,
                "changed_bytes": done.changed_bytes,
                "base_digest": done.base_digest,
                "target_digest": done.summary.footer.target_digest,
                "sha256": done.summary.file_sha256,
                "seconds": seconds,
            });
            if output == "-" {
                eprintln!("{doc}");
            } else {
                println!("{doc}");
            }
        } else if !args.quiet {
            eprintln!(
                "exported {address} since {base} in {seconds:.2} s: {}",
                crate::incremental::describe_export(&done)
            );
        }
        return Ok(());
    }
    let to_stdout = output == "-";
    let out = Path::new(&output);
    let digest_file = output::sidecar_path(out, ".digest");
    let sum_file = output::sidecar_path(out, ".sha256");
    if !to_stdout {
        output::check(&ctx.config, out, &[&digest_file, &sum_file], args.force)?;
    }
    let mut instance = ctx.pool(&args.pool)?;
    let backend =
        crate::snapshots::backend_address(&ctx.config.home, &args.pool, &mut instance, &address)?;
    // A disk a running QEMU holds is read from a snapshot QEMU takes for the export.
    let temporary = match &address {
        Address::Disk(disk) => {
            crate::live::for_disk(&ctx.config.home, &args.pool, &mut instance, disk)?
                .map(|live| live.temporary_snapshot(&mut instance))
                .transpose()?
        }
        _ => None,
    };
    let snapshot = match &temporary {
        Some(t) => Some(t.name.as_str()),
        None => backend.snapshot(),
    };
    let mut volume = instance
        .open_volume(backend.disk(), snapshot)
        .with_context(|| format!("opening {address}"))?;
    crate::commands::create::check_kind(&address, volume.info.kind)?;

    let pending = if to_stdout {
        None
    } else {
        output::note_pending(out);
        Some(PendingFile::beside(out)?)
    };
    let target = match &pending {
        Some(file) => Target::Pending(file),
        None => {
            let fd = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .context("duplicating stdout")?;
            Target::Stream(Box::new(std::fs::File::from(fd)))
        }
    };
    let options = ExportOptions {
        format: match format {
            FormatArg::Raw => Format::Raw,
            FormatArg::Qcow2 => Format::Qcow2,
            FormatArg::RawZst => Format::RawZst {
                level: args.zstd_level,
            },
        },
        content_digest: args.digest == DigestArg::Chunked,
        stream_sha256: args.sha256sum,
        workers: args.workers,
        sync: args.fsync,
    };
    let mut progress: Box<dyn Progress> = if args.quiet || !std::io::stderr().is_terminal() {
        Box::new(NoProgress)
    } else {
        Box::new(Bar::new())
    };
    let started = Instant::now();
    let summary = export::export(&mut volume, target, &options, progress.as_mut())
        .with_context(|| format!("exporting {address} from pool {}", args.pool))?;
    let seconds = started.elapsed().as_secs_f64();

    if let Some(pending) = pending {
        let base = out
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // A sidecar of an earlier export under this name that this one does not write
        // would now lie, so it goes.
        let mut files = Vec::new();
        let mut stale = Vec::new();
        for (path, value) in [
            (digest_file, &summary.content_digest),
            (sum_file, &summary.stream_sha256),
        ] {
            match value {
                Some(v) => files.push(output::sidecar(&path, &format!("{v}  {base}\n"))?),
                None => stale.push(path),
            }
        }
        output::commit(files, pending, &stale, args.force, args.fsync)?;
    }

    if args.json {
        let doc = serde_json::json!({
            "source": address.to_string(),
            "pool": args.pool,
            "output": output,
            "format": format.name(),
            "size": summary.size,
            "output_size": summary.output_size,
            "data_bytes": summary.data_bytes,
            "content_digest": summary.content_digest,
            "sha256": summary.stream_sha256,
            "seconds": seconds,
        });
        if to_stdout {
            eprintln!("{doc}");
        } else {
            println!("{doc}");
        }
    } else if !args.quiet {
        let rate = summary.data_bytes as f64 / seconds.max(1e-9);
        eprintln!(
            "exported {address} ({}, {} of data) to {} in {seconds:.2} s ({}/s)",
            human(summary.size),
            human(summary.data_bytes),
            if to_stdout { "stdout" } else { &output },
            human(rate as u64),
        );
        if let Some(d) = &summary.content_digest {
            eprintln!("content digest {d}");
        }
        if let Some(h) = &summary.stream_sha256 {
            eprintln!("sha256 {h}");
        }
    }
    Ok(())
}

/// `download vm/NAME|vms/NAME@SNAP -o FILE.tar`: the VM's config and disks (now, or as
/// the snapshot has them) as one bundle.
fn download_vm(args: &Args, name: &str, snapshot: Option<&str>) -> Result<()> {
    let this = match snapshot {
        Some(s) => format!("vms/{name}@{s}"),
        None => format!("vm/{name}"),
    };
    if args.format.is_some() {
        crate::bail!("a VM downloads as a bundle (a tar); choose its disks' format with --payload raw.zst|qcow2");
    }
    if args.since.is_some() {
        crate::bail!("{this}: --since takes a disk snapshot, not a VM");
    }
    let payload = match args.payload {
        PayloadArg::RawZst => FormatArg::RawZst,
        PayloadArg::Qcow2 => FormatArg::Qcow2,
    };
    if args.publish.publish {
        if args.output.is_some() {
            crate::bail!("--publish serves the bundle instead of writing it: drop -o");
        }
        return crate::commands::publish::serve_bundle(
            name,
            snapshot,
            payload,
            args.zstd_level,
            &args.publish,
            args.quiet,
            args.json,
        );
    }
    let Some(output) = args.output.as_deref() else {
        crate::bail!("give the bundle's file with -o FILE.tar (or -o - for stdout)");
    };
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let started = Instant::now();
    let pending = if output == "-" {
        None
    } else {
        let out = Path::new(output);
        output::check(&ctx.config, out, &[], args.force)?;
        output::note_pending(out);
        Some(PendingFile::beside(out)?)
    };
    let target = match &pending {
        Some(f) => crate::bundle::BundleTarget::File(f),
        None => crate::bundle::BundleTarget::Stdout,
    };
    let done = crate::bundle::export_vm(
        &ctx,
        name,
        snapshot,
        target,
        crate::commands::bundle_format(payload, args.zstd_level),
        crate::commands::new_progress(args.quiet).as_mut(),
    )
    .with_context(|| format!("exporting {this}"))?;
    if let Some(f) = pending {
        output::commit(Vec::new(), f, &[], args.force, args.fsync)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let doc = serde_json::json!({
            "source": this,
            "output": output,
            "format": "bundle",
            "snapshot": done.manifest.snapshot,
            "consistent": done.manifest.consistent,
            "payload": done.manifest.payload,
            "output_size": done.output_size,
            "sha256": done.sha256,
            "disks": done.manifest.disks,
            "seconds": seconds,
        });
        if output == "-" {
            eprintln!("{doc}");
        } else {
            println!("{doc}");
        }
    } else if !args.quiet {
        eprintln!(
            "exported {this} ({} disks, {}) to {} in {seconds:.2} s; check it with: tar -xf FILE && sha256sum -c SHA256SUMS",
            done.manifest.disks.len(),
            human(done.output_size),
            if output == "-" { "stdout" } else { output },
        );
    }
    Ok(())
}
