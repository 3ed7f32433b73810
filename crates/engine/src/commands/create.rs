//! TRANSITIONAL: `create` is `crate::ops::create` and the CLI's command; `check_kind` is
//! in [`crate::volume`]. Goes once the other commands import it from there.

pub use crate::volume::check_kind;
