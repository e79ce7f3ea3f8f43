//! The lock-free "may have a free frame" summary of the atomic bitmap.
//!
//! # Invariant
//!
//! *A summary bit may say "maybe free" of a word that is empty, but it never
//! says "empty" of a word that has a free frame, except while an operation
//! that will set it again is still running.* The same holds one level up: a
//! top bit is set for every summary word with a bit set. So a sweep of the
//! summary finds every frame that is free for its whole duration once the
//! operations running when it started have returned, and at quiescence every
//! free frame is reachable from the top level.
//!
//! # Protocol
//!
//! - [`publish`](Summary::publish): whoever turns a leaf word from 0 (no free
//!   frame) to non-zero (a free, or a claim rolled back) sets the word's
//!   summary bit *after* that leaf update, and the top bit when the summary
//!   word was 0. A free of whole words sets their bits together after all
//!   of its leaf updates ([`publish_range`](Summary::publish_range)).
//! - [`withdraw`](Summary::withdraw): whoever sees a leaf word at 0 clears
//!   its summary bit, then reads the leaf again and publishes it when a free
//!   came in between; likewise one level up.
//!
//! Why no free is lost: let free `F` be the last 0 → non-zero transition of a
//! leaf, and withdrawer `W` have seen that leaf at 0 (before `F`, in the
//! leaf's modification order). Both update the summary word with
//! read-modify-writes, which the summary word's modification order puts in
//! sequence. If `F`'s set comes after `W`'s clear, the bit stays set. If it
//! comes before, `W`'s acquiring clear reads from (a release sequence headed
//! by) `F`'s releasing set, so `F`'s leaf update happens before `W`'s second
//! read, which therefore sees the leaf non-zero and publishes again. All of
//! this needs only acquire/release read-modify-writes on the summary, which
//! is also what loom checks (loom weakens `SeqCst` accesses to `AcqRel`).

use crate::layout::{FRAMES_PER_WORD, WORD_SHIFT, word_masks};
use kalloc_api::sync::{AtomicU64, Ordering};

/// One "may have a free frame" bit per leaf word, and one per summary word.
pub(crate) struct Summary<'a> {
    bits: &'a [AtomicU64],
    top: &'a [AtomicU64],
}

#[inline]
const fn split(index: usize) -> (usize, u64) {
    (index >> WORD_SHIFT, 1 << (index % FRAMES_PER_WORD))
}

impl<'a> Summary<'a> {
    /// A summary with every bit clear (all words empty).
    pub(crate) fn new(bits: &'a [AtomicU64], top: &'a [AtomicU64]) -> Self {
        for word in bits.iter().chain(top) {
            word.store(0, Ordering::Relaxed);
        }
        Self { bits, top }
    }

    /// Leaf word `index` has just gone from no free frame to some.
    #[inline]
    pub(crate) fn publish(&self, index: usize) {
        let (word, bit) = split(index);
        let before = self.bits[word].fetch_or(bit, Ordering::AcqRel);
        if before == 0 {
            let (top_word, top_bit) = split(word);
            self.top[top_word].fetch_or(top_bit, Ordering::AcqRel);
        }
    }

    /// Leaf words `start..end` have each just gone from no free frame to
    /// some: [`publish`](Self::publish) for all of them, one read-modify-write
    /// per summary word.
    #[inline]
    pub(crate) fn publish_range(&self, start: usize, end: usize) {
        for (word, bits) in word_masks(start, end) {
            let before = self.bits[word].fetch_or(bits, Ordering::AcqRel);
            if before == 0 {
                let (top_word, top_bit) = split(word);
                self.top[top_word].fetch_or(top_bit, Ordering::AcqRel);
            }
        }
    }

    /// Leaf words `start..end` of `leaves` were each just seen with no free
    /// frame: [`withdraw`](Self::withdraw) for all of them, clearing their
    /// bits with one read-modify-write per summary word before reading each
    /// leaf again.
    pub(crate) fn withdraw_range(&self, start: usize, end: usize, leaves: &[AtomicU64]) {
        for (word, bits) in word_masks(start, end) {
            let before = self.bits[word].fetch_and(!bits, Ordering::AcqRel);
            let base = word << WORD_SHIFT;
            // Bits already clear are another withdrawer's to recheck.
            let mut cleared = before & bits;
            while cleared != 0 {
                let index = base + cleared.trailing_zeros() as usize;
                if leaves[index].load(Ordering::Acquire) != 0 {
                    self.publish(index);
                }
                cleared &= cleared - 1;
            }
            if before != 0 && before & !bits == 0 {
                let (top_word, top_bit) = split(word);
                self.top[top_word].fetch_and(!top_bit, Ordering::AcqRel);
                if self.bits[word].load(Ordering::Acquire) != 0 {
                    self.top[top_word].fetch_or(top_bit, Ordering::AcqRel);
                }
            }
        }
    }

    /// Leaf word `index`, which is `leaf`, was seen with no free frame.
    #[cold]
    pub(crate) fn withdraw(&self, index: usize, leaf: &AtomicU64) {
        let (word, bit) = split(index);
        let before = self.bits[word].fetch_and(!bit, Ordering::AcqRel);
        if before & bit == 0 {
            // Another withdrawer cleared it and reads the leaf again itself.
            return;
        }
        if leaf.load(Ordering::Acquire) != 0 {
            self.publish(index);
            return;
        }
        if before == bit {
            let (top_word, top_bit) = split(word);
            self.top[top_word].fetch_and(!top_bit, Ordering::AcqRel);
            if self.bits[word].load(Ordering::Acquire) != 0 {
                self.top[top_word].fetch_or(top_bit, Ordering::AcqRel);
            }
        }
    }

    /// Whether leaf word `index` may have a free frame.
    pub(crate) fn contains(&self, index: usize) -> bool {
        let (word, bit) = split(index);
        self.bits[word].load(Ordering::Acquire) & bit != 0
    }

    /// Whether the top bit of summary word `word` is set.
    pub(crate) fn top_contains(&self, word: usize) -> bool {
        let (top_word, top_bit) = split(word);
        self.top[top_word].load(Ordering::Acquire) & top_bit != 0
    }

    /// Summary words (for invariant checks).
    pub(crate) fn summary_words(&self) -> usize {
        self.bits.len()
    }

    /// The smallest leaf word index `>= from` that may have a free frame.
    #[inline]
    pub(crate) fn next_from(&self, from: usize) -> Option<usize> {
        let word = from >> WORD_SHIFT;
        let here =
            self.bits.get(word)?.load(Ordering::Acquire) & (u64::MAX << (from % FRAMES_PER_WORD));
        if here != 0 {
            return Some((word << WORD_SHIFT) + here.trailing_zeros() as usize);
        }
        self.next_word_from(word + 1)
    }

    #[cold]
    fn next_word_from(&self, word: usize) -> Option<usize> {
        let (mut top_word, _) = split(word);
        let mut pending = self.top.get(top_word)?.load(Ordering::Acquire)
            & (u64::MAX << (word % FRAMES_PER_WORD));
        loop {
            while pending != 0 {
                let word = (top_word << WORD_SHIFT) + pending.trailing_zeros() as usize;
                // A stale top bit (its summary word emptied meanwhile) is skipped.
                let bits = self.bits[word].load(Ordering::Acquire);
                if bits != 0 {
                    return Some((word << WORD_SHIFT) + bits.trailing_zeros() as usize);
                }
                pending &= pending - 1;
            }
            top_word += 1;
            pending = self.top.get(top_word)?.load(Ordering::Acquire);
        }
    }

    /// Words that may have a free frame: `>= from` in order, then below `from`.
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
}
