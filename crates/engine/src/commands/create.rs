//! `snapport create vd/NAME|vi/NAME --from ...`: a disk from an image or a snapshot
//! (CloudStack's "volume from snapshot", Deckhouse's `dataSource`), or an image from a
//! disk or a snapshot. A full copy by default; `--thin` makes a disk that reads through
//! to its image (a qcow2 overlay in qcow2 pools).

use crate::address::Address;
use crate::commands::upload::{kind_of, write_volume};
use crate::commands::{human, new_progress, OutputArg};
use crate::Engine;
use crate::{bail, Context as _, Result};
use snapport_core::import::{ImportOptions, Source};
use snapport_host::VolumeKind;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The new volume: vd/NAME or vi/NAME.
    target: String,
    /// What it starts as: vi/NAME, vd/NAME or vds/DISK@SNAPSHOT (same pool).
    #[arg(long, required_unless_present = "config")]
    from: Option<String>,
    /// For vm/NAME: the VM's config, a JSON document with its name, disks (name, pool)
    /// and network identifiers (mac, ip); other fields are kept as written.
    #[arg(long, conflicts_with_all = ["from", "thin", "size"])]
    config: Option<std::path::PathBuf>,
    #[arg(short = 'n', long, default_value = crate::config::DEFAULT_POOL)]
    pool: String,
    /// A thin clone of the image instead of a full copy: instant, shares the image's
    /// data; the image cannot be deleted while clones need it.
    #[arg(long)]
    thin: bool,
    /// Size of the new volume (at least the source's; default: the source's).
    #[arg(long)]
    size: Option<String>,
    /// Make the new volume durable (fsync) before it appears under its name.
    #[arg(long)]
    fsync: bool,
    #[arg(short, long)]
    quiet: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputArg::Text)]
    output: OutputArg,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(vm) = crate::vm::parse_vm(&args.target) {
        return create_vm(&args, &vm?);
    }
    let target = Address::parse(&args.target)?;
    let kind = kind_of(&target)?;
    let Some(from) = &args.from else {
        bail!("{target}: give what it starts as with --from (--config is for vm/NAME)");
    };
    let from = Address::parse(from)?;
    let given = args
        .size
        .as_deref()
        .map(crate::source::parse_size)
        .transpose()?;
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let mut pool = ctx.pool_with(&args.pool, args.fsync)?;
    let context = || format!("creating {target} from {from} in pool {}", args.pool);
    let started = Instant::now();

    // A backend that copies its own snapshots (CSI: CreateVolume with the snapshot as
    // content source) says so with the label `copies` = `backend`: no bytes move here.
    let backend_from =
        crate::snapshots::backend_address(&ctx.config.home, &args.pool, &mut pool, &from)?;
    if let (Address::DiskSnapshot { disk, snapshot }, false) = (&backend_from, args.thin) {
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
            snapport_core::import::VolumeTarget::commit(&mut new).with_context(context)?;
            let size = new.info.size;
            drop(new);
            return report(
                &args,
                &target,
                &from,
                &made,
                size,
                "copied by the backend",
                0,
                started,
            );
        }
    }

    // The source, read through its own instance of the pool's plugin.
    let mut reader = ctx.pool(&args.pool)?;
    let mut volume = reader
        .open_volume(backend_from.disk(), backend_from.snapshot())
        .with_context(|| format!("opening {from}"))?;
    check_kind(&from, volume.info.kind)?;
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
    if args.thin {
        if !matches!(from, Address::Image(_)) || kind != VolumeKind::Disk {
            bail!("--thin makes a disk (vd/) from an image (vi/), which never changes under it; {from} needs a full copy (drop --thin), or first: snapport create vi/NAME --from {from}");
        }
        drop(volume);
        let mut new = pool
            .create_volume(target.disk(), size, kind, Some(from.disk()))
            .with_context(context)?;
        snapport_core::import::VolumeTarget::commit(&mut new).with_context(context)?;
        mode = "thin clone";
        written = 0;
    } else {
        let mut progress = new_progress(args.quiet);
        let options = ImportOptions::default();
        let (summary, _) = write_volume(
            &mut pool,
            &target,
            size,
            Source::Volume(&mut volume),
            &options,
            progress.as_mut(),
            |_| Ok(Vec::new()),
        )
        .with_context(context)?;
        mode = "full copy";
        written = summary.written_bytes;
    }
    let made = target.disk().to_string();
    report(&args, &target, &from, &made, size, mode, written, started)
}

/// The closing line (or JSON) of `create`. `made`: the name the backend gave the volume.
#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    target: &Address,
    from: &Address,
    made: &str,
    size: u64,
    mode: &str,
    written: u64,
    started: Instant,
) -> Result<()> {
    let seconds = started.elapsed().as_secs_f64();
    match args.output {
        OutputArg::Json => println!(
            "{}",
            serde_json::json!({
                "target": target.to_string(),
                "volume": made,
                "from": from.to_string(),
                "pool": args.pool,
                "mode": mode,
                "size": size,
                "written_bytes": written,
                "seconds": seconds,
            })
        ),
        OutputArg::Text if !args.quiet => eprintln!(
            "created {} ({}, {mode} of {from}, {} written) in pool {} in {seconds:.2} s",
            if made == target.disk() {
                target.to_string()
            } else {
                format!("{target} as vd/{made} (the backend's name)")
            },
            human(size),
            human(written),
            args.pool
        ),
        OutputArg::Text => {}
    }
    Ok(())
}

/// `vd/` must name a disk and `vi/` an image.
pub fn check_kind(address: &Address, kind: VolumeKind) -> Result<()> {
    match (address, kind) {
        (Address::Disk(n), VolumeKind::Image) => bail!("{n} is an image: address it as vi/{n}"),
        (Address::Image(n), VolumeKind::Disk) => bail!("{n} is a disk: address it as vd/{n}"),
        _ => Ok(()),
    }
}

/// `create vm/NAME --config FILE`: records a VM whose disks exist in their pools.
fn create_vm(args: &Args, name: &str) -> Result<()> {
    let Some(path) = &args.config else {
        bail!("vm/{name}: give its config with --config FILE (JSON: name, disks, network)");
    };
    let text = snapport_core::io::read_regular_file(path, crate::vm::MAX_CONFIG_BYTES)
        .with_context(|| format!("reading {}", path.display()))?;
    let cfg = crate::vm::parse(&text, &path.display().to_string())?;
    if cfg.name != name {
        bail!(
            "{} names the VM {:?}, not {name:?}",
            path.display(),
            cfg.name
        );
    }
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    for d in &cfg.disks {
        let mut pool = ctx.pool(&d.pool)?;
        pool.open_volume(&d.name, None)
            .with_context(|| format!("vm/{name}: its disk vd/{} in pool {}", d.name, d.pool))?;
    }
    crate::vm::save_new(&ctx.config.home, &cfg)?;
    match args.output {
        OutputArg::Json => println!("{}", serde_json::to_string(&cfg)?),
        OutputArg::Text if !args.quiet => {
            eprintln!("created vm/{name} ({} disks)", cfg.disks.len())
        }
        OutputArg::Text => {}
    }
    Ok(())
}
