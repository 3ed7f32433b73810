//! Fuzzes the qcow2 writer against the qcow2 reader: any sequence of allocations and
//! zero ranges on a new image must finish into a file the reader parses, mapping each
//! cluster exactly as written (data, zero, or unallocated), with every data cluster at
//! its own place inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapport_qcow2::chain::{self, Layer, Location};
use snapport_qcow2::format::Image;
use snapport_qcow2::layout::CLUSTER_SIZE;
use snapport_qcow2::writer::NewImage;
use std::collections::HashSet;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let size = u64::from(u32::from_le_bytes(data[0..4].try_into().unwrap())) % (64 << 20) + 1;
    let mut image = NewImage::new(size, None).unwrap();
    let clusters = size.div_ceil(CLUSTER_SIZE);
    // 0: never written, 1: data, 2: data then zeroed.
    let mut expect = vec![0u8; clusters as usize];
    for op in data[4..].chunks_exact(5) {
        let first = u64::from(u16::from_le_bytes([op[0], op[1]])) % clusters;
        let last = (first + u64::from(op[2] % 64) + 1).min(clusters);
        let offset = first * CLUSTER_SIZE;
        let length = (last * CLUSTER_SIZE).min(size) - offset;
        if op[4] & 1 == 0 {
            let placed = image.allocate(offset, length).unwrap();
            let mut pos = offset;
            for p in &placed {
                assert_eq!(p.guest, pos, "placements cover the range in order");
                assert_eq!(p.host % CLUSTER_SIZE, 0);
                pos += p.length;
            }
            assert_eq!(pos, offset + length);
            expect[first as usize..last as usize].fill(1);
        } else {
            image.zero(offset, length).unwrap();
            for e in &mut expect[first as usize..last as usize] {
                if *e == 1 {
                    *e = 2;
                }
            }
        }
    }
    let mut file = Vec::new();
    let len = image
        .finish(&mut |at, bytes| {
            let end = at as usize + bytes.len();
            if file.len() < end {
                file.resize(end, 0);
            }
            file[at as usize..end].copy_from_slice(bytes);
            Ok(())
        })
        .unwrap();
    file.resize(len as usize, 0);
    let parsed = Image::open(&file[..]).expect("the writer's image parses");
    assert_eq!(parsed.size, size);
    let view = parsed.view(&file[..], None).unwrap().unwrap();
    let layers = vec![(&file[..], Layer::Qcow2 { image: Box::new(parsed), view })];
    let mut start = 0;
    let mut hosts = HashSet::new();
    loop {
        let (extents, next) = chain::map(&layers, start, 1024).expect("the writer's image maps");
        for e in &extents {
            let first = e.start / CLUSTER_SIZE;
            let last = (e.start + e.length).div_ceil(CLUSTER_SIZE);
            for c in first..last {
                let want = expect[c as usize];
                match e.location {
                    Location::Data { offset, .. } => {
                        assert_eq!(want, 1, "cluster {c} maps to data");
                        let host = offset + (c * CLUSTER_SIZE).saturating_sub(e.start);
                        assert!(host + CLUSTER_SIZE.min(size - c * CLUSTER_SIZE) <= len);
                        assert!(hosts.insert(host / CLUSTER_SIZE), "cluster {c} shares its host cluster");
                    }
                    Location::Zero => assert_eq!(want, 2, "cluster {c} maps to zero"),
                    Location::Unallocated => assert_eq!(want, 0, "cluster {c} is unallocated"),
                    Location::Compressed { .. } => panic!("the writer never compresses"),
                }
            }
        }
        match next {
            Some(n) => start = n,
            None => break,
        }
    }
});
