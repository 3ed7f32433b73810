//! snapport's LVM backend: the pool grants physical volumes (block devices or image
//! files holding PVs), and the plugin reads the volume groups on them without
//! device-mapper: labels, the newest metadata copy, and each logical volume's map onto
//! the PVs. LVs are disks `vd/LV` (`vd/VG-LV` when the pool holds several VGs); thin
//! LVs map through their pool's metadata onto its data LV, thin snapshots are
//! `vds/ORIGIN@SNAP`, and changed extents between two thin LVs of a pool come from the
//! mapping trees, as `thin_delta` computes them.
//!
//! Writes go into existing linear and striped LVs, at the PV places reads come from,
//! and into thin LVs through their activated device nodes (grants named `lv:LV`): only
//! the kernel may allocate chunks in an active pool.
//! Creating and removing LVs and thin snapshots needs LVM's tools: the plugin proposes
//! `lvcreate`/`lvremove` arguments through the host's `tools` interface, which runs them
//! only where the pool grants the tool and allows the options.
//!
//! The format code lives in `snapport-lvm` (shared with the fuzz targets); this crate
//! is the component glue only.
#![no_std]

extern crate alloc;

#[cfg(target_arch = "wasm32")]
mod guest;
