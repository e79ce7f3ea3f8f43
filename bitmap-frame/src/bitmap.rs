//! [`BitmapFrameAllocator`]: one bit per frame in caller storage, with exact
//! summaries that keep every search short however full the bitmap is.

mod search;

use kalloc_api::{AllocError, Frame, FrameAllocator, FrameRange, FreeError};

use crate::error::BitmapError;
use crate::layout::{
    ALL_FREE, FRAMES_PER_WORD, Geometry, Misfit, Span, WORD_SHIFT, longest_free_run, mask,
    storage_words, word_masks,
};
use crate::summary::Summary;

/// A physical frame allocator with one bit per 4 KiB frame, in storage the
/// caller hands in (see [`storage_words`](crate::storage_words)).
///
/// Besides the frame bits it keeps two exact summaries, each one bit per
/// 64-frame word with one more bit per 64 of those on top: *the word has a
/// free frame* and *all 64 frames of the word are free*. Single frames come
/// from the word under a next-fit cursor (a `trailing_zeros` and two stores);
/// when that word runs dry the first summary names the next word with a free
/// frame in a couple of word tests. Runs of 64 frames or more at 64-frame
/// alignment or coarser (2 MiB huge frames) are found by scanning the second
/// summary, 64 words at a time; other runs by masks over each word with a free
/// frame. Any free run of the requested length and alignment is found.
///
/// The allocator starts with every frame used; [`mark_free`](Self::mark_free)
/// hands frames over (typically each free range of a `BootMemory`).
///
/// ```
/// use kalloc_api::{Frame, FrameAllocator, FrameRange, FreeError};
/// use kalloc_bitmap_frame::{BitmapFrameAllocator, storage_words};
///
/// const FRAMES: usize = 4096; // 16 MiB from 0x10_0000
/// let mut storage = [0u64; storage_words(FRAMES)];
/// let base = Frame::from_number(0x100);
/// let mut frames = BitmapFrameAllocator::new(base, FRAMES, &mut storage)?;
/// frames.mark_free(FrameRange::new(base, FRAMES as u64))?;
///
/// let page = frames.allocate_frame().unwrap();
/// let huge = frames.allocate(512, 512).unwrap(); // one 2 MiB-aligned 2 MiB run
/// assert!(huge.start_address().is_aligned(2 << 20));
/// assert_eq!(frames.free_frames(), FRAMES - 513);
///
/// frames.deallocate(huge).unwrap();
/// frames.deallocate_frame(page).unwrap();
/// assert_eq!(frames.deallocate_frame(page), Err(FreeError::DoubleFree));
/// assert_eq!(frames.largest_free_run(), FRAMES);
/// # Ok::<(), kalloc_bitmap_frame::BitmapError>(())
/// ```
pub struct BitmapFrameAllocator<'a> {
    span: Span,
    /// Frames whose bit is set; kept exact by every claim and release.
    free: usize,
    /// Next-fit cursor: the word single frames come from while it has any.
    next_word: usize,
    /// One bit per frame, 1 = free; padding bits are always 0.
    words: &'a mut [u64],
    /// Words with at least one free frame.
    with_free: Summary<'a>,
    /// Words whose 64 frames are all free.
    all_free: Summary<'a>,
}

impl<'a> BitmapFrameAllocator<'a> {
    /// An allocator for the `frames` frames from `base`, all of them used, with
    /// its bits in `storage` (at least [`storage_words`]`(frames)` words, whose
    /// contents are overwritten).
    ///
    /// # Errors
    /// [`BitmapError::StorageTooSmall`] or, when the frames would end past the
    /// last physical frame, [`BitmapError::Overflow`].
    pub fn new(base: Frame, frames: usize, storage: &'a mut [u64]) -> Result<Self, BitmapError> {
        let span = Span::new(base, frames)?;
        let needed = storage_words(frames);
        if storage.len() < needed {
            return Err(BitmapError::StorageTooSmall {
                needed,
                provided: storage.len(),
            });
        }
        let geometry = Geometry::for_frames(frames);
        let (words, rest) = storage.split_at_mut(geometry.leaf_words);
        let (with_free_bits, rest) = rest.split_at_mut(geometry.summary_words);
        let (all_free_bits, rest) = rest.split_at_mut(geometry.summary_words);
        let (with_free_top, rest) = rest.split_at_mut(geometry.top_words);
        let (all_free_top, _) = rest.split_at_mut(geometry.top_words);
        words.fill(0);
        Ok(Self {
            span,
            free: 0,
            next_word: 0,
            words,
            with_free: Summary::new(with_free_bits, with_free_top),
            all_free: Summary::new(all_free_bits, all_free_top),
        })
    }

    /// The frames under management, free or not.
    pub const fn managed(&self) -> FrameRange {
        self.span.range()
    }

    /// Whether `frame` is free, or `None` when it is not managed here.
    pub fn is_free(&self, frame: Frame) -> Option<bool> {
        let (bit, _) = self.span.bits_of(FrameRange::new(frame, 1)).ok()?;
        Some(self.words[bit >> WORD_SHIFT] >> (bit % FRAMES_PER_WORD) & 1 != 0)
    }

    /// Marks every frame of `range` free, whatever its state, and returns how
    /// many were used before. An empty range changes nothing.
    ///
    /// # Errors
    /// [`BitmapError::NotOwned`] or [`BitmapError::OutOfRange`] when `range`
    /// is not wholly managed here; nothing changes then.
    pub fn mark_free(&mut self, range: FrameRange) -> Result<usize, BitmapError> {
        let Some((start, end)) = self.bits_to_mark(range)? else {
            return Ok(0);
        };
        let mut freed = 0;
        for (word, mask) in word_masks(start, end) {
            let old = self.words[word];
            freed += (mask & !old).count_ones() as usize;
            self.release(word, old, mask);
        }
        self.free += freed;
        Ok(freed)
    }

    /// Marks every frame of `range` used (a reservation), whatever its state,
    /// and returns how many were free before. An empty range changes nothing.
    ///
    /// # Errors
    /// As [`mark_free`](Self::mark_free).
    pub fn mark_used(&mut self, range: FrameRange) -> Result<usize, BitmapError> {
        let Some((start, end)) = self.bits_to_mark(range)? else {
            return Ok(0);
        };
        let mut taken = 0;
        for (word, mask) in word_masks(start, end) {
            let old = self.words[word];
            taken += (mask & old).count_ones() as usize;
            self.claim(word, old, mask);
        }
        self.free -= taken;
        Ok(taken)
    }

    /// The longest run of contiguous free frames (ignoring alignment): the
    /// largest request that can still succeed. Scans the whole bitmap.
    pub fn largest_free_run(&self) -> usize {
        longest_free_run(self.words.iter().copied())
    }

    /// Checks every internal invariant (frame count, both summaries, padding),
    /// scanning the whole bitmap. For tests and debugging.
    ///
    /// # Errors
    /// Names the first invariant found broken.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let mut free = 0;
        for (index, &word) in self.words.iter().enumerate() {
            free += word.count_ones() as usize;
            if self.with_free.contains(index) != (word != 0) {
                return Err("has-free summary disagrees with a word");
            }
            if self.all_free.contains(index) != (word == ALL_FREE) {
                return Err("all-free summary disagrees with a word");
            }
        }
        let padding_free = word_masks(0, self.span.first)
            .chain(word_masks(
                self.span.end_bit(),
                self.words.len() * FRAMES_PER_WORD,
            ))
            .any(|(word, mask)| self.words[word] & mask != 0);
        if padding_free {
            return Err("a padding bit is marked free");
        }
        if free != self.free {
            return Err("free-frame count disagrees with the bitmap");
        }
        if self.next_word >= self.words.len() {
            return Err("next-fit cursor out of range");
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

    /// Takes one free frame from the cursor's word, or from the next word that
    /// has one. Returns its bit index.
    #[inline]
    fn take_one(&mut self) -> Option<usize> {
        let index = self.next_word;
        let word = self.words[index];
        if word == 0 {
            return self.take_one_elsewhere();
        }
        Some(self.take_lowest(index, word))
    }

    #[cold]
    fn take_one_elsewhere(&mut self) -> Option<usize> {
        let index = self.with_free.next_wrapping(self.next_word + 1)?;
        self.next_word = index;
        Some(self.take_lowest(index, self.words[index]))
    }

    /// Takes the lowest free frame of `word`, the current value of word `index` (not 0).
    #[inline]
    fn take_lowest(&mut self, index: usize, word: u64) -> usize {
        let bit = word.trailing_zeros() as usize;
        self.claim(index, word, word & word.wrapping_neg());
        self.free -= 1;
        (index << WORD_SHIFT) + bit
    }

    /// Clears `mask` in word `index`, whose value is `old`, keeping the summaries exact.
    #[inline]
    fn claim(&mut self, index: usize, old: u64, mask: u64) {
        let new = old & !mask;
        self.words[index] = new;
        if old == ALL_FREE && new != ALL_FREE {
            self.all_free.remove(index);
        }
        if new == 0 && old != 0 {
            self.with_free.remove(index);
        }
    }

    /// Sets `mask` in word `index`, whose value is `old`, keeping the summaries exact.
    #[inline]
    fn release(&mut self, index: usize, old: u64, mask: u64) {
        let new = old | mask;
        self.words[index] = new;
        if old == 0 && new != 0 {
            self.with_free.insert(index);
        }
        if new == ALL_FREE && old != ALL_FREE {
            self.all_free.insert(index);
        }
    }

    /// Frees the single frame at bit `bit`.
    #[inline]
    fn give_back_one(&mut self, bit: usize) -> Result<(), FreeError> {
        let index = bit >> WORD_SHIFT;
        let mask = 1 << (bit % FRAMES_PER_WORD);
        let old = self.words[index];
        if old & mask != 0 {
            return Err(FreeError::DoubleFree);
        }
        self.release(index, old, mask);
        self.free += 1;
        Ok(())
    }

    /// Frees bits `[start, end)` if all of them are used; otherwise changes nothing.
    fn give_back_run(&mut self, start: usize, end: usize) -> Result<(), FreeError> {
        let (head, whole, tail) = split_run(start, end);
        let partial_free = head
            .into_iter()
            .chain(tail)
            .any(|(index, mask)| self.words[index] & mask != 0);
        if partial_free || self.words[whole.clone()].iter().any(|word| *word != 0) {
            return Err(FreeError::DoubleFree);
        }
        for (index, mask) in head.into_iter().chain(tail) {
            self.release(index, self.words[index], mask);
        }
        // Whole words go from all used to all free: both summaries change for
        // every one of them, so update them a summary word at a time.
        self.words[whole.clone()].fill(ALL_FREE);
        self.with_free.insert_range(whole.start, whole.end);
        self.all_free.insert_range(whole.start, whole.end);
        self.free += end - start;
        Ok(())
    }

    /// Claims bits `[start, end)`, all of them free.
    fn claim_run(&mut self, start: usize, end: usize) {
        let (head, whole, tail) = split_run(start, end);
        for (index, mask) in head.into_iter().chain(tail) {
            let old = self.words[index];
            debug_assert_eq!(old & mask, mask, "claiming a used frame");
            self.claim(index, old, mask);
        }
        debug_assert!(
            self.words[whole.clone()]
                .iter()
                .all(|word| *word == ALL_FREE)
        );
        self.words[whole.clone()].fill(0);
        self.with_free.remove_range(whole.start, whole.end);
        self.all_free.remove_range(whole.start, whole.end);
        self.free -= end - start;
    }
}

/// Part of a word: its index and the mask of the bits concerned.
type WordPiece = (usize, u64);

/// Bits `[start, end)` as the partial word before the whole words, the whole
/// words, and the partial word after.
fn split_run(
    start: usize,
    end: usize,
) -> (
    Option<WordPiece>,
    core::ops::Range<usize>,
    Option<WordPiece>,
) {
    let first_whole = start.div_ceil(FRAMES_PER_WORD);
    let end_whole = end >> WORD_SHIFT;
    if first_whole >= end_whole {
        // No whole word: one or two partial words.
        let mut pieces = word_masks(start, end);
        return (pieces.next(), first_whole..first_whole, pieces.next());
    }
    let head = (start % FRAMES_PER_WORD != 0).then(|| {
        let shift = start % FRAMES_PER_WORD;
        (start >> WORD_SHIFT, mask(shift, FRAMES_PER_WORD - shift))
    });
    let tail = (end % FRAMES_PER_WORD != 0).then(|| (end_whole, mask(0, end % FRAMES_PER_WORD)));
    (head, first_whole..end_whole, tail)
}

/// How a range that names no managed frames is refused by `deallocate`.
pub(crate) const fn free_error(misfit: Misfit) -> FreeError {
    match misfit {
        Misfit::Empty => FreeError::SizeMismatch,
        Misfit::NotOwned => FreeError::NotOwned,
        Misfit::OutOfRange => FreeError::OutOfRange,
    }
}

impl FrameAllocator for BitmapFrameAllocator<'_> {
    #[inline]
    fn allocate(&mut self, count: usize, frame_align: usize) -> Result<FrameRange, AllocError> {
        if count == 1 && frame_align == 1 {
            return match self.take_one() {
                Some(bit) => Ok(self.span.frames_at(bit, 1)),
                None => Err(AllocError::OutOfMemory),
            };
        }
        self.allocate_run(count, frame_align)
    }

    #[inline]
    fn deallocate(&mut self, range: FrameRange) -> Result<(), FreeError> {
        let (start, end) = self.span.bits_of(range).map_err(free_error)?;
        if end - start == 1 {
            self.give_back_one(start)
        } else {
            self.give_back_run(start, end)
        }
    }

    #[inline]
    fn free_frames(&self) -> usize {
        self.free
    }

    #[inline]
    fn total_frames(&self) -> usize {
        self.span.frames
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
