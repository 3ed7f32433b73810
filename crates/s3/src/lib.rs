//! Objects in S3-compatible storage as export outputs and import sources.
//!
//! `s3://BUCKET/KEY` names an object ([`ObjectPath`]); where the server is and who asks
//! come from the standard AWS environment variables and files ([`Settings`]). An export
//! streams into a [`MultipartWriter`]: parts go up in parallel with bounded memory, and
//! the object appears under its key only when the upload completes. An upload that did
//! not complete is aborted, by its own process when it fails, or by the next export of
//! the same key when the process died (a journal entry under a lock says which upload
//! was in flight; the server's list of unfinished uploads says what other machines
//! left). An import reads through a [`RangeReader`]: ranged GETs in parallel, delivered
//! in order.
//!
//! Requests are signed by `rusty-s3` (AWS Signature V4, presigned) and sent by the
//! blocking `reqwest` client with rustls.

#[cfg(feature = "client")]
mod client;
mod error;
#[cfg(feature = "client")]
mod journal;
mod path;
#[cfg(feature = "client")]
mod ranged;
pub mod settings;
#[cfg(feature = "client")]
mod writer;
pub mod xml;

#[cfg(feature = "client")]
pub use client::Client;
pub use error::{Error, ErrorKind, Result};
pub use path::{is_s3, ObjectPath};
#[cfg(feature = "client")]
pub use ranged::RangeReader;
pub use settings::{Addressing, Settings};
#[cfg(feature = "client")]
pub use writer::{MultipartWriter, WriterOptions};
