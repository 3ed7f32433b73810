//! Lines in the operator's log, labelled by the host with the plugin and pool.
//!
//! `debug!` lines show only with `SNAPPORT_LOG=debug`; the host makes lines printable,
//! cuts them to 4 KiB and keeps at most 10,000 per operation.

use crate::{host, LogLevel};

/// Sends one line to the host's log.
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message)
}

/// Logs a `format!` line at level `error`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => {
        $crate::log($crate::LogLevel::Error, &$crate::__private::format!($($arg)*))
    };
}

/// Logs a `format!` line at level `warn`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        $crate::log($crate::LogLevel::Warn, &$crate::__private::format!($($arg)*))
    };
}

/// Logs a `format!` line at level `info`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        $crate::log($crate::LogLevel::Info, &$crate::__private::format!($($arg)*))
    };
}

/// Logs a `format!` line at level `debug` (shown with `SNAPPORT_LOG=debug`).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        $crate::log($crate::LogLevel::Debug, &$crate::__private::format!($($arg)*))
    };
}
