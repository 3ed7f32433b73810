//! snapport as a library: every operation — export, import, publish and fetch, snapshots,
//! restore, VMs, plugins — as a typed call. Requests in, serializable reports out,
//! progress through [`snapport_core::progress::Progress`], failures as one [`Error`]
//! type that carries its [`ErrorKind`]. Nothing here parses a command line, prints, or
//! ends the process: that is the caller's (the `snapport` CLI is one).
//!
//! `examples/embed.rs` exports a disk, takes a snapshot and imports an image through it.

#![warn(missing_docs)]

pub mod error;
pub use error::{Context, Error, ErrorKind, Result};

pub mod address;
pub mod bundle;
pub mod clock;
pub mod config;
pub mod engine;
pub use engine::Engine;
pub mod format;
pub mod incremental;
pub mod interrupt;
pub mod live;
pub mod ops;
pub mod output;
pub mod qmp;
pub mod quiesce;
pub mod retention;
pub mod s3;
pub mod serve;
pub mod snapshots;
pub mod source;
pub mod vm;
pub mod volume;
