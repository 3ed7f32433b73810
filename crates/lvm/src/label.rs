//! The label at the start of a physical volume and the metadata areas it points to
//! (LVM2's `label_header`, `pv_header`, `mda_header`, `raw_locn`; all little-endian).
//!
//! ```text
//! sector 0..3: "LABELONE", u64 sector, u32 crc (of bytes 20..512), u32 offset, "LVM2 001"
//! label + offset: PV header: 32-byte UUID, u64 device size,
//!                 data areas (u64 offset, u64 size)... then a zero pair,
//!                 metadata areas (u64 offset, u64 size)... then a zero pair
//! metadata area:  512-byte header: u32 crc (of bytes 4..512), " LVM2 x[5A%r0N*>",
//!                 u32 version 1, u64 start, u64 size, then raw locations (u64 offset,
//!                 u64 size, u32 crc, u32 flags)... ended by a zero offset;
//!                 the text lives in the ring after the header and may wrap to its start.
//! ```

use crate::{corrupt, crc, Error, Medium, Result};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

const SECTOR: u64 = 512;
const LABEL_SCAN_SECTORS: u64 = 4;
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
pub const MDA_HEADER_SIZE: u64 = 512;
/// Metadata text larger than this is not LVM's (it warns far below).
const MAX_TEXT: u64 = 64 << 20;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A region of the PV, in bytes from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    pub offset: u64,
    pub size: u64,
}

/// What the label says about a physical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// The sector the label was found in (0 to 3).
    pub sector: u64,
    /// The PV's UUID as LVM prints it (`xxxxxx-xxxx-...`).
    pub uuid: String,
    pub device_size: u64,
    pub data_areas: Vec<Area>,
    pub metadata_areas: Vec<Area>,
}

/// LVM's UUID text: 32 characters in groups of 6-4-4-4-4-4-6.
pub fn format_uuid(raw: &[u8]) -> String {
    let mut s = String::new();
    for (i, &c) in raw.iter().enumerate() {
        if [6, 10, 14, 18, 22, 26].contains(&i) {
            s.push('-');
        }
        s.push(c as char);
    }
    s
}

/// Finds and checks the label in the first four sectors.
pub fn read_label(m: &(impl Medium + ?Sized)) -> Result<PvLabel> {
    let mut found = None;
    for sector in 0..LABEL_SCAN_SECTORS {
        if (sector + 1) * SECTOR > m.size() {
            break;
        }
        let mut b = vec![0u8; SECTOR as usize];
        m.read_exact_at(sector * SECTOR, &mut b)?;
        if &b[..8] == b"LABELONE" {
            found = Some((sector, b));
            break;
        }
    }
    let Some((sector, b)) = found else {
        return corrupt(
            "no LVM2 label (LABELONE) in the first four sectors: not a physical volume",
        );
    };
    if u64_at(&b, 8) != sector {
        return corrupt(format!(
            "the label in sector {sector} says it is in sector {}",
            u64_at(&b, 8)
        ));
    }
    if crc(&b[20..]) != u32_at(&b, 16) {
        return corrupt(format!("the label's checksum (sector {sector}) is wrong"));
    }
    if &b[24..32] != b"LVM2 001" {
        return Err(Error::Unsupported(format!(
            "label type {:?}; this reader knows LVM2 001",
            String::from_utf8_lossy(&b[24..32])
        )));
    }
    let offset = u32_at(&b, 20) as usize;
    // The PV header: UUID, size, two zero-terminated lists, all inside the sector.
    if offset < 32 || offset + 40 > b.len() {
        return corrupt(format!(
            "the PV header offset {offset} lies outside the label sector"
        ));
    }
    let uuid = format_uuid(&b[offset..offset + 32]);
    let device_size = u64_at(&b, offset + 32);
    let mut at = offset + 40;
    let mut list = |what: &str| -> Result<Vec<Area>> {
        let mut areas = Vec::new();
        loop {
            if at + 16 > b.len() {
                return corrupt(format!(
                    "the PV header's list of {what} runs past the label sector"
                ));
            }
            let (o, s) = (u64_at(&b, at), u64_at(&b, at + 8));
            at += 16;
            if o == 0 {
                return Ok(areas);
            }
            areas.push(Area { offset: o, size: s });
        }
    };
    let data_areas = list("data areas")?;
    let metadata_areas = list("metadata areas")?;
    Ok(PvLabel {
        sector,
        uuid,
        device_size,
        data_areas,
        metadata_areas,
    })
}

/// One copy of the VG metadata text found in a metadata area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataCopy {
    /// The metadata area it came from.
    pub area: Area,
    /// Where the text starts on the device.
    pub text_offset: u64,
    pub text: Vec<u8>,
    /// Whether the text wrapped around the end of the ring.
    pub wrapped: bool,
}

/// Reads the metadata area header at `area` and the text its first location names;
/// `None` when the area holds no metadata yet (a PV outside any VG).
pub fn read_metadata(m: &(impl Medium + ?Sized), area: Area) -> Result<Option<MetadataCopy>> {
    let fits = area
        .offset
        .checked_add(area.size)
        .is_some_and(|end| end <= m.size())
        && area.size > MDA_HEADER_SIZE;
    if !fits {
        return corrupt(format!(
            "the metadata area at {}+{} lies outside the device ({} bytes)",
            area.offset,
            area.size,
            m.size()
        ));
    }
    let mut h = vec![0u8; MDA_HEADER_SIZE as usize];
    m.read_exact_at(area.offset, &mut h)?;
    if &h[4..20] != MDA_MAGIC {
        return corrupt(format!("no metadata area header magic at {}", area.offset));
    }
    if crc(&h[4..]) != u32_at(&h, 0) {
        return corrupt(format!(
            "the metadata area header at {} has a wrong checksum",
            area.offset
        ));
    }
    if u32_at(&h, 20) != 1 {
        return Err(Error::Unsupported(format!(
            "metadata area version {}",
            u32_at(&h, 20)
        )));
    }
    if u64_at(&h, 24) != area.offset {
        return corrupt(format!(
            "the metadata area header at {} says it starts at {}",
            area.offset,
            u64_at(&h, 24)
        ));
    }
    let (offset, size, sum) = (u64_at(&h, 40), u64_at(&h, 48), u32_at(&h, 56));
    if offset == 0 || size == 0 {
        return Ok(None);
    }
    let ring = area.size - MDA_HEADER_SIZE;
    if offset < MDA_HEADER_SIZE || offset >= area.size || size > ring || size > MAX_TEXT {
        return corrupt(format!(
            "the metadata text at {offset}+{size} does not fit the area of {} bytes",
            area.size
        ));
    }
    let first = size.min(area.size - offset);
    let mut text = vec![0u8; size as usize];
    m.read_exact_at(area.offset + offset, &mut text[..first as usize])?;
    let wrapped = first < size;
    if wrapped {
        m.read_exact_at(area.offset + MDA_HEADER_SIZE, &mut text[first as usize..])?;
    }
    if crc(&text) != sum {
        return corrupt(format!(
            "the metadata text at {}+{offset} does not match its checksum",
            area.offset
        ));
    }
    // LVM ends the text with a NUL it counts in the size.
    while text.last() == Some(&0) {
        text.pop();
    }
    Ok(Some(MetadataCopy {
        area,
        text_offset: area.offset + offset,
        text,
        wrapped,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_lvm() {
        // Known value: LVM's calc_crc over no bytes is its seed.
        assert_eq!(crc(b""), 0xf597_a6cf);
        assert_ne!(crc(b"a"), crc(b"b"));
    }

    /// A metadata area whose text starts near the ring's end and wraps to just after
    /// the header, as LVM leaves it after enough updates.
    #[test]
    fn text_that_wraps_around_the_ring_is_joined() {
        let area = Area {
            offset: 4096,
            size: 4096,
        };
        let text: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let at = 3500u64; // 596 bytes before the end, 404 after the header
        let mut dev = vec![0u8; 8192];
        let mut h = vec![0u8; 512];
        h[4..20].copy_from_slice(MDA_MAGIC);
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        h[24..32].copy_from_slice(&area.offset.to_le_bytes());
        h[32..40].copy_from_slice(&area.size.to_le_bytes());
        h[40..48].copy_from_slice(&at.to_le_bytes());
        h[48..56].copy_from_slice(&(text.len() as u64).to_le_bytes());
        h[56..60].copy_from_slice(&crc(&text).to_le_bytes());
        let sum = crc(&h[4..]);
        h[..4].copy_from_slice(&sum.to_le_bytes());
        dev[4096..4608].copy_from_slice(&h);
        let first = (area.size - at) as usize;
        dev[(4096 + at) as usize..8192].copy_from_slice(&text[..first]);
        dev[4608..4608 + text.len() - first].copy_from_slice(&text[first..]);
        let copy = read_metadata(&dev[..], area).unwrap().unwrap();
        assert!(copy.wrapped);
        assert_eq!(copy.text, text);
        // The same text with its tail lost: the checksum says so.
        dev[4608] ^= 1;
        assert!(read_metadata(&dev[..], area).is_err());
    }

    #[test]
    fn no_label_is_named() {
        let zeros = vec![0u8; 4096];
        let e = read_label(&zeros[..]).unwrap_err();
        assert!(alloc::format!("{e}").contains("LABELONE"));
    }
}
