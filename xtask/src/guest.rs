//! Builds the guest plugins as WebAssembly components, with the library plugin authors
//! use too (`snapport-plugin-build`): the Rust guests in one cargo run over the `plugins/`
//! workspace (rustup's wasm32 target, or Debian's rustc-web fetched into `.toolchain/`),
//! the C guests with clang, each core module wrapped into a component.

use crate::root;
use anyhow::{Context, Result};
use snapport_plugin_build::{self as build, toolchain::RustGuest};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Rust guest crates: (package name in `plugins/Cargo.toml`'s workspace, component file stem).
const GUESTS: &[(&str, &str)] = &[
    ("snapport-plugin-qcow2", "qcow2"),
    ("snapport-plugin-raw", "raw"),
    ("snapport-plugin-lvm", "lvm"),
    ("snapport-plugin-csi", "csi"),
    ("snapport-plugin-hostile", "test-hostile"),
    ("snapport-test-raw-v0-1-0", "test-raw-v0.1.0"),
    ("snapport-plugin-broken", "test-broken"),
];

/// C guest projects under `plugins/` (each with a `snapport-plugin.toml`); the component
/// takes the project's name.
const C_GUESTS: &[&str] = &["files-c"];

/// Builds every guest and returns the folder holding the components.
pub fn build_plugins() -> Result<PathBuf> {
    let root = root();
    let notify = |line: &str| println!("{line}");
    let guest = RustGuest::find(&root.join(".toolchain"), &notify)?;
    let target_dir = root.join("target/guest");
    let modules = build::rust::build_modules(&guest, &root.join("plugins"), &target_dir, &[])
        .context("building the guest plugins")?;

    let out_dir = root.join("target/plugins");
    std::fs::create_dir_all(&out_dir)?;
    for (package, stem) in GUESTS {
        let lib = package.replace('-', "_");
        let module = modules
            .iter()
            .find(|(name, _)| *name == lib)
            .map(|(_, path)| path)
            .with_context(|| format!("cargo built no cdylib for {package}"))?;
        let bytes = std::fs::read(module)
            .with_context(|| format!("reading the core module {}", module.display()))?;
        write_component(&out_dir, stem, &build::component::wrap(package, &bytes)?)?;
    }
    for name in C_GUESTS {
        let project = build::Project::open(&root.join("plugins").join(name))?;
        let opts = build::BuildOptions {
            toolchain_dir: root.join(".toolchain"),
            target_dir: Some(root.join("target/guest-c").join(name)),
            notify: &notify,
        };
        build::build(
            &project,
            &opts,
            &out_dir.join(format!("{}.wasm", project.name)),
        )?;
    }
    println!(
        "plugins: built {} components into {}",
        GUESTS.len() + C_GUESTS.len(),
        out_dir.display()
    );
    Ok(out_dir)
}

fn write_component(out_dir: &Path, stem: &str, component: &[u8]) -> Result<()> {
    Ok(build::write_atomically(
        &out_dir.join(format!("{stem}.wasm")),
        component,
    )?)
}

/// Seeds the fuzz corpus with small qcow2 images made by qemu-img, when it is there.
pub fn seed_qcow2_corpus(corpus: &Path) -> Result<()> {
    let opts = [
        ("v3-64k", "compat=1.1,cluster_size=65536"),
        ("v2-512", "compat=0.10,cluster_size=512"),
        ("l2ext", "extended_l2=on,cluster_size=65536"),
    ];
    for (name, o) in opts {
        let path = corpus.join(format!("seed-{name}.qcow2"));
        if path.exists() {
            continue;
        }
        let made = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-o", o])
            .arg(&path)
            .arg("4M")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if made {
            let _ = Command::new("qemu-io")
                .args([
                    "-f",
                    "qcow2",
                    "-c",
                    "write -P 7 0 70k",
                    "-c",
                    "write -z 1M 64k",
                ])
                .arg(&path)
                .output();
        } else {
            println!("fuzz: qemu-img not usable, corpus not seeded with {name}");
        }
    }
    Ok(())
}

/// Seeds for the snapshot writer: each reader seed with a snapshot QEMU made, behind an
/// operations byte that asks for create, revert and delete.
pub fn seed_snapshot_corpus(qcow2_seeds: &Path, corpus: &Path) -> Result<()> {
    for entry in std::fs::read_dir(qcow2_seeds)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.starts_with("seed-") {
            continue;
        }
        let seed = corpus.join(name);
        if seed.exists() {
            continue;
        }
        let work = corpus.join(format!(".{name}"));
        std::fs::copy(&path, &work)?;
        let made = Command::new("qemu-img")
            .args(["snapshot", "-c", "s1"])
            .arg(&work)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if made {
            let mut bytes = vec![7u8];
            bytes.extend(std::fs::read(&work)?);
            std::fs::write(&seed, bytes)?;
        } else {
            println!("fuzz: qemu-img could not snapshot {name}; not seeded");
        }
        std::fs::remove_file(&work)?;
    }
    Ok(())
}
