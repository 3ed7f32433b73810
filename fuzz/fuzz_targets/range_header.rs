//! The publish server's `Range` parser on any bytes: no panic, and a part it grants always
//! lies inside the item. The parser's file is included as is, so this target builds
//! without the server's dependencies.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/publish/src/range.rs"]
#[allow(dead_code)]
mod range;

use range::{parse_range, Ranged};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap()) >> (data[0] % 64);
    if let Ok(value) = std::str::from_utf8(&data[8..]) {
        if let Ranged::Part(a, b) = parse_range(value, size) {
            assert!(a <= b && b < size, "{value:?} of {size} gave {a}..={b}");
        }
    }
});
