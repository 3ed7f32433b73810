//! The bundle reader on any bytes: no panic; members never read past the input; the
//! small members parse or fail cleanly, as an import would read them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use snapport_core::bundle::{check_manifest, parse_sums, Manifest, MemberReader};
use std::io::Read;

fuzz_target!(|data: &[u8]| {
    let mut r = MemberReader::new(data);
    let mut sums = None;
    for _ in 0..64 {
        let m = match r.next_member() {
            Ok(Some(m)) => m,
            _ => break,
        };
        if m.path == "SHA256SUMS" {
            if let Ok(b) = r.read_small(&m) {
                sums = std::str::from_utf8(&b).ok().and_then(|t| parse_sums(t).ok());
            }
        } else if m.path == "manifest.json" {
            if let Ok(b) = r.read_small(&m) {
                if let (Ok(man), Some(s)) = (serde_json::from_slice::<Manifest>(&b), &sums) {
                    let _ = check_manifest(&man, s);
                }
            }
        } else {
            let mut sink = Vec::new();
            let _ = (&mut r).take(1 << 20).read_to_end(&mut sink);
            assert!(sink.len() as u64 <= m.size);
        }
    }
});
