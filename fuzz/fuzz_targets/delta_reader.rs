//! The delta reader on any bytes: no panic, and a delta it accepts has records in order,
//! inside the target's size, with their data inside the file. The first input byte picks
//! whether the closing SHA-256 is appended for the fuzzer (odd) or taken from the input
//! (even), so mutations also reach the checks behind the checksum.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use snapport_core::delta::read_delta;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut bytes = body.to_vec();
    if mode & 1 == 1 {
        bytes.extend_from_slice(&Sha256::digest(body));
    }
    if let Ok(delta) = read_delta(&mut &bytes[..]) {
        let size = delta.manifest.target.size;
        let mut end = 0u64;
        for r in &delta.records {
            assert!(r.length > 0 && r.offset >= end && r.offset + r.length <= size);
            if let Some(at) = r.data_at {
                assert!(at + r.length <= bytes.len() as u64);
            }
            end = r.offset + r.length;
        }
        assert_eq!(delta.footer.records, delta.records.len() as u64);
    }
});
