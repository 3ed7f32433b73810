//! The image formats an export writes: what `download --format`, a bundle's payload and
//! a publish name, shared by every operation that exports.

use snapport_core::export::Format;

/// An export's image format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// The disk's bytes as they are (sparse where the target allows).
    Raw,
    /// A qcow2 image, allocated clusters only.
    Qcow2,
    /// Raw, compressed as zstd frames (`zstd -d` restores it).
    RawZst,
}

impl ImageFormat {
    /// The name users type and reports carry: `raw`, `qcow2`, `raw.zst` (also the file
    /// extension a publish serves under).
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::RawZst => "raw.zst",
        }
    }

    /// The export engine's format, with the zstd level that raw.zst uses.
    pub fn export_format(self, zstd_level: i32) -> Format {
        match self {
            ImageFormat::Raw => Format::Raw,
            ImageFormat::Qcow2 => Format::Qcow2,
            ImageFormat::RawZst => Format::RawZst { level: zstd_level },
        }
    }
}
