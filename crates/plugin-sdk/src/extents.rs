//! Extent maps: merged and paged as `map-extents` and `changed-extents` answer them.

use alloc::vec::Vec;

use crate::{DeviceId, DeviceOffset, Extent, ExtentPage, Location};

/// `data` location: bytes stored as-is at `offset` of `device`.
pub fn data(device: DeviceId, offset: u64) -> Location {
    Location::Data(DeviceOffset { device, offset })
}

/// Builds one page of an extent map.
///
/// Push extents in ascending order; one that continues the previous one with the same
/// kind of location (zero after zero, unallocated after unallocated, data following on
/// the same device) is merged into it, so a contiguous run costs one extent, as the WIT
/// asks. Once the page holds `max_extents` extents, a push that cannot be merged is
/// refused (`push` answers `false`) and the next page starts at that offset.
///
/// ```ignore
/// let mut page = ExtentPageBuilder::new(start, max_extents);
/// for (offset, length, location) in my_runs_from(start) {
///     if !page.push(offset, length, location) {
///         break;
///     }
/// }
/// Ok(page.finish(size))
/// ```
#[derive(Debug)]
pub struct ExtentPageBuilder {
    start: u64,
    max: usize,
    extents: Vec<Extent>,
    /// Where a refused push was: the next page starts there.
    refused: Option<u64>,
}

impl ExtentPageBuilder {
    /// A page starting at `start` holding at most `max_extents` extents (at least one:
    /// the host never asks for none, and a page of none would not move forward).
    pub fn new(start: u64, max_extents: u32) -> ExtentPageBuilder {
        ExtentPageBuilder {
            start,
            max: (max_extents as usize).max(1),
            extents: Vec::new(),
            refused: None,
        }
    }

    /// Adds `[offset, offset + length)` at `location`, merged into the previous extent
    /// when it continues it. `false` when the page is full: the extent is left out, and
    /// `finish` makes the next page start at `offset`. Empty extents are ignored.
    pub fn push(&mut self, offset: u64, length: u64, location: Location) -> bool {
        if self.refused.is_some() {
            return false;
        }
        if length == 0 {
            return true;
        }
        if let Some(last) = self.extents.last_mut() {
            if last.offset + last.length == offset
                && continues(&last.location, last.length, &location)
            {
                last.length += length;
                return true;
            }
        }
        if self.extents.len() >= self.max {
            self.refused = Some(offset);
            return false;
        }
        self.extents.push(Extent {
            offset,
            length,
            location,
        });
        true
    }

    /// Whether a push that cannot be merged would be refused.
    pub fn is_full(&self) -> bool {
        self.refused.is_some() || self.extents.len() >= self.max
    }

    /// Where the extents pushed so far end (the page's start when there are none).
    pub fn end(&self) -> u64 {
        self.extents
            .last()
            .map_or(self.start, |e| e.offset + e.length)
    }

    /// The extents pushed so far.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// The page of a map of a `size`-byte volume: the next page starts where a push was
    /// refused, or where the extents end if that is before `size`; none at the end.
    pub fn finish(self, size: u64) -> ExtentPage {
        let next = self
            .refused
            .or_else(|| Some(self.end()).filter(|&end| end < size));
        self.finish_at(next)
    }

    /// The page with `next_offset` as given (a `changed-extents` page, whose scan may stop
    /// anywhere between extents). A refused push still decides, if there was one.
    pub fn finish_at(self, next_offset: Option<u64>) -> ExtentPage {
        ExtentPage {
            next_offset: self.refused.or(next_offset),
            extents: self.extents,
        }
    }
}

/// Whether `next` continues `prev` (of `prev_length` bytes) as one location.
fn continues(prev: &Location, prev_length: u64, next: &Location) -> bool {
    match (prev, next) {
        (Location::Zero, Location::Zero) | (Location::Unallocated, Location::Unallocated) => true,
        (Location::Data(a), Location::Data(b)) => {
            a.device == b.device && a.offset.checked_add(prev_length) == Some(b.offset)
        }
        // Each encoded extent is its own stored unit.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn ext(offset: u64, length: u64, location: Location) -> Extent {
        Extent {
            offset,
            length,
            location,
        }
    }

    #[test]
    fn adjacent_runs_of_one_kind_merge() {
        let mut page = ExtentPageBuilder::new(0, 10);
        assert!(page.push(0, 10, data(1, 100)));
        assert!(page.push(10, 5, data(1, 110)));
        assert!(page.push(15, 5, data(2, 115))); // another device
        assert!(page.push(20, 5, data(2, 999))); // not following on the device
        assert!(page.push(25, 4, Location::Zero));
        assert!(page.push(29, 4, Location::Zero));
        assert!(page.push(33, 1, Location::Unallocated));
        assert!(page.push(34, 1, Location::Unallocated));
        assert!(page.push(35, 0, Location::Zero));
        let got = page.finish(35);
        assert_eq!(
            got.extents,
            vec![
                ext(0, 15, data(1, 100)),
                ext(15, 5, data(2, 115)),
                ext(20, 5, data(2, 999)),
                ext(25, 8, Location::Zero),
                ext(33, 2, Location::Unallocated),
            ]
        );
        assert_eq!(got.next_offset, None);
    }

    #[test]
    fn a_gap_or_a_zero_after_data_does_not_merge() {
        let mut page = ExtentPageBuilder::new(0, 10);
        page.push(0, 10, Location::Zero);
        page.push(20, 10, Location::Zero);
        page.push(30, 10, data(0, 30));
        page.push(40, 10, Location::Zero);
        assert_eq!(page.extents().len(), 4);
    }

    #[test]
    fn a_full_page_refuses_and_the_next_starts_there() {
        let mut page = ExtentPageBuilder::new(100, 2);
        assert!(page.push(100, 10, Location::Zero));
        assert!(page.push(110, 10, data(0, 0)));
        assert!(page.is_full());
        // Merging still fits.
        assert!(page.push(120, 10, data(0, 10)));
        assert!(!page.push(130, 10, Location::Zero));
        assert!(
            !page.push(140, 10, Location::Zero),
            "nothing is taken after a refusal"
        );
        let got = page.finish(1000);
        assert_eq!(
            got.extents,
            vec![ext(100, 10, Location::Zero), ext(110, 20, data(0, 0))]
        );
        assert_eq!(got.next_offset, Some(130));
    }

    #[test]
    fn the_page_ends_at_the_volume_or_names_the_rest() {
        let mut page = ExtentPageBuilder::new(0, 0);
        assert!(page.push(0, 512, data(3, 0)));
        assert_eq!(page.finish(4096).next_offset, Some(512));
        let mut page = ExtentPageBuilder::new(0, 8);
        page.push(0, 4096, data(3, 0));
        assert_eq!(page.finish(4096).next_offset, None);
        // Past the end: an empty page with nothing after it.
        let page = ExtentPageBuilder::new(5000, 8);
        assert_eq!(page.end(), 5000);
        let got = page.finish(4096);
        assert!(got.extents.is_empty());
        assert_eq!(got.next_offset, None);
    }

    #[test]
    fn finish_at_keeps_a_refusal() {
        let mut page = ExtentPageBuilder::new(0, 1);
        page.push(0, 1, Location::Zero);
        page.push(7, 1, Location::Zero);
        assert_eq!(page.finish_at(Some(64)).next_offset, Some(7));
        let page = ExtentPageBuilder::new(0, 1);
        assert_eq!(page.finish_at(Some(64)).next_offset, Some(64));
    }
}
