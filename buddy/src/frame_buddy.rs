//! The buddy frame allocator: power-of-two blocks of frames, split on
//! allocation and merged with their buddy on free, with all bookkeeping in a
//! caller-provided [`FrameMeta`] array.
//!
//! # Invariants
//!
//! - Blocks are naturally aligned in *physical* frame numbers: a block of order
//!   `k` starts at a multiple of `2^k`, so its buddy starts at `pfn ^ 2^k`.
//! - Every frame added and not inside another block is the head of exactly one
//!   block; the other frames of a block are tagged `INSIDE`.
//! - A free block of order `k` is on list `k` (doubly linked through the
//!   metadata by window index) and bit `k` of `nonempty` is set iff list `k`
//!   is non-empty.
//! - No two free buddies of the same order below `MAX_ORDER` coexist: a free
//!   merges with its buddy whenever the buddy is free and whole.
//! - `free` is the sum of the free blocks' sizes.
//!
//! [`check_invariants`](BuddyFrameAllocator::check_invariants) verifies all of
//! them by walking every list and the whole window.

use kalloc_api::{AllocError, Frame, FrameAllocator, FrameRange, FreeError};

use crate::error::BuddyError;
use crate::meta::{FrameMeta, MAX_WINDOW_FRAMES, NIL, tag};

/// Slots for per-order list heads and counts: orders 0..=31. A fixed size keeps
/// the struct free of `MAX_ORDER + 1` const arithmetic, which stable Rust cannot
/// put in an array length.
pub(crate) const ORDER_SLOTS: usize = 32;

/// Frame numbers above this name no 64-bit physical address.
const LAST_FRAME_NUMBER: u64 = u64::MAX >> kalloc_api::FRAME_SHIFT;

const RELAXED: core::sync::atomic::Ordering = core::sync::atomic::Ordering::Relaxed;

/// A buddy allocator of frame blocks of order `0..=MAX_ORDER` (1 to
/// `2^MAX_ORDER` frames), over a window of physical frames whose metadata lives
/// in caller-provided storage.
///
/// The allocator never reads or writes the frames it manages, so the window may
/// cover physical memory that is not mapped. Memory joins the allocator with
/// [`add_range`](Self::add_range), any number of times, in any order.
///
/// `MAX_ORDER = 10` (blocks up to 4 MiB) matches Linux; `MAX_ORDER` must be
/// below 32.
///
/// ```
/// use kalloc_api::{Frame, FrameAllocator, FrameRange};
/// use kalloc_buddy::{BuddyFrameAllocator, FrameMeta};
///
/// let mut storage = [FrameMeta::EMPTY; 64];
/// let base = Frame::from_number(0x8_0000); // physical 0x8000_0000, never touched
/// let mut buddy = BuddyFrameAllocator::<10>::new(base, 64, &mut storage)?;
/// buddy.add_range(FrameRange::new(Frame::from_number(0x8_0003), 50))?;
/// assert_eq!(buddy.free_frames(), 50);
///
/// let block = buddy.allocate_order(2)?; // 4 frames, 16 KiB aligned
/// assert_eq!(block.number() % 4, 0);
/// let run = buddy.allocate(3, 1)?; // rounded to 4, the fourth frame given back
/// assert_eq!(buddy.free_frames(), 50 - 4 - 3);
///
/// buddy.deallocate_order(block, 2).unwrap();
/// buddy.deallocate(run).unwrap();
/// assert!(buddy.deallocate(run).is_err()); // double free: an error, not corruption
/// assert_eq!(buddy.free_frames(), 50);
/// buddy.check_invariants().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct BuddyFrameAllocator<'a, const MAX_ORDER: usize> {
    /// One entry per frame of the window; `len()` is the window size.
    pub(crate) meta: &'a [FrameMeta],
    /// Frame number of window index 0.
    pub(crate) base: u64,
    /// Window index of the first block on each order's free list, or `NIL`.
    pub(crate) heads: [u32; ORDER_SLOTS],
    /// Blocks on each order's free list.
    pub(crate) counts: [usize; ORDER_SLOTS],
    /// Bit `k` set iff list `k` is non-empty: the first order able to serve a
    /// request is one `trailing_zeros` away.
    pub(crate) nonempty: u32,
    /// Frames on the free lists.
    pub(crate) free: usize,
    /// Frames added.
    pub(crate) total: usize,
}

impl<'a, const MAX_ORDER: usize> BuddyFrameAllocator<'a, MAX_ORDER> {
    const VALID_MAX_ORDER: () = assert!(MAX_ORDER < ORDER_SLOTS, "MAX_ORDER must be below 32");

    /// An allocator with an empty window: every allocation fails with
    /// [`AllocError::Uninitialized`]. Useful as a `static` placeholder.
    pub const fn empty() -> Self {
        let () = Self::VALID_MAX_ORDER;
        Self {
            meta: &[],
            base: 0,
            heads: [NIL; ORDER_SLOTS],
            counts: [0; ORDER_SLOTS],
            nonempty: 0,
            free: 0,
            total: 0,
        }
    }

    /// An allocator for the window of `frames` frames starting at `base`, with
    /// no memory yet: add it with [`add_range`](Self::add_range).
    ///
    /// `storage` needs one entry per frame ([`metadata_bytes`](crate::metadata_bytes)
    /// bytes); extra entries are left unused. Initialising it takes one pass.
    ///
    /// # Errors
    /// [`BuddyError::StorageTooSmall`], or [`BuddyError::WindowTooLarge`] if the
    /// window exceeds [`MAX_WINDOW_FRAMES`] or the physical address space.
    pub fn new(
        base: Frame,
        frames: usize,
        storage: &'a mut [FrameMeta],
    ) -> Result<Self, BuddyError> {
        let () = Self::VALID_MAX_ORDER;
        if frames > MAX_WINDOW_FRAMES {
            return Err(BuddyError::WindowTooLarge);
        }
        match base.number().checked_add(frames as u64) {
            Some(end) if end <= LAST_FRAME_NUMBER + 1 => {}
            _ => return Err(BuddyError::WindowTooLarge),
        }
        let given = storage.len();
        let Some(meta) = storage.get_mut(..frames) else {
            return Err(BuddyError::StorageTooSmall {
                needed: frames,
                given,
            });
        };
        for entry in meta.iter_mut() {
            *entry = FrameMeta::new();
        }
        let meta: &'a [FrameMeta] = meta;
        Ok(Self {
            meta,
            base: base.number(),
            ..Self::empty()
        })
    }

    /// The window of frames this allocator can manage.
    pub fn window(&self) -> FrameRange {
        FrameRange::new(Frame::from_number(self.base), self.meta.len() as u64)
    }

    /// Gives the frames of `range` to the allocator. The range may be unaligned
    /// and of any length; it is cut into the largest naturally aligned blocks,
    /// which merge with free neighbours added earlier.
    ///
    /// # Errors
    /// [`BuddyError::OutsideWindow`] or [`BuddyError::AlreadyAdded`]; nothing is
    /// added then.
    pub fn add_range(&mut self, range: FrameRange) -> Result<(), BuddyError> {
        if range.is_empty() {
            return Ok(());
        }
        let window = self.window();
        if !window.covers(range) || range.end_number() == u64::MAX {
            return Err(BuddyError::OutsideWindow);
        }
        let first = (range.start().number() - self.base) as usize;
        let end = first + range.count() as usize;
        let span = &self.meta[first..end];
        if let Some(offset) = span.iter().position(|m| m.tag.load(RELAXED) != tag::ABSENT) {
            return Err(BuddyError::AlreadyAdded {
                frame: range.start().number() + offset as u64,
            });
        }
        for entry in span {
            entry.tag.store(tag::INSIDE, RELAXED);
        }
        self.total += range.count() as usize;
        let mut index = first;
        while index < end {
            let pfn = self.base + index as u64;
            let order = (pfn.trailing_zeros() as usize)
                .min(floor_log2(end - index))
                .min(MAX_ORDER);
            self.free_block(index as u32, order);
            index += 1 << order;
        }
        Ok(())
    }

    /// Allocates one block of `2^order` frames, aligned to its size.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`] when no block of that order or larger is free
    /// (or `order > MAX_ORDER`), [`AllocError::Uninitialized`] before any memory
    /// was added.
    #[inline]
    pub fn allocate_order(&mut self, order: usize) -> Result<Frame, AllocError> {
        if order > MAX_ORDER {
            return Err(AllocError::OutOfMemory);
        }
        let index = self.take_block(order, tag::ALLOC | order as u8)?;
        Ok(Frame::from_number(self.base + u64::from(index)))
    }

    /// Frees a block from [`allocate_order`](Self::allocate_order), merging it
    /// with its buddy as long as the buddy is free.
    ///
    /// # Errors
    /// [`FreeError::NotOwned`], [`FreeError::OutOfRange`], [`FreeError::DoubleFree`],
    /// [`FreeError::Misaligned`] (not the start of an allocation) or
    /// [`FreeError::SizeMismatch`] (allocated with another size); the free lists
    /// are unchanged then.
    #[inline]
    pub fn deallocate_order(&mut self, frame: Frame, order: usize) -> Result<(), FreeError> {
        let index = self.index_of(frame.number()).ok_or(FreeError::NotOwned)?;
        if order > MAX_ORDER {
            return Err(self.diagnose(index, u64::MAX));
        }
        if self.meta[index as usize].tag.load(RELAXED) != tag::ALLOC | order as u8 {
            return Err(self.diagnose(index, 1 << order));
        }
        self.free_block(index, order);
        Ok(())
    }

    /// Free blocks on each order's list, orders `0..=MAX_ORDER`
    /// (the numbers `/proc/buddyinfo` shows).
    pub fn free_blocks_per_order(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.counts[..=MAX_ORDER].iter().copied()
    }

    /// Free frames in blocks of each order, orders `0..=MAX_ORDER`; they sum to
    /// [`free_frames`](FrameAllocator::free_frames).
    pub fn free_frames_per_order(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.free_blocks_per_order()
            .enumerate()
            .map(|(order, blocks)| blocks << order)
    }

    /// The order of the largest free block, if any frame is free.
    pub fn largest_free_order(&self) -> Option<usize> {
        self.nonempty.checked_ilog2().map(|order| order as usize)
    }

    /// Window index of frame number `pfn`, if the window holds it.
    #[inline]
    pub(crate) fn index_of(&self, pfn: u64) -> Option<u32> {
        let index = pfn.wrapping_sub(self.base);
        (index < self.meta.len() as u64).then_some(index as u32)
    }

    /// Takes a block of exactly `order` off the lists (splitting a larger one if
    /// needed) and tags its head `head_tag`.
    #[inline]
    pub(crate) fn take_block(&mut self, order: usize, head_tag: u8) -> Result<u32, AllocError> {
        let usable = self.nonempty & (u32::MAX << order);
        if usable == 0 {
            return Err(self.exhausted());
        }
        let found = usable.trailing_zeros() as usize;
        let index = self.pop(found);
        if found != order {
            self.split(index, found, order);
        }
        self.meta[index as usize].tag.store(head_tag, RELAXED);
        self.free -= 1 << order;
        Ok(index)
    }

    #[cold]
    fn exhausted(&self) -> AllocError {
        if self.total == 0 {
            AllocError::Uninitialized
        } else {
            AllocError::OutOfMemory
        }
    }

    /// Keeps the lower `2^to` frames of the block at `index` and puts the upper
    /// halves back on their lists.
    fn split(&mut self, index: u32, from: usize, to: usize) {
        for order in (to..from).rev() {
            self.push(index + (1 << order), order);
        }
    }

    /// Returns the block at `index` of `order` (whose head tag the caller has
    /// validated) and merges it upwards.
    #[inline]
    pub(crate) fn free_block(&mut self, mut index: u32, mut order: usize) {
        self.free += 1 << order;
        while order < MAX_ORDER {
            let pfn = self.base + u64::from(index);
            let Some(buddy) = self.index_of(pfn ^ (1 << order)) else {
                break;
            };
            if self.meta[buddy as usize].tag.load(RELAXED) != tag::free(order) {
                break;
            }
            self.unlink(buddy, order);
            let (lower, upper) = if buddy < index {
                (buddy, index)
            } else {
                (index, buddy)
            };
            self.meta[upper as usize].tag.store(tag::INSIDE, RELAXED);
            index = lower;
            order += 1;
        }
        self.push(index, order);
    }

    /// Takes back an order-0 block that a per-CPU cache held (tagged `CACHED`).
    #[inline]
    pub(crate) fn release_cached(&mut self, index: u32) {
        debug_assert_eq!(self.meta[index as usize].tag.load(RELAXED), tag::CACHED);
        self.free_block(index, 0);
    }

    /// Puts the block at `index` on the front of list `order` and tags it free.
    #[inline]
    fn push(&mut self, index: u32, order: usize) {
        let head = self.heads[order];
        let entry = &self.meta[index as usize];
        entry.next.store(head, RELAXED);
        entry.prev.store(NIL, RELAXED);
        entry.tag.store(tag::free(order), RELAXED);
        if head != NIL {
            self.meta[head as usize].prev.store(index, RELAXED);
        }
        self.heads[order] = index;
        self.counts[order] += 1;
        self.nonempty |= 1 << order;
    }

    /// Takes the first block off list `order`, which must be non-empty. The
    /// block keeps its free tag until the caller retags it.
    #[inline]
    fn pop(&mut self, order: usize) -> u32 {
        let index = self.heads[order];
        let next = self.meta[index as usize].next.load(RELAXED);
        self.heads[order] = next;
        if next == NIL {
            self.nonempty &= !(1 << order);
        } else {
            self.meta[next as usize].prev.store(NIL, RELAXED);
        }
        self.counts[order] -= 1;
        index
    }

    /// Takes the block at `index` out of the middle of list `order`.
    #[inline]
    fn unlink(&mut self, index: u32, order: usize) {
        let entry = &self.meta[index as usize];
        let next = entry.next.load(RELAXED);
        let prev = entry.prev.load(RELAXED);
        if prev == NIL {
            self.heads[order] = next;
            if next == NIL {
                self.nonempty &= !(1 << order);
            }
        } else {
            self.meta[prev as usize].next.store(next, RELAXED);
        }
        if next != NIL {
            self.meta[next as usize].prev.store(prev, RELAXED);
        }
        self.counts[order] -= 1;
    }

    /// Allocates `count` frames aligned to `2^align_order` frames: a block of
    /// the covering order, cut into the allocation's pieces and a tail given back.
    #[cold]
    fn allocate_run(&mut self, count: u64, align_order: usize) -> Result<u32, AllocError> {
        let order = (ceil_log2(count) as usize).max(align_order);
        if order > MAX_ORDER {
            return Err(AllocError::OutOfMemory);
        }
        let index = self.take_block(order, tag::ALLOC | order as u8)?;
        if count < 1 << order {
            self.carve(index, count, order);
        }
        Ok(index)
    }

    /// Retags the block at `index` of `order` as the pieces of a `count`-frame
    /// allocation and frees the rest.
    fn carve(&mut self, index: u32, count: u64, order: usize) {
        for (offset, _, head) in Pieces::new(count) {
            self.meta[index as usize + offset as usize]
                .tag
                .store(head, RELAXED);
        }
        // Each tail piece is the upper buddy of allocated frames, so none can merge.
        let mut offset = count;
        while offset < 1 << order {
            let piece_order = offset.trailing_zeros() as usize;
            self.free += 1 << piece_order;
            self.push(index + offset as u32, piece_order);
            offset += 1 << piece_order;
        }
    }

    /// Checks that `count` frames from `index` are exactly one allocation, then
    /// frees its pieces.
    fn deallocate_run(&mut self, index: u32, count: u64) -> Result<(), FreeError> {
        if !self.is_exact_allocation(index, count) {
            return Err(self.diagnose(index, count));
        }
        for (offset, order, _) in Pieces::new(count) {
            self.free_block(index + offset as u32, order);
        }
        Ok(())
    }
}

impl<const MAX_ORDER: usize> FrameAllocator for BuddyFrameAllocator<'_, MAX_ORDER> {
    /// Allocates `count` frames aligned to `frame_align` frames. Single frames
    /// take the order-0 fast path; other counts take a block of the covering
    /// order and give the unused tail back at once.
    #[inline]
    fn allocate(&mut self, count: usize, frame_align: usize) -> Result<FrameRange, AllocError> {
        let index = if count == 1 && frame_align == 1 {
            self.take_block(0, tag::ALLOC)?
        } else {
            if count == 0 {
                return Err(AllocError::ZeroSize);
            }
            if !frame_align.is_power_of_two() {
                return Err(AllocError::BadAlignment);
            }
            let align_order = frame_align.trailing_zeros() as usize;
            if align_order > MAX_ORDER {
                return Err(AllocError::BadAlignment);
            }
            self.allocate_run(count as u64, align_order)?
        };
        Ok(FrameRange::new(
            Frame::from_number(self.base + u64::from(index)),
            count as u64,
        ))
    }

    /// Frees a run from [`allocate`](FrameAllocator::allocate) (or a block from
    /// [`allocate_order`](BuddyFrameAllocator::allocate_order)); the count must
    /// be the one allocated.
    #[inline]
    fn deallocate(&mut self, range: FrameRange) -> Result<(), FreeError> {
        let index = self
            .index_of(range.start().number())
            .ok_or(FreeError::NotOwned)?;
        let count = range.count();
        if count == 1 {
            if self.meta[index as usize].tag.load(RELAXED) != tag::ALLOC {
                return Err(self.diagnose(index, 1));
            }
            self.free_block(index, 0);
            return Ok(());
        }
        if count == 0 || count > 1 << MAX_ORDER || u64::from(index) + count > self.meta.len() as u64
        {
            return Err(self.diagnose(index, count));
        }
        self.deallocate_run(index, count)
    }

    #[inline]
    fn free_frames(&self) -> usize {
        self.free
    }

    #[inline]
    fn total_frames(&self) -> usize {
        self.total
    }
}

/// The pieces of an allocation of `count` frames starting at a block boundary,
/// largest first, one per set bit of `count`, with the head tag each carries. The
/// allocator and `deallocate` both cut allocations this way, so the pieces of a
/// run can be recomputed from its start and length.
pub(crate) struct Pieces {
    offset: u64,
    remaining: u64,
}

impl Pieces {
    pub(crate) fn new(count: u64) -> Self {
        Self {
            offset: 0,
            remaining: count,
        }
    }
}

impl Iterator for Pieces {
    /// `(offset, order, head tag)` of the next piece.
    type Item = (u64, usize, u8);

    fn next(&mut self) -> Option<(u64, usize, u8)> {
        if self.remaining == 0 {
            return None;
        }
        let order = self.remaining.ilog2() as usize;
        let offset = self.offset;
        self.offset += 1 << order;
        self.remaining -= 1 << order;
        let mut head = tag::ALLOC | order as u8;
        if offset != 0 {
            head |= tag::CONT;
        }
        if self.remaining != 0 {
            head |= tag::MORE;
        }
        Some((offset, order, head))
    }
}

/// `floor(log2(n))` for `n > 0`.
#[inline]
fn floor_log2(n: usize) -> usize {
    n.ilog2() as usize
}

/// `ceil(log2(n))` for `n > 0`.
#[inline]
fn ceil_log2(n: u64) -> u32 {
    if n <= 1 { 0 } else { (n - 1).ilog2() + 1 }
}

#[cfg(test)]
pub(crate) mod tests;
