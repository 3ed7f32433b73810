//! LVM layouts made by LVM's own tools on loop devices (no device-mapper needed:
//! `--driverloaded n`), read back by this crate and checked against what `pvs`, `vgs` and
//! `lvs` report: PV UUIDs and data starts, the newest seqno across metadata copies, each
//! LV's segments and PE ranges, and linear LVs' bytes against the PV extents LVM names;
//! metadata text that LVM itself wrapped around a small area's ring; damaged labels,
//! headers and text named.
//! Needs root, losetup and lvm2; without them it says why and passes nothing off as done.

use snapport_lvm::label::{read_label, read_metadata};
use snapport_lvm::vg::{SegmentKind, VolumeGroup};
use snapport_lvm::{Error, Medium, Result};
use std::os::unix::fs::FileExt;

#[path = "../../../tests/common/lvm_lab.rs"]
mod lvm_lab;
use lvm_lab::{lvcreate, ok, setup};

struct Dev(std::fs::File);

impl Medium for Dev {
    fn size(&self) -> u64 {
        use std::io::Seek;
        let mut f = &self.0;
        f.seek(std::io::SeekFrom::End(0)).unwrap()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.0
            .read_exact_at(buf, offset)
            .map_err(|e| Error::Io(e.to_string()))
    }
}

/// Reads every metadata copy of every PV and the newest VG.
fn read_vg(loops: &[String]) -> (VolumeGroup, usize, Vec<Dev>) {
    let mut texts = Vec::new();
    let mut devs = Vec::new();
    for l in loops {
        let dev = Dev(std::fs::File::open(l).unwrap());
        let label = read_label(&dev).unwrap();
        for area in &label.metadata_areas {
            if let Some(copy) = read_metadata(&dev, *area).unwrap() {
                texts.push(copy.text);
            }
        }
        devs.push(dev);
    }
    let refs: Vec<&[u8]> = texts.iter().map(|t| &t[..]).collect();
    (VolumeGroup::newest(&refs).unwrap(), texts.len(), devs)
}

fn fields(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn layouts_made_by_lvm_read_back_as_lvm_reports_them() {
    let Some(lab) = setup(&[64, 64]) else { return };
    let d = &lab.loops;
    let vg = lab.vg.as_str();
    ok(
        d,
        &["pvcreate", "-q", "-y", "--pvmetadatacopies", "2", &d[0]],
    );
    ok(d, &["pvcreate", "-q", "-y", &d[1]]);
    ok(d, &["vgcreate", "-q", "-s", "1m", vg, &d[0], &d[1]]);
    let lv = |args: &[&str]| lvcreate(d, args);
    lv(&["-L", "4m", "-n", "lin", vg, &d[0]]);
    lv(&["-L", "3m", "-n", "other", vg, &d[1]]);
    // A second segment for `lin` on the other PV.
    ok(
        d,
        &[
            "lvextend",
            "-q",
            "--driverloaded",
            "n",
            "-L",
            "+2m",
            &format!("{vg}/lin"),
            &d[1],
        ],
    );
    lv(&["-i", "2", "-I", "64k", "-L", "8m", "-n", "str", vg]);

    let (got, copies, devs) = read_vg(d);
    assert_eq!(copies, 3, "two copies on the first PV, one on the second");
    let v = fields(&ok(
        d,
        &[
            "vgs",
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "vg_name,vg_uuid,seqno,vg_extent_size",
            vg,
        ],
    ));
    assert_eq!(
        (
            got.name.as_str(),
            got.id.as_str(),
            got.seqno.to_string(),
            got.extent_size.to_string()
        ),
        (v[0].as_str(), v[1].as_str(), v[2].clone(), v[3].clone())
    );
    for line in ok(
        d,
        &[
            "pvs",
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "pv_name,pv_uuid,pe_start",
        ],
    )
    .lines()
    {
        let f = fields(line);
        let i = d.iter().position(|l| *l == f[0]).unwrap();
        let label = read_label(&devs[i]).unwrap();
        assert_eq!(label.uuid, f[1]);
        let pv = got.pvs.iter().find(|p| p.id == f[1]).unwrap();
        assert_eq!(pv.pe_start.to_string(), f[2]);
    }

    // Each PV of the VG (by index) is which loop device, by the label's UUID.
    let pv_dev: Vec<&String> = got
        .pvs
        .iter()
        .map(|pv| {
            let i = devs
                .iter()
                .position(|dev| read_label(dev).unwrap().uuid == pv.id)
                .unwrap();
            &d[i]
        })
        .collect();

    // Segments as lvs lists them: start extent, extents, stripes, PE ranges.
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
            "lv_name,seg_start_pe,seg_size_pe,stripes,stripe_size,seg_pe_ranges",
            vg,
        ],
    );
    let mut seen = 0;
    for line in report.lines() {
        let f: Vec<&str> = line.trim().split(';').collect();
        let lvv = got.lv(f[0]).unwrap_or_else(|| panic!("no LV {}", f[0]));
        let seg = lvv
            .segments
            .iter()
            .find(|s| s.start_extent.to_string() == f[1])
            .unwrap();
        assert_eq!(seg.extent_count.to_string(), f[2]);
        let SegmentKind::Striped {
            stripe_size,
            stripes,
        } = &seg.kind
        else {
            panic!("{line}")
        };
        assert_eq!(stripes.len().to_string(), f[3]);
        assert_eq!(stripe_size.to_string(), f[4]);
        // "/dev/loopN:A-B /dev/loopM:C-D": per stripe, its PV and extents.
        let per = seg.extent_count / stripes.len() as u64;
        let ours: Vec<String> = stripes
            .iter()
            .map(|(pv, first)| format!("{}:{first}-{}", pv_dev[*pv], first + per - 1))
            .collect();
        assert_eq!(ours.join(" "), f[5].trim(), "{line}");
        seen += 1;
    }
    assert_eq!(seen, 4, "lin (2 segments), other, str");

    // Bytes: fill both PVs with a pattern, then every linear LV read through the map
    // equals the PV extents lvs named, in order.
    let mut pattern = Vec::new();
    for (i, l) in d.iter().enumerate() {
        let f = std::fs::OpenOptions::new().write(true).open(l).unwrap();
        let pv = &got.pvs[pv_dev.iter().position(|x| *x == l).unwrap()];
        let len = pv.pe_count * got.extent_size;
        let bytes: Vec<u8> = (0..len)
            .map(|x| (x * 7 + 13 * i as u64 + x / 4093) as u8)
            .collect();
        f.write_all_at(&bytes, pv.pe_start).unwrap();
        f.sync_all().unwrap();
        pattern.push((pv.pe_start, bytes));
    }
    for name in ["lin", "other", "str"] {
        let l = got.lv(name).unwrap();
        let size = got.lv_size(l);
        let mut ours = Vec::new();
        for p in got.map(l, 0, size).unwrap() {
            let dev = d.iter().position(|x| x == pv_dev[p.pv]).unwrap();
            let mut buf = vec![0u8; p.length as usize];
            devs[dev].read_exact_at(p.offset, &mut buf).unwrap();
            ours.extend_from_slice(&buf);
        }
        assert_eq!(ours.len() as u64, size);
        if name == "str" {
            continue; // checked by structure above
        }
        // What lvs says: the PE ranges, concatenated.
        let ranges = ok(
            d,
            &[
                "lvs",
                "--noheadings",
                "--segments",
                "-o",
                "seg_pe_ranges",
                &format!("{vg}/{name}"),
            ],
        );
        let mut want = Vec::new();
        for r in ranges.split_whitespace() {
            let (dev, span) = r.rsplit_once(':').unwrap();
            let (a, b) = span.split_once('-').unwrap();
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            let i = d.iter().position(|x| x == dev).unwrap();
            let (_, bytes) = &pattern[i];
            let from = (a * got.extent_size) as usize;
            let to = ((b + 1) * got.extent_size) as usize;
            want.extend_from_slice(&bytes[from..to]);
        }
        assert!(
            ours == want,
            "{name}: bytes differ from the PE ranges lvs names"
        );
    }
}

#[test]
fn the_newest_copy_wins_and_damage_is_named() {
    let Some(lab) = setup(&[32]) else { return };
    let d = &lab.loops;
    let vg = lab.vg.as_str();
    ok(
        d,
        &["pvcreate", "-q", "-y", "--pvmetadatacopies", "2", &d[0]],
    );
    ok(d, &["vgcreate", "-q", "-s", "1m", vg, &d[0]]);
    for i in 0..5 {
        lvcreate(d, &["-L", "1m", "-n", &format!("l{i}"), vg]);
    }
    let (got, _, devs) = read_vg(d);
    let seqno = fields(&ok(d, &["vgs", "--noheadings", "-o", "seqno", vg]))[0].clone();
    assert_eq!(got.seqno.to_string(), seqno);
    assert_eq!(got.lvs.len(), 5);

    // An older copy beside the newest: the newest wins whichever comes first.
    let label = read_label(&devs[0]).unwrap();
    let copy = read_metadata(&devs[0], label.metadata_areas[0])
        .unwrap()
        .unwrap();
    let older = String::from_utf8(copy.text.clone())
        .unwrap()
        .replace(&format!("seqno = {seqno}"), "seqno = 1");
    let v = VolumeGroup::newest(&[older.as_bytes(), &copy.text]).unwrap();
    assert_eq!(v.seqno.to_string(), seqno);

    // A flipped byte in the label, the metadata header or the text: named, no panic.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&d[0])
        .unwrap();
    let flip = |at: u64| {
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        b[0] ^= 0x20;
        f.write_all_at(&b, at).unwrap();
        f.sync_all().unwrap();
    };
    let area = label.metadata_areas[0];
    let text_at = copy.text_offset + 100;
    flip(text_at);
    let e = read_metadata(&devs[0], area).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    flip(text_at);
    flip(area.offset + 30);
    let e = read_metadata(&devs[0], area).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    flip(area.offset + 30);
    flip(512 + 40);
    let e = read_label(&devs[0]).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    flip(512 + 40);
    read_label(&devs[0]).unwrap();
}

/// LVM writes each new metadata version after the previous one in the area's ring; with
/// a small area and enough updates, a version's text runs past the ring's end and goes
/// on after the header. Read back after every update: the copy equals what `vgs` and
/// `lvs` report, wrapped or not, and at least one update wrapped.
#[test]
fn metadata_text_that_wraps_around_the_ring_reads_as_lvm_reports_it() {
    let Some(lab) = setup(&[16]) else { return };
    let d = &lab.loops;
    let vg = lab.vg.as_str();
    // LVM's smallest area: 32 KiB, not rounded up to the 1 MiB data alignment.
    ok(
        d,
        &[
            "pvcreate",
            "-q",
            "-y",
            "--metadatasize",
            "32k",
            "--dataalignment",
            "4k",
            &d[0],
        ],
    );
    ok(d, &["vgcreate", "-q", "-s", "64k", vg, &d[0]]);
    let dev = Dev(std::fs::File::open(&d[0]).unwrap());
    let area = read_label(&dev).unwrap().metadata_areas[0];
    let mut wrapped = 0;
    for i in 0..60 {
        // Grow and shrink the text: create LVs, and remove every other one.
        let name = format!("lv_with_a_longish_name_{i}");
        lvcreate(d, &["-L", "64k", "-n", &name, vg]);
        if i % 2 == 1 {
            let old = format!("{vg}/lv_with_a_longish_name_{}", i - 1);
            ok(d, &["lvremove", "-q", "-y", "--driverloaded", "n", &old]);
        }
        let copy = read_metadata(&dev, area).unwrap().unwrap();
        wrapped += usize::from(copy.wrapped);
        let got = VolumeGroup::from_text(&copy.text).unwrap();
        let seqno = fields(&ok(d, &["vgs", "--noheadings", "-o", "seqno", vg]))[0].clone();
        assert_eq!(got.seqno.to_string(), seqno, "update {i}");
        let mut want = fields(&ok(d, &["lvs", "--noheadings", "-o", "lv_name", vg]));
        let mut names: Vec<String> = got.lvs.iter().map(|l| l.name.clone()).collect();
        want.sort();
        names.sort();
        assert_eq!(names, want, "update {i}");
    }
    assert!(
        wrapped > 0,
        "no metadata version wrapped around the {area:?} ring"
    );
}
