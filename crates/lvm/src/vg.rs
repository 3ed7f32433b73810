//! A volume group as its metadata text describes it, and where the bytes of its linear
//! and striped logical volumes lie on its physical volumes.
//!
//! Sizes in the text are in 512-byte sectors (`extent_size`, `pe_start`, `dev_size`,
//! `stripe_size`); extents are counted from each PV's `pe_start`.

use crate::text::{self, Section, Value};
use crate::{corrupt, Error, Result};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

const SECTOR: u64 = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalVolume {
    /// The name the LV segments use (`pv0`).
    pub name: String,
    /// The UUID, as the PV's label has it.
    pub id: String,
    /// The device path LVM last saw (a hint only).
    pub device: Option<String>,
    /// First extent, in bytes from the PV's start.
    pub pe_start: u64,
    pub pe_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentKind {
    /// Linear (one stripe) or striped: (PV index, first extent) per stripe.
    Striped {
        stripe_size: u64,
        stripes: Vec<(usize, u64)>,
    },
    /// A thin volume: device `device_id` of the thin pool LV `pool`; `origin` names the
    /// LV it was snapshotted from, while that LV exists.
    Thin {
        pool: String,
        device_id: u64,
        origin: Option<String>,
    },
    /// A thin pool: its metadata and data LVs (hidden, `_tmeta`/`_tdata`) and its chunk
    /// size (the data block size) in bytes.
    ThinPool {
        metadata: String,
        data: String,
        chunk_size: u64,
    },
    /// Anything else (raid, cache, ...): its type, for messages.
    Other(String),
}

impl SegmentKind {
    /// The segment type as LVM names it.
    pub fn type_name(&self) -> &str {
        match self {
            SegmentKind::Striped { stripes, .. } if stripes.len() == 1 => "linear",
            SegmentKind::Striped { .. } => "striped",
            SegmentKind::Thin { .. } => "thin",
            SegmentKind::ThinPool { .. } => "thin-pool",
            SegmentKind::Other(t) => t,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub start_extent: u64,
    pub extent_count: u64,
    pub kind: SegmentKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalVolume {
    pub name: String,
    pub id: String,
    pub status: Vec<String>,
    /// Seconds since the epoch, when LVM recorded it.
    pub creation_time: Option<u64>,
    pub segments: Vec<Segment>,
}

impl LogicalVolume {
    /// Whether `lvs` shows it without `-a`: the pool's own `_tmeta`, `_tdata` and
    /// `_pmspare` LVs are hidden.
    pub fn visible(&self) -> bool {
        self.status.iter().any(|s| s == "VISIBLE")
    }

    /// The thin segment of a thin LV (a thin LV has exactly one).
    pub fn thin(&self) -> Option<(&str, u64, Option<&str>)> {
        match &self.segments[..] {
            [Segment {
                kind:
                    SegmentKind::Thin {
                        pool,
                        device_id,
                        origin,
                    },
                ..
            }] => Some((pool, *device_id, origin.as_deref())),
            _ => None,
        }
    }

    /// The thin-pool segment of a thin pool LV.
    pub fn thin_pool(&self) -> Option<(&str, &str, u64)> {
        match &self.segments[..] {
            [Segment {
                kind:
                    SegmentKind::ThinPool {
                        metadata,
                        data,
                        chunk_size,
                    },
                ..
            }] => Some((metadata, data, *chunk_size)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeGroup {
    pub name: String,
    pub id: String,
    pub seqno: u64,
    /// Bytes per extent.
    pub extent_size: u64,
    pub pvs: Vec<PhysicalVolume>,
    pub lvs: Vec<LogicalVolume>,
}

/// A piece of an LV's range on one PV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Index into [`VolumeGroup::pvs`].
    pub pv: usize,
    /// Bytes from the PV's start.
    pub offset: u64,
    pub length: u64,
}

fn need_int(s: &Section, key: &str, what: &str) -> Result<u64> {
    match s.int(key) {
        Some(i) if i >= 0 => Ok(i as u64),
        _ => corrupt(format!("{what} has no valid {key}")),
    }
}

fn need_str(s: &Section, key: &str, what: &str) -> Result<String> {
    s.str(key)
        .map(ToString::to_string)
        .ok_or_else(|| Error::Corrupt(format!("{what} has no {key}")))
}

impl VolumeGroup {
    /// The VG described by a metadata text (the one section that has `physical_volumes`).
    pub fn from_text(t: &[u8]) -> Result<VolumeGroup> {
        let root = text::parse(t)?;
        let Some((name, vg)) = root
            .sections()
            .find(|(_, s)| s.section("physical_volumes").is_some())
        else {
            return corrupt("the metadata text holds no volume group");
        };
        let what = format!("volume group {name}");
        let extent_sectors = need_int(vg, "extent_size", &what)?;
        if extent_sectors == 0 || extent_sectors > (1 << 32) {
            return corrupt(format!("{what}: extent size {extent_sectors} sectors"));
        }
        let extent_size = extent_sectors * SECTOR;
        let mut pvs = Vec::new();
        for (pv_name, pv) in vg
            .section("physical_volumes")
            .expect("found above")
            .sections()
        {
            let w = format!("{what}, {pv_name}");
            let pe_start = need_int(pv, "pe_start", &w)?;
            let pe_count = need_int(pv, "pe_count", &w)?;
            let end = pe_start
                .checked_mul(SECTOR)
                .zip(pe_count.checked_mul(extent_size))
                .and_then(|(a, b)| a.checked_add(b));
            if end.is_none() {
                return corrupt(format!("{w}: extents out of range"));
            }
            pvs.push(PhysicalVolume {
                name: pv_name.to_string(),
                id: need_str(pv, "id", &w)?,
                device: pv.str("device").map(ToString::to_string),
                pe_start: pe_start * SECTOR,
                pe_count,
            });
        }
        let mut lvs = Vec::new();
        if let Some(section) = vg.section("logical_volumes") {
            for (lv_name, lv) in section.sections() {
                let lv = read_lv(lv_name, lv, &pvs, &what)?;
                // Sizes are computed unchecked later: they must fit now.
                let extents: u64 = lv.segments.iter().map(|s| s.extent_count).sum();
                if extents.checked_mul(extent_size).is_none() {
                    return corrupt(format!("{what}, {lv_name}: size out of range"));
                }
                lvs.push(lv);
            }
        }
        Ok(VolumeGroup {
            name: name.to_string(),
            id: need_str(vg, "id", &what)?,
            seqno: need_int(vg, "seqno", &what)?,
            extent_size,
            pvs,
            lvs,
        })
    }

    /// Of several copies (one per metadata area), the VG with the highest seqno. Copies
    /// of another VG (a different id) are an error: the PVs given are not one VG.
    pub fn newest(copies: &[&[u8]]) -> Result<VolumeGroup> {
        let mut best: Option<VolumeGroup> = None;
        for t in copies {
            let vg = VolumeGroup::from_text(t)?;
            match &best {
                Some(b) if b.id != vg.id => {
                    return corrupt(format!(
                        "the metadata areas describe two volume groups ({} and {})",
                        b.name, vg.name
                    ))
                }
                Some(b) if b.seqno >= vg.seqno => {}
                _ => best = Some(vg),
            }
        }
        best.ok_or_else(|| Error::Corrupt("no metadata copy found".into()))
    }

    pub fn lv(&self, name: &str) -> Option<&LogicalVolume> {
        self.lvs.iter().find(|l| l.name == name)
    }

    /// The LV's size in bytes.
    pub fn lv_size(&self, lv: &LogicalVolume) -> u64 {
        lv.segments.iter().map(|s| s.extent_count).sum::<u64>() * self.extent_size
    }

    /// Where bytes `[offset, offset + length)` of `lv` lie, in order.
    pub fn map(&self, lv: &LogicalVolume, offset: u64, length: u64) -> Result<Vec<Piece>> {
        let mut out: Vec<Piece> = Vec::new();
        let end = offset
            .checked_add(length)
            .filter(|&e| e <= self.lv_size(lv))
            .ok_or_else(|| Error::Corrupt(format!("a range past the end of {}", lv.name)))?;
        let mut pos = offset;
        while pos < end {
            let extent = pos / self.extent_size;
            let seg = lv
                .segments
                .iter()
                .find(|s| (s.start_extent..s.start_extent + s.extent_count).contains(&extent))
                .ok_or_else(|| {
                    Error::Corrupt(format!("{} has no segment for extent {extent}", lv.name))
                })?;
            let seg_start = seg.start_extent * self.extent_size;
            let seg_end = seg_start + seg.extent_count * self.extent_size;
            let SegmentKind::Striped {
                stripe_size,
                stripes,
            } = &seg.kind
            else {
                return Err(Error::Unsupported(format!(
                    "{} has a {} segment; only linear and striped segments lie on PVs",
                    lv.name,
                    seg.kind.type_name()
                )));
            };
            let within = pos - seg_start;
            let n = stripes.len() as u64;
            let (stripe, at, run) = if n == 1 {
                (0, within, seg_end - pos)
            } else {
                let chunk = within / stripe_size;
                let row = chunk / n;
                let into = within % stripe_size;
                (
                    (chunk % n) as usize,
                    row * stripe_size + into,
                    stripe_size - into,
                )
            };
            let (pv, first) = stripes[stripe];
            let take = run.min(end - pos);
            let piece = Piece {
                pv,
                offset: self.pvs[pv].pe_start + first * self.extent_size + at,
                length: take,
            };
            match out.last_mut() {
                Some(l) if l.pv == piece.pv && l.offset + l.length == piece.offset => {
                    l.length += take
                }
                _ => out.push(piece),
            }
            pos += take;
        }
        Ok(out)
    }
}

fn read_lv(name: &str, lv: &Section, pvs: &[PhysicalVolume], vg: &str) -> Result<LogicalVolume> {
    let what = format!("{vg}, logical volume {name}");
    let status = lv
        .list("status")
        .unwrap_or(&[])
        .iter()
        .filter_map(|v| match v {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let count = need_int(lv, "segment_count", &what)?;
    if count == 0 || count > 1 << 16 {
        return corrupt(format!("{what}: {count} segments"));
    }
    let mut segments: Vec<Segment> = Vec::new();
    for i in 1..=count {
        let w = format!("{what}, segment{i}");
        let seg = lv
            .section(&format!("segment{i}"))
            .ok_or_else(|| Error::Corrupt(format!("{w} is missing")))?;
        let start_extent = need_int(seg, "start_extent", &w)?;
        let extent_count = need_int(seg, "extent_count", &w)?;
        let expected = segments
            .last()
            .map_or(0, |s| s.start_extent + s.extent_count);
        if start_extent != expected || extent_count == 0 || extent_count > 1 << 40 {
            return corrupt(format!(
                "{w}: extents {start_extent}+{extent_count} do not follow the segment before"
            ));
        }
        let ty = need_str(seg, "type", &w)?;
        let kind = if ty == "striped" {
            let list = seg
                .list("stripes")
                .ok_or_else(|| Error::Corrupt(format!("{w} has no stripes")))?;
            let stripe_count = need_int(seg, "stripe_count", &w)?;
            if list.len() as u64 != stripe_count * 2 || stripe_count == 0 {
                return corrupt(format!(
                    "{w}: {stripe_count} stripes, {} list items",
                    list.len()
                ));
            }
            if extent_count % stripe_count != 0 {
                return corrupt(format!(
                    "{w}: {extent_count} extents over {stripe_count} stripes"
                ));
            }
            let per_stripe = extent_count / stripe_count;
            let mut stripes = Vec::new();
            for pair in list.chunks(2) {
                let (Value::Str(pv_name), Value::Int(first)) = (&pair[0], &pair[1]) else {
                    return corrupt(format!("{w}: a stripe is not [\"pvN\", extent]"));
                };
                let Some(pv) = pvs.iter().position(|p| &p.name == pv_name) else {
                    return corrupt(format!("{w} names {pv_name}, which the VG does not list"));
                };
                let first = u64::try_from(*first)
                    .map_err(|_| Error::Corrupt(format!("{w}: a negative extent")))?;
                if first
                    .checked_add(per_stripe)
                    .is_none_or(|e| e > pvs[pv].pe_count)
                {
                    return corrupt(format!(
                        "{w}: extents {first}+{per_stripe} of {pv_name} past its {} extents",
                        pvs[pv].pe_count
                    ));
                }
                stripes.push((pv, first));
            }
            let stripe_size = if stripe_count > 1 {
                let s = need_int(seg, "stripe_size", &w)?;
                if s == 0 || s > 1 << 32 {
                    return corrupt(format!("{w}: stripe size {s}"));
                }
                s * SECTOR
            } else {
                0
            };
            SegmentKind::Striped {
                stripe_size,
                stripes,
            }
        } else if ty == "thin" {
            let device_id = need_int(seg, "device_id", &w)?;
            // The kernel's thin device ids are 24 bits.
            if device_id >= 1 << 24 {
                return corrupt(format!("{w}: thin device id {device_id}"));
            }
            SegmentKind::Thin {
                pool: need_str(seg, "thin_pool", &w)?,
                device_id,
                origin: seg.str("origin").map(ToString::to_string),
            }
        } else if ty == "thin-pool" {
            let chunk = need_int(seg, "chunk_size", &w)?;
            // dm-thin takes 64 KiB to 1 GiB, in multiples of 64 KiB.
            if !(128..=2_097_152).contains(&chunk) || chunk % 128 != 0 {
                return corrupt(format!("{w}: chunk size {chunk} sectors"));
            }
            SegmentKind::ThinPool {
                metadata: need_str(seg, "metadata", &w)?,
                data: need_str(seg, "pool", &w)?,
                chunk_size: chunk * SECTOR,
            }
        } else {
            SegmentKind::Other(ty)
        };
        segments.push(Segment {
            start_extent,
            extent_count,
            kind,
        });
    }
    Ok(LogicalVolume {
        name: name.to_string(),
        id: need_str(lv, "id", &what)?,
        status,
        creation_time: lv.int("creation_time").and_then(|t| u64::try_from(t).ok()),
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &[u8] = br#"
vg {
  id = "v"
  seqno = 5
  extent_size = 8
  physical_volumes {
    pv0 { id = "a" pe_start = 2048 pe_count = 100 }
    pv1 { id = "b" pe_start = 2048 pe_count = 100 }
  }
  logical_volumes {
    lin {
      id = "l" status = ["READ", "WRITE", "VISIBLE"] segment_count = 2
      segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv0", 10] }
      segment2 { start_extent = 2 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv1", 0] }
    }
    str {
      id = "s" segment_count = 1
      segment1 { start_extent = 0 extent_count = 4 type = "striped" stripe_count = 2 stripe_size = 2
                 stripes = ["pv0", 0, "pv1", 50] }
    }
  }
}
"#;

    #[test]
    fn thin_segments() {
        let text = br#"
vg { id = "v" seqno = 1 extent_size = 8
  physical_volumes { pv0 { id = "a" pe_start = 2048 pe_count = 100 } }
  logical_volumes {
    pool { id = "p" status = ["READ", "VISIBLE"] segment_count = 1
      segment1 { start_extent = 0 extent_count = 8 type = "thin-pool" metadata = "pool_tmeta"
                 pool = "pool_tdata" transaction_id = 2 chunk_size = 128 } }
    pool_tmeta { id = "m" status = ["READ"] segment_count = 1
      segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 0] } }
    snap { id = "s" status = ["READ", "VISIBLE"] creation_time = 1700000000 segment_count = 1
      segment1 { start_extent = 0 extent_count = 4 type = "thin" thin_pool = "pool" transaction_id = 1
                 device_id = 2 origin = "vol" } }
  }
}
"#;
        let vg = VolumeGroup::from_text(text).unwrap();
        let pool = vg.lv("pool").unwrap();
        assert_eq!(pool.thin_pool(), Some(("pool_tmeta", "pool_tdata", 65536)));
        assert!(pool.visible() && !vg.lv("pool_tmeta").unwrap().visible());
        let snap = vg.lv("snap").unwrap();
        assert_eq!(snap.thin(), Some(("pool", 2, Some("vol"))));
        assert_eq!(snap.creation_time, Some(1_700_000_000));
        assert!(matches!(vg.map(snap, 0, 1), Err(Error::Unsupported(_))));
        // A chunk size dm-thin cannot have, a device id past 24 bits.
        for (from, to) in [
            ("chunk_size = 128", "chunk_size = 100"),
            ("device_id = 2", "device_id = 16777216"),
        ] {
            let bad = core::str::from_utf8(text).unwrap().replace(from, to);
            assert!(
                matches!(
                    VolumeGroup::from_text(bad.as_bytes()),
                    Err(Error::Corrupt(_))
                ),
                "{to}"
            );
        }
    }

    #[test]
    fn linear_and_striped_maps() {
        let vg = VolumeGroup::from_text(TEXT).unwrap();
        assert_eq!(vg.extent_size, 4096);
        let lin = vg.lv("lin").unwrap();
        assert_eq!(vg.lv_size(lin), 3 * 4096);
        let base = 2048 * 512;
        assert_eq!(
            vg.map(lin, 4000, 8192).unwrap(),
            [
                Piece {
                    pv: 0,
                    offset: base + 10 * 4096 + 4000,
                    length: 4192
                },
                Piece {
                    pv: 1,
                    offset: base,
                    length: 4000
                },
            ]
        );
        // Striped: 1 KiB chunks alternate between the PVs.
        let s = vg.lv("str").unwrap();
        let m = vg.map(s, 0, 3072).unwrap();
        assert_eq!(
            m,
            [
                Piece {
                    pv: 0,
                    offset: base,
                    length: 1024
                },
                Piece {
                    pv: 1,
                    offset: base + 50 * 4096,
                    length: 1024
                },
                Piece {
                    pv: 0,
                    offset: base + 1024,
                    length: 1024
                },
            ]
        );
        assert!(vg.map(s, 0, 4 * 4096 + 1).is_err());
    }

    #[test]
    fn the_newest_copy_wins_and_lies_are_named() {
        let older = TEXT.to_vec();
        let newer: Vec<u8> = String::from_utf8(TEXT.to_vec())
            .unwrap()
            .replace("seqno = 5", "seqno = 6")
            .into_bytes();
        assert_eq!(VolumeGroup::newest(&[&older, &newer]).unwrap().seqno, 6);
        assert_eq!(VolumeGroup::newest(&[&newer, &older]).unwrap().seqno, 6);
        for (from, to) in [
            ("stripes = [\"pv1\", 0]", "stripes = [\"pv9\", 0]"),
            ("stripes = [\"pv1\", 0]", "stripes = [\"pv1\", 100]"),
            ("start_extent = 2", "start_extent = 3"),
            ("stripe_count = 2", "stripe_count = 3"),
            ("extent_size = 8", "extent_size = 0"),
        ] {
            let t = String::from_utf8(TEXT.to_vec()).unwrap().replace(from, to);
            assert!(VolumeGroup::from_text(t.as_bytes()).is_err(), "{to}");
        }
    }
}
