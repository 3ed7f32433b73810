//! Fuzzes the qcow2 reader as the plugin uses it: parse the header and snapshot table,
//! map every view (active and each snapshot) page by page, and decode every compressed
//! cluster. Any panic, hang or unbounded allocation is a bug: hostile images must only
//! ever produce errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapport_qcow2::chain::{self, Layer, Location};
use snapport_qcow2::format::{self, Image};

/// Bounds the work per input: a hostile header can claim a huge virtual size.
const MAX_PAGES: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = Image::open(data) else { return };
    let mut names: Vec<Option<String>> = vec![None];
    names.extend(image.snapshots.iter().map(|s| Some(s.name.clone())));
    for name in names {
        let Ok(Some(view)) = image.view(data, name.as_deref()) else { continue };
        let Ok(image) = Image::open(data) else { return };
        let layers = vec![(data, Layer::Qcow2 { image: Box::new(image), view })];
        let mut start = 0;
        for _ in 0..MAX_PAGES {
            let Ok((extents, next)) = chain::map(&layers, start, 256) else { break };
            let mut pos = start;
            for e in &extents {
                assert_eq!(e.start, pos, "extents must be contiguous");
                assert!(e.length > 0);
                pos += e.length;
                if let Location::Compressed { offset, stored, decoded, codec, .. } = e.location {
                    let from = offset as usize;
                    let to = (from + stored as usize).min(data.len());
                    if from < to && decoded <= 2 << 20 {
                        let _ = format::decode(codec, &data[from..to], decoded as usize);
                    }
                }
            }
            match next {
                Some(n) => {
                    assert!(n > start, "pages must move forward");
                    start = n;
                }
                None => break,
            }
        }
    }
});
