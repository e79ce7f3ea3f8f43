//! Byte-granular physical ranges and the sorted, merged tables that hold them.

use core::fmt;

use kalloc_api::{AllocError, PhysAddr};

/// A half-open range of physical bytes, `start..end`.
///
/// Reservations are byte-granular (a kernel image rarely ends on a frame
/// boundary), so [`BootMemory`](crate::BootMemory) records them as `PhysRange`s
/// and only rounds to whole frames at hand-over.
///
/// ```
/// use kalloc_api::PhysAddr;
/// use kalloc_bump::PhysRange;
///
/// let range = PhysRange::new(PhysAddr::new(0x1000), 0x234).unwrap();
/// assert_eq!(range.end(), PhysAddr::new(0x1234));
/// assert_eq!(range.len(), 0x234);
/// assert!(PhysRange::new(PhysAddr::new(u64::MAX), 2).is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PhysRange {
    start: u64,
    end: u64,
}

impl PhysRange {
    /// An empty range at address zero, for initialising table storage.
    pub const EMPTY: Self = Self { start: 0, end: 0 };

    /// `len` bytes from `start`, or `None` when the end does not fit in a `u64`.
    #[inline]
    pub const fn new(start: PhysAddr, len: u64) -> Option<Self> {
        match start.as_u64().checked_add(len) {
            Some(end) => Some(Self {
                start: start.as_u64(),
                end,
            }),
            None => None,
        }
    }

    /// The bytes from `start` up to (not including) `end`, or `None` when `end < start`.
    #[inline]
    pub const fn from_bounds(start: PhysAddr, end: PhysAddr) -> Option<Self> {
        if end.as_u64() < start.as_u64() {
            return None;
        }
        Some(Self {
            start: start.as_u64(),
            end: end.as_u64(),
        })
    }

    /// Callers guarantee `start <= end`.
    #[inline]
    pub(crate) const fn raw(start: u64, end: u64) -> Self {
        debug_assert!(start <= end);
        Self { start, end }
    }

    /// The first byte.
    #[inline]
    pub const fn start(self) -> PhysAddr {
        PhysAddr::new(self.start)
    }

    /// One past the last byte.
    #[inline]
    pub const fn end(self) -> PhysAddr {
        PhysAddr::new(self.end)
    }

    /// Length in bytes.
    #[inline]
    pub const fn len(self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no bytes.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.start == self.end
    }

    /// Whether `addr` lies in the range.
    #[inline]
    pub const fn contains(self, addr: PhysAddr) -> bool {
        addr.as_u64() >= self.start && addr.as_u64() < self.end
    }

    /// Whether the two ranges share at least one byte.
    #[inline]
    pub const fn overlaps(self, other: Self) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// The bytes both ranges hold (empty, at some address, when they are disjoint).
    #[inline]
    pub const fn intersect(self, other: Self) -> Self {
        let start = if self.start > other.start {
            self.start
        } else {
            other.start
        };
        let end = if self.end < other.end {
            self.end
        } else {
            other.end
        };
        if end < start {
            Self { start, end: start }
        } else {
            Self { start, end }
        }
    }

    #[inline]
    pub(crate) const fn lo(self) -> u64 {
        self.start
    }

    #[inline]
    pub(crate) const fn hi(self) -> u64 {
        self.end
    }
}

impl fmt::Debug for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysRange({:#x}..{:#x})", self.start, self.end)
    }
}

/// A sorted table of disjoint, non-touching, non-empty ranges in caller storage.
///
/// Inserting merges a new range with every range it overlaps or touches, so the
/// table never holds two entries that could be one, and its length is the
/// number of separate islands, not the number of insertions.
pub(crate) struct RangeTable<'a> {
    slots: &'a mut [PhysRange],
    len: usize,
}

impl<'a> RangeTable<'a> {
    pub(crate) fn new(slots: &'a mut [PhysRange]) -> Self {
        Self { slots, len: 0 }
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[PhysRange] {
        &self.slots[..self.len]
    }

    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Adds `range` (non-empty), merging it with its neighbours.
    ///
    /// # Errors
    /// [`AllocError::TableFull`] when `range` touches nothing already here and
    /// every slot is taken; the table is unchanged.
    pub(crate) fn insert(&mut self, range: PhysRange) -> Result<(), AllocError> {
        debug_assert!(!range.is_empty());
        let entries = self.as_slice();
        // First entry that ends at or after `range.start`: the first one it may touch.
        let first = entries.partition_point(|entry| entry.end < range.start);
        // One past the last entry that starts at or before `range.end`.
        let past_last = entries.partition_point(|entry| entry.start <= range.end);
        if first == past_last {
            return self.insert_at(first, range);
        }
        let merged = PhysRange::raw(
            range.start.min(entries[first].start),
            range.end.max(entries[past_last - 1].end),
        );
        self.slots[first] = merged;
        self.remove(first + 1..past_last);
        Ok(())
    }

    fn insert_at(&mut self, index: usize, range: PhysRange) -> Result<(), AllocError> {
        if self.len == self.slots.len() {
            return Err(AllocError::TableFull);
        }
        self.slots.copy_within(index..self.len, index + 1);
        self.slots[index] = range;
        self.len += 1;
        Ok(())
    }

    fn remove(&mut self, doomed: core::ops::Range<usize>) {
        let count = doomed.len();
        self.slots.copy_within(doomed.end..self.len, doomed.start);
        self.len -= count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u64, end: u64) -> PhysRange {
        PhysRange::raw(start, end)
    }

    #[test]
    fn overlapping_and_touching_ranges_merge() {
        let mut slots = [PhysRange::EMPTY; 4];
        let mut table = RangeTable::new(&mut slots);
        table.insert(range(10, 20)).unwrap();
        table.insert(range(30, 40)).unwrap();
        table.insert(range(20, 25)).unwrap();
        assert_eq!(table.as_slice(), [range(10, 25), range(30, 40)]);
        table.insert(range(5, 35)).unwrap();
        assert_eq!(table.as_slice(), [range(5, 40)]);
        table.insert(range(12, 13)).unwrap();
        assert_eq!(table.as_slice(), [range(5, 40)]);
    }

    #[test]
    fn insertion_keeps_address_order() {
        let mut slots = [PhysRange::EMPTY; 4];
        let mut table = RangeTable::new(&mut slots);
        for (start, end) in [(50, 60), (10, 20), (30, 40), (0, 5)] {
            table.insert(range(start, end)).unwrap();
        }
        assert_eq!(
            table.as_slice(),
            [range(0, 5), range(10, 20), range(30, 40), range(50, 60)]
        );
    }

    #[test]
    fn full_table_is_reported_and_unchanged() {
        let mut slots = [PhysRange::EMPTY; 2];
        let mut table = RangeTable::new(&mut slots);
        table.insert(range(0, 10)).unwrap();
        table.insert(range(20, 30)).unwrap();
        assert_eq!(table.insert(range(40, 50)), Err(AllocError::TableFull));
        assert_eq!(table.as_slice(), [range(0, 10), range(20, 30)]);
        // A range that merges needs no new slot.
        table.insert(range(10, 20)).unwrap();
        assert_eq!(table.as_slice(), [range(0, 30)]);
    }

    #[test]
    fn intersection_of_disjoint_ranges_is_empty() {
        assert!(range(0, 10).intersect(range(20, 30)).is_empty());
        assert_eq!(range(0, 10).intersect(range(5, 30)), range(5, 10));
        assert!(!range(0, 10).overlaps(range(10, 20)));
    }
}
