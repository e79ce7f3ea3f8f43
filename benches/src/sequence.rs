//! Seeded heap operation sequences: the same list of allocations, frees and
//! reallocations for every heap, with blocks named by slot numbers.

use std::alloc::Layout;

use crate::rng::Rng;

/// Smallest and largest sizes of the random-actions workload, in bytes.
pub const ACTION_SIZE_BYTES: (usize, usize) = (8, 64 << 10);

/// Sizes of the mid-size workload: from just above the heaps' small
/// classes to the largest random-actions size, in bytes.
pub const MID_SIZE_BYTES: (usize, usize) = (513, 64 << 10);

/// One heap operation; slots name blocks independently of where a heap put them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapOp {
    /// Allocate a block with `layout` into the empty slot `slot`.
    Alloc {
        /// Slot that names the block.
        slot: u32,
        /// Size and alignment.
        layout: Layout,
    },
    /// Free the block in `slot`.
    Free {
        /// Slot of the block.
        slot: u32,
    },
    /// Resize the block in `slot` to `size` bytes (same alignment).
    Realloc {
        /// Slot of the block.
        slot: u32,
        /// New size in bytes.
        size: usize,
    },
}

/// A sequence of heap operations over `slots` slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpSequence {
    /// The operations, in order.
    pub ops: Vec<HeapOp>,
    /// Slots used (one more than the largest slot number).
    pub slots: usize,
}

/// Hands out slot numbers, reusing freed ones.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    free: Vec<u32>,
    next: u32,
}

impl Slots {
    pub(crate) fn take(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        })
    }

    pub(crate) fn give_back(&mut self, slot: u32) {
        self.free.push(slot);
    }

    pub(crate) fn count(&self) -> usize {
        self.next as usize
    }
}

/// A size from 8 bytes to 64 KiB, mostly small as in real programs: three
/// quarters up to 512 bytes, a fifth up to 8 KiB, the rest up to 64 KiB.
pub fn action_size(rng: &mut Rng) -> usize {
    let (min, max) = ACTION_SIZE_BYTES;
    match rng.below(100) {
        0..75 => rng.between(min, 512),
        75..95 => rng.between(513, 8 << 10),
        _ => rng.between((8 << 10) + 1, max),
    }
}

impl OpSequence {
    /// Random actions (like talc's benchmark): allocate (half the time, while
    /// fewer than `max_live` blocks are live), free a random live block (three
    /// tenths), or reallocate one to a new random size (one fifth); sizes from
    /// [`action_size`], 8-byte aligned.
    pub fn random_actions(seed: u64, actions: usize, max_live: usize) -> Self {
        Self::churn(seed, actions, max_live, action_size, true)
    }

    /// Random actions of mid-size blocks only: allocate (half the time,
    /// while fewer than `max_live` blocks are live) or free a random live
    /// block, sizes uniform over [`MID_SIZE_BYTES`], 8-byte aligned, and no
    /// reallocations. Every call goes to the heaps' mid-size path, with no
    /// small blocks between, and no copies to time.
    pub fn mid_size_actions(seed: u64, actions: usize, max_live: usize) -> Self {
        let (min, max) = MID_SIZE_BYTES;
        Self::churn(seed, actions, max_live, |rng| rng.between(min, max), false)
    }

    /// The random-actions generator, sizes drawn by `size`; without
    /// `reallocs`, the rolls that would reallocate free instead.
    fn churn(
        seed: u64,
        actions: usize,
        max_live: usize,
        mut size: impl FnMut(&mut Rng) -> usize,
        reallocs: bool,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let mut slots = Slots::default();
        let mut live: Vec<u32> = Vec::with_capacity(max_live);
        let mut ops = Vec::with_capacity(actions);
        for _ in 0..actions {
            let roll = rng.below(10);
            if live.is_empty() || (roll < 5 && live.len() < max_live) {
                let slot = slots.take();
                let layout = Layout::from_size_align(size(&mut rng), 8).expect("a valid layout");
                live.push(slot);
                ops.push(HeapOp::Alloc { slot, layout });
            } else if roll < 8 || !reallocs {
                let slot = live.swap_remove(rng.below(live.len()));
                slots.give_back(slot);
                ops.push(HeapOp::Free { slot });
            } else {
                let slot = live[rng.below(live.len())];
                ops.push(HeapOp::Realloc {
                    slot,
                    size: size(&mut rng),
                });
            }
        }
        Self {
            ops,
            slots: slots.count(),
        }
    }

    /// Bytes requested and live after each operation, and the peak.
    pub fn peak_live_bytes(&self) -> usize {
        let mut sizes = vec![0usize; self.slots];
        let (mut live, mut peak) = (0usize, 0usize);
        for op in &self.ops {
            match *op {
                HeapOp::Alloc { slot, layout } => {
                    sizes[slot as usize] = layout.size();
                    live += layout.size();
                }
                HeapOp::Free { slot } => live -= std::mem::take(&mut sizes[slot as usize]),
                HeapOp::Realloc { slot, size } => {
                    live = live - sizes[slot as usize] + size;
                    sizes[slot as usize] = size;
                }
            }
            peak = peak.max(live);
        }
        peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_actions_are_deterministic_and_well_formed() {
        let a = OpSequence::random_actions(3, 5_000, 100);
        assert_eq!(a, OpSequence::random_actions(3, 5_000, 100));
        assert_ne!(a, OpSequence::random_actions(4, 5_000, 100));
        // Every free or realloc names a live slot; allocations only empty ones;
        // the live count never exceeds the cap.
        let mut live = vec![false; a.slots];
        for op in &a.ops {
            match *op {
                HeapOp::Alloc { slot, layout } => {
                    assert!(!live[slot as usize]);
                    assert!((8..=64 << 10).contains(&layout.size()));
                    live[slot as usize] = true;
                }
                HeapOp::Free { slot } => {
                    assert!(live[slot as usize]);
                    live[slot as usize] = false;
                }
                HeapOp::Realloc { slot, .. } => assert!(live[slot as usize]),
            }
            assert!(live.iter().filter(|l| **l).count() <= 100);
        }
        assert!(a.peak_live_bytes() > 0);
    }

    #[test]
    fn mid_size_actions_stay_mid_size_and_never_reallocate() {
        let sequence = OpSequence::mid_size_actions(3, 5_000, 100);
        assert_eq!(sequence, OpSequence::mid_size_actions(3, 5_000, 100));
        let (min, max) = MID_SIZE_BYTES;
        let mut live = vec![false; sequence.slots];
        for op in &sequence.ops {
            match *op {
                HeapOp::Alloc { slot, layout } => {
                    assert!((min..=max).contains(&layout.size()));
                    assert!(!live[slot as usize]);
                    live[slot as usize] = true;
                }
                HeapOp::Free { slot } => {
                    assert!(live[slot as usize]);
                    live[slot as usize] = false;
                }
                HeapOp::Realloc { .. } => panic!("no reallocations"),
            }
            assert!(live.iter().filter(|l| **l).count() <= 100);
        }
    }
}
