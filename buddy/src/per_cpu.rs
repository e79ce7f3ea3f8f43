//! `PerCpuBuddy`: a shared front over a locked [`BuddyFrameAllocator`] with a
//! per-CPU cache of single frames (Linux's per-CPU page lists).
//!
//! # Protocol
//!
//! - Single-frame allocations pop from the current CPU's cache; an empty cache
//!   is refilled with [`PCP_BATCH_FRAMES`] frames under the allocator's lock.
//! - Single-frame frees push onto the current CPU's cache; a full cache first
//!   drains its oldest [`PCP_BATCH_FRAMES`] frames to the allocator.
//! - Everything else goes straight to the locked allocator.
//! - Lock order: a CPU cache, then the allocator; never two caches at once.
//!
//! # Why each cache has a lock
//!
//! Each cache sits behind its own spin lock, which its CPU takes on every call.
//! With a trusted CPU id and preemption disabled the lock is never contended
//! (one atomic swap to take it, a store to release it), and it keeps the front
//! sound when the id is wrong, a thread migrates mid-call, or another CPU drains
//! the cache under memory pressure. A lock-free variant would need the kernel to
//! guarantee all three never happen; this front only needs it for speed.
//!
//! # Double frees across CPUs
//!
//! A frame freed into a cache stays allocated in the allocator's eyes, so the
//! cache cannot ask the allocator whether the frame was live without its lock.
//! Instead the free claims the frame with one compare-and-swap on its metadata
//! tag, from "allocated order-0 block" to "cached". A second free of the same
//! frame, on any CPU, finds the tag already "cached" and fails with
//! [`FreeError::DoubleFree`]; a frame can never sit in two caches.

use kalloc_api::sync::{Mutex, MutexGuard, Ordering};
use kalloc_api::{AllocError, CpuId, Frame, FrameAllocator, FrameRange, FreeError, Locked};

use crate::frame_buddy::BuddyFrameAllocator;
use crate::meta::{FrameMeta, tag};

/// Frames one CPU cache can hold (Linux's `pcp->high`).
pub const PCP_HIGH_FRAMES: usize = 64;

/// Frames moved between a CPU cache and the allocator per refill or drain
/// (Linux's `pcp->batch`): one lock round trip amortised over this many calls.
pub const PCP_BATCH_FRAMES: usize = 16;

/// A stack of window indices of cached frames; the top is the most recently freed.
struct FrameStack {
    len: usize,
    slots: [u32; PCP_HIGH_FRAMES],
}

impl FrameStack {
    const EMPTY: Self = Self {
        len: 0,
        slots: [0; PCP_HIGH_FRAMES],
    };

    #[inline]
    fn pop(&mut self) -> Option<u32> {
        self.len = self.len.checked_sub(1)?;
        Some(self.slots[self.len])
    }
}

/// One CPU's cache, on its own cache line so CPUs do not false-share.
#[repr(align(64))]
struct CpuCache {
    frames: Mutex<FrameStack>,
}

impl CpuCache {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self {
            frames: Mutex::new(FrameStack::EMPTY),
        }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Self {
            frames: Mutex::new(FrameStack::EMPTY),
        }
    }
}

/// A [`BuddyFrameAllocator`] shared by `CPUS` CPUs through `&self`, with a
/// per-CPU cache of single frames in front of its lock.
///
/// `C` tells the front which CPU runs the caller ([`CpuId`]; a plain
/// `fn() -> usize` works). An id at or above `CPUS` is folded onto the caches
/// modulo `CPUS`: correct, but the caches are then shared.
///
/// `&PerCpuBuddy` implements [`FrameAllocator`], so it can be handed to
/// [`OffsetPages`](kalloc_api::OffsetPages) as a page source.
///
/// ```
/// use kalloc_api::{Frame, FrameAllocator, FrameRange};
/// use kalloc_buddy::{BuddyFrameAllocator, FrameMeta, PerCpuBuddy};
///
/// fn this_cpu() -> usize { 0 }
///
/// let mut storage = [FrameMeta::EMPTY; 256];
/// let mut buddy = BuddyFrameAllocator::<10>::new(Frame::from_number(0x8_0000), 256, &mut storage)?;
/// buddy.add_range(FrameRange::new(Frame::from_number(0x8_0000), 256))?;
///
/// let frames: PerCpuBuddy<'_, fn() -> usize, 4, 10> = PerCpuBuddy::new(buddy, this_cpu);
/// let frame = frames.allocate_frame()?;
/// assert_eq!(frames.free_frames(), 255);
/// frames.deallocate_frame(frame).unwrap();
/// assert!(frames.deallocate_frame(frame).is_err()); // double free caught in the cache
/// frames.drain();
/// frames.with_allocator(|buddy| buddy.check_invariants()).unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PerCpuBuddy<'a, C: CpuId, const CPUS: usize, const MAX_ORDER: usize> {
    global: Locked<BuddyFrameAllocator<'a, MAX_ORDER>>,
    caches: [CpuCache; CPUS],
    /// The allocator's metadata, shared so frees can claim a frame's tag
    /// without the allocator's lock.
    meta: &'a [FrameMeta],
    base: u64,
    cpu: C,
}

impl<'a, C: CpuId, const CPUS: usize, const MAX_ORDER: usize> PerCpuBuddy<'a, C, CPUS, MAX_ORDER> {
    const VALID_CPUS: () = assert!(CPUS > 0, "CPUS must be at least 1");

    /// Wraps `allocator`, with empty caches.
    #[cfg(not(loom))]
    pub const fn new(allocator: BuddyFrameAllocator<'a, MAX_ORDER>, cpu: C) -> Self {
        let () = Self::VALID_CPUS;
        Self {
            meta: allocator.meta,
            base: allocator.base,
            global: Locked::new(allocator),
            caches: [const { CpuCache::new() }; CPUS],
            cpu,
        }
    }

    /// Wraps `allocator`, with empty caches.
    #[cfg(loom)]
    pub fn new(allocator: BuddyFrameAllocator<'a, MAX_ORDER>, cpu: C) -> Self {
        let () = Self::VALID_CPUS;
        Self {
            meta: allocator.meta,
            base: allocator.base,
            global: Locked::new(allocator),
            caches: core::array::from_fn(|_| CpuCache::new()),
            cpu,
        }
    }

    /// Allocates one frame, from this CPU's cache when it has one.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`] when no frame is free in the allocator or in
    /// any cache; [`AllocError::Uninitialized`] before any memory was added.
    #[inline]
    pub fn allocate_frame(&self) -> Result<Frame, AllocError> {
        let mut stack = self.cache().frames.lock();
        let index = match stack.pop() {
            Some(index) => index,
            None => match self.refill(&mut stack) {
                Some(index) => index,
                None => {
                    drop(stack);
                    return self.allocate_after_reclaim();
                }
            },
        };
        drop(stack);
        // The cache owned the frame exclusively; nobody else changes a CACHED tag.
        self.meta[index as usize]
            .tag
            .store(tag::ALLOC, Ordering::Relaxed);
        Ok(Frame::from_number(self.base + u64::from(index)))
    }

    /// Frees one frame into this CPU's cache. The frame may have been allocated
    /// on any CPU.
    ///
    /// # Errors
    /// As [`BuddyFrameAllocator::deallocate_order`] with order 0; nothing changes then.
    #[inline]
    pub fn deallocate_frame(&self, frame: Frame) -> Result<(), FreeError> {
        let index = frame.number().wrapping_sub(self.base);
        let Some(entry) = self.meta.get(index as usize) else {
            return Err(FreeError::NotOwned);
        };
        let index = index as u32;
        // Relaxed: the tag publishes no other data; the stack is guarded by its lock.
        if let Err(found) = entry.tag.compare_exchange(
            tag::ALLOC,
            tag::CACHED,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            return Err(self.refused(index, found));
        }
        let mut stack = self.cache().frames.lock();
        if stack.len == PCP_HIGH_FRAMES {
            self.drain_oldest(&mut stack);
        }
        let top = stack.len;
        stack.slots[top] = index;
        stack.len = top + 1;
        Ok(())
    }

    /// Returns every cached frame, on every CPU, to the allocator; returns how
    /// many. Afterwards [`free_frames`](Self::free_frames) is exact and blocks
    /// can merge again.
    pub fn drain(&self) -> usize {
        let mut drained = 0;
        for cache in &self.caches {
            let mut stack = cache.frames.lock();
            let mut global = self.global.lock();
            while let Some(index) = stack.pop() {
                global.release_cached(index);
                drained += 1;
            }
        }
        drained
    }

    /// Gives the frames of `range` to the allocator
    /// (see [`BuddyFrameAllocator::add_range`]).
    ///
    /// # Errors
    /// As [`BuddyFrameAllocator::add_range`].
    pub fn add_range(&self, range: FrameRange) -> Result<(), crate::BuddyError> {
        self.global.lock().add_range(range)
    }

    /// Runs `f` on the allocator under its lock, for statistics and checks.
    /// Frames in CPU caches count as allocated there.
    pub fn with_allocator<R>(&self, f: impl FnOnce(&BuddyFrameAllocator<'a, MAX_ORDER>) -> R) -> R {
        f(&self.global.lock())
    }

    /// Frames free in the allocator or parked in a cache (a snapshot: other
    /// CPUs keep allocating while it is taken).
    pub fn free_frames(&self) -> usize {
        self.global.lock().free_frames() + self.cached_frames()
    }

    /// Frames parked in CPU caches.
    pub fn cached_frames(&self) -> usize {
        self.caches
            .iter()
            .map(|cache| cache.frames.lock().len)
            .sum()
    }

    /// Frames under management.
    pub fn total_frames(&self) -> usize {
        self.global.lock().total_frames()
    }

    /// Unwraps the allocator, returning cached frames to it first.
    pub fn into_inner(self) -> BuddyFrameAllocator<'a, MAX_ORDER> {
        self.drain();
        self.global.into_inner()
    }

    #[inline]
    fn cache(&self) -> &CpuCache {
        let cpu = self.cpu.current_cpu();
        let slot = if cpu < CPUS { cpu } else { cpu % CPUS };
        &self.caches[slot]
    }

    /// Moves a batch of frames from the allocator into the empty `stack` and
    /// takes one of them; `None` when the allocator has none.
    #[cold]
    fn refill(&self, stack: &mut MutexGuard<'_, FrameStack>) -> Option<u32> {
        let mut global = self.global.lock();
        while stack.len < PCP_BATCH_FRAMES {
            let Ok(index) = global.take_block(0, tag::CACHED) else {
                break;
            };
            let top = stack.len;
            stack.slots[top] = index;
            stack.len = top + 1;
        }
        stack.pop()
    }

    /// The allocator is empty: pull back frames parked in other CPUs' caches
    /// and try once more.
    #[cold]
    fn allocate_after_reclaim(&self) -> Result<Frame, AllocError> {
        self.drain();
        let mut global = self.global.lock();
        global.allocate_order(0)
    }

    /// Returns the oldest `PCP_BATCH_FRAMES` frames of a full `stack`.
    #[cold]
    fn drain_oldest(&self, stack: &mut MutexGuard<'_, FrameStack>) {
        let mut global = self.global.lock();
        for &index in &stack.slots[..PCP_BATCH_FRAMES] {
            global.release_cached(index);
        }
        let len = stack.len;
        stack.slots.copy_within(PCP_BATCH_FRAMES..len, 0);
        stack.len = len - PCP_BATCH_FRAMES;
    }

    /// Why the claim of the frame at `index` failed, having found tag `found`.
    #[cold]
    fn refused(&self, index: u32, found: u8) -> FreeError {
        if found == tag::CACHED {
            return FreeError::DoubleFree;
        }
        self.global.lock().diagnose(index, 1)
    }
}

impl<C: CpuId, const CPUS: usize, const MAX_ORDER: usize> FrameAllocator
    for &PerCpuBuddy<'_, C, CPUS, MAX_ORDER>
{
    /// Single frames come from the CPU cache; other requests from the allocator.
    #[inline]
    fn allocate(&mut self, count: usize, frame_align: usize) -> Result<FrameRange, AllocError> {
        if count == 1 && frame_align == 1 {
            return PerCpuBuddy::allocate_frame(self).map(|frame| FrameRange::new(frame, 1));
        }
        self.global.lock().allocate(count, frame_align)
    }

    /// Single frames go to the CPU cache; other runs to the allocator.
    #[inline]
    fn deallocate(&mut self, range: FrameRange) -> Result<(), FreeError> {
        if range.count() == 1 {
            return PerCpuBuddy::deallocate_frame(self, range.start());
        }
        self.global.lock().deallocate(range)
    }

    fn free_frames(&self) -> usize {
        PerCpuBuddy::free_frames(self)
    }

    fn total_frames(&self) -> usize {
        PerCpuBuddy::total_frames(self)
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
