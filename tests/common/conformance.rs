//! The backend conformance suite: what every plugin's pool must answer alike, whatever
//! stores the bytes (qcow2 files, raw files, LVM volumes). Run through the CLI on a pool
//! the caller filled, against oracles snapport did not write:
//!
//! - every disk and snapshot listed downloads to its listed size, and its content digest
//!   equals an independent Python implementation's over the raw bytes;
//! - the qcow2 export passes `qemu-img check` and `qemu-img compare`s equal to the raw
//!   one; the raw.zst export passes `zstd -t` and decompresses to the raw bytes;
//! - snapshots `describe` as they list, Ready;
//! - where a disk has two snapshots and the plugin answers changed extents, the delta
//!   between them applied onto the first gives the second, byte for byte;
//! - a disk or snapshot that does not exist is one error line naming it, exit 1, and no
//!   output file;
//! - `snapport plugin test -n POOL --writable`, the suite the product ships, passes on the
//!   pool: no case fails, and it leaves the pool as it found it.
//!
//! Included by test crates that also have `mod common;`.
#![allow(dead_code)]

use crate::common::{p, python_content_digest, sidecar_digest, tool, Home};
use std::path::PathBuf;

/// What the suite checked, so a caller can assert it was not run on an empty pool.
#[derive(Debug, Default)]
pub struct Checked {
    pub disks: usize,
    pub snapshots: usize,
    pub deltas: usize,
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn listed(home: &Home, kind: &str, pool: &str) -> Vec<(String, u64)> {
    json(&home.ok(&["get", kind, "-n", pool, "-o", "json"]))
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().expect("a name").to_string(),
                v["size"].as_u64().expect("a size"),
            )
        })
        .collect()
}

/// Downloads `address` in every format and checks each against the others and the
/// oracles; returns the raw export.
fn exports(home: &Home, pool: &str, address: &str, size: u64) -> PathBuf {
    let stem = address.replace(['/', '@'], "_");
    let raw = home.out(&format!("{stem}.raw"));
    home.ok(&["download", address, "-n", pool, "-o", p(&raw), "-q"]);
    assert_eq!(
        std::fs::metadata(&raw).unwrap().len(),
        size,
        "{address}: size"
    );
    assert_eq!(
        sidecar_digest(&raw),
        python_content_digest(&raw),
        "{address}: content digest"
    );

    let qcow2 = home.out(&format!("{stem}.qcow2"));
    home.ok(&[
        "download",
        address,
        "-n",
        pool,
        "--format",
        "qcow2",
        "-o",
        p(&qcow2),
        "-q",
    ]);
    tool("qemu-img", &["check", "-q", "-f", "qcow2", p(&qcow2)]);
    tool(
        "qemu-img",
        &[
            "compare",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            p(&qcow2),
            p(&raw),
        ],
    );
    assert_eq!(sidecar_digest(&qcow2), sidecar_digest(&raw), "{address}");
    std::fs::remove_file(&qcow2).unwrap();

    let zst = home.out(&format!("{stem}.raw.zst"));
    home.ok(&[
        "download",
        address,
        "-n",
        pool,
        "--format",
        "raw.zst",
        "-o",
        p(&zst),
        "-q",
    ]);
    tool("zstd", &["-q", "-t", p(&zst)]);
    let unpacked = home.out(&format!("{stem}.unzst"));
    tool("zstd", &["-q", "-d", "-f", p(&zst), "-o", p(&unpacked)]);
    tool("cmp", &[p(&unpacked), p(&raw)]);
    std::fs::remove_file(&zst).unwrap();
    std::fs::remove_file(&unpacked).unwrap();
    raw
}

/// `snapport download vds/D@NEW --since vds/D@BASE`, applied onto BASE's raw export by
/// the test itself, must give NEW's raw export.
fn delta(home: &Home, pool: &str, base: &str, new: &str, base_raw: &PathBuf, new_raw: &PathBuf) {
    let file = home.out("conformance.delta");
    home.ok(&[
        "download",
        new,
        "--since",
        base,
        "-n",
        pool,
        "-o",
        p(&file),
        "-q",
    ]);
    let bytes = std::fs::read(&file).unwrap();
    let parsed = snapport_core::delta::read_delta(&mut &bytes[..]).expect("a valid delta");
    let mut image = std::fs::read(base_raw).unwrap();
    for r in &parsed.records {
        let span = r.offset as usize..(r.offset + r.length) as usize;
        match r.data_at {
            Some(at) => image[span].copy_from_slice(&bytes[at as usize..(at + r.length) as usize]),
            None => image[span].fill(0),
        }
    }
    assert!(
        image == std::fs::read(new_raw).unwrap(),
        "{base} + its delta to {new} is not {new}"
    );
    std::fs::remove_file(&file).unwrap();
}

/// Runs the suite on `pool`. `deltas`: whether the plugin answers changed extents.
pub fn check_pool(home: &Home, pool: &str, deltas: bool) -> Checked {
    let mut checked = Checked::default();
    let disks = listed(home, "vd", pool);
    for (address, size) in &disks {
        let raw = exports(home, pool, address, *size);
        std::fs::remove_file(&raw).unwrap();
        checked.disks += 1;
    }
    let snapshots = listed(home, "vds", pool);
    let mut raws: Vec<(String, PathBuf)> = Vec::new();
    for (address, size) in &snapshots {
        let described = json(&home.ok(&["describe", address, "-n", pool, "-o", "json"]));
        assert_eq!(described["name"].as_str(), Some(address.as_str()));
        assert_eq!(described["size"].as_u64(), Some(*size), "{address}");
        assert_eq!(described["phase"].as_str(), Some("Ready"), "{address}");
        raws.push((address.clone(), exports(home, pool, address, *size)));
        checked.snapshots += 1;
    }
    if deltas {
        // Consecutive snapshots of one disk, in the order the pool lists them.
        for pair in raws.windows(2) {
            let disk = |a: &str| a.split('@').next().unwrap().to_string();
            if disk(&pair[0].0) == disk(&pair[1].0) {
                delta(home, pool, &pair[0].0, &pair[1].0, &pair[0].1, &pair[1].1);
                checked.deltas += 1;
            }
        }
    }
    for (_, raw) in raws {
        std::fs::remove_file(raw).unwrap();
    }

    // What does not exist: one line naming it, and no output left.
    let out = home.out("conformance-missing.raw");
    let err = home.fails(&[
        "download",
        "vd/conformance-missing",
        "-n",
        pool,
        "-o",
        p(&out),
    ]);
    assert!(err.contains("conformance-missing"), "{err}");
    if let Some((disk, _)) = disks.first() {
        let name = disk.trim_start_matches("vd/");
        let missing = format!("vds/{name}@conformance-missing");
        let err = home.fails(&["download", &missing, "-n", pool, "-o", p(&out)]);
        assert!(err.contains("conformance-missing"), "{err}");
    }
    assert!(!out.exists(), "a failed download left {}", out.display());

    let before = (listed(home, "vd", pool), listed(home, "vds", pool));
    suite(home, &["-n", pool, "--writable"]);
    let after = (listed(home, "vd", pool), listed(home, "vds", pool));
    assert_eq!(before, after, "plugin test left the pool changed");
    checked
}

/// `snapport plugin test ARGS -o json`, which must pass: exit 0 and no case failed.
/// Returns the report.
pub fn suite(home: &Home, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["plugin", "test"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = home.snapport(&all);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "snapport {all:?} printed no report: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let failed: Vec<String> = report["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| format!("{}: {}", c["name"], c["detail"]))
        .collect();
    assert!(
        failed.is_empty() && out.status.success(),
        "snapport {all:?}: {failed:#?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

/// The status of case `name` in a `plugin test` report.
pub fn status<'a>(report: &'a serde_json::Value, name: &str) -> &'a str {
    report["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_else(|| panic!("no case {name} in {report}"))
}
