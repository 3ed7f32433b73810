//! Builds the guest plugins as WebAssembly components.
//!
//! Two routes, tried in order:
//! 1. rustup has the `wasm32-unknown-unknown` standard library: a plain cargo build.
//! 2. It has not (these machines: rustup cannot download targets): Debian's `rustc-web`
//!    compiler and its library source are unpacked into `.toolchain/` (git-ignored, never
//!    installed system-wide) and the guests build with `-Zbuild-std=core,alloc`.
//!
//! The core modules are then turned into components with `wit-component`.

use crate::{root, run_cmd};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";

/// Guest crates: (package name in `plugins/Cargo.toml`'s workspace, component file stem).
const GUESTS: &[(&str, &str)] = &[
    ("snapport-plugin-qcow2", "qcow2"),
    ("snapport-plugin-raw", "raw"),
    ("snapport-plugin-lvm", "lvm"),
    ("snapport-plugin-csi", "csi"),
    ("snapport-plugin-hostile", "test-hostile"),
    ("snapport-test-raw-v0-1-0", "test-raw-v0.1.0"),
    ("snapport-plugin-broken", "test-broken"),
];

/// Builds every guest and returns the folder holding the components.
pub fn build_plugins() -> Result<PathBuf> {
    let root = root();
    let target_dir = root.join("target/guest");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root.join("plugins"))
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    if !rustup_has_wasm32() {
        let tc = debian_toolchain()?;
        tc.configure(&mut cmd)?;
        cmd.arg("-Zbuild-std=core,alloc");
    }
    run_cmd(&mut cmd).context("building the guest plugins")?;

    let out_dir = root.join("target/plugins");
    std::fs::create_dir_all(&out_dir)?;
    for (package, stem) in GUESTS {
        let module = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", package.replace('-', "_")));
        let bytes = std::fs::read(&module)
            .with_context(|| format!("reading the core module {}", module.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .module(&bytes)
            .with_context(|| format!("{package}: not a module with component type info"))?
            .validate(true)
            .encode()
            .with_context(|| format!("{package}: encoding the component"))?;
        let dest = out_dir.join(format!("{stem}.wasm"));
        let tmp = out_dir.join(format!(".{stem}.wasm.tmp"));
        std::fs::write(&tmp, &component)?;
        std::fs::rename(&tmp, &dest)?;
    }
    println!(
        "plugins: built {} components into {}",
        GUESTS.len(),
        out_dir.display()
    );
    Ok(out_dir)
}

fn rustup_has_wasm32() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        })
        .unwrap_or(false)
}

/// Debian's rustc-web unpacked under `.toolchain/rustc-web`.
struct DebianToolchain {
    dir: PathBuf,
}

impl DebianToolchain {
    fn configure(&self, cmd: &mut Command) -> Result<()> {
        let d = &self.dir;
        let host_sysroot = String::from_utf8(
            Command::new("rustc")
                .args(["--print", "sysroot"])
                .output()?
                .stdout,
        )?;
        let lld = Path::new(host_sysroot.trim())
            .join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld");
        if !lld.exists() {
            bail!(
                "rust-lld not found at {} (rustup's stable toolchain ships it)",
                lld.display()
            );
        }
        let llvm_libs = std::fs::read_dir(d.join("usr/lib"))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("llvm-"))
            })
            .map(|p| p.join("lib").display().to_string());
        let mut ld_path = vec![d.join("usr/lib/x86_64-linux-gnu").display().to_string()];
        ld_path.extend(llvm_libs);
        cmd.env("LD_LIBRARY_PATH", ld_path.join(":"))
            .env("RUSTC", d.join("usr/bin/rustc"))
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", lld);
        Ok(())
    }
}

/// Finds, or fetches and unpacks, Debian's rustc-web with its library source.
fn debian_toolchain() -> Result<DebianToolchain> {
    let base = root().join(".toolchain");
    let dir = base.join("rustc-web");
    let stamp = dir.join(".complete");
    if !stamp.exists() {
        fetch_rustc_web(&base, &dir).context(
            "no wasm32 standard library in rustup and Debian's rustc-web could not be fetched; \
             either `rustup target add wasm32-unknown-unknown` or make `apt-get download rustc-web` work",
        )?;
        std::fs::write(&stamp, b"")?;
    }
    // build-std looks for <sysroot>/lib/rustlib/src/rust/library.
    let link = dir.join("usr/lib/rustlib/src/rust/library");
    if !link.exists() {
        let src = std::fs::read_dir(dir.join("usr/src"))?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("library"))
            .find(|p| p.is_dir())
            .context("rust-web-src holds no usr/src/rustc-*/library")?;
        std::fs::create_dir_all(link.parent().unwrap())?;
        std::os::unix::fs::symlink(&src, &link)?;
    }
    Ok(DebianToolchain { dir })
}

fn apt_field(package: &str, field: &str) -> Result<Option<String>> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", package])
        .output()
        .context("running apt-cache (is this a Debian machine?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}: ")))
        .map(str::to_owned))
}

/// The oldest rustc-web (major, minor) that builds the guests and their build tools.
const MIN_RUSTC_WEB: (u32, u32) = (1, 88);

/// Whether a Debian version like "1.96.0+dfsg1-1~deb12u2" is at least [`MIN_RUSTC_WEB`].
fn new_enough(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= MIN_RUSTC_WEB,
        _ => false,
    }
}

fn fetch_rustc_web(base: &Path, dir: &Path) -> Result<()> {
    let mut version = apt_field("rustc-web", "Version")?;
    // Stale package lists offer an old rustc-web (1.85 on bookworm's release lists) that
    // the guests' dependencies refuse: refresh them first.
    if version.as_deref().is_none_or(|v| !new_enough(v)) {
        println!(
            "apt-cache offers rustc-web {}; running apt-get update",
            version.as_deref().unwrap_or("not at all")
        );
        run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
        version = apt_field("rustc-web", "Version")?;
    }
    let version = version.context("apt-cache has no package rustc-web")?;
    if !new_enough(&version) {
        bail!("Debian offers rustc-web {version}; the guests need {MIN_RUSTC_WEB:?} or newer (wit-component needs rustc 1.88)");
    }
    // "1.96.0+dfsg1-1~deb12u2" -> "1.96"
    let short: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
    let std_pkg = format!("libstd-rust-web-{short}");
    let depends = apt_field(&std_pkg, "Depends")?.unwrap_or_default();
    let llvm = depends
        .split(',')
        .map(|d| d.trim().split(' ').next().unwrap_or(""))
        .find(|d| d.starts_with("libllvm"))
        .with_context(|| format!("{std_pkg} names no libllvm in its Depends"))?
        .to_owned();
    let packages = [
        "rustc-web",
        &std_pkg,
        "libstd-rust-web-dev",
        "rust-web-src",
        &llvm,
    ];
    println!(
        "fetching Debian's rustc-web {version} ({}) into {}",
        packages.join(" "),
        dir.display()
    );
    let debs = base.join("debs");
    let _ = std::fs::remove_dir_all(&debs);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(&debs)?;
    std::fs::create_dir_all(dir)?;
    run_cmd(
        Command::new("apt-get")
            .current_dir(&debs)
            .arg("download")
            .args(packages),
    )?;
    for deb in std::fs::read_dir(&debs)? {
        let deb = deb?.path();
        run_cmd(Command::new("dpkg").arg("-x").arg(&deb).arg(dir))?;
    }
    std::fs::remove_dir_all(&debs)?;
    Ok(())
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
