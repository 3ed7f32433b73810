//! The operations, one module per command family: a typed request in, a serializable
//! report out. No op module uses another; what they share is in the domain modules.

pub mod clone;
pub mod create;
pub mod delete;
pub mod download;
pub mod fetch;
pub mod list;
pub mod plugin;
pub mod plugin_test;
pub mod prune;
pub mod publish;
pub mod push;
pub mod restore;
pub mod snapshot;
pub mod upload;
