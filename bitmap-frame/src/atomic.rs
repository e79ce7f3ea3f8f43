//! [`AtomicBitmapFrameAllocator`]: the bitmap on atomic words, shared by
//! `&self` without a lock.

mod runs;
mod summary;

use kalloc_api::sync::{AtomicU64, AtomicUsize, Ordering};
use kalloc_api::{AllocError, CpuId, Frame, FrameAllocator, FrameRange, FreeError};

use crate::bitmap::free_error;
use crate::error::BitmapError;
use crate::layout::{
    ALL_FREE, FRAMES_PER_WORD, Geometry, Misfit, Span, WORD_SHIFT, atomic_storage_words,
    longest_free_run, word_masks,
};
use summary::Summary;

/// Per-CPU slots (cursor and free-count share); CPU ids are taken modulo this.
#[cfg(not(loom))]
pub const CPU_SLOTS: usize = 32;
/// Per-CPU slots (cursor and free-count share); CPU ids are taken modulo this.
#[cfg(loom)]
pub const CPU_SLOTS: usize = 2;

/// A [`CpuId`] that always answers CPU 0: every caller starts its search at
/// the same cursor. Give a real one with
/// [`with_cpu_id`](AtomicBitmapFrameAllocator::with_cpu_id).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCpuId;

impl CpuId for NoCpuId {
    #[inline]
    fn current_cpu(&self) -> usize {
        0
    }
}

/// One CPU's view: where its next search starts. Aligned to a cache line
/// so CPUs do not share them.
#[repr(align(64))]
struct Slot {
    /// Leaf word this CPU's single frames come from while it has any.
    cursor: AtomicUsize,
}

/// A lock-free bitmap frame allocator: the bitmap of
/// [`BitmapFrameAllocator`](crate::BitmapFrameAllocator) on [`AtomicU64`]
/// words (from `kalloc_api::sync`, so loom can model it), shared by `&self`.
///
/// - **Allocation** claims a free bit with one atomic read-modify-write on
///   its word (`fetch_and` of the lowest free bit for single frames, a
///   compare-and-swap for runs), starting at the calling CPU's own cursor so
///   CPUs work in different words.
/// - **Free** sets the bits again (`fetch_or` for a single frame); the value
///   returned shows a frame that was already free, which is reported as
///   [`FreeError::DoubleFree`] exactly once however many CPUs race to free it.
///   (Bit 1 means free throughout the crate, so freeing *sets* bits; zeroed
///   storage is "all used".)
/// - **Search** goes through a "may have a free frame" summary kept without
///   locks. Its invariant: a summary bit may say "maybe free" of an empty
///   word, never "empty" of a word with a free frame, except while the
///   operation that will set it again is still running. So a free frame never
///   becomes unfindable; the loom models in `tests/loom.rs` check the races.
/// - **Counts** come from the bitmap itself: [`free_frames`](Self::free_frames)
///   counts the free bits (a scan of one word per 64 frames), so allocation
///   and free cost one atomic read-modify-write each, not a second one on a
///   counter.
///
/// Runs: up to 64 frames at alignment up to 64 are found inside one word;
/// longer or coarser-aligned runs start on a 64-frame boundary (2 MiB huge
/// frames fit). A multi-word run is claimed word by word and rolled back if
/// another CPU takes part of it first.
///
/// `&AtomicBitmapFrameAllocator` is a [`FrameAllocator`], and through
/// [`kalloc_api::OffsetPages`] a [`PageSource`](kalloc_api::PageSource).
///
/// ```
/// use kalloc_api::sync::AtomicU64;
/// use kalloc_api::{Frame, FrameAllocator, FrameRange};
/// use kalloc_bitmap_frame::{AtomicBitmapFrameAllocator, atomic_storage_words};
///
/// const FRAMES: usize = 1024;
/// let storage: Vec<AtomicU64> = (0..atomic_storage_words(FRAMES)).map(|_| AtomicU64::new(0)).collect();
/// let base = Frame::from_number(0x100);
/// let frames = AtomicBitmapFrameAllocator::new(base, FRAMES, &storage)?
///     .with_cpu_id(|| 0); // a kernel passes its own CPU-number function
/// frames.mark_free(FrameRange::new(base, FRAMES as u64))?;
///
/// std::thread::scope(|scope| {
///     for cpu in 0..4 {
///         let frames = &frames;
///         scope.spawn(move || {
///             let frame = frames.allocate_on(cpu, 1, 1).unwrap();
///             frames.deallocate_on(cpu, frame).unwrap();
///         });
///     }
/// });
/// let mut shared = &frames;
/// let huge = shared.allocate(512, 512).unwrap();
/// assert_eq!(frames.free_frames(), FRAMES - 512);
/// shared.deallocate(huge).unwrap();
/// # Ok::<(), kalloc_bitmap_frame::BitmapError>(())
/// ```
pub struct AtomicBitmapFrameAllocator<'a, C = NoCpuId> {
    span: Span,
    /// One bit per frame, 1 = free; padding bits are always 0.
    words: &'a [AtomicU64],
    summary: Summary<'a>,
    slots: [Slot; CPU_SLOTS],
    cpu: C,
}

impl<'a> AtomicBitmapFrameAllocator<'a> {
    /// An allocator for the `frames` frames from `base`, all of them used, with
    /// its bits in `storage` (at least [`atomic_storage_words`]`(frames)` words,
    /// overwritten).
    ///
    /// # Errors
    /// [`BitmapError::StorageTooSmall`] or [`BitmapError::Overflow`].
    pub fn new(base: Frame, frames: usize, storage: &'a [AtomicU64]) -> Result<Self, BitmapError> {
        let span = Span::new(base, frames)?;
        let needed = atomic_storage_words(frames);
        if storage.len() < needed {
            return Err(BitmapError::StorageTooSmall {
                needed,
                provided: storage.len(),
            });
        }
        let geometry = Geometry::for_frames(frames);
        let (words, rest) = storage.split_at(geometry.leaf_words);
        let (summary_bits, rest) = rest.split_at(geometry.summary_words);
        let top = &rest[..geometry.top_words];
        for word in words {
            word.store(0, Ordering::Relaxed);
        }
        // Spread the CPUs' cursors evenly so they start in different words.
        let slots = core::array::from_fn(|slot| Slot {
            cursor: AtomicUsize::new(slot * words.len() / CPU_SLOTS),
        });
        Ok(Self {
            span,
            words,
            summary: Summary::new(summary_bits, top),
            slots,
            cpu: NoCpuId,
        })
    }
}

impl<'a, C: CpuId> AtomicBitmapFrameAllocator<'a, C> {
    /// The same allocator, asking `cpu` which CPU runs each
    /// [`FrameAllocator`] call (the `*_on` methods take the CPU as argument).
    pub fn with_cpu_id<D: CpuId>(self, cpu: D) -> AtomicBitmapFrameAllocator<'a, D> {
        AtomicBitmapFrameAllocator {
            span: self.span,
            words: self.words,
            summary: self.summary,
            slots: self.slots,
            cpu,
        }
    }

    /// The frames under management, free or not.
    pub const fn managed(&self) -> FrameRange {
        self.span.range()
    }

    /// Frames under management.
    pub const fn total_frames(&self) -> usize {
        self.span.frames
    }

    /// Frames free, counted from the bitmap (one word per 64 frames: about
    /// a microsecond per GiB): exact when no operation is in progress; while
    /// some are, the words are read at slightly different moments.
    pub fn free_frames(&self) -> usize {
        self.words
            .iter()
            .map(|word| word.load(Ordering::Relaxed).count_ones() as usize)
            .sum()
    }

    /// Whether any leaf word has a free frame, summary or not.
    fn any_free_word(&self) -> bool {
        self.words
            .iter()
            .any(|word| word.load(Ordering::Acquire) != 0)
    }

    /// Whether `frame` is free right now, or `None` when it is not managed here.
    pub fn is_free(&self, frame: Frame) -> Option<bool> {
        let (bit, _) = self.span.bits_of(FrameRange::new(frame, 1)).ok()?;
        let word = self.words[bit >> WORD_SHIFT].load(Ordering::Acquire);
        Some(word >> (bit % FRAMES_PER_WORD) & 1 != 0)
    }

    /// The longest run of free frames (ignoring alignment), from a scan that
    /// is not a snapshot while other CPUs allocate.
    pub fn largest_free_run(&self) -> usize {
        longest_free_run(self.words.iter().map(|word| word.load(Ordering::Relaxed)))
    }

    /// Marks every frame of `range` free and returns how many were used
    /// before. Meant for handing memory over; an empty range changes nothing.
    ///
    /// # Errors
    /// [`BitmapError::NotOwned`] or [`BitmapError::OutOfRange`]; nothing changes.
    pub fn mark_free(&self, range: FrameRange) -> Result<usize, BitmapError> {
        let Some((start, end)) = self.bits_to_mark(range)? else {
            return Ok(0);
        };
        let mut freed = 0;
        for (index, mask) in word_masks(start, end) {
            let before = self.words[index].fetch_or(mask, Ordering::AcqRel);
            freed += (mask & !before).count_ones() as usize;
            if before == 0 {
                self.summary.publish(index);
            }
        }
        Ok(freed)
    }

    /// Marks every frame of `range` used (a reservation) and returns how many
    /// were free before. An empty range changes nothing.
    ///
    /// # Errors
    /// As [`mark_free`](Self::mark_free).
    pub fn mark_used(&self, range: FrameRange) -> Result<usize, BitmapError> {
        let Some((start, end)) = self.bits_to_mark(range)? else {
            return Ok(0);
        };
        let mut taken = 0;
        for (index, mask) in word_masks(start, end) {
            let leaf = &self.words[index];
            let before = leaf.fetch_and(!mask, Ordering::AcqRel);
            taken += (mask & before).count_ones() as usize;
            if before != 0 && before & !mask == 0 {
                self.summary.withdraw(index, leaf);
            }
        }
        Ok(taken)
    }

    /// Allocates as [`FrameAllocator::allocate`], starting from CPU `cpu`'s cursor.
    ///
    /// A single frame is found whenever one stays free during the call; a run
    /// may be missed while other CPUs change the words it would cover.
    ///
    /// # Errors
    /// [`AllocError::ZeroSize`], [`AllocError::BadAlignment`], [`AllocError::OutOfMemory`].
    #[inline]
    pub fn allocate_on(
        &self,
        cpu: usize,
        count: usize,
        frame_align: usize,
    ) -> Result<FrameRange, AllocError> {
        let slot = &self.slots[cpu % CPU_SLOTS];
        if count == 1 && frame_align == 1 {
            let bit = self.take_one(slot).ok_or(AllocError::OutOfMemory)?;
            return Ok(self.span.frames_at(bit, 1));
        }
        self.allocate_run(slot, count, frame_align)
    }

    /// Frees as [`FrameAllocator::deallocate`]. A free needs no per-CPU
    /// state: `cpu` is taken for symmetry with
    /// [`allocate_on`](Self::allocate_on) and not used.
    ///
    /// # Errors
    /// [`FreeError::NotOwned`], [`FreeError::OutOfRange`], [`FreeError::SizeMismatch`]
    /// (empty range), or [`FreeError::DoubleFree`] when a frame of the range is
    /// already free. A refused free changes nothing, unless another CPU frees
    /// overlapping frames of a multi-word run at the same moment: then the
    /// words before the one found free stay freed (and counted).
    #[inline]
    pub fn deallocate_on(&self, cpu: usize, range: FrameRange) -> Result<(), FreeError> {
        let _ = cpu;
        let (start, end) = self.span.bits_of(range).map_err(free_error)?;
        if end - start == 1 {
            self.give_back_one(start)
        } else {
            self.give_back_run(start, end)
        }
    }

    /// Checks the invariants that hold when no operation is in progress: the
    /// summary covering every word with a free frame, padding never free.
    ///
    /// # Errors
    /// Names the first invariant found broken.
    pub fn check_quiescent(&self) -> Result<(), &'static str> {
        for (index, word) in self.words.iter().enumerate() {
            let word = word.load(Ordering::Acquire);
            if word != 0 && !self.summary.contains(index) {
                return Err("a word with a free frame is missing from the summary");
            }
        }
        for word in 0..self.summary.summary_words() {
            let any =
                (0..FRAMES_PER_WORD).any(|bit| self.summary.contains((word << WORD_SHIFT) + bit));
            if any && !self.summary.top_contains(word) {
                return Err("a summary word with a bit set is missing from the top level");
            }
        }
        let padding_free = word_masks(0, self.span.first)
            .chain(word_masks(
                self.span.end_bit(),
                self.words.len() * FRAMES_PER_WORD,
            ))
            .any(|(index, mask)| self.words[index].load(Ordering::Acquire) & mask != 0);
        if padding_free {
            return Err("a padding bit is marked free");
        }
        Ok(())
    }

    fn bits_to_mark(&self, range: FrameRange) -> Result<Option<(usize, usize)>, BitmapError> {
        match self.span.bits_of(range) {
            Ok(bits) => Ok(Some(bits)),
            Err(Misfit::Empty) => Ok(None),
            Err(Misfit::NotOwned) => Err(BitmapError::NotOwned),
            Err(Misfit::OutOfRange) => Err(BitmapError::OutOfRange),
        }
    }

    /// One free frame, from the slot's cursor word or the next word that has one.
    #[inline]
    fn take_one(&self, slot: &Slot) -> Option<usize> {
        let index = slot.cursor.load(Ordering::Relaxed);
        if let Some(bit) = self.take_lowest(index) {
            return Some(bit);
        }
        self.take_one_elsewhere(slot, index)
    }

    #[cold]
    fn take_one_elsewhere(&self, slot: &Slot, from: usize) -> Option<usize> {
        loop {
            for index in self.summary.iter_wrapping(from + 1) {
                if let Some(bit) = self.take_lowest(index) {
                    slot.cursor.store(index, Ordering::Relaxed);
                    return Some(bit);
                }
            }
            // Nothing found. A free frame can hide from the summary only while
            // the operation that publishes it is still running: look at the
            // words themselves (a scan, on the way to failing anyway).
            if !self.any_free_word() {
                return None;
            }
            kalloc_api::sync::spin_loop();
        }
    }

    /// Claims the lowest free frame of word `index`; withdraws the word from
    /// the summary when it is (or becomes) empty.
    #[inline]
    fn take_lowest(&self, index: usize) -> Option<usize> {
        let leaf = &self.words[index];
        let mut word = leaf.load(Ordering::Relaxed);
        while word != 0 {
            let lowest = word & word.wrapping_neg();
            // fetch_and cannot fail like a compare-and-swap: losing the bit to
            // another CPU just shows up in `before`, which names the next one to try.
            let before = leaf.fetch_and(!lowest, Ordering::AcqRel);
            if before & lowest != 0 {
                if before == lowest {
                    self.summary.withdraw(index, leaf);
                }
                return Some((index << WORD_SHIFT) + lowest.trailing_zeros() as usize);
            }
            word = before;
        }
        // Seen empty: drop a stale summary bit (a read first, so CPUs passing
        // over an empty word do not all write the shared summary word).
        if self.summary.contains(index) {
            self.summary.withdraw(index, leaf);
        }
        None
    }

    #[inline]
    fn give_back_one(&self, bit: usize) -> Result<(), FreeError> {
        let index = bit >> WORD_SHIFT;
        let mask = 1 << (bit % FRAMES_PER_WORD);
        let before = self.words[index].fetch_or(mask, Ordering::AcqRel);
        if before & mask != 0 {
            // Setting a set bit changed nothing.
            return Err(FreeError::DoubleFree);
        }
        if before == 0 {
            self.summary.publish(index);
        }
        Ok(())
    }

    fn give_back_run(&self, start: usize, end: usize) -> Result<(), FreeError> {
        let already_free = word_masks(start, end)
            .any(|(index, mask)| self.words[index].load(Ordering::Acquire) & mask != 0);
        if already_free {
            return Err(FreeError::DoubleFree);
        }
        let mut result = Ok(());
        // Whole words freed so far, whose summary bits are set together below.
        let mut whole = start.div_ceil(FRAMES_PER_WORD)..start.div_ceil(FRAMES_PER_WORD);
        for (index, mask) in word_masks(start, end) {
            let released = if mask == ALL_FREE {
                // A word wholly in use has nothing another CPU could claim:
                // one exchange from 0 frees it, and any other value is a
                // double free.
                self.words[index]
                    .compare_exchange(0, ALL_FREE, Ordering::AcqRel, Ordering::Relaxed)
                    .map(|_| whole.end = index + 1)
                    .map_err(|_| FreeError::DoubleFree)
            } else {
                self.release(index, mask)
            };
            if let Err(error) = released {
                result = Err(error);
                break;
            }
        }
        self.summary.publish_range(whole.start, whole.end);
        result
    }

    /// Sets `mask` in word `index` if none of it is set.
    fn release(&self, index: usize, mask: u64) -> Result<(), FreeError> {
        let leaf = &self.words[index];
        let mut word = leaf.load(Ordering::Relaxed);
        loop {
            if word & mask != 0 {
                return Err(FreeError::DoubleFree);
            }
            match leaf.compare_exchange_weak(word, word | mask, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => word = actual,
            }
        }
        if word == 0 {
            self.summary.publish(index);
        }
        Ok(())
    }

    /// Clears `mask` in word `index` if all of it is set.
    fn claim(&self, index: usize, mask: u64) -> bool {
        let leaf = &self.words[index];
        let mut word = leaf.load(Ordering::Relaxed);
        loop {
            if word & mask != mask {
                return false;
            }
            match leaf.compare_exchange_weak(
                word,
                word & !mask,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => word = actual,
            }
        }
        if word & !mask == 0 {
            self.summary.withdraw(index, leaf);
        }
        true
    }
}

impl<C: CpuId> FrameAllocator for &AtomicBitmapFrameAllocator<'_, C> {
    #[inline]
    fn allocate(&mut self, count: usize, frame_align: usize) -> Result<FrameRange, AllocError> {
        self.allocate_on(self.cpu.current_cpu(), count, frame_align)
    }

    #[inline]
    fn deallocate(&mut self, range: FrameRange) -> Result<(), FreeError> {
        self.deallocate_on(self.cpu.current_cpu(), range)
    }

    #[inline]
    fn free_frames(&self) -> usize {
        AtomicBitmapFrameAllocator::free_frames(*self)
    }

    #[inline]
    fn total_frames(&self) -> usize {
        self.span.frames
    }
}

impl<C: CpuId> FrameAllocator for AtomicBitmapFrameAllocator<'_, C> {
    #[inline]
    fn allocate(&mut self, count: usize, frame_align: usize) -> Result<FrameRange, AllocError> {
        self.allocate_on(self.cpu.current_cpu(), count, frame_align)
    }

    #[inline]
    fn deallocate(&mut self, range: FrameRange) -> Result<(), FreeError> {
        self.deallocate_on(self.cpu.current_cpu(), range)
    }

    #[inline]
    fn free_frames(&self) -> usize {
        AtomicBitmapFrameAllocator::free_frames(self)
    }

    #[inline]
    fn total_frames(&self) -> usize {
        self.span.frames
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
