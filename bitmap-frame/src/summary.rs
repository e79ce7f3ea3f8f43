//! An exact two-level index set over leaf words: one bit per word, and one bit
//! per 64 of those that says "this summary word is not zero".
//!
//! [`BitmapFrameAllocator`](crate::BitmapFrameAllocator) keeps two of them:
//! words with a free frame, and words whose 64 frames are all free. Finding
//! the next member costs one masked word test and, past that word, a scan of
//! the top level, which is 17 words for 16 GiB of frames: the search cost does
//! not grow with how full the bitmap is.

use crate::layout::{FRAMES_PER_WORD, WORD_SHIFT, align_mask, word_masks};

/// A set of leaf-word indices stored as a bitmap with a summary of its own.
///
/// Invariant: bit `s` of `top` is set exactly when `bits[s] != 0`.
pub(crate) struct Summary<'a> {
    bits: &'a mut [u64],
    top: &'a mut [u64],
}

#[inline]
const fn split(index: usize) -> (usize, u64) {
    (index >> WORD_SHIFT, 1 << (index % FRAMES_PER_WORD))
}

impl<'a> Summary<'a> {
    /// An empty set over `bits`, with `top` one bit per word of `bits`.
    pub(crate) fn new(bits: &'a mut [u64], top: &'a mut [u64]) -> Self {
        debug_assert!(top.len() * FRAMES_PER_WORD >= bits.len());
        bits.fill(0);
        top.fill(0);
        Self { bits, top }
    }

    #[inline]
    pub(crate) fn insert(&mut self, index: usize) {
        let (word, bit) = split(index);
        if self.bits[word] == 0 {
            let (top_word, top_bit) = split(word);
            self.top[top_word] |= top_bit;
        }
        self.bits[word] |= bit;
    }

    #[inline]
    pub(crate) fn remove(&mut self, index: usize) {
        let (word, bit) = split(index);
        self.bits[word] &= !bit;
        if self.bits[word] == 0 {
            let (top_word, top_bit) = split(word);
            self.top[top_word] &= !top_bit;
        }
    }

    /// Inserts every index in `[start, end)`, a summary word at a time.
    pub(crate) fn insert_range(&mut self, start: usize, end: usize) {
        for (word, mask) in word_masks(start, end) {
            if self.bits[word] == 0 {
                let (top_word, top_bit) = split(word);
                self.top[top_word] |= top_bit;
            }
            self.bits[word] |= mask;
        }
    }

    /// Removes every index in `[start, end)`, a summary word at a time.
    pub(crate) fn remove_range(&mut self, start: usize, end: usize) {
        for (word, mask) in word_masks(start, end) {
            self.bits[word] &= !mask;
            if self.bits[word] == 0 {
                let (top_word, top_bit) = split(word);
                self.top[top_word] &= !top_bit;
            }
        }
    }

    #[inline]
    pub(crate) fn contains(&self, index: usize) -> bool {
        let (word, bit) = split(index);
        self.bits.get(word).is_some_and(|w| w & bit != 0)
    }

    /// The smallest member `>= from`.
    #[inline]
    pub(crate) fn next_from(&self, from: usize) -> Option<usize> {
        let word = from >> WORD_SHIFT;
        let here = *self.bits.get(word)? & (u64::MAX << (from % FRAMES_PER_WORD));
        if here != 0 {
            return Some((word << WORD_SHIFT) + here.trailing_zeros() as usize);
        }
        self.next_word_from(word + 1)
    }

    /// The smallest member `>= from`, wrapping round to the start once.
    #[inline]
    pub(crate) fn next_wrapping(&self, from: usize) -> Option<usize> {
        self.next_from(from).or_else(|| self.next_from(0))
    }

    /// Members `>= from` in order, then members below `from`: a next-fit sweep.
    pub(crate) fn iter_wrapping(&self, from: usize) -> impl Iterator<Item = usize> + '_ {
        let mut cursor = from;
        let mut wrapped = false;
        core::iter::from_fn(move || {
            loop {
                match self.next_from(cursor) {
                    Some(index) if !wrapped || index < from => {
                        cursor = index + 1;
                        return Some(index);
                    }
                    None if !wrapped => {
                        wrapped = true;
                        cursor = 0;
                    }
                    _ => return None,
                }
            }
        })
    }

    /// The first member in a summary word at index `>= word`, found through the top level.
    #[cold]
    fn next_word_from(&self, word: usize) -> Option<usize> {
        let (mut top_word, _) = split(word);
        let mut pending = *self.top.get(top_word)? & (u64::MAX << (word % FRAMES_PER_WORD));
        loop {
            if pending != 0 {
                let word = (top_word << WORD_SHIFT) + pending.trailing_zeros() as usize;
                let bits = self.bits[word];
                debug_assert!(bits != 0, "top bit set for an empty summary word");
                return Some((word << WORD_SHIFT) + bits.trailing_zeros() as usize);
            }
            top_word += 1;
            pending = *self.top.get(top_word)?;
        }
    }

    /// The first index in `[from, end)` that is not a member, if any.
    #[inline]
    pub(crate) fn first_absent(&self, from: usize, end: usize) -> Option<usize> {
        let mut index = from;
        while index < end {
            let (word, _) = split(index);
            let shift = index % FRAMES_PER_WORD;
            let absent = !self.bits.get(word).copied().unwrap_or(0) >> shift;
            let len = (FRAMES_PER_WORD - shift).min(end - index);
            if absent.trailing_zeros() < len as u32 {
                return Some(index + absent.trailing_zeros() as usize);
            }
            index += len;
        }
        None
    }

    /// The first index `i` in `[lo, hi)` with `i % align == phase` such that
    /// `i..i + len` are all members, testing a whole summary word of
    /// candidates at a time: the bits that start `len` consecutive members
    /// come from `len`'s binary doubling of shifted ANDs over the word and
    /// the next, masked to the aligned positions. `len` and `align` are at
    /// most 64, `align` a power of two and `phase < align`.
    pub(crate) fn first_aligned_run(
        &self,
        len: usize,
        align: usize,
        phase: usize,
        lo: usize,
        hi: usize,
    ) -> Option<usize> {
        debug_assert!((1..=FRAMES_PER_WORD).contains(&len));
        debug_assert!(align.is_power_of_two() && align <= FRAMES_PER_WORD && phase < align);
        if lo >= hi {
            return None;
        }
        // Aligned positions inside any summary word: word bases are multiples of 64.
        let aligned = align_mask(align) << phase;
        let (first, last) = (lo >> WORD_SHIFT, (hi - 1) >> WORD_SHIFT);
        let mut here = *self.bits.get(first)?;
        for word in first..=last.min(self.bits.len() - 1) {
            let next = self.bits.get(word + 1).copied().unwrap_or(0);
            let mut starts = run_starts_across(here, next, len) & aligned;
            if word == first {
                starts &= u64::MAX << (lo % FRAMES_PER_WORD);
            }
            if word == last {
                starts &= u64::MAX >> (FRAMES_PER_WORD - 1 - (hi - 1) % FRAMES_PER_WORD);
            }
            if starts != 0 {
                return Some((word << WORD_SHIFT) + starts.trailing_zeros() as usize);
            }
            here = next;
        }
        None
    }

    /// Members, counted (for invariant checks).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the top level matches the bits under it.
    #[cfg(test)]
    pub(crate) fn top_is_exact(&self) -> bool {
        self.bits.iter().enumerate().all(|(word, bits)| {
            (*bits != 0) == (self.top[word >> WORD_SHIFT] >> (word % 64) & 1 != 0)
        })
    }
}

/// Bits `p` of `low` that start `len` consecutive set bits of the 128-bit
/// value `high:low` (`len` in 1..=64), so runs may end in `high`.
#[inline]
fn run_starts_across(low: u64, high: u64, len: usize) -> u64 {
    let mut runs = u128::from(low) | u128::from(high) << FRAMES_PER_WORD;
    let mut have = 1;
    while have < len {
        let step = have.min(len - have);
        runs &= runs >> step;
        have += step;
    }
    runs as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_from_walks_members_in_order_across_top_words() {
        let mut bits = [0u64; 130];
        let mut top = [0u64; 3];
        let mut set = Summary::new(&mut bits, &mut top);
        for index in [3, 64 * 70 + 1, 64 * 129 + 63] {
            set.insert(index);
        }
        assert_eq!(set.next_from(0), Some(3));
        assert_eq!(set.next_from(4), Some(64 * 70 + 1));
        assert_eq!(set.next_from(64 * 70 + 2), Some(64 * 129 + 63));
        assert_eq!(set.next_from(64 * 129 + 64), None);
        assert_eq!(set.next_wrapping(64 * 70 + 2), Some(64 * 129 + 63));
        set.remove(64 * 129 + 63);
        assert_eq!(set.next_wrapping(64 * 70 + 2), Some(3));
        assert!(set.top_is_exact());
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn first_aligned_run_matches_a_plain_search() {
        let mut bits = [0u64; 9];
        let mut top = [0u64; 1];
        let mut set = Summary::new(&mut bits, &mut top);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for index in 0..9 * 64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Long stretches of members with gaps, so long runs exist.
            if state % 16 != 0 {
                set.insert(index);
            }
        }
        let plain =
            |set: &Summary<'_>, len: usize, align: usize, phase: usize, lo: usize, hi: usize| {
                (lo..hi).find(|&i| {
                    i % align == phase
                        && set.first_absent(i, i + len).is_none()
                        && i + len <= 9 * 64
                })
            };
        for len in [1, 2, 3, 5, 8, 13, 16, 31, 32, 64] {
            for align in [1, 2, 4, 8, 16, 32, 64] {
                for phase in [0, align / 2, align - 1] {
                    for (lo, hi) in [(0, 9 * 64), (70, 300), (130, 131), (500, 9 * 64)] {
                        assert_eq!(
                            set.first_aligned_run(len, align, phase, lo, hi),
                            plain(&set, len, align, phase, lo, hi),
                            "len {len} align {align} phase {phase} in {lo}..{hi}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn first_absent_stops_at_the_range_end() {
        let mut bits = [0u64; 4];
        let mut top = [0u64; 1];
        let mut set = Summary::new(&mut bits, &mut top);
        for index in 10..150 {
            set.insert(index);
        }
        assert_eq!(set.first_absent(10, 150), None);
        assert_eq!(set.first_absent(10, 151), Some(150));
        assert_eq!(set.first_absent(0, 5), Some(0));
        set.remove(100);
        assert_eq!(set.first_absent(20, 140), Some(100));
        assert!(set.contains(99) && !set.contains(100));
    }

    #[test]
    fn range_updates_keep_the_top_level_exact() {
        let mut bits = [0u64; 130];
        let mut top = [0u64; 3];
        let mut set = Summary::new(&mut bits, &mut top);
        set.insert_range(60, 64 * 70);
        assert_eq!(set.len(), 64 * 70 - 60);
        assert!(set.top_is_exact());
        set.remove_range(64, 64 * 69 + 3);
        assert_eq!(set.next_from(0), Some(60));
        assert_eq!(set.next_from(64), Some(64 * 69 + 3));
        assert!(set.top_is_exact());
        set.remove_range(0, 64 * 130);
        assert_eq!(set.next_wrapping(7), None);
        assert!(set.top_is_exact());
    }
}
