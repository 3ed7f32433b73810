//! `snapport plugin new`: a project that builds and passes `plugin test` as it is, for
//! an author to change. The files come from the binary itself (see `build.rs`): a Rust
//! project gets the SDK vendored under `vendor/snapport-plugin-sdk`, so it builds offline;
//! both get the WIT they are built against.

use crate::error::{Error, Result};
use crate::project::{check_name, Language};
use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// Where a Rust project keeps its copy of the SDK (its Cargo.toml's path dependency).
pub const SDK_DIR: &str = "vendor/snapport-plugin-sdk";

/// Build outputs, and the temporaries `plugin build` writes them through
/// (`.NAME.wasm.XXXXXX.tmp`, see [`crate::write_atomically`]).
const GITIGNORE: &str = "/target\n/bindings\n/*.wasm\n/.*.tmp\n";

/// The files of a new `language` project named `name`, as (relative path, content).
pub fn files(name: &str, language: Language) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    check_name(name)?;
    let template = match language {
        Language::Rust => embedded::TEMPLATE_RUST,
        Language::C => embedded::TEMPLATE_C,
    };
    if template.is_empty() || (language == Language::Rust && embedded::SDK.is_empty()) {
        return Err(Error::build(format!(
            "this snapport was built without the {} plugin template",
            language.as_str()
        )));
    }
    let mut out = Vec::new();
    for (rel, bytes) in template {
        let rel = rel.strip_suffix(".in").unwrap_or(rel);
        let bytes = match std::str::from_utf8(bytes) {
            Ok(text) => text.replace("{{name}}", name).into_bytes(),
            Err(_) => bytes.to_vec(),
        };
        out.push((PathBuf::from(rel), bytes));
    }
    let wit_dir = match language {
        Language::Rust => {
            for (rel, bytes) in embedded::SDK {
                out.push((Path::new(SDK_DIR).join(rel), bytes.to_vec()));
            }
            Path::new(SDK_DIR).join("wit")
        }
        Language::C => PathBuf::from("wit"),
    };
    out.push((
        wit_dir.join("backend.wit"),
        crate::BACKEND_WIT.as_bytes().to_vec(),
    ));
    out.push((PathBuf::from(".gitignore"), GITIGNORE.as_bytes().to_vec()));
    Ok(out)
}

/// Writes a new project into `dir`, which must not exist or be empty. The files are
/// written into a hidden sibling folder first and renamed into place, so a failure leaves
/// nothing behind. Returns the files written, relative to `dir`.
pub fn new_project(name: &str, language: Language, dir: &Path) -> Result<Vec<PathBuf>> {
    let files = files(name, language)?;
    let existing_empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::usage(format!(
                    "{} is not empty; give a new folder with --path",
                    dir.display()
                )));
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Error::usage(format!(
                "{} is a file, not a folder",
                dir.display()
            )));
        }
        Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
    };
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(Error::usage(format!(
            "{} does not exist: make it first, or give another --path",
            parent.display()
        )));
    }
    let leaf = dir
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} names no folder", dir.display())))?;
    // Created exclusively under a random name (never an existing folder reused, or
    // removed on failure), and removed when this function fails (TempDir's drop).
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.snapport-new-", leaf.to_string_lossy()))
        .tempdir_in(&parent)
        .map_err(|e| Error::io(format!("making a folder in {}", parent.display()), e))?;
    // A signal ends the process before the TempDir's drop could remove the staging
    // folder: a caller that can be interrupted holds signals back meanwhile (the CLI
    // does; writing a project takes milliseconds).
    let write_all = || -> std::io::Result<()> {
        for (rel, bytes) in &files {
            let path = staging.path().join(rel);
            std::fs::create_dir_all(path.parent().expect("inside staging"))?;
            std::fs::write(&path, bytes)?;
        }
        if existing_empty {
            std::fs::remove_dir(dir)?;
        }
        std::fs::rename(staging.path(), dir)
    };
    write_all().map_err(|e| Error::io(format!("writing the project into {}", dir.display()), e))?;
    // Renamed away: nothing left for the TempDir to remove.
    let _ = staging.keep();
    Ok(files.into_iter().map(|(rel, _)| rel).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_template_names_the_plugin_and_carries_the_wit() {
        let files = files("demo-1", Language::C).unwrap();
        let get = |p: &str| {
            files
                .iter()
                .find(|(rel, _)| rel == Path::new(p))
                .map(|(_, b)| String::from_utf8(b.clone()).unwrap())
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        assert!(get("snapport-plugin.toml").contains("name = \"demo-1\""));
        assert_eq!(get("wit/backend.wit"), crate::BACKEND_WIT);
        assert!(files
            .iter()
            .all(|(rel, _)| !rel.to_string_lossy().contains("{{")));
    }

    #[test]
    fn refuses_a_non_empty_folder_and_leaves_it_alone() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("keep"), b"x").unwrap();
        let err = new_project("demo", Language::C, tmp.path()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Usage);
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn writes_into_an_empty_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        std::fs::create_dir(&dir).unwrap();
        new_project("demo", Language::C, &dir).unwrap();
        assert!(dir.join("src").is_dir());
        assert!(dir.join("snapport-plugin.toml").is_file());
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no staging folder left");
        assert!(std::fs::read_to_string(dir.join(".gitignore"))
            .unwrap()
            .contains("/.*.tmp"));
    }

    /// A folder under the old predictable staging name is neither reused nor removed.
    #[test]
    fn leaves_a_folder_named_like_the_staging_one_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let old = tmp
            .path()
            .join(format!(".p.snapport-new-{}", std::process::id()));
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("mine"), b"x").unwrap();
        new_project("demo", Language::C, &tmp.path().join("p")).unwrap();
        assert_eq!(std::fs::read(old.join("mine")).unwrap(), b"x");
        assert_eq!(std::fs::read_dir(&old).unwrap().count(), 1);
        assert!(tmp.path().join("p/snapport-plugin.toml").is_file());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
    }

    /// A project that cannot be renamed into place (the name is taken by a dangling
    /// link, which the emptiness check sees as absent) leaves no staging folder.
    #[test]
    fn a_failed_write_leaves_no_staging_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("ro");
        std::fs::create_dir(&parent).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), parent.join("p")).unwrap();
        assert!(new_project("demo", Language::C, &parent.join("p")).is_err());
        let left: Vec<_> = std::fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("p")], "staging removed");
    }
}
