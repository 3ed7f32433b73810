//! The qcow2 format as snapport uses it, shared by the qcow2 plugin (in the wasm sandbox),
//! the host's qcow2 export writer and the fuzz target.
//!
//! - [`format`]: reading an image (header, snapshot table, L1/L2, compressed clusters);
//! - [`chain`]: a backing chain mapped as one volume;
//! - [`layout`]: the header and refcount arithmetic every new image needs;
//! - [`writer`]: a new image filled in any order, its metadata written at the end;
//! - [`snapshot`]: internal snapshots created, deleted and reverted to in place.
//!
//! `no_std` + `alloc` and free of I/O: callers bring the bytes in ([`format::Medium`]) and
//! take them out (the writer returns what to write where).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod chain;
pub mod format;
pub mod layout;
pub mod snapshot;
pub mod writer;
