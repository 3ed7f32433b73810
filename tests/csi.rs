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

/// The 4 KiB blocks `changed-extents` names between snapshot `base` and `snapshot`,
/// through the host library with the pool's grants.
fn changed_blocks(lab: &Lab, volume: &str, snapshot: &str, base: &str) -> BTreeSet<u64> {
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
    let mut instance = host.instantiate(plugin, POOL, grants, limits, None);
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
    let id = {
        let s = lab.server.state.lock().unwrap();
        s.snapshots
            .values()
            .find(|x| x.name == "nightly")
            .expect("CreateSnapshot named nightly")
            .id
            .clone()
    };
    assert_eq!(made["snapshot"].as_str(), Some(id.as_str()), "{made}");
    let listed = lab.ok(&["get", "vds", "-n", POOL, "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["snapshot"].as_str())
        .collect();
    assert_eq!(names, [s1.as_str(), s2.as_str(), id.as_str()], "{listed}");
    same(&lab.download(&format!("vds/{v}@{id}"), &[]), &lab.image);
    lab.ok(&["delete", &format!("vds/{v}@{id}"), "-n", POOL, "-q"]);
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
