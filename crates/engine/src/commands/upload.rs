//! TRANSITIONAL: `upload` is `crate::ops::upload` and the CLI's command; what other
//! commands took from here is in [`crate::volume`]. Goes once they import it from there.

pub use crate::volume::{kind_of, write_into, write_volume, ZstdSource};
