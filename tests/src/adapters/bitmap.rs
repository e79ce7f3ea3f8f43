//! `kalloc-bitmap-frame`: the bitmap frame allocator and its lock-free twin.

use kalloc_api::sync::{AtomicU64, AtomicUsize, Ordering};
use kalloc_api::{AllocError, Frame, FrameRange};
use kalloc_bitmap_frame::{
    AtomicBitmapFrameAllocator, BitmapError, BitmapFrameAllocator, atomic_storage_words,
    storage_words,
};

use crate::adapters::FrameAdapter;
use crate::driver::{Divergence, Summary, run};
use crate::model::Span;
use crate::op::Op;

/// Frames in the window: not a multiple of 64, so the last word has padding.
const WINDOW_FRAMES: usize = 700;
/// First frame of the window: not on a 64-frame boundary, so the first word
/// has padding too.
const WINDOW_BASE: u64 = 0x1_0013;
/// Ranges handed over as free (window-relative): a hole between them and
/// used frames at both ends, as a boot allocator leaves them.
const HANDED_OVER: [(u64, u64); 2] = [(5, 300), (333, 690)];
/// Frames a lock-free run search is guaranteed to look at: whole words.
const WORD_FRAMES: u64 = 64;
/// CPUs the lock-free allocator's CPU id rotates over.
const CPUS: usize = 3;

fn window_span() -> Span {
    let range = FrameRange::new(Frame::from_number(WINDOW_BASE), WINDOW_FRAMES as u64);
    (range.start_address().as_u64(), range.end_address().as_u64())
}

/// The handed-over ranges, and their byte spans.
fn handed_over() -> Vec<(FrameRange, Span)> {
    HANDED_OVER
        .iter()
        .map(|&(start, end)| {
            let range = FrameRange::new(Frame::from_number(WINDOW_BASE + start), end - start);
            let span = (range.start_address().as_u64(), range.end_address().as_u64());
            (range, span)
        })
        .collect()
}

/// A refused `mark_used` as the driver reports it: the driver reserves only
/// free frames inside the window, so any refusal is a divergence.
fn reserve_error(_: BitmapError) -> AllocError {
    AllocError::Overflow
}

/// Runs `ops` on a fresh [`BitmapFrameAllocator`] (reservations through
/// `mark_used`), its invariants checked after every step.
pub fn run_bitmap_frames(ops: &[Op]) -> Result<Summary, Divergence> {
    let mut storage = vec![0u64; storage_words(WINDOW_FRAMES)];
    let mut bitmap =
        BitmapFrameAllocator::new(Frame::from_number(WINDOW_BASE), WINDOW_FRAMES, &mut storage)
            .expect("storage sized by storage_words");
    let mut owned = Vec::new();
    for (range, span) in handed_over() {
        let freed = bitmap.mark_free(range).expect("range inside the window");
        assert_eq!(freed as u64, range.count(), "a fresh bitmap is all used");
        owned.push(span);
    }
    let mut adapter = FrameAdapter::new(bitmap, owned)
        .exhaustive()
        .with_managed(window_span())
        .with_reserve(|bitmap, range| bitmap.mark_used(range).map_err(reserve_error))
        .with_check(|bitmap| bitmap.check_invariants().map_err(str::to_owned));
    run(&mut adapter, ops)
}

/// Runs `ops`, one at a time, on a fresh [`AtomicBitmapFrameAllocator`]
/// through `&self`, with the CPU id moving on at every call so frames are
/// freed from other CPUs' cursors than they came from; the quiescent
/// invariants are checked after every step.
pub fn run_atomic_bitmap_frames(ops: &[Op]) -> Result<Summary, Divergence> {
    let storage: Vec<AtomicU64> = (0..atomic_storage_words(WINDOW_FRAMES))
        .map(|_| AtomicU64::new(0))
        .collect();
    let next = AtomicUsize::new(0);
    let cpu = || next.fetch_add(1, Ordering::Relaxed) % CPUS;
    let bitmap =
        AtomicBitmapFrameAllocator::new(Frame::from_number(WINDOW_BASE), WINDOW_FRAMES, &storage)
            .expect("storage sized by atomic_storage_words")
            .with_cpu_id(cpu);
    let mut owned = Vec::new();
    for (range, span) in handed_over() {
        let freed = bitmap.mark_free(range).expect("range inside the window");
        assert_eq!(freed as u64, range.count(), "a fresh bitmap is all used");
        owned.push(span);
    }
    let mut adapter = FrameAdapter::new(&bitmap, owned)
        .chunked(WORD_FRAMES)
        .with_managed(window_span())
        .with_reserve(|bitmap, range| bitmap.mark_used(range).map_err(reserve_error))
        .with_check(|bitmap| bitmap.check_quiescent().map_err(str::to_owned));
    run(&mut adapter, ops)
}
