//! The commands: clap arguments, the request they make, and the rendering of the report.

pub mod clone;
pub mod create;
pub mod upload;
