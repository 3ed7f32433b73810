//! The engine's one error type.
//!
//! Rules: every error carries a [`ErrorKind`] callers can match on, a message that names
//! what failed (path, offset, operation, plugin) in words an operator can act on, and the
//! underlying I/O error where there is one. Context is added from the inside out with
//! [`Error::context`], so the top-level message reads "outer: inner: cause".

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Reading or writing a file or device failed.
    Io,
    /// The user asked for something wrong (bad name, bad option, existing output).
    InvalidInput,
    NotFound,
    Unsupported,
    PermissionDenied,
    Conflict,
    /// The backend's data or metadata is inconsistent (a plugin said so).
    Corrupt,
    /// A plugin broke the contract: an extent map that overlaps, runs backwards or past the
    /// end, names a device it was not granted; or the plugin trapped, ran out of time or
    /// memory, or is not a valid component.
    Plugin,
}

#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<std::io::Error>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An I/O failure while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error {
            kind: ErrorKind::Io,
            message: what.into(),
            source: Some(source),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The OS error number behind an I/O error, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.as_ref().and_then(std::io::Error::raw_os_error)
    }

    /// Prefixes the message with what the caller was doing.
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}
