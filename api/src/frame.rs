//! 4 KiB physical frames and contiguous runs of them.

use core::fmt;

use crate::addr::PhysAddr;
use crate::error::AddrError;

/// Bytes in a base page (4 KiB), the unit every frame allocator counts in.
pub const SIZE_4KIB: u64 = 4 << 10;
/// Bytes in a 2 MiB huge page (512 frames).
pub const SIZE_2MIB: u64 = 2 << 20;
/// Bytes in a 1 GiB huge page (262,144 frames).
pub const SIZE_1GIB: u64 = 1 << 30;
/// Bytes in one frame.
pub const FRAME_SIZE: u64 = SIZE_4KIB;
/// `log2(FRAME_SIZE)`: shift between a frame number and its address.
pub const FRAME_SHIFT: u32 = 12;

/// A 4 KiB physical frame, named by its frame number (address / 4 KiB).
///
/// ```
/// use kalloc_api::{Frame, PhysAddr};
///
/// let frame = Frame::from_start(PhysAddr::new(0x3000))?;
/// assert_eq!(frame.number(), 3);
/// assert_eq!(Frame::containing(PhysAddr::new(0x3fff)), frame);
/// assert!(Frame::from_start(PhysAddr::new(0x3001)).is_err());
/// # Ok::<(), kalloc_api::AddrError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Frame(u64);

impl Frame {
    /// The frame with number `number` (whose address is `number * 4 KiB`).
    ///
    /// Frame numbers above `u64::MAX >> 12` name no address; constructors that
    /// take addresses never produce them.
    #[inline]
    pub const fn from_number(number: u64) -> Self {
        Self(number)
    }

    /// The frame starting at `addr`.
    ///
    /// # Errors
    /// [`AddrError::Misaligned`] if `addr` is not a multiple of 4 KiB.
    #[inline]
    pub const fn from_start(addr: PhysAddr) -> Result<Self, AddrError> {
        if addr.as_u64() % FRAME_SIZE != 0 {
            return Err(AddrError::Misaligned);
        }
        Ok(Self(addr.as_u64() >> FRAME_SHIFT))
    }

    /// The frame that contains `addr`.
    #[inline]
    pub const fn containing(addr: PhysAddr) -> Self {
        Self(addr.as_u64() >> FRAME_SHIFT)
    }

    /// The frame number.
    #[inline]
    pub const fn number(self) -> u64 {
        self.0
    }

    /// The frame's first byte.
    #[inline]
    pub const fn start_address(self) -> PhysAddr {
        PhysAddr::new(self.0 << FRAME_SHIFT)
    }

    /// The frame `count` frames later, or `None` on overflow.
    #[inline]
    pub const fn checked_add(self, count: u64) -> Option<Self> {
        match self.0.checked_add(count) {
            Some(number) => Some(Self(number)),
            None => None,
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({:#x})", self.start_address().as_u64())
    }
}

/// A run of `count` contiguous frames starting at `start`.
///
/// The run is half-open: it covers frame numbers `start.number()` up to but not
/// including `start.number() + count`. A range may be empty (`count == 0`).
///
/// ```
/// use kalloc_api::{Frame, FrameRange, PhysAddr};
///
/// let range = FrameRange::new(Frame::from_number(16), 4);
/// assert_eq!(range.start_address(), PhysAddr::new(0x10000));
/// assert_eq!(range.end_address(), PhysAddr::new(0x14000));
/// assert!(range.contains(Frame::from_number(19)));
/// assert!(!range.contains(Frame::from_number(20)));
/// assert_eq!(range.iter().count(), 4);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameRange {
    start: Frame,
    count: u64,
}

impl FrameRange {
    /// The run of `count` frames from `start`.
    #[inline]
    pub const fn new(start: Frame, count: u64) -> Self {
        Self { start, count }
    }

    /// The frames wholly inside `[start, start + len)`: `start` rounded up and the
    /// end rounded down to frame boundaries. Empty when no whole frame fits.
    ///
    /// # Errors
    /// [`AddrError::Overflow`] if `start + len` does not fit in a `u64`.
    pub const fn inside(start: PhysAddr, len: u64) -> Result<Self, AddrError> {
        let Some(end) = start.as_u64().checked_add(len) else {
            return Err(AddrError::Overflow);
        };
        let first = match crate::addr::align_up(start.as_u64(), FRAME_SIZE) {
            Some(first) => first >> FRAME_SHIFT,
            // Only addresses in the last partial frame overflow: no whole frame there.
            None => return Ok(Self::new(Frame(u64::MAX >> FRAME_SHIFT), 0)),
        };
        let last = end >> FRAME_SHIFT;
        let count = last.saturating_sub(first);
        Ok(Self::new(Frame(first), count))
    }

    /// The first frame.
    #[inline]
    pub const fn start(self) -> Frame {
        self.start
    }

    /// Number of frames.
    #[inline]
    pub const fn count(self) -> u64 {
        self.count
    }

    /// Whether the run has no frames.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.count == 0
    }

    /// The frame number one past the last frame (saturating at `u64::MAX`).
    #[inline]
    pub const fn end_number(self) -> u64 {
        self.start.0.saturating_add(self.count)
    }

    /// The first byte.
    #[inline]
    pub const fn start_address(self) -> PhysAddr {
        self.start.start_address()
    }

    /// One past the last byte (saturating at `u64::MAX`).
    #[inline]
    pub const fn end_address(self) -> PhysAddr {
        PhysAddr::new(self.end_number().saturating_mul(FRAME_SIZE))
    }

    /// Size in bytes (saturating at `u64::MAX`).
    #[inline]
    pub const fn size_bytes(self) -> u64 {
        self.count.saturating_mul(FRAME_SIZE)
    }

    /// Whether `frame` lies in the run.
    #[inline]
    pub const fn contains(self, frame: Frame) -> bool {
        frame.0 >= self.start.0 && frame.0 < self.end_number()
    }

    /// Whether the two runs share at least one frame.
    #[inline]
    pub const fn overlaps(self, other: Self) -> bool {
        !self.is_empty()
            && !other.is_empty()
            && self.start.0 < other.end_number()
            && other.start.0 < self.end_number()
    }

    /// Whether every frame of `other` lies in `self`.
    #[inline]
    pub const fn covers(self, other: Self) -> bool {
        other.start.0 >= self.start.0 && other.end_number() <= self.end_number()
    }

    /// The frames of the run, in order.
    pub fn iter(self) -> impl DoubleEndedIterator<Item = Frame> + Clone {
        (self.start.0..self.end_number()).map(Frame)
    }
}

impl fmt::Debug for FrameRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FrameRange({:#x}..{:#x}, {} frames)",
            self.start_address().as_u64(),
            self.end_address().as_u64(),
            self.count
        )
    }
}

impl IntoIterator for FrameRange {
    type Item = Frame;
    type IntoIter = core::iter::Map<core::ops::Range<u64>, fn(u64) -> Frame>;

    fn into_iter(self) -> Self::IntoIter {
        (self.start.0..self.end_number()).map(Frame::from_number as fn(u64) -> Frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_from_start_rejects_unaligned_addresses() {
        assert_eq!(
            Frame::from_start(PhysAddr::new(0x1001)),
            Err(AddrError::Misaligned)
        );
        assert_eq!(
            Frame::from_start(PhysAddr::new(0x2000)),
            Ok(Frame::from_number(2))
        );
    }

    #[test]
    fn inside_trims_to_whole_frames() {
        let range = FrameRange::inside(PhysAddr::new(0x1001), 0x3000).unwrap();
        assert_eq!(range, FrameRange::new(Frame::from_number(2), 2));
        let none = FrameRange::inside(PhysAddr::new(0x1001), 0x100).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn inside_reports_overflow_and_handles_the_top_frame() {
        assert_eq!(
            FrameRange::inside(PhysAddr::new(u64::MAX), 2),
            Err(AddrError::Overflow)
        );
        let top = FrameRange::inside(PhysAddr::new(u64::MAX - 10), 5).unwrap();
        assert!(top.is_empty());
    }

    #[test]
    fn overlap_and_cover_are_half_open() {
        let a = FrameRange::new(Frame::from_number(0), 4);
        let b = FrameRange::new(Frame::from_number(4), 4);
        let c = FrameRange::new(Frame::from_number(3), 2);
        assert!(!a.overlaps(b));
        assert!(a.overlaps(c) && b.overlaps(c));
        assert!(a.covers(FrameRange::new(Frame::from_number(1), 3)));
        assert!(!a.covers(c));
        assert!(!a.overlaps(FrameRange::new(Frame::from_number(1), 0)));
    }

    #[test]
    fn iteration_visits_every_frame_once() {
        let range = FrameRange::new(Frame::from_number(7), 3);
        let numbers: [u64; 3] = {
            let mut it = range.into_iter().map(Frame::number);
            [it.next().unwrap(), it.next().unwrap(), it.next().unwrap()]
        };
        assert_eq!(numbers, [7, 8, 9]);
        assert_eq!(range.iter().next_back(), Some(Frame::from_number(9)));
    }
}
