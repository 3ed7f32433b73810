//! A plugin project on disk and its build into one component file.
//!
//! A folder with a `Cargo.toml` is a Rust plugin (the package's cdylib); a folder with a
//! `snapport-plugin.toml` naming the plugin is a C plugin (its `src/*.c`).

use crate::error::{Error, Result};
use crate::{c, component, rust, toolchain, Notify};
use std::path::{Path, PathBuf};

/// The manifest of a C plugin project.
pub const C_MANIFEST: &str = "snapport-plugin.toml";

/// A plugin's source language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    Rust,
    C,
}

impl Language {
    /// The name `--lang` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::C => "c",
        }
    }
}

/// A plugin project: its folder, its name (the component is `NAME.wasm`), its language.
#[derive(Clone, Debug)]
pub struct Project {
    pub dir: PathBuf,
    pub name: String,
    /// The Rust package's version, or the C manifest's `version` ("0.1.0" without one).
    pub version: String,
    pub language: Language,
}

fn read_toml(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    text.parse::<toml::Table>()
        .map_err(|e| Error::usage(format!("{} is not valid TOML", path.display())).with_source(e))
}

impl Project {
    /// The project in `dir`; a usage error when `dir` is missing or is not a project.
    pub fn open(dir: &Path) -> Result<Project> {
        if !dir.is_dir() {
            return Err(Error::usage(format!(
                "{} is not a folder (give the plugin project's folder)",
                dir.display()
            )));
        }
        let cargo = dir.join("Cargo.toml");
        let manifest = dir.join(C_MANIFEST);
        let (language, file, key) = if cargo.is_file() {
            (Language::Rust, cargo, "package.name")
        } else if manifest.is_file() {
            (Language::C, manifest, "name")
        } else {
            return Err(Error::usage(format!(
                "{} is not a plugin project: no Cargo.toml (Rust) or {C_MANIFEST} (C); \
                 make one with `snapport plugin new NAME`",
                dir.display()
            )));
        };
        let table = read_toml(&file)?;
        let value = match language {
            Language::Rust => table.get("package").and_then(|p| p.get("name")),
            Language::C => table.get("name"),
        };
        let name = value
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::usage(format!("{} has no {key}", file.display())))?
            .to_owned();
        check_name(&name)?;
        let version = match language {
            Language::Rust => table.get("package").and_then(|p| p.get("version")),
            Language::C => table.get("version"),
        };
        let version = version.and_then(|v| v.as_str()).unwrap_or("0.1.0");
        if !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
        {
            return Err(Error::usage(format!(
                "{}: version {version:?} is not a plain version like 0.1.0",
                file.display()
            )));
        }
        Ok(Project {
            dir: dir.to_path_buf(),
            name,
            version: version.to_owned(),
            language,
        })
    }

    /// Where `plugin build` puts the component by default: `DIR/NAME.wasm`.
    pub fn default_output(&self) -> PathBuf {
        self.dir.join(format!("{}.wasm", self.name))
    }
}

/// A plugin name is a plain crate name: ASCII letters, digits, `-` and `_`, starting with
/// a letter, at most 64 bytes. It names the crate, the component file and the C manifest.
pub fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "{name:?} is not a plugin name: use ASCII letters, digits, '-' and '_', starting \
             with a letter (at most 64)"
        )))
    }
}

/// Where a build keeps its intermediate files and finds its compiler.
pub struct BuildOptions<'a> {
    /// The folder a fetched Rust compiler lives in ([`toolchain::default_dir`]).
    pub toolchain_dir: PathBuf,
    /// Cargo's target folder (and the C build's work folder); `DIR/target` when none.
    pub target_dir: Option<PathBuf>,
    pub notify: Notify<'a>,
}

/// Builds `project` into the component file `out`, written atomically. Returns the
/// component's size in bytes.
pub fn build(project: &Project, opts: &BuildOptions, out: &Path) -> Result<u64> {
    let target_dir = opts
        .target_dir
        .clone()
        .unwrap_or_else(|| project.dir.join("target"));
    let module = match project.language {
        Language::Rust => {
            let guest = toolchain::RustGuest::find(&opts.toolchain_dir, opts.notify)?;
            let modules = rust::build_modules(&guest, &project.dir, &target_dir, &[])?;
            let wanted = project.name.replace('-', "_");
            let only = (modules.len() == 1).then(|| modules[0].1.clone());
            let path = modules
                .into_iter()
                .find(|(name, _)| *name == wanted)
                .map(|(_, path)| path)
                .or(only)
                .ok_or_else(|| {
                    Error::build(format!(
                        "cargo made no cdylib for {}: its Cargo.toml needs \
                         `[lib] crate-type = [\"cdylib\"]`",
                        project.name
                    ))
                })?;
            std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        }
        Language::C => {
            // One work folder per project, so projects sharing a target folder (and
            // named alike) never build over each other.
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&std::path::absolute(&project.dir).ok(), &mut hasher);
            let work = target_dir.join("snapport-c").join(format!(
                "{}-{:016x}",
                project.name,
                std::hash::Hasher::finish(&hasher)
            ));
            c::build_module(&project.dir, &project.name, &project.version, &work)?
        }
    };
    let component = component::wrap(&project.name, &module)?;
    crate::write_atomically(out, &component)?;
    Ok(component.len() as u64)
}
