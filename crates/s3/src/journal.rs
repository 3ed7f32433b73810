//! Which multipart upload a process has in flight, kept on disk so that the next export
//! finds and aborts what a killed one left.
//!
//! One file per object (named by a hash of endpoint, bucket and key), locked (`flock`)
//! for as long as its process lives: the lock, not a PID, says whether the upload's
//! owner is still there (a PID is reused; a lock dies with its process). The entry is
//! written and synced before the first part is sent, and removed once the upload is
//! completed or aborted.

use crate::{Error, ErrorKind, Result};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// An upload a journal entry names.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub endpoint: String,
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
}

/// A locked journal file: this process's entry for one object.
pub struct Claim {
    file: File,
    path: PathBuf,
    /// The entry a process that is gone left there (its upload is still to abort).
    pub previous: Option<Entry>,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Other, format!("{what} {}: {e}", path.display()))
}

/// Opens and locks the file at `path`; `Ok(None)` if another process holds it.
///
/// A file is removed while locked (once its upload is done), so the one locked may have
/// lost its name meanwhile: then the lock is on nothing anyone else will look at, and
/// the name is opened again (a new file, or one another process made).
fn lock(path: &Path) -> Result<Option<File>> {
    use std::os::unix::fs::MetadataExt;
    for _ in 0..100 {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_error("opening", path, e))?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(None);
            }
            return Err(io_error("locking", path, e));
        }
        let held = file
            .metadata()
            .map_err(|e| io_error("looking at", path, e))?;
        match std::fs::metadata(path) {
            Ok(named) if named.dev() == held.dev() && named.ino() == held.ino() => {
                return Ok(Some(file))
            }
            _ => continue,
        }
    }
    Err(Error::new(
        ErrorKind::Other,
        format!("{} keeps changing under its lock", path.display()),
    ))
}

/// The entry in a locked file, if it holds one that parses (an empty or damaged file
/// holds none: a process that died before writing it had sent nothing).
fn read_entry(file: &mut File) -> Option<Entry> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(64 << 10).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Takes the journal file of object `bucket`/`key` at `endpoint` in `dir`. Fails if
/// another process holds it: two exports to the same object at once would each abort
/// the other's upload.
pub fn claim(dir: &Path, endpoint: &str, bucket: &str, key: &str) -> Result<Claim> {
    std::fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))?;
    let name = hex::encode(&Sha256::digest(format!("{endpoint}\n{bucket}\n{key}"))[..16]);
    let path = dir.join(format!("{name}.json"));
    let Some(mut file) = lock(&path)? else {
        return Err(Error::new(
            ErrorKind::Other,
            format!("another snapport is exporting to s3://{bucket}/{key}; wait for it to end"),
        ));
    };
    let previous = read_entry(&mut file);
    Ok(Claim {
        file,
        path,
        previous,
    })
}

/// The entries of processes that are gone, each claimed (locked) by this one: what
/// they left to abort, whatever object it was for.
pub fn abandoned(dir: &Path) -> Vec<(Claim, Entry)> {
    let Ok(list) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for item in list.flatten() {
        let path = item.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        if let Ok(Some(mut file)) = lock(&path) {
            match read_entry(&mut file) {
                Some(entry) => found.push((
                    Claim {
                        file,
                        path,
                        previous: Some(entry.clone()),
                    },
                    entry,
                )),
                None => {
                    // Nothing in flight: the file goes.
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    found
}

impl Claim {
    /// Records `entry` as this process's upload in flight, synced before any part is
    /// sent.
    pub fn record(&mut self, entry: &Entry) -> Result<()> {
        let text = serde_json::to_vec(entry).expect("an entry serializes");
        let mut write = || -> std::io::Result<()> {
            self.file.set_len(0)?;
            self.file.rewind()?;
            self.file.write_all(&text)?;
            self.file.sync_all()
        };
        write().map_err(|e| io_error("writing", &self.path, e))
    }

    /// The upload is completed or aborted: the entry goes (the lock with the file).
    pub fn clear(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_excludes_others_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let entry = Entry {
            endpoint: "http://e/".into(),
            bucket: "b".into(),
            key: "k".into(),
            upload_id: "u1".into(),
        };
        let mut first = claim(dir.path(), "http://e/", "b", "k").unwrap();
        assert!(first.previous.is_none());
        first.record(&entry).unwrap();
        let e = claim(dir.path(), "http://e/", "b", "k").err().unwrap();
        assert!(e.to_string().contains("another snapport"), "{e}");
        // Held: not abandoned.
        assert!(abandoned(dir.path()).is_empty());
        drop(first);
        let found = abandoned(dir.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, entry);
        drop(found);
        let again = claim(dir.path(), "http://e/", "b", "k").unwrap();
        assert_eq!(again.previous.as_ref(), Some(&entry));
        again.clear();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
