//! Thin-pool metadata written by `thin_restore` from XML, read by this crate and checked
//! against the tools: every device's details and block mappings equal `thin_dump`'s, and
//! the classification of every block between two devices equals `thin_delta`'s,
//! on devices of thousands of mappings (btrees several levels deep), two of which share
//! subtrees with another as snapshots do (made by `thin_lab::share_tree`). Damage (a flipped
//! byte, a node pointing back up its own path) is named, not followed. Needs
//! thin-provisioning-tools; without them it says so.

#[path = "../../../tests/common/thin_lab.rs"]
mod thin_lab;

use snapport_lvm::thin::{crc32c, delta, DeltaKind, ThinPool, BLOCK};
use std::collections::BTreeMap;
use thin_lab::{dumped, have_thin_tools, run, scattered, share_tree, thin_delta, xml, Kind, Lcg};

/// Device 1: thousands of mappings; device 2 a copy with some blocks remapped, dropped
/// and added; devices 3 and 4 restored with one mapping each, for [`share_tree`].
fn devices() -> (String, u64) {
    let mut rng = Lcg(7);
    let (dev1, mut next_data) = scattered(&mut rng, 6000, 0);
    let mut dev2 = dev1.clone();
    let keys: Vec<u64> = dev1.keys().copied().collect();
    for _ in 0..400 {
        let k = keys[rng.next(keys.len() as u64) as usize];
        match rng.next(3) {
            0 => {
                dev2.insert(k, next_data);
                next_data += 1;
            }
            1 => {
                dev2.remove(&k);
            }
            _ => {
                dev2.insert(k + 100_000 + rng.next(1000), next_data);
                next_data += 1;
            }
        }
    }
    let one = BTreeMap::from([(0, next_data)]);
    let text = xml(
        &[(1, &dev1, 0), (2, &dev2, 1), (3, &one, 2), (4, &one, 2)],
        next_data + 10_000,
        128,
    );
    (text, next_data + 1)
}

fn expand(items: &[(DeltaKind, u64, u64)]) -> BTreeMap<u64, Kind> {
    let mut m = BTreeMap::new();
    for &(k, b, n) in items {
        let k = match k {
            DeltaKind::Same => Kind::Same,
            DeltaKind::Different => Kind::Different,
            DeltaKind::LeftOnly => Kind::LeftOnly,
            DeltaKind::RightOnly => Kind::RightOnly,
        };
        for v in b..b + n {
            m.insert(v, k);
        }
    }
    m
}

#[test]
fn mappings_and_deltas_match_thin_dump_and_thin_delta() {
    if !have_thin_tools() {
        println!("SKIPPED: thin-provisioning-tools not installed (apt-get install thin-provisioning-tools)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let xml_path = dir.path().join("pool.xml");
    let (text, next_data) = devices();
    std::fs::write(&xml_path, text).unwrap();
    let meta = dir.path().join("meta.bin");
    std::fs::File::create(&meta)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let m = meta.to_str().unwrap();
    run("thin_restore", &["-i", xml_path.to_str().unwrap(), "-o", m]);
    // Shared subtrees, as snapshots leave them: device 3 shares all but one path of
    // device 1's tree, device 4 all of it.
    let mut bytes = std::fs::read(&meta).unwrap();
    share_tree(&mut bytes, 1, 3, true, next_data);
    share_tree(&mut bytes, 1, 4, false, 0);
    std::fs::write(&meta, &bytes).unwrap();
    let pool = ThinPool::open(&bytes[..]).unwrap();
    assert_eq!(pool.data_block_size, 128 * 512);

    let want = dumped(&run("thin_dump", &[m]));
    let devices = pool.devices().unwrap();
    assert_eq!(
        devices.keys().copied().collect::<Vec<_>>(),
        want.keys().copied().collect::<Vec<_>>()
    );
    for (id, (blocks, details)) in &want {
        let d = devices[id];
        assert_eq!(
            [
                d.mapped_blocks,
                d.transaction,
                u64::from(d.creation_time),
                u64::from(d.snapshotted_time)
            ],
            *details
        );
        let mut ours = BTreeMap::new();
        for r in pool.runs(*id).unwrap() {
            for i in 0..r.len {
                ours.insert(r.virt + i, (r.data + i, u64::from(r.time)));
            }
        }
        assert_eq!(&ours, blocks, "device {id}");
    }

    // Device 3 differs from 1 in one leaf's worth of blocks, not more, not none.
    let changed = want[&3]
        .0
        .iter()
        .filter(|(v, d)| want[&1].0[v].0 != d.0)
        .count();
    assert!((100..=260).contains(&changed), "{changed} blocks remapped");
    assert_eq!(want[&4].0, want[&1].0);

    // thin_delta (same, different, left_only, right_only), block by block.
    for (a, b) in [(1, 2), (2, 1), (1, 3), (3, 2), (1, 4), (1, 1)] {
        let theirs = thin_delta(m, a, b);
        let ours = delta(&pool.runs(a).unwrap(), &pool.runs(b).unwrap());
        assert_eq!(expand(&ours), theirs, "thin_delta {a} {b}");
        if a == b {
            assert!(ours.iter().all(|x| x.0 == DeltaKind::Same));
        }
    }

    // Damage: a flipped byte in a mapping node; a node that points back at the root.
    let root = u64::from_le_bytes(bytes[320..328].try_into().unwrap());
    let mut flipped = bytes.clone();
    flipped[(root * BLOCK) as usize + 100] ^= 1;
    let p = ThinPool::open(&flipped[..]).unwrap();
    assert!(p.runs(1).unwrap_err().to_string().contains("checksum"));

    // Device 1's tree root is internal (6000 mappings): aim its first child at itself.
    let top_leaf = (root * BLOCK) as usize;
    let n = u32::from_le_bytes(bytes[top_leaf + 16..top_leaf + 20].try_into().unwrap()) as usize;
    let max = u32::from_le_bytes(bytes[top_leaf + 20..top_leaf + 24].try_into().unwrap()) as usize;
    assert!(n >= 1);
    let dev1_root = u64::from_le_bytes(
        bytes[top_leaf + 32 + max * 8..top_leaf + 40 + max * 8]
            .try_into()
            .unwrap(),
    );
    let node = (dev1_root * BLOCK) as usize;
    assert_eq!(
        u32::from_le_bytes(bytes[node + 4..node + 8].try_into().unwrap()),
        1,
        "internal"
    );
    let nmax = u32::from_le_bytes(bytes[node + 20..node + 24].try_into().unwrap()) as usize;
    let mut cyclic = bytes.clone();
    cyclic[node + 32 + nmax * 8..node + 40 + nmax * 8].copy_from_slice(&dev1_root.to_le_bytes());
    let sum = crc32c(&cyclic[node + 4..node + BLOCK as usize]) ^ 121_107;
    cyclic[node..node + 4].copy_from_slice(&sum.to_le_bytes());
    let e = ThinPool::open(&cyclic[..])
        .unwrap()
        .runs(1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cyclic") || e.contains("outside its parent"),
        "{e}"
    );
}
