//! Where the bits live: how many storage words a bitmap needs, how frame
//! numbers map to bit indices, and the word-level bit tricks both allocators
//! share.
//!
//! Bit 1 means *free*. Zeroed storage therefore means "everything used", which
//! is the state a new allocator starts in, and "find a free frame" is
//! `trailing_zeros` on a word.

use kalloc_api::{FRAME_SHIFT, Frame, FrameRange};

use crate::error::BitmapError;

/// Frames (bits) in one storage word.
pub(crate) const FRAMES_PER_WORD: usize = u64::BITS as usize;
/// `log2(FRAMES_PER_WORD)`.
pub(crate) const WORD_SHIFT: u32 = FRAMES_PER_WORD.trailing_zeros();
/// A word whose 64 frames are all free.
pub(crate) const ALL_FREE: u64 = u64::MAX;
/// One past the highest frame number that still has a 64-bit physical address.
const FRAME_NUMBER_LIMIT: u64 = 1 << (u64::BITS - FRAME_SHIFT);

/// Storage, in `u64` words, that [`BitmapFrameAllocator::new`] needs to manage
/// `frames` frames: one bit per frame (plus up to 63 bits of padding, because
/// bit 0 sits on a 64-frame boundary at or below the first frame), one
/// "has a free frame" and one "all frames free" bit per 64-frame word, and
/// the same two bits again per 64 of those summary words.
///
/// That is about `frames / 64 * (1 + 2/64 + 2/4096)` words: 4,231 words
/// (33 KiB) for 1 GiB of 4 KiB frames, 67,621 words (528 KiB) for 16 GiB.
/// [`AtomicBitmapFrameAllocator`](crate::AtomicBitmapFrameAllocator) needs
/// [`atomic_storage_words`] of them, which is never more.
///
/// ```
/// use kalloc_bitmap_frame::storage_words;
///
/// assert_eq!(storage_words(262_144), 4_231);
/// static mut BITMAP: [u64; storage_words(262_144)] = [0; storage_words(262_144)];
/// ```
///
/// [`BitmapFrameAllocator::new`]: crate::BitmapFrameAllocator::new
pub const fn storage_words(frames: usize) -> usize {
    let geometry = Geometry::for_frames(frames);
    geometry.leaf_words + 2 * geometry.summary_words + 2 * geometry.top_words
}

/// Storage, in words of `AtomicU64`, that
/// [`AtomicBitmapFrameAllocator::new`](crate::AtomicBitmapFrameAllocator::new)
/// needs for `frames` frames: the leaf bits and one "may have a free frame"
/// bit per leaf word and per summary word.
///
/// ```
/// use kalloc_bitmap_frame::{atomic_storage_words, storage_words};
///
/// assert_eq!(atomic_storage_words(262_144), 4_097 + 65 + 2);
/// assert!(atomic_storage_words(1000) <= storage_words(1000));
/// ```
pub const fn atomic_storage_words(frames: usize) -> usize {
    let geometry = Geometry::for_frames(frames);
    geometry.leaf_words + geometry.summary_words + geometry.top_words
}

/// Word counts of the three levels for a number of frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Words of one bit per frame.
    pub(crate) leaf_words: usize,
    /// Words of one bit per leaf word.
    pub(crate) summary_words: usize,
    /// Words of one bit per summary word.
    pub(crate) top_words: usize,
}

impl Geometry {
    pub(crate) const fn for_frames(frames: usize) -> Self {
        // u128 keeps `frames + padding` exact for any usize.
        let bits = frames as u128 + (FRAMES_PER_WORD as u128 - 1);
        let leaf_words = bits.div_ceil(FRAMES_PER_WORD as u128) as usize;
        let summary_words = leaf_words.div_ceil(FRAMES_PER_WORD);
        let top_words = summary_words.div_ceil(FRAMES_PER_WORD);
        Self {
            leaf_words,
            summary_words,
            top_words,
        }
    }
}

/// Which frames an allocator manages and where their bits are.
///
/// Bit `i` stands for frame `origin + i`. `origin` is `base` rounded down to a
/// 64-frame boundary, so an in-word bit position is also the frame number's
/// position modulo 64 and alignments up to 64 frames are in-word masks. The
/// bits before `first` and after `first + frames` are padding: always used,
/// never freeable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    /// Frame number of bit 0 (a multiple of 64).
    pub(crate) origin: u64,
    /// Bit index of the first managed frame (below 64).
    pub(crate) first: usize,
    /// Managed frames.
    pub(crate) frames: usize,
}

/// Why a frame range does not name managed frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Misfit {
    Empty,
    NotOwned,
    OutOfRange,
}

impl Span {
    /// The span of `frames` frames from `base`, checking that their frame
    /// numbers (and the padding's) stay addressable.
    pub(crate) fn new(base: Frame, frames: usize) -> Result<Self, BitmapError> {
        let end = u64::try_from(frames)
            .ok()
            .and_then(|frames| base.number().checked_add(frames))
            .ok_or(BitmapError::Overflow)?;
        if end > FRAME_NUMBER_LIMIT {
            return Err(BitmapError::Overflow);
        }
        let origin = base.number() & !(FRAMES_PER_WORD as u64 - 1);
        Ok(Self {
            origin,
            first: (base.number() - origin) as usize,
            frames,
        })
    }

    /// The managed frames.
    pub(crate) const fn range(self) -> FrameRange {
        FrameRange::new(
            Frame::from_number(self.origin + self.first as u64),
            self.frames as u64,
        )
    }

    /// One past the last managed bit.
    pub(crate) const fn end_bit(self) -> usize {
        self.first + self.frames
    }

    /// The bits `[start, end)` of a non-empty range lying wholly inside the span.
    #[inline]
    pub(crate) fn bits_of(self, range: FrameRange) -> Result<(usize, usize), Misfit> {
        if range.is_empty() {
            return Err(Misfit::Empty);
        }
        let first_frame = self.origin + self.first as u64;
        let offset = range
            .start()
            .number()
            .checked_sub(first_frame)
            .ok_or(Misfit::NotOwned)?;
        if offset >= self.frames as u64 {
            return Err(Misfit::NotOwned);
        }
        // `offset < frames`, so this fits in usize; the count may not.
        let start = self.first + offset as usize;
        let end = usize::try_from(range.count())
            .ok()
            .and_then(|count| start.checked_add(count))
            .filter(|end| *end <= self.end_bit())
            .ok_or(Misfit::OutOfRange)?;
        Ok((start, end))
    }

    /// The frame run of bits `[start, start + count)`.
    #[inline]
    pub(crate) const fn frames_at(self, start: usize, count: usize) -> FrameRange {
        FrameRange::new(Frame::from_number(self.origin + start as u64), count as u64)
    }

    /// `(word - phase) % words_align == 0` for word indices: the phase that makes
    /// a leaf word index absolutely aligned to `words_align` words.
    #[inline]
    pub(crate) const fn word_phase(self, words_align: usize) -> usize {
        // `words_align` is a power of two: masks, not divisions, on this path.
        let origin_word = (self.origin >> WORD_SHIFT) as usize;
        words_align.wrapping_sub(origin_word) & (words_align - 1)
    }
}

/// The smallest `index >= from` with `index % align == phase` (`phase < align`,
/// `align` a power of two), or `None` on overflow.
#[inline]
pub(crate) const fn align_up_with_phase(from: usize, align: usize, phase: usize) -> Option<usize> {
    let rem = from.wrapping_sub(phase) & (align - 1);
    if rem == 0 {
        Some(from)
    } else {
        from.checked_add(align - rem)
    }
}

/// The in-word mask of `len` bits from `shift` (`len` in 1..=64, `shift + len <= 64`).
#[inline]
pub(crate) const fn mask(shift: usize, len: usize) -> u64 {
    (u64::MAX >> (FRAMES_PER_WORD - len)) << shift
}

/// Bits `p` of `word` that start a run of `count` set bits inside the word
/// (`count` in 1..=64).
#[inline]
pub(crate) const fn run_starts(word: u64, count: usize) -> u64 {
    // Doubling: after each step bit p says "run of `have` bits from p".
    let mut starts = word;
    let mut have = 1;
    while have < count && starts != 0 {
        let step = if have < count - have {
            have
        } else {
            count - have
        };
        starts &= starts >> step;
        have += step;
    }
    starts
}

/// [`align_mask`] for alignments 1, 2, 4, ... 64, by `trailing_zeros`.
const ALIGN_MASKS: [u64; 7] = [
    u64::MAX,
    0x5555_5555_5555_5555,
    0x1111_1111_1111_1111,
    0x0101_0101_0101_0101,
    0x0001_0001_0001_0001,
    0x0000_0001_0000_0001,
    1,
];

/// In-word positions that are multiples of `align` (a power of two; 64 and
/// above give bit 0 only). A table, not a division: this runs on every
/// search for a run.
#[inline]
pub(crate) const fn align_mask(align: usize) -> u64 {
    let log = align.trailing_zeros() as usize;
    if log >= ALIGN_MASKS.len() {
        1
    } else {
        ALIGN_MASKS[log]
    }
}

/// The longest run of set bits across consecutive `words` (low bit first).
pub(crate) fn longest_free_run(words: impl Iterator<Item = u64>) -> usize {
    let mut best = 0;
    // Free frames running up to the start of the current word.
    let mut running = 0;
    for word in words {
        if word == ALL_FREE {
            running += FRAMES_PER_WORD;
            continue;
        }
        best = best
            .max(running + word.trailing_ones() as usize)
            .max(longest_run(word));
        running = word.leading_ones() as usize;
    }
    best.max(running)
}

/// Length of the longest run of set bits in `word`.
pub(crate) const fn longest_run(mut word: u64) -> usize {
    let mut length = 0;
    while word != 0 {
        word &= word << 1;
        length += 1;
    }
    length
}

/// The `(word index, in-word mask)` pieces of the bit range `[start, end)`.
pub(crate) fn word_masks(start: usize, end: usize) -> impl Iterator<Item = (usize, u64)> {
    let mut next = start;
    core::iter::from_fn(move || {
        if next >= end {
            return None;
        }
        let word = next >> WORD_SHIFT;
        let shift = next % FRAMES_PER_WORD;
        let len = (FRAMES_PER_WORD - shift).min(end - next);
        next += len;
        Some((word, mask(shift, len)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_covers_padding_and_both_summaries() {
        assert_eq!(storage_words(0), 1 + 2 + 2);
        assert_eq!(storage_words(1), 1 + 2 + 2);
        assert_eq!(storage_words(64), 2 + 2 + 2);
        assert_eq!(storage_words(262_144), 4_097 + 2 * 65 + 2 * 2);
        assert_eq!(storage_words(4_194_304), 65_537 + 2 * 1_025 + 2 * 17);
        // No overflow for the largest request.
        assert!(storage_words(usize::MAX) > usize::MAX / 64);
    }

    #[test]
    fn span_rejects_frames_past_the_address_space() {
        let top = Frame::from_number(FRAME_NUMBER_LIMIT - 4);
        assert!(Span::new(top, 4).is_ok());
        assert_eq!(Span::new(top, 5), Err(BitmapError::Overflow));
        assert_eq!(
            Span::new(Frame::from_number(u64::MAX), 1),
            Err(BitmapError::Overflow)
        );
    }

    #[test]
    fn bits_of_classifies_foreign_and_overlong_ranges() {
        let span = Span::new(Frame::from_number(100), 50).unwrap();
        assert_eq!((span.origin, span.first), (64, 36));
        let at = |start, count| span.bits_of(FrameRange::new(Frame::from_number(start), count));
        assert_eq!(at(100, 50), Ok((36, 86)));
        assert_eq!(at(99, 1), Err(Misfit::NotOwned));
        assert_eq!(at(150, 1), Err(Misfit::NotOwned));
        assert_eq!(at(149, 2), Err(Misfit::OutOfRange));
        assert_eq!(at(149, u64::MAX), Err(Misfit::OutOfRange));
        assert_eq!(at(120, 0), Err(Misfit::Empty));
    }

    #[test]
    fn run_starts_finds_runs_of_every_length() {
        let word = 0b1111_0111_0011u64;
        assert_eq!(run_starts(word, 1), word);
        assert_eq!(run_starts(word, 2), 0b0111_0011_0001);
        assert_eq!(run_starts(word, 3), 0b0011_0001_0000);
        assert_eq!(run_starts(word, 4), 0b0001_0000_0000);
        assert_eq!(run_starts(word, 5), 0);
        assert_eq!(run_starts(u64::MAX, 64), 1);
        assert_eq!(run_starts(u64::MAX, 63), 0b11);
    }

    #[test]
    fn align_masks_mark_multiples() {
        assert_eq!(align_mask(1), u64::MAX);
        assert_eq!(align_mask(2), 0x5555_5555_5555_5555);
        assert_eq!(align_mask(8), 0x0101_0101_0101_0101);
        assert_eq!(align_mask(32), 0x0000_0001_0000_0001);
        assert_eq!(align_mask(64), 1);
        assert_eq!(align_mask(4), 0x1111_1111_1111_1111);
        assert_eq!(align_mask(16), 0x0001_0001_0001_0001);
        assert_eq!(align_mask(1 << 20), 1);
    }

    #[test]
    fn word_masks_split_at_word_boundaries() {
        let mut pieces = word_masks(60, 130);
        assert_eq!(pieces.next(), Some((0, 0xf << 60)));
        assert_eq!(pieces.next(), Some((1, u64::MAX)));
        assert_eq!(pieces.next(), Some((2, 0b11)));
        assert_eq!(pieces.next(), None);
    }

    #[test]
    fn phase_aligns_absolute_word_numbers() {
        let span = Span::new(Frame::from_number(3 * 64 + 5), 1000).unwrap();
        // Origin word 3; word 5 is absolute word 8, the first multiple of 8.
        assert_eq!(span.word_phase(8), 5);
        assert_eq!(align_up_with_phase(0, 8, 5), Some(5));
        assert_eq!(align_up_with_phase(6, 8, 5), Some(13));
        assert_eq!(align_up_with_phase(usize::MAX, 8, 5), None);
        assert_eq!(longest_run(0b0111_0110), 3);
    }
}
