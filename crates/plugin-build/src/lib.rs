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
///
/// The temporary is created exclusively under a random name (`O_EXCL`: a link planted in
/// the folder is never followed or written through), removed if the write fails, and
/// registered for removal if the process is interrupted; its name `.NAME.XXXXXX.tmp` is
/// one the project template's `.gitignore` ignores, should a `kill -9` leave it behind.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} names no file", path.display())))?;
    let failed = |e: std::io::Error| Error::io(format!("writing {}", path.display()), e);
    // Mode 0666 less the umask, as `std::fs::write` would make it (tempfile's own default
    // is 0600: a component only its builder could read, which another user's snapport
    // could not load after a copy).
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(failed)?;
    let _cleanup = snapport_core::cleanup::register(tmp.path());
    tmp.write_all(bytes)
        .and_then(|()| tmp.flush())
        .map_err(failed)?;
    tmp.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::write_atomically;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_atomically_replaces_the_file_and_leaves_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("demo.wasm");
        std::fs::write(&out, b"old").unwrap();
        let plain = std::fs::metadata(&out).unwrap().permissions().mode();
        write_atomically(&out, b"new bytes").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new bytes");
        // The mode a plain write gives (0666 less the umask), not tempfile's 0600.
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode(), plain);
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    /// The old predictable temporary name `.demo.wasm.PID.tmp`, planted as a link to a
    /// file elsewhere, is neither followed nor written through.
    #[test]
    fn write_atomically_never_writes_through_a_planted_link() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let dir = tmp.path().join("p");
        std::fs::create_dir(&dir).unwrap();
        let planted = dir.join(format!(".demo.wasm.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_atomically(&dir.join("demo.wasm"), b"component").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(dir.join("demo.wasm")).unwrap(), b"component");
        assert!(planted.symlink_metadata().unwrap().file_type().is_symlink());
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        // The target is a non-empty folder: the rename fails after the write.
        let out = tmp.path().join("demo.wasm");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("x"), b"x").unwrap();
        assert!(write_atomically(&out, b"component").is_err());
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary removed");
    }
}
