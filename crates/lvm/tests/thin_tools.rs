//! Thin-pool metadata written by `thin_restore` from XML, read by this crate and checked
//! against the tools: every device's details and block mappings equal `thin_dump`'s, and
//! the classification of every block between two devices equals `thin_delta`'s,
//! on devices of thousands of mappings (btrees several levels deep). Damage (a flipped
//! byte, a node pointing back up its own path) is named, not followed. Needs
//! thin-provisioning-tools; without them it says so.

use snapport_lvm::thin::{crc32c, delta, DeltaKind, ThinPool, BLOCK};
use std::collections::BTreeMap;
use std::process::Command;

fn have_tools() -> bool {
    ["thin_restore", "thin_dump", "thin_delta"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn attr(line: &str, name: &str) -> u64 {
    let key = format!(" {name}=\"");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + key.len();
    line[at..].split('"').next().unwrap().parse().unwrap()
}

/// A small deterministic generator, so failures reproduce.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Device 1: thousands of mappings; device 2 its "snapshot" with some blocks remapped,
/// dropped and added; device 3 empty.
fn xml() -> String {
    let mut rng = Lcg(7);
    let mut dev1: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next_data = 0;
    let mut virt = 0;
    while dev1.len() < 6000 {
        virt += 1 + rng.next(3);
        let run = 1 + rng.next(4);
        for i in 0..run {
            dev1.insert(virt + i, next_data);
            next_data += 1;
        }
        virt += run;
    }
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
    let device = |id: u64, m: &BTreeMap<u64, u64>, time: u64| {
        let mut s = format!(
            "  <device dev_id=\"{id}\" mapped_blocks=\"{}\" transaction=\"{id}\" creation_time=\"0\" snap_time=\"{time}\">\n",
            m.len()
        );
        for (v, d) in m {
            s.push_str(&format!(
                "    <single_mapping origin_block=\"{v}\" data_block=\"{d}\" time=\"{time}\"/>\n"
            ));
        }
        s.push_str("  </device>\n");
        s
    };
    format!(
        "<superblock uuid=\"\" time=\"2\" transaction=\"3\" flags=\"0\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"{}\">\n{}{}{}</superblock>\n",
        next_data + 10,
        device(1, &dev1, 0),
        device(2, &dev2, 1),
        device(3, &BTreeMap::new(), 2)
    )
}

/// A device as thin_dump prints it: block -> (data block, time), and its details
/// (mapped_blocks, transaction, creation_time, snap_time).
type DumpedDevice = (BTreeMap<u64, (u64, u64)>, [u64; 4]);

/// Each device of thin_dump's XML, by id.
fn dumped(text: &str) -> BTreeMap<u64, DumpedDevice> {
    let mut out = BTreeMap::new();
    let mut cur = None;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("<device ") {
            let id = attr(l, "dev_id");
            let details = [
                attr(l, "mapped_blocks"),
                attr(l, "transaction"),
                attr(l, "creation_time"),
                attr(l, "snap_time"),
            ];
            out.insert(id, (BTreeMap::new(), details));
            cur = Some(id);
        } else if l.starts_with("<range_mapping ") {
            let (o, d, n, t) = (
                attr(l, "origin_begin"),
                attr(l, "data_begin"),
                attr(l, "length"),
                attr(l, "time"),
            );
            for i in 0..n {
                out.get_mut(&cur.unwrap())
                    .unwrap()
                    .0
                    .insert(o + i, (d + i, t));
            }
        } else if l.starts_with("<single_mapping ") {
            let (o, d, t) = (
                attr(l, "origin_block"),
                attr(l, "data_block"),
                attr(l, "time"),
            );
            out.get_mut(&cur.unwrap()).unwrap().0.insert(o, (d, t));
        }
    }
    out
}

fn expand(items: &[(DeltaKind, u64, u64)]) -> BTreeMap<u64, DeltaKind> {
    let mut m = BTreeMap::new();
    for &(k, b, n) in items {
        for v in b..b + n {
            m.insert(v, k);
        }
    }
    m
}

#[test]
fn mappings_and_deltas_match_thin_dump_and_thin_delta() {
    if !have_tools() {
        println!("SKIPPED: thin-provisioning-tools not installed (apt-get install thin-provisioning-tools)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let xml_path = dir.path().join("pool.xml");
    std::fs::write(&xml_path, xml()).unwrap();
    let meta = dir.path().join("meta.bin");
    std::fs::File::create(&meta)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let m = meta.to_str().unwrap();
    run("thin_restore", &["-i", xml_path.to_str().unwrap(), "-o", m]);
    let bytes = std::fs::read(&meta).unwrap();
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

    // thin_delta (same, different, left_only, right_only), block by block.
    for (a, b) in [(1, 2), (2, 1), (1, 3), (1, 1)] {
        let text = run(
            "thin_delta",
            &["--snap1", &a.to_string(), "--snap2", &b.to_string(), m],
        );
        let mut theirs = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            let kind = if l.starts_with("<same ") {
                DeltaKind::Same
            } else if l.starts_with("<different ") {
                DeltaKind::Different
            } else if l.starts_with("<left_only ") {
                DeltaKind::LeftOnly
            } else if l.starts_with("<right_only ") {
                DeltaKind::RightOnly
            } else {
                continue;
            };
            theirs.push((kind, attr(l, "begin"), attr(l, "length")));
        }
        let ours = delta(&pool.runs(a).unwrap(), &pool.runs(b).unwrap());
        assert_eq!(expand(&ours), expand(&theirs), "thin_delta {a} {b}");
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
