//! Why a free was refused: a read-only look at the metadata around the
//! frame, taken only after the fast check failed.

use kalloc_api::FreeError;

use crate::frame_buddy::{BuddyFrameAllocator, Pieces};
use crate::meta::tag;

const RELAXED: core::sync::atomic::Ordering = core::sync::atomic::Ordering::Relaxed;

impl<const MAX_ORDER: usize> BuddyFrameAllocator<'_, MAX_ORDER> {
    /// Why freeing `count` frames at `index` is refused. Reads only.
    ///
    /// When the metadata shows nothing wrong (possible only for a per-CPU free
    /// whose claim failed and whose frame was then handed out again), the free
    /// raced with a reuse of the frame: a double free.
    #[cold]
    pub(crate) fn diagnose(&self, index: u32, count: u64) -> FreeError {
        let head = self.meta[index as usize].tag.load(RELAXED);
        let in_window = (index as u64)
            .checked_add(count)
            .is_some_and(|end| end <= self.meta.len() as u64);
        match head {
            tag::ABSENT => FreeError::NotOwned,
            tag::CACHED => FreeError::DoubleFree,
            _ if tag::is_free(head) => FreeError::DoubleFree,
            tag::INSIDE => match self.containing_head(index) {
                Some(owner) if tag::is_free(owner) => FreeError::DoubleFree,
                _ => FreeError::Misaligned,
            },
            _ if head & tag::CONT != 0 => FreeError::Misaligned,
            _ if count == 0 || count > 1 << MAX_ORDER => FreeError::SizeMismatch,
            _ if !in_window => FreeError::OutOfRange,
            _ if self.is_exact_allocation(index, count) => FreeError::DoubleFree,
            _ => FreeError::SizeMismatch,
        }
    }

    /// Whether `count` frames from `index` are exactly the pieces of one
    /// allocation (its start, its full length, nothing more).
    pub(crate) fn is_exact_allocation(&self, index: u32, count: u64) -> bool {
        Pieces::new(count).all(|(offset, _, head)| {
            self.meta[index as usize + offset as usize]
                .tag
                .load(RELAXED)
                == head
        })
    }

    /// The tag of the block head whose block covers the `INSIDE` frame at `index`.
    fn containing_head(&self, index: u32) -> Option<u8> {
        let pfn = self.base + u64::from(index);
        (1..=MAX_ORDER).find_map(|order| {
            let head_pfn = pfn & !((1u64 << order) - 1);
            let head = self.meta[self.index_of(head_pfn)? as usize]
                .tag
                .load(RELAXED);
            let covers = (tag::is_free(head) || tag::is_alloc(head))
                && pfn - head_pfn < 1 << tag::order(head);
            covers.then_some(head)
        })
    }
}
