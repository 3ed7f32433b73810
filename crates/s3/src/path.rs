//! `s3://BUCKET/KEY`: what names an object on the command line.

use crate::{Error, ErrorKind, Result};
use std::fmt;

/// A bucket and a key: the object an export writes or an import reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectPath {
    pub bucket: String,
    pub key: String,
}

/// Whether `s` names an object (`s3://...`) rather than a file or a URL.
pub fn is_s3(s: &str) -> bool {
    s.starts_with("s3://")
}

impl ObjectPath {
    /// Parses `s3://BUCKET/KEY`. The bucket follows the S3 naming rules (3 to 63 of
    /// `a-z 0-9 . -`, starting and ending with a letter or digit; self-hosted servers
    /// accept no more than AWS does here); the key is 1 to 1024 bytes without control
    /// characters and names an object, not a folder (no trailing `/`).
    pub fn parse(s: &str) -> Result<ObjectPath> {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::Settings,
                format!("{s}: {why}; name an object as s3://BUCKET/KEY"),
            )
        };
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// name"))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| bad("no key after the bucket"))?;
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.as_bytes()[0].is_ascii_alphanumeric()
            && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric()
            && !bucket.contains("..");
        if !bucket_ok {
            return Err(bad(&format!(
                "{bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '.' and '-')"
            )));
        }
        if key.is_empty() {
            return Err(bad("the key is empty"));
        }
        if key.len() > 1024 {
            return Err(bad("the key is longer than S3's 1024 bytes"));
        }
        if key.chars().any(char::is_control) {
            return Err(bad("the key holds a control character"));
        }
        // A URL resolves them away: `a/../b` would name `b`, and with path-style names
        // `../other/k` another bucket.
        if key.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(bad("the key has a '.' or '..' segment"));
        }
        if key.ends_with('/') {
            return Err(bad("the key ends with '/', which names a folder"));
        }
        Ok(ObjectPath {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The object `KEY` + `ext` in the same bucket (a sidecar: `KEY.digest`).
    pub fn with_suffix(&self, ext: &str) -> ObjectPath {
        ObjectPath {
            bucket: self.bucket.clone(),
            key: format!("{}{ext}", self.key),
        }
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buckets_and_keys() {
        let p = ObjectPath::parse("s3://backups/vm/disk 1.raw").unwrap();
        assert_eq!(p.bucket, "backups");
        assert_eq!(p.key, "vm/disk 1.raw");
        assert_eq!(p.to_string(), "s3://backups/vm/disk 1.raw");
        assert_eq!(p.with_suffix(".digest").key, "vm/disk 1.raw.digest");
        for bad in [
            "s3://",
            "s3://backups",
            "s3://backups/",
            "s3://backups/dir/",
            "s3://Backups/k",
            "s3://ab/k",
            "s3://-ab/k",
            "s3://a..b/k",
            "s3://b_u/k",
            "s3://bucket/a\nb",
            "s3://backups/../victim/k",
            "s3://backups/a/./b",
            "s3://backups/..",
            "http://bucket/k",
        ] {
            let e = ObjectPath::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Settings, "{bad}");
            assert!(e.to_string().contains("s3://BUCKET/KEY"), "{e}");
        }
        assert!(ObjectPath::parse(&format!("s3://bkt/{}", "k".repeat(1025))).is_err());
    }
}
