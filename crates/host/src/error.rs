//! The host's one error type. Rules as in the engine: a kind to match on, a message that
//! names the plugin and what it was doing, the cause where there is one.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file is not a valid snapport plugin component (bad bytes, wrong WIT version,
    /// imports the host does not grant).
    InvalidPlugin,
    /// The plugin trapped (panic, unreachable, out of its memory limit).
    Trap,
    /// The plugin ran past its CPU deadline.
    Timeout,
    /// The plugin answered something the host refuses to take: a name that is not a plain
    /// name, a listing longer than the host's cap.
    Misbehaved,
    /// The plugin answered with a typed backend error.
    Backend(BackendErrorKind),
    /// Host-side I/O failed (reading the plugin, the cache).
    Io,
    /// No such plugin, pool or configuration.
    NotFound,
}

/// The WIT `backend-error` cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    NotFound,
    InvalidArgument,
    Unsupported,
    PermissionDenied,
    OutOfRange,
    Corrupt,
    Busy,
    Conflict,
    Io,
}

#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for snapport_core::Error {
    fn from(e: Error) -> Self {
        use snapport_core::ErrorKind as K;
        let kind = match e.kind {
            ErrorKind::InvalidPlugin
            | ErrorKind::Trap
            | ErrorKind::Timeout
            | ErrorKind::Misbehaved => K::Plugin,
            ErrorKind::Io => K::Io,
            ErrorKind::NotFound => K::NotFound,
            ErrorKind::Backend(b) => match b {
                BackendErrorKind::NotFound => K::NotFound,
                BackendErrorKind::InvalidArgument | BackendErrorKind::OutOfRange => K::InvalidInput,
                BackendErrorKind::Unsupported => K::Unsupported,
                BackendErrorKind::PermissionDenied => K::PermissionDenied,
                BackendErrorKind::Corrupt => K::Corrupt,
                BackendErrorKind::Busy | BackendErrorKind::Conflict => K::Conflict,
                BackendErrorKind::Io => K::Io,
            },
        };
        snapport_core::Error::new(kind, e.message)
    }
}
