//! Rust plugins: a cdylib crate built by cargo for `wasm32-unknown-unknown`; the `.wasm`
//! files cargo reports as the crates' cdylib artifacts are the core modules.

use crate::error::{Error, Result};
use crate::toolchain::RustGuest;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Runs `cargo build` in `dir` (for `packages`, or the crate there when empty) with
/// `target_dir`, and returns the core modules it made as (package name, path).
/// Cargo's own messages go to the inherited stderr.
pub fn build_modules(
    guest: &RustGuest,
    dir: &Path,
    target_dir: &Path,
    packages: &[&str],
) -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = guest.cargo_build()?;
    cmd.current_dir(dir)
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    for p in packages {
        cmd.args(["-p", p]);
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::missing_tool(format!(
            "cannot start cargo ({e}); install Rust with rustup"
        ))
    })?;
    let stdout = child.stdout.take().expect("piped");
    let mut modules = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.map_err(|e| Error::io("reading cargo's messages", e))?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_cdylib = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "cdylib"));
        if !is_cdylib {
            continue;
        }
        let package = msg["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let wasm = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        if let Some(wasm) = wasm {
            modules.push((package, PathBuf::from(wasm)));
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::io("waiting for cargo", e))?;
    if !status.success() {
        return Err(Error::build(format!(
            "cargo build failed ({status}) in {}; its messages are above",
            dir.display()
        )));
    }
    Ok(modules)
}
