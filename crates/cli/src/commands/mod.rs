//! The commands whose work is an engine operation: clap arguments, the request, the
//! rendering of the report.

pub mod download;
pub mod fetch;
pub mod publish;
pub mod push;
