//! CSI block metadata as a driver streams it (GetMetadataAllocated/GetMetadataDelta), on
//! any bytes: protobuf decoding, then the range checks. No panic, and every range let
//! through is non-empty, inside the volume, at or after the starting offset, and after
//! the one before it.
//!
//! Input: capacity (u64 LE), starting offset (u64 LE), then messages as u16 LE length +
//! protobuf bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;
use snapport_csi::metadata::RangeCheck;
use snapport_csi::msg::BlockMetadataResponse;

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let capacity = u64::from_le_bytes(data[..8].try_into().unwrap()) % (1 << 50);
    let start = u64::from_le_bytes(data[8..16].try_into().unwrap()) % (capacity + 1);
    let mut check = RangeCheck::new(capacity, start);
    let mut end = start;
    let mut rest = &data[16..];
    while rest.len() >= 2 {
        let n = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let (message, after) = rest[2..].split_at(n);
        rest = after;
        let Ok(m) = BlockMetadataResponse::decode(message) else { return };
        let Ok(ranges) = check.message(&m) else { return };
        for (offset, length) in ranges {
            assert!(length > 0);
            assert!(offset >= end, "{offset} before {end}");
            assert!(offset + length <= capacity);
            end = offset + length;
        }
        assert_eq!(check.resume_offset(), end);
    }
});
