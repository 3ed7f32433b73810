//! Disks a running QEMU holds. QEMU marks every image it opens with its lock bytes
//! (`snapport_host::locks`); snapport never writes such a file itself. When a VM config
//! listing the disk names its QEMU's monitor (`"qmp"` in `vms/NAME.json`), snapshots
//! are taken and deleted by QEMU through QMP (`blockdev-snapshot-internal-sync`,
//! `blockdev-snapshot-delete-internal-sync`) on the qcow2 node whose image is the disk's
//! file (found by device and inode, not by path); an export of the running disk reads a
//! temporary snapshot, deleted again on every path, an interruption included. Without a
//! monitor, the error names the process holding the disk and the setting that would do.

use crate::qmp::Qmp;
use crate::snapshots;
use crate::{bail, Context as _, Result};
use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};

/// One connection per monitor for the whole process: QEMU serves one monitor client at
/// a time, so a VM's second disk (or a cleanup during a snapshot) must not connect again.
type Shared = std::rc::Rc<std::cell::RefCell<Qmp>>;

thread_local! {
    static MONITORS: std::cell::RefCell<std::collections::BTreeMap<PathBuf, Shared>> =
        Default::default();
}

/// The open connection to the monitor at `socket`, or a new one (also in place of a
/// connection that went out of step).
fn monitor(socket: &Path) -> Result<Shared> {
    if let Some(q) = MONITORS.with(|m| m.borrow().get(socket).cloned()) {
        if !q.borrow().is_broken() {
            return Ok(q);
        }
    }
    let q: Shared = std::rc::Rc::new(std::cell::RefCell::new(Qmp::connect(socket)?));
    MONITORS.with(|m| m.borrow_mut().insert(socket.to_path_buf(), q.clone()));
    Ok(q)
}

/// A disk held by a running QEMU whose monitor snapport can reach.
pub struct Live {
    /// The VM config that names the monitor.
    pub vm: String,
    qmp: Shared,
    /// The qcow2 node of the disk in that QEMU.
    node: String,
    disk: String,
}

/// The disk's file and whether another process holds QEMU's lock on it.
struct Held {
    path: PathBuf,
    dev: u64,
    ino: u64,
    locked: bool,
}

fn held(instance: &mut snapport_host::Instance, disk: &str) -> Result<Option<Held>> {
    let volume = instance
        .open_volume(disk, None)
        .with_context(|| format!("opening vd/{disk}"))?;
    // The volume's own file is the first device its plugin opens (backing files follow).
    let Some(device) = volume.devices().into_iter().next() else {
        return Ok(None);
    };
    let meta = device
        .file
        .metadata()
        .with_context(|| device.name.clone())?;
    if !meta.is_file() {
        return Ok(None);
    }
    let locked = snapport_host::locks::in_use(&device.file)
        .with_context(|| format!("testing the locks of {}", device.name))?;
    Ok(Some(Held {
        path: PathBuf::from(&device.name),
        dev: meta.dev(),
        ino: meta.ino(),
        locked,
    }))
}

/// `Some` when `disk` of `pool` is held by a running QEMU that a VM config's `"qmp"`
/// reaches; `None` when nothing holds it. An error, naming the holder and the setting,
/// when something holds it and no monitor is configured.
pub fn for_disk(
    home: &Path,
    pool: &str,
    instance: &mut snapport_host::Instance,
    disk: &str,
) -> Result<Option<Live>> {
    // This instance's own descriptors are not another holder: a write it just made
    // (a snapshot deleted by [`collect`]) keeps the file open and locked.
    instance.restart();
    let Some(h) = held(instance, disk)? else {
        return Ok(None);
    };
    if !h.locked {
        return Ok(None);
    }
    let vms = crate::vm::list(home)?;
    let listing: Vec<_> = vms
        .iter()
        .filter(|v| v.disks.iter().any(|d| d.pool == pool && d.name == disk))
        .collect();
    let Some((vm, socket)) = listing
        .iter()
        .find_map(|v| v.qmp.as_ref().map(|q| (v.name.clone(), q.clone())))
    else {
        let setting = match listing.first() {
            Some(v) => format!("set \"qmp\": \"/path/to/monitor.sock\" in vms/{}.json", v.name),
            None => format!(
                "list vd/{disk} of pool {pool} in a VM config (vms/NAME.json) with \"qmp\": \"/path/to/monitor.sock\""
            ),
        };
        bail!(
            "vd/{disk} ({}) is in use by {}; snapport does not write behind a running QEMU: {setting} to let snapport ask QEMU (QMP), or stop it",
            h.path.display(),
            holders(h.dev, h.ino)
        );
    };
    let qmp = monitor(&socket).with_context(|| format!("vd/{disk} is held by vm/{vm}'s QEMU"))?;
    let node = find_node(&mut qmp.borrow_mut(), h.dev, h.ino)
        .with_context(|| format!("vd/{disk} in vm/{vm}'s QEMU ({})", socket.display()))?;
    Ok(Some(Live {
        vm,
        qmp,
        node,
        disk: disk.to_string(),
    }))
}

/// A failure of QEMU's as the host's error type, for code that sorts the pool's errors:
/// QEMU's refusal (nothing made) is a conflict; a failure whose outcome is unknown (no answer,
/// the snapshot not listed after) is an I/O error, which keeps the attempt's record.
pub fn as_backend_error(e: crate::Error) -> snapport_host::Error {
    use snapport_host::BackendErrorKind as B;
    let kind = if crate::qmp::refused(&e) {
        B::Conflict
    } else {
        B::Io
    };
    snapport_host::Error::new(snapport_host::ErrorKind::Backend(kind), format!("{e:#}"))
}

/// `snapshots::remove`, through QEMU when a running QEMU holds the disk: QEMU deletes
/// the snapshot, then only the record is left to remove.
pub fn remove_snapshot(
    home: &Path,
    pool: &str,
    instance: &mut snapport_host::Instance,
    view: &crate::snapshots::View,
) -> Result<()> {
    let Some(mut live) = for_disk(home, pool, instance, &view.disk)? else {
        return crate::snapshots::remove(home, pool, instance, view);
    };
    if matches!(
        view.phase,
        crate::snapshots::Phase::Pending | crate::snapshots::Phase::InProgress
    ) {
        bail!(
            "{} is {:?}: wait for it to finish",
            view.address(),
            view.phase
        );
    }
    if let Some(backend_name) = &view.backend_name {
        live.delete_snapshot(backend_name).with_context(|| {
            format!("deleting {} through vm/{}'s QEMU", view.address(), live.vm)
        })?;
    }
    let record_only = crate::snapshots::View {
        id: None,
        backend_name: None,
        ..view.clone()
    };
    crate::snapshots::remove(home, pool, instance, &record_only)
}

/// What died or failed operations left on `disk` (on every disk with none) of `pool`,
/// removed: the backend's snapshots by their backend name, then the records. An operation
/// died when its record is `Pending` or `InProgress` and its process is gone; one failed
/// when its record is `Failed` and still names a snapshot the backend holds (a rollback
/// that could not delete). With `failed_records`, records of attempts that made nothing
/// go too (`snapshot gc`); a snapshot create keeps those, they say why it failed.
///
/// A died `InProgress` record may have no ID: the process can die while the backend
/// works. The snapshot is then found by the name it was asked under (qcow2, LVM), or
/// asked for again with the same name and date: CSI's CreateSnapshot is idempotent by
/// the key the plugin derives from them, so the driver answers the snapshot it made.
/// Returns a line per snapshot or record removed.
pub fn collect(
    home: &Path,
    pool: &str,
    instance: &mut snapport_host::Instance,
    disk: Option<&str>,
    failed_records: bool,
) -> Result<Vec<String>> {
    let listed = instance.list_snapshots(disk)?;
    // The leftovers and what to delete of each, decided under the lock.
    let (leftovers, unrecorded) = {
        let mut store = snapshots::Store::open(home, pool)?;
        let views = snapshots::merge(listed.clone(), &mut store.records, disk);
        let recorded: std::collections::BTreeSet<(String, String)> = store
            .records
            .list
            .iter()
            .filter_map(|r| Some((r.disk.clone(), r.id.clone()?)))
            .collect();
        let unrecorded: Vec<snapport_host::SnapshotInfo> = listed
            .into_iter()
            .filter(|s| !recorded.contains(&(s.volume.clone(), s.id.clone())))
            .collect();
        let mut leftovers = Vec::new();
        for r in &mut store.records.list {
            if disk.is_some_and(|d| d != r.disk) {
                continue;
            }
            let died = matches!(
                r.phase,
                snapshots::Phase::Pending | snapshots::Phase::InProgress
            ) && !r.owner.is_some_and(|o| o.alive());
            // The snapshot a record holds is the one matched to it by ID; a snapshot
            // that only shares its name (an operator's qemu-img snapshot) is not.
            let holds =
                r.id.as_ref()
                    .and_then(|_| views.iter().find(|v| v.disk == r.disk && v.name == r.name))
                    .and_then(|v| v.backend_name.clone());
            // Failed after the backend was asked: it may hold a snapshot; failed before
            // (a refused `--consistency required`): only a record, which says why.
            let failed = r.phase == snapshots::Phase::Failed
                && (holds.is_some() || r.asked || failed_records);
            if died || failed {
                leftovers.push((r.clone(), holds));
                // Nobody else takes it up meanwhile.
                r.phase = snapshots::Phase::Failed;
                r.owner = None;
            }
        }
        store.save()?;
        (leftovers, unrecorded)
    };
    let mut done = Vec::new();
    for (r, holds) in leftovers {
        let this = format!("vds/{}@{}", r.disk, r.name);
        let backend_name = match holds {
            Some(b) => Some(b),
            None if r.id.is_some() || r.phase == snapshots::Phase::Pending => None,
            // Died while the backend worked, before its answer was recorded.
            // A Failed one never asked, or asked and refused, made nothing.
            None if !r.asked => None,
            // Died while the backend worked, before its answer was recorded: the
            // snapshot asked under its name and dated by the request (qcow2, LVM take
            // the date the host gives), ...
            None => match unrecorded.iter().find(|s| {
                s.volume == r.disk
                    && s.name == r.name
                    && s.created_unix_ms.is_some()
                    && s.created_unix_ms == r.created_unix_ms
            }) {
                Some(s) => Some(s.name.clone()),
                // ... or, where the backend names snapshots by their IDs (CSI, whose
                // CreateSnapshot is idempotent by the key the plugin derives from name and
                // date), the one the same request answers again. Never through a QEMU.
                None if unrecorded
                    .iter()
                    .any(|s| s.volume == r.disk && s.name == s.id)
                    && for_disk(home, pool, instance, &r.disk)?.is_none() =>
                {
                    let created = r.created_unix_ms.unwrap_or(0);
                    let again = instance
                        .create_snapshot(&r.disk, &r.name, created)
                        .with_context(|| format!("asking the backend again for {this}, which a process that died was taking; `snapport snapshot gc vd/{}` tries again", r.disk))?;
                    Some(again.name)
                }
                None => None,
            },
        };
        if let Some(b) = &backend_name {
            let why = || {
                format!(
                    "deleting {this} (backend name {b}), left by an operation that did not finish"
                )
            };
            // A disk a running QEMU holds is written by QEMU only.
            match for_disk(home, pool, instance, &r.disk).with_context(why)? {
                Some(mut live) => live.delete_snapshot(b).with_context(why)?,
                None => instance.delete_snapshot(&r.disk, b).with_context(why)?,
            }
        }
        snapshots::update(home, pool, |records| records.remove(&r.disk, &r.name))?;
        done.push(match backend_name {
            Some(b) => {
                format!("deleted {this} (backend {b}), left by an operation that did not finish")
            }
            None => format!(
                "removed the record of {this} ({:?}; the backend holds nothing of it)",
                r.phase
            ),
        });
    }
    Ok(done)
}

/// Refuses a change that would write `disk`'s file while another process holds it.
pub fn refuse_if_held(
    instance: &mut snapport_host::Instance,
    disk: &str,
    what: &str,
) -> Result<()> {
    if let Some(h) = held(instance, disk)? {
        if h.locked {
            bail!(
                "{what}: vd/{disk} ({}) is in use by {}; stop the VM first",
                h.path.display(),
                holders(h.dev, h.ino)
            );
        }
    }
    Ok(())
}

/// The qcow2 node whose image file is the file `dev`:`ino`.
fn find_node(qmp: &mut Qmp, dev: u64, ino: u64) -> Result<String> {
    let nodes = qmp.execute("query-named-block-nodes", Some(json!({ "flat": true })))?;
    let Value::Array(nodes) = nodes else {
        bail!("query-named-block-nodes answered something other than a list");
    };
    for n in &nodes {
        let (Some(name), Some(drv), Some(file)) = (
            n.get("node-name").and_then(Value::as_str),
            n.get("drv").and_then(Value::as_str),
            n.get("file").and_then(Value::as_str),
        ) else {
            continue;
        };
        if drv != "qcow2" {
            continue;
        }
        if let Ok(m) = std::fs::metadata(file) {
            if m.dev() == dev && m.ino() == ino {
                return Ok(name.to_string());
            }
        }
    }
    bail!("no qcow2 node of this QEMU has the disk's file open")
}

impl Live {
    /// Takes snapshot `name` through QEMU and describes it as the pool's plugin reads it.
    pub fn create_snapshot(
        &mut self,
        instance: &mut snapport_host::Instance,
        name: &str,
    ) -> Result<snapport_host::SnapshotInfo> {
        self.qmp.borrow_mut().execute(
            "blockdev-snapshot-internal-sync",
            Some(json!({ "device": self.node, "name": name })),
        )?;
        // The plugin's view of the file (its size among it) is from before QEMU wrote.
        instance.restart();
        let listed = instance.list_snapshots(Some(&self.disk))?;
        match listed.into_iter().find(|s| s.name == name) {
            Some(info) => Ok(info),
            None => bail!(
                "QEMU took vds/{}@{name}, but the pool does not list it",
                self.disk
            ),
        }
    }

    /// Deletes snapshot `name` through QEMU.
    pub fn delete_snapshot(&mut self, name: &str) -> Result<()> {
        self.qmp.borrow_mut().execute(
            "blockdev-snapshot-delete-internal-sync",
            Some(json!({ "device": self.node, "name": name })),
        )?;
        Ok(())
    }

    /// A snapshot to export the running disk from, deleted when the guard drops or the
    /// process is interrupted.
    pub fn temporary_snapshot(
        mut self,
        instance: &mut snapport_host::Instance,
    ) -> Result<TemporarySnapshot> {
        let name = format!(
            "snapport-export-{}-{}",
            crate::clock::now_ms(),
            std::process::id()
        );
        // Armed before the snapshot exists: an interruption between the two deletes a
        // snapshot that may not be there, which QEMU refuses harmlessly.
        arm_signal_cleanup(self.qmp.borrow().raw_fd(), &self.node, &name);
        let made = self.create_snapshot(instance, &name);
        let guard = TemporarySnapshot {
            live: self,
            name,
            deleted: false,
        };
        made?;
        Ok(guard)
    }
}

/// A snapshot made only to be read: deleted again on every path. Call
/// [`TemporarySnapshot::delete`] to learn whether the deletion worked; a guard that is
/// only dropped deletes it too, but nobody hears of a failure (nothing here prints).
pub struct TemporarySnapshot {
    live: Live,
    /// The snapshot's name (QEMU's and the pool's).
    pub name: String,
    deleted: bool,
}

impl TemporarySnapshot {
    /// Deletes the snapshot now; the error names it, for the caller to warn with.
    pub fn delete(mut self) -> Result<()> {
        self.deleted = true;
        let deleted = self.live.delete_snapshot(&self.name);
        disarm_signal_cleanup();
        deleted.with_context(|| {
            format!(
                "the temporary snapshot vds/{}@{} was not deleted",
                self.live.disk, self.name
            )
        })
    }
}

impl Drop for TemporarySnapshot {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = self.live.delete_snapshot(&self.name);
            disarm_signal_cleanup();
        }
    }
}

/// What the signal handler sends to delete a temporary snapshot, on the connection
/// already open (QEMU serves one monitor client at a time): prepared in advance so that
/// the handler only makes system calls.
struct SignalCleanup {
    fd: std::os::fd::RawFd,
    request: Vec<u8>,
}

static SIGNAL_CLEANUP: AtomicPtr<SignalCleanup> = AtomicPtr::new(std::ptr::null_mut());

fn arm_signal_cleanup(fd: std::os::fd::RawFd, node: &str, name: &str) {
    let mut request = json!({ "execute": "blockdev-snapshot-delete-internal-sync",
                              "arguments": { "device": node, "name": name } })
    .to_string()
    .into_bytes();
    request.push(b'\n');
    let new = Box::into_raw(Box::new(SignalCleanup { fd, request }));
    // The old one (if any) is leaked: the handler may be reading it.
    SIGNAL_CLEANUP.store(new, Ordering::SeqCst);
}

fn disarm_signal_cleanup() {
    SIGNAL_CLEANUP.store(std::ptr::null_mut(), Ordering::SeqCst);
}

/// Called by the signal handler before the process exits: deletes the temporary
/// snapshot, if one is armed, and waits for QEMU's answer (events skipped; the read
/// timeout of the connection bounds each read). Async-signal-safe: write and read.
pub fn on_signal() {
    let ptr = SIGNAL_CLEANUP.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if ptr.is_null() {
        return;
    }
    // SAFETY: a leaked box, never freed.
    let c = unsafe { &*ptr };
    // SAFETY: a descriptor the armed connection owns, and live buffers.
    unsafe {
        if libc::write(c.fd, c.request.as_ptr().cast(), c.request.len()) < 0 {
            return;
        }
        let mut buf = [0u8; 8192];
        for _ in 0..1000 {
            let n = libc::read(c.fd, buf.as_mut_ptr().cast(), buf.len());
            if n <= 0 {
                return;
            }
            let got = &buf[..n as usize];
            if got.windows(8).any(|w| w == b"\"return\"")
                || got.windows(7).any(|w| w == b"\"error\"")
            {
                return;
            }
        }
    }
}

/// The processes that have the file `dev`:`ino` open, found by scanning `/proc/*/fd`
/// (QEMU's OFD locks show in /proc/locks with pid -1): "pid 123 (qemu-system-x86_64
/// -name web ...)".
fn holders(dev: u64, ino: u64) -> String {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let pid = p.file_name().to_string_lossy().into_owned();
            if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
                continue;
            };
            let holds = fds.flatten().any(|fd| {
                std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
            });
            if holds {
                found.push(format!("pid {pid} ({})", command_line(&p.path())));
            }
        }
    }
    if found.is_empty() {
        "another process (not found in /proc: another PID namespace?)".into()
    } else {
        found.join(", ")
    }
}

fn command_line(proc_dir: &Path) -> String {
    let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
    let text: String = String::from_utf8_lossy(&cmdline)
        .split('\0')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let text = if text.is_empty() {
        std::fs::read_to_string(proc_dir.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string()
    } else {
        text
    };
    let mut short: String = text
        .chars()
        .take(160)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > 160 {
        short.push_str("...");
    }
    short
}
