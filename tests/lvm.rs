//! The lvm plugin end to end: physical volumes made by LVM's own tools on loop devices
//! are granted to a pool; `get vd` lists the LVs, and `download` of a linear LV of two
//! segments on two PVs and of a striped LV equals (`cmp`) the bytes the test placed on
//! the PVs at the extents `lvs` reports; `upload --in-place` writes an image into those
//! LVs, found back on the PVs at the same extents, nothing outside them touched. A PV the
//! pool does not grant, and a device that is no PV, are named in one error line.
//!
//! Thin LVs: a thin pool restored with `vgcfgrestore`, its metadata from `thin_restore`,
//! snapshots sharing subtrees; exports equal `thin_dump`'s maps, deltas `thin_delta`'s.
//! Both pools then pass the backend conformance suite (`common/conformance.rs`).

mod common;
#[path = "common/conformance.rs"]
mod conformance;
#[path = "common/lvm_lab.rs"]
mod lvm_lab;
#[path = "common/thin_lab.rs"]
mod thin_lab;

use common::*;
use lvm_lab::{lvcreate, ok, setup};
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
            "-a",
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
    lvcreate(d, &["-L", "5m", "-n", "lin", vg, &d[0]]);
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
    lvcreate(d, &["-i", "2", "-I", "64k", "-L", "8m", "-n", "str", vg]);

    // Fill every PV's extents with bytes that differ everywhere.
    let pe_start = lvm_lab::pe_start(d, &d[0]);
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

    // Writes go into existing LVs, in place, where LVM's report says their extents lie:
    // an 8 MiB qcow2 with data and holes (the holes must overwrite what was there).
    let img = home.out("in.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "8M"]);
    qemu_io(
        &img,
        "qcow2",
        &[
            "write -P 0x61 0 1M",
            "write -P 0x62 3M 100k",
            "write -P 0x63 7M 1M",
        ],
    );
    let img_raw = home.out("in.raw");
    tool("qemu-img", &["convert", "-O", "raw", p(&img), p(&img_raw)]);
    let image = std::fs::read(&img_raw).unwrap();
    // --in-place takes an existing disk, not a VM.
    let err = home.usage_fails(&["upload", p(&img), "vm/x", "--in-place"]);
    assert!(
        err.contains("--in-place writes into an existing disk"),
        "{err}"
    );
    // A read-only pool refuses before anything is written.
    let err = home.fails(&["upload", p(&img), "vd/lin", "-n", "lvm", "--in-place"]);
    assert!(err.contains("read-only"), "{err}");
    home.write_config(&format!(
        "[pools.lvm]\nplugin = \"lvm\"\nwritable = true\ndevices = {{ a = \"{}\", b = \"{}\" }}\n",
        d[0], d[1]
    ));
    // Without --in-place a new LV is asked for, which needs LVM's tools.
    let err = home.fails(&["upload", p(&img), "vd/new", "-n", "lvm"]);
    assert!(
        err.contains("lvcreate") && err.contains("does not grant"),
        "{err}"
    );
    for lv in ["lin", "str"] {
        home.ok(&[
            "upload",
            p(&img),
            &format!("vd/{lv}"),
            "-n",
            "lvm",
            "--in-place",
            "-q",
        ]);
        let pv_now: Vec<Vec<u8>> = d.iter().map(|dev| std::fs::read(dev).unwrap()).collect();
        let on_pvs = expected(d, vg, lv, 1 << 20, pe_start, &pv_now);
        assert!(on_pvs == image, "vd/{lv}: the PV extents hold the image");
        let back = home.out(&format!("{lv}.back.raw"));
        home.ok(&[
            "download",
            &format!("vd/{lv}"),
            "-n",
            "lvm",
            "-o",
            p(&back),
            "-q",
        ]);
        tool(
            "qemu-img",
            &["compare", "-f", "raw", "-F", "qcow2", p(&back), p(&img)],
        );
    }
    // Outside the LVs nothing changed.
    let lin_str: Vec<Vec<u8>> = d.iter().map(|dev| std::fs::read(dev).unwrap()).collect();
    for (i, (now, before)) in lin_str.iter().zip(&pv_bytes).enumerate() {
        let used: Vec<(u64, u64)> = ["lin", "str"]
            .iter()
            .flat_map(|lv| segments(d, vg, lv))
            .flat_map(|(_, stripes)| stripes)
            .filter(|(dev, _, _)| *dev == d[i])
            .map(|(_, a, b)| (pe_start + a * (1 << 20), pe_start + (b + 1) * (1 << 20)))
            .collect();
        for (x, (n, b)) in now.iter().zip(before).enumerate().skip(pe_start as usize) {
            if !used.iter().any(|(a, e)| (*a..*e).contains(&(x as u64))) {
                assert_eq!(n, b, "PV {i} byte {x} outside the LVs changed");
            }
        }
    }
    // The wrong size is refused before a byte is written.
    let small = home.out("small.qcow2");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", p(&small), "4M"],
    );
    let err = home.fails(&["upload", p(&small), "vd/lin", "-n", "lvm", "--in-place"]);
    assert!(err.contains("exactly the image's size"), "{err}");
    let pv_now: Vec<Vec<u8>> = d.iter().map(|dev| std::fs::read(dev).unwrap()).collect();
    assert!(expected(d, vg, "lin", 1 << 20, pe_start, &pv_now) == image);
    // A digest that does not match: the error says the LV now holds part of an image.
    let err = home.fails(&[
        "upload",
        p(&img),
        "vd/lin",
        "-n",
        "lvm",
        "--in-place",
        "--digest",
        "sha256-64k-4m:0000000000000000000000000000000000000000000000000000000000000000",
    ]);
    assert!(
        err.contains("mismatch") && err.contains("written in place"),
        "{err}"
    );

    // With lvcreate and lvremove granted (LVM's real tools, no device-mapper), upload
    // creates an LV, which `lvs` then lists, holding the image on its PVs; a failed
    // upload removes the LV it made; delete removes it.
    let grant = |lvcreate_options: &str| {
        let devs = d.join(",");
        home.write_config(&format!(
            "[pools.lvm]\nplugin = \"lvm\"\nwritable = true\ndevices = {{ a = \"{}\", b = \"{}\" }}\n\
             [pools.lvm.tools.lvcreate]\ncommand = [\"lvcreate\", \"--driverloaded\", \"n\", \"-an\", \"-Zn\", \"-Wn\", \"--devices\", \"{devs}\"]\n\
             options = [{lvcreate_options}]\n\
             [pools.lvm.tools.lvremove]\ncommand = [\"lvremove\", \"--driverloaded\", \"n\", \"--devices\", \"{devs}\"]\n\
             options = [\"--yes\"]\n",
            d[0], d[1]
        ));
    };
    grant("\"--name\", \"--size\", \"--snapshot\"");
    let lv_names = || -> Vec<String> {
        ok(d, &["lvs", "--noheadings", "-o", "lv_name", vg])
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    };
    home.ok(&["upload", p(&img), "vd/made", "-n", "lvm", "-q"]);
    assert!(lv_names().contains(&"made".to_string()), "{:?}", lv_names());
    let pv_now: Vec<Vec<u8>> = d.iter().map(|dev| std::fs::read(dev).unwrap()).collect();
    assert!(expected(d, vg, "made", 1 << 20, pe_start, &pv_now) == image);
    let back = home.out("made.raw");
    home.ok(&["download", "vd/made", "-n", "lvm", "-o", p(&back), "-q"]);
    tool(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", p(&back), p(&img)],
    );
    let err = home.fails(&[
        "upload",
        p(&img),
        "vd/made2",
        "-n",
        "lvm",
        "--digest",
        "sha256-64k-4m:0000000000000000000000000000000000000000000000000000000000000000",
    ]);
    assert!(err.contains("mismatch"), "{err}");
    assert!(
        !lv_names().contains(&"made2".to_string()),
        "{:?}",
        lv_names()
    );
    // Not whole extents; an LV's COW snapshot; an option the pool does not allow.
    let odd = home.out("odd.qcow2");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", p(&odd), "1536k"],
    );
    let err = home.fails(&["upload", p(&odd), "vd/odd", "-n", "lvm"]);
    assert!(err.contains("whole extents"), "{err}");
    let err = home.fails(&["snapshot", "create", "vd/lin", "--name", "s1", "-n", "lvm"]);
    assert!(err.contains("copy-on-write"), "{err}");
    grant("\"--name\"");
    let err = home.fails(&["upload", p(&img), "vd/made3", "-n", "lvm"]);
    assert!(err.contains("\"--size\" is not among the options"), "{err}");
    assert!(!lv_names().contains(&"made3".to_string()));
    grant("\"--name\", \"--size\"");
    home.ok(&["delete", "vd/made", "-n", "lvm", "-q"]);
    assert!(
        !lv_names().contains(&"made".to_string()),
        "{:?}",
        lv_names()
    );

    // The backend conformance suite the qcow2 and raw pools pass.
    let checked = conformance::check_pool(&home, "lvm", false);
    assert_eq!(checked.disks, 2, "{checked:?}");

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

/// The bytes the test puts in data block `d` of the pool: no two blocks alike, no zero.
fn data_block(d: u64) -> Vec<u8> {
    (0..thin_lab::CHUNK / 8)
        .flat_map(|w| ((d << 32 | w) ^ 0x5a5a_0000_0000_a5a5).to_le_bytes())
        .collect()
}

/// A thin device's content as thin_dump maps it, written sparsely to `path`.
fn thin_content(
    path: &std::path::Path,
    blocks: &std::collections::BTreeMap<u64, (u64, u64)>,
    size: u64,
) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (v, (d, _)) in blocks {
        f.write_all_at(&data_block(*d), v * thin_lab::CHUNK)
            .unwrap();
    }
}

/// Byte ranges of mapped blocks, merged, as `qemu-img map` reports a sparse file's data.
fn mapped_ranges(blocks: &std::collections::BTreeMap<u64, (u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for v in blocks.keys() {
        let (a, n) = (v * thin_lab::CHUNK, thin_lab::CHUNK);
        match out.last_mut() {
            Some(l) if l.0 + l.1 == a => l.1 += n,
            _ => out.push((a, n)),
        }
    }
    out
}

#[test]
fn thin_lvs_and_snapshots_export_as_thin_dump_maps_them() {
    if !thin_lab::have_thin_tools() {
        println!("SKIPPED: thin-provisioning-tools not installed (apt-get install thin-provisioning-tools)");
        return;
    }
    let Some(lab) = setup(&[240]) else { return };
    let d = &lab.loops;
    let vg = lab.vg.as_str();
    ok(d, &["pvcreate", "-q", "-y", &d[0]]);
    ok(d, &["vgcreate", "-q", "-s", "1m", vg, &d[0]]);
    lvcreate(d, &["-L", "4m", "-n", "tm", vg]);
    lvcreate(d, &["-L", "224m", "-n", "td", vg]);
    const EXTENTS: u64 = 384;
    lvm_lab::thin_vg(
        d,
        vg,
        &[
            ("vol", 1, None),
            ("snap1", 2, Some("vol")),
            ("snap2", 3, Some("vol")),
        ],
        EXTENTS,
    );
    // LVM's own reading of what was restored.
    let report = ok(
        d,
        &[
            "lvs",
            "--noheadings",
            "--separator",
            ";",
            "-o",
            "lv_name,segtype,origin,thin_id",
            vg,
        ],
    );
    let report: Vec<String> = report.lines().map(|l| l.trim().to_string()).collect();
    assert!(
        report.contains(&"snap1;thin;vol;2".to_string()),
        "{report:?}"
    );
    assert!(
        report.contains(&"pool;thin-pool;;".to_string()),
        "{report:?}"
    );

    // Thin-pool metadata: vol with 3000 mappings (a btree two levels deep); snap1
    // shares all of vol's tree but one leaf, remapped; snap2 shares vol's whole tree.
    let mut rng = thin_lab::Lcg(11);
    let (vol, next) = thin_lab::scattered(&mut rng, 3000, 0);
    let size = EXTENTS << 20;
    assert!(*vol.keys().last().unwrap() < size / thin_lab::CHUNK);
    let one = std::collections::BTreeMap::from([(0, next)]);
    let tdata_blocks = (224 << 20) / thin_lab::CHUNK;
    let home = Home::new();
    let xml = home.out("pool.xml");
    std::fs::write(
        &xml,
        thin_lab::xml(
            &[(1, &vol, 0), (2, &one, 1), (3, &one, 1)],
            tdata_blocks,
            128,
        ),
    )
    .unwrap();
    let meta = home.out("meta.bin");
    std::fs::File::create(&meta)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let m = p(&meta);
    thin_lab::run("thin_restore", &["-i", p(&xml), "-o", m]);
    let mut bytes = std::fs::read(m).unwrap();
    let used = thin_lab::share_tree(&mut bytes, 1, 2, true, next + 1);
    thin_lab::share_tree(&mut bytes, 1, 3, false, 0);
    std::fs::write(m, &bytes).unwrap();
    let dump = thin_lab::dumped(&thin_lab::run("thin_dump", &[m]));

    // Metadata and data go where LVM's report places the hidden LVs.
    let at = |lv: &str| lvm_lab::linear_at(d, vg, lv, 1 << 20).1;
    let pv = std::fs::OpenOptions::new().write(true).open(&d[0]).unwrap();
    pv.write_all_at(&bytes, at("pool_tmeta")).unwrap();
    let tdata = at("pool_tdata");
    for b in 0..used {
        pv.write_all_at(&data_block(b), tdata + b * thin_lab::CHUNK)
            .unwrap();
    }
    pv.sync_all().unwrap();

    home.write_config(&format!(
        "[pools.lvm]\nplugin = \"lvm\"\ndevices = {{ a = \"{}\" }}\n",
        d[0]
    ));
    let list: serde_json::Value =
        serde_json::from_slice(&home.ok(&["get", "vd", "-n", "lvm", "-o", "json"]).stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["vd/vol"],
        "the pool and its hidden LVs are no disks"
    );
    let snaps: serde_json::Value =
        serde_json::from_slice(&home.ok(&["get", "vds", "-n", "lvm", "-o", "json"]).stdout)
            .unwrap();
    let mut names: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["vds/vol@snap1", "vds/vol@snap2"]);

    // Every thin LV exports as thin_dump maps it; holes where nothing is mapped.
    for (address, id) in [("vd/vol", 1), ("vds/vol@snap1", 2), ("vds/vol@snap2", 3)] {
        let out = home.out(&format!("{id}.raw"));
        home.ok(&["download", address, "-n", "lvm", "-o", p(&out), "-q"]);
        let want = home.out(&format!("{id}.want"));
        thin_content(&want, &dump[&id].0, size);
        tool("cmp", &[p(&out), p(&want)]);
        let json = tool("qemu-img", &["map", "-f", "raw", "--output=json", p(&out)]);
        let map: serde_json::Value = serde_json::from_str(&json).unwrap();
        let data: Vec<(u64, u64)> = map
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["data"].as_bool() == Some(true))
            .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            data,
            mapped_ranges(&dump[&id].0),
            "{address}: allocated ranges"
        );
    }

    // snap2 since snap1: the delta carries exactly the blocks thin_delta reports, and
    // snap1 plus the delta is snap2.
    let delta = home.out("s2.delta");
    home.ok(&[
        "download",
        "vds/vol@snap2",
        "--since",
        "vds/vol@snap1",
        "-n",
        "lvm",
        "-o",
        p(&delta),
        "-q",
    ]);
    let file = std::fs::read(&delta).unwrap();
    let parsed = snapport_core::delta::read_delta(&mut &file[..]).unwrap();
    let mut image = std::fs::read(home.out("2.raw")).unwrap();
    let mut changed = std::collections::BTreeSet::new();
    for r in &parsed.records {
        assert_eq!(r.offset % thin_lab::CHUNK, 0);
        for b in r.offset / thin_lab::CHUNK..(r.offset + r.length).div_ceil(thin_lab::CHUNK) {
            changed.insert(b);
        }
        let span = r.offset as usize..(r.offset + r.length) as usize;
        match r.data_at {
            Some(at) => image[span].copy_from_slice(&file[at as usize..(at + r.length) as usize]),
            None => image[span].fill(0),
        }
    }
    let theirs: std::collections::BTreeSet<u64> = thin_lab::thin_delta(m, 2, 3)
        .into_iter()
        .filter(|(_, k)| *k != thin_lab::Kind::Same)
        .map(|(b, _)| b)
        .collect();
    assert!(!theirs.is_empty());
    assert_eq!(changed, theirs);
    assert!(
        image == std::fs::read(home.out("3.raw")).unwrap(),
        "snap1 + delta is snap2"
    );

    // Listing one disk's snapshots leaves another disk's records as they were: a
    // record of `other` (comment and parent) outlives `get vds vol`, while a listing of
    // every disk drops it, `other` having no snapshots on the backend.
    home.ok(&["get", "vds", "vol", "-n", "lvm"]);
    let state = home.path().join("state/lvm/snapshots.json");
    let mut records: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let other = serde_json::json!({"disk": "other", "name": "o2", "id": "uuid-o2",
        "backend_name": "o2", "phase": "Ready", "consistent": false,
        "comment": "keep me", "parent": "o1"});
    records["disk_snapshots"]
        .as_array_mut()
        .unwrap()
        .push(other.clone());
    std::fs::write(&state, serde_json::to_vec(&records).unwrap()).unwrap();
    let kept = || -> bool {
        let records: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        records["disk_snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["disk"] == "other" && r["comment"] == "keep me" && r["parent"] == "o1")
    };
    home.ok(&["get", "vds", "vol", "-n", "lvm"]);
    home.ok(&["describe", "vds/vol@snap1", "-n", "lvm"]);
    assert!(kept(), "get vds vol dropped the record of another disk");
    home.ok(&["get", "vds", "-n", "lvm"]);
    assert!(
        !kept(),
        "a record of a snapshot the backend lacks outlived a full listing"
    );

    // The backend conformance suite, deltas included.
    let checked = conformance::check_pool(&home, "lvm", true);
    assert_eq!(
        (checked.disks, checked.snapshots, checked.deltas),
        (1, 2, 1),
        "{checked:?}"
    );

    // Snapshots are made and removed by LVM's tools, which the pool grants. Without
    // device-mapper lvcreate cannot make a thin snapshot, so a stand-in records what the
    // plugin proposes and fails as lvcreate fails here; the error carries its words.
    let err = home.fails(&["snapshot", "create", "vd/vol", "--name", "s3", "-n", "lvm"]);
    assert!(
        err.contains("lvcreate") && err.contains("does not grant"),
        "{err}"
    );
    let record = home.out("tool.args");
    let fake = home.out("fake-lvm-tool");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\necho '  /dev/mapper/control: open failed: No such device' >&2\nexit 5\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    home.write_config(&format!(
        "[pools.lvm]\nplugin = \"lvm\"\nwritable = true\ndevices = {{ a = \"{}\" }}\n\
         [pools.lvm.tools.lvcreate]\ncommand = [\"{f}\"]\noptions = [\"--snapshot\", \"--name\"]\n\
         [pools.lvm.tools.lvremove]\ncommand = [\"{f}\"]\noptions = [\"--yes\"]\n",
        d[0],
        f = fake.display()
    ));
    let proposed = || std::fs::read_to_string(&record).unwrap();
    let err = home.fails(&["snapshot", "create", "vd/vol", "--name", "s3", "-n", "lvm"]);
    assert!(
        err.contains("lvcreate --snapshot --name s3") && err.contains("No such device"),
        "{err}"
    );
    assert_eq!(proposed(), format!("--snapshot\n--name\ns3\n{vg}/vol\n"));
    let err = home.fails(&["delete", "vds/vol@snap2", "-n", "lvm"]);
    assert!(
        err.contains("lvremove --yes") && err.contains("No such device"),
        "{err}"
    );
    assert_eq!(proposed(), format!("--yes\n{vg}/snap2\n"));
    // Removing the disk proposes removing its snapshots with it.
    let err = home.fails(&["delete", "vd/vol", "-n", "lvm"]);
    assert!(err.contains("lvremove"), "{err}");
    assert_eq!(
        proposed(),
        format!("--yes\n{vg}/snap1\n{vg}/snap2\n{vg}/vol\n")
    );

    // Writes into a thin LV go through its activated device node (only the kernel may
    // allocate its chunks), granted as lv:LV; without device-mapper a file of the LV's
    // size stands in for the node. Holes of the image overwrite what the node held.
    let img = home.out("thin-in.qcow2");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", p(&img), &format!("{size}")],
    );
    qemu_io(
        &img,
        "qcow2",
        &[
            "write -P 0x71 0 3M",
            "write -P 0x72 200M 1M",
            "write -P 0x73 383M 1M",
        ],
    );
    let err = home.fails(&["upload", p(&img), "vd/vol", "-n", "lvm", "--in-place"]);
    assert!(err.contains("\"lv:vol\""), "{err}");
    let node = home.out("vol.node");
    std::fs::write(&node, vec![0xeeu8; size as usize]).unwrap();
    let with_node = |node: &std::path::Path| {
        home.write_config(&format!(
            "[pools.lvm]\nplugin = \"lvm\"\nwritable = true\ndevices = {{ a = \"{}\", \"lv:vol\" = \"{}\" }}\n",
            d[0],
            node.display()
        ));
    };
    with_node(&node);
    home.ok(&["upload", p(&img), "vd/vol", "-n", "lvm", "--in-place", "-q"]);
    tool(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", p(&node), p(&img)],
    );
    let err = home.fails(&[
        "upload",
        p(&img),
        "vds/vol@snap1",
        "-n",
        "lvm",
        "--in-place",
    ]);
    assert!(err.contains("snapshots are taken, not uploaded"), "{err}");
    let short = home.out("short.node");
    std::fs::write(&short, vec![0u8; 1 << 20]).unwrap();
    with_node(&short);
    let err = home.fails(&["upload", p(&img), "vd/vol", "-n", "lvm", "--in-place"]);
    assert!(err.contains("is 1048576 bytes"), "{err}");

    // A mapping past the end of the pool's data LV is named, not followed.
    let far = std::collections::BTreeMap::from([(0, tdata_blocks + 5)]);
    std::fs::write(
        &xml,
        thin_lab::xml(
            &[(1, &far, 0), (2, &one, 1), (3, &one, 1)],
            tdata_blocks + 10,
            128,
        ),
    )
    .unwrap();
    thin_lab::run("thin_restore", &["-i", p(&xml), "-o", m]);
    pv.write_all_at(&std::fs::read(m).unwrap(), at("pool_tmeta"))
        .unwrap();
    pv.sync_all().unwrap();
    let err = home.fails(&[
        "download",
        "vd/vol",
        "-n",
        "lvm",
        "-o",
        p(&home.out("far.raw")),
    ]);
    assert!(
        err.contains("past the") && err.contains("pool_tdata"),
        "{err}"
    );
    assert!(!home.out("far.raw").exists());
}
