extern crate std;

use std::vec::Vec;

use super::*;
use crate::test_support::{Reference, XorShift};
use kalloc_api::sync::AtomicU8;

const BASE: Frame = Frame::from_number(100);

fn storage(frames: usize) -> Vec<AtomicU64> {
    (0..atomic_storage_words(frames))
        .map(|_| AtomicU64::new(0xdead_beef))
        .collect()
}

fn all_free(frames: usize, storage: &[AtomicU64]) -> AtomicBitmapFrameAllocator<'_> {
    let bitmap = AtomicBitmapFrameAllocator::new(BASE, frames, storage).unwrap();
    bitmap
        .mark_free(FrameRange::new(BASE, frames as u64))
        .unwrap();
    bitmap
}

fn one(number: u64) -> FrameRange {
    FrameRange::new(Frame::from_number(number), 1)
}

#[test]
fn new_allocator_has_every_frame_used() {
    let words = storage(300);
    let bitmap = AtomicBitmapFrameAllocator::new(BASE, 300, &words).unwrap();
    assert_eq!((bitmap.free_frames(), bitmap.total_frames()), (0, 300));
    assert_eq!(bitmap.allocate_on(0, 1, 1), Err(AllocError::OutOfMemory));
    assert_eq!(bitmap.allocate_on(1, 64, 64), Err(AllocError::OutOfMemory));
    assert_eq!(bitmap.managed(), FrameRange::new(BASE, 300));
    bitmap.check_quiescent().unwrap();
}

#[test]
fn short_storage_is_refused() {
    let words = storage(1000);
    assert_eq!(
        AtomicBitmapFrameAllocator::new(BASE, 1000, &words[1..]).err(),
        Some(BitmapError::StorageTooSmall {
            needed: words.len(),
            provided: words.len() - 1,
        })
    );
}

#[test]
fn every_frame_is_handed_out_once_then_out_of_memory() {
    let words = storage(300);
    let bitmap = all_free(300, &words);
    let mut seen = Vec::new();
    for cpu in (0..300).map(|i| i % 5) {
        seen.push(bitmap.allocate_on(cpu, 1, 1).unwrap().start().number());
    }
    seen.sort_unstable();
    assert!(seen.iter().copied().eq(100..400));
    assert_eq!(bitmap.allocate_on(3, 1, 1), Err(AllocError::OutOfMemory));
    assert_eq!(bitmap.free_frames(), 0);
    bitmap.deallocate_on(4, one(250)).unwrap();
    assert_eq!(bitmap.allocate_on(0, 1, 1), Ok(one(250)));
    bitmap.check_quiescent().unwrap();
}

#[test]
fn double_free_is_reported_and_changes_nothing() {
    let words = storage(200);
    let bitmap = all_free(200, &words);
    let frame = bitmap.allocate_on(0, 1, 1).unwrap();
    bitmap.deallocate_on(0, frame).unwrap();
    assert_eq!(bitmap.deallocate_on(1, frame), Err(FreeError::DoubleFree));
    let run = bitmap.allocate_on(0, 128, 64).unwrap();
    let overhang = FrameRange::new(run.start(), 129);
    assert_eq!(
        bitmap.deallocate_on(0, overhang),
        Err(FreeError::DoubleFree)
    );
    assert_eq!(bitmap.free_frames(), 72);
    assert_eq!(bitmap.is_free(run.start()), Some(false));
    bitmap.deallocate_on(0, run).unwrap();
    assert_eq!(bitmap.free_frames(), 200);
    bitmap.check_quiescent().unwrap();
}

#[test]
fn foreign_and_overlong_frees_are_refused_and_change_nothing() {
    let words = storage(64);
    let bitmap = all_free(64, &words);
    let run = bitmap.allocate_on(0, 64, 1).unwrap_or_else(|_| {
        // 64 frames from 100 straddle a word: take them as reservations instead.
        bitmap.mark_used(FrameRange::new(BASE, 64)).unwrap();
        FrameRange::new(BASE, 64)
    });
    assert_eq!(bitmap.deallocate_on(0, one(99)), Err(FreeError::NotOwned));
    assert_eq!(bitmap.deallocate_on(0, one(164)), Err(FreeError::NotOwned));
    let long = FrameRange::new(Frame::from_number(163), 2);
    assert_eq!(bitmap.deallocate_on(0, long), Err(FreeError::OutOfRange));
    let empty = FrameRange::new(Frame::from_number(150), 0);
    assert_eq!(bitmap.deallocate_on(0, empty), Err(FreeError::SizeMismatch));
    assert_eq!(bitmap.free_frames(), 0);
    bitmap.deallocate_on(0, run).unwrap();
    assert_eq!(bitmap.free_frames(), 64);
    bitmap.check_quiescent().unwrap();
}

#[test]
fn bad_requests_are_refused_and_lose_nothing() {
    let words = storage(100);
    let bitmap = all_free(100, &words);
    assert_eq!(bitmap.allocate_on(0, 0, 1), Err(AllocError::ZeroSize));
    assert_eq!(bitmap.allocate_on(0, 1, 0), Err(AllocError::BadAlignment));
    assert_eq!(bitmap.allocate_on(0, 1, 6), Err(AllocError::BadAlignment));
    assert_eq!(bitmap.allocate_on(0, 101, 1), Err(AllocError::OutOfMemory));
    assert_eq!(
        bitmap.allocate_on(0, usize::MAX, 1),
        Err(AllocError::OutOfMemory)
    );
    assert_eq!(
        bitmap.allocate_on(0, 1, 1 << 62),
        Err(AllocError::OutOfMemory)
    );
    assert_eq!(bitmap.free_frames(), 100);
    assert_eq!(bitmap.largest_free_run(), 100);
    bitmap.check_quiescent().unwrap();
}

#[test]
fn runs_keep_absolute_alignment() {
    let words = storage(5000);
    let bitmap = all_free(5000, &words);
    for (count, align) in [
        (3, 4),
        (1, 64),
        (64, 64),
        (100, 128),
        (512, 512),
        (70, 2),
        (1, 256),
    ] {
        let run = bitmap.allocate_on(1, count, align).unwrap();
        assert_eq!(run.start().number() % align as u64, 0, "{count} at {align}");
        assert_eq!(run.count(), count as u64);
        assert!(bitmap.managed().covers(run));
    }
    bitmap.check_quiescent().unwrap();
}

#[test]
fn blocked_huge_frame_is_rolled_back_and_the_next_block_used() {
    let words = storage(2048);
    let bitmap = AtomicBitmapFrameAllocator::new(Frame::from_number(0), 2048, &words).unwrap();
    bitmap
        .mark_free(FrameRange::new(Frame::from_number(0), 2048))
        .unwrap();
    // The first block's last frame is taken: its first seven words are claimed, then given back.
    bitmap.mark_used(one(511)).unwrap();
    let huge = bitmap.allocate_on(0, 512, 512).unwrap();
    assert_eq!(huge.start().number(), 512);
    assert_eq!(bitmap.free_frames(), 2048 - 513);
    assert_eq!(bitmap.largest_free_run(), 1024);
    bitmap.check_quiescent().unwrap();
}

#[test]
fn shared_reference_is_a_frame_allocator_with_thread_cpu_ids() {
    let words = storage(256);
    let bitmap = all_free(256, &words).with_cpu_id(kalloc_api::ThreadCpuId);
    let mut frames = &bitmap;
    let frame = frames.allocate_frame().unwrap();
    assert_eq!(frames.used_frames(), 1);
    frames.deallocate_frame(frame).unwrap();
    assert_eq!(frames.deallocate_frame(frame), Err(FreeError::DoubleFree));
    assert_eq!(FrameAllocator::free_frames(&frames), 256);
}

#[test]
#[cfg_attr(miri, ignore = "builds pointers from integers")]
fn offset_pages_make_it_a_page_source() {
    use kalloc_api::{OffsetPages, PageSource};
    let words = storage(64);
    let bitmap = AtomicBitmapFrameAllocator::new(Frame::from_number(0x100), 64, &words).unwrap();
    bitmap
        .mark_free(FrameRange::new(Frame::from_number(0x100), 64))
        .unwrap();
    // SAFETY: no page is dereferenced; only addresses are compared.
    let pages = unsafe { OffsetPages::new(&bitmap, 0x1000_0000) };
    let page = pages.allocate_pages(4, 4).unwrap();
    assert_eq!(page.as_ptr() as usize, 0x1000_0000 + 0x10_0000);
    // SAFETY: `page` came from `pages` with 4 pages.
    unsafe { pages.deallocate_pages(page, 4) }.unwrap();
    assert_eq!(bitmap.free_frames(), 64);
}

#[test]
fn random_operations_match_the_reference_model() {
    // miri runs about a thousand times slower: one small configuration there.
    let (steps, configs): (usize, &[(u64, u64, usize)]) = if cfg!(miri) {
        (200, &[(5, 37, 200)])
    } else {
        (6_000, &[(5, 0, 700), (6, 100, 1000), (7, 37, 4100)])
    };
    for &(seed, base, frames) in configs {
        let words = storage(frames);
        let base = Frame::from_number(base);
        let bitmap = AtomicBitmapFrameAllocator::new(base, frames, &words).unwrap();
        let mut model = Reference::new(base.number(), frames);
        let mut rng = XorShift::new(seed);
        for step in 0..steps {
            let cpu = rng.below(2 * CPU_SLOTS);
            match rng.below(10) {
                0..=3 => {
                    let (count, align) = rng.request();
                    let result = bitmap.allocate_on(cpu, count, align);
                    model.check_allocation(count, align, result, count == 1);
                }
                4..=6 => {
                    if let Some(run) = model.take_live(&mut rng) {
                        assert_eq!(bitmap.deallocate_on(cpu, run), Ok(()), "step {step}");
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
                        assert_eq!(bitmap.deallocate_on(cpu, range), Err(FreeError::DoubleFree));
                    }
                }
            }
            assert_eq!(bitmap.free_frames(), model.free_frames(), "step {step}");
            bitmap.check_quiescent().unwrap();
        }
        assert_eq!(bitmap.largest_free_run(), model.largest_free_run());
    }
}

/// Threads allocate and free at random; an owner byte per frame catches any
/// frame handed to two threads at once, and the count is exact at the end.
#[test]
fn threads_never_share_a_frame_and_counts_end_exact() {
    const FRAMES: usize = 2000;
    const THREADS: usize = 4;
    let steps = if cfg!(miri) { 100 } else { 20_000 };
    let words = storage(FRAMES);
    let bitmap = all_free(FRAMES, &words);
    let owners: Vec<AtomicU8> = (0..FRAMES).map(|_| AtomicU8::new(0)).collect();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (bitmap, owners) = (&bitmap, &owners);
            scope.spawn(move || {
                let mut rng = XorShift::new(thread as u64 + 11);
                let mut live = Vec::new();
                for _ in 0..steps {
                    if rng.below(2) == 0 || live.len() > 200 {
                        if let Some(run) = live.pop() {
                            release(owners, run);
                            bitmap.deallocate_on(thread, run).unwrap();
                        }
                        continue;
                    }
                    let (count, align) = if rng.below(8) == 0 { (8, 8) } else { (1, 1) };
                    if let Ok(run) = bitmap.allocate_on(thread, count, align) {
                        for frame in run {
                            let slot = &owners[(frame.number() - BASE.number()) as usize];
                            let before = slot.swap(thread as u8 + 1, Ordering::Relaxed);
                            assert_eq!(before, 0, "frame {frame:?} handed out twice");
                        }
                        live.push(run);
                    }
                }
                for run in live {
                    release(owners, run);
                    bitmap.deallocate_on(thread, run).unwrap();
                }
            });
        }
    });
    assert_eq!(bitmap.free_frames(), FRAMES);
    bitmap.check_quiescent().unwrap();
}

fn release(owners: &[AtomicU8], run: FrameRange) {
    for frame in run {
        owners[(frame.number() - BASE.number()) as usize].store(0, Ordering::Relaxed);
    }
}
