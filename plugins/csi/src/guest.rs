//! The component glue: CSI calls through the granted endpoint, published devices through
//! the host.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use prost::Message;
use snapport_csi::metadata::RangeCheck;
use snapport_csi::method;
use snapport_csi::msg::{
    rpc, BlockMetadataResponse, CapabilitiesResponse, CapacityRange, ContentSource, ControllerPublishVolumeRequest,
    ControllerPublishVolumeResponse, ControllerUnpublishVolumeRequest, CreateSnapshotRequest, CreateSnapshotResponse,
    CreateVolumeRequest, CreateVolumeResponse, DeleteSnapshotRequest, DeleteVolumeRequest, Empty,
    GetMetadataAllocatedRequest, GetMetadataDeltaRequest, ListSnapshotsRequest, ListSnapshotsResponse,
    ListVolumesRequest, ListVolumesResponse, NodeGetInfoResponse, NodePublishVolumeRequest, NodeStageVolumeRequest,
    NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, Snapshot, SnapshotSource, VolumeCapability,
    VolumeContentSource,
};

use snapport_plugin_sdk::{
    export_plugin, grpc, host, log, Access, Backend, BackendError, Capabilities, DeviceOffset, Extent, ExtentPage,
    Label, Location, LogLevel, PluginInfo, SnapshotInfo, SnapshotPhase, Volume as SdkVolume, VolumeInfo, VolumeKind,
};

/// Ranges per block-metadata message asked of the driver unless `settings.max_results`.
const DEFAULT_MAX_RESULTS: i32 = 1024;
/// Entries per ListVolumes/ListSnapshots page.
const LIST_PAGE: i32 = 256;
/// A listing longer than this many pages is a driver handing out tokens forever.
const MAX_LIST_PAGES: usize = 100_000;
/// Pages in a row that bring no entry not seen before: a driver going round in circles
/// (one or two such pages happen when entries shift between pages).
const MAX_STALE_PAGES: usize = 16;
/// Times a broken metadata stream is resumed before the export gives up.
const STREAM_RETRIES: u32 = 3;
/// A new volume may come back this much larger than asked (the WIT's promise to the host).
const MAX_ROUND_UP: u64 = 64 << 10;

/// The gRPC status code in the host's text for a failed call (`METHOD: NAME (CODE) message`).
fn status_code(text: &str) -> Option<i32> {
    text.match_indices(": ").find_map(|(i, _)| {
        let (word, rest) = text[i + 2..].split_once(' ')?;
        let named = word == "status" || (!word.is_empty() && word.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        let code = rest.strip_prefix('(')?.split_once(')')?.0;
        if named {
            code.parse().ok()
        } else {
            None
        }
    })
}

/// A failed call as the kind of error the status says (the host reports every status as I/O).
fn classify(e: BackendError) -> BackendError {
    match e {
        BackendError::Io(s) => match status_code(&s) {
            Some(5) => BackendError::NotFound(s),
            Some(12) => BackendError::Unsupported(s),
            Some(3) => BackendError::InvalidArgument(s),
            Some(6) => BackendError::Conflict(s),
            Some(11) => BackendError::OutOfRange(s),
            Some(9 | 10 | 14) => BackendError::Busy(s),
            _ => BackendError::Io(s),
        },
        other => other,
    }
}

fn decode<M: Message + Default>(method: &str, bytes: &[u8]) -> Result<M, BackendError> {
    M::decode(bytes)
        .map_err(|e| BackendError::Corrupt(format!("{method}: the driver's answer is not a valid message: {e}")))
}

/// A unary call on the granted endpoint.
fn call<Q: Message, R: Message + Default>(method: &str, request: &Q) -> Result<R, BackendError> {
    let reply = grpc::unary(method, &request.encode_to_vec()).map_err(classify)?;
    decode(method, &reply)
}

/// The folder the pool grants for staging and publishing: CSI needs absolute paths.
fn publish_folder() -> Result<String, BackendError> {
    let folder = host::setting("publish_folder").ok_or_else(|| {
        BackendError::InvalidArgument(
            "the pool sets no publish_folder: name the folder (also in `folders`) where volumes are staged and published, e.g. settings = { publish_folder = \"/var/lib/snapport/csi\" }".into(),
        )
    })?;
    if !folder.starts_with('/') {
        return Err(BackendError::InvalidArgument(format!("publish_folder {folder:?} must be an absolute path")));
    }
    Ok(folder.trim_end_matches('/').to_string())
}

fn max_results() -> i32 {
    host::setting("max_results").and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(DEFAULT_MAX_RESULTS)
}

/// A driver's ID as one path component: bytes other than `[A-Za-z0-9_-]` as `%XX`.
fn path_safe(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn non_negative(what: &str, n: i64) -> Result<u64, BackendError> {
    u64::try_from(n).map_err(|_| BackendError::Corrupt(format!("the driver says {what} is {n} bytes")))
}

/// The pool's list of `ID=BYTES` entries in setting `key` (comma-separated): what a
/// driver that cannot list (no LIST_VOLUMES or LIST_SNAPSHOTS capability) serves.
fn configured(key: &str, why: &str) -> Result<Vec<(String, u64)>, BackendError> {
    let Some(text) = host::setting(key) else {
        return Err(BackendError::Unsupported(format!(
            "{why}; name them in the pool's settings: {key} = \"ID=BYTES,ID=BYTES\""
        )));
    };
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (id, size) = entry.rsplit_once('=').unwrap_or((entry, ""));
            match size.trim().parse::<u64>() {
                Ok(size) if !id.trim().is_empty() => Ok((id.trim().to_string(), size)),
                _ => Err(BackendError::InvalidArgument(format!("settings.{key}: {entry:?} is not ID=BYTES"))),
            }
        })
        .collect()
}

/// Every volume: the driver's ListVolumes, or the pool's `volumes` setting where the
/// driver cannot list.
fn csi_volumes() -> Result<Vec<snapport_csi::msg::Volume>, BackendError> {
    match listed_volumes() {
        Err(BackendError::Unsupported(why)) => Ok(configured("volumes", &why)?
            .into_iter()
            .map(|(volume_id, size)| snapport_csi::msg::Volume {
                capacity_bytes: size as i64,
                volume_id,
                ..Default::default()
            })
            .collect()),
        r => r,
    }
}

/// Every page of a listing: `page(token)` answers one page's entries and the next
/// token (empty at the end); a token handed out twice, or pages without end, are errors.
/// An entry whose ID (`id`) came on an earlier page is left out: a driver that pages by
/// index (csi-driver-host-path does) shifts its entries when one is made or deleted
/// between two pages.
fn all_pages<T>(
    method: &str,
    id: impl Fn(&T) -> &str,
    mut page: impl FnMut(String) -> Result<(Vec<T>, String), BackendError>,
) -> Result<Vec<T>, BackendError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut token = String::new();
    let mut stale = 0;
    for _ in 0..MAX_LIST_PAGES {
        let (entries, next) = page(token.clone())?;
        let before = out.len();
        for entry in entries {
            if seen.insert(id(&entry).to_string()) {
                out.push(entry);
            }
        }
        if next.is_empty() {
            return Ok(out);
        }
        if next == token {
            return Err(BackendError::Corrupt(format!("{method} answered the same next_token {token:?} again")));
        }
        stale = if out.len() == before { stale + 1 } else { 0 };
        if stale > MAX_STALE_PAGES {
            return Err(BackendError::Corrupt(format!(
                "{method} answered {stale} pages in a row with nothing new, each with another next_token: its paging never ends"
            )));
        }
        token = next;
    }
    Err(BackendError::Corrupt(format!("{method} did not end after {MAX_LIST_PAGES} pages")))
}

/// Every volume the driver lists, in pages of `LIST_PAGE`. csi-driver-host-path's
/// ListVolumes (pkg/hostpath/controllerserver.go) cuts its answer at `max_entries` and
/// never answers a next_token, so a full page without a token may be a cut listing: the
/// volumes are then asked again with `max_entries` 0, which CSI lets a driver answer in
/// full (the reference does) or in pages it picks (followed).
fn listed_volumes() -> Result<Vec<snapport_csi::msg::Volume>, BackendError> {
    let cut = Cell::new(false);
    let list = |max_entries: i32| {
        all_pages(
            "ListVolumes",
            |v: &snapport_csi::msg::Volume| v.volume_id.as_str(),
            |starting_token| {
                let page: ListVolumesResponse =
                    call(method::LIST_VOLUMES, &ListVolumesRequest { max_entries, starting_token }).map_err(
                        |e| match e {
                            BackendError::Unsupported(s) => {
                                BackendError::Unsupported(format!("the CSI driver cannot list its volumes: {s}"))
                            }
                            e => e,
                        },
                    )?;
                let entries: Vec<_> = page.entries.into_iter().filter_map(|e| e.volume).collect();
                if max_entries > 0 && page.next_token.is_empty() && entries.len() >= max_entries as usize {
                    cut.set(true);
                }
                Ok((entries, page.next_token))
            },
        )
    };
    let volumes = list(LIST_PAGE)?;
    if !cut.get() {
        return Ok(volumes);
    }
    log(
        LogLevel::Debug,
        &format!("ListVolumes answered a full page of {LIST_PAGE} without a next_token: asking for all at once"),
    );
    list(0)
}

/// Snapshots of one source volume, or one snapshot by ID (empty: any): the driver's
/// ListSnapshots, or the pool's `snapshots` setting (`VOLUME_ID@SNAPSHOT_ID=BYTES`) where
/// it cannot list. Always the unfiltered listing, filtered here: csi-driver-host-path
/// answers a ListSnapshots filtered by source_volume_id with that volume's first
/// snapshot only (pkg/hostpath/controllerserver.go, ListSnapshots, "case 2"), and a
/// filter by snapshot_id with that snapshot whatever its source ("case 1").
fn csi_snapshots(source_volume_id: &str, snapshot_id: &str) -> Result<Vec<Snapshot>, BackendError> {
    let all = match listed_snapshots() {
        Err(BackendError::Unsupported(why)) => {
            let mut out = Vec::new();
            for (name, size) in configured("snapshots", &why)? {
                let Some((volume, id)) = name.split_once('@') else {
                    return Err(BackendError::InvalidArgument(format!(
                        "settings.snapshots: {name:?} is not VOLUME_ID@SNAPSHOT_ID=BYTES"
                    )));
                };
                out.push(Snapshot {
                    size_bytes: size as i64,
                    snapshot_id: id.into(),
                    source_volume_id: volume.into(),
                    creation_time: None,
                    ready_to_use: true,
                });
            }
            out
        }
        r => r?,
    };
    Ok(all
        .into_iter()
        .filter(|s| source_volume_id.is_empty() || s.source_volume_id == source_volume_id)
        .filter(|s| snapshot_id.is_empty() || s.snapshot_id == snapshot_id)
        .collect())
}

/// Every snapshot the driver lists (no filter: see `csi_snapshots`).
fn listed_snapshots() -> Result<Vec<Snapshot>, BackendError> {
    all_pages(
        "ListSnapshots",
        |s: &Snapshot| s.snapshot_id.as_str(),
        |starting_token| {
            let page: ListSnapshotsResponse = call(
                method::LIST_SNAPSHOTS,
                &ListSnapshotsRequest { max_entries: LIST_PAGE, starting_token, ..Default::default() },
            )?;
            Ok((page.entries.into_iter().filter_map(|e| e.snapshot).collect(), page.next_token))
        },
    )
}

fn find_volume(id: &str) -> Result<snapport_csi::msg::Volume, BackendError> {
    csi_volumes()?
        .into_iter()
        .find(|v| v.volume_id == id)
        .ok_or_else(|| BackendError::NotFound(format!("the CSI driver lists no volume {id}")))
}

fn find_snapshot(volume: &str, id: &str) -> Result<Snapshot, BackendError> {
    csi_snapshots(volume, id)?
        .into_iter()
        .next()
        .ok_or_else(|| BackendError::NotFound(format!("the CSI driver lists no snapshot {id} of volume {volume}")))
}

/// CreateSnapshot's `name`: the driver's idempotency key (a name it has seen answers
/// that snapshot again; csi-driver-host-path, CreateSnapshot), so never the user's
/// name, which would answer last night's `nightly` again or collide across volumes.
/// Unique per request: `snapport-MS-HASH`, MS the request's time (the host's clock)
/// and HASH 64-bit FNV-1a of `VOLUME \0 NAME`; a retry of the same request (same
/// volume, name and time, after a crash) gets the same snapshot back.
fn snapshot_key(volume: &str, name: &str, created_unix_ms: u64) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in volume.bytes().chain([0]).chain(name.bytes()) {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("snapport-{created_unix_ms}-{hash:016x}")
}

/// How much earlier than asked a snapshot CreateSnapshot answers may have been taken and
/// still be the one asked for (clocks of host and driver differ; an earlier snapshot
/// handed back is hours older).
const CLOCK_SLACK_MS: u64 = 60_000;

fn volume_info(name: &str, size: u64) -> VolumeInfo {
    VolumeInfo {
        name: name.into(),
        size,
        kind: VolumeKind::Disk,
        format: "csi".into(),
        allocated: None,
        parent: None,
        labels: Vec::new(),
    }
}

fn snapshot_info(s: &Snapshot) -> Result<SnapshotInfo, BackendError> {
    Ok(SnapshotInfo {
        name: s.snapshot_id.clone(),
        volume: s.source_volume_id.clone(),
        id: s.snapshot_id.clone(),
        size: non_negative("a snapshot's size", s.size_bytes)?,
        created_unix_ms: s
            .creation_time
            .as_ref()
            .and_then(|t| u64::try_from(t.seconds).ok())
            .map(|secs| secs * 1000)
            .zip(s.creation_time.as_ref().map(|t| (t.nanos.max(0) / 1_000_000) as u64))
            .map(|(a, b)| a + b),
        parent: None,
        phase: if s.ready_to_use { SnapshotPhase::Ready } else { SnapshotPhase::InProgress },
        consistent: false,
        // `create vd/NEW --from vds/V@S` is CreateVolume from the snapshot: the driver copies.
        labels: vec![Label { key: "copies".into(), value: "backend".into() }],
    })
}

/// What an open volume holds on the driver, released in reverse order when dropped: on
/// every path, failed ones included.
struct Held {
    volume_id: String,
    /// Created by this plugin for this volume: deleted on release unless `keep`.
    created: bool,
    keep: bool,
    /// The node the volume is attached to (ControllerPublishVolume), where the driver
    /// asks for that.
    attached: Option<String>,
    staged: Option<String>,
    published: Option<String>,
    /// The device the host opened at the published path: closed before unpublishing (a
    /// device somebody holds open cannot be unmounted).
    device: Option<u32>,
}

impl Held {
    fn new(volume_id: &str, created: bool) -> Held {
        Held {
            volume_id: volume_id.into(),
            created,
            keep: false,
            attached: None,
            staged: None,
            published: None,
            device: None,
        }
    }

    /// Attaches the volume to this node where the driver asks for it, stages it where
    /// the node service stages, publishes it in the granted folder, and has the host open
    /// the device published there.
    fn publish(&mut self, write: bool) -> Result<u32, BackendError> {
        let folder = publish_folder()?;
        let base = path_safe(&self.volume_id);
        let staging = format!("{folder}/snapport-{base}.staging");
        let target = format!("{folder}/snapport-{base}.block");
        let node: CapabilitiesResponse = call(method::NODE_GET_CAPABILITIES, &Empty {})?;
        let stages = node.has(rpc::STAGE_UNSTAGE_VOLUME);
        // What a killed process may have left at these paths; both calls succeed when
        // nothing is there (CSI node calls are idempotent).
        let mut leftovers = vec![("unpublishing", unpublish(&self.volume_id, &target))];
        if stages {
            leftovers.push(("unstaging", unstage(&self.volume_id, &staging)));
        }
        for (what, r) in leftovers {
            if let Err(e) = r {
                log(LogLevel::Debug, &format!("{what} leftovers of {}: {}", self.volume_id, e.message()));
            }
        }
        let capability = Some(VolumeCapability::block(write));
        let controller: CapabilitiesResponse = call(method::CONTROLLER_GET_CAPABILITIES, &Empty {})?;
        let mut publish_context = BTreeMap::new();
        if controller.has(rpc::PUBLISH_UNPUBLISH_VOLUME) {
            let node: NodeGetInfoResponse = call(method::NODE_GET_INFO, &Empty {})?;
            if node.node_id.is_empty() {
                return Err(BackendError::Corrupt("NodeGetInfo answered no node_id".into()));
            }
            // Idempotent: a restart after a killed process attaches the same way again.
            let reply: ControllerPublishVolumeResponse = call(
                method::CONTROLLER_PUBLISH_VOLUME,
                &ControllerPublishVolumeRequest {
                    volume_id: self.volume_id.clone(),
                    node_id: node.node_id.clone(),
                    volume_capability: capability.clone(),
                    readonly: false,
                },
            )?;
            self.attached = Some(node.node_id);
            publish_context = reply.publish_context;
        }
        let mut staging_path = String::new();
        if stages {
            call::<_, Empty>(
                method::NODE_STAGE_VOLUME,
                &NodeStageVolumeRequest {
                    volume_id: self.volume_id.clone(),
                    publish_context: publish_context.clone(),
                    staging_target_path: staging.clone(),
                    volume_capability: capability.clone(),
                    ..Default::default()
                },
            )?;
            self.staged = Some(staging.clone());
            staging_path = staging;
        }
        call::<_, Empty>(
            method::NODE_PUBLISH_VOLUME,
            &NodePublishVolumeRequest {
                volume_id: self.volume_id.clone(),
                publish_context,
                staging_target_path: staging_path,
                target_path: target.clone(),
                volume_capability: capability,
                readonly: !write,
                ..Default::default()
            },
        )?;
        self.published = Some(target.clone());
        let access = if write { Access::ReadWrite } else { Access::ReadOnly };
        let device = host::open(&target, None, access).map_err(|e| match e {
            BackendError::PermissionDenied(s) => BackendError::PermissionDenied(format!(
                "the driver published volume {} at {target}, which the host will not open: {s}",
                self.volume_id
            )),
            e => e,
        })?;
        self.device = Some(device);
        Ok(device)
    }

    fn release(&mut self) {
        if let Some(device) = self.device.take() {
            host::close(device);
        }
        if let Some(target) = self.published.take() {
            if let Err(e) = unpublish(&self.volume_id, &target) {
                log(LogLevel::Error, &format!("unpublishing {} from {target}: {}", self.volume_id, e.message()));
            }
        }
        if let Some(staging) = self.staged.take() {
            if let Err(e) = unstage(&self.volume_id, &staging) {
                log(LogLevel::Error, &format!("unstaging {} from {staging}: {}", self.volume_id, e.message()));
            }
        }
        if let Some(node_id) = self.attached.take() {
            let request = ControllerUnpublishVolumeRequest { volume_id: self.volume_id.clone(), node_id };
            if let Err(e) = call::<_, Empty>(method::CONTROLLER_UNPUBLISH_VOLUME, &request) {
                log(LogLevel::Error, &format!("detaching {} from this node: {}", self.volume_id, e.message()));
            }
        }
        if self.created && !self.keep {
            self.created = false;
            let r = call::<_, Empty>(method::DELETE_VOLUME, &DeleteVolumeRequest { volume_id: self.volume_id.clone() });
            if let Err(e) = r {
                log(LogLevel::Error, &format!("deleting volume {}: {}", self.volume_id, e.message()));
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

fn unpublish(volume_id: &str, target: &str) -> Result<(), BackendError> {
    call::<_, Empty>(
        method::NODE_UNPUBLISH_VOLUME,
        &NodeUnpublishVolumeRequest { volume_id: volume_id.into(), target_path: target.into() },
    )
    .map(|_| ())
}

fn unstage(volume_id: &str, staging: &str) -> Result<(), BackendError> {
    call::<_, Empty>(
        method::NODE_UNSTAGE_VOLUME,
        &NodeUnstageVolumeRequest { volume_id: volume_id.into(), staging_target_path: staging.into() },
    )
    .map(|_| ())
}

/// CreateVolume for a block volume of `size` bytes, from `snapshot` if given; answers the
/// volume's ID and capacity (checked: at least `size`, at most a little more).
fn create_block_volume(
    name: &str,
    size: u64,
    snapshot: Option<&str>,
    write: bool,
    held: &mut Option<Held>,
) -> Result<(String, u64), BackendError> {
    let bytes = i64::try_from(size).map_err(|_| BackendError::OutOfRange(format!("{size} bytes")))?;
    let reply: CreateVolumeResponse = call(
        method::CREATE_VOLUME,
        &CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
            volume_capabilities: vec![VolumeCapability::block(write)],
            volume_content_source: snapshot.map(|s| VolumeContentSource {
                source: Some(ContentSource::Snapshot(SnapshotSource { snapshot_id: s.into() })),
            }),
            ..Default::default()
        },
    )?;
    let volume = reply.volume.ok_or_else(|| BackendError::Corrupt("CreateVolume answered no volume".into()))?;
    if volume.volume_id.is_empty() {
        return Err(BackendError::Corrupt("CreateVolume answered a volume without an ID".into()));
    }
    *held = Some(Held::new(&volume.volume_id, true));
    let capacity = non_negative("the new volume's capacity", volume.capacity_bytes)?;
    if capacity < size {
        return Err(BackendError::Corrupt(format!(
            "CreateVolume made volume {} of {capacity} bytes where {size} were asked",
            volume.volume_id
        )));
    }
    if capacity - size >= MAX_ROUND_UP {
        // Drivers with a unit round up (CSI lets them, up to limit_bytes, which is 0 here).
        return Err(BackendError::InvalidArgument(format!(
            "the CSI driver made volume {} of {capacity} bytes where {size} were asked (it rounds sizes up to its unit), so it would not hold exactly the bytes verified; nothing was kept: pad the source (or --size) to a multiple of the driver's unit",
            volume.volume_id
        )));
    }
    Ok((volume.volume_id, capacity))
}

/// The published device must be exactly the volume's size: a bigger or smaller device is
/// not the volume the driver describes.
fn check_device(device: u32, volume: &str, size: u64) -> Result<(), BackendError> {
    let got = host::device_size(device)?;
    if got != size {
        return Err(BackendError::Corrupt(format!(
            "the device the driver published for {volume} holds {got} bytes, but the volume has {size}"
        )));
    }
    Ok(())
}

struct Plugin;

impl Backend for Plugin {
    type Volume = Volume;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "csi".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Kubernetes CSI volumes and snapshots through the driver's gRPC endpoint".into(),
            capabilities: Capabilities::READ
                | Capabilities::WRITE
                | Capabilities::EXTENTS
                | Capabilities::CHANGED_BLOCKS
                | Capabilities::SNAPSHOT_CREATE
                | Capabilities::SNAPSHOT_DELETE
                | Capabilities::VOLUME_CREATE
                | Capabilities::VOLUME_DELETE,
        }
    }

    fn list_volumes() -> Result<Vec<VolumeInfo>, BackendError> {
        csi_volumes()?
            .iter()
            .map(|v| Ok(volume_info(&v.volume_id, non_negative("a volume's capacity", v.capacity_bytes)?)))
            .collect()
    }

    fn list_snapshots(volume: Option<String>) -> Result<Vec<SnapshotInfo>, BackendError> {
        csi_snapshots(volume.as_deref().unwrap_or(""), "")?.iter().map(snapshot_info).collect()
    }

    fn open_volume(volume: String, snapshot: Option<String>, access: Access) -> Result<Volume, BackendError> {
        let write = access == Access::ReadWrite;
        let Some(snapshot) = snapshot else {
            let v = find_volume(&volume)?;
            let size = non_negative("the volume's capacity", v.capacity_bytes)?;
            let mut held = Held::new(&v.volume_id, false);
            let device = held.publish(write)?;
            check_device(device, &volume, size)?;
            return Ok(Volume::new(volume_info(&volume, size), held, device, None));
        };
        if write {
            return Err(BackendError::PermissionDenied(format!("vds/{volume}@{snapshot} is read-only")));
        }
        let snap = find_snapshot(&volume, &snapshot)?;
        if !snap.ready_to_use {
            return Err(BackendError::Busy(format!("snapshot {snapshot} is not ready to use yet")));
        }
        let mut size = non_negative("the snapshot's size", snap.size_bytes)?;
        if size == 0 {
            // size_bytes is optional in CSI: the source volume's capacity then.
            size = non_negative("the volume's capacity", find_volume(&volume)?.capacity_bytes)?;
        }
        // A volume made from the snapshot is what a node can publish. Its name is fixed
        // by the snapshot, so a restart after a killed export gets the same volume back
        // (CreateVolume is idempotent by name) and removes it at the end.
        let mut held = None;
        let made = create_block_volume(&format!("snapport-read-{snapshot}"), size, Some(&snapshot), false, &mut held);
        let (_, capacity) = made?;
        let mut held = held.expect("set by create_block_volume");
        if capacity != size {
            return Err(BackendError::Corrupt(format!(
                "the volume made from snapshot {snapshot} holds {capacity} bytes, but the snapshot has {size}"
            )));
        }
        let device = held.publish(false)?;
        check_device(device, &format!("snapshot {snapshot}"), size)?;
        let name = format!("{volume}@{snapshot}");
        Ok(Volume::new(volume_info(&name, size), held, device, Some(snapshot)))
    }

    fn create_volume(
        name: String,
        size: u64,
        kind: VolumeKind,
        parent: Option<String>,
    ) -> Result<Volume, BackendError> {
        if kind == VolumeKind::Image {
            return Err(BackendError::Unsupported("CSI volumes are disks (vd/); there are no images".into()));
        }
        // A parent is a snapshot `VOLUME@SNAPSHOT` the driver copies (label `copies`).
        let snapshot =
            match parent.as_deref().map(|p| p.split_once('@')) {
                None => None,
                Some(Some((volume, snapshot))) => {
                    let snap = find_snapshot(volume, snapshot)?;
                    if !snap.ready_to_use {
                        return Err(BackendError::Busy(format!("snapshot {snapshot} is not ready to use yet")));
                    }
                    Some(snap.snapshot_id)
                }
                Some(None) => return Err(BackendError::Unsupported(
                    "CSI volumes are not thin clones of images; a new volume starts from a snapshot VOLUME@SNAPSHOT"
                        .into(),
                )),
            };
        let mut held = None;
        let made = create_block_volume(&name, size, snapshot.as_deref(), true, &mut held);
        let (id, capacity) = made?;
        let mut held = held.expect("set by create_block_volume");
        let device = held.publish(true)?;
        let got = host::device_size(device)?;
        if got < capacity {
            // csi-driver-host-path makes a block volume's file whole MiB, rounded down,
            // and answers the capacity asked (pkg/hostpath/hostpath.go, createVolume:
            // `fallocate -l <capacity/MiB>M`). Dropping `held` deletes the volume again.
            return Err(BackendError::InvalidArgument(format!(
                "the CSI driver made volume {id} for {size} bytes, but the device it published holds only {got} (drivers store whole units: csi-driver-host-path whole MiB, rounded down); nothing was kept: pad the source (or --size) to a multiple of 1 MiB, or of the driver's unit"
            )));
        }
        check_device(device, &id, capacity)?;
        if id != name {
            log(LogLevel::Info, &format!("the CSI driver made volume {name} as vd/{id}"));
        }
        Ok(Volume::new(volume_info(&id, capacity), held, device, None))
    }

    fn delete_volume(name: String) -> Result<(), BackendError> {
        find_volume(&name)?;
        call::<_, Empty>(method::DELETE_VOLUME, &DeleteVolumeRequest { volume_id: name }).map(|_| ())
    }

    /// CSI names snapshots by the ID the driver picks: the snapshot is listed as
    /// `vds/VOLUME@ID`. CreateSnapshot's `name` is a key made unique for this request
    /// (`snapshot_key`, label `csi.name`); the name asked for is label `snapport.name`.
    fn create_snapshot(volume: String, name: String, created_unix_ms: u64) -> Result<SnapshotInfo, BackendError> {
        find_volume(&volume)?;
        let key = snapshot_key(&volume, &name, created_unix_ms);
        let reply: CreateSnapshotResponse = call(
            method::CREATE_SNAPSHOT,
            &CreateSnapshotRequest { source_volume_id: volume.clone(), name: key.clone() },
        )?;
        let snap = reply.snapshot.ok_or_else(|| BackendError::Corrupt("CreateSnapshot answered no snapshot".into()))?;
        if snap.source_volume_id != volume || snap.snapshot_id.is_empty() {
            return Err(BackendError::Corrupt(format!(
                "CreateSnapshot of {volume} answered snapshot {:?} of volume {:?}",
                snap.snapshot_id, snap.source_volume_id
            )));
        }
        let mut info = snapshot_info(&snap)?;
        if let Some(taken) = info.created_unix_ms.filter(|&t| t.saturating_add(CLOCK_SLACK_MS) < created_unix_ms) {
            return Err(BackendError::Conflict(format!(
                "CreateSnapshot {key} of {volume} answered snapshot {}, taken at {taken} ms since 1970, {} ms before this request: the driver answered an earlier snapshot instead of a new one",
                snap.snapshot_id,
                created_unix_ms - taken
            )));
        }
        info.labels.push(Label { key: "csi.name".into(), value: key });
        info.labels.push(Label { key: "snapport.name".into(), value: name });
        Ok(info)
    }

    fn delete_snapshot(volume: String, name: String) -> Result<(), BackendError> {
        find_snapshot(&volume, &name)?;
        call::<_, Empty>(method::DELETE_SNAPSHOT, &DeleteSnapshotRequest { snapshot_id: name }).map(|_| ())
    }
}

struct Volume {
    info: VolumeInfo,
    held: RefCell<Held>,
    device: u32,
    /// The CSI snapshot this volume shows (published through a volume made from it).
    snapshot: Option<String>,
    /// Whether the missing SnapshotMetadata service was reported already.
    warned: Cell<bool>,
}

impl Volume {
    fn new(info: VolumeInfo, held: Held, device: u32, snapshot: Option<String>) -> Volume {
        Volume { info, held: RefCell::new(held), device, snapshot, warned: Cell::new(false) }
    }

    fn size(&self) -> u64 {
        self.info.size
    }

    fn data(&self, offset: u64, length: u64) -> Extent {
        Extent { offset, length, location: Location::Data(DeviceOffset { device: self.device, offset }) }
    }

    /// Checked ranges of a block-metadata stream from `start`, at most `max` of them
    /// (adjacent ones merged), and where the next page starts if the stream had more.
    /// A stream that breaks is asked again from the end of the last range received.
    fn ranges(
        &self,
        method: &str,
        request: &dyn Fn(u64) -> Vec<u8>,
        start: u64,
        max: usize,
    ) -> Result<(Vec<(u64, u64)>, Option<u64>), BackendError> {
        let size = self.size();
        let mut check = RangeCheck::new(size, start);
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut retries = 0;
        'call: loop {
            let id = grpc::start_stream(method, &request(check.resume_offset())).map_err(classify)?;
            loop {
                let message = match grpc::next_message(id) {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => return Ok((out, None)),
                    Err(e) => {
                        // The host names a stream's failures "the stream: ...".
                        let e = classify(e);
                        let text = e.message();
                        let e =
                            e.with_message(format!("{method}: {}", text.strip_prefix("the stream: ").unwrap_or(text)));
                        if matches!(e, BackendError::Io(_) | BackendError::Busy(_)) && retries < STREAM_RETRIES {
                            retries += 1;
                            let at = check.resume_offset();
                            // Recovered from, so not a warning: the operator's log has it.
                            log(LogLevel::Info, &format!("{}; asking again from byte {at}", e.message()));
                            check = RangeCheck::new(size, at);
                            continue 'call;
                        }
                        return Err(e);
                    }
                };
                let m: BlockMetadataResponse = decode(method, &message)?;
                let got = check.message(&m).map_err(|e| BackendError::Corrupt(format!("{method}: {e}")))?;
                for (offset, length) in got {
                    let full = out.len() >= max;
                    match out.last_mut() {
                        Some(last) if last.0 + last.1 == offset => last.1 += length,
                        Some(last) if full => {
                            let next = last.0 + last.1;
                            grpc::close_stream(id);
                            return Ok((out, Some(next)));
                        }
                        _ => out.push((offset, length)),
                    }
                }
            }
        }
    }

    fn no_metadata(&self, e: BackendError, what: &str) -> BackendError {
        match e {
            BackendError::Unsupported(s) => {
                BackendError::Unsupported(format!("the CSI driver offers no SnapshotMetadata service ({s}): {what}"))
            }
            e => e,
        }
    }
}

impl SdkVolume for Volume {
    fn info(&self) -> VolumeInfo {
        self.info.clone()
    }

    /// A volume is one data extent; a snapshot is its allocated ranges (GetMetadataAllocated)
    /// with zeros between them.
    fn map_extents(&self, start: u64, max_extents: u32) -> Result<ExtentPage, BackendError> {
        let size = self.size();
        if start >= size {
            return Ok(ExtentPage { extents: Vec::new(), next_offset: None });
        }
        let Some(snapshot) = &self.snapshot else {
            return Ok(ExtentPage { extents: vec![self.data(start, size - start)], next_offset: None });
        };
        let max = max_results();
        let request = |offset: u64| {
            GetMetadataAllocatedRequest {
                snapshot_id: snapshot.clone(),
                starting_offset: offset as i64,
                max_results: max,
            }
            .encode_to_vec()
        };
        // Each range may need a zero extent before it.
        let max_ranges = (max_extents as usize / 2).max(1);
        let (ranges, next) = match self.ranges(method::GET_METADATA_ALLOCATED, &request, start, max_ranges) {
            Ok(r) => r,
            Err(BackendError::Unsupported(s)) => {
                if !self.warned.replace(true) {
                    log(
                        LogLevel::Warn,
                        &format!("the CSI driver offers no SnapshotMetadata service ({s}): snapshot {snapshot} is read whole"),
                    );
                }
                return Ok(ExtentPage { extents: vec![self.data(start, size - start)], next_offset: None });
            }
            Err(e) => return Err(e),
        };
        let end = next.unwrap_or(size);
        let mut extents = Vec::with_capacity(ranges.len() * 2 + 1);
        let mut at = start;
        for (offset, length) in ranges {
            if offset > at {
                extents.push(Extent { offset: at, length: offset - at, location: Location::Zero });
            }
            extents.push(self.data(offset, length));
            at = offset + length;
        }
        if end > at {
            extents.push(Extent { offset: at, length: end - at, location: Location::Zero });
        }
        Ok(ExtentPage { extents, next_offset: next })
    }

    /// The ranges GetMetadataDelta names between snapshot `base` and this one.
    fn changed_extents(&self, base: String, start: u64, max_extents: u32) -> Result<ExtentPage, BackendError> {
        let Some(snapshot) = &self.snapshot else {
            return Err(BackendError::Unsupported(
                "changes are known between two snapshots: export vds/VOLUME@SNAPSHOT --since BASE".into(),
            ));
        };
        if start >= self.size() {
            return Ok(ExtentPage { extents: Vec::new(), next_offset: None });
        }
        let max = max_results();
        let request = |offset: u64| {
            GetMetadataDeltaRequest {
                base_snapshot_id: base.clone(),
                target_snapshot_id: snapshot.clone(),
                starting_offset: offset as i64,
                max_results: max,
            }
            .encode_to_vec()
        };
        let (ranges, next) = self
            .ranges(method::GET_METADATA_DELTA, &request, start, (max_extents as usize).max(1))
            .map_err(|e| self.no_metadata(e, "export the whole snapshot instead of --since"))?;
        let extents = ranges.into_iter().map(|(o, l)| self.data(o, l)).collect();
        Ok(ExtentPage { extents, next_offset: next })
    }

    /// Bytes live where they are on the published device.
    fn allocate(&self, offset: u64, length: u64, _zero: bool) -> Result<Vec<Extent>, BackendError> {
        let size = self.size();
        match offset.checked_add(length) {
            Some(end) if end <= size => Ok(vec![self.data(offset, length)]),
            _ => Err(BackendError::OutOfRange(format!("{length} bytes at {offset} do not fit in {size} bytes"))),
        }
    }

    /// The bytes are on the device: flush them, and keep a volume this plugin created.
    fn commit(&self) -> Result<(), BackendError> {
        host::flush(self.device)?;
        self.held.borrow_mut().keep = true;
        Ok(())
    }
}

export_plugin!(Plugin);
