//! Finding contiguous aligned runs of free frames.
//!
//! Three shapes of request, three searches:
//!
//! - **Up to 64 frames, aligned to less than 64**: inside each word with a free
//!   frame, `run_starts` marks where `count` free bits begin and an alignment
//!   mask keeps the aligned ones; a run may also straddle into the next word.
//! - **Aligned to 64 frames or more** (2 MiB huge frames, DMA buffers): the run
//!   starts on a word boundary, so it is whole free words plus a head of the
//!   next; candidates come from the all-free summary. Runs of whole words (up
//!   to 64 of them, 16 MiB) test 64 aligned candidates at once, by shifted
//!   ANDs over the summary word.
//! - **Longer than 64 frames at finer alignment**: a next-fit walk over the
//!   stretches of free bits, skipping words without any.

use kalloc_api::{AllocError, FrameRange};

use super::BitmapFrameAllocator;
use crate::layout::{
    FRAMES_PER_WORD, WORD_SHIFT, align_mask, align_up_with_phase, mask, run_starts,
};

impl BitmapFrameAllocator<'_> {
    /// Allocates `count` frames whose first frame number is a multiple of `align`.
    pub(super) fn allocate_run(
        &mut self,
        count: usize,
        align: usize,
    ) -> Result<FrameRange, AllocError> {
        if count == 0 {
            return Err(AllocError::ZeroSize);
        }
        if !align.is_power_of_two() {
            return Err(AllocError::BadAlignment);
        }
        if count > self.free {
            return Err(AllocError::OutOfMemory);
        }
        let start = if align >= FRAMES_PER_WORD {
            self.find_word_aligned(count, align >> WORD_SHIFT)
        } else if count <= FRAMES_PER_WORD {
            self.find_within_words(count, align)
        } else {
            self.find_long(count, align)
        }
        .ok_or(AllocError::OutOfMemory)?;
        let end = start + count;
        self.claim_run(start, end);
        self.next_word = (end - 1) >> WORD_SHIFT;
        Ok(self.span.frames_at(start, count))
    }

    /// A run of at most 64 frames aligned to at most 64, next-fit from the cursor.
    fn find_within_words(&self, count: usize, align: usize) -> Option<usize> {
        let aligned = align_mask(align);
        self.with_free
            .iter_wrapping(self.next_word)
            .find_map(|index| {
                let word = self.words[index];
                let starts = run_starts(word, count) & aligned;
                if starts != 0 {
                    return Some((index << WORD_SHIFT) + starts.trailing_zeros() as usize);
                }
                // The free bits at the top of this word may continue into the next.
                let top_free = word.leading_ones() as usize;
                let next = *self.words.get(index + 1)?;
                let offset = (FRAMES_PER_WORD - top_free).next_multiple_of(align);
                let reach = FRAMES_PER_WORD - offset.min(FRAMES_PER_WORD);
                (top_free > 0
                    && offset < FRAMES_PER_WORD
                    && reach + next.trailing_ones() as usize >= count)
                    .then_some((index << WORD_SHIFT) + offset)
            })
    }

    /// A run starting on a word boundary whose absolute word number is a
    /// multiple of `words_align`: next-fit from the cursor, then from the start.
    fn find_word_aligned(&self, count: usize, words_align: usize) -> Option<usize> {
        let from = self.next_word;
        self.find_word_aligned_in(count, words_align, from, self.words.len())
            .or_else(|| self.find_word_aligned_in(count, words_align, 0, from))
    }

    /// As [`find_word_aligned`](Self::find_word_aligned), for runs starting at
    /// word indices in `[lo, hi)`.
    fn find_word_aligned_in(
        &self,
        count: usize,
        words_align: usize,
        lo: usize,
        hi: usize,
    ) -> Option<usize> {
        let phase = self.span.word_phase(words_align);
        let whole = count >> WORD_SHIFT;
        let head = count % FRAMES_PER_WORD;
        if head == 0 && whole <= FRAMES_PER_WORD && words_align <= FRAMES_PER_WORD {
            // Whole words only: 64 candidates per test of the all-free summary.
            return self
                .all_free
                .first_aligned_run(whole, words_align, phase, lo, hi)
                .map(|word| word << WORD_SHIFT);
        }
        // Enough free frames at the start of word `index` for the part after the whole words?
        let head_fits = |index: usize| {
            head == 0
                || self
                    .words
                    .get(index)
                    .is_some_and(|word| word.trailing_ones() as usize >= head)
        };
        let mut cursor = lo;
        loop {
            let candidate = if whole == 0 {
                let first = self.with_free.next_from(cursor)?;
                align_up_with_phase(first, words_align, phase)?
            } else {
                let first = self.all_free.next_from(cursor)?;
                align_up_with_phase(first, words_align, phase)?
            };
            if candidate >= hi {
                return None;
            }
            let end = candidate.checked_add(whole)?;
            if end > self.words.len() {
                return None;
            }
            match self.all_free.first_absent(candidate, end) {
                // Any candidate up to `gap` would need word `gap` whole.
                Some(gap) => cursor = gap + 1,
                None if head_fits(end) => return Some(candidate << WORD_SHIFT),
                // Word `end` is not whole, so later candidates must start past it.
                None if whole > 0 => cursor = end + 1,
                None => cursor = candidate + 1,
            }
        }
    }

    /// A run longer than 64 frames at alignment below 64: next fit over the
    /// stretches of free bits from the cursor, then first fit from the start.
    #[cold]
    fn find_long(&self, count: usize, align: usize) -> Option<usize> {
        self.find_long_from(count, align, self.next_word)
            .or_else(|| self.find_long_from(count, align, 0))
    }

    /// First fit over the stretches of free bits in words `from..`.
    fn find_long_from(&self, count: usize, align: usize, from: usize) -> Option<usize> {
        // The stretch of free bits seen last, as bit indices `[start, end)`.
        let (mut start, mut end) = (0, 0);
        let mut index = self.with_free.next_from(from)?;
        loop {
            let base = index << WORD_SHIFT;
            let mut rest = self.words[index];
            while rest != 0 {
                let shift = rest.trailing_zeros() as usize;
                let len = (rest >> shift).trailing_ones() as usize;
                if base + shift != end {
                    start = base + shift;
                }
                end = base + shift + len;
                let candidate = start.next_multiple_of(align);
                if candidate.checked_add(count).is_some_and(|need| need <= end) {
                    return Some(candidate);
                }
                rest &= !mask(shift, len);
            }
            index = self.with_free.next_from(index + 1)?;
        }
    }
}
