//! Errors: the WIT's `backend-error`, with its text at hand and a macro per kind.
//!
//! The host shows the text to the operator, prefixed with the plugin's and pool's names:
//! say what failed in words they can act on (which file, which offset, which table). An
//! error without text is a bug the conformance suite reports.

use alloc::format;
use alloc::string::String;

use crate::BackendError;

impl BackendError {
    /// The error's text, whatever its kind.
    pub fn message(&self) -> &str {
        match self {
            BackendError::NotFound(s)
            | BackendError::InvalidArgument(s)
            | BackendError::Unsupported(s)
            | BackendError::PermissionDenied(s)
            | BackendError::OutOfRange(s)
            | BackendError::Corrupt(s)
            | BackendError::Busy(s)
            | BackendError::Conflict(s)
            | BackendError::Io(s) => s,
        }
    }

    /// The kind as the WIT spells it (`not-found`, `io`, ...), for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::NotFound(_) => "not-found",
            BackendError::InvalidArgument(_) => "invalid-argument",
            BackendError::Unsupported(_) => "unsupported",
            BackendError::PermissionDenied(_) => "permission-denied",
            BackendError::OutOfRange(_) => "out-of-range",
            BackendError::Corrupt(_) => "corrupt",
            BackendError::Busy(_) => "busy",
            BackendError::Conflict(_) => "conflict",
            BackendError::Io(_) => "io",
        }
    }

    /// The same kind with another text: a host error re-worded for the operator.
    pub fn with_message(&self, message: String) -> BackendError {
        match self {
            BackendError::NotFound(_) => BackendError::NotFound(message),
            BackendError::InvalidArgument(_) => BackendError::InvalidArgument(message),
            BackendError::Unsupported(_) => BackendError::Unsupported(message),
            BackendError::PermissionDenied(_) => BackendError::PermissionDenied(message),
            BackendError::OutOfRange(_) => BackendError::OutOfRange(message),
            BackendError::Corrupt(_) => BackendError::Corrupt(message),
            BackendError::Busy(_) => BackendError::Busy(message),
            BackendError::Conflict(_) => BackendError::Conflict(message),
            BackendError::Io(_) => BackendError::Io(message),
        }
    }

    /// The same kind, its text prefixed with `what: ` (which file, which volume).
    pub fn context(self, what: &str) -> BackendError {
        let message = format!("{what}: {}", self.message());
        self.with_message(message)
    }
}

/// `BackendError::NotFound` with a `format!` text: no volume, snapshot or file of that name.
#[macro_export]
macro_rules! not_found {
    ($($arg:tt)*) => {
        $crate::BackendError::NotFound($crate::__private::format!($($arg)*))
    };
}

/// `BackendError::InvalidArgument` with a `format!` text: the request itself is wrong (bad name, setting or range).
#[macro_export]
macro_rules! invalid_argument {
    ($($arg:tt)*) => {
        $crate::BackendError::InvalidArgument($crate::__private::format!($($arg)*))
    };
}

/// `BackendError::Unsupported` with a `format!` text: the backend or this volume cannot do that.
#[macro_export]
macro_rules! unsupported {
    ($($arg:tt)*) => {
        $crate::BackendError::Unsupported($crate::__private::format!($($arg)*))
    };
}

/// `BackendError::PermissionDenied` with a `format!` text: not allowed (a read-only image, an ungranted device).
#[macro_export]
macro_rules! permission_denied {
    ($($arg:tt)*) => {
        $crate::BackendError::PermissionDenied($crate::__private::format!($($arg)*))
    };
}

/// `BackendError::OutOfRange` with a `format!` text: an offset or length outside the device or volume.
#[macro_export]
macro_rules! out_of_range {
    ($($arg:tt)*) => {
        $crate::BackendError::OutOfRange($crate::__private::format!($($arg)*))
    };
}

/// `BackendError::Corrupt` with a `format!` text: the metadata is inconsistent or hostile.
#[macro_export]
macro_rules! corrupt {
    ($($arg:tt)*) => {
        $crate::BackendError::Corrupt($crate::__private::format!($($arg)*))
    };
}

/// `BackendError::Busy` with a `format!` text: in use or locked; trying later may work.
#[macro_export]
macro_rules! busy {
    ($($arg:tt)*) => {
        $crate::BackendError::Busy($crate::__private::format!($($arg)*))
    };
}

/// `BackendError::Conflict` with a `format!` text: the name exists, or the state changed under the request.
#[macro_export]
macro_rules! conflict {
    ($($arg:tt)*) => {
        $crate::BackendError::Conflict($crate::__private::format!($($arg)*))
    };
}

/// `BackendError::Io` with a `format!` text: I/O on a device failed.
#[macro_export]
macro_rules! io_error {
    ($($arg:tt)*) => {
        $crate::BackendError::Io($crate::__private::format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use crate::BackendError;

    #[test]
    fn macros_make_the_kind_with_the_formatted_text() {
        let name = "disk0";
        assert_eq!(
            not_found!("no volume {name}"),
            BackendError::NotFound("no volume disk0".into())
        );
        assert_eq!(
            io_error!("{} at {}", name, 7),
            BackendError::Io("disk0 at 7".into())
        );
        assert_eq!(conflict!("x").kind(), "conflict");
    }

    #[test]
    fn context_keeps_the_kind_and_prefixes_the_text() {
        let e = BackendError::Busy("locked".into()).context("vm.qcow2");
        assert_eq!(e, BackendError::Busy("vm.qcow2: locked".into()));
        assert_eq!(e.message(), "vm.qcow2: locked");
    }
}
