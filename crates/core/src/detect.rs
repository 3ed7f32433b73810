//! What an image is, from its first bytes (never from its name): the formats `upload`
//! imports, and the ones it names and refuses before any byte is imported, so that a
//! foreign image never becomes a disk holding its container's bytes.

use crate::error::{Error, ErrorKind, Result};

/// Bytes to read from a source's start for [`detect`]: every magic below lies inside.
pub const HEAD_BYTES: usize = 64 << 10;

/// A format `upload` imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Qcow2,
    /// zstd-compressed raw (one or many frames).
    RawZst,
}

/// qcow2's magic, "QFI\xfb" (qemu `docs/interop/qcow2.txt`).
pub const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

const CONVERT: &str = "convert it first: qemu-img convert -O qcow2";

/// Formats snapport does not import: where their magic is, the magic, and what the image
/// is with what to do instead. Magics as qemu's block drivers check them (`block/*.c`
/// `*_probe`) and the LUKS on-disk format specifications (v1 and v2 share the first 8
/// bytes).
const FOREIGN: &[(usize, &[u8], &str)] = &[
    (0, b"KDMV", "a VMDK image"),
    (0, b"vhdxfile", "a VHDX image"),
    (0, b"conectix", "a VHD image"),
    (0x40, b"\x7f\x10\xda\xbe", "a VDI image"),
    // block/qed.h QED_MAGIC: 'Q' | 'E' << 8 | 'D' << 16 | '\0' << 24, little-endian.
    (0, b"QED\0", "a QED image"),
    // block/parallels.c HEADER_MAGIC and HEADER_MAGIC2 (the latter for > 2 TiB images).
    (0, b"WithoutFreeSpace", "a Parallels image"),
    (0, b"WithouFreSpacExt", "a Parallels image"),
];

/// Compressed streams snapport does not decompress (zstd it does).
const COMPRESSED: &[(&[u8], &str)] = &[
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\0", "xz"),
    (b"BZh", "bzip2"),
];

/// LUKS's magic, "LUKS\xba\xbe", then a big-endian u16 version (1 or 2).
const LUKS_MAGIC: &[u8; 6] = b"LUKS\xba\xbe";

/// The format of an image from its first bytes (`head`, up to [`HEAD_BYTES`]); `what`
/// names the image in the message when it is refused.
pub fn detect(head: &[u8], what: &str) -> Result<ImageFormat> {
    let refuse = |says: String| {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("{what} is {says}"),
        ))
    };
    if head.starts_with(QCOW2_MAGIC) {
        return match head.get(4..8) {
            Some(v) => match u32::from_be_bytes([v[0], v[1], v[2], v[3]]) {
                2 | 3 => Ok(ImageFormat::Qcow2),
                v => refuse(format!("qcow version {v}; {CONVERT}")),
            },
            None => Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{what} ends inside its qcow2 header ({} bytes): truncated?",
                    head.len()
                ),
            )),
        };
    }
    if crate::zst::is_zstd(head) {
        return Ok(ImageFormat::RawZst);
    }
    if head.starts_with(LUKS_MAGIC) {
        let version = head.get(6..8).map_or(String::new(), |v| {
            format!(" version {}", u16::from_be_bytes([v[0], v[1]]))
        });
        return refuse(format!(
            "a LUKS-encrypted volume (LUKS{version}); decrypt it first (cryptsetup open, or qemu-img convert with its key), or give --format raw to import the encrypted bytes as they are"
        ));
    }
    for (at, magic, name) in FOREIGN {
        if head.get(*at..at + magic.len()) == Some(*magic) {
            return refuse(format!("{name}; {CONVERT}"));
        }
    }
    for (magic, name) in COMPRESSED {
        if head.starts_with(magic) {
            return refuse(format!(
                "{name}-compressed; decompress it first (or recompress as zstd)"
            ));
        }
    }
    Ok(ImageFormat::Raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(head: &[u8]) -> String {
        detect(head, "x").unwrap_err().to_string()
    }

    #[test]
    fn formats_by_magic() {
        assert_eq!(
            detect(b"QFI\xfb\0\0\0\x03", "x").unwrap(),
            ImageFormat::Qcow2
        );
        assert!(refused(b"QFI\xfb\0\0\0\x01").contains("qcow version 1"));
        assert!(refused(b"QFI\xfb\0").contains("truncated"));
        assert_eq!(
            detect(&[0x28, 0xb5, 0x2f, 0xfd, 0], "x").unwrap(),
            ImageFormat::RawZst
        );
        assert_eq!(detect(b"\0\0\0\0", "x").unwrap(), ImageFormat::Raw);
        assert_eq!(detect(b"", "x").unwrap(), ImageFormat::Raw);
        assert!(refused(b"KDMV\x01").contains("VMDK"));
        assert!(refused(b"QED\0\0\0\x01\0").contains("QED"));
        assert!(refused(b"WithoutFreeSpace\x02\0").contains("Parallels"));
        assert!(refused(b"WithouFreSpacExt\x02\0").contains("Parallels"));
        assert!(refused(b"LUKS\xba\xbe\0\x01").contains("LUKS version 1"));
        assert!(refused(b"LUKS\xba\xbe\0\x02").contains("LUKS version 2"));
        assert!(refused(b"LUKS\xba\xbe").contains("LUKS"));
        let mut vdi = vec![0u8; 0x44];
        vdi[0x40..].copy_from_slice(b"\x7f\x10\xda\xbe");
        assert!(refused(&vdi).contains("VDI"));
        assert!(refused(b"\x1f\x8b\x08").contains("gzip"));
        // A magic cut short is not that format.
        assert_eq!(detect(b"QED", "x").unwrap(), ImageFormat::Raw);
        assert_eq!(detect(b"WithoutFree", "x").unwrap(), ImageFormat::Raw);
    }
}
