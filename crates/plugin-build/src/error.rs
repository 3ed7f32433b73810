//! The library's one error type: a message saying what failed in words an author can act
//! on, the cause under it, and a kind a command turns into an exit status.

use std::error::Error as StdError;
use std::fmt;

/// The class of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong: a bad plugin name, a folder that is not empty or not a
    /// project (a command exits 2).
    Usage,
    /// A program the build needs is not installed (clang, wasm-ld, wasi-libc, cargo).
    MissingTool,
    /// A compiler failed, or what it made is not a usable plugin.
    Build,
    /// Reading or writing a file failed.
    Io,
}

/// A failure of this library.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

/// `Result` with this library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A malformed request.
    pub fn usage(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Usage, message)
    }

    /// A missing program; `message` says what to install.
    pub fn missing_tool(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::MissingTool, message)
    }

    /// A failed build.
    pub fn build(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Build, message)
    }

    /// A failed file operation: what was being done, and the system's reason.
    pub fn io(message: impl Into<String>, source: std::io::Error) -> Error {
        Error {
            kind: ErrorKind::Io,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// A failure of `kind` described by `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The same failure with `source` as its cause (a wasm-tools or wit-bindgen error).
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Error {
        self.source = Some(source.into());
        self
    }

    /// The class of this failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// anyhow errors (wit-component's, wit-bindgen's) keep their whole chain as the cause.
pub(crate) fn cause(e: impl fmt::Display) -> Box<dyn StdError + Send + Sync> {
    format!("{e:#}").into()
}
