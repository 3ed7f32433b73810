//! The files a user names with `-o`: checked before anything is read, named only once
//! complete ([`snapport_core::output`]).
//!
//! An existing file is not replaced without `--force` (as `rbd export`); with it, the
//! old file stays whole until the new one is. A file or device that belongs to a
//! configured pool (a disk file, anything under a pool's folder, a granted device) is
//! never written, `--force` or not: an export must not destroy what it reads from.

use crate::config::Config;
use crate::interrupt;
use crate::{bail, Context as _, Result};
use snapport_core::output::{commit_all, PendingFile};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Refuses to write `output` and the `sidecars` beside it when one belongs to a pool or
/// is not a regular file, or when `output` exists and `force` is not given. A sidecar
/// that exists without `force` is one whose output is gone: it describes nothing and is
/// replaced.
pub fn check(config: &Config, output: &Path, sidecars: &[&Path], force: bool) -> Result<()> {
    let names: Vec<&Path> = [output]
        .into_iter()
        .chain(sidecars.iter().copied())
        .collect();
    for name in &names {
        if let Some((pool, why)) = pool_holding(config, name) {
            bail!(
                "{} {why} of pool {pool}; snapport never writes over a pool's files, --force or not",
                name.display()
            );
        }
    }
    for name in names {
        let meta = match std::fs::symlink_metadata(name) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("looking at {}", name.display())),
        };
        // What a symlink points to decides (a dangling one is a name like any other).
        let meta = std::fs::metadata(name).unwrap_or(meta);
        if meta.is_dir() {
            bail!("{} is a folder; name a file", name.display());
        }
        if !meta.is_file() && !meta.is_symlink() {
            bail!(
                "{} is not a regular file (a device, FIFO or socket); write into it with -o - > {}",
                name.display(),
                name.display()
            );
        }
        if name == output && !force {
            bail!(
                "{} already exists; --force replaces it (once the new output is complete)",
                name.display()
            );
        }
    }
    Ok(())
}

/// Says, when the process is interrupted from now on, that `output` was not written.
pub fn note_pending(output: &Path) {
    interrupt::note(&format!("nothing was written under {}", output.display()));
}

/// Names `output` and its `sidecars` (see [`commit_all`]), replacing an existing output
/// when `force`; `stale` are names of an earlier export's sidecars that this one does
/// not write: they go, since they would describe other bytes. A signal meanwhile waits
/// until the names are in place.
pub fn commit(
    sidecars: Vec<PendingFile>,
    output: PendingFile,
    stale: &[PathBuf],
    force: bool,
    sync: bool,
) -> Result<()> {
    let _held = interrupt::defer();
    for s in stale {
        match std::fs::remove_file(s) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", s.display()))
            }
            _ => {}
        }
    }
    commit_all(sidecars, output, force, sync)?;
    interrupt::clear_note();
    Ok(())
}

/// A sidecar (`OUTPUT.digest`, `OUTPUT.sha256`) holding `text`, not named yet.
pub fn sidecar(path: &Path, text: &str) -> Result<PendingFile> {
    sidecar_bytes(path, text.as_bytes())
}

/// As [`sidecar`], for bytes that are not text (an encrypted sidecar).
pub fn sidecar_bytes(path: &Path, bytes: &[u8]) -> Result<PendingFile> {
    let f = PendingFile::beside(path)?;
    f.write_at(bytes, 0)?;
    Ok(f)
}

/// The process's stdout as an output stream (a duplicate of its descriptor).
pub fn stdout() -> Result<Box<dyn std::io::Write + Send>> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stdout")?;
    Ok(Box::new(std::fs::File::from(fd)))
}

/// `OUTPUT` + `ext`.
pub fn sidecar_path(output: &Path, ext: &str) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

/// The pool `name` belongs to and how, if it does: under one of its folders (by path,
/// through symlinks; or by device and inode, through bind mounts), the same file as one
/// of its folders' files (a hard link), or one of its devices (the same inode, or the
/// same block device through another node).
fn pool_holding(config: &Config, name: &Path) -> Option<(String, String)> {
    let resolved = resolve(name)?;
    let target = std::fs::metadata(name).ok();
    // The folders the name is in, as device and inode.
    let ancestors: Vec<(u64, u64)> = resolved
        .ancestors()
        .skip(1)
        .filter_map(|a| std::fs::metadata(a).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    for (pool, cfg) in config.pools() {
        for folder in &cfg.folders {
            let why = || format!("is in the folder {}", folder.display());
            if folder.canonicalize().is_ok_and(|f| resolved.starts_with(f)) {
                return Some((pool.to_string(), why()));
            }
            let Ok(fm) = std::fs::metadata(folder) else {
                continue;
            };
            if ancestors.contains(&(fm.dev(), fm.ino())) {
                return Some((pool.to_string(), why()));
            }
            if let Some(t) = target.as_ref().filter(|t| t.is_file() && t.nlink() > 1) {
                if let Some(f) = same_file_under(folder, (t.dev(), t.ino())) {
                    return Some((
                        pool.to_string(),
                        format!("is the same file as {}", f.display()),
                    ));
                }
            }
        }
        for (device, path) in &cfg.devices {
            let why = format!("is the device {device} ({})", path.display());
            if path.canonicalize().is_ok_and(|d| d == resolved) {
                return Some((pool.to_string(), why));
            }
            let (Some(t), Ok(dm)) = (&target, std::fs::metadata(path)) else {
                continue;
            };
            let same_inode = (t.dev(), t.ino()) == (dm.dev(), dm.ino());
            let same_device = t.file_type().is_block_device()
                && dm.file_type().is_block_device()
                && t.rdev() == dm.rdev();
            if same_inode || same_device {
                return Some((pool.to_string(), why));
            }
        }
    }
    None
}

/// `name` through every symlink: itself when it exists, else its folder's real path and
/// its file name.
fn resolve(name: &Path) -> Option<PathBuf> {
    if let Ok(p) = name.canonicalize() {
        return Some(p);
    }
    let file = name.file_name()?;
    let dir = match name.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(dir.canonicalize().ok()?.join(file))
}

/// A file under `folder` (at most a few levels and entries deep: pool folders hold
/// disks, not trees) with the device and inode `id`.
fn same_file_under(folder: &Path, id: (u64, u64)) -> Option<PathBuf> {
    let mut todo = vec![(folder.to_path_buf(), 0)];
    let mut seen = 0usize;
    while let Some((dir, depth)) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > 100_000 {
                return None;
            }
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() && depth < 4 {
                todo.push((e.path(), depth + 1));
            } else if (m.dev(), m.ino()) == id {
                return Some(e.path());
            }
        }
    }
    None
}
