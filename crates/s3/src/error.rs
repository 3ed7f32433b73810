//! The crate's one error type: a line that says what failed and what to do, and the
//! class of failure callers tell apart (a missing object is not a refused credential).

use std::fmt;

/// The class of an S3 failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The bucket or the object does not exist.
    NotFound,
    /// The credentials were refused or lack a permission.
    Denied,
    /// The settings (endpoint, region, credentials, profile) are missing or malformed,
    /// or an `s3://` name does not parse.
    Settings,
    /// The server does not implement the request (some self-hosted servers lack
    /// ListMultipartUploads).
    NotImplemented,
    /// Anything else: the network, a server error, an answer that makes no sense.
    Other,
}

/// An S3 failure.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The same failure with what was being done in front.
    pub fn context(self, what: impl fmt::Display) -> Error {
        Error {
            kind: self.kind,
            message: format!("{what}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
