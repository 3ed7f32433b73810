//! Building snapport backend plugins, for the project's own build (`cargo xtask plugins`)
//! and for plugin authors (`snapport plugin new` / `snapport plugin build`).
//!
//! A plugin is a WebAssembly *component* that exports `snapport:backend/backend` and
//! imports nothing but snapport's interfaces (`host`, `grpc`, `tools`): the sandbox has no
//! WASI. Compilers make *core modules*; [`component::wrap`] turns one into a component and
//! refuses a module that imports anything else, naming the import.
//!
//! - [`toolchain`]: a Rust compiler that can target `wasm32-unknown-unknown` — rustup's,
//!   or Debian's `rustc-web` unpacked into a folder the caller names.
//! - [`rust`]: a Rust plugin project (a cdylib crate) built with cargo.
//! - [`c`]: a C plugin project built with clang and wasi-libc against C bindings generated
//!   here from the WIT (no separate `wit-bindgen` install).
//! - [`template`]: the files of a new project of either language.
//!
//! This library prints nothing: what it has to say while it works (fetching a compiler)
//! goes through a [`Notify`] callback; the compilers it runs write to the inherited stderr.

pub mod c;
pub mod component;
mod error;
pub mod project;
pub mod rust;
pub mod template;
pub mod toolchain;

pub use error::{Error, ErrorKind, Result};
pub use project::{build, check_name, BuildOptions, Language, Project};

/// The WIT every plugin is built against: the host's current `snapport:backend`.
pub const BACKEND_WIT: &str = include_str!("../../../wit/backend.wit");

/// The world a plugin implements.
pub const WORLD: &str = "backend-plugin";

/// Receives the progress lines the library would otherwise have printed.
pub type Notify<'a> = &'a dyn Fn(&str);

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so
/// `path` holds either the old content or the whole new one, never half a component.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} names no file", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("writing {}", path.display()), e)
        })
}
