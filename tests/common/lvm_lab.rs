//! Loop devices holding LVM physical volumes, made with LVM's own tools (no
//! device-mapper: `--driverloaded n`), for the tests that read them back, and thin
//! pools restored by `vgcfgrestore` ([`thin_vg`]). Shared by `crates/lvm/tests`,
//! `tests/lvm.rs` and the thin bench in `xtask` through `#[path]`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Loop devices and a VG that go away with the test, whatever happens.
pub struct Lab {
    _dir: tempfile::TempDir,
    pub loops: Vec<String>,
    pub vg: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = lvm(&self.loops, &["vgremove", "-f", &self.vg]);
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

pub fn lvm(devices: &[String], args: &[&str]) -> std::result::Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .arg("--devices")
        .arg(devices.join(","))
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn ok(devices: &[String], args: &[&str]) -> String {
    lvm(devices, args).unwrap_or_else(|e| panic!("{e}"))
}

/// `lvcreate` without device-mapper: LVM writes the metadata only (the LV stays
/// inactive, nothing is wiped or zeroed), then `args`.
pub fn lvcreate(devices: &[String], args: &[&str]) -> String {
    let base = ["lvcreate", "-q", "--driverloaded", "n", "-an", "-Wn", "-Zn"];
    ok(devices, &[&base[..], args].concat())
}

/// Where the first extent of PV `dev` starts, in bytes, as `pvs` reports it.
pub fn pe_start(devices: &[String], dev: &str) -> u64 {
    let text = ok(
        devices,
        &[
            "pvs",
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "pe_start",
            dev,
        ],
    );
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("pvs pe_start: {text:?}"))
}

/// Where the bytes of `vg/lv`, an LV of one linear segment (hidden ones too), start on
/// its PV: the PE range `lvs` reports, from that PV's `pe_start`, in extents of
/// `extent` bytes. Returns the PV and the offset.
pub fn linear_at(devices: &[String], vg: &str, lv: &str, extent: u64) -> (String, u64) {
    let text = ok(
        devices,
        &[
            "lvs",
            "-a",
            "--noheadings",
            "--segments",
            "-o",
            "seg_pe_ranges",
            &format!("{vg}/{lv}"),
        ],
    );
    let ranges: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(ranges.len(), 1, "{vg}/{lv} in one linear piece: {text:?}");
    let (dev, span) = ranges[0].rsplit_once(':').expect("DEV:A-B");
    let first: u64 = span.split('-').next().unwrap().parse().expect("an extent");
    (dev.to_string(), pe_start(devices, dev) + first * extent)
}

fn capable() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: loop devices need root");
    }
    for tool in ["losetup", "pvcreate"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return Some(if tool == "losetup" {
                "losetup is not installed"
            } else {
                "lvm2 is not installed (apt-get install lvm2)"
            });
        }
    }
    None
}

pub fn setup(sizes_mib: &[u64]) -> Option<Lab> {
    if let Some(why) = capable() {
        println!("SKIPPED: {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut loops = Vec::new();
    for (i, mib) in sizes_mib.iter().enumerate() {
        let img: PathBuf = dir.path().join(format!("pv{i}.img"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .unwrap();
        if !out.status.success() {
            println!(
                "SKIPPED: no loop device: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        loops.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    Some(Lab {
        _dir: dir,
        loops,
        vg: format!("snapporttest{}", std::process::id()),
    })
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Thin volumes with LVM's own metadata: `tm` and `td` (plain LVs LVM placed) become the
/// hidden metadata and data LVs of thin pool `pool`, and thin LVs `(name, device id,
/// origin)` of `extents` extents are added; `vgcfgrestore` checks and writes it.
pub fn thin_vg(d: &[String], vg: &str, thins: &[(&str, u64, Option<&str>)], extents: u64) {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("vg.txt");
    ok(d, &["vgcfgbackup", "-q", "-f", path(&backup), vg]);
    let text = std::fs::read_to_string(&backup).unwrap();
    let lvs_at = text.find("logical_volumes {").unwrap();
    let (head, lvs) = text.split_at(lvs_at);
    let lvs = lvs
        .replace("\t\ttm {", "\t\tpool_tmeta {")
        .replace("\t\ttd {", "\t\tpool_tdata {")
        .replace(
            "status = [\"READ\", \"WRITE\", \"VISIBLE\"]",
            "status = [\"READ\", \"WRITE\"]",
        );
    let pool_extents = ok(
        d,
        &[
            "lvs",
            "--noheadings",
            "-o",
            "seg_size_pe",
            &format!("{vg}/td"),
        ],
    );
    let mut added = format!(
        "\t\tpool {{\n\t\t\tid = \"pool00-0000-0000-0000-0000-0000-000000\"\n\
         \t\t\tstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\n\t\t\tflags = []\n\
         \t\t\tsegment_count = 1\n\t\t\tsegment1 {{\n\t\t\t\tstart_extent = 0\n\
         \t\t\t\textent_count = {}\n\t\t\t\ttype = \"thin-pool\"\n\
         \t\t\t\tmetadata = \"pool_tmeta\"\n\t\t\t\tpool = \"pool_tdata\"\n\
         \t\t\t\ttransaction_id = {}\n\t\t\t\tchunk_size = 128\n\
         \t\t\t\tdiscards = \"passdown\"\n\t\t\t\tzero_new_blocks = 1\n\t\t\t}}\n\t\t}}\n",
        pool_extents.trim(),
        thins.len()
    );
    for (i, (name, id, origin)) in thins.iter().enumerate() {
        let origin = origin.map_or(String::new(), |o| format!("\t\t\t\torigin = \"{o}\"\n"));
        added.push_str(&format!(
            "\t\t{name} {{\n\t\t\tid = \"thin{i:02}-0000-0000-0000-0000-0000-000000\"\n\
             \t\t\tstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\n\t\t\tflags = []\n\
             \t\t\tcreation_time = {}\n\t\t\tcreation_host = \"test\"\n\
             \t\t\tsegment_count = 1\n\t\t\tsegment1 {{\n\t\t\t\tstart_extent = 0\n\
             \t\t\t\textent_count = {extents}\n\t\t\t\ttype = \"thin\"\n\
             \t\t\t\tthin_pool = \"pool\"\n\t\t\t\ttransaction_id = {i}\n\
             \t\t\t\tdevice_id = {id}\n{origin}\t\t\t}}\n\t\t}}\n",
            1_700_000_000 + i as u64 * 60,
        ));
    }
    // The LV list closes with the last LV's brace and its own.
    let close = lvs.rfind("\t}\n").unwrap();
    let text = format!("{head}{}{added}{}", &lvs[..close], &lvs[close..]);
    std::fs::write(&backup, text).unwrap();
    ok(
        d,
        &[
            "vgcfgrestore",
            "-q",
            "--driverloaded",
            "n",
            "--force",
            "-f",
            path(&backup),
            vg,
        ],
    );
}
