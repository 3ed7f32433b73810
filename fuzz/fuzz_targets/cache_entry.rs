//! Entries of the compiled-component cache, on any bytes: no panic; an entry is accepted
//! only as exactly what `seal` writes for that key and artifact; and a sealed entry with
//! any one byte changed is never accepted. The entry file is included as is (it depends
//! on `sha2` alone).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/host/src/cache_entry.rs"]
mod cache_entry;

use cache_entry::{seal, unseal, Key};

fuzz_target!(|data: &[u8]| {
    // Mode byte, a 16-bit offset, the key, then the entry (mode 0) or an artifact.
    let Some((head, rest)) = data.split_at_checked(3) else {
        return;
    };
    let Some((key, body)) = rest.split_at_checked(64) else {
        return;
    };
    let key = Key {
        component: key[..32].try_into().unwrap(),
        engine: key[32..].try_into().unwrap(),
    };
    if head[0] & 1 == 0 {
        if let Ok(artifact) = unseal(&key, body) {
            assert_eq!(seal(&key, artifact), body);
        }
    } else {
        let mut entry = seal(&key, body);
        assert_eq!(unseal(&key, &entry), Ok(body));
        let at = u16::from_le_bytes([head[1], head[2]]) as usize % entry.len();
        entry[at] ^= 1 << (head[0] >> 5);
        assert!(unseal(&key, &entry).is_err(), "byte {at} changed and accepted");
    }
});
