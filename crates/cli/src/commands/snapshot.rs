//! `snapport snapshot create vd/NAME`: a point-in-time snapshot of a disk, through the
//! pool's plugin (for qcow2 pools: a qcow2 internal snapshot `qemu-img` lists).
//!
//! The phases are recorded as the work goes (`Pending` while checks run, `InProgress`
//! during the backend call, then `Ready` or `Failed`), so a `get vds` in another shell
//! sees them. The per-disk limit counts every snapshot that is not `Failed`.

use crate::address::Address;
use crate::commands::OutputArg;
use crate::context::Context;
use crate::quiesce::{self, Plan};
use crate::snapshots::{self, key, Phase, Record};
use anyhow::{bail, Context as _, Result};
use snapport_host::VolumeKind;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Take a snapshot of a disk, or of all of a VM's disks at once.
    Create(CreateArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    /// Fail unless the guest's file systems are frozen or the disk is not in use.
    Required,
    /// Take it anyway and record `consistent: false` when that cannot be ensured.
    BestEffort,
}

#[derive(clap::Args)]
pub struct CreateArgs {
    /// vd/NAME, or vm/NAME for all of a VM's disks under one freeze.
    target: String,
    /// The snapshot's name (default: the UTC date and time, `20261124-064012`).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, value_enum, default_value_t = Consistency::BestEffort)]
    consistency: Consistency,
    /// A note kept with the snapshot.
    #[arg(long)]
    comment: Option<String>,
    /// The QEMU guest agent's Unix socket: the guest's file systems are frozen while the
    /// snapshot is taken.
    #[arg(long, value_name = "SOCKET")]
    guest_agent: Option<std::path::PathBuf>,
    /// A command (`sh -c`) run before the snapshot, after the pool's own; repeatable, run
    /// in order. A failure means "not quiesced".
    #[arg(long = "pre-hook", value_name = "CMD")]
    pre_hooks: Vec<String>,
    /// A command run after the snapshot (and the thaw) on every path; repeatable.
    #[arg(long = "post-hook", value_name = "CMD")]
    post_hooks: Vec<String>,
    #[arg(short = 'n', long, default_value = crate::config::DEFAULT_POOL)]
    pool: String,
    #[arg(short, long)]
    quiet: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputArg::Text)]
    output: OutputArg,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Create(args) => create(args),
    }
}

/// A name for a new snapshot: the name rule of every name ([`crate::address::check_name`]),
/// and no white space, which LVM and the hooks' `SNAPPORT_SNAPSHOT` would not carry well
/// (snapshots made by other tools may have spaces and stay addressable).
pub fn check_name(name: &str) -> Result<()> {
    crate::address::check_name("--name", name)?;
    if name.chars().any(char::is_whitespace) {
        bail!("--name {name:?}: a new snapshot's name has no spaces");
    }
    Ok(())
}

/// Pending: the checks, under the records' lock, so two creates cannot both pass the
/// limit; records `DISK@NAME` as Pending. Returns the new snapshot's parent.
#[allow(clippy::too_many_arguments)]
fn reserve(
    home: &std::path::Path,
    pool: &str,
    disk: &str,
    name: &str,
    listed: Vec<snapport_host::SnapshotInfo>,
    limit: usize,
    comment: Option<String>,
    created: u64,
) -> Result<Option<String>> {
    let this = format!("vds/{disk}@{name}");
    snapshots::update(home, pool, |records| -> Result<Option<String>> {
        let views = snapshots::merge(listed, records, Some(disk));
        if let Some(v) = views
            .iter()
            .find(|v| v.name == name && v.phase != Phase::Failed)
        {
            bail!(
                "{this} exists already ({:?}); choose another --name",
                v.phase
            );
        }
        let live = views.iter().filter(|v| v.phase != Phase::Failed).count();
        if live >= limit {
            bail!(
                "vd/{disk} has {live} snapshots, the limit of pool {pool} (snapshot_limit = {limit}); delete or prune one, or raise snapshot_limit"
            );
        }
        let parent = records.heads.get(disk).cloned().or_else(|| {
            views
                .iter()
                .rev()
                .find(|v| v.phase == Phase::Ready)
                .map(|v| v.name.clone())
        });
        records.snapshots.insert(
            key(disk, name),
            Record {
                phase: Phase::Pending,
                consistent: false,
                comment,
                parent: parent.clone(),
                created_unix_ms: Some(created),
                error: None,
            },
        );
        Ok(parent)
    })?
}

/// Moves `DISK@NAME`'s record to `phase`; `Ready` also makes it the disk's head.
fn set_phase(
    home: &std::path::Path,
    pool: &str,
    disk: &str,
    name: &str,
    phase: Phase,
    consistent: bool,
    error: Option<String>,
) -> Result<()> {
    snapshots::update(home, pool, |records| {
        if let Some(r) = records.snapshots.get_mut(&key(disk, name)) {
            r.phase = phase;
            r.consistent = consistent;
            r.error = error;
        }
        if phase == Phase::Ready {
            records.heads.insert(disk.to_string(), name.to_string());
        }
    })
}

/// The default snapshot name: the UTC date and time, `20261124-064012`.
fn default_name(created: u64) -> String {
    snapshots::utc(created)
        .trim_end_matches('Z')
        .replace(['-', ':'], "")
        .replace('T', "-")
}

fn create(args: CreateArgs) -> Result<()> {
    if let Some(vm) = crate::vm::parse_vm(&args.target) {
        return create_vm(args, &vm?);
    }
    let target = Address::parse(&args.target)?;
    let Address::Disk(disk) = &target else {
        bail!("{target}: snapshot create takes a disk, vd/NAME");
    };
    let created = snapshots::now_ms();
    let name = match &args.name {
        Some(n) => n.clone(),
        None => default_name(created),
    };
    check_name(&name)?;
    let ctx = Context::new()?;
    let pool_config = ctx.config.pool(&args.pool)?;
    let limit = pool_config
        .snapshot_limit
        .unwrap_or(crate::config::DEFAULT_SNAPSHOT_LIMIT);
    let plan = Plan {
        agent: args.guest_agent.clone(),
        pre: [&pool_config.pre_snapshot_hooks[..], &args.pre_hooks[..]].concat(),
        post: [&pool_config.post_snapshot_hooks[..], &args.post_hooks[..]].concat(),
        env: vec![
            ("SNAPPORT_POOL".into(), args.pool.clone()),
            ("SNAPPORT_DISKS".into(), disk.clone()),
            ("SNAPPORT_SNAPSHOT".into(), name.clone()),
        ],
    };
    let home = ctx.config.home.clone();
    let mut pool = ctx.pool(&args.pool)?;
    let volumes = pool.list_volumes()?;
    match volumes.iter().find(|v| &v.name == disk) {
        None => bail!("no {target} in pool {}", args.pool),
        Some(v) if v.kind == VolumeKind::Image => {
            bail!("vi/{disk} is a read-only image; snapshots are of disks (vd/)")
        }
        Some(_) => {}
    }
    let this = format!("vds/{disk}@{name}");
    // A disk a running QEMU holds is snapshotted by QEMU, or refused before any record.
    let mut live = crate::live::for_disk(&home, &args.pool, &mut pool, disk)?;
    let listed = pool.list_snapshots(Some(disk))?;

    let parent = reserve(
        &home,
        &args.pool,
        disk,
        &name,
        listed,
        limit,
        args.comment.clone(),
        created,
    )?;
    let set = |phase: Phase, consistent: bool, error: Option<String>| {
        set_phase(&home, &args.pool, disk, &name, phase, consistent, error)
    };
    let in_use = match pool.volume_in_use(disk) {
        Ok(b) => b,
        Err(e) => {
            let e = anyhow::Error::new(e).context(format!("checking whether vd/{disk} is in use"));
            set(Phase::Failed, false, Some(format!("{e:#}")))?;
            return Err(e);
        }
    };

    // From the first hook to the thaw, a signal waits: the guest must not stay frozen.
    let _hold = crate::interrupt::defer();
    let mut frozen = quiesce::freeze(&plan);
    let consistent = if plan.quiesces() {
        frozen.quiesced
    } else {
        !in_use
    };
    if args.consistency == Consistency::Required && !consistent {
        let mut why = if plan.quiesces() {
            frozen.problems.join("; ")
        } else {
            format!(
                "vd/{disk} is in use and nothing is configured to freeze its guest (--guest-agent, --pre-hook or the pool's pre_snapshot_hooks)"
            )
        };
        for p in frozen.thaw() {
            why.push_str("; ");
            why.push_str(&p);
        }
        let why = format!("{this} not taken: --consistency required: {why}");
        set(Phase::Failed, false, Some(why.clone()))?;
        bail!(why);
    }
    set(Phase::InProgress, consistent, None)?;
    let made = match &mut live {
        Some(l) => l
            .create_snapshot(&mut pool, &name)
            .map_err(crate::live::as_backend_error),
        None => pool.create_snapshot(disk, &name, created),
    };
    let thaw_problems = frozen.thaw();
    let info = match made {
        Ok(info) => info,
        Err(e) => {
            use snapport_host::{BackendErrorKind as B, ErrorKind as K};
            // A request the backend refuses outright (a raw disk, a name it rejects)
            // made nothing: no record. An attempt that broke stays visible as Failed.
            let refused = live.is_some()
                || matches!(
                    e.kind,
                    K::Backend(
                        B::Unsupported
                            | B::InvalidArgument
                            | B::NotFound
                            | B::Conflict
                            | B::PermissionDenied
                    )
                );
            let mut e = anyhow::Error::new(e).context(format!("creating {this}"));
            if !thaw_problems.is_empty() {
                e = e.context(thaw_problems.join("; "));
            }
            if refused {
                snapshots::update(&home, &args.pool, |r| r.snapshots.remove(&key(disk, &name)))?;
            } else {
                set(Phase::Failed, false, Some(format!("{e:#}")))?;
            }
            return Err(e);
        }
    };
    let problems = (!thaw_problems.is_empty()).then(|| thaw_problems.join("; "));
    // A backend may name the snapshot itself (CSI: the driver picks the snapshot ID, the
    // name asked for only makes the request idempotent): the record follows its name.
    if info.name != name {
        snapshots::update(&home, &args.pool, |r| {
            if let Some(record) = r.snapshots.remove(&key(disk, &name)) {
                r.snapshots.insert(key(disk, &info.name), record);
            }
        })
        .context("the snapshot exists, but its record was not saved")?;
    }
    set_phase(
        &home,
        &args.pool,
        disk,
        &info.name,
        Phase::Ready,
        consistent,
        problems.clone(),
    )
    .context("the snapshot exists, but its record was not saved")?;
    if let Some(p) = problems {
        bail!("{this} was created, but: {p}");
    }
    let view = snapshots::View {
        disk: disk.clone(),
        name: info.name,
        id: Some(info.id),
        size: Some(info.size),
        created_unix_ms: info.created_unix_ms.or(Some(created)),
        phase: Phase::Ready,
        consistent,
        comment: args.comment,
        parent,
        error: None,
    };
    match args.output {
        OutputArg::Json => println!(
            "{}",
            serde_json::to_string_pretty(&view.to_json(&args.pool))?
        ),
        OutputArg::Text if !args.quiet => eprintln!(
            "created {} in pool {} (Ready, {})",
            view.address(),
            args.pool,
            if consistent {
                "consistent"
            } else if in_use {
                "not consistent: the disk is in use and its guest was not frozen"
            } else {
                "not consistent: quiescing failed"
            }
        ),
        OutputArg::Text => {}
    }
    Ok(())
}

/// `snapshot create vm/NAME`: a snapshot of every disk of the VM under one freeze, all
/// of the same name, and the VM's config kept with them (`vms/VM@NAME`). All or
/// nothing: when one disk cannot be snapshotted, the ones already taken are deleted.
fn create_vm(args: CreateArgs, vm: &str) -> Result<()> {
    let ctx = Context::new()?;
    let home = ctx.config.home.clone();
    let cfg = crate::vm::load(&home, vm)?;
    let created = snapshots::now_ms();
    let name = args.name.clone().unwrap_or_else(|| default_name(created));
    check_name(&name)?;
    let this = format!("vms/{vm}@{name}");
    let vkey = key(vm, &name);
    snapshots::update_vms(&home, |m| -> Result<()> {
        if m.get(&vkey).is_some_and(|s| s.phase != Phase::Failed) {
            bail!("{this} exists already; choose another --name");
        }
        m.insert(
            vkey.clone(),
            snapshots::VmSnapshot {
                vm: vm.to_string(),
                name: name.clone(),
                phase: Phase::Pending,
                consistent: false,
                created_unix_ms: created,
                comment: args.comment.clone(),
                error: None,
                config: cfg.clone(),
            },
        );
        Ok(())
    })??;
    let set_vm = |phase: Phase, consistent: bool, error: Option<String>| {
        snapshots::update_vms(&home, |m| {
            if let Some(s) = m.get_mut(&vkey) {
                s.phase = phase;
                s.consistent = consistent;
                s.error = error;
            }
        })
    };
    // One plugin instance per pool; hooks of every pool involved, each once, in order.
    let mut pools: std::collections::BTreeMap<String, snapport_host::Instance> = Default::default();
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    let mut limits = std::collections::BTreeMap::new();
    for d in &cfg.disks {
        if !pools.contains_key(&d.pool) {
            let pc = ctx.config.pool(&d.pool)?;
            pre.extend(pc.pre_snapshot_hooks.iter().cloned());
            post.extend(pc.post_snapshot_hooks.iter().cloned());
            limits.insert(
                d.pool.clone(),
                pc.snapshot_limit
                    .unwrap_or(crate::config::DEFAULT_SNAPSHOT_LIMIT),
            );
            pools.insert(d.pool.clone(), ctx.pool(&d.pool)?);
        }
    }
    pre.extend(args.pre_hooks.iter().cloned());
    post.extend(args.post_hooks.iter().cloned());

    // Pending: every disk passes its checks, or none is reserved.
    let mut reserved: Vec<&crate::vm::VmDisk> = Vec::new();
    let mut lives: std::collections::BTreeMap<(String, String), crate::live::Live> =
        Default::default();
    let mut in_use = false;
    let checked = (|| -> Result<()> {
        for d in &cfg.disks {
            let pool = pools.get_mut(&d.pool).expect("an instance per pool");
            match pool.list_volumes()?.iter().find(|v| v.name == d.name) {
                None => bail!("vm/{vm}: no vd/{} in pool {}", d.name, d.pool),
                Some(v) if v.kind == VolumeKind::Image => {
                    bail!("vm/{vm}: vi/{} is a read-only image, not a disk", d.name)
                }
                Some(_) => {}
            }
            if let Some(l) = crate::live::for_disk(&home, &d.pool, pool, &d.name)? {
                lives.insert((d.pool.clone(), d.name.clone()), l);
            }
            let listed = pool.list_snapshots(Some(&d.name))?;
            reserve(
                &home,
                &d.pool,
                &d.name,
                &name,
                listed,
                limits[&d.pool],
                args.comment.clone(),
                created,
            )?;
            reserved.push(d);
            in_use |= pool
                .volume_in_use(&d.name)
                .with_context(|| format!("checking whether vd/{} is in use", d.name))?;
        }
        Ok(())
    })();
    let fail_all = |reserved: &[&crate::vm::VmDisk], why: String| -> Result<()> {
        for d in reserved {
            set_phase(
                &home,
                &d.pool,
                &d.name,
                &name,
                Phase::Failed,
                false,
                Some(why.clone()),
            )?;
        }
        set_vm(Phase::Failed, false, Some(why))
    };
    if let Err(e) = checked {
        let e = e.context(format!("{this} not taken"));
        fail_all(&reserved, format!("{e:#}"))?;
        return Err(e);
    }

    let plan = Plan {
        agent: args.guest_agent.clone(),
        pre,
        post,
        env: vec![
            (
                "SNAPPORT_POOL".into(),
                pools.keys().cloned().collect::<Vec<_>>().join(","),
            ),
            (
                "SNAPPORT_DISKS".into(),
                cfg.disks
                    .iter()
                    .map(|d| d.name.clone())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("SNAPPORT_SNAPSHOT".into(), name.clone()),
            ("SNAPPORT_VM".into(), vm.to_string()),
        ],
    };
    let _hold = crate::interrupt::defer();
    let mut frozen = quiesce::freeze(&plan);
    let consistent = if plan.quiesces() {
        frozen.quiesced
    } else {
        !in_use
    };
    if args.consistency == Consistency::Required && !consistent {
        let mut why = if plan.quiesces() {
            frozen.problems.join("; ")
        } else {
            format!("a disk of vm/{vm} is in use and nothing is configured to freeze its guest (--guest-agent, --pre-hook or the pools' pre_snapshot_hooks)")
        };
        for p in frozen.thaw() {
            why.push_str("; ");
            why.push_str(&p);
        }
        let why = format!("{this} not taken: --consistency required: {why}");
        fail_all(&reserved, why.clone())?;
        bail!(why);
    }
    set_vm(Phase::InProgress, consistent, None)?;
    let mut taken: Vec<&crate::vm::VmDisk> = Vec::new();
    let mut failure = None;
    for d in &cfg.disks {
        set_phase(
            &home,
            &d.pool,
            &d.name,
            &name,
            Phase::InProgress,
            consistent,
            None,
        )?;
        let pool = pools.get_mut(&d.pool).expect("an instance per pool");
        let made = match lives.get_mut(&(d.pool.clone(), d.name.clone())) {
            Some(l) => l.create_snapshot(pool, &name).map(drop),
            None => pool
                .create_snapshot(&d.name, &name, created)
                .map(drop)
                .map_err(anyhow::Error::new),
        };
        match made {
            Ok(()) => taken.push(d),
            Err(e) => {
                failure = Some(e.context(format!("creating vds/{}@{name}", d.name)));
                break;
            }
        }
    }
    let thaw_problems = frozen.thaw();
    if let Some(mut e) = failure {
        // All or nothing: the snapshots already taken go again.
        for d in &taken {
            let pool = pools.get_mut(&d.pool).expect("an instance per pool");
            let deleted = match lives.get_mut(&(d.pool.clone(), d.name.clone())) {
                Some(l) => l.delete_snapshot(&name),
                None => pool
                    .delete_snapshot(&d.name, &name)
                    .map_err(anyhow::Error::new),
            };
            if let Err(x) = deleted {
                e = e.context(format!(
                    "vds/{}@{name} could not be deleted again: {x}",
                    d.name
                ));
            }
        }
        for d in &reserved {
            snapshots::update(&home, &d.pool, |r| r.snapshots.remove(&key(&d.name, &name)))?;
        }
        if !thaw_problems.is_empty() {
            e = e.context(thaw_problems.join("; "));
        }
        let e = e.context(format!("{this} not taken"));
        set_vm(Phase::Failed, false, Some(format!("{e:#}")))?;
        return Err(e);
    }
    let problems = (!thaw_problems.is_empty()).then(|| thaw_problems.join("; "));
    for d in &cfg.disks {
        set_phase(
            &home,
            &d.pool,
            &d.name,
            &name,
            Phase::Ready,
            consistent,
            problems.clone(),
        )?;
    }
    set_vm(Phase::Ready, consistent, problems.clone())
        .context("the snapshots exist, but the VM snapshot's record was not saved")?;
    if let Some(p) = problems {
        bail!("{this} was created, but: {p}");
    }
    let doc = snapshots::vm_snapshot(&home, vm, &name)?;
    match args.output {
        OutputArg::Json => println!("{}", serde_json::to_string_pretty(&vm_snapshot_json(&doc))?),
        OutputArg::Text if !args.quiet => eprintln!(
            "created {this} ({} disks, Ready, {})",
            cfg.disks.len(),
            if consistent {
                "consistent"
            } else {
                "not consistent"
            }
        ),
        OutputArg::Text => {}
    }
    Ok(())
}

/// A VM snapshot as `-o json` shows it.
pub fn vm_snapshot_json(s: &snapshots::VmSnapshot) -> serde_json::Value {
    serde_json::json!({
        "name": s.address(),
        "vm": s.vm,
        "phase": s.phase,
        "consistent": s.consistent,
        "created": snapshots::utc(s.created_unix_ms),
        "created_unix_ms": s.created_unix_ms,
        "comment": s.comment,
        "error": s.error,
        "disks": s.config.disks.iter().map(|d| serde_json::json!({
            "snapshot": format!("vds/{}@{}", d.name, s.name),
            "pool": d.pool,
        })).collect::<Vec<_>>(),
    })
}
