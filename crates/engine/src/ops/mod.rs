//! The operations: one module per command family, each a typed request in and a
//! serializable report out.

pub mod download;
pub mod fetch;
pub mod publish;
pub mod push;
