//! A CSI driver for the tests, with the semantics of Kubernetes' reference driver
//! (csi-driver-host-path) for block volumes: Identity, Controller, Node and
//! SnapshotMetadata over gRPC on a unix socket.
//!
//! - a volume is a fallocated file; publishing attaches it to a loop device (`losetup`)
//!   and bind-mounts the device node onto the target path (`mount --bind`); unpublishing
//!   undoes both;
//! - a snapshot is a copy of the volume's file, a volume from a snapshot a copy of that;
//! - allocated blocks are the 4 KiB blocks that are not all zeros, the delta the 4 KiB
//!   blocks that differ; FIXED_LENGTH sends each block, VARIABLE_LENGTH merges runs.
//!
//! By default it answers as the reference driver does, its known bugs included (cited
//! below from kubernetes-csi/csi-driver-host-path, commit 1f2b2e6 of July 2026):
//!
//! - ListSnapshots filtered by `source_volume_id` answers only the FIRST snapshot of that
//!   volume (in creation order), filtered by `snapshot_id` that one snapshot whatever its
//!   source, both without paging; unfiltered, all snapshots sorted by ID, paged by index;
//! - ListVolumes answers the volumes sorted by ID from a 1-based index token, cut at
//!   `max_entries` counted from the FIRST volume, and never a `next_token`;
//! - CreateSnapshot's `name` is an idempotency key: the same name of the same volume
//!   answers the existing snapshot again (with its original creation time), of another
//!   volume ALREADY_EXISTS;
//! - CreateVolume's `name` likewise (an existing volume at least as large is answered
//!   again); a block volume's file is `fallocate -l <capacity/MiB>M`, whole MiB rounded
//!   DOWN (under 1 MiB fails), while the volume's capacity is recorded and answered as
//!   asked: the published device is shorter than the capacity unless it is whole MiB.
//!
//! [`Behaviour`] turns on the broken or hostile answers the tests need. The server keeps
//! a record of what is staged, published and attached, so a test can check that nothing
//! stays behind; dropping it unmounts and detaches whatever does.
#![allow(dead_code)]

use bytes::Bytes;
use prost::Message;
use snapport_csi::msg::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const BLOCK: u64 = 4096;

/// What the server does wrong, on purpose.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// VARIABLE_LENGTH block metadata (runs merged) instead of FIXED_LENGTH.
    pub variable_length: bool,
    /// Ranges per message when the request's `max_results` is 0.
    pub default_max_results: usize,
    /// The first two ranges of a stream swapped.
    pub unsorted: bool,
    /// A range that overlaps the one before it.
    pub overlapping: bool,
    /// `volume_capacity_bytes` one block more than the volume.
    pub wrong_capacity: bool,
    /// This many metadata streams are cut (HTTP/2 reset) after their first message.
    pub cut_streams: usize,
    /// SnapshotMetadata answers UNIMPLEMENTED.
    pub no_snapshot_metadata: bool,
    /// NodePublishVolume makes the target a symbolic link to this path instead.
    pub publish_outside: Option<PathBuf>,
    /// NodePublishVolume publishes a loop device one block shorter than the volume.
    pub short_device: bool,
    /// The controller has PUBLISH_UNPUBLISH_VOLUME: volumes must be attached to the node
    /// (ControllerPublishVolume) before staging, with the publish_context it answers.
    pub attach: bool,
    /// The node has no STAGE_UNSTAGE_VOLUME: NodeStageVolume is refused.
    pub no_stage: bool,
    /// Listings page as CSI asks (unlike the reference ListVolumes), and unfiltered
    /// ListVolumes and ListSnapshots pages hold at most this many entries (0: as asked).
    pub list_page: usize,
    /// Unfiltered ListVolumes and ListSnapshots answer next_token "1" forever.
    pub endless_list: bool,
    /// Unfiltered ListVolumes and ListSnapshots answer their first page again and again,
    /// each time with a new next_token.
    pub looping_list: bool,
    /// ListVolumes and ListSnapshots answer UNIMPLEMENTED (no LIST_* capability).
    pub no_list: bool,
    /// CreateVolume rounds capacities up to a multiple of this many bytes, answering and
    /// keeping the rounded size (a driver with an allocation unit); 0: as the reference.
    pub round_up: u64,
    /// Metadata streams wait this long before their first message.
    pub stall: Duration,
    /// CreateSnapshot of this source volume answers UNAVAILABLE, having made nothing (a
    /// failure to inject half-way through a VM snapshot).
    pub fail_snapshots_of: Option<String>,
    /// CreateSnapshot of this source volume makes the snapshot, then waits a minute
    /// before answering (a client killed meanwhile never learns the ID).
    pub stall_snapshots_of: Option<String>,
}

impl Behaviour {
    /// Whether unfiltered listings page by this server's own rules (`list_page`,
    /// `endless_list`, `looping_list`) instead of as the reference does.
    fn pages(&self) -> bool {
        self.list_page > 0 || self.endless_list || self.looping_list
    }
}

#[derive(Debug, Clone)]
pub struct Vol {
    pub id: String,
    pub name: String,
    pub file: PathBuf,
    pub capacity: u64,
    /// The snapshot it was created from.
    pub source: Option<String>,
    /// A read-only volume from a snapshot shares the snapshot's file (a copy-on-write
    /// driver's cheap clone): deleting it leaves the file.
    pub shared: bool,
}

#[derive(Debug, Clone)]
pub struct Snap {
    pub id: String,
    /// CreateSnapshot's name: the idempotency key.
    pub name: String,
    pub source: String,
    pub file: PathBuf,
    pub size: u64,
    /// When it was taken (answered again by a repeated CreateSnapshot and by listings).
    pub created: Timestamp,
    /// Its place in creation order: the reference keeps snapshots in a list, appended.
    pub seq: u32,
}

#[derive(Debug, Default)]
pub struct State {
    pub volumes: BTreeMap<String, Vol>,
    pub snapshots: BTreeMap<String, Snap>,
    /// volume ID -> node it is attached to (ControllerPublishVolume)
    pub attached: BTreeMap<String, String>,
    /// staging path -> volume ID
    pub staged: BTreeMap<String, String>,
    /// target path -> (volume ID, loop device)
    pub published: BTreeMap<String, (String, String)>,
    pub behaviour: Behaviour,
    /// Every method called, in order.
    pub calls: Vec<String>,
    /// The `starting_offset` of every block-metadata request, in order.
    pub starting_offsets: Vec<i64>,
    counter: u32,
    /// Block-metadata answers by request (snapshots never change).
    ranges: BTreeMap<(String, String), Vec<(u64, u64)>>,
}

pub struct CsiServer {
    pub socket: PathBuf,
    pub dir: PathBuf,
    pub state: Arc<Mutex<State>>,
}

type Status = (i32, String);

fn status(code: i32, text: impl Into<String>) -> Status {
    (code, text.into())
}

fn run(cmd: &str, args: &[&str]) -> Result<String, Status> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| status(13, format!("{cmd}: {e}")))?;
    if !out.status.success() {
        return Err(status(
            13,
            format!(
                "{cmd} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Unmounts `target`, retrying for a moment while it is busy: a process another test
/// thread forks holds copies of every descriptor until it execs.
fn umount(target: &str) -> Result<(), Status> {
    let started = std::time::Instant::now();
    loop {
        match run("umount", &[target]) {
            Err(e) if e.1.contains("busy") && started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r.map(|_| ()),
        }
    }
}

/// Detaches a loop device and waits until it is gone: `losetup -d` only marks a device
/// that somebody (udev probing it) still holds, which then lingers for a moment.
fn detach(dev: &str) -> Result<(), Status> {
    run("losetup", &["-d", dev])?;
    let started = std::time::Instant::now();
    while run("losetup", &[dev]).is_ok() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err(status(13, format!("{dev} stays attached")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl CsiServer {
    /// Serves in `dir` (volumes, snapshots and the socket live there).
    pub fn start(dir: &Path) -> CsiServer {
        std::fs::create_dir_all(dir.join("volumes")).unwrap();
        std::fs::create_dir_all(dir.join("snapshots")).unwrap();
        let socket = dir.join("csi.sock");
        let state = Arc::new(Mutex::new(State::default()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(async { tokio::net::UnixListener::bind(&socket).unwrap() });
        let shared = state.clone();
        let base = dir.to_path_buf();
        std::thread::spawn(move || {
            rt.block_on(async move {
                while let Ok((io, _)) = listener.accept().await {
                    let (state, base) = (shared.clone(), base.clone());
                    tokio::spawn(async move {
                        let Ok(mut conn) = h2::server::handshake(io).await else {
                            return;
                        };
                        while let Some(Ok((req, respond))) = conn.accept().await {
                            let (state, base) = (state.clone(), base.clone());
                            tokio::spawn(async move {
                                let _ = answer(req, respond, state, base).await;
                            });
                        }
                    });
                }
            })
        });
        CsiServer {
            socket,
            dir: dir.to_path_buf(),
            state,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.state.lock().unwrap().behaviour)
    }

    /// Makes a volume of `size` bytes as CreateVolume would; returns its ID.
    pub fn create_volume(&self, name: &str, size: u64) -> String {
        let mut s = self.state.lock().unwrap();
        create_volume(&mut s, &self.dir, name, size, 0, None, false)
            .unwrap()
            .id
    }

    /// One call answered as over gRPC (without the transport): for tests that pin this
    /// driver's answers to the reference driver's.
    pub fn call<Q: Message, R: Message + Default>(
        &self,
        method: &str,
        request: &Q,
    ) -> Result<R, (i32, String)> {
        let reply = unary(method, &request.encode_to_vec(), &self.state, &self.dir)?;
        Ok(R::decode(&reply[..]).expect("the server's own answer decodes"))
    }

    /// Every snapshot the driver holds, in creation order.
    pub fn snapshots(&self) -> Vec<Snap> {
        let mut all: Vec<Snap> = self
            .state
            .lock()
            .unwrap()
            .snapshots
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|x| x.seq);
        all
    }

    /// The snapshots of `volume` the driver holds, in creation order.
    pub fn snapshots_of(&self, volume: &str) -> Vec<Snap> {
        let mut all = self.snapshots();
        all.retain(|x| x.source == volume);
        all
    }

    /// Takes a snapshot as CreateSnapshot would; returns its ID.
    pub fn snapshot(&self, volume: &str, name: &str) -> String {
        let mut s = self.state.lock().unwrap();
        create_snapshot(&mut s, &self.dir, volume, name).unwrap().id
    }

    /// Writes `data` at `offset` straight into volume `id`'s file: for large fixtures,
    /// where a loop device per write would dominate.
    pub fn write_file(&self, id: &str, offset: u64, data: &[u8]) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.volume_file(id))
            .unwrap();
        f.write_all_at(data, offset).unwrap();
    }

    pub fn volume_file(&self, id: &str) -> PathBuf {
        self.state.lock().unwrap().volumes[id].file.clone()
    }

    pub fn snapshot_file(&self, id: &str) -> PathBuf {
        self.state.lock().unwrap().snapshots[id].file.clone()
    }

    /// Writes `data` at `offset` of volume `id` as a workload does: through the device
    /// published for it (a loop device bind-mounted onto a target path), then unpublished.
    pub fn write(&self, id: &str, offset: u64, data: &[u8]) {
        use std::io::{Seek, SeekFrom, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let file = self.volume_file(id);
        let target = self.dir.join(format!("workload-{id}.block"));
        let dev = run("losetup", &["-f", "--show", file.to_str().unwrap()]).unwrap();
        std::fs::write(&target, b"").unwrap();
        let target = target.to_str().unwrap();
        run("mount", &["--bind", &dev, target]).unwrap();
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_SYNC)
                .open(target)
                .unwrap();
            f.seek(SeekFrom::Start(offset)).unwrap();
            f.write_all(data).unwrap();
            f.sync_all().unwrap();
        }
        umount(target).unwrap();
        std::fs::remove_file(target).unwrap();
        detach(&dev).unwrap();
    }

    /// What is still staged or published, and the loop devices still attached to any of
    /// the server's files: all empty after a clean run.
    pub fn leftovers(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        let mut out: Vec<String> = s.staged.keys().map(|k| format!("staged at {k}")).collect();
        out.extend(s.attached.keys().map(|k| format!("{k} attached")));
        out.extend(s.published.keys().map(|k| format!("published at {k}")));
        // Any loop device on a file of this driver, deleted volumes' files included
        // (losetup lists those as "PATH (deleted)").
        let dir = self.dir.display().to_string();
        let attached = run(
            "losetup",
            &[
                "--list",
                "--noheadings",
                "--raw",
                "--output",
                "NAME,BACK-FILE",
            ],
        )
        .expect("losetup --list");
        out.extend(
            attached
                .lines()
                .filter(|l| l.split_once(' ').is_some_and(|(_, f)| f.starts_with(&dir)))
                .map(|l| format!("loop device still attached: {l}")),
        );
        out
    }

    pub fn calls(&self, method: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.ends_with(method))
            .count()
    }
}

impl Drop for CsiServer {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap();
        let targets: Vec<String> = s.published.keys().cloned().collect();
        for t in targets {
            let _ = unpublish(&mut s, &t);
        }
        // A failed test leaves no staging folder either.
        for (path, _) in std::mem::take(&mut s.staged) {
            let _ = std::fs::remove_dir(path);
        }
    }
}

/// The node ID NodeGetInfo answers.
const NODE: &str = "node-1";

/// Where volumes must be attached first, the attachment and its publish_context.
fn check_attached(
    s: &State,
    volume: &str,
    context: &BTreeMap<String, String>,
) -> Result<(), Status> {
    if !s.behaviour.attach {
        return Ok(());
    }
    let token = format!("attach-{volume}");
    if s.attached.get(volume).map(String::as_str) != Some(NODE)
        || context.get("attachment") != Some(&token)
    {
        return Err(status(
            9,
            format!("volume {volume} is not attached to this node (ControllerPublishVolume)"),
        ));
    }
    Ok(())
}

fn next_id(s: &mut State, prefix: &str) -> String {
    s.counter += 1;
    format!("{prefix}-{:04}", s.counter)
}

const MIB: u64 = 1 << 20;

/// CreateVolume as the reference does it (pkg/hostpath/controllerserver.go, CreateVolume,
/// and pkg/hostpath/hostpath.go, createVolume): `size` is the capacity asked (or `limit`
/// when only a limit is given).
fn create_volume(
    s: &mut State,
    dir: &Path,
    name: &str,
    size: u64,
    limit: u64,
    from: Option<&str>,
    read_only: bool,
) -> Result<Vol, Status> {
    let mut size = if size == 0 && limit > 0 { limit } else { size };
    if limit > 0 && size > limit {
        return Err(status(3, "capacity cannot exceed limit"));
    }
    // CreateVolume: "Need to check for already existing volume name": an existing volume
    // at least as large (and within the limit) is answered again, with its own capacity.
    if let Some(v) = s.volumes.values().find(|v| v.name == name) {
        if v.capacity < size || (limit > 0 && v.capacity > limit) {
            return Err(status(
                6,
                format!("Volume with the same name: {name} but with different size already exist"),
            ));
        }
        if let (Some(from), Some(had)) = (from, v.source.as_deref()) {
            if from != had {
                return Err(status(6, "existing volume source snapshot id not matching"));
            }
        }
        return Ok(v.clone());
    }
    let id = next_id(s, "pvc");
    let mut file = dir.join("volumes").join(format!("{id}.img"));
    let mut shared = false;
    match from {
        Some(snap) => {
            // loadFromSnapshot: the snapshot must fit, then `dd if=SNAPSHOT of=VOLUME`
            // makes the volume's file a copy of the snapshot's.
            let snap = s
                .snapshots
                .get(snap)
                .ok_or_else(|| status(5, format!("no snapshot {snap}")))?;
            if snap.size > size {
                return Err(status(
                    3,
                    format!(
                        "snapshot {} size {} is greater than requested volume size {size}",
                        snap.id, snap.size
                    ),
                ));
            }
            if read_only {
                file = snap.file.clone();
                shared = true;
            } else {
                std::fs::copy(&snap.file, &file).map_err(|e| status(13, e.to_string()))?;
            }
        }
        None if s.behaviour.round_up > 0 => {
            size = size.next_multiple_of(s.behaviour.round_up);
            run(
                "fallocate",
                &["-l", &size.to_string(), file.to_str().unwrap()],
            )?;
        }
        None => {
            // createVolume: `fallocate -l fmt.Sprintf("%dM", cap/mib)`: whole MiB, rounded
            // down; 0M (under 1 MiB) fails. The capacity recorded stays `size`. (A plain
            // Go error: gRPC's UNKNOWN.)
            let megs = format!("{}M", size / MIB);
            run("fallocate", &["-l", &megs, file.to_str().unwrap()])
                .map_err(|e| status(2, format!("failed to create block device: {}", e.1)))?;
        }
    }
    let v = Vol {
        id: id.clone(),
        name: name.into(),
        file,
        capacity: size,
        source: from.map(str::to_string),
        shared,
    };
    s.volumes.insert(id, v.clone());
    Ok(v)
}

/// CreateSnapshot as the reference does it (pkg/hostpath/controllerserver.go,
/// CreateSnapshot): the name is looked up first (state.GetSnapshotByName, the first
/// snapshot of that name): of the same volume, that snapshot is answered again as it
/// was, creation time included; of another volume, ALREADY_EXISTS. A new snapshot is
/// `cp` of the volume's file, its size the volume's capacity.
fn create_snapshot(s: &mut State, dir: &Path, volume: &str, name: &str) -> Result<Snap, Status> {
    let mut same_name: Vec<&Snap> = s.snapshots.values().filter(|x| x.name == name).collect();
    same_name.sort_by_key(|x| x.seq);
    if let Some(snap) = same_name.first() {
        if snap.source == volume {
            return Ok((*snap).clone());
        }
        return Err(status(
            6,
            format!(
                "snapshot with the same name: {name} but with different SourceVolumeId already exist"
            ),
        ));
    }
    let v = s
        .volumes
        .get(volume)
        .ok_or_else(|| {
            status(
                5,
                format!("volume id {volume} does not exist in the volumes list"),
            )
        })?
        .clone();
    let id = next_id(s, "snap");
    let seq = s.counter;
    let file = dir.join("snapshots").join(format!("{id}.img"));
    std::fs::copy(&v.file, &file).map_err(|e| status(13, e.to_string()))?;
    let snap = Snap {
        id: id.clone(),
        name: name.into(),
        source: volume.into(),
        file,
        size: v.capacity,
        created: timestamp(),
        seq,
    };
    s.snapshots.insert(id, snap.clone());
    Ok(snap)
}

fn unpublish(s: &mut State, target: &str) -> Result<(), Status> {
    let Some((_, dev)) = s.published.get(target).cloned() else {
        // Nothing published there: fine (idempotent), but never leave a stray link or file.
        let _ = std::fs::remove_file(target);
        return Ok(());
    };
    if std::fs::symlink_metadata(target).is_ok_and(|m| m.file_type().is_symlink()) {
        let _ = std::fs::remove_file(target);
    } else {
        umount(target)?;
        let _ = std::fs::remove_file(target);
    }
    if !dev.is_empty() {
        detach(&dev)?;
    }
    // Forgotten only once undone: a failed unmount stays on the record.
    s.published.remove(target);
    Ok(())
}

fn timestamp() -> Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Timestamp {
        seconds: now.as_secs() as i64,
        nanos: now.subsec_nanos() as i32,
    }
}

fn snapshot_msg(snap: &Snap) -> Snapshot {
    Snapshot {
        size_bytes: snap.size as i64,
        snapshot_id: snap.id.clone(),
        source_volume_id: snap.source.clone(),
        creation_time: Some(snap.created.clone()),
        ready_to_use: true,
    }
}

fn volume_msg(v: &Vol) -> Volume {
    Volume {
        capacity_bytes: v.capacity as i64,
        volume_id: v.id.clone(),
        ..Default::default()
    }
}

fn decode<M: Message + Default>(body: &[u8]) -> Result<M, Status> {
    M::decode(body).map_err(|e| status(3, format!("bad request: {e}")))
}

/// Pages a listing: entries from `token` (an index), `max` at most, or fewer where the
/// behaviour says (`list_page`); `endless_list` hands out the same token forever,
/// `looping_list` the first page with ever new tokens.
fn page<T: Clone>(
    all: &[T],
    token: &str,
    max: i32,
    behaviour: &Behaviour,
) -> Result<(Vec<T>, String), Status> {
    let from: usize = if token.is_empty() {
        0
    } else {
        token.parse().map_err(|_| status(10, "bad token"))?
    };
    let mut max = if max <= 0 {
        all.len().max(1)
    } else {
        max as usize
    };
    if behaviour.list_page > 0 {
        max = max.min(behaviour.list_page);
    }
    if behaviour.looping_list {
        let to = max.min(all.len());
        return Ok((all[..to].to_vec(), (from + 1).to_string()));
    }
    let to = (from + max).min(all.len());
    let next = if behaviour.endless_list {
        "1".to_string()
    } else if to < all.len() {
        to.to_string()
    } else {
        String::new()
    };
    Ok((all.get(from..to).unwrap_or(&[]).to_vec(), next))
}

/// ListVolumes as the reference answers it (pkg/hostpath/controllerserver.go,
/// ListVolumes): volumes sorted by ID; the token is a 1-based index ("1" when empty,
/// ABORTED when not a number); entries from there while `index < max_entries` (counted
/// from the FIRST volume, all when 0 or more than there are), and never a next_token: a
/// client asking fewer than there are sees a listing that looks complete.
fn reference_volume_list(all: &[Vol], r: &ListVolumesRequest) -> Result<Vec<Vol>, Status> {
    let token = if r.starting_token.is_empty() {
        "1"
    } else {
        &r.starting_token
    };
    let start: i64 = token
        .parse::<i32>()
        .map_err(|_| status(10, "The type of startingToken should be integer"))?
        .into();
    let len = all.len() as i64;
    let max = match i64::from(r.max_entries) {
        m if m > len || m <= 0 => len,
        m => m,
    };
    if start < 1 {
        // Go would index volumes[-1] and panic; a status here.
        return Err(status(13, format!("startingToken {start}")));
    }
    Ok((start - 1..len.min(max))
        .map(|i| all[i as usize].clone())
        .collect())
}

/// Unfiltered ListSnapshots as the reference pages it (pkg/hostpath/controllerserver.go,
/// ListSnapshots, case 3): the token is a 0-based index (ABORTED when not a number or
/// past the end), `max_entries` 0 means all that remain, next_token where more remain.
fn reference_snapshot_page(
    all: &[Snap],
    r: &ListSnapshotsRequest,
) -> Result<(Vec<Snap>, String), Status> {
    let len = all.len();
    let start = if r.starting_token.is_empty() {
        0
    } else {
        r.starting_token
            .parse::<u32>()
            .map_err(|_| status(10, format!("startingToken={} !< int32", r.starting_token)))?
            as usize
    };
    if start > len {
        return Err(status(
            10,
            format!("startingToken={start} > len(snapshots)={len}"),
        ));
    }
    let rem = len - start;
    let max = match r.max_entries {
        m if m <= 0 || m as usize > rem => rem,
        m => m as usize,
    };
    let end = start + max;
    let next = if end < len {
        end.to_string()
    } else {
        String::new()
    };
    Ok((all[start..end].to_vec(), next))
}

/// A unary method's answer.
fn unary(method: &str, body: &[u8], state: &Mutex<State>, dir: &Path) -> Result<Vec<u8>, Status> {
    let mut s = state.lock().unwrap();
    s.calls.push(method.to_string());
    if s.behaviour.no_list && method.contains("/List") {
        return Err(status(12, format!("{method} is not offered")));
    }
    Ok(match method {
        "/csi.v1.Identity/GetPluginInfo" => GetPluginInfoResponse {
            name: "hostpath.csi.test".into(),
            vendor_version: "1".into(),
        }
        .encode_to_vec(),
        "/csi.v1.Controller/CreateVolume" => {
            let r: CreateVolumeRequest = decode(body)?;
            if !r.volume_capabilities.iter().all(|c| c.is_block())
                || r.volume_capabilities.is_empty()
            {
                return Err(status(3, "the tests' driver serves block volumes only"));
            }
            // CreateVolume: negative bytes are refused; no alignment is asked for.
            let (size, limit) = r
                .capacity_range
                .map(|c| (c.required_bytes, c.limit_bytes))
                .unwrap_or((0, 0));
            if size < 0 || limit < 0 {
                return Err(status(3, "cannot have negative capacity"));
            }
            let from = match r.volume_content_source.and_then(|c| c.source) {
                Some(ContentSource::Snapshot(snap)) => Some(snap.snapshot_id),
                Some(ContentSource::Volume(_)) => return Err(status(12, "no volume cloning")),
                None => None,
            };
            // Read-only access modes only: the clone may share the snapshot's bytes.
            let read_only = r.volume_capabilities.iter().all(|c| {
                c.access_mode
                    .as_ref()
                    .is_some_and(|m| m.mode == AccessMode::SingleNodeReaderOnly as i32)
            });
            if r.name.is_empty() {
                return Err(status(3, "Name missing in request"));
            }
            let v = create_volume(
                &mut s,
                dir,
                &r.name,
                size as u64,
                limit as u64,
                from.as_deref(),
                read_only,
            )?;
            CreateVolumeResponse {
                volume: Some(volume_msg(&v)),
            }
            .encode_to_vec()
        }
        "/csi.v1.Controller/DeleteVolume" => {
            let r: DeleteVolumeRequest = decode(body)?;
            if s.published.values().any(|(v, _)| *v == r.volume_id) {
                return Err(status(9, format!("volume {} is published", r.volume_id)));
            }
            if let Some(v) = s.volumes.remove(&r.volume_id) {
                if !v.shared {
                    std::fs::remove_file(&v.file).map_err(|e| status(13, e.to_string()))?;
                }
            }
            Empty {}.encode_to_vec()
        }
        "/csi.v1.Controller/ListVolumes" => {
            let r: ListVolumesRequest = decode(body)?;
            let all: Vec<Vol> = s.volumes.values().cloned().collect();
            let (entries, next_token) = if s.behaviour.pages() {
                page(&all, &r.starting_token, r.max_entries, &s.behaviour)?
            } else {
                (reference_volume_list(&all, &r)?, String::new())
            };
            ListVolumesResponse {
                entries: entries
                    .iter()
                    .map(|v| ListVolumesEntry {
                        volume: Some(volume_msg(v)),
                    })
                    .collect(),
                next_token,
            }
            .encode_to_vec()
        }
        "/csi.v1.Controller/CreateSnapshot" => {
            let r: CreateSnapshotRequest = decode(body)?;
            if r.name.is_empty() {
                return Err(status(3, "Name missing in request"));
            }
            if r.source_volume_id.is_empty() {
                return Err(status(3, "SourceVolumeId missing in request"));
            }
            if s.behaviour.fail_snapshots_of.as_deref() == Some(r.source_volume_id.as_str()) {
                return Err(status(
                    14,
                    "injected failure: the storage backend is unavailable",
                ));
            }
            let snap = create_snapshot(&mut s, dir, &r.source_volume_id, &r.name)?;
            let reply = CreateSnapshotResponse {
                snapshot: Some(snapshot_msg(&snap)),
            }
            .encode_to_vec();
            if s.behaviour.stall_snapshots_of.as_deref() == Some(r.source_volume_id.as_str()) {
                drop(s);
                std::thread::sleep(Duration::from_secs(60));
                return Ok(reply);
            }
            reply
        }
        "/csi.v1.Controller/DeleteSnapshot" => {
            let r: DeleteSnapshotRequest = decode(body)?;
            if let Some(snap) = s.snapshots.remove(&r.snapshot_id) {
                std::fs::remove_file(&snap.file).map_err(|e| status(13, e.to_string()))?;
            }
            Empty {}.encode_to_vec()
        }
        "/csi.v1.Controller/ListSnapshots" => {
            // ListSnapshots (pkg/hostpath/controllerserver.go), case by case.
            let r: ListSnapshotsRequest = decode(body)?;
            let mut in_order: Vec<Snap> = s.snapshots.values().cloned().collect();
            in_order.sort_by_key(|x| x.seq);
            let (entries, next_token) = if !r.snapshot_id.is_empty() {
                // "case 1: SnapshotId is not empty": that snapshot (whatever
                // source_volume_id says) or none; no paging.
                let one = s.snapshots.get(&r.snapshot_id).cloned();
                (one.into_iter().collect(), String::new())
            } else if !r.source_volume_id.is_empty() {
                // "case 2: SourceVolumeId is not empty": the loop returns
                // convertSnapshot of the FIRST match in state order (creation order),
                // a one-entry list: the driver's known bug; no paging.
                let first = in_order
                    .into_iter()
                    .find(|x| x.source == r.source_volume_id);
                (first.into_iter().collect(), String::new())
            } else {
                // "case 3": every snapshot sorted by ID (a BTreeMap's order), paged by
                // index.
                let all: Vec<Snap> = s.snapshots.values().cloned().collect();
                if s.behaviour.pages() {
                    page(&all, &r.starting_token, r.max_entries, &s.behaviour)?
                } else {
                    reference_snapshot_page(&all, &r)?
                }
            };
            ListSnapshotsResponse {
                entries: entries
                    .iter()
                    .map(|x| ListSnapshotsEntry {
                        snapshot: Some(snapshot_msg(x)),
                    })
                    .collect(),
                next_token,
            }
            .encode_to_vec()
        }
        "/csi.v1.Controller/ControllerGetCapabilities" => {
            let mut rpcs = vec![1, 3, 5, 6];
            if s.behaviour.attach {
                rpcs.push(rpc::PUBLISH_UNPUBLISH_VOLUME);
            }
            CapabilitiesResponse::of(&rpcs).encode_to_vec()
        }
        "/csi.v1.Node/NodeGetCapabilities" => {
            let rpcs: &[i32] = if s.behaviour.no_stage {
                &[]
            } else {
                &[rpc::STAGE_UNSTAGE_VOLUME]
            };
            CapabilitiesResponse::of(rpcs).encode_to_vec()
        }
        "/csi.v1.Node/NodeGetInfo" => NodeGetInfoResponse {
            node_id: NODE.into(),
        }
        .encode_to_vec(),
        "/csi.v1.Controller/ControllerPublishVolume" => {
            let r: ControllerPublishVolumeRequest = decode(body)?;
            if !s.behaviour.attach {
                return Err(status(12, "no ControllerPublishVolume here"));
            }
            if !s.volumes.contains_key(&r.volume_id) || r.node_id != NODE {
                return Err(status(
                    5,
                    format!("no volume {} or node {}", r.volume_id, r.node_id),
                ));
            }
            s.attached.insert(r.volume_id.clone(), r.node_id);
            ControllerPublishVolumeResponse {
                publish_context: [("attachment".to_string(), format!("attach-{}", r.volume_id))]
                    .into(),
            }
            .encode_to_vec()
        }
        "/csi.v1.Controller/ControllerUnpublishVolume" => {
            let r: ControllerUnpublishVolumeRequest = decode(body)?;
            if s.published.values().any(|(v, _)| *v == r.volume_id)
                || s.staged.values().any(|v| *v == r.volume_id)
            {
                return Err(status(
                    9,
                    format!("volume {} is still in use on the node", r.volume_id),
                ));
            }
            s.attached.remove(&r.volume_id);
            Empty {}.encode_to_vec()
        }
        "/csi.v1.Node/NodeStageVolume" => {
            let r: NodeStageVolumeRequest = decode(body)?;
            if s.behaviour.no_stage {
                return Err(status(
                    9,
                    "this node does not stage volumes (no STAGE_UNSTAGE_VOLUME)",
                ));
            }
            check_attached(&s, &r.volume_id, &r.publish_context)?;
            if !s.volumes.contains_key(&r.volume_id) {
                return Err(status(5, format!("no volume {}", r.volume_id)));
            }
            std::fs::create_dir_all(&r.staging_target_path)
                .map_err(|e| status(13, e.to_string()))?;
            s.staged.insert(r.staging_target_path, r.volume_id);
            Empty {}.encode_to_vec()
        }
        "/csi.v1.Node/NodeUnstageVolume" => {
            let r: NodeUnstageVolumeRequest = decode(body)?;
            if s.published.values().any(|(v, _)| *v == r.volume_id) {
                return Err(status(
                    9,
                    format!("volume {} is still published", r.volume_id),
                ));
            }
            s.staged.remove(&r.staging_target_path);
            let _ = std::fs::remove_dir(&r.staging_target_path);
            Empty {}.encode_to_vec()
        }
        "/csi.v1.Node/NodePublishVolume" => {
            let r: NodePublishVolumeRequest = decode(body)?;
            let v = s
                .volumes
                .get(&r.volume_id)
                .ok_or_else(|| status(5, format!("no volume {}", r.volume_id)))?
                .clone();
            if !r.volume_capability.as_ref().is_some_and(|c| c.is_block()) {
                return Err(status(3, "block volumes only"));
            }
            check_attached(&s, &r.volume_id, &r.publish_context)?;
            if !s.behaviour.no_stage && s.staged.get(&r.staging_target_path) != Some(&r.volume_id) {
                return Err(status(
                    9,
                    format!(
                        "volume {} is not staged at {}",
                        r.volume_id, r.staging_target_path
                    ),
                ));
            }
            if let Some((id, _)) = s.published.get(&r.target_path) {
                if *id == r.volume_id {
                    return Ok(Empty {}.encode_to_vec());
                }
                return Err(status(6, format!("{} holds another volume", r.target_path)));
            }
            if let Some(outside) = s.behaviour.publish_outside.clone() {
                std::os::unix::fs::symlink(&outside, &r.target_path)
                    .map_err(|e| status(13, e.to_string()))?;
                s.published
                    .insert(r.target_path, (r.volume_id, String::new()));
                return Ok(Empty {}.encode_to_vec());
            }
            let file = v.file.to_str().unwrap().to_string();
            let dev = if s.behaviour.short_device {
                run(
                    "losetup",
                    &[
                        "-f",
                        "--show",
                        "--sizelimit",
                        &(v.capacity - BLOCK).to_string(),
                        &file,
                    ],
                )?
            } else {
                run("losetup", &["-f", "--show", &file])?
            };
            std::fs::write(&r.target_path, b"").map_err(|e| status(13, e.to_string()))?;
            let mut args = vec!["--bind"];
            if r.readonly {
                args = vec!["--bind", "-o", "ro"];
            }
            args.extend([dev.as_str(), r.target_path.as_str()]);
            if let Err(e) = run("mount", &args) {
                let _ = detach(&dev);
                return Err(e);
            }
            s.published.insert(r.target_path, (r.volume_id, dev));
            Empty {}.encode_to_vec()
        }
        "/csi.v1.Node/NodeUnpublishVolume" => {
            let r: NodeUnpublishVolumeRequest = decode(body)?;
            unpublish(&mut s, &r.target_path)?;
            Empty {}.encode_to_vec()
        }
        other => return Err(status(12, format!("{other} is not served"))),
    })
}

/// The 4 KiB blocks of `a` that differ from `b` (or, without `b`, that are not all
/// zeros), as (offset, length), read 1 MiB at a time.
fn scan(a: &Path, b: Option<&Path>) -> Result<Vec<(u64, u64)>, Status> {
    use std::io::Read;
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| status(13, e.to_string()));
    let mut fa = std::io::BufReader::with_capacity(1 << 20, open(a)?);
    let mut fb = match b {
        Some(b) => Some(std::io::BufReader::with_capacity(1 << 20, open(b)?)),
        None => None,
    };
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut out = Vec::new();
    let mut at = 0u64;
    loop {
        let n = fa.read(&mut x).map_err(|e| status(13, e.to_string()))?;
        if n == 0 {
            return Ok(out);
        }
        if let Some(fb) = fb.as_mut() {
            fb.read_exact(&mut y[..n])
                .map_err(|e| status(13, e.to_string()))?;
        }
        for (i, block) in x[..n].chunks(BLOCK as usize).enumerate() {
            let offset = i * BLOCK as usize;
            let differs = match fb {
                Some(_) => block != &y[offset..offset + block.len()],
                None => block.iter().any(|&v| v != 0),
            };
            if differs {
                out.push((at + offset as u64, block.len() as u64));
            }
        }
        at += n as u64;
    }
}

/// What a metadata stream sends: ranges, the volume's capacity, ranges per message.
struct Stream {
    ranges: Vec<(u64, u64)>,
    size: u64,
    per: usize,
}

/// A metadata stream's ranges: allocated blocks of one snapshot, or differing blocks of two.
fn metadata(method: &str, body: &[u8], s: &mut State) -> Result<Stream, Status> {
    let get = |s: &State, id: &str| {
        s.snapshots
            .get(id)
            .cloned()
            .ok_or_else(|| status(5, format!("no snapshot {id}")))
    };
    let (key, files, size, start, max) = match method {
        "/csi.v1.SnapshotMetadata/GetMetadataAllocated" => {
            let r: GetMetadataAllocatedRequest = decode(body)?;
            let snap = get(s, &r.snapshot_id)?;
            s.starting_offsets.push(r.starting_offset);
            let key = (String::new(), snap.id.clone());
            (
                key,
                (snap.file, None),
                snap.size,
                r.starting_offset,
                r.max_results,
            )
        }
        "/csi.v1.SnapshotMetadata/GetMetadataDelta" => {
            let r: GetMetadataDeltaRequest = decode(body)?;
            let (base, target) = (get(s, &r.base_snapshot_id)?, get(s, &r.target_snapshot_id)?);
            if base.source != target.source {
                return Err(status(3, "snapshots of different volumes"));
            }
            s.starting_offsets.push(r.starting_offset);
            let key = (base.id.clone(), target.id.clone());
            let files = (target.file, Some(base.file));
            (key, files, target.size, r.starting_offset, r.max_results)
        }
        _ => return Err(status(12, "not served")),
    };
    let ranges = match s.ranges.get(&key) {
        Some(r) => r.clone(),
        None => {
            let r = scan(&files.0, files.1.as_deref())?;
            s.ranges.insert(key, r.clone());
            r
        }
    };
    if start < 0 || start as u64 > size {
        return Err(status(11, format!("starting_offset {start}")));
    }
    let start = start as u64;
    let mut ranges: Vec<(u64, u64)> = ranges.into_iter().filter(|(o, l)| o + l > start).collect();
    if s.behaviour.variable_length {
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (o, l) in ranges {
            match merged.last_mut() {
                Some(last) if last.0 + last.1 == o => last.1 += l,
                _ => merged.push((o, l)),
            }
        }
        ranges = merged;
    }
    let per = if max > 0 {
        max as usize
    } else {
        s.behaviour.default_max_results.max(1)
    };
    Ok(Stream { ranges, size, per })
}

fn frame(msg: &[u8]) -> Bytes {
    let mut f = vec![0u8];
    f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(msg);
    f.into()
}

fn trailers(code: i32, text: &str) -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", code.to_string().parse().unwrap());
    if !text.is_empty() {
        t.insert(
            "grpc-message",
            text.replace(['\n', '\r'], " ").parse().unwrap(),
        );
    }
    t
}

async fn answer(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    state: Arc<Mutex<State>>,
    dir: PathBuf,
) -> Result<(), h2::Error> {
    let method = req.uri().path().to_string();
    let mut body = req.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    let msg = got.get(5..).unwrap_or(&[]).to_vec();
    let head = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let mut send = respond.send_response(head, false)?;
    if !method.starts_with("/csi.v1.SnapshotMetadata/") {
        let answer = tokio::task::block_in_place(|| unary(&method, &msg, &state, &dir));
        match answer {
            Ok(reply) => {
                send.send_data(frame(&reply), false)?;
                send.send_trailers(trailers(0, ""))?;
            }
            Err((code, text)) => send.send_trailers(trailers(code, &text))?,
        }
        return Ok(());
    }
    let (stream, behaviour) = {
        let mut s = state.lock().unwrap();
        s.calls.push(method.clone());
        let b = s.behaviour.clone();
        if b.no_snapshot_metadata {
            drop(s);
            send.send_trailers(trailers(12, "SnapshotMetadata is not offered"))?;
            return Ok(());
        }
        let cut = s.behaviour.cut_streams > 0;
        if cut {
            s.behaviour.cut_streams -= 1;
        }
        (
            tokio::task::block_in_place(|| metadata(&method, &msg, &mut s)).map(|r| (r, cut)),
            b,
        )
    };
    tokio::time::sleep(behaviour.stall).await;
    let (
        Stream {
            mut ranges,
            size,
            per,
        },
        cut,
    ) = match stream {
        Ok(r) => r,
        Err((code, text)) => {
            send.send_trailers(trailers(code, &text))?;
            return Ok(());
        }
    };
    if behaviour.unsorted && ranges.len() >= 2 {
        ranges.swap(0, 1);
    }
    if behaviour.overlapping && ranges.len() >= 2 {
        ranges[1].0 = ranges[0].0 + ranges[0].1 / 2;
    }
    let capacity = if behaviour.wrong_capacity {
        size + BLOCK
    } else {
        size
    };
    let kind = if behaviour.variable_length {
        BlockMetadataType::VariableLength
    } else {
        BlockMetadataType::FixedLength
    };
    let chunks: Vec<&[(u64, u64)]> = if ranges.is_empty() {
        vec![&[][..]]
    } else {
        ranges.chunks(per).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let m = BlockMetadataResponse {
            block_metadata_type: kind as i32,
            volume_capacity_bytes: capacity as i64,
            block_metadata: chunk
                .iter()
                .map(|&(o, l)| BlockMetadata {
                    byte_offset: o as i64,
                    size_bytes: l as i64,
                })
                .collect(),
        };
        send.send_data(frame(&m.encode_to_vec()), false)?;
        if cut && i == 0 {
            // Let the client take the first message before the cut, so it resumes after it.
            tokio::time::sleep(Duration::from_millis(200)).await;
            send.send_reset(h2::Reason::INTERNAL_ERROR);
            return Ok(());
        }
    }
    send.send_trailers(trailers(0, ""))?;
    Ok(())
}
