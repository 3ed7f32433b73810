//! `snapshot create`: a point-in-time snapshot of a disk, through the pool's plugin (for
//! qcow2 pools: a qcow2 internal snapshot `qemu-img` lists), or of all of a VM's disks
//! under one freeze; `snapshot gc`: what died or failed snapshot operations left, cleaned
//! up.
//!
//! The phases are recorded as the work goes (`Pending` while checks run, `InProgress`
//! during the backend call, then `Ready` or `Failed`), so a `get vds` in another shell
//! sees them. The per-disk limit counts every snapshot that is not `Failed`.

use crate::address::Address;
use crate::quiesce::{self, Plan};
use crate::snapshots::{self, key, Phase, Record, SnapshotDoc, VmSnapshotDoc};
use crate::Engine;
use crate::{bail, Context as _, Result};
use serde::Serialize;
use snapport_core::progress::Progress;
use snapport_host::VolumeKind;
use std::path::PathBuf;

/// What a snapshot is taken of, or cleaned up after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A disk, `vd/NAME`.
    Disk(String),
    /// A VM, `vm/NAME`: all of its disks at once.
    Vm(String),
}

impl Target {
    /// `vd/NAME` or `vm/NAME`; `what` names the command in the error for another address.
    /// A malformed address is a usage error.
    pub fn parse(s: &str, what: &str) -> Result<Target> {
        if let Some(vm) = crate::vm::parse_vm(s) {
            return Ok(Target::Vm(vm?));
        }
        match Address::parse(s)? {
            Address::Disk(d) => Ok(Target::Disk(d)),
            other => bail!("{other}: {what}"),
        }
    }
}

/// How consistent a snapshot must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Fail unless the guest's file systems are frozen or the disk is not in use.
    Required,
    /// Take it anyway and record `consistent: false` when that cannot be ensured.
    BestEffort,
}

/// A `snapshot create` request.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The disk or the VM.
    pub target: Target,
    /// The snapshot's name, unique per disk (none: the UTC date and time to the
    /// millisecond, `20261124-064012.345`, with `-2`, `-3`… if taken).
    pub name: Option<String>,
    /// How consistent it must be.
    pub consistency: Consistency,
    /// A note kept with the snapshot.
    pub comment: Option<String>,
    /// The QEMU guest agent's Unix socket: the guest's file systems are frozen while the
    /// snapshot is taken.
    pub guest_agent: Option<PathBuf>,
    /// Commands (`sh -c`) run before the snapshot, after the pools' own, in order.
    pub pre_hooks: Vec<String>,
    /// Commands run after the snapshot (and the thaw) on every path, after the pools'.
    pub post_hooks: Vec<String>,
    /// The pool of the disk (a VM's disks name their pools).
    pub pool: String,
}

impl CreateRequest {
    /// `snapport snapshot create TARGET`: in the default pool, a default name (the UTC
    /// time), best-effort consistency (an in-use disk without a guest agent is taken and
    /// recorded `consistent: false`), no hooks; change the fields for the rest.
    pub fn new(target: Target) -> CreateRequest {
        CreateRequest {
            target,
            name: None,
            consistency: Consistency::BestEffort,
            comment: None,
            guest_agent: None,
            pre_hooks: Vec::new(),
            post_hooks: Vec::new(),
            pool: crate::config::DEFAULT_POOL.to_string(),
        }
    }
}

/// A disk snapshot taken (`snapshot create vd/... -o json`: the snapshot's document).
#[derive(Debug, Clone, Serialize)]
pub struct DiskSnapshotReport {
    /// The snapshot as `get vds -o json` shows it.
    #[serde(flatten)]
    pub snapshot: SnapshotDoc,
    /// The disk was in use (and, when not consistent, its guest was not frozen).
    #[serde(skip)]
    pub in_use: bool,
}

/// What [`create`] took; its JSON is the disk snapshot's or the VM snapshot's document.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum CreateReport {
    /// A disk snapshot.
    Disk(DiskSnapshotReport),
    /// A VM snapshot.
    Vm(VmSnapshotDoc),
}

/// A `snapshot gc` request.
#[derive(Debug, Clone)]
pub struct GcRequest {
    /// The disk or VM; none: every disk of the pool.
    pub target: Option<Target>,
    /// The pool (of a disk, or of every disk).
    pub pool: String,
}

/// What `snapshot gc` removed, a line each.
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    /// "deleted vds/D@S (backend B), left by an operation that did not finish", ...
    pub removed: Vec<String>,
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

/// A new snapshot's name and parent, reserved by [`reserve`].
struct Reserved {
    name: String,
    parent: Option<String>,
    /// The backend IDs known before the snapshot is taken: an answer with one of them is
    /// an earlier snapshot, not the new one.
    known_ids: std::collections::BTreeSet<String>,
}

/// Whether `name` is taken on the disk `views` list: by a snapshot (or an attempt still
/// under way, or a failed one that left a snapshot to clean up), or as a backend ID,
/// which `vds/D@ID` also addresses.
fn taken(views: &[snapshots::View], name: &str) -> bool {
    views.iter().any(|v| {
        (v.name == name && (v.phase != Phase::Failed || v.backend_name.is_some() || v.asked))
            || v.id.as_deref() == Some(name)
    })
}

/// Pending: the checks, under the records' lock, so two creates cannot both pass the
/// limit or take one name; records `vds/DISK@NAME` as Pending, owned by this process.
/// `name` is the one asked for (taken: an error), or the first free of the default
/// name and `-2`, `-3`… after it.
#[allow(clippy::too_many_arguments)]
fn reserve(
    home: &std::path::Path,
    pool: &str,
    disk: &str,
    name: &Name,
    listed: Vec<snapport_host::SnapshotInfo>,
    limit: usize,
    comment: Option<String>,
    created: u64,
    vm: Option<&str>,
) -> Result<Reserved> {
    snapshots::update(home, pool, |records| -> Result<Reserved> {
        // The disk's snapshots as listed just now: a record's ID the backend no longer
        // lists may be given to the next snapshot (qcow2 numbers from the highest).
        let known_ids = listed.iter().map(|s| s.id.clone()).collect();
        let views = snapshots::merge(listed, records, Some(disk));
        let name = match name {
            Name::Given(n) => {
                if taken(&views, n) {
                    bail!("vds/{disk}@{n} exists already in pool {pool}; choose another --name");
                }
                n.clone()
            }
            Name::Default(base) => first_free(base, |n| taken(&views, n)),
        };
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
        // A failed attempt under this name that made nothing gives its place.
        records.remove(disk, &name);
        records.list.push(Record {
            disk: disk.to_string(),
            name: name.clone(),
            phase: Phase::Pending,
            comment,
            parent: parent.clone(),
            created_unix_ms: Some(created),
            owner: Some(snapshots::Owner::current()),
            vm: vm.map(str::to_string),
            ..Record::default()
        });
        Ok(Reserved {
            name,
            parent,
            known_ids,
        })
    })?
}

/// `e`, with what went wrong thawing the guest (the thaw comes before the error is
/// returned: nothing here prints, so a guard's drop would lose it).
fn with_thaw_problems(e: crate::Error, problems: Vec<String>) -> crate::Error {
    if problems.is_empty() {
        e
    } else {
        e.context(problems.join("; "))
    }
}

/// `base`, or the first of `base-2`, `base-3`… that is not `taken`.
fn first_free(base: &str, taken: impl Fn(&str) -> bool) -> String {
    std::iter::once(base.to_string())
        .chain((2..).map(|i| format!("{base}-{i}")))
        .find(|n| !taken(n))
        .expect("an endless list of names has a free one")
}

/// The name a snapshot is asked under.
#[derive(Clone)]
enum Name {
    /// `--name`: exactly this, or an error when taken.
    Given(String),
    /// The default: this, or this with `-2`, `-3`… when taken.
    Default(String),
}

impl Name {
    fn new(given: Option<&String>, created: u64) -> Result<Name> {
        match given {
            Some(n) => {
                check_name(n)?;
                Ok(Name::Given(n.clone()))
            }
            None => Ok(Name::Default(default_name(created))),
        }
    }
}

/// Moves `vds/DISK@NAME`'s record to `phase`; `Ready` also makes it the disk's head and
/// ends its owner's hold.
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
        if let Some(r) = records.get_mut(disk, name) {
            r.phase = phase;
            r.consistent = consistent;
            r.error = error;
            if !matches!(phase, Phase::Pending | Phase::InProgress) {
                r.owner = None;
            }
            r.asked |= phase == Phase::InProgress;
        }
        if phase == Phase::Ready {
            records.heads.insert(disk.to_string(), name.to_string());
        }
    })
}

/// Whether a failed snapshot request made nothing for sure: the backend (or QEMU)
/// refused it, or its answer was an earlier snapshot. Anything else (no answer, a
/// broken connection) may have made one.
fn refused(e: &crate::Error) -> bool {
    use snapport_host::{BackendErrorKind as B, ErrorKind as K};
    crate::qmp::refused(e)
        || e.downcast_ref::<Earlier>().is_some()
        || e.downcast_ref::<snapport_host::Error>().is_some_and(|h| {
            matches!(
                h.kind,
                K::Backend(
                    B::Unsupported
                        | B::InvalidArgument
                        | B::NotFound
                        | B::Conflict
                        | B::PermissionDenied
                        | B::Busy
                )
            )
        })
}

/// How much earlier than the request a new snapshot may be dated: clocks of this
/// machine and a backend's (a CSI driver's node) differ. An earlier snapshot handed back
/// is hours older, last night's.
const CLOCK_SLACK_MS: u64 = 60_000;

/// The backend answered a request for a new snapshot with one that existed before.
#[derive(Debug)]
struct Earlier(String);

impl std::fmt::Display for Earlier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Earlier {}

/// Records what the backend made for `vds/DISK@NAME`, after checking it is new: an
/// answer naming a snapshot that existed before the request (a known ID, or a creation
/// time more than a second before it) is an earlier snapshot handed back — a CSI driver
/// does that for a name it has seen — and is refused, never recorded as new.
fn record_made(
    home: &std::path::Path,
    pool: &str,
    disk: &str,
    name: &str,
    info: &snapport_host::SnapshotInfo,
    reserved: &Reserved,
    created: u64,
) -> Result<()> {
    let this = format!("vds/{disk}@{name}");
    let earlier = reserved.known_ids.contains(&info.id)
        || info
            .created_unix_ms
            .is_some_and(|t| t.saturating_add(CLOCK_SLACK_MS) < created);
    if earlier {
        return Err(Earlier(format!(
            "the backend answered the request for {this} with snapshot {} (created {}), which existed before the request: not a new snapshot, nothing recorded (if the backend's clock is behind this machine's by more than a minute, set it right and take the snapshot again)",
            info.id,
            info.created_unix_ms.map_or_else(|| "at an unknown time".into(), snapshots::utc)
        ))
        .into());
    }
    snapshots::update(home, pool, |records| {
        if let Some(r) = records.get_mut(disk, name) {
            r.made(info);
        }
    })
    .context("the snapshot exists, but its record was not saved")
}

/// The default snapshot name: the UTC date and time to the millisecond,
/// `20261124-064012.345`.
fn default_name(created: u64) -> String {
    let seconds = snapshots::utc(created)
        .trim_end_matches('Z')
        .replace(['-', ':'], "")
        .replace('T', "-");
    format!("{seconds}.{:03}", created % 1000)
}

/// `snapshot create`: see the module. What a died or failed attempt left on the disk
/// (the VM's disks) is cleaned up first, each line of it a stage of `progress`. A disk
/// a running QEMU holds is snapshotted by QEMU (the VM config names its monitor).
pub fn create(
    engine: &Engine,
    req: &CreateRequest,
    progress: &mut dyn Progress,
) -> Result<CreateReport> {
    let disk = match &req.target {
        Target::Vm(vm) => return create_vm(engine, req, vm, progress).map(CreateReport::Vm),
        Target::Disk(d) => d,
    };
    let target = Address::Disk(disk.clone());
    let created = snapshots::now_ms();
    let asked = Name::new(req.name.as_ref(), created)?;
    let pool_config = engine.config.pool(&req.pool)?;
    let limit = pool_config
        .snapshot_limit
        .unwrap_or(crate::config::DEFAULT_SNAPSHOT_LIMIT);
    let home = engine.config.home.clone();
    let mut pool = engine.pool(&req.pool)?;
    let volumes = pool.list_volumes()?;
    match volumes.iter().find(|v| &v.name == disk) {
        None => bail!("no {target} in pool {}", req.pool),
        Some(v) if v.kind == VolumeKind::Image => {
            bail!("vi/{disk} is a read-only image; snapshots are of disks (vd/)")
        }
        Some(_) => {}
    }
    // What a died or failed attempt left on this disk goes first.
    let cleaned = crate::live::collect(&home, &req.pool, &mut pool, Some(disk), false)
        .with_context(|| format!("cleaning up after an earlier snapshot of {target}"))?;
    for line in &cleaned {
        progress.stage(line);
    }
    // A disk a running QEMU holds is snapshotted by QEMU, or refused before any record.
    let mut live = crate::live::for_disk(&home, &req.pool, &mut pool, disk)?;
    let listed = pool.list_snapshots(Some(disk))?;

    let reserved = reserve(
        &home,
        &req.pool,
        disk,
        &asked,
        listed,
        limit,
        req.comment.clone(),
        created,
        None,
    )?;
    let name = reserved.name.clone();
    let this = format!("vds/{disk}@{name}");
    let plan = Plan {
        agent: req.guest_agent.clone(),
        pre: [&pool_config.pre_snapshot_hooks[..], &req.pre_hooks[..]].concat(),
        post: [&pool_config.post_snapshot_hooks[..], &req.post_hooks[..]].concat(),
        env: vec![
            ("SNAPPORT_POOL".into(), req.pool.clone()),
            ("SNAPPORT_DISKS".into(), disk.clone()),
            ("SNAPPORT_SNAPSHOT".into(), name.clone()),
        ],
    };
    let set = |phase: Phase, consistent: bool, error: Option<String>| {
        set_phase(&home, &req.pool, disk, &name, phase, consistent, error)
    };
    let forget = || snapshots::update(&home, &req.pool, |r| r.remove(disk, &name));
    let in_use = match pool.volume_in_use(disk) {
        Ok(b) => b,
        Err(e) => {
            let e = crate::Error::new(e).context(format!("checking whether vd/{disk} is in use"));
            forget()?;
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
    if req.consistency == Consistency::Required && !consistent {
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
    // The thaw comes on every path, its problems said with the outcome.
    if let Err(e) = set(Phase::InProgress, consistent, None) {
        return Err(with_thaw_problems(e, frozen.thaw()));
    }
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
            // A request the backend refuses outright (a raw disk, a name it rejects, a
            // disk in use, a driver unavailable) made nothing: no record. An attempt
            // whose outcome is unknown (an I/O error, no answer) stays visible as Failed.
            let e = crate::Error::new(e);
            let refused = refused(&e);
            let mut e = e.context(format!("creating {this}"));
            if !thaw_problems.is_empty() {
                e = e.context(thaw_problems.join("; "));
            }
            if refused {
                forget()?;
            } else {
                set(Phase::Failed, false, Some(format!("{e:#}")))?;
            }
            return Err(e);
        }
    };
    if let Err(e) = record_made(&home, &req.pool, disk, &name, &info, &reserved, created) {
        forget()?;
        return Err(e);
    }
    let problems = (!thaw_problems.is_empty()).then(|| thaw_problems.join("; "));
    set(Phase::Ready, consistent, problems.clone())
        .context("the snapshot exists, but its record was not saved")?;
    if let Some(p) = problems {
        bail!("{this} was created, but: {p}");
    }
    let view = snapshots::View {
        disk: disk.clone(),
        name: name.clone(),
        id: Some(info.id),
        backend_name: Some(info.name),
        size: Some(info.size),
        created_unix_ms: Some(created),
        phase: Phase::Ready,
        consistent,
        comment: req.comment.clone(),
        parent: reserved.parent.clone(),
        error: None,
        asked: true,
        vm: None,
    };
    Ok(CreateReport::Disk(DiskSnapshotReport {
        snapshot: view.doc(&req.pool),
        in_use,
    }))
}

/// `snapshot create vm/NAME`: a snapshot of every disk of the VM under one freeze, all
/// of the same name, and the VM's config kept with them (`vms/VM@NAME`). All or
/// nothing: when one disk cannot be snapshotted, the ones already taken are deleted by
/// the backend's name of each (on CSI, the snapshot ID the driver answered). Each
/// disk's snapshot ID is recorded as soon as the backend answers, so a process that dies
/// half-way leaves records the next snapshot of the VM (or `snapshot gc`) cleans up with.
fn create_vm(
    engine: &Engine,
    req: &CreateRequest,
    vm: &str,
    progress: &mut dyn Progress,
) -> Result<VmSnapshotDoc> {
    let home = engine.config.home.clone();
    let cfg = crate::vm::load(&home, vm)?;
    let created = snapshots::now_ms();
    let asked = Name::new(req.name.as_ref(), created)?;

    // One plugin instance per pool; hooks of every pool involved, each once, in order.
    let mut pools: std::collections::BTreeMap<String, snapport_host::Instance> = Default::default();
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    let mut limits = std::collections::BTreeMap::new();
    for d in &cfg.disks {
        if !pools.contains_key(&d.pool) {
            let pc = engine.config.pool(&d.pool)?;
            pre.extend(pc.pre_snapshot_hooks.iter().cloned());
            post.extend(pc.post_snapshot_hooks.iter().cloned());
            limits.insert(
                d.pool.clone(),
                pc.snapshot_limit
                    .unwrap_or(crate::config::DEFAULT_SNAPSHOT_LIMIT),
            );
            pools.insert(d.pool.clone(), engine.pool(&d.pool)?);
        }
    }
    pre.extend(req.pre_hooks.iter().cloned());
    post.extend(req.post_hooks.iter().cloned());

    // What died or failed snapshots of this VM left goes first.
    let cleaned = collect_vm(&home, vm, &mut pools, false)?;
    for line in &cleaned {
        progress.stage(line);
    }

    // The name: the one asked for, or the first default free on the VM and every disk.
    let name = match &asked {
        Name::Given(n) => n.clone(),
        Name::Default(base) => {
            let mut taken_on_disks = Vec::new();
            for d in &cfg.disks {
                let pool = pools.get_mut(&d.pool).expect("an instance per pool");
                taken_on_disks.push(snapshots::list(&home, &d.pool, pool, Some(&d.name))?);
            }
            let vm_names: Vec<String> = snapshots::update_vms(&home, |m| {
                m.values()
                    .filter(|s| s.vm == vm)
                    .map(|s| s.name.clone())
                    .collect()
            })?;
            first_free(base, |n| {
                vm_names.iter().any(|v| v == n) || taken_on_disks.iter().any(|v| taken(v, n))
            })
        }
    };
    let this = format!("vms/{vm}@{name}");
    let vkey = key(vm, &name);
    snapshots::update_vms(&home, |m| -> Result<()> {
        // A Failed one still here left nothing (collect_vm took any that did).
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
                comment: req.comment.clone(),
                error: None,
                owner: Some(snapshots::Owner::current()),
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
                if !matches!(phase, Phase::Pending | Phase::InProgress) {
                    s.owner = None;
                }
            }
        })
    };
    let forget_vm = || snapshots::update_vms(&home, |m| m.remove(&vkey));

    // Pending: every disk passes its checks, or none is reserved.
    let mut reserved: Vec<(&crate::vm::VmDisk, Reserved)> = Vec::new();
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
            let r = reserve(
                &home,
                &d.pool,
                &d.name,
                &Name::Given(name.clone()),
                listed,
                limits[&d.pool],
                req.comment.clone(),
                created,
                Some(&this),
            )?;
            reserved.push((d, r));
            in_use |= pool
                .volume_in_use(&d.name)
                .with_context(|| format!("checking whether vd/{} is in use", d.name))?;
        }
        Ok(())
    })();
    let fail_all = |reserved: &[(&crate::vm::VmDisk, Reserved)], why: String| -> Result<()> {
        for (d, _) in reserved {
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
        // Refused before anything was asked of a backend: nothing to keep a record of,
        // as for a disk.
        for (d, _) in &reserved {
            snapshots::update(&home, &d.pool, |r| r.remove(&d.name, &name))?;
        }
        forget_vm()?;
        return Err(e.context(format!("{this} not taken")));
    }

    let plan = Plan {
        agent: req.guest_agent.clone(),
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
    if req.consistency == Consistency::Required && !consistent {
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
    if let Err(e) = set_vm(Phase::InProgress, consistent, None) {
        return Err(with_thaw_problems(e, frozen.thaw()));
    }
    // The disks taken, with the backend's name of each snapshot.
    let mut taken_snapshots: Vec<(&crate::vm::VmDisk, String)> = Vec::new();
    let mut failure = None;
    for (d, r) in &reserved {
        if let Err(e) = set_phase(
            &home,
            &d.pool,
            &d.name,
            &name,
            Phase::InProgress,
            consistent,
            None,
        ) {
            failure = Some((e, None));
            break;
        }
        let pool = pools.get_mut(&d.pool).expect("an instance per pool");
        let made = match lives.get_mut(&(d.pool.clone(), d.name.clone())) {
            Some(l) => l.create_snapshot(pool, &name),
            None => pool
                .create_snapshot(&d.name, &name, created)
                .map_err(crate::Error::new),
        }
        .and_then(|info| {
            record_made(&home, &d.pool, &d.name, &name, &info, r, created)?;
            Ok(info)
        });
        match made {
            Ok(info) => taken_snapshots.push((d, info.name)),
            Err(e) => {
                // An attempt whose outcome is unknown (no answer) may have made one.
                let unknown = (!refused(&e)).then_some(*d);
                failure = Some((
                    e.context(format!("creating vds/{}@{name}", d.name)),
                    unknown,
                ));
                break;
            }
        }
    }
    let thaw_problems = frozen.thaw();
    if let Some((mut e, unknown)) = failure {
        // All or nothing: the snapshots already taken go again, by the backend's name.
        let mut left = Vec::new();
        for (d, backend_name) in &taken_snapshots {
            let pool = pools.get_mut(&d.pool).expect("an instance per pool");
            let deleted = match lives.get_mut(&(d.pool.clone(), d.name.clone())) {
                Some(l) => l.delete_snapshot(backend_name),
                None => pool
                    .delete_snapshot(&d.name, backend_name)
                    .map_err(crate::Error::new),
            };
            if let Err(x) = deleted {
                left.push(format!(
                    "vds/{}@{name} (backend {backend_name}) could not be deleted again: {x:#}",
                    d.name
                ));
            } else {
                snapshots::update(&home, &d.pool, |r| r.remove(&d.name, &name))?;
            }
        }
        for (d, _) in &reserved {
            let taken = taken_snapshots
                .iter()
                .any(|(t, _)| t.name == d.name && t.pool == d.pool);
            let asked = unknown.is_some_and(|u| u.name == d.name && u.pool == d.pool);
            if !taken && !asked {
                snapshots::update(&home, &d.pool, |r| r.remove(&d.name, &name))?;
            }
        }
        if let Some(u) = unknown {
            left.push(format!(
                "vds/{}@{name} may exist on the backend (its request got no answer)",
                u.name
            ));
        }
        if !left.is_empty() {
            e = e.context(format!(
                "{}; `snapport snapshot gc vm/{vm}` removes what is left",
                left.join("; ")
            ));
        }
        if !thaw_problems.is_empty() {
            e = e.context(thaw_problems.join("; "));
        }
        let e = e.context(format!("{this} not taken"));
        if left.is_empty() {
            forget_vm()?;
        } else {
            // What could not be deleted stays Failed, with its ID, for `snapshot gc`; so
            // does the attempt whose outcome is unknown.
            let kept = taken_snapshots.iter().map(|(d, _)| *d).chain(unknown);
            for d in kept {
                set_phase(
                    &home,
                    &d.pool,
                    &d.name,
                    &name,
                    Phase::Failed,
                    false,
                    Some(format!("{e:#}")),
                )?;
            }
            set_vm(Phase::Failed, false, Some(format!("{e:#}")))?;
        }
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
    snapshots::vm_snapshot(&home, vm, &name)?.doc(&home)
}

/// `snapshot gc [vd/NAME | vm/NAME]`: what died or failed snapshot operations left —
/// backend snapshots a rollback could not delete, attempts a killed process left
/// half-done, and records of failed attempts — removed.
pub fn gc(engine: &Engine, req: &GcRequest) -> Result<GcReport> {
    let home = engine.config.home.clone();
    let done = match &req.target {
        Some(Target::Vm(vm)) => {
            let vm = vm.clone();
            let mut pools = std::collections::BTreeMap::new();
            let stale_pools: Vec<String> = snapshots::update_vms(&home, |m| {
                m.values()
                    .filter(|s| s.vm == vm)
                    .flat_map(|s| s.config.disks.iter().map(|d| d.pool.clone()))
                    .collect()
            })?;
            let current = crate::vm::load(&home, &vm)
                .map(|c| c.disks)
                .unwrap_or_default();
            for p in stale_pools
                .into_iter()
                .chain(current.into_iter().map(|d| d.pool))
            {
                if !pools.contains_key(&p) {
                    pools.insert(p.clone(), engine.pool(&p)?);
                }
            }
            collect_vm(&home, &vm, &mut pools, true)?
        }
        Some(Target::Disk(disk)) => {
            let mut pool = engine.pool(&req.pool)?;
            crate::live::collect(&home, &req.pool, &mut pool, Some(disk), true)?
        }
        None => {
            let mut pool = engine.pool(&req.pool)?;
            crate::live::collect(&home, &req.pool, &mut pool, None, true)?
        }
    };
    Ok(GcReport { removed: done })
}

/// Cleans up what died or failed snapshots of `vm` left: the disk snapshots (through
/// their backends) and records of each of its disks, then the VM snapshot records that
/// did not finish. `pools` holds an instance of every pool the VM's disks are in; a
/// VM snapshot of disks since moved elsewhere is cleaned in the pools it names.
/// A `Failed` VM snapshot that left nothing behind (a refused `--consistency
/// required`) keeps its record, which says why, unless `failed_records`.
fn collect_vm(
    home: &std::path::Path,
    vm: &str,
    pools: &mut std::collections::BTreeMap<String, snapport_host::Instance>,
    failed_records: bool,
) -> Result<Vec<String>> {
    let mut stale: Vec<snapshots::VmSnapshot> = snapshots::update_vms(home, |m| {
        m.values()
            .filter(|s| s.vm == vm)
            .filter(|s| {
                s.phase == Phase::Failed
                    || matches!(s.phase, Phase::Pending | Phase::InProgress)
                        && !s.owner.is_some_and(|o| o.alive())
            })
            .cloned()
            .collect()
    })?;
    if !failed_records {
        // A Failed one stays unless one of its disks holds a snapshot of it.
        let mut keep = Vec::new();
        for s in &stale {
            if s.phase != Phase::Failed {
                continue;
            }
            let mut left = false;
            for d in &s.config.disks {
                left |= snapshots::update(home, &d.pool, |r| {
                    r.get(&d.name, &s.name).is_some_and(|rec| rec.id.is_some())
                })?;
            }
            if !left {
                keep.push(s.address());
            }
        }
        stale.retain(|s| !keep.contains(&s.address()));
    }
    let mut done = Vec::new();
    for s in &stale {
        for d in &s.config.disks {
            let Some(pool) = pools.get_mut(&d.pool) else {
                continue;
            };
            let ctx_line = || format!("cleaning up after {}", s.address());
            done.extend(
                crate::live::collect(home, &d.pool, pool, Some(&d.name), false)
                    .with_context(ctx_line)?,
            );
            // A disk snapshot it finished before its process died (Ready, but the VM
            // snapshot never was): all or nothing, it goes too.
            let views = snapshots::list(home, &d.pool, pool, Some(&d.name))?;
            if let Some(v) = views.iter().find(|v| {
                v.name == s.name
                    && v.vm.as_deref() == Some(s.address().as_str())
                    && v.phase == Phase::Ready
            }) {
                crate::live::remove_snapshot(home, &d.pool, pool, v).with_context(ctx_line)?;
                done.push(format!(
                    "deleted {}, part of {} that did not finish",
                    v.address(),
                    s.address()
                ));
            }
            // This VM snapshot's own records that made nothing go as well.
            snapshots::update(home, &d.pool, |r| {
                if r.get(&d.name, &s.name).is_some_and(|rec| {
                    rec.vm.as_deref() == Some(s.address().as_str())
                        && rec.id.is_none()
                        && !matches!(rec.phase, Phase::Ready)
                }) {
                    r.remove(&d.name, &s.name);
                }
            })?;
        }
        snapshots::update_vms(home, |m| m.remove(&key(&s.vm, &s.name)))?;
        done.push(format!(
            "removed the record of {} ({:?})",
            s.address(),
            s.phase
        ));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_to_the_millisecond_and_step_aside() {
        // `date -u -d @1796604311.312`
        assert_eq!(default_name(1_796_604_311_312), "20261207-004511.312");
        assert_eq!(default_name(1_796_604_311_005), "20261207-004511.005");
        let taken = ["a", "a-2"];
        assert_eq!(first_free("a", |n| taken.contains(&n)), "a-3");
        assert_eq!(first_free("b", |n| taken.contains(&n)), "b");
    }
}
