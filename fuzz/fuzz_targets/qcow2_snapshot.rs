//! Fuzzes the qcow2 snapshot writer on hostile images: create, delete and revert read
//! refcount tables, L1 and L2 tables from the image and write back. Any panic, hang or
//! unbounded allocation is a bug: they must only ever produce errors. After a create that
//! succeeded, the reader must find the new snapshot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapport_qcow2::format::{self, Image, Medium};
use snapport_qcow2::snapshot::{self, MediumMut};
use std::cell::RefCell;

/// An image in memory that may grow, but not without bound.
struct Memory(RefCell<Vec<u8>>);

const MAX_GROWTH: usize = 64 << 20;

impl Medium for Memory {
    fn size(&self) -> u64 {
        self.0.borrow().len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> format::Result<()> {
        self.0.borrow()[..].read_exact_at(offset, buf)
    }
}

impl MediumMut for Memory {
    fn write_all_at(&self, offset: u64, bytes: &[u8]) -> format::Result<()> {
        let end = offset as usize + bytes.len();
        if end > MAX_GROWTH {
            return Err(format::Error::Io("the fuzz medium does not grow that far".into()));
        }
        let mut v = self.0.borrow_mut();
        if end > v.len() {
            v.resize(end, 0);
        }
        v[offset as usize..end].copy_from_slice(bytes);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    // The first byte picks the operations; the rest is the image.
    let (op, image) = (data[0], &data[1..]);
    let m = Memory(RefCell::new(image.to_vec()));
    let Ok(parsed) = Image::open(&m) else { return };
    let existing = parsed.snapshots.first().map(|s| s.name.clone());
    if op & 1 != 0 {
        if snapshot::create(&m, "fuzz", (1, 2)).is_ok() {
            let after = Image::open(&m).expect("an image snapport just wrote must open");
            assert!(after.snapshots.iter().any(|s| s.name == "fuzz"));
        }
    }
    if let Some(name) = existing {
        if op & 2 != 0 {
            let _ = snapshot::revert(&m, &name);
        }
        if op & 4 != 0 {
            let _ = snapshot::delete(&m, &name);
        }
    }
});
