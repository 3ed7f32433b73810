//! A raw image file (or block device) on the host, read as a volume: its extent map comes
//! from the file system (`SEEK_DATA`/`SEEK_HOLE`), so holes of a sparse file are never
//! read, as `qemu-img` does for raw files.

use crate::error::{Error, ErrorKind, Result};
use crate::extent::{Device, Extent, ExtentPage, Location, VolumeSource};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

/// Extents per page.
const PAGE: usize = 4096;

pub struct RawFile {
    device: Arc<Device>,
}

impl RawFile {
    pub fn open(path: &Path) -> Result<RawFile> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        RawFile::from_file(file, path.display().to_string())
    }

    /// An open file (one without a name, too), called `name` in messages.
    pub fn from_file(mut file: File, name: String) -> Result<RawFile> {
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io(format!("sizing {name}"), e))?;
        Ok(RawFile {
            device: Arc::new(Device {
                id: 0,
                name,
                file,
                size,
            }),
        })
    }

    /// `lseek` with `whence`; `None` when there is no data at or after `offset` (ENXIO)
    /// or the file system cannot tell (EINVAL: then everything counts as data).
    fn seek(&self, offset: u64, whence: libc::c_int) -> Result<Option<u64>> {
        // SAFETY: lseek on a file descriptor we own; it does not touch memory.
        let r = unsafe { libc::lseek(self.device.file.as_raw_fd(), offset as libc::off_t, whence) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            Some(libc::EINVAL) => Err(Error::new(ErrorKind::Unsupported, "no SEEK_DATA")),
            _ => Err(Error::io(format!("mapping {}", self.device.name), e)),
        }
    }
}

impl VolumeSource for RawFile {
    fn size(&self) -> u64 {
        self.device.size
    }

    fn map_page(&mut self, start: u64) -> Result<ExtentPage> {
        let size = self.device.size;
        let data = |offset: u64, end: u64| Extent {
            offset,
            length: end - offset,
            location: Location::Data { device: 0, offset },
        };
        let mut extents = Vec::new();
        let mut pos = start;
        while pos < size && extents.len() < PAGE {
            let next_data = match self.seek(pos, libc::SEEK_DATA) {
                Ok(d) => d.unwrap_or(size).min(size),
                Err(e) if e.kind() == ErrorKind::Unsupported => {
                    extents.push(data(pos, size));
                    break;
                }
                Err(e) => return Err(e),
            };
            if next_data > pos {
                extents.push(Extent {
                    offset: pos,
                    length: next_data - pos,
                    location: Location::Unallocated,
                });
                pos = next_data;
                continue;
            }
            let hole = self.seek(pos, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
            // A file that changes under us could answer a hole at `pos`; count a byte as
            // data rather than loop.
            let end = hole.max(pos + 1).min(size);
            extents.push(data(pos, end));
            pos = end;
        }
        Ok(ExtentPage {
            extents,
            next_offset: (pos < size).then_some(pos),
        })
    }

    fn device(&self, id: u32) -> Result<Arc<Device>> {
        if id == 0 {
            Ok(Arc::clone(&self.device))
        } else {
            Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} has only device 0", self.device.name),
            ))
        }
    }

    fn decode(&mut self, codec: u32, _: &[u8], _: u32) -> Result<Vec<u8>> {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("a raw file has no codec {codec}"),
        ))
    }

    fn describe(&self) -> String {
        self.device.name.clone()
    }
}
