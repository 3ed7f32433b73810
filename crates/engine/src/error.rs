//! The engine's one error type: what failed, with the chain of causes that say why, and
//! the class of failure a caller turns into an exit status or an HTTP code.
//!
//! It wraps an [`anyhow::Error`] for the chain (and `downcast_ref` for the few places that
//! tell one failure from another) and adds the [`ErrorKind`]. Like anyhow's, it does not
//! implement [`std::error::Error`] itself, so that `?` converts every error type into it.

use std::error::Error as StdError;
use std::fmt;

/// The class of a failure, which decides what a caller does about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The operation was asked and failed (exit 1).
    Failed,
    /// The request itself is malformed: an address or a size that does not parse,
    /// options that contradict each other (exit 2).
    Usage,
}

/// An engine failure: a message, its causes, and its [`ErrorKind`].
pub struct Error {
    kind: ErrorKind,
    inner: anyhow::Error,
}

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failure described by `text`.
    pub fn msg(text: impl fmt::Display + fmt::Debug + Send + Sync + 'static) -> Error {
        Error {
            kind: ErrorKind::Failed,
            inner: anyhow::Error::msg(text),
        }
    }

    /// A failure whose cause is `error`.
    pub fn new(error: impl StdError + Send + Sync + 'static) -> Error {
        Error::from(error)
    }

    /// A malformed request described by `text`.
    pub fn usage(text: impl fmt::Display + fmt::Debug + Send + Sync + 'static) -> Error {
        Error {
            kind: ErrorKind::Usage,
            inner: anyhow::Error::msg(text),
        }
    }

    /// The class of this failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The same failure, said to be a malformed request.
    pub fn into_usage(mut self) -> Error {
        self.kind = ErrorKind::Usage;
        self
    }

    /// Adds what was being done when this failed; the kind stays.
    pub fn context<C>(self, context: C) -> Error
    where
        C: fmt::Display + Send + Sync + 'static,
    {
        Error {
            kind: self.kind,
            inner: self.inner.context(context),
        }
    }

    /// This error, then each cause, outermost first.
    pub fn chain(&self) -> anyhow::Chain<'_> {
        self.inner.chain()
    }

    /// The innermost cause.
    pub fn root_cause(&self) -> &(dyn StdError + 'static) {
        self.inner.root_cause()
    }

    /// The error of type `E` in the chain, if one is there.
    pub fn downcast_ref<E>(&self) -> Option<&E>
    where
        E: fmt::Display + fmt::Debug + Send + Sync + 'static,
    {
        self.inner.downcast_ref::<E>()
    }

    /// The whole chain on one line, each cause said once ("what: why: deeper why"),
    /// multi-line messages (a TOML parser's) folded into the line.
    pub fn one_line(&self) -> String {
        let mut line = self.to_string();
        for cause in self.chain().skip(1) {
            // Some errors print their source themselves; say each thing once.
            let cause = cause.to_string();
            if !line.contains(&cause) {
                line.push_str(": ");
                line.push_str(&cause);
            }
        }
        line.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl<E> From<E> for Error
where
    E: StdError + Send + Sync + 'static,
{
    fn from(error: E) -> Error {
        Error {
            kind: ErrorKind::Failed,
            inner: anyhow::Error::new(error),
        }
    }
}

/// What `.context()` adds to a `Result` or an `Option`: the engine's [`Error`] with a
/// line on what was being done.
pub trait Context<T> {
    /// Fails with `context` over the cause.
    fn context<C>(self, context: C) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static;

    /// Fails with the context `f` makes, built only on failure.
    fn with_context<C, F>(self, f: F) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> C;
}

/// What converts into an [`Error`] keeping its kind: any standard error, or an
/// [`Error`] itself.
pub trait IntoError {
    /// This, as an engine [`Error`].
    fn into_error(self) -> Error;
}

impl<E: StdError + Send + Sync + 'static> IntoError for E {
    fn into_error(self) -> Error {
        Error::from(self)
    }
}

impl IntoError for Error {
    fn into_error(self) -> Error {
        self
    }
}

impl<T, E: IntoError> Context<T> for Result<T, E> {
    fn context<C>(self, context: C) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
    {
        self.map_err(|e| e.into_error().context(context))
    }

    fn with_context<C, F>(self, f: F) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> C,
    {
        self.map_err(|e| e.into_error().context(f()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context<C>(self, context: C) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
    {
        self.ok_or_else(|| Error::msg(context.to_string()))
    }

    fn with_context<C, F>(self, f: F) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> C,
    {
        self.ok_or_else(|| Error::msg(f().to_string()))
    }
}

/// Returns early with an [`Error`] made from a format string.
#[macro_export]
macro_rules! bail {
    ($msg:literal $(,)?) => {
        return ::std::result::Result::Err($crate::Error::msg(::std::format!($msg)))
    };
    ($err:expr $(,)?) => {
        return ::std::result::Result::Err($crate::Error::msg($err))
    };
    ($fmt:expr, $($arg:tt)*) => {
        return ::std::result::Result::Err($crate::Error::msg(::std::format!($fmt, $($arg)*)))
    };
}

/// Returns early with a usage [`Error`] ([`ErrorKind::Usage`]) made from a format string:
/// for a request that cannot be right whatever the state (options that contradict each
/// other, an argument of the wrong kind).
#[macro_export]
macro_rules! usage {
    ($($arg:tt)*) => {
        return ::std::result::Result::Err($crate::Error::usage(::std::format!($($arg)*)))
    };
}

/// An [`Error`] made from a format string.
#[macro_export]
macro_rules! format_err {
    ($msg:literal $(,)?) => {
        $crate::Error::msg(::std::format!($msg))
    };
    ($err:expr $(,)?) => {
        $crate::Error::msg($err)
    };
    ($fmt:expr, $($arg:tt)*) => {
        $crate::Error::msg(::std::format!($fmt, $($arg)*))
    };
}
