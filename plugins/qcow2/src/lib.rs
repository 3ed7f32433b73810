//! snapport's qcow2 backend: a pool is a folder of image files. qcow2 files (versions 2
//! and 3, any cluster size, extended L2, compressed clusters, backing chains, internal
//! snapshots) and raw files are disks; format is detected from content. New volumes are
//! qcow2 v3 files, written through the host.
//!
//! The format code lives in `snapport-qcow2` (shared with the host and the fuzz target);
//! this crate is the component glue only.
#![no_std]

extern crate alloc;

#[cfg(target_arch = "wasm32")]
mod guest;
