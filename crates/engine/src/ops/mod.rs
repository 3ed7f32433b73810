//! The operations, one module per command family: a typed request in, a serializable
//! report out. No op module uses another; what they share is in the domain modules.

pub mod clone;
pub mod create;
pub mod download;
pub mod fetch;
pub mod publish;
pub mod push;
pub mod upload;
