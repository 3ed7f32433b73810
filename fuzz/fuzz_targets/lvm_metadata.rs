//! The LVM readers on any bytes: the VG text parser and model (`VolumeGroup::from_text`)
//! and, on the same bytes taken as a device, the label and metadata area reader. No
//! panic; a VG that parses maps the start of each linear or striped LV in pieces that
//! add up to the range asked for and lie inside the PVs' extents.
#![no_main]
use libfuzzer_sys::fuzz_target;
use snapport_lvm::label::{read_label, read_metadata};
use snapport_lvm::vg::VolumeGroup;

fuzz_target!(|data: &[u8]| {
    if let Ok(vg) = VolumeGroup::from_text(data) {
        for lv in &vg.lvs {
            // A bounded range: tiny stripes over a huge LV make many pieces.
            let size = vg.lv_size(lv).min(16 << 20);
            if let Ok(pieces) = vg.map(lv, 0, size) {
                assert_eq!(pieces.iter().map(|p| p.length).sum::<u64>(), size);
                for p in pieces {
                    let pv = &vg.pvs[p.pv];
                    assert!(p.offset >= pv.pe_start);
                    assert!(p.offset + p.length <= pv.pe_start + pv.pe_count * vg.extent_size);
                }
            }
        }
    }
    if let Ok(label) = read_label(data) {
        for area in label.metadata_areas {
            let _ = read_metadata(data, area);
        }
    }
});
