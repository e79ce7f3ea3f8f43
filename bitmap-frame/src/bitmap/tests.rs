extern crate std;

use std::vec;
use std::vec::Vec;

use super::*;
use crate::test_support::{Reference, XorShift};

const BASE: Frame = Frame::from_number(100);

fn storage(frames: usize) -> Vec<u64> {
    vec![0xdead_beef; storage_words(frames)]
}

fn all_free(frames: usize, storage: &mut [u64]) -> BitmapFrameAllocator<'_> {
    let mut bitmap = BitmapFrameAllocator::new(BASE, frames, storage).unwrap();
    bitmap
        .mark_free(FrameRange::new(BASE, frames as u64))
        .unwrap();
    bitmap
}

fn one(number: u64) -> FrameRange {
    FrameRange::new(Frame::from_number(number), 1)
}

#[test]
fn new_allocator_has_every_frame_used_whatever_the_storage_held() {
    let mut words = storage(300);
    let mut bitmap = BitmapFrameAllocator::new(BASE, 300, &mut words).unwrap();
    assert_eq!((bitmap.free_frames(), bitmap.total_frames()), (0, 300));
    assert_eq!(bitmap.allocate_frame(), Err(AllocError::OutOfMemory));
    assert_eq!(bitmap.largest_free_run(), 0);
    assert_eq!(bitmap.managed(), FrameRange::new(BASE, 300));
    bitmap.check_invariants().unwrap();
}

#[test]
fn short_storage_and_unaddressable_frames_are_refused() {
    let mut words = vec![0; storage_words(1000) - 1];
    assert_eq!(
        BitmapFrameAllocator::new(BASE, 1000, &mut words).err(),
        Some(BitmapError::StorageTooSmall {
            needed: storage_words(1000),
            provided: storage_words(1000) - 1,
        })
    );
    let mut words = storage(8);
    let last = Frame::from_number((1 << 52) - 4);
    assert_eq!(
        BitmapFrameAllocator::new(last, 8, &mut words).err(),
        Some(BitmapError::Overflow)
    );
}

#[test]
fn single_frames_come_out_in_order_until_exhaustion_without_loss() {
    let mut words = storage(130);
    let mut bitmap = all_free(130, &mut words);
    for expected in 100..230 {
        assert_eq!(bitmap.allocate_frame(), Ok(Frame::from_number(expected)));
    }
    assert_eq!(bitmap.allocate_frame(), Err(AllocError::OutOfMemory));
    assert_eq!(bitmap.free_frames(), 0);
    bitmap.deallocate(one(170)).unwrap();
    assert_eq!(bitmap.allocate_frame(), Ok(Frame::from_number(170)));
    bitmap.check_invariants().unwrap();
}

#[test]
fn double_free_is_reported_and_changes_nothing() {
    let mut words = storage(200);
    let mut bitmap = all_free(200, &mut words);
    let frame = bitmap.allocate_frame().unwrap();
    bitmap.deallocate_frame(frame).unwrap();
    assert_eq!(bitmap.deallocate_frame(frame), Err(FreeError::DoubleFree));
    // A run that is only partly allocated is refused whole.
    let run = bitmap.allocate(70, 1).unwrap();
    let overhang = FrameRange::new(run.start(), 71);
    assert_eq!(bitmap.deallocate(overhang), Err(FreeError::DoubleFree));
    assert_eq!(bitmap.free_frames(), 130);
    assert_eq!(bitmap.is_free(run.start()), Some(false));
    bitmap.check_invariants().unwrap();
    bitmap.deallocate(run).unwrap();
    assert_eq!(bitmap.free_frames(), 200);
}

#[test]
fn foreign_and_overlong_frees_are_refused_and_change_nothing() {
    let mut words = storage(64);
    let mut bitmap = all_free(64, &mut words);
    let run = bitmap.allocate(64, 1).unwrap();
    assert_eq!(bitmap.deallocate(one(99)), Err(FreeError::NotOwned));
    assert_eq!(bitmap.deallocate(one(164)), Err(FreeError::NotOwned));
    assert_eq!(bitmap.deallocate(one(u64::MAX)), Err(FreeError::NotOwned));
    let long = FrameRange::new(Frame::from_number(163), 2);
    assert_eq!(bitmap.deallocate(long), Err(FreeError::OutOfRange));
    let huge = FrameRange::new(Frame::from_number(150), u64::MAX);
    assert_eq!(bitmap.deallocate(huge), Err(FreeError::OutOfRange));
    let empty = FrameRange::new(Frame::from_number(150), 0);
    assert_eq!(bitmap.deallocate(empty), Err(FreeError::SizeMismatch));
    assert_eq!(bitmap.free_frames(), 0);
    bitmap.deallocate(run).unwrap();
    bitmap.check_invariants().unwrap();
}

#[test]
fn bad_requests_are_refused_and_lose_nothing() {
    let mut words = storage(100);
    let mut bitmap = all_free(100, &mut words);
    assert_eq!(bitmap.allocate(0, 1), Err(AllocError::ZeroSize));
    assert_eq!(bitmap.allocate(1, 0), Err(AllocError::BadAlignment));
    assert_eq!(bitmap.allocate(1, 3), Err(AllocError::BadAlignment));
    assert_eq!(bitmap.allocate(101, 1), Err(AllocError::OutOfMemory));
    assert_eq!(bitmap.allocate(usize::MAX, 1), Err(AllocError::OutOfMemory));
    assert_eq!(bitmap.allocate(1, 1 << 62), Err(AllocError::OutOfMemory));
    assert_eq!(bitmap.allocate(65, 1 << 62), Err(AllocError::OutOfMemory));
    assert_eq!(bitmap.allocate(2, 1 << 62), Err(AllocError::OutOfMemory));
    assert_eq!(bitmap.free_frames(), 100);
    assert_eq!(bitmap.largest_free_run(), 100);
    bitmap.check_invariants().unwrap();
}

#[test]
fn runs_are_aligned_to_absolute_frame_numbers() {
    let mut words = storage(3000);
    let mut bitmap = all_free(3000, &mut words);
    for (count, align) in [
        (3, 4),
        (1, 64),
        (5, 8),
        (64, 64),
        (100, 128),
        (512, 512),
        (70, 2),
    ] {
        let run = bitmap.allocate(count, align).unwrap();
        assert_eq!(run.start().number() % align as u64, 0, "{count} at {align}");
        assert_eq!(run.count(), count as u64);
        assert!(bitmap.managed().covers(run));
    }
    bitmap.check_invariants().unwrap();
}

#[test]
fn run_straddles_a_word_boundary_when_that_is_the_only_fit() {
    let mut words = storage(256);
    let mut bitmap = BitmapFrameAllocator::new(Frame::from_number(0), 256, &mut words).unwrap();
    bitmap
        .mark_free(FrameRange::new(Frame::from_number(60), 8))
        .unwrap();
    assert_eq!(
        bitmap.allocate(8, 4),
        Ok(FrameRange::new(Frame::from_number(60), 8))
    );
    bitmap.check_invariants().unwrap();
}

#[test]
fn huge_frame_is_found_among_fragmented_words() {
    const FRAMES: usize = 8192;
    let mut words = storage(FRAMES);
    let mut bitmap = BitmapFrameAllocator::new(Frame::from_number(0), FRAMES, &mut words).unwrap();
    // Every 2 MiB block but the last has one used frame somewhere.
    bitmap
        .mark_free(FrameRange::new(Frame::from_number(0), FRAMES as u64))
        .unwrap();
    for block in 0..15u64 {
        bitmap.mark_used(one(block * 512 + 7 * block + 3)).unwrap();
    }
    let huge = bitmap.allocate(512, 512).unwrap();
    assert_eq!(huge.start().number(), 15 * 512);
    assert_eq!(bitmap.allocate(512, 512), Err(AllocError::OutOfMemory));
    // 511 frames fit into the top of a block whose used frame is at offset 3.
    let head = bitmap.allocate(300, 64).unwrap();
    assert_eq!(head.start().number() % 64, 0);
    bitmap.check_invariants().unwrap();
}

#[test]
fn mark_used_and_mark_free_count_only_changes() {
    let mut words = storage(200);
    let mut bitmap = all_free(200, &mut words);
    let range = FrameRange::new(Frame::from_number(150), 20);
    assert_eq!(bitmap.mark_used(range), Ok(20));
    assert_eq!(bitmap.mark_used(range), Ok(0));
    assert_eq!(bitmap.free_frames(), 180);
    assert_eq!(
        bitmap.mark_free(FrameRange::new(Frame::from_number(160), 20)),
        Ok(10)
    );
    assert_eq!(
        bitmap.mark_free(FrameRange::new(Frame::from_number(99), 2)),
        Err(BitmapError::NotOwned)
    );
    assert_eq!(
        bitmap.mark_used(FrameRange::new(Frame::from_number(290), 20)),
        Err(BitmapError::OutOfRange)
    );
    assert_eq!(
        bitmap.mark_used(FrameRange::new(Frame::from_number(5), 0)),
        Ok(0)
    );
    assert_eq!(bitmap.free_frames(), 190);
    assert_eq!(bitmap.largest_free_run(), 100 + 190 - 150 - 10 + 50 - 40);
    bitmap.check_invariants().unwrap();
}

#[test]
fn largest_free_run_spans_whole_words() {
    let mut words = storage(1000);
    let mut bitmap = BitmapFrameAllocator::new(Frame::from_number(0), 1000, &mut words).unwrap();
    bitmap
        .mark_free(FrameRange::new(Frame::from_number(10), 5))
        .unwrap();
    bitmap
        .mark_free(FrameRange::new(Frame::from_number(63), 300))
        .unwrap();
    bitmap
        .mark_free(FrameRange::new(Frame::from_number(999), 1))
        .unwrap();
    assert_eq!(bitmap.largest_free_run(), 300);
}

#[test]
fn cursor_finds_a_lone_free_frame_far_behind_it() {
    const FRAMES: usize = 64 * 64 * 3;
    let mut words = storage(FRAMES);
    let mut bitmap = all_free(FRAMES, &mut words);
    while bitmap.allocate_frame().is_ok() {}
    bitmap.deallocate(one(105)).unwrap();
    assert_eq!(bitmap.allocate_frame(), Ok(Frame::from_number(105)));
    bitmap.deallocate(one(100 + FRAMES as u64 - 1)).unwrap();
    assert_eq!(
        bitmap.allocate_frame(),
        Ok(Frame::from_number(100 + FRAMES as u64 - 1))
    );
    bitmap.check_invariants().unwrap();
}

#[test]
fn locked_bitmap_is_a_shared_frame_allocator() {
    let mut words = storage(64);
    let locked = kalloc_api::Locked::new(all_free(64, &mut words));
    let mut frames = &locked;
    let frame = frames.allocate_frame().unwrap();
    assert_eq!(locked.free_frames(), 63);
    frames.deallocate_frame(frame).unwrap();
    assert_eq!(frames.deallocate_frame(frame), Err(FreeError::DoubleFree));
}

/// Random allocations, frees, reservations and bad frees, each checked against
/// a per-frame reference, with every invariant checked after every step.
#[test]
fn random_operations_match_the_reference_model() {
    // miri runs about a thousand times slower: one small configuration there.
    let (steps, configs): (usize, &[(u64, u64, usize)]) = if cfg!(miri) {
        (200, &[(1, 37, 200)])
    } else {
        (
            6_000,
            &[(1, 0, 700), (2, 100, 1000), (3, 37, 4100), (4, 512, 64)],
        )
    };
    for &(seed, base, frames) in configs {
        let mut words = storage(frames);
        let base = Frame::from_number(base);
        let mut bitmap = BitmapFrameAllocator::new(base, frames, &mut words).unwrap();
        let mut model = Reference::new(base.number(), frames);
        let mut rng = XorShift::new(seed);
        for step in 0..steps {
            match rng.below(10) {
                0..=3 => {
                    let (count, align) = rng.request();
                    let result = bitmap.allocate(count, align);
                    model.check_allocation(count, align, result, true);
                }
                4..=6 => {
                    if let Some(run) = model.take_live(&mut rng) {
                        assert_eq!(bitmap.deallocate(run), Ok(()), "step {step}");
                        model.set_free(run);
                    }
                }
                7 => {
                    let range = model.random_range(&mut rng);
                    let expected = model.count_free(range);
                    assert_eq!(bitmap.mark_used(range), Ok(expected));
                    model.reserve(range);
                }
                8 => {
                    if let Some(range) = model.random_reservation(&mut rng) {
                        assert_eq!(bitmap.mark_free(range), Ok(range.count() as usize));
                        model.set_free(range);
                    }
                }
                _ => {
                    let range = model.random_range(&mut rng);
                    if model.count_free(range) > 0 {
                        assert_eq!(bitmap.deallocate(range), Err(FreeError::DoubleFree));
                    }
                }
            }
            assert_eq!(bitmap.free_frames(), model.free_frames(), "step {step}");
            assert_eq!(bitmap.used_frames() + bitmap.free_frames(), frames);
            bitmap.check_invariants().unwrap();
        }
        assert_eq!(bitmap.largest_free_run(), model.largest_free_run());
    }
}
