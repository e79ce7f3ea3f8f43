//! Contiguous runs on the atomic bitmap: inside one word with a single
//! compare-and-swap, or whole words from an aligned word boundary, claimed one
//! by one and rolled back when another CPU takes part of them first.

use kalloc_api::sync::Ordering;
use kalloc_api::{AllocError, CpuId, FrameRange};

use super::{AtomicBitmapFrameAllocator, Slot};
use crate::layout::{
    ALL_FREE, FRAMES_PER_WORD, WORD_SHIFT, align_mask, align_up_with_phase, mask, run_starts,
};

impl<C: CpuId> AtomicBitmapFrameAllocator<'_, C> {
    pub(super) fn allocate_run(
        &self,
        slot: &Slot,
        count: usize,
        align: usize,
    ) -> Result<FrameRange, AllocError> {
        if count == 0 {
            return Err(AllocError::ZeroSize);
        }
        if !align.is_power_of_two() {
            return Err(AllocError::BadAlignment);
        }
        if count > self.span.frames {
            return Err(AllocError::OutOfMemory);
        }
        let from = slot.cursor.load(Ordering::Relaxed);
        let start = if count <= FRAMES_PER_WORD && align <= FRAMES_PER_WORD {
            self.take_within_word(from, count, align)
        } else {
            let words_align = align.max(FRAMES_PER_WORD) >> WORD_SHIFT;
            self.take_word_aligned(from, count, words_align)
        }
        .ok_or(AllocError::OutOfMemory)?;
        // Next fit: the next search starts where this run was found, past the
        // words that just proved crowded, instead of scanning them again.
        slot.cursor.store(start >> WORD_SHIFT, Ordering::Relaxed);
        Ok(self.span.frames_at(start, count))
    }

    /// A run of at most 64 frames aligned to at most 64, inside one word.
    fn take_within_word(&self, from: usize, count: usize, align: usize) -> Option<usize> {
        let aligned = align_mask(align);
        self.summary.iter_wrapping(from).find_map(|index| {
            loop {
                let word = self.words[index].load(Ordering::Relaxed);
                let starts = run_starts(word, count) & aligned;
                if starts == 0 {
                    return None;
                }
                let shift = starts.trailing_zeros() as usize;
                if self.claim(index, mask(shift, count)) {
                    return Some((index << WORD_SHIFT) + shift);
                }
            }
        })
    }

    /// A run starting on a word boundary whose absolute word number is a
    /// multiple of `words_align`, claimed word by word.
    fn take_word_aligned(&self, from: usize, count: usize, words_align: usize) -> Option<usize> {
        let phase = self.span.word_phase(words_align);
        let whole = count >> WORD_SHIFT;
        let head = count % FRAMES_PER_WORD;
        let len = self.words.len();
        let mut cursor = from;
        let mut wrapped = false;
        loop {
            let next = self
                .summary
                .next_from(cursor)
                .and_then(|first| align_up_with_phase(first, words_align, phase))
                .filter(|candidate| {
                    candidate
                        .checked_add(whole)
                        .is_some_and(|end| end < len || (head == 0 && end <= len))
                });
            let Some(candidate) = next.filter(|candidate| !wrapped || *candidate < from) else {
                if wrapped {
                    return None;
                }
                wrapped = true;
                cursor = 0;
                continue;
            };
            match self.claim_words(candidate, whole, head) {
                Ok(()) => return Some(candidate << WORD_SHIFT),
                Err(blocked) => cursor = blocked + 1,
            }
        }
    }

    /// Claims words `[start, start + whole)` whole and the low `head` frames of
    /// the word after, or rolls back and names the word that was not free.
    fn claim_words(&self, start: usize, whole: usize, head: usize) -> Result<(), usize> {
        let end = start + whole;
        let pieces = (start..end)
            .map(|index| (index, ALL_FREE))
            .chain((head > 0).then(|| (end, mask(0, head))));
        // Look before claiming: a crowded candidate is passed over with plain
        // loads, without claiming words only to roll them back.
        if let Some((index, _)) = pieces
            .clone()
            .find(|&(index, mask)| self.words[index].load(Ordering::Relaxed) & mask != mask)
        {
            return Err(index);
        }
        let mut claimed = start;
        for (index, mask) in pieces {
            let taken = if mask == ALL_FREE {
                // Whole words are taken with one exchange each; their summary
                // bits are withdrawn together once the run is ours.
                self.words[index]
                    .compare_exchange(ALL_FREE, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            } else {
                self.claim(index, mask)
            };
            if !taken {
                for (index, mask) in (start..claimed).map(|index| (index, ALL_FREE)) {
                    let _rolled_back = self.release(index, mask);
                    debug_assert!(
                        _rolled_back.is_ok(),
                        "claimed frames were freed by someone else"
                    );
                }
                return Err(index);
            }
            claimed = index + 1;
        }
        self.summary.withdraw_range(start, end, self.words);
        Ok(())
    }
}
