//! Extent maps as the engine sees them, and the checks that stand between a plugin's
//! answer and any I/O: a map that overlaps, runs backwards, leaves gaps, runs past the
//! volume or names a device range it was not granted is rejected, never followed.

use crate::error::{Error, ErrorKind, Result};
use std::fs::File;
use std::sync::Arc;

/// A device the host opened on the plugin's behalf. The engine reads it with its own file
/// descriptor; the plugin only ever names it by number.
#[derive(Debug)]
pub struct Device {
    pub id: u32,
    /// Path, for messages.
    pub name: String,
    pub file: File,
    pub size: u64,
}

/// Bytes the plugin stored encoded; it decodes them on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    pub device: u32,
    pub offset: u64,
    pub stored_length: u32,
    pub decoded_length: u32,
    pub skip: u32,
    pub codec: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Data { device: u32, offset: u64 },
    Zero,
    Unallocated,
    Encoded(Encoded),
}

impl Location {
    /// True when the range reads as zeros without touching a device.
    pub fn is_hole(&self) -> bool {
        matches!(self, Location::Zero | Location::Unallocated)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub location: Location,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }

    /// The extent without its first `n` bytes (`n` < `length`). Saturating, so an
    /// unchecked extent cannot overflow here; the map's checks still see the result.
    pub fn advance(self, n: u64) -> Extent {
        let location = match self.location {
            Location::Data { device, offset } => Location::Data {
                device,
                offset: offset.saturating_add(n),
            },
            Location::Encoded(mut x) => {
                x.skip = x.skip.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
                Location::Encoded(x)
            }
            other => other,
        };
        Extent {
            offset: self.offset.saturating_add(n),
            length: self.length.saturating_sub(n),
            location,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtentPage {
    pub extents: Vec<Extent>,
    pub next_offset: Option<u64>,
}

/// The largest encoded unit the engine will read and ask a plugin to decode (qcow2's
/// largest cluster is 2 MiB).
pub const MAX_ENCODED_LENGTH: u32 = 4 << 20;

/// What a volume gives the engine: its size, its map, devices, and decoding.
pub trait VolumeSource {
    fn size(&self) -> u64;
    /// One page of the map from `start`, as the plugin said it: the engine checks it.
    fn map_page(&mut self, start: u64) -> Result<ExtentPage>;
    /// The device the plugin calls `id`; an error if it opened no such device.
    fn device(&self, id: u32) -> Result<Arc<Device>>;
    fn decode(&mut self, codec: u32, stored: &[u8], decoded_length: u32) -> Result<Vec<u8>>;
    /// Who answers, for messages ("plugin qcow2, pool default, vd/x").
    fn describe(&self) -> String;
}

fn lie(source: &dyn VolumeSource, what: String) -> Error {
    Error::new(
        ErrorKind::Plugin,
        format!("{} returned a bad extent map: {what}", source.describe()),
    )
}

/// Walks a volume's map page by page, checking every page before handing out its extents.
pub struct CheckedMap<'a> {
    source: &'a mut dyn VolumeSource,
    size: u64,
    pos: u64,
    page: std::vec::IntoIter<Extent>,
    done: bool,
}

impl<'a> CheckedMap<'a> {
    pub fn new(source: &'a mut dyn VolumeSource) -> CheckedMap<'a> {
        CheckedMap::at(source, 0)
    }

    /// Walks the map from `start` to the volume's end (the first page is asked for at
    /// `start`, so it must begin there).
    pub fn at(source: &'a mut dyn VolumeSource, start: u64) -> CheckedMap<'a> {
        let size = source.size();
        CheckedMap {
            source,
            size,
            pos: start,
            page: Vec::new().into_iter(),
            done: start >= size,
        }
    }

    pub fn source(&mut self) -> &mut dyn VolumeSource {
        self.source
    }

    /// The next extent, checked; `None` once the whole volume is covered.
    pub fn next_extent(&mut self) -> Result<Option<Extent>> {
        loop {
            if let Some(e) = self.page.next() {
                return Ok(Some(e));
            }
            if self.done {
                return Ok(None);
            }
            let start = self.pos;
            let page = self.source.map_page(start)?;
            self.check(start, &page)?;
            match page.next_offset {
                Some(n) => self.pos = n,
                None => self.done = true,
            }
            self.page = page.extents.into_iter();
        }
    }

    fn check(&self, start: u64, page: &ExtentPage) -> Result<()> {
        let src: &dyn VolumeSource = &*self.source;
        let mut pos = start;
        for e in &page.extents {
            if e.length == 0 {
                return Err(lie(src, format!("an empty extent at {}", e.offset)));
            }
            if e.offset < pos {
                return Err(lie(
                    src,
                    format!(
                        "extents overlap or run backwards at offset {} (expected {pos})",
                        e.offset
                    ),
                ));
            }
            if e.offset > pos {
                return Err(lie(src, format!("a gap from {pos} to {}", e.offset)));
            }
            let end = e
                .offset
                .checked_add(e.length)
                .filter(|&end| end <= self.size);
            let Some(end) = end else {
                return Err(lie(
                    src,
                    format!(
                        "extent at {} of {} bytes runs past the volume's end ({})",
                        e.offset, e.length, self.size
                    ),
                ));
            };
            self.check_location(e)?;
            pos = end;
        }
        match page.next_offset {
            Some(n) if n <= start => Err(lie(
                src,
                format!("next page at {n} does not move past {start} (backwards)"),
            )),
            Some(n) if n != pos => Err(lie(
                src,
                format!("next page at {n} but the page ends at {pos}"),
            )),
            Some(n) if n >= self.size => Err(lie(
                src,
                format!("next page at {n} is past the volume's end ({})", self.size),
            )),
            None if pos != self.size => Err(lie(
                src,
                format!("map ends at {pos} but the volume has {} bytes", self.size),
            )),
            _ => Ok(()),
        }
    }

    fn check_location(&self, e: &Extent) -> Result<()> {
        let src: &dyn VolumeSource = &*self.source;
        match e.location {
            Location::Zero | Location::Unallocated => Ok(()),
            Location::Data { device, offset } => {
                let dev = src.device(device)?;
                match offset.checked_add(e.length) {
                    Some(end) if end <= dev.size => Ok(()),
                    _ => Err(lie(
                        src,
                        format!(
                            "{} bytes at offset {offset} of device {} ({}, {} bytes) are out of bounds",
                            e.length, device, dev.name, dev.size
                        ),
                    )),
                }
            }
            Location::Encoded(x) => {
                let dev = src.device(x.device)?;
                if x.offset >= dev.size {
                    return Err(lie(
                        src,
                        format!(
                            "encoded data at {} is past the end of {}",
                            x.offset, dev.name
                        ),
                    ));
                }
                if x.decoded_length > MAX_ENCODED_LENGTH || x.stored_length > MAX_ENCODED_LENGTH {
                    return Err(lie(
                        src,
                        format!("an encoded unit larger than {MAX_ENCODED_LENGTH} bytes"),
                    ));
                }
                if u64::from(x.skip) + e.length > u64::from(x.decoded_length) {
                    return Err(lie(
                        src,
                        "an encoded extent longer than its decoded unit".into(),
                    ));
                }
                Ok(())
            }
        }
    }
}
