//! The commands: clap arguments, the request they make, and the rendering of the report.

pub mod clone;
pub mod create;
pub mod download;
pub mod fetch;
pub mod publish;
pub mod push;
pub mod upload;
