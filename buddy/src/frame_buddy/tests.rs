extern crate std;

use std::vec::Vec;

use kalloc_api::{AllocError, Frame, FrameAllocator, FrameRange, FreeError};

use super::BuddyFrameAllocator;
use crate::error::BuddyError;
use crate::meta::FrameMeta;

/// Physical 0x8000_0000: a fake address, never dereferenced.
const BASE_PFN: u64 = 0x8_0000;

fn storage(frames: usize) -> Vec<FrameMeta> {
    (0..frames).map(|_| FrameMeta::new()).collect()
}

fn range(first: u64, count: u64) -> FrameRange {
    FrameRange::new(Frame::from_number(first), count)
}

fn full<const M: usize>(meta: &mut [FrameMeta], frames: usize) -> BuddyFrameAllocator<'_, M> {
    let mut buddy =
        BuddyFrameAllocator::<M>::new(Frame::from_number(BASE_PFN), frames, meta).unwrap();
    buddy.add_range(range(BASE_PFN, frames as u64)).unwrap();
    buddy
}

fn blocks<const M: usize>(buddy: &BuddyFrameAllocator<'_, M>) -> Vec<usize> {
    buddy.free_blocks_per_order().collect()
}

#[test]
fn aligned_range_becomes_one_top_order_block() {
    let mut meta = storage(1024);
    let buddy = full::<10>(&mut meta, 1024);
    assert_eq!(buddy.free_frames(), 1024);
    assert_eq!(buddy.total_frames(), 1024);
    assert_eq!(blocks(&buddy), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(buddy.largest_free_order(), Some(10));
    buddy.check_invariants().unwrap();
}

#[test]
fn unaligned_range_splits_into_largest_aligned_blocks() {
    let mut meta = storage(64);
    let mut buddy =
        BuddyFrameAllocator::<4>::new(Frame::from_number(BASE_PFN), 64, &mut meta).unwrap();
    // Frames 3..=40: 3, 4..8, 8..16, 16..32, 32..40, 40.
    buddy.add_range(range(BASE_PFN + 3, 38)).unwrap();
    assert_eq!(blocks(&buddy), [2, 0, 1, 2, 1]);
    assert_eq!(buddy.free_frames(), 38);
    assert_eq!(buddy.free_frames_per_order().sum::<usize>(), 38);
    buddy.check_invariants().unwrap();
}

#[test]
fn later_ranges_merge_with_earlier_neighbours() {
    let mut meta = storage(64);
    let mut buddy =
        BuddyFrameAllocator::<5>::new(Frame::from_number(BASE_PFN), 64, &mut meta).unwrap();
    buddy.add_range(range(BASE_PFN + 1, 31)).unwrap();
    buddy.add_range(range(BASE_PFN + 40, 8)).unwrap();
    buddy.check_invariants().unwrap();
    buddy.add_range(range(BASE_PFN, 1)).unwrap();
    assert_eq!(blocks(&buddy), [0, 0, 0, 1, 0, 1]);
    buddy.check_invariants().unwrap();
    assert_eq!(
        buddy.add_range(range(BASE_PFN + 44, 2)),
        Err(BuddyError::AlreadyAdded {
            frame: BASE_PFN + 44
        })
    );
    assert_eq!(
        buddy.add_range(range(BASE_PFN + 60, 5)),
        Err(BuddyError::OutsideWindow)
    );
    assert_eq!(
        buddy.add_range(range(BASE_PFN - 1, 2)),
        Err(BuddyError::OutsideWindow)
    );
    assert_eq!(buddy.total_frames(), 40);
    buddy.check_invariants().unwrap();
}

#[test]
fn construction_checks_storage_and_window() {
    let mut meta = storage(8);
    assert_eq!(
        BuddyFrameAllocator::<3>::new(Frame::from_number(0), 9, &mut meta).err(),
        Some(BuddyError::StorageTooSmall {
            needed: 9,
            given: 8
        })
    );
    assert_eq!(
        BuddyFrameAllocator::<3>::new(Frame::from_number(u64::MAX >> 12), 2, &mut meta).err(),
        Some(BuddyError::WindowTooLarge)
    );
    let mut empty = BuddyFrameAllocator::<3>::new(Frame::from_number(0), 8, &mut meta).unwrap();
    assert_eq!(empty.allocate(1, 1), Err(AllocError::Uninitialized));
    assert_eq!(
        BuddyFrameAllocator::<3>::empty().allocate_order(0),
        Err(AllocError::Uninitialized)
    );
}

#[test]
fn frame_zero_and_window_edges_are_usable() {
    let mut meta = storage(8);
    let mut buddy = BuddyFrameAllocator::<3>::new(Frame::from_number(0), 8, &mut meta).unwrap();
    buddy.add_range(range(0, 8)).unwrap();
    assert_eq!(blocks(&buddy), [0, 0, 0, 1]);
    let all = buddy.allocate(8, 8).unwrap();
    assert_eq!(all, range(0, 8));
    buddy.deallocate(all).unwrap();
    buddy.check_invariants().unwrap();
}

#[test]
fn split_and_merge_restore_one_block() {
    let mut meta = storage(16);
    let mut buddy = full::<4>(&mut meta, 16);
    let frames: Vec<Frame> = (0..16).map(|_| buddy.allocate_frame().unwrap()).collect();
    assert_eq!(buddy.allocate_frame(), Err(AllocError::OutOfMemory));
    buddy.check_invariants().unwrap();
    for frame in frames.iter().rev() {
        buddy.deallocate_frame(*frame).unwrap();
        buddy.check_invariants().unwrap();
    }
    assert_eq!(blocks(&buddy), [0, 0, 0, 0, 1]);
}

#[test]
fn order_allocations_are_naturally_aligned() {
    let mut meta = storage(1024);
    let mut buddy =
        BuddyFrameAllocator::<10>::new(Frame::from_number(BASE_PFN + 3), 1000, &mut meta).unwrap();
    buddy.add_range(range(BASE_PFN + 3, 1000)).unwrap();
    for order in 0..=8 {
        let frame = buddy.allocate_order(order).unwrap();
        assert_eq!(frame.number() % (1 << order), 0, "order {order}");
    }
    assert_eq!(buddy.allocate_order(11), Err(AllocError::OutOfMemory));
    buddy.check_invariants().unwrap();
}

#[test]
fn counted_allocation_gives_back_the_tail() {
    let mut meta = storage(16);
    let mut buddy = full::<4>(&mut meta, 16);
    let run = buddy.allocate(5, 1).unwrap();
    assert_eq!(run.count(), 5);
    assert_eq!(buddy.free_frames(), 11);
    buddy.check_invariants().unwrap();
    // The tail 5..8 is free again and usable.
    let single = buddy.allocate_frame().unwrap();
    assert!(!run.contains(single));
    buddy.deallocate_frame(single).unwrap();
    buddy.deallocate(run).unwrap();
    assert_eq!(blocks(&buddy), [0, 0, 0, 0, 1]);
    buddy.check_invariants().unwrap();
}

#[test]
fn alignment_larger_than_count_is_kept() {
    let mut meta = storage(64);
    let mut buddy =
        BuddyFrameAllocator::<6>::new(Frame::from_number(BASE_PFN), 64, &mut meta).unwrap();
    buddy.add_range(range(BASE_PFN + 1, 63)).unwrap();
    let run = buddy.allocate(3, 16).unwrap();
    assert_eq!(run.start().number() % 16, 0);
    assert_eq!(buddy.free_frames(), 60);
    buddy.check_invariants().unwrap();
    buddy.deallocate(run).unwrap();
    assert_eq!(buddy.free_frames(), 63);
    assert_eq!(buddy.allocate(1, 128), Err(AllocError::BadAlignment));
    assert_eq!(buddy.allocate(1, 3), Err(AllocError::BadAlignment));
    buddy.check_invariants().unwrap();
}

#[test]
fn zero_size_and_oversized_requests_are_rejected() {
    let mut meta = storage(16);
    let mut buddy = full::<4>(&mut meta, 16);
    assert_eq!(buddy.allocate(0, 1), Err(AllocError::ZeroSize));
    assert_eq!(buddy.allocate(17, 1), Err(AllocError::OutOfMemory));
    assert_eq!(buddy.allocate(usize::MAX, 1), Err(AllocError::OutOfMemory));
    assert_eq!(buddy.free_frames(), 16);
    buddy.check_invariants().unwrap();
}

#[test]
fn exhaustion_is_reported_and_loses_nothing() {
    let mut meta = storage(16);
    let mut buddy = full::<4>(&mut meta, 16);
    let a = buddy.allocate(12, 1).unwrap();
    assert_eq!(buddy.allocate(8, 1), Err(AllocError::OutOfMemory));
    assert_eq!(buddy.allocate_order(3), Err(AllocError::OutOfMemory));
    assert_eq!(buddy.free_frames(), 4);
    let b = buddy.allocate(4, 1).unwrap();
    assert_eq!(buddy.allocate_frame(), Err(AllocError::OutOfMemory));
    buddy.deallocate(a).unwrap();
    buddy.deallocate(b).unwrap();
    assert_eq!(buddy.free_frames(), 16);
    buddy.check_invariants().unwrap();
}

#[test]
fn double_free_is_reported() {
    let mut meta = storage(16);
    let mut buddy = full::<4>(&mut meta, 16);
    let keep = buddy.allocate_frame().unwrap();
    let frame = buddy.allocate_frame().unwrap();
    buddy.deallocate_frame(frame).unwrap();
    assert_eq!(buddy.deallocate_frame(frame), Err(FreeError::DoubleFree));
    // Freed and merged into a larger free block: still a double free.
    buddy.deallocate_frame(keep).unwrap();
    assert_eq!(buddy.deallocate_frame(frame), Err(FreeError::DoubleFree));
    assert_eq!(buddy.deallocate_frame(keep), Err(FreeError::DoubleFree));
    let run = buddy.allocate(3, 1).unwrap();
    buddy.deallocate(run).unwrap();
    assert_eq!(buddy.deallocate(run), Err(FreeError::DoubleFree));
    assert_eq!(buddy.free_frames(), 16);
    buddy.check_invariants().unwrap();
}

#[test]
fn foreign_frames_are_not_owned() {
    let mut meta = storage(32);
    let mut buddy =
        BuddyFrameAllocator::<4>::new(Frame::from_number(BASE_PFN), 32, &mut meta).unwrap();
    buddy.add_range(range(BASE_PFN, 16)).unwrap();
    assert_eq!(
        buddy.deallocate_frame(Frame::from_number(5)),
        Err(FreeError::NotOwned)
    );
    assert_eq!(
        buddy.deallocate_frame(Frame::from_number(BASE_PFN + 32)),
        Err(FreeError::NotOwned)
    );
    // In the window but never added.
    assert_eq!(
        buddy.deallocate_frame(Frame::from_number(BASE_PFN + 20)),
        Err(FreeError::NotOwned)
    );
    assert_eq!(
        buddy.deallocate_order(Frame::from_number(BASE_PFN + 16), 4),
        Err(FreeError::NotOwned)
    );
    assert_eq!(buddy.free_frames(), 16);
    buddy.check_invariants().unwrap();
}

#[test]
fn misaligned_frame_is_reported() {
    let mut meta = storage(16);
    let mut buddy = full::<4>(&mut meta, 16);
    let block = buddy.allocate_order(2).unwrap();
    let inside = Frame::from_number(block.number() + 1);
    assert_eq!(buddy.deallocate_frame(inside), Err(FreeError::Misaligned));
    assert_eq!(
        buddy.deallocate_order(inside, 0),
        Err(FreeError::Misaligned)
    );
    // The second piece of a three-frame run is not the start of an allocation.
    let run = buddy.allocate(3, 1).unwrap();
    let second_piece = Frame::from_number(run.start().number() + 2);
    assert_eq!(
        buddy.deallocate_frame(second_piece),
        Err(FreeError::Misaligned)
    );
    assert_eq!(buddy.free_frames(), 16 - 4 - 3);
    buddy.deallocate_order(block, 2).unwrap();
    buddy.deallocate(run).unwrap();
    assert_eq!(buddy.free_frames(), 16);
    buddy.check_invariants().unwrap();
}

#[test]
fn wrong_size_is_reported() {
    let mut meta = storage(16);
    let mut buddy = full::<4>(&mut meta, 16);
    let block = buddy.allocate_order(2).unwrap();
    assert_eq!(
        buddy.deallocate_order(block, 1),
        Err(FreeError::SizeMismatch)
    );
    assert_eq!(
        buddy.deallocate_order(block, 3),
        Err(FreeError::SizeMismatch)
    );
    assert_eq!(
        buddy.deallocate_order(block, 40),
        Err(FreeError::SizeMismatch)
    );
    assert_eq!(
        buddy.deallocate(FrameRange::new(block, 0)),
        Err(FreeError::SizeMismatch)
    );
    assert_eq!(
        buddy.deallocate(FrameRange::new(block, 3)),
        Err(FreeError::SizeMismatch)
    );
    let run = buddy.allocate(3, 1).unwrap();
    // Only part of a run, or a run plus its neighbour, is refused too.
    assert_eq!(
        buddy.deallocate(FrameRange::new(run.start(), 2)),
        Err(FreeError::SizeMismatch)
    );
    assert_eq!(
        buddy.deallocate(FrameRange::new(run.start(), 4)),
        Err(FreeError::SizeMismatch)
    );
    assert_eq!(buddy.free_frames(), 16 - 4 - 3);
    buddy.check_invariants().unwrap();
    buddy.deallocate(FrameRange::new(block, 4)).unwrap();
    buddy.deallocate(run).unwrap();
    assert_eq!(buddy.free_frames(), 16);
}

#[test]
fn range_past_the_window_is_out_of_range() {
    let mut meta = storage(16);
    let mut buddy = full::<4>(&mut meta, 16);
    let frames: Vec<Frame> = (0..16).map(|_| buddy.allocate_frame().unwrap()).collect();
    let last = *frames.iter().max().unwrap();
    assert_eq!(
        buddy.deallocate(FrameRange::new(last, 2)),
        Err(FreeError::OutOfRange)
    );
    assert_eq!(buddy.free_frames(), 0);
    buddy.check_invariants().unwrap();
}

#[test]
fn invariant_checker_catches_corruption() {
    let mut meta = storage(16);
    let mut buddy = full::<4>(&mut meta, 16);
    let frame = buddy.allocate_frame().unwrap();
    buddy.check_invariants().unwrap();
    buddy.free += 1;
    assert_eq!(
        buddy.check_invariants(),
        Err(crate::InvariantError::FrameCountMismatch)
    );
    buddy.free -= 1;
    let saved = buddy.counts[0];
    buddy.counts[0] += 1;
    assert!(buddy.check_invariants().is_err());
    buddy.counts[0] = saved;
    // A free order-0 tag on the allocated frame next to a free order-0 buddy.
    let index = buddy.index_of(frame.number()).unwrap() as usize;
    buddy.meta[index]
        .tag
        .store(crate::meta::tag::free(0), super::RELAXED);
    assert!(buddy.check_invariants().is_err());
    buddy.meta[index]
        .tag
        .store(crate::meta::tag::ALLOC, super::RELAXED);
    buddy.check_invariants().unwrap();
}

/// xorshift64*: a tiny seeded generator so failures reproduce.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random allocations and frees against a model of which frames are live:
/// no overlap, inside added memory, alignment kept, free + used = total.
#[test]
fn random_operations_match_the_model() {
    const WINDOW: usize = 1500;
    let steps = if cfg!(miri) { 300 } else { 20_000 };
    let mut meta = storage(WINDOW);
    let base = BASE_PFN + 5;
    let mut buddy =
        BuddyFrameAllocator::<6>::new(Frame::from_number(base), WINDOW, &mut meta).unwrap();
    // Two disjoint ranges, one unaligned, leaving a hole in the window.
    buddy.add_range(range(base + 3, 700)).unwrap();
    buddy.add_range(range(base + 800, 650)).unwrap();
    let owned = |pfn: u64| {
        (base + 3..base + 703).contains(&pfn) || (base + 800..base + 1450).contains(&pfn)
    };
    let total = 1350usize;
    let mut live: Vec<FrameRange> = Vec::new();
    let mut in_use = [false; WINDOW];
    let mut used = 0usize;
    let mut rng = Rng::new(0x5eed_b0dd);
    let (mut allocations, mut frees, mut failures) = (0, 0, 0);
    for step in 0..steps {
        if live.is_empty() || rng.below(100) < 55 {
            let count = match rng.below(4) {
                0 => 1,
                1 => 1 << rng.below(7),
                _ => 1 + rng.below(70) as usize,
            };
            let align = 1usize << rng.below(5);
            match buddy.allocate(count, align) {
                Ok(run) => {
                    assert_eq!(run.count(), count as u64);
                    assert_eq!(run.start().number() % align as u64, 0, "step {step}");
                    for frame in run {
                        assert!(owned(frame.number()), "step {step}: {frame:?} not owned");
                        let i = (frame.number() - base) as usize;
                        assert!(!in_use[i], "step {step}: {frame:?} handed out twice");
                        in_use[i] = true;
                    }
                    used += count;
                    live.push(run);
                    allocations += 1;
                }
                Err(AllocError::OutOfMemory) => failures += 1,
                Err(other) => panic!("step {step}: unexpected {other:?}"),
            }
        } else {
            let run = live.swap_remove(rng.below(live.len() as u64) as usize);
            buddy.deallocate(run).unwrap();
            for frame in run {
                in_use[(frame.number() - base) as usize] = false;
            }
            used -= run.count() as usize;
            frees += 1;
            if rng.below(8) == 0 {
                assert_eq!(
                    buddy.deallocate(run),
                    Err(FreeError::DoubleFree),
                    "step {step}"
                );
            }
        }
        assert_eq!(buddy.free_frames() + used, total, "step {step}");
        if step % 97 == 0 {
            buddy.check_invariants().unwrap();
        }
    }
    // The run exercised both full and roomy states.
    assert!(
        allocations > steps / 4 && frees > steps / 8,
        "{allocations} / {frees}"
    );
    assert!(failures > 0 || cfg!(miri), "memory never ran out");
    for run in live.drain(..) {
        buddy.deallocate(run).unwrap();
    }
    buddy.check_invariants().unwrap();
    assert_eq!(buddy.free_frames(), total);
}
