//! A full consistency check of a [`BuddyFrameAllocator`]'s metadata, for tests,
//! fuzzing and debug builds of kernels. It costs a pass over the whole window.

use crate::error::InvariantError;
use crate::frame_buddy::{BuddyFrameAllocator, ORDER_SLOTS};
use crate::meta::{NIL, tag};

const RELAXED: core::sync::atomic::Ordering = core::sync::atomic::Ordering::Relaxed;

impl<const MAX_ORDER: usize> BuddyFrameAllocator<'_, MAX_ORDER> {
    /// Walks every free list and the whole window and reports the first broken
    /// invariant: links that disagree, a listed block not tagged free with the
    /// list's order, a misaligned block, two free buddies left unmerged, a
    /// frame outside every block, allocation pieces that are not chained, or
    /// free + allocated frames that do not add up to the total.
    ///
    /// Takes time linear in the window size; frames parked in a per-CPU cache
    /// count as allocated.
    ///
    /// # Errors
    /// The first [`InvariantError`] found.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        let listed = self.check_lists()?;
        let (free_heads, allocated) = self.check_window()?;
        if let Some(order) = (0..ORDER_SLOTS).find(|&order| free_heads[order] != self.counts[order])
        {
            return Err(InvariantError::CountMismatch { order });
        }
        if listed != self.free || self.free.checked_add(allocated) != Some(self.total) {
            return Err(InvariantError::FrameCountMismatch);
        }
        Ok(())
    }

    /// Walks each list; returns the frames on all lists.
    fn check_lists(&self) -> Result<usize, InvariantError> {
        let len = self.meta.len();
        let mut listed = 0usize;
        for order in 0..ORDER_SLOTS {
            let mut prev = NIL;
            let mut index = self.heads[order];
            let mut seen = 0usize;
            while index != NIL {
                let frame = self.base + u64::from(index);
                let Some(entry) = self.meta.get(index as usize) else {
                    return Err(InvariantError::BrokenLink { order, frame });
                };
                if entry.prev.load(RELAXED) != prev || seen >= self.counts[order] {
                    return Err(InvariantError::BrokenLink { order, frame });
                }
                if order > MAX_ORDER || entry.tag.load(RELAXED) != tag::free(order) {
                    return Err(InvariantError::WrongTag { order, frame });
                }
                if frame % (1 << order) != 0 || index as usize + (1 << order) > len {
                    return Err(InvariantError::Misplaced { order, frame });
                }
                if order < MAX_ORDER {
                    let buddy = frame ^ (1 << order);
                    if let Some(buddy_index) = self.index_of(buddy) {
                        if self.meta[buddy_index as usize].tag.load(RELAXED) == tag::free(order) {
                            return Err(InvariantError::Uncoalesced {
                                order,
                                frame: frame.min(buddy),
                            });
                        }
                    }
                }
                seen += 1;
                prev = index;
                index = entry.next.load(RELAXED);
            }
            let bit_set = self.nonempty & (1 << order) != 0;
            if seen != self.counts[order] || bit_set != (seen > 0) {
                return Err(InvariantError::CountMismatch { order });
            }
            listed += seen << order;
        }
        Ok(listed)
    }

    /// Scans the window head by head; returns free heads per order and the
    /// allocated frame count.
    fn check_window(&self) -> Result<([usize; ORDER_SLOTS], usize), InvariantError> {
        let len = self.meta.len();
        let mut free_heads = [0usize; ORDER_SLOTS];
        let mut allocated = 0usize;
        let mut expect_continuation = false;
        let mut index = 0usize;
        while index < len {
            let frame = self.base + index as u64;
            let head = self.meta[index].tag.load(RELAXED);
            let continues = tag::is_alloc(head) && head & tag::CONT != 0;
            if continues != expect_continuation {
                return Err(InvariantError::BrokenAllocation { frame });
            }
            expect_continuation = tag::is_alloc(head) && head & tag::MORE != 0;
            let size = match head {
                tag::ABSENT => 1,
                tag::CACHED => {
                    allocated += 1;
                    1
                }
                tag::INSIDE => return Err(InvariantError::OrphanFrame { frame }),
                _ => {
                    let order = tag::order(head);
                    let size = 1usize << order;
                    if order > MAX_ORDER || frame % size as u64 != 0 || index + size > len {
                        return Err(InvariantError::Misplaced { order, frame });
                    }
                    if tag::is_free(head) {
                        free_heads[order] += 1;
                    } else {
                        allocated += size;
                    }
                    size
                }
            };
            if let Some(offset) = self.meta[index + 1..index + size]
                .iter()
                .position(|m| m.tag.load(RELAXED) != tag::INSIDE)
            {
                return Err(InvariantError::OrphanFrame {
                    frame: frame + 1 + offset as u64,
                });
            }
            index += size;
        }
        if expect_continuation {
            return Err(InvariantError::BrokenAllocation {
                frame: self.base + len as u64,
            });
        }
        Ok((free_heads, allocated))
    }
}
