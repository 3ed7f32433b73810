//! The compiled-component cache (`$SNAPPORT_HOME/cache/`). Deserializing compiled code
//! runs it, so nothing read from here is trusted: an entry is used only when it is a
//! regular file under a size cap (never a symbolic link, a FIFO or a device) whose header
//! names this component and this engine and whose code matches its recorded SHA-256
//! (see [`crate::cache_entry`]). Anything else is compiled afresh and its entry replaced
//! whole: written without a name, then linked and renamed over the old one, so concurrent
//! runs and crashes leave either a complete entry or none.

use crate::cache_entry::{self, Key};
use sha2::{Digest, Sha256};
use snapport_core::output::PendingFile;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// The largest entry read back or written: far above a plugin's compiled code (a few
/// MiB), and small enough to read whole.
const MAX_ENTRY: u64 = 256 << 20;

pub(crate) struct Cache {
    dir: PathBuf,
    /// [`engine_identity`] of the host's engine.
    engine: [u8; 32],
}

impl Cache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Cache {
        Cache {
            dir,
            engine: engine_identity(engine),
        }
    }

    /// The component of `bytes` (whose SHA-256 is `digest`): deserialized from its entry
    /// when that verifies, else compiled, and the entry rewritten. `log` gets a line each
    /// time the cache is not used as it is, saying why.
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: [u8; 32],
        log: &dyn Fn(String),
    ) -> wasmtime::Result<Component> {
        let key = Key {
            component: digest,
            engine: self.engine,
        };
        let name = file_name(&key);
        let path = self.dir.join(&name);
        let why = match read_entry(&path) {
            Ok(entry) => match cache_entry::unseal(&key, &entry) {
                // SAFETY: these are the exact bytes `serialize` gave for this component
                // on an engine of this identity: the header names both and the code
                // matches its SHA-256. (Who can write this folder can also rewrite the
                // configuration and the plugins; the check is against damaged, cut or
                // misplaced files, which are recompiled instead.)
                Ok(code) => match unsafe { Component::deserialize(engine, code) } {
                    Ok(component) => return Ok(component),
                    Err(e) => format!("wasmtime refused it: {e:#}"),
                },
                Err(why) => why,
            },
            Err(why) => why,
        };
        log(format!(
            "compiled-code cache: {}: {why}; compiling",
            path.display()
        ));
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&name, &key, &component) {
            log(format!("compiled-code cache: not stored: {e}"));
        }
        Ok(component)
    }

    /// Writes the entry of `component` as a file without a name, then names it `name`,
    /// replacing whatever was there (`snapport_core::output`: a run killed meanwhile
    /// leaves no file, and concurrent runs each put a whole entry in place).
    fn store(&self, name: &str, key: &Key, component: &Component) -> Result<(), String> {
        let code = component.serialize().map_err(|e| format!("{e:#}"))?;
        let entry = cache_entry::seal(key, &code);
        if entry.len() as u64 > MAX_ENTRY {
            return Err(format!(
                "{} bytes of code, over the {MAX_ENTRY}-byte cap",
                entry.len()
            ));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let pending = PendingFile::beside(&self.dir.join(name)).map_err(|e| e.to_string())?;
        pending.write_at(&entry, 0).map_err(|e| e.to_string())?;
        pending.commit(true, false).map_err(|e| e.to_string())
    }
}

/// Entries are named by the component's SHA-256 and the start of the engine's identity;
/// the header holds both whole.
fn file_name(key: &Key) -> String {
    format!(
        "{}-{}.cwasm",
        hex::encode(key.component),
        hex::encode(&key.engine[..8])
    )
}

/// SHA-256 of wasmtime's `precompile_compatibility_hash`, which covers the target, the
/// compiler's flags, the tunables and wasm features the configuration sets, and
/// wasmtime's own version (its module-version strategy hashes `CARGO_PKG_VERSION`).
fn engine_identity(engine: &Engine) -> [u8; 32] {
    struct Sha(Sha256);
    impl std::hash::Hasher for Sha {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            let d = self.0.clone().finalize();
            u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
        }
    }
    let mut h = Sha(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    h.0.finalize().into()
}

/// The whole entry at `path`, when it is a regular file (opened without following a
/// symbolic link, and without waiting on a FIFO) under [`MAX_ENTRY`].
fn read_entry(path: &Path) -> Result<Vec<u8>, String> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => "nothing cached yet".to_string(),
            Some(libc::ELOOP) => "a symbolic link, not followed".to_string(),
            _ => format!("opening: {e}"),
        })?;
    snapport_core::io::read_regular(&mut file, MAX_ENTRY).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Config, ModuleVersionStrategy};

    fn identity(edit: impl FnOnce(&mut Config)) -> [u8; 32] {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        edit(&mut config);
        engine_identity(&Engine::new(&config).unwrap())
    }

    #[test]
    fn the_engine_identity_follows_its_version_and_code_settings() {
        let ours = identity(|_| {});
        assert_eq!(ours, identity(|_| {}), "stable for the same configuration");
        assert_ne!(
            ours,
            identity(|c| {
                c.epoch_interruption(false);
            }),
            "a setting that changes the code changes it"
        );
        assert_ne!(
            ours,
            identity(|c| {
                c.module_version(ModuleVersionStrategy::Custom("47.0.0".into()))
                    .unwrap();
            }),
            "another wasmtime version changes it"
        );
    }

    #[test]
    fn a_fifo_a_symlink_or_an_oversized_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            read_entry(&fifo).unwrap_err(),
            "not a regular file but a FIFO"
        );

        let real = dir.path().join("real");
        std::fs::write(&real, b"entry").unwrap();
        assert_eq!(read_entry(&real).unwrap(), b"entry");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(
            read_entry(&link).unwrap_err(),
            "a symbolic link, not followed"
        );

        std::fs::File::create(&real)
            .unwrap()
            .set_len(MAX_ENTRY + 1)
            .unwrap();
        assert!(read_entry(&real).unwrap_err().contains("larger than"));
        assert_eq!(
            read_entry(&dir.path().join("absent")).unwrap_err(),
            "nothing cached yet"
        );
    }
}
