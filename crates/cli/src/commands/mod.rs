//! The commands: clap arguments, the request they make, and the rendering of the report.

pub mod clone;
pub mod create;
pub mod delete;
pub mod describe;
pub mod download;
pub mod fetch;
pub mod get;
pub mod plugin;
pub mod plugin_build;
pub mod plugin_test;
pub mod prune;
pub mod publish;
pub mod push;
pub mod restore;
pub mod snapshot;
pub mod tree;
pub mod upload;
