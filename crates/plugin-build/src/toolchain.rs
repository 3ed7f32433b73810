//! A Rust compiler for `wasm32-unknown-unknown`. Two routes, tried in order:
//!
//! 1. rustup has the target's standard library: a plain `cargo build --target`.
//! 2. It has not (machines where rustup cannot download targets): Debian's `rustc-web`
//!    compiler, its LLVM and its library source are unpacked into a folder the caller
//!    names (`apt-get download` + `dpkg -x`, never installed system-wide, so no second
//!    `rustc` lands on the PATH), and crates build with `-Zbuild-std=core,alloc`, linked
//!    by rustup's own `rust-lld`.

use crate::error::{Error, Result};
use crate::Notify;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every Rust plugin is built for: no WASI, so nothing but snapport's imports.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// The oldest rustc-web (major, minor) that builds the plugins and their bindings.
const MIN_RUSTC_WEB: (u32, u32) = (1, 88);

/// The folder the CLI keeps a fetched compiler in: `$SNAPPORT_TOOLCHAIN_DIR`, else
/// `$XDG_CACHE_HOME/snapport/toolchain`, else `~/.cache/snapport/toolchain`. It is fetched
/// once and shared by every project of the user.
pub fn default_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("SNAPPORT_TOOLCHAIN_DIR") {
        return dir;
    }
    let cache = var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("snapport/toolchain")
}

/// How cargo gets a wasm32 compiler.
#[derive(Debug, Clone)]
pub enum RustGuest {
    /// rustup's toolchain has the wasm32 standard library.
    Rustup,
    /// Debian's rustc-web unpacked at this folder; crates build `core` and `alloc`
    /// themselves.
    Debian(PathBuf),
}

impl RustGuest {
    /// rustup's target if it is installed, else Debian's rustc-web under `toolchain_dir`
    /// (fetched there the first time, which takes a minute and needs `apt-get`).
    pub fn find(toolchain_dir: &Path, notify: Notify) -> Result<RustGuest> {
        if rustup_has_wasm32() {
            return Ok(RustGuest::Rustup);
        }
        debian_toolchain(toolchain_dir, notify).map(RustGuest::Debian)
    }

    /// `cargo build --release --target wasm32-unknown-unknown` set up for this compiler,
    /// to be completed by the caller (`--target-dir`, `-p`, the working folder).
    pub fn cargo_build(&self) -> Result<Command> {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args(["build", "--release", "--target", TARGET]);
        if let RustGuest::Debian(dir) = self {
            configure_debian(dir, &mut cmd)?;
            cmd.arg("-Zbuild-std=core,alloc");
        }
        Ok(cmd)
    }
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

/// Points cargo at Debian's compiler: its libraries, `RUSTC_BOOTSTRAP` so stable cargo
/// passes `-Z`, and rustup's `rust-lld` as the wasm linker (Debian's rustc ships none).
fn configure_debian(dir: &Path, cmd: &mut Command) -> Result<()> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .env_remove("RUSTC")
        .output()
        .map_err(|e| Error::io("running rustc --print sysroot (is rustup installed?)", e))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout);
    let lld = Path::new(sysroot.trim()).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld");
    if !lld.exists() {
        return Err(Error::missing_tool(format!(
            "rust-lld not found at {} (rustup's stable toolchain ships it)",
            lld.display()
        )));
    }
    let lib = dir.join("usr/lib");
    let llvm_libs = std::fs::read_dir(&lib)
        .map_err(|e| Error::io(format!("reading {}", lib.display()), e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("llvm-"))
        })
        .map(|p| p.join("lib").display().to_string());
    let mut ld_path = vec![dir.join("usr/lib/x86_64-linux-gnu").display().to_string()];
    ld_path.extend(llvm_libs);
    cmd.env("LD_LIBRARY_PATH", ld_path.join(":"))
        .env("RUSTC", dir.join("usr/bin/rustc"))
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", lld);
    Ok(())
}

/// Finds, or fetches and unpacks, Debian's rustc-web with its library source under
/// `base/rustc-web`.
///
/// Holds an exclusive lock on `base/.lock` throughout: two builds starting at once (two
/// terminals, a parallel test run) would otherwise each remove the other's half-unpacked
/// compiler. The second waits, then finds the first's stamp.
fn debian_toolchain(base: &Path, notify: Notify) -> Result<PathBuf> {
    let _lock = lock(base)?;
    let dir = base.join("rustc-web");
    let stamp = dir.join(".complete");
    if !stamp.exists() {
        fetch_rustc_web(base, &dir, notify).map_err(|e| {
            Error::missing_tool(format!(
                "no wasm32 standard library in rustup and Debian's rustc-web could not be \
                 fetched into {}; either `rustup target add {TARGET}` or make \
                 `apt-get download rustc-web` work: {e}",
                dir.display()
            ))
        })?;
        std::fs::write(&stamp, b"")
            .map_err(|e| Error::io(format!("writing {}", stamp.display()), e))?;
    }
    // build-std looks for <sysroot>/lib/rustlib/src/rust/library.
    let link = dir.join("usr/lib/rustlib/src/rust/library");
    if !link.exists() {
        let src_dir = dir.join("usr/src");
        let src = std::fs::read_dir(&src_dir)
            .map_err(|e| Error::io(format!("reading {}", src_dir.display()), e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("library"))
            .find(|p| p.is_dir())
            .ok_or_else(|| Error::build("rust-web-src holds no usr/src/rustc-*/library"))?;
        let parent = link.parent().expect("a path with components");
        std::fs::create_dir_all(parent)
            .and_then(|()| std::os::unix::fs::symlink(&src, &link))
            .map_err(|e| Error::io(format!("linking {}", link.display()), e))?;
    }
    Ok(dir)
}

/// Takes the exclusive lock on `base/.lock` (made with `base` if need be); released when
/// the returned file is dropped, or by the kernel if the process dies.
fn lock(base: &Path) -> Result<std::fs::File> {
    let path = base.join(".lock");
    let file = std::fs::create_dir_all(base)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        })
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    file.lock()
        .map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
    Ok(file)
}

fn apt_field(package: &str, field: &str) -> Result<Option<String>> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", package])
        .output()
        .map_err(|e| Error::io("running apt-cache (is this a Debian machine?)", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}: ")))
        .map(str::to_owned))
}

/// Whether a Debian version like "1.96.0+dfsg1-1~deb12u2" is at least [`MIN_RUSTC_WEB`].
fn new_enough(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= MIN_RUSTC_WEB,
        _ => false,
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .map_err(|e| Error::io(format!("could not start {cmd:?}"), e))?;
    if !status.success() {
        return Err(Error::build(format!("{cmd:?} failed with {status}")));
    }
    Ok(())
}

fn fetch_rustc_web(base: &Path, dir: &Path, notify: Notify) -> Result<()> {
    let mut version = apt_field("rustc-web", "Version")?;
    // Stale package lists offer an old rustc-web (1.85 on bookworm's release lists) that
    // the plugins' dependencies refuse: refresh them first.
    if version.as_deref().is_none_or(|v| !new_enough(v)) {
        notify(&format!(
            "apt-cache offers rustc-web {}; running apt-get update",
            version.as_deref().unwrap_or("not at all")
        ));
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        version = apt_field("rustc-web", "Version")?;
    }
    let version = version.ok_or_else(|| Error::build("apt-cache has no package rustc-web"))?;
    if !new_enough(&version) {
        return Err(Error::build(format!(
            "Debian offers rustc-web {version}; plugins need {}.{} or newer",
            MIN_RUSTC_WEB.0, MIN_RUSTC_WEB.1
        )));
    }
    // "1.96.0+dfsg1-1~deb12u2" -> "1.96"
    let short: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
    let std_pkg = format!("libstd-rust-web-{short}");
    let depends = apt_field(&std_pkg, "Depends")?.unwrap_or_default();
    let llvm = depends
        .split(',')
        .map(|d| d.trim().split(' ').next().unwrap_or(""))
        .find(|d| d.starts_with("libllvm"))
        .ok_or_else(|| Error::build(format!("{std_pkg} names no libllvm in its Depends")))?
        .to_owned();
    let packages = [
        "rustc-web",
        &std_pkg,
        "libstd-rust-web-dev",
        "rust-web-src",
        &llvm,
    ];
    notify(&format!(
        "fetching Debian's rustc-web {version} ({}) into {}",
        packages.join(" "),
        dir.display()
    ));
    let debs = base.join("debs");
    let _ = std::fs::remove_dir_all(&debs);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(&debs)
        .and_then(|()| std::fs::create_dir_all(dir))
        .map_err(|e| Error::io(format!("making {}", dir.display()), e))?;
    run(Command::new("apt-get")
        .current_dir(&debs)
        .arg("download")
        .args(packages))?;
    let listing = std::fs::read_dir(&debs)
        .map_err(|e| Error::io(format!("reading {}", debs.display()), e))?;
    for deb in listing {
        let deb = deb
            .map_err(|e| Error::io(format!("reading {}", debs.display()), e))?
            .path();
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(dir))?;
    }
    std::fs::remove_dir_all(&debs)
        .map_err(|e| Error::io(format!("removing {}", debs.display()), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{lock, new_enough};

    /// A second holder waits until the first lets go (the folder made on the way).
    #[test]
    fn the_toolchain_lock_is_exclusive() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("toolchain");
        let first = lock(&base).unwrap();
        let other = std::fs::File::open(base.join(".lock")).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(first);
        other.try_lock().unwrap();
    }

    #[test]
    fn debian_versions_compare_by_major_and_minor() {
        assert!(new_enough("1.96.0+dfsg1-1~deb12u2"));
        assert!(new_enough("1.88.0"));
        assert!(!new_enough("1.85.0+dfsg1-1"));
        assert!(!new_enough("garbage"));
    }
}
