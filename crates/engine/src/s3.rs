//! `s3://BUCKET/KEY` as an export's output and an import's source ([`snapport_s3`]),
//! with the sidecars a file export writes beside it written as objects beside the key
//! (`KEY.digest`, `KEY.sha256`, `KEY.digest.age`).
//!
//! An export's object appears only when it is complete; its sidecars are written just
//! before (so the object never exists without them), and those of an earlier export
//! that this one does not write are removed. Unfinished uploads (a failed export, or one
//! killed) are aborted by the writer itself or by the next export of the same key.

use crate::{bail, Result};
use snapport_s3::{Client, MultipartWriter, ObjectPath, RangeReader, Settings, WriterOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use snapport_s3::is_s3;

/// Ranged GETs in flight while an object is imported.
const READERS: usize = 4;

/// The object named `s3://...`; a name that does not parse is a usage error.
pub fn object(name: &str) -> Result<ObjectPath> {
    ObjectPath::parse(name).map_err(|e| crate::Error::usage(e.to_string()))
}

/// A client for `object`'s bucket with the settings of the AWS environment and files.
pub fn client(object: &ObjectPath) -> Result<Arc<Client>> {
    let settings = Settings::from_env()?;
    Ok(Arc::new(Client::new(&settings, &object.bucket)?))
}

/// An export's destination object.
pub struct ObjectOutput {
    client: Arc<Client>,
    object: ObjectPath,
    journal: PathBuf,
}

/// Checks `name` as an export's output before anything is read: the bucket is there
/// and the credentials open it, and an existing object is replaced only with `force`.
pub fn output(home: &Path, name: &str, force: bool) -> Result<ObjectOutput> {
    let object = object(name)?;
    let client = client(&object)?;
    client.check_bucket()?;
    if client.look(&object.key)?.is_some() && !force {
        bail!("{object} already exists; --force replaces it (once the new object is complete)");
    }
    Ok(ObjectOutput {
        client,
        object,
        journal: home.join("s3-uploads"),
    })
}

/// [`output`] when `name` is an object (`s3://...`), `None` for a file or stdout.
pub fn output_if_object(home: &Path, name: &str, force: bool) -> Result<Option<ObjectOutput>> {
    is_s3(name).then(|| output(home, name, force)).transpose()
}

impl ObjectOutput {
    /// The last part of the key: the name sidecars say (`DIGEST  NAME`).
    pub fn base_name(&self) -> &str {
        self.object
            .key
            .rsplit('/')
            .next()
            .unwrap_or(&self.object.key)
    }

    /// The output stream for an image of about `expected` bytes (`None`: unknown), and
    /// from now on an interruption says what became of the object.
    pub fn writer(&self, expected: Option<u64>) -> Result<MultipartWriter> {
        let options = match expected {
            Some(size) => WriterOptions::for_size(size, self.journal.clone()),
            None => WriterOptions::for_unknown_size(self.journal.clone()),
        };
        let writer = MultipartWriter::start(Arc::clone(&self.client), &self.object.key, options)?;
        crate::interrupt::note(&format!(
            "nothing was written under {}; the next export to it aborts the unfinished upload",
            self.object
        ));
        Ok(writer)
    }

    /// Sends the rest of `writer`, then writes the sidecars (`(extension, bytes)`;
    /// `None`: an earlier export's, which would now lie, goes) and completes the upload:
    /// the object appears. If the completion fails, the sidecars as they were are put
    /// back, so that an older object keeps the ones that describe it; unless the key
    /// holds a new object all the same, which the new sidecars describe.
    pub fn commit(
        &self,
        writer: &MultipartWriter,
        sidecars: &[(&str, Option<Vec<u8>>)],
    ) -> Result<()> {
        // Every part acknowledged first: what can fail slowly fails before anything
        // beside the key changes.
        writer.send_rest()?;
        let mut before = Vec::new();
        for (ext, _) in sidecars {
            let key = self.object.with_suffix(ext).key;
            let old = absent_if_refused(self.client.read_small(&key, 1 << 20))?;
            before.push((key, old));
        }
        let object_before = match self.client.look(&self.object.key) {
            Ok(None) => Before::Nothing,
            Ok(Some((_, Some(etag)))) => Before::Etag(etag),
            _ => Before::Unknown,
        };
        let _held = crate::interrupt::defer();
        let mut completing = false;
        let replaced = (|| -> Result<()> {
            for ((key, old), (_, new)) in before.iter().zip(sidecars) {
                match new {
                    Some(b) => self.client.write(key, b.clone().into())?,
                    None if old.is_some() => self.client.remove(key)?,
                    None => {}
                }
            }
            completing = true;
            writer.complete()?;
            Ok(())
        })();
        if let Err(e) = replaced {
            // The client never sends a POST twice, and a completion may fail after the
            // server assembled the object (S3 answers an error, or the answer is lost).
            // If the key now holds another object than before, it is ours and the new
            // sidecars describe it: putting the old ones back would make them lie. (Looked
            // at once, right away: an object S3 assembles later is not seen.)
            if completing && self.replaced_since(&object_before) {
                writer.completed_anyway();
                crate::interrupt::clear_note();
                return Ok(());
            }
            for (key, old) in &before {
                let _ = match old {
                    Some(b) => self.client.write(key, b.clone().into()),
                    None => self.client.remove(key),
                };
            }
            return Err(e);
        }
        crate::interrupt::clear_note();
        Ok(())
    }

    /// Whether the key surely holds another object than `before`. What cannot be told
    /// (no ETag, a failed look) counts as not replaced.
    fn replaced_since(&self, before: &Before) -> bool {
        match (before, self.client.look(&self.object.key)) {
            (Before::Nothing, Ok(Some(_))) => true,
            (Before::Etag(old), Ok(Some((_, Some(now))))) => now != *old,
            _ => false,
        }
    }
}

/// What the key held just before a completion, to tell afterwards whether a completion
/// that failed took effect all the same.
enum Before {
    Nothing,
    Etag(String),
    /// An object without an ETag, or a look that failed.
    Unknown,
}

/// Opens object `name` as an import source: the stream of its bytes (read ahead by
/// parallel ranged GETs, all from the object as it was first seen) and its size.
pub fn open_source(name: &str) -> Result<(RangeReader, u64)> {
    let object = object(name)?;
    let client = client(&object)?;
    let Some((size, etag)) = client.look(&object.key)? else {
        // A missing bucket and a missing key look alike to HEAD: ask the bucket.
        client.check_bucket()?;
        bail!("{object}: no such object");
    };
    Ok((
        RangeReader::new(client, &object.key, size, etag, READERS),
        size,
    ))
}

/// Sidecar `name` + `ext` of an object source, at most `cap` bytes; `None` if there is
/// none.
pub fn read_sidecar(name: &str, ext: &str, cap: u64) -> Result<Option<Vec<u8>>> {
    let object = object(name)?.with_suffix(ext);
    let client = client(&object)?;
    absent_if_refused(client.read_small(&object.key, cap))
}

/// A sidecar read the server refused counts as absent: without s3:ListBucket, S3
/// answers 403 for a key that does not exist, and the object itself was readable.
fn absent_if_refused(read: snapport_s3::Result<Option<Vec<u8>>>) -> Result<Option<Vec<u8>>> {
    match read {
        Err(e) if e.kind() == snapport_s3::ErrorKind::Denied => Ok(None),
        other => Ok(other?),
    }
}
