//! [`BootMemory`]: allocation from the firmware memory map before any frame
//! allocator exists, in the manner of Linux's memblock.
//!
//! Two tables, both sorted lists of disjoint byte ranges in caller storage:
//!
//! - **usable**: the RAM the memory map calls usable, fixed at construction;
//! - **reserved**: everything taken since, by [`reserve`](BootMemory::reserve)
//!   or by an allocation. Overlapping and touching entries merge, so the table
//!   grows with the number of separate islands, not the number of calls.
//!
//! Free memory is never stored: it is the usable table minus the reserved one,
//! walked on demand ([`FreeGaps`]). That keeps the hand-over exact by
//! construction: every usable byte is either in a reserved entry or in a gap.

use core::fmt;

use kalloc_api::{
    AllocError, FRAME_SIZE, Frame, FrameRange, MemoryMap, PhysAddr, align_down, align_up,
    is_power_of_two,
};

use crate::range::{PhysRange, RangeTable};

/// Where [`BootMemory`] places an allocation inside the allowed window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Placement {
    /// The highest address that fits (Linux's default): low memory stays free
    /// for devices that can only reach it.
    #[default]
    TopDown,
    /// The lowest address that fits.
    BottomUp,
}

/// Why [`BootMemory::new`] refused a memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetupError {
    /// The map was changed after its last [`MemoryMap::normalize`]; its usable
    /// regions may still overlap reserved ones.
    MapNotNormalized,
    /// The usable-region storage has fewer slots than the map has usable regions.
    UsableTableFull {
        /// How many slots the map needs.
        regions: usize,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MapNotNormalized => f.write_str("memory map is not normalised"),
            Self::UsableTableFull { regions } => {
                write!(f, "usable-region storage too small: {regions} slots needed")
            }
        }
    }
}

impl core::error::Error for SetupError {}

/// Bytes one table slot takes: the size of a [`PhysRange`].
pub const TABLE_SLOT_BYTES: usize = core::mem::size_of::<PhysRange>();

/// The boot-time allocator: hands out physical memory from the usable part of a
/// memory map, and records every reservation so the frame allocator that takes
/// over later knows exactly what is still free.
///
/// It never frees: boot allocations live for the life of the kernel, or are
/// handed to the frame allocator as reserved frames. Its state lives in two
/// slices the caller lends (see [`new`](Self::new)); nothing is allocated.
///
/// ```
/// use kalloc_api::{AllocError, MemoryMap, PhysAddr, Region, RegionKind};
/// use kalloc_bump::{BootMemory, PhysRange};
///
/// let mut map_storage = [Region::EMPTY; 4];
/// let map = MemoryMap::from_regions(
///     &mut map_storage,
///     [Region::new(PhysAddr::new(0x10_0000), 0x10_0000, RegionKind::Usable)],
/// )?;
/// let mut usable = [PhysRange::EMPTY; 4];
/// let mut reserved = [PhysRange::EMPTY; 8];
/// let mut boot = BootMemory::new(&map, &mut usable, &mut reserved)?;
///
/// // Top-down by default: the highest 4 KiB-aligned page.
/// let page = boot.allocate(0x1000, 0x1000)?;
/// assert_eq!(page, PhysAddr::new(0x1f_f000));
/// assert_eq!(boot.allocate(0x20_0000, 8), Err(AllocError::OutOfMemory));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BootMemory<'a> {
    usable: RangeTable<'a>,
    reserved: RangeTable<'a>,
    limit: Option<u64>,
    placement: Placement,
}

impl<'a> BootMemory<'a> {
    /// Takes the usable regions of `map` (which must be normalised), keeping
    /// them in `usable_storage` (one slot per usable region) and future
    /// reservations in `reserved_storage` (one slot per separate island of
    /// reserved memory; touching reservations share one). Each slot is
    /// [`TABLE_SLOT_BYTES`] bytes.
    ///
    /// # Errors
    /// [`SetupError::MapNotNormalized`] if `map` changed since it was last
    /// normalised; [`SetupError::UsableTableFull`] if `usable_storage` is too short.
    pub fn new(
        map: &MemoryMap<'_>,
        usable_storage: &'a mut [PhysRange],
        reserved_storage: &'a mut [PhysRange],
    ) -> Result<Self, SetupError> {
        if !map.is_normalized() {
            return Err(SetupError::MapNotNormalized);
        }
        let regions = map.usable_frame_ranges().count();
        if regions > usable_storage.len() {
            return Err(SetupError::UsableTableFull { regions });
        }
        let mut usable = RangeTable::new(usable_storage);
        for frames in map.usable_frame_ranges() {
            let range = PhysRange::raw(
                frames.start_address().as_u64(),
                frames.end_address().as_u64(),
            );
            // Counted above: every region has a slot, merged or not.
            usable
                .insert(range)
                .map_err(|_| SetupError::UsableTableFull { regions })?;
        }
        Ok(Self {
            usable,
            reserved: RangeTable::new(reserved_storage),
            limit: None,
            placement: Placement::TopDown,
        })
    }

    /// Limits later allocations to end at or below `limit` (`None`: anywhere).
    /// Reservations are not limited.
    #[inline]
    pub fn set_limit(&mut self, limit: Option<PhysAddr>) {
        self.limit = limit.map(PhysAddr::as_u64);
    }

    /// The current allocation limit.
    #[inline]
    pub fn limit(&self) -> Option<PhysAddr> {
        self.limit.map(PhysAddr::new)
    }

    /// Builder form of [`set_limit`](Self::set_limit): allocations end at or
    /// below `limit`, e.g. `PhysAddr::new(1 << 32)` for 32-bit DMA.
    #[must_use]
    pub fn below(mut self, limit: PhysAddr) -> Self {
        self.set_limit(Some(limit));
        self
    }

    /// Chooses top-down or bottom-up placement for later allocations.
    #[inline]
    pub fn set_placement(&mut self, placement: Placement) {
        self.placement = placement;
    }

    /// The current placement.
    #[inline]
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// Builder form: place allocations at the highest address that fits.
    #[must_use]
    pub fn top_down(mut self) -> Self {
        self.placement = Placement::TopDown;
        self
    }

    /// Builder form: place allocations at the lowest address that fits.
    #[must_use]
    pub fn bottom_up(mut self) -> Self {
        self.placement = Placement::BottomUp;
        self
    }

    /// Marks `[start, start + len)` as taken: the kernel image, an initrd,
    /// firmware tables, the boot stack. The range may lie partly or wholly
    /// outside usable memory, and may overlap earlier reservations; it is
    /// merged with any reservation it overlaps or touches.
    ///
    /// # Errors
    /// [`AllocError::ZeroSize`] for `len == 0`, [`AllocError::Overflow`] when
    /// the range ends past `u64::MAX`, [`AllocError::TableFull`] when it
    /// touches no existing reservation and the table is full. On error nothing
    /// is reserved.
    pub fn reserve(&mut self, start: PhysAddr, len: u64) -> Result<(), AllocError> {
        if len == 0 {
            return Err(AllocError::ZeroSize);
        }
        let range = PhysRange::new(start, len).ok_or(AllocError::Overflow)?;
        self.reserved.insert(range)
    }

    /// Allocates `size` bytes aligned to `align` from free usable memory below
    /// the [limit](Self::set_limit), placed as [`placement`](Self::placement)
    /// says, and records them as reserved.
    ///
    /// # Errors
    /// [`AllocError::ZeroSize`], [`AllocError::BadAlignment`] (zero or not a
    /// power of two), [`AllocError::OutOfMemory`] when no free run fits,
    /// [`AllocError::TableFull`] when recording it needs a slot the reserved
    /// table does not have. On error nothing is allocated.
    pub fn allocate(&mut self, size: u64, align: u64) -> Result<PhysAddr, AllocError> {
        let window = PhysRange::raw(0, self.limit.unwrap_or(u64::MAX));
        self.allocate_within(size, align, window)
    }

    /// As [`allocate`](Self::allocate), but the allocation must lie inside
    /// `window` (and the limit is ignored): `memblock_alloc_range`'s role.
    ///
    /// # Errors
    /// As [`allocate`](Self::allocate).
    pub fn allocate_within(
        &mut self,
        size: u64,
        align: u64,
        window: PhysRange,
    ) -> Result<PhysAddr, AllocError> {
        if size == 0 {
            return Err(AllocError::ZeroSize);
        }
        if !is_power_of_two(align) {
            return Err(AllocError::BadAlignment);
        }
        let start = self
            .find_fit(size, align, window)
            .ok_or(AllocError::OutOfMemory)?;
        // `find_fit` only returns starts with `start + size` inside a gap.
        self.reserved.insert(PhysRange::raw(start, start + size))?;
        Ok(PhysAddr::new(start))
    }

    /// Allocates `count` whole frames starting on a multiple of `frame_align`
    /// frames (a power of two; 512 for a 2 MiB huge page).
    ///
    /// # Errors
    /// [`AllocError::Overflow`] when `count` or `frame_align` frames do not
    /// fit in a `u64` of bytes; otherwise as [`allocate`](Self::allocate).
    pub fn allocate_frames(
        &mut self,
        count: usize,
        frame_align: usize,
    ) -> Result<FrameRange, AllocError> {
        if count == 0 {
            return Err(AllocError::ZeroSize);
        }
        if !frame_align.is_power_of_two() {
            return Err(AllocError::BadAlignment);
        }
        let size = (count as u64)
            .checked_mul(FRAME_SIZE)
            .ok_or(AllocError::Overflow)?;
        let align = (frame_align as u64)
            .checked_mul(FRAME_SIZE)
            .ok_or(AllocError::Overflow)?;
        let start = self.allocate(size, align)?;
        Ok(FrameRange::new(Frame::containing(start), count as u64))
    }

    /// The usable memory, in address order.
    pub fn usable_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
        self.usable.as_slice().iter().copied()
    }

    /// Every reservation (including allocations), merged and in address
    /// order, byte-granular, including parts outside usable memory.
    pub fn reserved_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
        self.reserved.as_slice().iter().copied()
    }

    /// The free memory as byte ranges: usable memory minus reservations.
    pub fn free_gaps(&self) -> FreeGaps<'_> {
        FreeGaps::new(self.usable.as_slice(), self.reserved.as_slice())
    }

    /// The hand-over: the whole frames still free, in address order, to give
    /// to the frame allocator as free. A frame that holds even one reserved
    /// byte is left out (it is in [`reserved_frames`](Self::reserved_frames)).
    pub fn free_ranges(&self) -> impl Iterator<Item = FrameRange> + '_ {
        self.free_gaps().filter_map(|gap| {
            // Gaps lie inside usable ranges, which never reach past u64::MAX.
            FrameRange::inside(gap.start(), gap.len())
                .ok()
                .filter(|frames| !frames.is_empty())
        })
    }

    /// The other half of the hand-over: the usable frames that hold at least
    /// one reserved byte, merged and in address order, for the frame allocator
    /// to mark used. With [`free_ranges`](Self::free_ranges) they cover every
    /// usable frame exactly once.
    pub fn reserved_frames(&self) -> ReservedFrames<'_> {
        ReservedFrames {
            usable: self.usable.as_slice(),
            reserved: self.reserved.as_slice(),
            pending: None,
        }
    }

    /// Total usable bytes.
    pub fn usable_bytes(&self) -> u64 {
        self.usable_ranges().map(PhysRange::len).sum()
    }

    /// Bytes in [`free_ranges`](Self::free_ranges).
    pub fn free_bytes(&self) -> u64 {
        self.free_ranges().map(FrameRange::size_bytes).sum()
    }

    /// How many reservation slots are in use, and how many there are.
    pub fn reserved_slots(&self) -> (usize, usize) {
        (self.reserved.as_slice().len(), self.reserved.capacity())
    }

    /// The start of the allocation `placement` prefers, or `None` when no gap
    /// inside `window` holds `size` bytes at `align`.
    fn find_fit(&self, size: u64, align: u64, window: PhysRange) -> Option<u64> {
        let mut best = None;
        for gap in self.free_gaps() {
            if gap.lo() >= window.hi() {
                break;
            }
            let gap = gap.intersect(window);
            if gap.len() < size {
                continue;
            }
            match self.placement {
                Placement::BottomUp => {
                    let start = align_up(gap.lo(), align)?;
                    if start <= gap.hi() - size {
                        return Some(start);
                    }
                }
                Placement::TopDown => {
                    // `align` is a power of two, checked by the caller.
                    let start = align_down(gap.hi() - size, align)?;
                    if start >= gap.lo() {
                        best = Some(start);
                    }
                }
            }
        }
        best
    }
}

impl fmt::Debug for BootMemory<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootMemory")
            .field("usable", &self.usable.as_slice())
            .field("reserved", &self.reserved.as_slice())
            .field("limit", &self.limit())
            .field("placement", &self.placement)
            .finish()
    }
}

/// The free byte ranges of a [`BootMemory`]: usable ranges minus reservations,
/// in address order. Made by [`BootMemory::free_gaps`].
#[derive(Clone, Debug)]
pub struct FreeGaps<'t> {
    usable: &'t [PhysRange],
    reserved: &'t [PhysRange],
    /// No gap starts below this address.
    cursor: u64,
}

impl<'t> FreeGaps<'t> {
    fn new(usable: &'t [PhysRange], reserved: &'t [PhysRange]) -> Self {
        Self {
            usable,
            reserved,
            cursor: 0,
        }
    }
}

impl Iterator for FreeGaps<'_> {
    type Item = PhysRange;

    fn next(&mut self) -> Option<PhysRange> {
        while let Some((&region, rest)) = self.usable.split_first() {
            let start = self.cursor.max(region.lo());
            if start >= region.hi() {
                self.usable = rest;
                continue;
            }
            // Reservations wholly below `start` can never matter again.
            while let Some((&taken, later)) = self.reserved.split_first() {
                if taken.hi() > start {
                    break;
                }
                self.reserved = later;
            }
            match self.reserved.first() {
                Some(&taken) if taken.lo() < region.hi() => {
                    self.cursor = taken.hi();
                    if taken.lo() > start {
                        return Some(PhysRange::raw(start, taken.lo()));
                    }
                }
                _ => {
                    self.usable = rest;
                    return Some(PhysRange::raw(start, region.hi()));
                }
            }
        }
        None
    }
}

/// The usable frames holding at least one reserved byte, merged, in address
/// order. Made by [`BootMemory::reserved_frames`].
#[derive(Clone, Debug)]
pub struct ReservedFrames<'t> {
    usable: &'t [PhysRange],
    reserved: &'t [PhysRange],
    /// Frame numbers `start..end` found but not yet returned, in case the
    /// next piece shares or touches its last frame.
    pending: Option<(u64, u64)>,
}

impl ReservedFrames<'_> {
    /// The next piece of reserved usable memory, widened to whole frames (but
    /// not past its usable range, whose ends are frame-aligned).
    fn next_piece(&mut self) -> Option<(u64, u64)> {
        loop {
            let (&region, &taken) = (self.usable.first()?, self.reserved.first()?);
            let common = region.intersect(taken);
            if region.hi() <= taken.hi() {
                self.usable = &self.usable[1..];
            } else {
                self.reserved = &self.reserved[1..];
            }
            if !common.is_empty() {
                let first = common.lo() / FRAME_SIZE;
                let past_last = common.hi().div_ceil(FRAME_SIZE);
                return Some((first, past_last));
            }
        }
    }
}

impl Iterator for ReservedFrames<'_> {
    type Item = FrameRange;

    fn next(&mut self) -> Option<FrameRange> {
        let frames = |(first, past_last): (u64, u64)| {
            FrameRange::new(Frame::from_number(first), past_last - first)
        };
        loop {
            match (self.pending, self.next_piece()) {
                (None, None) => return None,
                (Some(run), None) => {
                    self.pending = None;
                    return Some(frames(run));
                }
                (None, Some(piece)) => self.pending = Some(piece),
                (Some((first, end)), Some((next_first, next_end))) => {
                    if next_first <= end {
                        self.pending = Some((first, end.max(next_end)));
                    } else {
                        self.pending = Some((next_first, next_end));
                        return Some(frames((first, end)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
