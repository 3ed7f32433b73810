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
    wit_component::ComponentEncoder::default()
        .module(module)
        .map_err(|e| {
            Error::build(format!(
                "{what}: the module carries no component type information (were the \
                 bindings' type object or the `wit_bindgen::generate!` output linked in?)"
            ))
            .with_source(cause(e))
        })?
        .validate(true)
        .encode()
        .map_err(|e| Error::build(format!("{what}: making the component")).with_source(cause(e)))
}
