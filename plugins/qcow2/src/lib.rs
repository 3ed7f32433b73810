//! snapport's qcow2 backend: a pool is a folder of image files. qcow2 files (versions 2
//! and 3, any cluster size, extended L2, compressed clusters, backing chains, internal
//! snapshots) and raw files are disks; format is detected from content.
//!
//! The format code is `no_std` and target-independent so the fuzz target links it
//! natively; only `guest` is wasm32-specific.
// no_std in the guest; natively (fuzzing, unit tests) std provides the allocator and panics.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

pub mod chain;
pub mod format;

#[cfg(target_arch = "wasm32")]
mod guest;
