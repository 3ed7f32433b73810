//! The thin-pool metadata reader on any bytes. After a mode byte, the input is the
//! metadata's first blocks (4 KiB each, the last padded with zeros); with the mode odd,
//! every block's checksum is made right first, so mutations reach the btree walk:
//! cycles, keys out of order or out of their parent's range, blocks out of bounds. No
//! panic; runs are ordered and disjoint; a device compared with itself is all `Same`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use snapport_lvm::thin::{crc32c, delta, DeltaKind, ThinPool, BLOCK};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let pieces: Vec<&[u8]> = body.chunks(BLOCK as usize).take(16).collect();
    let mut dev = vec![0u8; pieces.len().max(1) * BLOCK as usize];
    for (i, p) in pieces.iter().enumerate() {
        let at = i * BLOCK as usize;
        dev[at..at + p.len()].copy_from_slice(p);
        if mode & 1 == 1 {
            let xor = if i == 0 { 160_774 } else { 121_107 };
            let sum = crc32c(&dev[at + 4..at + BLOCK as usize]) ^ xor;
            dev[at..at + 4].copy_from_slice(&sum.to_le_bytes());
            if i > 0 {
                dev[at + 8..at + 16].copy_from_slice(&(i as u64).to_le_bytes());
                let sum = crc32c(&dev[at + 4..at + BLOCK as usize]) ^ xor;
                dev[at..at + 4].copy_from_slice(&sum.to_le_bytes());
            }
        }
    }
    let Ok(pool) = ThinPool::open(&dev[..]) else {
        return;
    };
    let Ok(devices) = pool.devices() else {
        return;
    };
    for &id in devices.keys().take(4) {
        if let Ok(runs) = pool.runs(id) {
            for w in runs.windows(2) {
                assert!(w[0].virt + w[0].len <= w[1].virt);
            }
            assert!(delta(&runs, &runs).iter().all(|d| d.0 == DeltaKind::Same));
        }
    }
});
