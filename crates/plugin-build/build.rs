//! Embeds the project templates and the SDK's sources into the library, so `snapport
//! plugin new` writes a complete project (the SDK vendored, builds offline) from the
//! binary alone, wherever it was installed.
//!
//! Every non-hidden file under `templates/rust`, `templates/c` and `../plugin-sdk` is
//! embedded (the SDK's `target/` and its `wit` link left out: the WIT is written from the
//! one the library carries). A missing folder embeds nothing, and `plugin new` says so.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(root: &Path, rel: &Path, skip: &[&str], out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = rel.join(&name);
        if name.starts_with('.')
            || (rel.parent() == Some(Path::new("")) && skip.contains(&name.as_str()))
        {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk(root, &rel, skip, out);
        } else if path.is_file() {
            out.push((
                rel.to_string_lossy().into_owned(),
                path.canonicalize().unwrap(),
            ));
        }
    }
}

fn table(code: &mut String, name: &str, root: &Path, skip: &[&str]) {
    // Only a folder that exists: cargo reruns a script whose watched path is missing on
    // every build.
    if root.exists() {
        println!("cargo:rerun-if-changed={}", root.display());
    }
    let mut files = Vec::new();
    walk(root, Path::new(""), skip, &mut files);
    writeln!(code, "pub static {name}: &[(&str, &[u8])] = &[").unwrap();
    for (rel, path) in files {
        writeln!(
            code,
            "    ({rel:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    writeln!(code, "];").unwrap();
}

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let mut code = String::new();
    table(
        &mut code,
        "TEMPLATE_RUST",
        &here.join("templates/rust"),
        &[],
    );
    table(&mut code, "TEMPLATE_C", &here.join("templates/c"), &[]);
    table(
        &mut code,
        "SDK",
        &here.join("../plugin-sdk"),
        &["target", "wit", "Cargo.lock"],
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(out, code).unwrap();
}
