//! snapport's LVM backend: the pool grants physical volumes (block devices or image
//! files holding PVs), and the plugin reads the volume groups on them without
//! device-mapper: labels, the newest metadata copy, and each logical volume's map onto
//! the PVs. LVs are disks `vd/LV` (`vd/VG-LV` when the pool holds several VGs).
//!
//! The format code lives in `snapport-lvm` (shared with the fuzz target); this crate is
//! the component glue only. This first version reads linear and striped LVs; thin
//! volumes, snapshots and writes come next.
#![no_std]

extern crate alloc;

#[cfg(target_arch = "wasm32")]
mod guest;
