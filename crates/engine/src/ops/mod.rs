//! The operations, one module per command family: typed request in, serializable report
//! out. No operation module imports another; what two share lives in a domain module.

pub mod delete;
pub mod list;
pub mod plugin;
pub mod prune;
pub mod restore;
pub mod snapshot;
