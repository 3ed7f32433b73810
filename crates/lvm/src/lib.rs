//! LVM2 as snapport reads it, without device-mapper and without LVM's tools: the label
//! and PV header of a physical volume, its metadata areas (the newest copy, text that
//! wraps around the ring), the volume group's text metadata, and where a logical
//! volume's bytes lie on its physical volumes.
//!
//! - [`label`]: the `LABELONE` label, the PV header and the metadata area headers;
//! - [`text`]: the VG text format (`key = value`, sections, arrays, strings, comments);
//! - [`vg`]: a volume group from that text, linear and striped LV maps, and the thin
//!   and thin-pool segments that tie thin LVs to their pool;
//! - [`thin`]: a thin pool's metadata (what `thin_dump` reads) and `thin_delta`'s diff.
//!
//! `no_std` + `alloc` and free of I/O (callers bring bytes through [`Medium`]), so the
//! plugin in the wasm sandbox, the host and the fuzz targets share it.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod label;
pub mod text;
pub mod thin;
pub mod vg;

use alloc::string::String;

/// What went wrong, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The bytes are not what LVM writes (bad magic, checksum, structure).
    Corrupt(String),
    /// Valid LVM that this reader does not handle.
    Unsupported(String),
    /// The medium could not be read.
    Io(String),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Corrupt(s) => write!(f, "corrupt LVM metadata: {s}"),
            Error::Unsupported(s) => write!(f, "unsupported LVM layout: {s}"),
            Error::Io(s) => write!(f, "{s}"),
        }
    }
}

pub type Result<T> = core::result::Result<T, Error>;

pub(crate) fn corrupt<T>(what: impl Into<String>) -> Result<T> {
    Err(Error::Corrupt(what.into()))
}

/// Bytes of a physical volume (a device or an image file).
pub trait Medium {
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; a read past the end is an error.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
}

impl Medium for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = usize::try_from(offset).map_err(|_| Error::Io("offset too large".into()))?;
        match start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(Error::Io(alloc::format!(
                "read of {} bytes at {offset} past the end ({} bytes)",
                buf.len(),
                self.len()
            ))),
        }
    }
}

/// LVM's CRC: the reflected CRC-32 polynomial, seeded with 0xf597a6cf, without the
/// usual final inversion (`calc_crc` in LVM2).
pub fn crc(data: &[u8]) -> u32 {
    let mut c: u32 = 0xf597_a6cf;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    c
}
