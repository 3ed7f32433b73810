//! The lvm plugin end to end: physical volumes made by LVM's own tools on loop devices
//! are granted to a pool; `get vd` lists the LVs, and `download` of a linear LV of two
//! segments on two PVs and of a striped LV equals (`cmp`) the bytes the test placed on
//! the PVs at the extents `lvs` reports. A PV the pool does not grant, and a device that
//! is no PV, are named in one error line.

mod common;
#[path = "common/lvm_lab.rs"]
mod lvm_lab;

use common::*;
use lvm_lab::{ok, setup};
use std::os::unix::fs::FileExt;

/// A stripe as `lvs` reports it: device, first extent, last extent.
type Stripe = (String, u64, u64);

/// The PE ranges `lvs` reports for each segment of `lv`: per segment, its stripe size
/// (bytes) and its stripes.
fn segments(d: &[String], vg: &str, lv: &str) -> Vec<(u64, Vec<Stripe>)> {
    let report = ok(
        d,
        &[
            "lvs",
            "--noheadings",
            "--segments",
            "--units",
            "b",
            "--nosuffix",
            "--separator",
            ";",
            "-o",
            "stripe_size,seg_pe_ranges",
            &format!("{vg}/{lv}"),
        ],
    );
    report
        .lines()
        .map(|line| {
            let (size, ranges) = line.trim().split_once(';').unwrap();
            let stripes = ranges
                .split_whitespace()
                .map(|r| {
                    let (dev, span) = r.rsplit_once(':').unwrap();
                    let (a, b) = span.split_once('-').unwrap();
                    (dev.to_string(), a.parse().unwrap(), b.parse().unwrap())
                })
                .collect();
            (size.trim().parse().unwrap(), stripes)
        })
        .collect()
}

/// What the LV holds, from the PV bytes and `lvs`'s segments: stripes take turns, one
/// stripe size at a time.
fn expected(
    d: &[String],
    vg: &str,
    lv: &str,
    extent: u64,
    pe_start: u64,
    pv_bytes: &[Vec<u8>],
) -> Vec<u8> {
    let mut out = Vec::new();
    for (stripe_size, stripes) in segments(d, vg, lv) {
        let part = |(dev, a, b): &Stripe| {
            let i = d.iter().position(|x| x == dev).unwrap();
            pv_bytes[i]
                [((pe_start + a * extent) as usize)..((pe_start + (b + 1) * extent) as usize)]
                .to_vec()
        };
        if stripes.len() == 1 {
            out.extend(part(&stripes[0]));
            continue;
        }
        let parts: Vec<Vec<u8>> = stripes.iter().map(part).collect();
        let chunk = stripe_size as usize;
        for row in 0..parts[0].len() / chunk {
            for p in &parts {
                out.extend_from_slice(&p[row * chunk..(row + 1) * chunk]);
            }
        }
    }
    out
}

#[test]
fn linear_and_striped_lvs_export_as_the_bytes_on_their_pvs() {
    let Some(lab) = setup(&[48, 48]) else { return };
    let d = &lab.loops;
    let vg = lab.vg.as_str();
    ok(d, &["pvcreate", "-q", "-y", &d[0]]);
    ok(d, &["pvcreate", "-q", "-y", &d[1]]);
    ok(d, &["vgcreate", "-q", "-s", "1m", vg, &d[0], &d[1]]);
    let create = ["lvcreate", "-q", "--driverloaded", "n", "-an", "-Wn", "-Zn"];
    ok(
        d,
        &[&create[..], &["-L", "5m", "-n", "lin", vg, &d[0]]].concat(),
    );
    ok(
        d,
        &[
            "lvextend",
            "-q",
            "--driverloaded",
            "n",
            "-L",
            "+3m",
            &format!("{vg}/lin"),
            &d[1],
        ],
    );
    ok(
        d,
        &[
            &create[..],
            &["-i", "2", "-I", "64k", "-L", "8m", "-n", "str", vg],
        ]
        .concat(),
    );

    // Fill every PV's extents with bytes that differ everywhere.
    let pe_start: u64 = ok(
        d,
        &[
            "pvs",
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "pe_start",
            &d[0],
        ],
    )
    .trim()
    .parse()
    .unwrap();
    let mut pv_bytes = Vec::new();
    for (i, dev) in d.iter().enumerate() {
        let mut bytes = std::fs::read(dev).unwrap();
        for (x, b) in bytes.iter_mut().enumerate().skip(pe_start as usize) {
            *b = (x as u64 * 31 + x as u64 / 65521 + i as u64 * 101) as u8;
        }
        let f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
        f.write_all_at(&bytes[pe_start as usize..], pe_start)
            .unwrap();
        f.sync_all().unwrap();
        pv_bytes.push(bytes);
    }

    let home = Home::new();
    home.write_config(&format!(
        "[pools.lvm]\nplugin = \"lvm\"\ndevices = {{ a = \"{}\", b = \"{}\" }}\n",
        d[0], d[1]
    ));
    let list: serde_json::Value =
        serde_json::from_slice(&home.ok(&["get", "vd", "-n", "lvm", "-o", "json"]).stdout).unwrap();
    let mut names: Vec<(String, u64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["size"].as_u64().unwrap(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("vd/lin".to_string(), 8 << 20),
            ("vd/str".to_string(), 8 << 20)
        ]
    );

    for lv in ["lin", "str"] {
        let out = home.out(&format!("{lv}.raw"));
        home.ok(&[
            "download",
            &format!("vd/{lv}"),
            "-n",
            "lvm",
            "-o",
            p(&out),
            "-q",
        ]);
        let want = home.out(&format!("{lv}.want"));
        std::fs::write(&want, expected(d, vg, lv, 1 << 20, pe_start, &pv_bytes)).unwrap();
        tool("cmp", &[p(&out), p(&want)]);
    }

    // Only the first PV granted: the LV that reaches the second is refused by name.
    home.write_config(&format!(
        "[pools.lvm]\nplugin = \"lvm\"\ndevices = {{ a = \"{}\" }}\n",
        d[0]
    ));
    let err = home.fails(&[
        "download",
        "vd/lin",
        "-n",
        "lvm",
        "-o",
        p(&home.out("x.raw")),
    ]);
    assert!(err.contains("does not grant"), "{err}");
    // A device that is no PV.
    let junk = home.out("junk.img");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    home.write_config(&format!(
        "[pools.lvm]\nplugin = \"lvm\"\ndevices = {{ a = \"{}\" }}\n",
        junk.display()
    ));
    let err = home.fails(&["get", "vd", "-n", "lvm"]);
    assert!(err.contains("not a physical volume"), "{err}");
}
