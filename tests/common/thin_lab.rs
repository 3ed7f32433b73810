//! Thin-pool metadata for the tests, made and read by thin-provisioning-tools: XML for
//! `thin_restore`, and `thin_dump`'s and `thin_delta`'s answers parsed. One thing
//! `thin_restore` 0.9 cannot write is a device whose mapping tree shares subtrees with
//! another's, as the kernel leaves them after a snapshot: [`share_tree`] makes one on the
//! binary, copy-on-write as dm-thin does it, and `thin_dump` then reads it as the oracle.
//! Shared by `crates/lvm/tests` and `tests/lvm.rs` through `#[path]`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;

pub const BLOCK: usize = 4096;
/// The thin pools' data block (chunk) size the tests use: 128 sectors.
pub const CHUNK: u64 = 64 << 10;
const BTREE_XOR: u32 = 121_107;

/// A device's mappings: virtual block -> data block.
pub type Mapping = BTreeMap<u64, u64>;

/// A device as thin_dump prints it: block -> (data block, time), and its details
/// (mapped_blocks, transaction, creation_time, snap_time).
pub type DumpedDevice = (BTreeMap<u64, (u64, u64)>, [u64; 4]);

/// What `thin_delta` calls a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Same,
    Different,
    LeftOnly,
    RightOnly,
}

pub fn have_thin_tools() -> bool {
    ["thin_restore", "thin_dump", "thin_delta"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn attr(line: &str, name: &str) -> u64 {
    let key = format!(" {name}=\"");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + key.len();
    line[at..].split('"').next().unwrap().parse().unwrap()
}

/// A small deterministic generator, so failures reproduce.
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// `n` mappings in runs of 1-4 blocks with gaps of 1-3, at data blocks from `first_data`
/// on; returns them and the next free data block.
pub fn scattered(rng: &mut Lcg, n: usize, first_data: u64) -> (Mapping, u64) {
    let mut m = Mapping::new();
    let mut data = first_data;
    let mut virt = 0;
    while m.len() < n {
        virt += 1 + rng.next(3);
        let run = 1 + rng.next(4);
        for i in 0..run {
            m.insert(virt + i, data);
            data += 1;
        }
        virt += run;
    }
    (m, data)
}

/// `thin_restore`'s XML for `devices` (id, mappings, time), data blocks of
/// `block_sectors` sectors.
pub fn xml(devices: &[(u64, &Mapping, u64)], nr_data_blocks: u64, block_sectors: u64) -> String {
    let mut s = format!(
        "<superblock uuid=\"\" time=\"2\" transaction=\"3\" flags=\"0\" version=\"2\" data_block_size=\"{block_sectors}\" nr_data_blocks=\"{nr_data_blocks}\">\n"
    );
    for (id, m, time) in devices {
        s.push_str(&format!(
            "  <device dev_id=\"{id}\" mapped_blocks=\"{}\" transaction=\"{id}\" creation_time=\"0\" snap_time=\"{time}\">\n",
            m.len()
        ));
        for (v, d) in m.iter() {
            s.push_str(&format!(
                "    <single_mapping origin_block=\"{v}\" data_block=\"{d}\" time=\"{time}\"/>\n"
            ));
        }
        s.push_str("  </device>\n");
    }
    s.push_str("</superblock>\n");
    s
}

/// Each device of thin_dump's XML, by id.
pub fn dumped(text: &str) -> BTreeMap<u64, DumpedDevice> {
    let mut out: BTreeMap<u64, DumpedDevice> = BTreeMap::new();
    let mut cur = 0;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("<device ") {
            cur = attr(l, "dev_id");
            let details = [
                attr(l, "mapped_blocks"),
                attr(l, "transaction"),
                attr(l, "creation_time"),
                attr(l, "snap_time"),
            ];
            out.insert(cur, (BTreeMap::new(), details));
        } else if l.starts_with("<range_mapping ") {
            let (o, d, n, t) = (
                attr(l, "origin_begin"),
                attr(l, "data_begin"),
                attr(l, "length"),
                attr(l, "time"),
            );
            let dev = out.get_mut(&cur).unwrap();
            for i in 0..n {
                dev.0.insert(o + i, (d + i, t));
            }
        } else if l.starts_with("<single_mapping ") {
            let (o, d, t) = (
                attr(l, "origin_block"),
                attr(l, "data_block"),
                attr(l, "time"),
            );
            out.get_mut(&cur).unwrap().0.insert(o, (d, t));
        }
    }
    out
}

/// `thin_delta --snap1 a --snap2 b`, block by block.
pub fn thin_delta(meta: &str, a: u64, b: u64) -> BTreeMap<u64, Kind> {
    let text = run(
        "thin_delta",
        &["--snap1", &a.to_string(), "--snap2", &b.to_string(), meta],
    );
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let l = line.trim();
        let kind = if l.starts_with("<same ") {
            Kind::Same
        } else if l.starts_with("<different ") {
            Kind::Different
        } else if l.starts_with("<left_only ") {
            Kind::LeftOnly
        } else if l.starts_with("<right_only ") {
            Kind::RightOnly
        } else {
            continue;
        };
        let (begin, n) = (attr(l, "begin"), attr(l, "length"));
        for v in begin..begin + n {
            out.insert(v, kind);
        }
    }
    out
}

/// CRC-32C as dm-persistent-data seeds it (`!0`, no final inversion); written here
/// again so that the metadata the tests make does not lean on the code under test.
fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = (c >> 1) ^ (0x82f6_3b78 & (c & 1).wrapping_neg());
        }
    }
    c
}

fn u32_at(m: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(m[at..at + 4].try_into().unwrap())
}

fn u64_at(m: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(m[at..at + 8].try_into().unwrap())
}

/// A btree node at block `b`: (internal?, entries, max entries).
fn node(m: &[u8], b: u64) -> (bool, usize, usize) {
    let at = b as usize * BLOCK;
    (
        u32_at(m, at + 4) == 1,
        u32_at(m, at + 16) as usize,
        u32_at(m, at + 20) as usize,
    )
}

/// The 8-byte value slot `i` of node `b`.
fn value_at(m: &[u8], b: u64, i: usize) -> usize {
    let (_, _, max) = node(m, b);
    b as usize * BLOCK + 32 + max * 8 + i * 8
}

/// Fixes node `b`'s location field and checksum after a change.
fn seal(m: &mut [u8], b: u64) {
    let at = b as usize * BLOCK;
    m[at + 8..at + 16].copy_from_slice(&b.to_le_bytes());
    let sum = crc32c(&m[at + 4..at + BLOCK]) ^ BTREE_XOR;
    m[at..at + 4].copy_from_slice(&sum.to_le_bytes());
}

/// Device `dev`'s slot in the top-level mapping tree (a single leaf for a few devices).
fn top_slot(m: &[u8], dev: u64) -> usize {
    let top = u64_at(m, 320);
    let (internal, n, _) = node(m, top);
    assert!(!internal, "the test keeps few devices: one top-level leaf");
    let i = (0..n)
        .find(|&i| u64_at(m, top as usize * BLOCK + 32 + i * 8) == dev)
        .unwrap_or_else(|| panic!("device {dev} in the top-level tree"));
    value_at(m, top, i)
}

/// Makes device `to` a copy-on-write snapshot of device `from` after writes: `to`'s
/// tree shares every node of `from`'s except the path down to one leaf, which is copied
/// (into blocks never written) with every mapping of that leaf moved to a new data block
/// from `next_data` on. With `remap` false, `to` shares `from`'s whole tree (a snapshot
/// just taken). `to` must exist (restored with any mapping). Returns the next free data
/// block.
pub fn share_tree(m: &mut [u8], from: u64, to: u64, remap: bool, mut next_data: u64) -> u64 {
    let top = u64_at(m, 320);
    let from_root = u64_at(m, top_slot(m, from));
    let to_slot = top_slot(m, to);
    if !remap {
        m[to_slot..to_slot + 8].copy_from_slice(&from_root.to_le_bytes());
        seal(m, top);
        return next_data;
    }
    // Never-written blocks, from the end of the metadata.
    let mut free = (0..(m.len() / BLOCK) as u64)
        .rev()
        .filter(|&b| {
            m[b as usize * BLOCK..(b as usize + 1) * BLOCK]
                .iter()
                .all(|&x| x == 0)
        })
        .collect::<Vec<_>>()
        .into_iter();
    let (mut at, mut parent_slot) = (from_root, to_slot);
    let mut touched = vec![top];
    loop {
        let copy = free.next().expect("a free metadata block");
        let (src, dst) = (at as usize * BLOCK, copy as usize * BLOCK);
        m.copy_within(src..src + BLOCK, dst);
        m[parent_slot..parent_slot + 8].copy_from_slice(&copy.to_le_bytes());
        touched.push(copy);
        let (internal, n, _) = node(m, copy);
        assert!(n > 1, "a node with several entries");
        if internal {
            // Down the middle child; its siblings stay shared.
            parent_slot = value_at(m, copy, n / 2);
            at = u64_at(m, parent_slot);
            continue;
        }
        for i in 0..n {
            let slot = value_at(m, copy, i);
            let time = u64_at(m, slot) & 0xff_ffff;
            m[slot..slot + 8].copy_from_slice(&((next_data << 24) | time).to_le_bytes());
            next_data += 1;
        }
        break;
    }
    // Children first, so each parent's checksum covers its final pointers.
    for &b in touched.iter().rev() {
        seal(m, b);
    }
    next_data
}
