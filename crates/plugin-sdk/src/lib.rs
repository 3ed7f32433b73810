//! Write a snapport storage backend plugin in an afternoon.
//!
//! A plugin is a WebAssembly component that exports the `backend` interface of
//! `wit/backend.wit` (snapport:backend@0.1.2) and sees the world only through the host's
//! calls. This crate holds the generated bindings and what every plugin would otherwise
//! write again:
//!
//! - [`Backend`] and [`Volume`]: the exported interface as two traits, with a default
//!   for every optional call (it answers `unsupported` naming the plugin), so a read-only
//!   plugin implements five functions and nothing else;
//! - [`export_plugin!`]: wires a [`Backend`] into the component's exports;
//! - [`ExtentPageBuilder`]: extent maps, merged and paged as the host asks;
//! - [`Device`] and [`folders`]: granted devices and files in granted folders;
//! - [`error!`], [`warn!`], [`info!`], [`debug!`]: lines in the operator's log;
//! - [`not_found!`] and its siblings: errors with a formatted message;
//! - on wasm32, the global allocator (dlmalloc, feature `allocator`) and a panic handler
//!   that sends the panic's message to the host before trapping (feature `panic-handler`),
//!   so the operator reads "panicked: MESSAGE" instead of "wasm unreachable".
//!
//! ```ignore
//! use snapport_plugin_sdk::prelude::*;
//!
//! struct Mine;
//! impl Backend for Mine {
//!     type Volume = MyVolume;
//!     fn info() -> PluginInfo { /* name, version, description, capabilities */ }
//!     fn list_volumes() -> Result<Vec<VolumeInfo>> { /* ... */ }
//!     fn open_volume(volume: String, snapshot: Option<String>, access: Access) -> Result<MyVolume> { /* ... */ }
//! }
//! snapport_plugin_sdk::export_plugin!(Mine);
//! ```
#![cfg_attr(not(test), no_std)]

extern crate alloc;

mod backend;
mod device;
mod errors;
mod extents;
mod logging;
mod rt;

/// The bindings `wit-bindgen` generates from `wit/backend.wit`. Plugins rarely need them
/// directly: the crate root re-exports the types, and [`Backend`]/[`Volume`] stand in for
/// the generated traits.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "backend-plugin",
        path: "wit/backend.wit",
        pub_export_macro: true,
        export_macro_name: "__export",
        default_bindings_module: "snapport_plugin_sdk::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

pub use backend::{Backend, Volume};
pub use bindings::exports::snapport::backend::backend::PluginInfo;
pub use bindings::snapport::backend::types::{
    Access, BackendError, Capabilities, DeviceId, DeviceOffset, EncodedRef, EntryKind, Extent,
    ExtentPage, FileEntry, FolderEntry, FolderId, GrantedFolder, Label, Location, LogLevel,
    SnapshotInfo, SnapshotPhase, VolumeInfo, VolumeKind,
};
/// The host's calls, as generated: what the helpers here are built on.
pub use bindings::snapport::backend::{grpc, host, tools};
pub use device::{folders, Device, READ_CHUNK};
pub use extents::{data, ExtentPageBuilder};
pub use logging::log;

/// What every call of a plugin answers.
pub type Result<T, E = BackendError> = core::result::Result<T, E>;

/// Everything a plugin usually needs, `alloc`'s strings and vectors included (so a plugin
/// needs no `extern crate alloc` of its own): `use snapport_plugin_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{
        busy, conflict, corrupt, data, debug, error, folders, info, invalid_argument, io_error,
        not_found, out_of_range, permission_denied, unsupported, warn,
    };
    pub use crate::{
        Access, Backend, BackendError, Capabilities, Device, DeviceId, DeviceOffset, EncodedRef,
        EntryKind, Extent, ExtentPage, ExtentPageBuilder, FileEntry, FolderEntry, FolderId,
        GrantedFolder, Label, Location, LogLevel, PluginInfo, Result, SnapshotInfo, SnapshotPhase,
        Volume, VolumeInfo, VolumeKind,
    };
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}

/// What the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use alloc::format;
}

/// Exports a [`Backend`] as the component's `backend` interface: every call of the WIT
/// goes to the type's functions (or their defaults), its volumes become the `volume`
/// resource. Call it once, at the crate's top level:
/// `snapport_plugin_sdk::export_plugin!(MyBackend);`
#[macro_export]
macro_rules! export_plugin {
    ($backend:ident) => {
        $crate::bindings::__export!($backend with_types_in $crate::bindings);
    };
}
