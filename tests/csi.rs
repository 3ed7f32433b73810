//! The csi plugin against the tests' CSI driver (tests/common/csi_server.rs: hostpath
//! semantics, loop devices and bind mounts, over a unix socket), through the CLI.
//!
//! Oracles: the bytes the test wrote through the device published for the volume (kept
//! in memory and compared with `cmp`), `qemu-img map` of qcow2 exports against the
//! non-zero 4 KiB blocks, the changed extents and the delta's records against the blocks
//! the test wrote between two snapshots, and the driver's own record of what is staged
//! and published (plus `losetup -j` for loop devices and `findmnt` for mounts) after
//! every run, failed and killed ones included.
//!
//! Needs root (losetup, mount --bind); CI runs as root.

mod common;
#[path = "common/conformance.rs"]
mod conformance;
#[path = "common/csi_server.rs"]
mod csi_server;

use common::{p, tool, Home};
use csi_server::{CsiServer, BLOCK};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SIZE: u64 = 16 << 20;
const POOL: &str = "k8s";

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the CSI tests need root for losetup and mount --bind");
        return false;
    }
    true
}

/// A home with the driver, the granted publish folder and the pool `k8s`.
struct Lab {
    home: Home,
    server: CsiServer,
    publish: PathBuf,
    volume: String,
    /// The volume's bytes as the test wrote them.
    image: Vec<u8>,
}

impl Lab {
    fn new(max_results: u32) -> Lab {
        let home = Home::new();
        let server = CsiServer::start(&home.path().join("csi"));
        let publish = home.path().join("publish");
        std::fs::create_dir_all(&publish).unwrap();
        let volume = server.create_volume("data", SIZE);
        let lab = Lab {
            home,
            server,
            publish,
            volume,
            image: vec![0; SIZE as usize],
        };
        lab.configure(&format!("max_results = \"{max_results}\""));
        lab
    }

    /// The pool `k8s`, with more plugin settings (`key = "value", ...`).
    fn configure(&self, settings: &str) {
        self.home.write_config(&format!(
            "[pools.{POOL}]\nplugin = \"csi\"\nfolders = [\"{dir}\"]\nwritable = true\ngrpc_endpoint = \"{endpoint}\"\nsettings = {{ publish_folder = \"{dir}\", {settings} }}\n",
            dir = self.publish.display(),
            endpoint = self.server.endpoint(),
        ));
    }

    /// Writes `len` bytes of a pattern (never a zero byte unless `zeros`) at `offset`.
    fn write(&mut self, offset: u64, len: usize, seed: u8, zeros: bool) {
        let data: Vec<u8> = (0..len)
            .map(|i| {
                if zeros {
                    0
                } else {
                    ((i as u8).wrapping_mul(31) ^ seed) | 1
                }
            })
            .collect();
        self.server.write(&self.volume, offset, &data);
        self.image[offset as usize..offset as usize + len].copy_from_slice(&data);
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let f = self.home.out(name);
        std::fs::write(&f, bytes).unwrap();
        f
    }

    fn download(&self, address: &str, extra: &[&str]) -> PathBuf {
        let out = self
            .home
            .out(&format!("{}.out", address.replace(['/', '@'], "_")));
        let _ = std::fs::remove_file(&out);
        let mut args = vec!["download", address, "-n", POOL, "-o", p(&out), "-q"];
        args.extend_from_slice(extra);
        self.ok(&args);
        out
    }

    /// `snapport ARGS`, which must succeed without an error logged on the way (a
    /// release that failed is logged, not fatal).
    fn ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.home.ok(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("error"), "snapport {args:?}: {stderr}");
        out
    }

    fn fails(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-n", POOL]);
        self.home.fails(&all)
    }

    /// Nothing staged, published or attached, and no volume but those the test made.
    fn assert_clean(&self, volumes: usize) {
        let left = self.server.leftovers();
        assert!(left.is_empty(), "left behind: {left:?}");
        let n = self.server.state.lock().unwrap().volumes.len();
        assert_eq!(n, volumes, "volumes on the driver");
        let mounts = tool("findmnt", &["-rn", "-o", "TARGET"]);
        let publish = self.publish.display().to_string();
        assert!(
            !mounts.lines().any(|m| m.starts_with(&publish)),
            "a mount stayed under {publish}:\n{mounts}"
        );
    }
}

/// The 4 KiB blocks where two images differ.
fn differing_blocks(a: &[u8], b: &[u8]) -> BTreeSet<u64> {
    a.chunks(BLOCK as usize)
        .zip(b.chunks(BLOCK as usize))
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, _)| i as u64)
        .collect()
}

/// The 4 KiB blocks that hold a non-zero byte.
fn nonzero_blocks(a: &[u8]) -> BTreeSet<u64> {
    a.chunks(BLOCK as usize)
        .enumerate()
        .filter(|(_, x)| x.iter().any(|&b| b != 0))
        .map(|(i, _)| i as u64)
        .collect()
}

/// qcow2 clusters of the exports (64 KiB).
const CLUSTER: u64 = 64 << 10;
/// The delta file's unit.
const LEAF: u64 = 64 << 10;

/// The pool's csi plugin in the host library, with the pool's grants (`max_results` 3):
/// what the engine calls, without the CLI around it.
fn instance(lab: &Lab) -> (snapport_host::Host, snapport_host::Instance) {
    let plugins = PathBuf::from(env!("CARGO_BIN_EXE_snapport"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("plugins");
    let host = snapport_host::Host::new(None).unwrap();
    let plugin = host.load(&plugins.join("csi.wasm")).unwrap();
    let publish = lab.publish.display().to_string();
    let grants = snapport_host::Grants {
        folders: vec![lab.publish.clone()],
        settings: [
            ("publish_folder".to_string(), publish),
            ("max_results".to_string(), "3".to_string()),
        ]
        .into(),
        grpc_endpoint: Some(lab.server.endpoint()),
        ..Default::default()
    };
    let limits = snapport_host::Limits {
        memory_bytes: 64 << 20,
        call_timeout: Duration::from_secs(10),
    };
    let instance = host.instantiate(plugin, POOL, grants, limits, None);
    (host, instance)
}

/// The 4 KiB blocks `changed-extents` names between snapshot `base` and `snapshot`,
/// through the host library with the pool's grants.
fn changed_blocks(lab: &Lab, volume: &str, snapshot: &str, base: &str) -> BTreeSet<u64> {
    let (_host, mut instance) = instance(lab);
    let mut open = instance.open_volume(volume, Some(snapshot)).unwrap();
    let ranges = open.changed_ranges(base).unwrap();
    let mut out = BTreeSet::new();
    for (offset, length) in ranges {
        assert_eq!(
            (offset % BLOCK, length % BLOCK),
            (0, 0),
            "({offset}, {length})"
        );
        out.extend(offset / BLOCK..(offset + length) / BLOCK);
    }
    out
}

/// Clusters `qemu-img map` reports as data in a qcow2 export.
fn mapped_clusters(qcow2: &Path) -> BTreeSet<u64> {
    let map: serde_json::Value = serde_json::from_str(&tool(
        "qemu-img",
        &["map", "--output=json", "-f", "qcow2", p(qcow2)],
    ))
    .unwrap();
    let mut out = BTreeSet::new();
    for e in map.as_array().unwrap() {
        if e["data"].as_bool() == Some(true) {
            let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            out.extend(start / CLUSTER..(start + len).div_ceil(CLUSTER));
        }
    }
    out
}

fn same(file: &Path, expected: &[u8]) {
    let tmp = file.with_extension("expected");
    std::fs::write(&tmp, expected).unwrap();
    tool("cmp", &[p(file), p(&tmp)]);
    std::fs::remove_file(tmp).unwrap();
}

/// The volume: writes, snapshot s1, more writes, snapshot s2, more writes. Returns the
/// snapshots' IDs, their images, and the blocks written between them.
fn fill(lab: &mut Lab) -> (String, String, Vec<u8>, Vec<u8>, BTreeSet<u64>) {
    lab.write(0, 8192, 1, false);
    lab.write((1 << 20) + BLOCK, 12288, 2, false);
    lab.write(7 << 20, 65536, 3, false);
    lab.write(SIZE - BLOCK, BLOCK as usize, 4, false);
    let s1 = lab.server.snapshot(&lab.volume, "s1");
    let img1 = lab.image.clone();
    // Between the snapshots: an overwrite, new blocks, a partial block, and a block
    // written back to zeros (changed, but no longer allocated).
    lab.write((1 << 20) + 2 * BLOCK, BLOCK as usize, 5, false);
    lab.write(3 << 20, BLOCK as usize, 6, false);
    lab.write((15 << 20) + 100, 1000, 7, false);
    lab.write(7 << 20, BLOCK as usize, 0, true);
    let written: BTreeSet<u64> = [
        (1 << 20) / BLOCK + 2,
        (3 << 20) / BLOCK,
        (15 << 20) / BLOCK,
        (7 << 20) / BLOCK,
    ]
    .into_iter()
    .collect();
    let s2 = lab.server.snapshot(&lab.volume, "s2");
    let img2 = lab.image.clone();
    lab.write(9 << 20, BLOCK as usize, 8, false);
    (s1, s2, img1, img2, written)
}

#[test]
fn exports_and_deltas_are_what_was_written_under_both_metadata_types() {
    if !can_run() {
        return;
    }
    for variable in [false, true] {
        let mut lab = Lab::new(3);
        lab.server.set(|b| {
            b.variable_length = variable;
            // Listings come one entry a page: the plugin follows next_token.
            b.list_page = 1;
        });
        let (s1, s2, img1, img2, written) = fill(&mut lab);
        let v = lab.volume.clone();
        assert_eq!(
            differing_blocks(&img1, &img2),
            written,
            "the test's own bookkeeping"
        );

        // The volume and both snapshots, byte for byte.
        same(&lab.download(&format!("vd/{v}"), &[]), &lab.image);
        for (s, img) in [(&s1, &img1), (&s2, &img2)] {
            same(&lab.download(&format!("vds/{v}@{s}"), &[]), img);
            // Holes skipped: the qcow2 export allocates exactly the clusters that hold
            // allocated (non-zero) blocks.
            let q = lab.download(&format!("vds/{v}@{s}"), &["--format", "qcow2"]);
            let clusters: BTreeSet<u64> = nonzero_blocks(img)
                .iter()
                .map(|b| b * BLOCK / CLUSTER)
                .collect();
            assert_eq!(
                mapped_clusters(&q),
                clusters,
                "variable={variable}: qemu-img map of {s}"
            );
        }

        // The plugin's changed extents are exactly the 4 KiB blocks written between the
        // snapshots (asked through the host library, as the engine asks).
        assert_eq!(
            changed_blocks(&lab, &v, &s2, &s1),
            written,
            "variable={variable}: changed extents"
        );

        // The delta file holds them, in whole 64 KiB leaves (its format's unit), and
        // applies onto s1 to give s2.
        let d = lab.download(
            &format!("vds/{v}@{s2}"),
            &["--since", &format!("vds/{v}@{s1}")],
        );
        let bytes = std::fs::read(&d).unwrap();
        let delta = snapport_core::delta::read_delta(&mut &bytes[..]).unwrap();
        let mut leaves = BTreeSet::new();
        let mut applied = img1.clone();
        for r in &delta.records {
            leaves.extend(r.offset / LEAF..(r.offset + r.length).div_ceil(LEAF));
            let span = r.offset as usize..(r.offset + r.length) as usize;
            match r.data_at {
                Some(at) => {
                    applied[span].copy_from_slice(&bytes[at as usize..(at + r.length) as usize])
                }
                None => applied[span].fill(0),
            }
        }
        let written_leaves: BTreeSet<u64> = written.iter().map(|b| b * BLOCK / LEAF).collect();
        assert_eq!(
            leaves, written_leaves,
            "variable={variable}: leaves in the delta"
        );
        assert!(applied == img2, "s1 + delta is s2");

        // Paged: max_results 3 means many messages per stream.
        assert!(lab.server.calls("GetMetadataAllocated") >= 2);

        let checked = conformance::check_pool(&lab.home, POOL, true);
        assert_eq!(
            (checked.disks, checked.snapshots, checked.deltas),
            (1, 2, 1)
        );
        lab.assert_clean(1);
    }
}

#[test]
fn broken_and_hostile_drivers_fail_cleanly_and_leave_nothing() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(4);
    let (s1, s2, img1, _, _) = fill(&mut lab);
    let v = lab.volume.clone();
    let snap = format!("vds/{v}@{s1}");
    let out = lab.home.out("hostile.raw");
    let outside = lab.home.path().join("outside.img");
    std::fs::write(&outside, vec![7u8; SIZE as usize]).unwrap();
    type Set = fn(&mut csi_server::Behaviour);
    let cases: Vec<(&str, Set, &str)> = vec![
        ("unsorted", |b| b.unsorted = true, "ascend"),
        ("overlapping", |b| b.overlapping = true, "overlaps"),
        (
            "wrong capacity",
            |b| b.wrong_capacity = true,
            "volume_capacity_bytes",
        ),
        (
            "short device",
            |b| b.short_device = true,
            "but the volume has",
        ),
        (
            "cut every stream",
            |b| b.cut_streams = 100,
            "GetMetadataAllocated",
        ),
        (
            "endless listing",
            |b| b.endless_list = true,
            "same next_token",
        ),
        ("looping listing", |b| b.looping_list = true, "nothing new"),
    ];
    for (what, set, expect) in cases {
        lab.server.set(|b| *b = csi_server::Behaviour::default());
        lab.server.set(set);
        let err = lab.fails(&["download", &snap, "-o", p(&out)]);
        assert!(err.contains(expect), "{what}: {err}");
        assert!(!out.exists(), "{what}: output left");
        lab.assert_clean(1);
    }

    // A publish that is a link out of the granted folder is never followed.
    lab.server.set(|b| {
        *b = csi_server::Behaviour {
            publish_outside: Some(outside.clone()),
            ..Default::default()
        }
    });
    for address in [format!("vd/{v}"), snap.clone()] {
        let err = lab.fails(&["download", &address, "-o", p(&out)]);
        assert!(err.contains("outside the folders"), "{err}");
        assert!(!out.exists());
        lab.assert_clean(1);
    }

    // A stream cut twice is resumed where it broke: the export is whole.
    lab.server.set(|b| {
        *b = csi_server::Behaviour {
            cut_streams: 2,
            ..Default::default()
        }
    });
    let before = lab.server.calls("GetMetadataAllocated");
    same(&lab.download(&snap, &[]), &img1);
    assert!(lab.server.calls("GetMetadataAllocated") >= before + 3);
    // The requests after each cut start where the received ranges ended, not over.
    let offsets = lab.server.state.lock().unwrap().starting_offsets.clone();
    let after = &offsets[offsets.len() - (lab.server.calls("GetMetadataAllocated") - before)..];
    assert_eq!(after[0], 0, "{after:?}");
    assert!(
        after[1] > 0 && after[2] > after[1],
        "resumed from: {after:?}"
    );
    lab.assert_clean(1);

    // No SnapshotMetadata service: the snapshot is read whole (still right), and an
    // incremental export says why it cannot be made.
    lab.server.set(|b| {
        *b = csi_server::Behaviour {
            no_snapshot_metadata: true,
            ..Default::default()
        }
    });
    same(&lab.download(&snap, &[]), &img1);
    // (The whole-read warning comes first: the base is read once for its digest map.)
    let run = lab.home.snapport(&[
        "download",
        &format!("vds/{v}@{s2}"),
        "--since",
        &snap,
        "-n",
        POOL,
        "-o",
        p(&out),
        "-q",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let err = stderr.lines().last().unwrap_or_default();
    assert!(err.starts_with("snapport: error: "), "{stderr}");
    assert!(
        err.contains("no SnapshotMetadata") && err.contains("GetMetadataDelta: UNIMPLEMENTED"),
        "{err}"
    );
    assert!(!out.exists());
    lab.assert_clean(1);
}

#[test]
fn a_killed_export_is_cleaned_up_by_the_next_one() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(64);
    let (s1, _, img1, _, _) = fill(&mut lab);
    let snap = format!("vds/{}@{s1}", lab.volume);
    let out = lab.home.out("killed.raw");
    lab.server.set(|b| b.stall = Duration::from_secs(30));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(["download", &snap, "-n", POOL, "-o", p(&out), "-q"])
        .env("SNAPPORT_HOME", lab.home.path())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while lab.server.state.lock().unwrap().published.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the export never published"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Mid-export (the metadata stream is stalled): SIGKILL.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !lab.server.leftovers().is_empty(),
        "the killed export held nothing?"
    );
    assert!(
        !out.exists(),
        "a killed export left its output under the final name"
    );

    lab.server.set(|b| b.stall = Duration::ZERO);
    same(&lab.download(&snap, &[]), &img1);
    lab.assert_clean(1);
}

#[test]
fn uploads_copies_and_snapshots_go_through_the_driver() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(16);
    let (s1, s2, img1, _, _) = fill(&mut lab);
    let v = lab.volume.clone();

    // An image uploaded into a new volume (CreateVolume, publish, write, unpublish).
    let mut source = vec![0u8; 4 << 20];
    for (i, b) in source.iter_mut().enumerate().skip(1 << 20).take(300_000) {
        *b = (i % 251) as u8 | 1;
    }
    let raw = lab.file("upload.raw", &source);
    let qcow2 = lab.home.out("upload.qcow2");
    tool(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", p(&raw), p(&qcow2)],
    );
    lab.ok(&["upload", p(&qcow2), "vd/imported", "-n", POOL, "-q"]);
    let made = {
        let s = lab.server.state.lock().unwrap();
        s.volumes
            .values()
            .find(|x| x.name == "imported")
            .expect("a volume named imported")
            .clone()
    };
    assert_eq!(made.capacity, source.len() as u64);
    tool("cmp", &[p(&made.file), p(&raw)]);
    same(&lab.download(&format!("vd/{}", made.id), &[]), &source);
    lab.assert_clean(2);
    // Deleted again through DeleteVolume.
    lab.ok(&["delete", &format!("vd/{}", made.id), "-n", POOL, "-q"]);
    lab.assert_clean(1);
    lab.ok(&["upload", p(&raw), "vd/imported", "-n", POOL, "-q"]);

    // A new volume from a snapshot: CreateVolume with the snapshot as content source,
    // no bytes through snapport (no metadata read, nothing published).
    let reads = lab.server.calls("GetMetadataAllocated");
    let publishes = lab.server.calls("NodePublishVolume");
    let out = lab.ok(&[
        "create",
        "vd/copy",
        "--from",
        &format!("vds/{v}@{s1}"),
        "-n",
        POOL,
        "-o",
        "json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let copy = {
        let s = lab.server.state.lock().unwrap();
        s.volumes
            .values()
            .find(|x| x.name == "copy")
            .expect("a volume named copy")
            .clone()
    };
    assert_eq!(
        report["volume"].as_str(),
        Some(copy.id.as_str()),
        "{report}"
    );
    assert_eq!(report["written_bytes"].as_u64(), Some(0), "{report}");
    assert_eq!(copy.source.as_deref(), Some(s1.as_str()));
    assert_eq!(lab.server.calls("GetMetadataAllocated"), reads);
    assert!(lab.server.calls("NodePublishVolume") <= publishes + 1);
    same(&copy.file, &img1);
    same(&lab.download(&format!("vd/{}", copy.id), &[]), &img1);
    lab.assert_clean(3);

    // Snapshots made and deleted through the driver: the driver names them, snapport's
    // record follows, and the snapshot reads back as the volume was.
    let out = lab.ok(&[
        "snapshot",
        "create",
        &format!("vd/{v}"),
        "--name",
        "nightly",
        "-n",
        POOL,
        "-o",
        "json",
    ]);
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // CreateSnapshot's name is a key of this request, never `nightly` itself.
    let id = {
        let new: Vec<_> = lab
            .server
            .snapshots_of(&v)
            .into_iter()
            .filter(|x| x.id != s1 && x.id != s2)
            .collect();
        assert_eq!(new.len(), 1, "{new:?}");
        assert!(new[0].name.starts_with("snapport-"), "{new:?}");
        new[0].id.clone()
    };
    // The user's name is snapport's, the ID the driver's: both address it.
    assert_eq!(made["snapshot"].as_str(), Some("nightly"), "{made}");
    assert_eq!(made["id"].as_str(), Some(id.as_str()), "{made}");
    let listed = lab.ok(&["get", "vds", "-n", POOL, "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["snapshot"].as_str())
        .collect();
    assert_eq!(names, [s1.as_str(), s2.as_str(), "nightly"], "{listed}");
    same(&lab.download(&format!("vds/{v}@nightly"), &[]), &lab.image);
    same(&lab.download(&format!("vds/{v}@{id}"), &[]), &lab.image);
    lab.ok(&["delete", &format!("vds/{v}@nightly"), "-n", POOL, "-q"]);
    assert!(!lab.server.state.lock().unwrap().snapshots.contains_key(&id));
    lab.assert_clean(3);
}

#[test]
fn a_driver_that_cannot_list_is_served_from_the_pool_settings() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(8);
    let (s1, _, img1, _, _) = fill(&mut lab);
    let v = lab.volume.clone();
    lab.server.set(|b| b.no_list = true);
    let out = lab.home.out("unlisted.raw");
    let err = lab.fails(&["download", &format!("vd/{v}"), "-o", p(&out)]);
    assert!(
        err.contains("ListVolumes") && err.contains("settings: volumes"),
        "{err}"
    );
    assert!(!out.exists());

    lab.configure(&format!(
        "volumes = \"{v}={SIZE}\", snapshots = \"{v}@{s1}={SIZE}\""
    ));
    let listed = lab.ok(&["get", "vd", "-n", POOL, "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        listed[0]["name"].as_str(),
        Some(format!("vd/{v}").as_str()),
        "{listed}"
    );
    same(&lab.download(&format!("vd/{v}"), &[]), &lab.image);
    same(&lab.download(&format!("vds/{v}@{s1}"), &[]), &img1);
    lab.assert_clean(1);
}

#[test]
fn drivers_that_attach_first_or_do_not_stage_are_followed() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(16);
    let (s1, _, img1, _, _) = fill(&mut lab);
    let v = lab.volume.clone();
    for (attach, no_stage) in [(true, false), (false, true), (true, true)] {
        lab.server.set(|b| {
            b.attach = attach;
            b.no_stage = no_stage;
        });
        let (attaches, stages) = (
            lab.server.calls("ControllerPublishVolume"),
            lab.server.calls("NodeStageVolume"),
        );
        same(&lab.download(&format!("vd/{v}"), &[]), &lab.image);
        same(&lab.download(&format!("vds/{v}@{s1}"), &[]), &img1);
        let what = format!("attach={attach} no_stage={no_stage}");
        // Attached (and detached again) exactly where the controller asks for it; staged
        // only where the node stages.
        assert_eq!(
            lab.server.calls("ControllerPublishVolume") > attaches,
            attach,
            "{what}"
        );
        assert_eq!(
            lab.server.calls("NodeStageVolume") > stages,
            !no_stage,
            "{what}"
        );
        lab.assert_clean(1);
    }
}

/// 64-bit FNV-1a of `volume \0 name`: the hash in the plugin's CreateSnapshot key,
/// computed independently here.
fn fnv1a(volume: &str, name: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in volume.bytes().chain([0]).chain(name.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    h
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `snapport snapshot create vd/VOLUME ARGS -o json`: the snapshot's ID as reported.
fn snapshot_create(lab: &Lab, volume: &str, args: &[&str]) -> String {
    let address = format!("vd/{volume}");
    let mut all = vec!["snapshot", "create", &address, "-n", POOL, "-o", "json"];
    all.extend_from_slice(args);
    let out = lab.ok(&all);
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    made["id"].as_str().expect("a snapshot ID").to_string()
}

/// The tests' driver answers as csi-driver-host-path does, its known bugs included
/// (pkg/hostpath/controllerserver.go and hostpath.go, cited in csi_server.rs): this pins
/// the fake to the reference, so the tests above run against the real driver's quirks.
#[test]
fn the_tests_driver_answers_as_the_reference_driver() {
    use snapport_csi::method;
    use snapport_csi::msg::*;
    let home = Home::new();
    let server = CsiServer::start(&home.path().join("csi"));
    let create = |name: &str, bytes: i64| {
        server.call::<_, CreateVolumeResponse>(
            method::CREATE_VOLUME,
            &CreateVolumeRequest {
                name: name.into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: bytes,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![VolumeCapability::block(true)],
                ..Default::default()
            },
        )
    };

    // CreateVolume: the capacity is answered as asked, the file is whole MiB rounded
    // down (`fallocate -l <capacity/MiB>M`), under 1 MiB fails (UNKNOWN).
    let a = create("a", (1 << 20) + 4096).unwrap().volume.unwrap();
    assert_eq!(a.capacity_bytes, (1 << 20) + 4096);
    let file = std::fs::metadata(server.volume_file(&a.volume_id)).unwrap();
    assert_eq!(file.len(), 1 << 20, "the file is whole MiB, rounded down");
    assert_eq!(create("tiny", 4096).unwrap_err().0, 2);
    // The name is an idempotency key: an existing volume at least as large is answered
    // again; a larger request is ALREADY_EXISTS.
    let again = create("a", 1 << 20).unwrap().volume.unwrap();
    assert_eq!(
        (again.volume_id.as_str(), again.capacity_bytes),
        (a.volume_id.as_str(), (1 << 20) + 4096)
    );
    assert_eq!(create("a", 2 << 20).unwrap_err().0, 6);
    let b = create("b", 2 << 20).unwrap().volume.unwrap().volume_id;
    let c = create("c", 3 << 20).unwrap().volume.unwrap().volume_id;

    // ListVolumes: cut at max_entries counted from the first volume, 1-based tokens,
    // never a next_token.
    let list = |max_entries: i32, token: &str| {
        server.call::<_, ListVolumesResponse>(
            method::LIST_VOLUMES,
            &ListVolumesRequest {
                max_entries,
                starting_token: token.into(),
            },
        )
    };
    let ids = |r: &ListVolumesResponse| -> Vec<String> {
        r.entries
            .iter()
            .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
            .collect()
    };
    let two = list(2, "").unwrap();
    assert_eq!(ids(&two), [a.volume_id.clone(), b.clone()]);
    assert_eq!(two.next_token, "", "no next_token although one more exists");
    assert_eq!(ids(&list(2, "2").unwrap()), std::slice::from_ref(&b));
    assert!(ids(&list(2, "3").unwrap()).is_empty());
    let all = list(0, "").unwrap();
    assert_eq!(ids(&all), [a.volume_id.clone(), b.clone(), c.clone()]);
    assert_eq!(all.next_token, "");
    assert_eq!(list(0, "x").unwrap_err().0, 10, "ABORTED");

    // CreateSnapshot: names are idempotency keys.
    let snap = |volume: &str, name: &str| {
        server
            .call::<_, CreateSnapshotResponse>(
                method::CREATE_SNAPSHOT,
                &CreateSnapshotRequest {
                    source_volume_id: volume.into(),
                    name: name.into(),
                },
            )
            .map(|r| r.snapshot.unwrap())
    };
    let first = snap(&b, "n1").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let repeated = snap(&b, "n1").unwrap();
    assert_eq!(
        repeated, first,
        "the same snapshot, its creation time included"
    );
    assert_eq!(snap(&c, "n1").unwrap_err().0, 6, "ALREADY_EXISTS");
    assert_eq!(first.size_bytes, 2 << 20);
    let second = snap(&b, "n2").unwrap();
    let of_c = snap(&c, "n3").unwrap();
    let third = snap(&b, "n4").unwrap();
    assert_eq!(server.snapshots_of(&b).len(), 3);

    // ListSnapshots filtered by source volume: the first snapshot only.
    let list = |r: ListSnapshotsRequest| {
        let reply: ListSnapshotsResponse = server.call(method::LIST_SNAPSHOTS, &r).unwrap();
        let ids: Vec<String> = reply
            .entries
            .iter()
            .map(|e| e.snapshot.as_ref().unwrap().snapshot_id.clone())
            .collect();
        (ids, reply.next_token)
    };
    let by_volume = list(ListSnapshotsRequest {
        source_volume_id: b.clone(),
        ..Default::default()
    });
    assert_eq!(by_volume, (vec![first.snapshot_id.clone()], String::new()));
    // By ID: that snapshot, whatever source_volume_id says.
    let by_id = list(ListSnapshotsRequest {
        snapshot_id: of_c.snapshot_id.clone(),
        source_volume_id: b.clone(),
        ..Default::default()
    });
    assert_eq!(by_id.0, std::slice::from_ref(&of_c.snapshot_id));
    // Unfiltered: sorted by ID, paged by index.
    let mut sorted: Vec<String> = [&first, &second, &of_c, &third]
        .iter()
        .map(|x| x.snapshot_id.clone())
        .collect();
    sorted.sort();
    let page1 = list(ListSnapshotsRequest {
        max_entries: 3,
        ..Default::default()
    });
    assert_eq!(page1, (sorted[..3].to_vec(), "3".to_string()));
    let page2 = list(ListSnapshotsRequest {
        max_entries: 3,
        starting_token: page1.1,
        ..Default::default()
    });
    assert_eq!(page2, (sorted[3..].to_vec(), String::new()));
    let past: Result<ListSnapshotsResponse, _> = server.call(
        method::LIST_SNAPSHOTS,
        &ListSnapshotsRequest {
            starting_token: "9".into(),
            ..Default::default()
        },
    );
    assert_eq!(past.unwrap_err().0, 10, "ABORTED past the end");
    // A listed snapshot keeps its creation time.
    let listed = list(ListSnapshotsRequest {
        snapshot_id: first.snapshot_id.clone(),
        ..Default::default()
    });
    assert_eq!(listed.0.len(), 1);
    let reply: ListSnapshotsResponse = server
        .call(
            method::LIST_SNAPSHOTS,
            &ListSnapshotsRequest {
                snapshot_id: first.snapshot_id.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        reply.entries[0].snapshot.as_ref().unwrap().creation_time,
        first.creation_time
    );
}

/// Three snapshots of one volume, taken through the CLI within a second or two (the
/// same default name, a date to the second): three driver snapshots, all listed
/// although the driver's filtered ListSnapshots answers only the first, each exporting
/// the bytes it was taken over.
#[test]
fn every_snapshot_of_a_volume_is_listed_and_exports_its_own_bytes() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(16);
    let v = lab.volume.clone();
    let mut taken = Vec::new();
    for i in 0..3u8 {
        lab.write(u64::from(i) * (3 << 20) + BLOCK, 20000, 10 + i, false);
        let id = snapshot_create(&lab, &v, &[]);
        taken.push((id, lab.image.clone()));
    }
    let on_driver: Vec<String> = lab
        .server
        .snapshots_of(&v)
        .into_iter()
        .map(|x| x.id)
        .collect();
    let ids: Vec<String> = taken.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(on_driver, ids, "three snapshots on the driver, as reported");
    // The driver's bug is in force: filtered by volume it answers one.
    let filtered: snapport_csi::msg::ListSnapshotsResponse = lab
        .server
        .call(
            snapport_csi::method::LIST_SNAPSHOTS,
            &snapport_csi::msg::ListSnapshotsRequest {
                source_volume_id: v.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(filtered.entries.len(), 1);

    let listed = lab.ok(&["get", "vds", &v, "-n", POOL, "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let listed_ids: BTreeSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["id"].as_str())
        .collect();
    assert_eq!(
        listed_ids,
        ids.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "{listed}"
    );
    // Three names of snapport's, distinct, none of them a driver's ID.
    let names: BTreeSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["snapshot"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{listed}");
    assert!(names.is_disjoint(&listed_ids), "{listed}");
    for (id, image) in &taken {
        same(&lab.download(&format!("vds/{v}@{id}"), &[]), image);
    }
    // The three images differ: each export is its own snapshot's.
    assert!(taken[0].1 != taken[1].1 && taken[1].1 != taken[2].1);
    lab.assert_clean(1);
}

/// A snapshot's name is the user's, never CreateSnapshot's idempotency key: the same
/// name again, or on another volume, makes new snapshots; only a retry of the very same
/// request (same volume, name and time) answers the same one; and a driver answering an
/// earlier snapshot is a conflict, never reported as new.
#[test]
fn snapshot_names_are_never_the_drivers_idempotency_keys() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(16);
    let v = lab.volume.clone();
    let w = lab.server.create_volume("other", SIZE);

    // `--name nightly` a second time is refused: the name is taken on this disk, and
    // the driver is not asked (it would have made a new snapshot, never the old one).
    lab.write(0, 10000, 21, false);
    let first = snapshot_create(&lab, &v, &["--name", "nightly"]);
    let img1 = lab.image.clone();
    lab.write(5 << 20, 10000, 22, false);
    let made = lab.home.snapport(&[
        "snapshot",
        "create",
        &format!("vd/{v}"),
        "--name",
        "nightly",
        "-n",
        POOL,
        "-o",
        "json",
    ]);
    assert!(!made.status.success());
    let err = String::from_utf8_lossy(&made.stderr);
    assert!(err.contains("exists already"), "{err}");
    assert_eq!(lab.server.snapshots_of(&v).len(), 1);
    same(&lab.download(&format!("vds/{v}@{first}"), &[]), &img1);
    same(&lab.download(&format!("vds/{v}@nightly"), &[]), &img1);

    // The same name on another volume: a snapshot there, no ALREADY_EXISTS.
    let on_w = snapshot_create(&lab, &w, &["--name", "nightly"]);
    let of_w = lab.server.snapshots_of(&w);
    assert_eq!(of_w.len(), 1);
    assert_eq!(of_w[0].id, on_w);
    same(
        &lab.download(&format!("vds/{w}@{on_w}"), &[]),
        &vec![0; SIZE as usize],
    );

    // At the plugin: two requests of the same name at different times make two
    // snapshots; a retry of one (same time) answers it again, making nothing.
    let (_host, mut instance) = instance(&lab);
    let before = lab.server.snapshots().len();
    let t = now_ms();
    let a = instance.create_snapshot(&v, "weekly", t).unwrap();
    let b = instance.create_snapshot(&v, "weekly", t + 1).unwrap();
    assert_ne!(a.name, b.name);
    assert_eq!(lab.server.snapshots().len(), before + 2);
    let retry = instance.create_snapshot(&v, "weekly", t).unwrap();
    assert_eq!(
        (retry.name.as_str(), retry.created_unix_ms),
        (a.name.as_str(), a.created_unix_ms)
    );
    assert_eq!(
        lab.server.snapshots().len(),
        before + 2,
        "a retry makes nothing"
    );
    let label = |info: &snapport_host::SnapshotInfo, key: &str| {
        info.labels
            .iter()
            .find(|l| l.key == key)
            .map(|l| l.value.clone())
    };
    let key = format!("snapport-{t}-{:016x}", fnv1a(&v, "weekly"));
    assert_eq!(label(&a, "csi.name").as_deref(), Some(key.as_str()));
    assert_eq!(label(&a, "snapport.name").as_deref(), Some("weekly"));
    let on_driver = lab.server.state.lock().unwrap().snapshots[&a.name]
        .name
        .clone();
    assert_eq!(on_driver, key, "the key CreateSnapshot was sent");

    // A driver that answers an earlier snapshot to a new request (an hour older, as
    // last night's would be): a conflict, naming it.
    let later = now_ms() + 3_600_000;
    let stale = lab.server.snapshot(
        &v,
        &format!("snapport-{later}-{:016x}", fnv1a(&v, "monthly")),
    );
    let before = lab.server.snapshots().len();
    let err = instance.create_snapshot(&v, "monthly", later).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("earlier snapshot") && text.contains(&stale),
        "{text}"
    );
    assert_eq!(lab.server.snapshots().len(), before);
    drop(instance);
    lab.assert_clean(2);
}

/// An upload the driver cannot hold at exactly its size (csi-driver-host-path keeps
/// whole MiB, rounded down, while answering the capacity asked) fails saying so, and
/// leaves no volume on the driver; a whole-MiB one lands byte for byte.
#[test]
fn an_upload_the_driver_cannot_hold_exactly_fails_and_leaves_no_volume() {
    if !can_run() {
        return;
    }
    let lab = Lab::new(16);
    let mut source = vec![0u8; (1 << 20) + 4096];
    for (i, b) in source.iter_mut().enumerate() {
        *b = (i % 253) as u8 | 1;
    }
    let odd = lab.file("odd.raw", &source);
    let deletes = lab.server.calls("DeleteVolume");
    let err = lab.fails(&["upload", p(&odd), "vd/odd", "-q"]);
    assert!(
        err.contains("whole MiB") && err.contains("1048576"),
        "{err}"
    );
    assert!(
        lab.server.calls("DeleteVolume") > deletes,
        "the volume made was deleted"
    );
    lab.assert_clean(1);
    // A driver that rounds up to whole MiB (and keeps them): refused too, nothing kept.
    lab.server.set(|b| b.round_up = 1 << 20);
    let deletes = lab.server.calls("DeleteVolume");
    let err = lab.fails(&["upload", p(&odd), "vd/odd", "-q"]);
    assert!(
        err.contains("rounds sizes up") && err.contains("2097152"),
        "{err}"
    );
    assert!(
        lab.server.calls("DeleteVolume") > deletes,
        "the volume made was deleted"
    );
    lab.assert_clean(1);
    lab.server.set(|b| b.round_up = 0);

    source.truncate(2 << 20);
    source.resize(2 << 20, 7);
    let whole = lab.file("whole.raw", &source);
    lab.ok(&["upload", p(&whole), "vd/whole", "-n", POOL, "-q"]);
    let made = lab
        .server
        .state
        .lock()
        .unwrap()
        .volumes
        .values()
        .find(|x| x.name == "whole")
        .expect("a volume named whole")
        .clone();
    tool("cmp", &[p(&made.file), p(&whole)]);
    lab.assert_clean(2);
}

/// More volumes than the plugin's page (256): csi-driver-host-path's ListVolumes cuts
/// the answer there without a next_token; the plugin notices the full page and asks for
/// all, so every volume is listed and can be opened.
#[test]
fn volumes_past_a_page_the_driver_cuts_are_listed() {
    if !can_run() {
        return;
    }
    let lab = Lab::new(16);
    let mut ids = BTreeSet::from([lab.volume.clone()]);
    for i in 0..260 {
        ids.insert(lab.server.create_volume(&format!("v{i}"), 1 << 20));
    }
    let listed = lab.ok(&["get", "vd", "-n", POOL, "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: BTreeSet<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            x["name"]
                .as_str()
                .unwrap()
                .trim_start_matches("vd/")
                .to_string()
        })
        .collect();
    assert_eq!(names, ids);
    let last = ids.last().unwrap();
    lab.server.write(last, 4096, &[9; 4096]);
    let mut expected = vec![0u8; 1 << 20];
    expected[4096..8192].fill(9);
    same(&lab.download(&format!("vd/{last}"), &[]), &expected);
    lab.assert_clean(261);
}

/// vm/web over the lab's volume and a second one, `w`, both in the pool: their IDs.
fn web_vm(lab: &Lab) -> (String, String) {
    let v = lab.volume.clone();
    let w = lab.server.create_volume("w", SIZE);
    let cfg = lab.home.out("web.json");
    std::fs::write(
        &cfg,
        format!(r#"{{"name":"web","disks":[{{"name":"{v}","pool":"{POOL}"}},{{"name":"{w}","pool":"{POOL}"}}]}}"#),
    )
    .unwrap();
    lab.ok(&["create", "vm/web", "--config", p(&cfg), "-q"]);
    (v, w)
}

/// Every snapshot the driver holds, as an unfiltered ListSnapshots answers (the one
/// listing the reference driver gets right).
fn driver_snapshots(lab: &Lab) -> Vec<snapport_csi::msg::Snapshot> {
    let all: snapport_csi::msg::ListSnapshotsResponse = lab
        .server
        .call(
            snapport_csi::method::LIST_SNAPSHOTS,
            &snapport_csi::msg::ListSnapshotsRequest::default(),
        )
        .unwrap();
    all.entries.into_iter().filter_map(|e| e.snapshot).collect()
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Three snapshots of one disk under the driver's quirky filtered listing: each is
/// listed, described, exported, used as a delta's base, restored (by copy: CSI has no
/// in-place restore) and deleted by its name; the pool's limit (3) holds.
#[test]
fn three_snapshots_of_a_disk_live_their_whole_life_by_name() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(16);
    let v = lab.volume.clone();
    let mut images = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        lab.write(i as u64 * (2 << 20) + 3 * BLOCK, 30000, 40 + i as u8, false);
        snapshot_create(&lab, &v, &["--name", name]);
        images.push(lab.image.clone());
    }
    let listed = json_of(&lab.ok(&["get", "vds", &v, "-n", POOL, "-o", "json"]));
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["snapshot"].as_str())
        .collect();
    assert_eq!(names, ["a", "b", "c"], "{listed}");
    // The limit: a fourth is refused, and the driver is not asked.
    let err = lab.fails(&["snapshot", "create", &format!("vd/{v}"), "--name", "d"]);
    assert!(err.contains("limit"), "{err}");
    assert_eq!(driver_snapshots(&lab).len(), 3);

    for (name, image) in ["a", "b", "c"].iter().zip(&images) {
        let d = json_of(&lab.ok(&[
            "describe",
            &format!("vds/{v}@{name}"),
            "-n",
            POOL,
            "-o",
            "json",
        ]));
        assert_eq!(d["phase"], "Ready", "{d}");
        assert!(
            d["id"].as_str().is_some_and(|id| id.starts_with("snap-")),
            "{d}"
        );
        same(&lab.download(&format!("vds/{v}@{name}"), &[]), image);
    }
    let b = json_of(&lab.ok(&["describe", &format!("vds/{v}@b"), "-n", POOL, "-o", "json"]));
    assert_eq!(b["parent"], format!("vds/{v}@a"));

    // --since: the delta from a to c, applied onto a, is c.
    let delta = lab.home.out("a-c.delta");
    lab.ok(&[
        "download",
        &format!("vds/{v}@c"),
        "--since",
        &format!("vds/{v}@a"),
        "-n",
        POOL,
        "-o",
        p(&delta),
        "-q",
    ]);
    let made = json_of(&lab.ok(&[
        "upload",
        p(&delta),
        "vd/rebuilt",
        "--onto",
        &format!("vds/{v}@a"),
        "-n",
        POOL,
        "-o",
        "json",
    ]));
    let rebuilt = made["id"]
        .as_str()
        .expect("the volume the driver made")
        .to_string();
    tool(
        "cmp",
        &[
            p(&lab.server.volume_file(&rebuilt)),
            p(&lab.download(&format!("vds/{v}@c"), &[])),
        ],
    );
    same(&lab.server.volume_file(&rebuilt), &images[2]);
    lab.ok(&["delete", &format!("vd/{rebuilt}"), "-n", POOL, "-q"]);

    // Restore to b: the volume's bytes become b's.
    lab.write(0, 50000, 99, false);
    let done = json_of(&lab.ok(&[
        "restore",
        &format!("vd/{v}"),
        "--from",
        &format!("vds/{v}@b"),
        "--mode",
        "best-effort",
        "-n",
        POOL,
        "-o",
        "json",
    ]));
    assert_eq!(
        (done["restored"].as_bool(), done["by_copy"].as_bool()),
        (Some(true), Some(true)),
        "{done}"
    );
    same(&lab.server.volume_file(&v), &images[1]);

    for name in ["b", "a", "c"] {
        lab.ok(&["delete", &format!("vds/{v}@{name}"), "-n", POOL, "-q"]);
    }
    assert!(driver_snapshots(&lab).is_empty());
    let listed = json_of(&lab.ok(&["get", "vds", "-n", POOL, "-o", "json"]));
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
    lab.assert_clean(1);
}

/// Listing one disk's snapshots keeps the records (comment, parent) of another's.
#[test]
fn listing_one_disk_keeps_the_records_of_another() {
    if !can_run() {
        return;
    }
    let lab = Lab::new(16);
    let d = lab.volume.clone();
    let e = lab.server.create_volume("e", SIZE);
    snapshot_create(&lab, &e, &["--name", "e1"]);
    snapshot_create(&lab, &e, &["--name", "e2", "--comment", "keep me"]);
    snapshot_create(&lab, &d, &["--name", "d1"]);
    for _ in 0..2 {
        lab.ok(&["get", "vds", &d, "-n", POOL]);
    }
    let e2 = json_of(&lab.ok(&["describe", &format!("vds/{e}@e2"), "-n", POOL, "-o", "json"]));
    assert_eq!(e2["comment"], "keep me", "{e2}");
    assert_eq!(e2["parent"], format!("vds/{e}@e1"), "{e2}");
}

/// A VM over two CSI disks: snapshot, restore and delete, all through the driver; a
/// failure after the first disk's snapshot leaves no driver snapshot and no record.
#[test]
fn a_vm_over_two_csi_disks_is_all_or_nothing() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(16);
    let (v, w) = web_vm(&lab);
    let mut w_image = vec![0u8; SIZE as usize];
    let mut write_w = |lab: &Lab, offset: usize, seed: u8| {
        let data: Vec<u8> = (0..20000).map(|i| (i as u8) ^ seed | 1).collect();
        lab.server.write(&w, offset as u64, &data);
        w_image[offset..offset + data.len()].copy_from_slice(&data);
        w_image.clone()
    };
    lab.write(BLOCK, 20000, 1, false);
    let w_s1 = write_w(&lab, 0, 2);
    let v_s1 = lab.image.clone();
    lab.ok(&["snapshot", "create", "vm/web", "--name", "s1", "-q"]);
    let on_driver: BTreeSet<String> = driver_snapshots(&lab)
        .into_iter()
        .map(|s| s.snapshot_id)
        .collect();
    assert_eq!(on_driver.len(), 2);
    // The VM snapshot shows each disk snapshot's driver ID.
    let vms = json_of(&lab.ok(&["get", "vms", "-o", "json"]));
    let ids: BTreeSet<String> = vms[0]["disks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids, on_driver, "{vms}");

    // A failure injected at the second disk: the first disk's snapshot goes again.
    lab.server.set(|b| b.fail_snapshots_of = Some(w.clone()));
    let err = lab.fails(&["snapshot", "create", "vm/web", "--name", "s2"]);
    assert!(
        err.contains("injected failure") && err.contains("not taken"),
        "{err}"
    );
    assert_eq!(driver_snapshots(&lab).len(), 2, "only s1's two remain");
    let records = json_of(&lab.ok(&["get", "vds", "-n", POOL, "-o", "json"]));
    assert!(
        records
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["snapshot"] == "s1"),
        "{records}"
    );
    let vms = json_of(&lab.ok(&["get", "vms", "-o", "json"]));
    let names: Vec<&str> = vms
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["vms/web@s1"], "{vms}");
    lab.server.set(|b| b.fail_snapshots_of = None);

    // New writes, then the VM back to s1: both disks' bytes are s1's.
    lab.write(5 << 20, 40000, 3, false);
    write_w(&lab, 7 << 20, 4);
    lab.ok(&[
        "restore",
        "vm/web",
        "--from",
        "vms/web@s1",
        "--mode",
        "best-effort",
    ]);
    same(&lab.server.volume_file(&v), &v_s1);
    same(&lab.server.volume_file(&w), &w_s1);

    // Deleting the VM snapshot deletes both disk snapshots on the driver.
    lab.ok(&["delete", "vms/web@s1", "-q"]);
    assert!(driver_snapshots(&lab).is_empty());
    let records = json_of(&lab.ok(&["get", "vds", "-n", POOL, "-o", "json"]));
    assert_eq!(records.as_array().unwrap().len(), 0, "{records}");
    lab.assert_clean(2);
}

/// A VM snapshot whose process is killed while the driver works: the first disk's
/// snapshot is recorded by ID, the second made but never answered. The next snapshot of
/// the VM deletes both from the driver (the second asked for again under the same
/// idempotency key) and drops their records.
#[test]
fn what_a_killed_vm_snapshot_left_is_cleaned_up_by_the_next() {
    if !can_run() {
        return;
    }
    let lab = Lab::new(16);
    let (_, w) = web_vm(&lab);
    lab.server.set(|b| b.stall_snapshots_of = Some(w.clone()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(["snapshot", "create", "vm/web", "--name", "s1", "-q"])
        .env("SNAPPORT_HOME", lab.home.path())
        .env_remove("SNAPPORT_PLUGIN_PATH")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.server.snapshots().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the driver never made both snapshots"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    lab.server.set(|b| b.stall_snapshots_of = None);
    assert_eq!(driver_snapshots(&lab).len(), 2);
    let vms = json_of(&lab.ok(&["get", "vms", "-o", "json"]));
    assert_eq!(vms[0]["phase"], "InProgress", "{vms}");

    lab.ok(&["snapshot", "create", "vm/web", "--name", "s2", "-q"]);
    let left = driver_snapshots(&lab);
    assert_eq!(left.len(), 2, "only s2's two: {left:?}");
    let records = json_of(&lab.ok(&["get", "vds", "-n", POOL, "-o", "json"]));
    let names: BTreeSet<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["snapshot"].as_str())
        .collect();
    assert_eq!(names, BTreeSet::from(["s2"]), "{records}");
    let ids: BTreeSet<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    let on_driver: BTreeSet<&str> = left.iter().map(|s| s.snapshot_id.as_str()).collect();
    assert_eq!(ids, on_driver);
    let vms = json_of(&lab.ok(&["get", "vms", "-o", "json"]));
    let names: Vec<&str> = vms
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["vms/web@s2"], "{vms}");
    lab.assert_clean(2);
}
