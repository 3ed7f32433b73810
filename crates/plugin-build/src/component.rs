//! Core module → component: what `wasm-tools component new` does, as a library call, after
//! checking that the module imports nothing the snapport sandbox lacks.

use crate::error::{cause, Error, Result};

/// Import modules a plugin may use: snapport's interfaces (any 0.1.z), and the
/// `[export]…` intrinsics the bindings import for the resources a plugin exports.
fn allowed(module: &str) -> bool {
    let module = module.strip_prefix("[export]").unwrap_or(module);
    module.starts_with("snapport:backend/")
}

/// The first import of `module` that is not one of snapport's interfaces, as
/// `module::name`. A compiler that pulled in WASI (printf, a clock, files) shows here.
pub fn foreign_import(module: &[u8]) -> Result<Option<String>> {
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        let payload = payload.map_err(|e| {
            Error::build("the compiler's output is not a valid core module").with_source(e)
        })?;
        if let wasmparser::Payload::ImportSection(imports) = payload {
            for import in imports.into_imports() {
                let import = import.map_err(|e| {
                    Error::build("the compiler's output has a bad import section").with_source(e)
                })?;
                if !allowed(import.module) {
                    return Ok(Some(format!("{}::{}", import.module, import.name)));
                }
            }
        }
    }
    Ok(None)
}

/// Whether the module carries the bindings' component type (a `component-type…` custom
/// section). Without it the encoder would make a component that exports nothing.
fn has_type_info(module: &[u8]) -> bool {
    wasmparser::Parser::new(0)
        .parse_all(module)
        .filter_map(|p| p.ok())
        .any(|p| matches!(p, wasmparser::Payload::CustomSection(c) if c.name().starts_with("component-type")))
}

/// Turns the core module of plugin `what` into a component, with its type information
/// (the custom section the bindings embed) as the component's interface.
pub fn wrap(what: &str, module: &[u8]) -> Result<Vec<u8>> {
    if let Some(import) = foreign_import(module)? {
        return Err(Error::build(format!(
            "{what} imports `{import}`, which the snapport sandbox does not provide (plugins \
             get no WASI: no stdio, clock, files or environment); remove what uses it and \
             go through the host's calls instead"
        )));
    }
    let untyped = || {
        Error::build(format!(
            "{what}: the module carries no component type information (were the \
             bindings' type object or the `wit_bindgen::generate!` output linked in?)"
        ))
    };
    if !has_type_info(module) {
        return Err(untyped());
    }
    wit_component::ComponentEncoder::default()
        .module(module)
        .map_err(|e| untyped().with_source(cause(e)))?
        .validate(true)
        .encode()
        .map_err(|e| Error::build(format!("{what}: making the component")).with_source(cause(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module importing the functions `(module, name)`, all of type `() -> ()`.
    fn module_importing(imports: &[(&str, &str)]) -> Vec<u8> {
        fn leb(mut n: usize, out: &mut Vec<u8>) {
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    out.push(byte);
                    return;
                }
                out.push(byte | 0x80);
            }
        }
        let mut section = Vec::new();
        leb(imports.len(), &mut section);
        for (module, name) in imports {
            for s in [module, name] {
                leb(s.len(), &mut section);
                section.extend(s.as_bytes());
            }
            section.extend([0x00, 0x00]); // a function of type 0
        }
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend([0x01, 0x04, 0x01, 0x60, 0x00, 0x00]); // type 0: () -> ()
        m.push(0x02);
        leb(section.len(), &mut m);
        m.extend(section);
        m
    }

    #[test]
    fn only_snapport_imports_pass() {
        let ours = module_importing(&[
            ("snapport:backend/host@0.1.2", "log"),
            (
                "[export]snapport:backend/backend@0.1.2",
                "[resource-drop]volume",
            ),
            ("snapport:backend/host@0.1.0", "open"),
        ]);
        assert_eq!(foreign_import(&ours).unwrap(), None);
        let wasi = module_importing(&[
            ("snapport:backend/host@0.1.2", "log"),
            ("wasi_snapshot_preview1", "fd_write"),
        ]);
        assert_eq!(
            foreign_import(&wasi).unwrap().as_deref(),
            Some("wasi_snapshot_preview1::fd_write")
        );
        let err = wrap("demo", &wasi).unwrap_err();
        assert!(err.to_string().contains("no WASI"), "{err}");
    }

    #[test]
    fn a_module_without_type_information_is_refused_in_words() {
        let bare = module_importing(&[]);
        let err = wrap("demo", &bare).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Build);
        assert!(
            err.to_string().contains("no component type information"),
            "{err}"
        );
    }
}
