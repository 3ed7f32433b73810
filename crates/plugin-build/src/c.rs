//! C plugins: bindings generated from the WIT with `wit-bindgen-c` (as a library, so no
//! separate install), compiled by clang for `wasm32-wasi` against wasi-libc (for
//! `malloc`, `memcpy`, `strcmp` and the like), linked by `wasm-ld` as a library with no
//! entry point, then wrapped into a component. The libc functions that would call WASI
//! (stdio, snprintf included, clocks, files) are refused at the wrap, naming the import.

use crate::error::{cause, Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What to tell an author whose machine lacks a piece of the C toolchain.
pub const INSTALL_HINT: &str =
    "install: apt-get install -y clang lld wasi-libc libclang-rt-14-dev-wasm32";

/// Generates the C bindings of the backend world into `out` (`backend_plugin.h`, `.c`
/// and `_component_type.o`), from the WIT folder `wit` if given, else from the WIT this
/// library was built with. Returns the files written.
pub fn generate_bindings(wit: Option<&Path>, out: &Path) -> Result<Vec<PathBuf>> {
    let mut resolve = wit_parser::Resolve::default();
    let package = match wit {
        Some(dir) => resolve.push_dir(dir).map(|(p, _)| p),
        None => resolve.push_str("backend.wit", crate::BACKEND_WIT),
    }
    .map_err(|e| {
        Error::build(format!(
            "reading the WIT {}",
            wit.map(|d| d.display().to_string())
                .unwrap_or_else(|| "built in".into())
        ))
        .with_source(cause(e))
    })?;
    let world = resolve
        .select_world(&[package], Some(crate::WORLD))
        .map_err(|e| Error::build("the WIT has no world backend-plugin").with_source(cause(e)))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .map_err(|e| Error::build("generating the C bindings").with_source(cause(e)))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(format!("making {}", out.display()), e))?;
    let mut written = Vec::new();
    for (name, bytes) in files.iter() {
        let path = out.join(name);
        crate::write_atomically(&path, bytes)?;
        written.push(path);
    }
    Ok(written)
}

/// Checks that clang, wasm-ld, wasi-libc and the wasm32 compiler-rt are there, so a
/// missing one is one line naming the packages rather than a linker's page of errors.
fn check_tools() -> Result<()> {
    let missing = |what: &str| {
        Error::missing_tool(format!("building a C plugin needs {what}; {INSTALL_HINT}"))
    };
    let runs = |cmd: &mut Command| cmd.output().ok().filter(|o| o.status.success());
    if runs(Command::new("clang").arg("--version")).is_none() {
        return Err(missing("clang (not found on PATH)"));
    }
    if runs(Command::new("wasm-ld").arg("--version")).is_none() {
        return Err(missing("wasm-ld from lld (not found on PATH)"));
    }
    if !Path::new("/usr/include/wasm32-wasi/stdlib.h").exists()
        || !Path::new("/usr/lib/wasm32-wasi/libc.a").exists()
    {
        return Err(missing("wasi-libc (no /usr/lib/wasm32-wasi/libc.a)"));
    }
    let rt = runs(Command::new("clang").args(["--target=wasm32-wasi", "-print-libgcc-file-name"]))
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if !rt.is_some_and(|p| p.exists()) {
        return Err(missing(
            "the wasm32 compiler-rt (libclang_rt.builtins-wasm32.a)",
        ));
    }
    Ok(())
}

/// Where a C project's generated bindings go: `DIR/bindings`, next to its sources, so
/// the author can read `backend_plugin.h` (git-ignored by the template: the build
/// regenerates it every time).
pub const BINDINGS_DIR: &str = "bindings";

/// Builds the C plugin project `dir` (its `src/*.c`, its `wit/` if it has one) into a
/// core module under `work`, and returns the module's bytes.
pub fn build_module(dir: &Path, name: &str, version: &str, work: &Path) -> Result<Vec<u8>> {
    check_tools()?;
    let wit = dir.join("wit");
    let bindings = dir.join(BINDINGS_DIR);
    let generated = generate_bindings(wit.is_dir().then_some(wit.as_path()), &bindings)?;
    let src = dir.join("src");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
        .map_err(|e| Error::io(format!("reading {}", src.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    if sources.is_empty() {
        return Err(Error::usage(format!("{} holds no .c file", src.display())));
    }
    sources.sort();
    sources.extend(
        generated
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "c" || x == "o")),
    );
    std::fs::create_dir_all(work)
        .map_err(|e| Error::io(format!("making {}", work.display()), e))?;
    let module = work.join(format!("{name}.core.wasm"));
    let mut cmd = Command::new("clang");
    cmd.args([
        "--target=wasm32-wasi",
        "--sysroot=/usr",
        "-O2",
        "-Wall",
        // A library the host calls into, not a program: no _start, no crt1.
        "-nostartfiles",
        "-Wl,--no-entry",
        "-Wl,--strip-debug",
    ])
    // What `info` reports, from snapport-plugin.toml (snapport.h has defaults).
    .arg(format!("-DSNAPPORT_PLUGIN_NAME=\"{name}\""))
    .arg(format!("-DSNAPPORT_PLUGIN_VERSION=\"{version}\""))
    .arg("-I")
    .arg(&bindings)
    .arg("-I")
    .arg(&src)
    .args(&sources)
    .arg("-o")
    .arg(&module);
    let status = cmd.status().map_err(|e| Error::io("starting clang", e))?;
    if !status.success() {
        return Err(Error::build(format!(
            "clang failed ({status}) building {name}; its messages are above"
        )));
    }
    std::fs::read(&module).map_err(|e| Error::io(format!("reading {}", module.display()), e))
}
