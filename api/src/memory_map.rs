//! The firmware memory map, normalised in caller-provided storage.
//!
//! Firmware maps (e820, UEFI, a device tree's `/memory` and `/reserved-memory`)
//! arrive unsorted, with overlaps, touching fragments and usable regions that do
//! not start or end on a frame boundary. [`MemoryMap::normalize`] turns them into
//! a sorted list of disjoint regions in which:
//!
//! - touching or overlapping regions of one kind are merged;
//! - where regions of different kinds overlap, the more restrictive kind wins
//!   (see [`RegionKind`]): memory that any source calls reserved is never handed
//!   out as usable;
//! - usable regions are trimmed inward to whole frames and dropped when empty.
//!
//! Everything happens inside the slice the caller lends: no allocation. Splitting
//! a usable region around a reservation needs one more slot; when the storage is
//! full the map returns [`MapError::CapacityExceeded`] and keeps the regions it
//! had, so the caller can retry with more storage.

use core::cmp::Ordering;
use core::fmt;

use crate::addr::PhysAddr;
use crate::error::MapError;
use crate::frame::{FRAME_SIZE, FrameRange};

/// What a region of physical memory is for, from least to most restrictive.
///
/// Where two regions overlap, the kind that comes later in this list wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegionKind {
    /// Free RAM the kernel may allocate.
    Usable,
    /// Used by the boot loader; free once the kernel no longer needs its data.
    BootloaderReclaimable,
    /// Holds ACPI tables; free once the kernel has parsed them.
    AcpiReclaimable,
    /// ACPI non-volatile storage: must be preserved across sleep.
    AcpiNvs,
    /// Reserved by firmware, devices, or the kernel image itself.
    Reserved,
    /// RAM reported defective.
    Bad,
}

/// One region of a memory map: `len` bytes from `start`, of one kind.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    /// First byte.
    pub start: PhysAddr,
    /// Length in bytes.
    pub len: u64,
    /// What the memory is for.
    pub kind: RegionKind,
}

impl Region {
    /// An empty placeholder for initialising storage arrays.
    pub const EMPTY: Self = Self {
        start: PhysAddr::ZERO,
        len: 0,
        kind: RegionKind::Reserved,
    };

    /// A region of `len` bytes from `start`.
    #[inline]
    pub const fn new(start: PhysAddr, len: u64, kind: RegionKind) -> Self {
        Self { start, len, kind }
    }

    /// One past the last byte. Regions inside a [`MemoryMap`] never overflow;
    /// for others the result saturates at `u64::MAX`.
    #[inline]
    pub const fn end(&self) -> u64 {
        self.start.as_u64().saturating_add(self.len)
    }

    /// The whole frames inside the region.
    #[inline]
    pub fn frames(&self) -> FrameRange {
        FrameRange::inside(self.start, self.len)
            .unwrap_or(FrameRange::new(crate::frame::Frame::from_number(0), 0))
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {:#x}..{:#x}",
            self.kind,
            self.start.as_u64(),
            self.end()
        )
    }
}

/// A firmware memory map held in storage the caller provides.
///
/// ```
/// use kalloc_api::{MemoryMap, PhysAddr, Region, RegionKind::*};
///
/// let mut storage = [Region::EMPTY; 16];
/// let mut map = MemoryMap::new(&mut storage);
/// // Unsorted and overlapping, as firmware delivers it.
/// map.push(Region::new(PhysAddr::new(0x10_0000), 0x100_0000, Usable))?;
/// map.push(Region::new(PhysAddr::new(0x0), 0x9_f000, Usable))?;
/// map.push(Region::new(PhysAddr::new(0x80_0000), 0x1000, Reserved))?;
/// map.normalize()?;
///
/// let kinds: Vec<_> = map.regions().iter().map(|r| (r.start.as_u64(), r.kind)).collect();
/// assert_eq!(kinds, [(0, Usable), (0x10_0000, Usable), (0x80_0000, Reserved), (0x80_1000, Usable)]);
/// // Take the kernel image out of the usable memory.
/// map.subtract(PhysAddr::new(0x20_0000), 0x4_0000)?;
/// assert_eq!(map.usable_frame_ranges().count(), 4);
/// # Ok::<(), kalloc_api::MapError>(())
/// ```
pub struct MemoryMap<'a> {
    storage: &'a mut [Region],
    len: usize,
    pushed: usize,
    normalized: bool,
}

impl<'a> MemoryMap<'a> {
    /// An empty map that stores up to `storage.len()` regions.
    pub fn new(storage: &'a mut [Region]) -> Self {
        Self {
            storage,
            len: 0,
            pushed: 0,
            normalized: true,
        }
    }

    /// A normalised map of `regions`.
    ///
    /// # Errors
    /// The first [`MapError`] from [`push`](Self::push) or [`normalize`](Self::normalize).
    pub fn from_regions(
        storage: &'a mut [Region],
        regions: impl IntoIterator<Item = Region>,
    ) -> Result<Self, MapError> {
        let mut map = Self::new(storage);
        for region in regions {
            map.push(region)?;
        }
        map.normalize()?;
        Ok(map)
    }

    /// Appends a region as the firmware reported it. The map is no longer
    /// normalised until [`normalize`](Self::normalize) runs.
    ///
    /// # Errors
    /// [`MapError::EmptyRegion`] for a zero length, [`MapError::Overflow`] when
    /// the region ends past `u64::MAX`, [`MapError::CapacityExceeded`] when the
    /// storage is full. `index` counts every region pushed so far, accepted or
    /// not, so it names the firmware entry at fault. The map is unchanged.
    pub fn push(&mut self, region: Region) -> Result<(), MapError> {
        let index = self.pushed;
        self.pushed += 1;
        if region.len == 0 {
            return Err(MapError::EmptyRegion { index });
        }
        if region.start.as_u64().checked_add(region.len).is_none() {
            return Err(MapError::Overflow { index });
        }
        if self.len == self.storage.len() {
            return Err(MapError::CapacityExceeded { index });
        }
        self.storage[self.len] = region;
        self.len += 1;
        self.normalized = false;
        Ok(())
    }

    /// Sorts, resolves overlaps (the more restrictive kind wins), merges touching
    /// regions of one kind, trims usable regions to whole frames and drops the
    /// ones left empty.
    ///
    /// # Errors
    /// [`MapError::CapacityExceeded`] when resolving an overlap must split a
    /// region and the storage is full; the map still describes the same memory.
    pub fn normalize(&mut self) -> Result<(), MapError> {
        self.sort();
        while let Some(first) = self.first_overlap() {
            self.resolve_overlap(first)?;
            self.sort();
        }
        self.merge_touching();
        self.trim_usable_to_frames();
        self.normalized = true;
        Ok(())
    }

    /// Removes `[start, start + len)` from usable memory by recording it as
    /// [`RegionKind::Reserved`] and normalising again.
    ///
    /// # Errors
    /// As [`push`](Self::push) and [`normalize`](Self::normalize); on error the
    /// map is left without the new reservation.
    pub fn subtract(&mut self, start: PhysAddr, len: u64) -> Result<(), MapError> {
        self.reserve(Region::new(start, len, RegionKind::Reserved))
    }

    /// Records `region` (of a kind other than usable, typically) and normalises again.
    ///
    /// # Errors
    /// As [`subtract`](Self::subtract).
    pub fn reserve(&mut self, region: Region) -> Result<(), MapError> {
        if !self.normalized {
            self.normalize()?;
        }
        let index = self.pushed;
        if region.len == 0 {
            self.pushed += 1;
            return Err(MapError::EmptyRegion { index });
        }
        if region.start.as_u64().checked_add(region.len).is_none() {
            self.pushed += 1;
            return Err(MapError::Overflow { index });
        }
        // Check room for the worst case before changing anything, so a failed
        // reservation leaves the map exactly as it was.
        if self.len + self.slots_needed_for(&region) > self.storage.len() {
            self.pushed += 1;
            return Err(MapError::CapacityExceeded { index });
        }
        self.push(region)?;
        let normalized = self.normalize();
        debug_assert!(normalized.is_ok(), "slots_needed_for undercounted");
        normalized
    }

    /// An upper bound on the regions `region` adds to this normalised map: one
    /// for itself, one for each more restrictive region strictly inside it (it
    /// is split around each), and one if a less restrictive region strictly
    /// contains it (that region is split in two).
    fn slots_needed_for(&self, region: &Region) -> usize {
        let (start, end) = (region.start.as_u64(), region.end());
        let strictly_inside = |r: &Region| r.start.as_u64() > start && r.end() < end;
        let islands = self
            .regions()
            .iter()
            .filter(|r| r.kind > region.kind && strictly_inside(r))
            .count();
        let splits_host = self
            .regions()
            .iter()
            .any(|r| r.kind < region.kind && r.start.as_u64() < start && r.end() > end);
        1 + islands + usize::from(splits_host)
    }

    /// The regions, sorted and disjoint once normalised.
    #[inline]
    pub fn regions(&self) -> &[Region] {
        &self.storage[..self.len]
    }

    /// Number of regions.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map holds no regions.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many regions the storage can hold.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.storage.len()
    }

    /// Whether [`normalize`](Self::normalize) has run since the last change.
    #[inline]
    pub fn is_normalized(&self) -> bool {
        self.normalized
    }

    /// The usable memory as runs of whole frames, in address order.
    ///
    /// On a map that is not normalised the runs may overlap; call
    /// [`normalize`](Self::normalize) first.
    pub fn usable_frame_ranges(&self) -> impl Iterator<Item = FrameRange> + '_ {
        debug_assert!(
            self.normalized,
            "usable_frame_ranges on a map that is not normalised"
        );
        self.regions()
            .iter()
            .filter(|r| r.kind == RegionKind::Usable)
            .map(Region::frames)
            .filter(|range| !range.is_empty())
    }

    /// Total usable bytes.
    pub fn usable_bytes(&self) -> u64 {
        self.usable_frame_ranges().map(FrameRange::size_bytes).sum()
    }

    fn sort(&mut self) {
        // Insertion sort: maps are tens of entries and usually nearly sorted, and
        // `slice::sort` would pull in more code than a kernel wants here.
        let regions = &mut self.storage[..self.len];
        for i in 1..regions.len() {
            let mut j = i;
            while j > 0 && Self::order(&regions[j - 1], &regions[j]) == Ordering::Greater {
                regions.swap(j - 1, j);
                j -= 1;
            }
        }
    }

    fn order(a: &Region, b: &Region) -> Ordering {
        a.start
            .cmp(&b.start)
            .then(b.kind.cmp(&a.kind))
            .then(a.len.cmp(&b.len))
    }

    /// The first index `i` whose region overlaps region `i + 1`. In a sorted map,
    /// any overlap at all implies one between neighbours.
    fn first_overlap(&self) -> Option<usize> {
        self.regions()
            .windows(2)
            .position(|pair| pair[1].start.as_u64() < pair[0].end())
    }

    /// Makes regions `i` and `i + 1` (sorted, overlapping) disjoint.
    fn resolve_overlap(&mut self, i: usize) -> Result<(), MapError> {
        let (a, b) = (self.storage[i], self.storage[i + 1]);
        let (a_end, b_end) = (a.end(), b.end());
        if a.kind == b.kind {
            self.storage[i].len = a_end.max(b_end) - a.start.as_u64();
            self.remove(i + 1);
        } else if a.kind > b.kind {
            // `a` wins: `b` keeps only what sticks out past `a`.
            if b_end <= a_end {
                self.remove(i + 1);
            } else {
                self.storage[i + 1] = Region::new(PhysAddr::new(a_end), b_end - a_end, b.kind);
            }
        } else {
            // `b` wins: `a` keeps what lies before `b`, and what lies after it
            // becomes a region of its own.
            if a_end > b_end {
                if self.len == self.storage.len() {
                    return Err(MapError::CapacityExceeded { index: self.len });
                }
                self.storage[self.len] = Region::new(PhysAddr::new(b_end), a_end - b_end, a.kind);
                self.len += 1;
            }
            let head = b.start.as_u64() - a.start.as_u64();
            if head == 0 {
                self.remove(i);
            } else {
                self.storage[i].len = head;
            }
        }
        Ok(())
    }

    fn merge_touching(&mut self) {
        let mut i = 0;
        while i + 1 < self.len {
            let (a, b) = (self.storage[i], self.storage[i + 1]);
            if a.kind == b.kind && a.end() == b.start.as_u64() {
                self.storage[i].len += b.len;
                self.remove(i + 1);
            } else {
                i += 1;
            }
        }
    }

    fn trim_usable_to_frames(&mut self) {
        let mut i = 0;
        while i < self.len {
            let region = self.storage[i];
            if region.kind == RegionKind::Usable {
                let frames = region.frames();
                if frames.is_empty() {
                    self.remove(i);
                    continue;
                }
                self.storage[i].start = frames.start_address();
                self.storage[i].len = frames.count() * FRAME_SIZE;
            }
            i += 1;
        }
    }

    fn remove(&mut self, index: usize) {
        self.storage.copy_within(index + 1..self.len, index);
        self.len -= 1;
    }
}

impl fmt::Debug for MemoryMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.regions()).finish()
    }
}

#[cfg(test)]
mod tests;
