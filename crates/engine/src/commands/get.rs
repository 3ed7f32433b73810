//! `snapport get vd|vi|vds`: what a pool holds.

use crate::commands::human;
use crate::Engine;
use crate::{bail, Result};
use snapport_host::VolumeKind;

#[derive(clap::Args)]
pub struct Args {
    /// vd (disks), vi (images), vds (disk snapshots), vm (VMs) or vms (VM snapshots).
    kind: String,
    /// Only this disk (for vds: this disk's snapshots).
    name: Option<String>,
    #[arg(short = 'n', long, default_value = crate::config::DEFAULT_POOL)]
    pool: String,
    /// Output: table (default), json or wide.
    #[arg(short = 'o', long = "output", default_value = "table")]
    output: String,
}

pub fn run(args: Args) -> Result<()> {
    if !["table", "json", "wide"].contains(&args.output.as_str()) {
        bail!("-o {}: choose table, json or wide", args.output);
    }
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    if args.kind == "vm" {
        return list_vms(&ctx, &args);
    }
    if args.kind == "vms" {
        return list_vm_snapshots(&ctx, &args);
    }
    let mut instance = ctx.pool(&args.pool)?;
    match args.kind.as_str() {
        "vd" | "vi" | "vds" => {}
        other => bail!(
            "get {other}: this snapport lists vd (disks), vi (images), vds (disk snapshots), vm (VMs) and vms (VM snapshots)"
        ),
    }
    if args.kind == "vd" || args.kind == "vi" {
        let kind = args.kind.clone();
        let want = if kind == "vd" {
            VolumeKind::Disk
        } else {
            VolumeKind::Image
        };
        let mut vols = instance.list_volumes()?;
        vols.retain(|v| v.kind == want);
        if let Some(n) = &args.name {
            vols.retain(|v| &v.name == n);
            if vols.is_empty() {
                bail!("no {kind}/{n} in pool {}", args.pool);
            }
        }
        if args.output == "json" {
            let docs: Vec<_> = vols
                .iter()
                .map(|v| {
                    serde_json::json!({
                        "name": format!("{kind}/{}", v.name),
                        "pool": args.pool,
                        "size": v.size,
                        "format": v.format,
                        "parent": v.parent,
                        "labels": v.labels.iter().map(|l| (l.key.clone(), l.value.clone())).collect::<std::collections::BTreeMap<_, _>>(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&docs)?);
        } else {
            println!("{:<32} {:>10} {:<10} PARENT", "NAME", "SIZE", "FORMAT");
            for v in &vols {
                let mut parent = v.parent.clone().unwrap_or_else(|| "-".into());
                if let Some(err) = v.labels.iter().find(|l| l.key == "error") {
                    parent = format!("error: {}", err.value);
                }
                println!(
                    "{:<32} {:>10} {:<10} {parent}",
                    format!("{kind}/{}", v.name),
                    human(v.size),
                    v.format
                );
            }
        }
    } else {
        let views = crate::snapshots::list(
            &ctx.config.home,
            &args.pool,
            &mut instance,
            args.name.as_deref(),
        )?;
        if args.output == "json" {
            let docs: Vec<_> = views.iter().map(|v| v.to_json(&args.pool)).collect();
            println!("{}", serde_json::to_string_pretty(&docs)?);
        } else {
            println!(
                "{:<40} {:>10} {:<12} {:<10} {:<20} ID",
                "NAME", "SIZE", "PHASE", "CONSISTENT", "CREATED"
            );
            for v in &views {
                println!(
                    "{:<40} {:>10} {:<12} {:<10} {:<20} {}",
                    v.address(),
                    v.size.map_or_else(|| "-".into(), human),
                    format!("{:?}", v.phase),
                    if v.consistent { "yes" } else { "no" },
                    v.created_unix_ms
                        .map_or_else(|| "-".into(), crate::snapshots::utc),
                    v.id.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(())
}

/// `get vm [NAME]`: the VMs and their disks (VMs span pools, so -n does not apply).
fn list_vms(ctx: &Engine, args: &Args) -> Result<()> {
    let mut vms = crate::vm::list(&ctx.config.home)?;
    if let Some(n) = &args.name {
        vms.retain(|v| &v.name == n);
        if vms.is_empty() {
            bail!("no vm/{n}");
        }
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string(&vms)?);
        return Ok(());
    }
    println!("{:<24} {:<6} DISKS", "NAME", "NICS");
    for v in &vms {
        let disks: Vec<_> = v
            .disks
            .iter()
            .map(|d| format!("{}/vd/{}", d.pool, d.name))
            .collect();
        println!(
            "{:<24} {:<6} {}",
            format!("vm/{}", v.name),
            v.network.len(),
            disks.join(",")
        );
    }
    Ok(())
}

/// `get vms [VM]`: VM snapshots, oldest first.
fn list_vm_snapshots(ctx: &Engine, args: &Args) -> Result<()> {
    let mut snaps: Vec<_> = crate::snapshots::update_vms(&ctx.config.home, |m| {
        m.values().cloned().collect::<Vec<_>>()
    })?;
    if let Some(n) = &args.name {
        snaps.retain(|s| &s.vm == n);
    }
    snaps.sort_by_key(|s| (s.vm.clone(), s.created_unix_ms));
    if args.output == "json" {
        let docs = snaps
            .iter()
            .map(|s| crate::commands::snapshot::vm_snapshot_json(&ctx.config.home, s))
            .collect::<Result<Vec<_>>>()?;
        println!("{}", serde_json::to_string(&docs)?);
        return Ok(());
    }
    println!(
        "{:<32} {:<11} {:<10} {:<21} DISKS",
        "NAME", "PHASE", "CONSISTENT", "CREATED"
    );
    for s in &snaps {
        println!(
            "{:<32} {:<11} {:<10} {:<21} {}",
            s.address(),
            format!("{:?}", s.phase),
            s.consistent,
            crate::snapshots::utc(s.created_unix_ms),
            s.config.disks.len()
        );
    }
    Ok(())
}
