//! The publish crate's one error type: a message that says what failed, in words an
//! operator can act on, and the cause underneath.

use std::fmt;

#[derive(Debug)]
pub struct Error {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            source: None,
        }
    }

    /// An I/O failure while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::with(what, source)
    }

    /// A failure while doing `what`, with its cause.
    pub fn with(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error {
            message: what.into(),
            source: Some(source.into()),
        }
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
        // The whole chain: reqwest's and rustls' top-level messages alone say too little
        // ("error sending request").
        let mut cause = self.source.as_deref().map(|e| e as &dyn std::error::Error);
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<snapport_core::Error> for Error {
    fn from(e: snapport_core::Error) -> Error {
        Error::with("", e).strip()
    }
}

impl Error {
    /// Drops an empty message left by a plain conversion.
    fn strip(mut self) -> Error {
        if self.message.is_empty() {
            if let Some(s) = self.source.take() {
                self.message = s.to_string();
            }
        }
        self
    }
}
