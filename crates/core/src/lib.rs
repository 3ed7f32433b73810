//! snapport's engine: extent maps, the streaming export, output formats and digests.
//!
//! The engine knows nothing of plugins or terminals: a volume comes in as a
//! [`extent::VolumeSource`], progress goes out through [`progress::Progress`], and every
//! failure is an [`Error`] with a kind and context.

pub mod bundle;
mod chunks;
pub mod cleanup;
pub mod delta;
pub mod detect;
pub mod digest;
pub mod encryption;
pub mod error;
pub mod export;
pub mod extent;
pub mod import;
pub mod io;
pub mod name;
pub mod output;
pub mod progress;
pub mod qcow2_out;
pub mod raw_file;
pub mod spool;
pub mod volume_reader;

pub use error::{Error, ErrorKind, Result};
pub mod zeros;
pub mod zst;
