//! kalloc's frame allocators, behind [`FrameAllocBench`].

use kalloc_api::sync::AtomicU64;
use kalloc_api::{Frame, FrameAllocator, FrameRange};
use kalloc_bitmap_frame::{
    AtomicBitmapFrameAllocator, BitmapFrameAllocator, atomic_storage_words, storage_words,
};
use kalloc_buddy::{BuddyFrameAllocator, FrameMeta, PerCpuBuddy};

use super::FrameAllocBench;
use crate::cpu::{BENCH_CPUS, BenchCpu};
use crate::owned::Owned;

/// First frame number of the memory our allocators manage: 1 GiB, aligned
/// to every run size the workloads ask for, so frame numbers compare with the
/// peers' (which count from 0) alignment for alignment.
pub const BASE_FRAME: u64 = 1 << 18;

/// Largest buddy order (2^10 frames = 4 MiB, as Linux).
pub const BUDDY_MAX_ORDER: usize = 10;

fn managed(frames: usize) -> FrameRange {
    FrameRange::new(Frame::from_number(BASE_FRAME), frames as u64)
}

#[inline]
fn start_of(range: FrameRange) -> usize {
    range.start().number() as usize
}

#[inline]
fn run(start: usize, count: usize) -> FrameRange {
    FrameRange::new(Frame::from_number(start as u64), count as u64)
}

/// `kalloc_bitmap_frame::BitmapFrameAllocator`, used through `&mut self`.
pub struct KallocBitmap(Owned<BitmapFrameAllocator<'static>, [u64]>);

impl FrameAllocBench for KallocBitmap {
    const NAME: &'static str = "kalloc-bitmap";
    const OURS: bool = true;

    fn new(frames: usize) -> Self {
        let storage = vec![0u64; storage_words(frames)].into_boxed_slice();
        Self(Owned::new_mut(storage, |words| {
            let mut bitmap = BitmapFrameAllocator::new(managed(frames).start(), frames, words)
                .expect("bitmap storage");
            bitmap
                .mark_free(managed(frames))
                .expect("frames inside the bitmap");
            bitmap
        }))
    }

    #[inline]
    fn allocate(&mut self, count: usize, align: usize) -> Option<usize> {
        self.0.allocate(count, align).ok().map(start_of)
    }

    #[inline]
    fn free(&mut self, start: usize, count: usize, _align: usize) {
        let freed = self.0.deallocate(run(start, count));
        debug_assert!(freed.is_ok(), "{freed:?}");
    }
}

/// The lock-free bitmap measured: each benchmark thread its own CPU, so each
/// starts its searches at its own cursor, as a kernel's CPUs would.
pub type AtomicBitmapFront = AtomicBitmapFrameAllocator<'static, BenchCpu>;

/// `kalloc_bitmap_frame::AtomicBitmapFrameAllocator`, the lock-free variant,
/// used through `&self`.
pub struct KallocAtomicBitmap(Owned<AtomicBitmapFront, [AtomicU64]>);

impl KallocAtomicBitmap {
    /// The allocator, for sharing between threads.
    pub fn shared(&self) -> &AtomicBitmapFront {
        &self.0
    }
}

impl FrameAllocBench for KallocAtomicBitmap {
    const NAME: &'static str = "kalloc-bitmap-atomic";
    const OURS: bool = true;

    fn new(frames: usize) -> Self {
        let storage: Box<[AtomicU64]> = (0..atomic_storage_words(frames))
            .map(|_| AtomicU64::new(0))
            .collect();
        Self(Owned::new_shared(storage, |words| {
            let bitmap = AtomicBitmapFrameAllocator::new(managed(frames).start(), frames, words)
                .expect("bitmap storage");
            bitmap
                .mark_free(managed(frames))
                .expect("frames inside the bitmap");
            bitmap.with_cpu_id(BenchCpu)
        }))
    }

    #[inline]
    fn allocate(&mut self, count: usize, align: usize) -> Option<usize> {
        (&*self.0).allocate(count, align).ok().map(start_of)
    }

    #[inline]
    fn free(&mut self, start: usize, count: usize, _align: usize) {
        let freed = (&*self.0).deallocate(run(start, count));
        debug_assert!(freed.is_ok(), "{freed:?}");
    }
}

fn buddy_storage(frames: usize) -> Box<[FrameMeta]> {
    (0..frames).map(|_| FrameMeta::new()).collect()
}

fn new_buddy(
    frames: usize,
    storage: &'static mut [FrameMeta],
) -> BuddyFrameAllocator<'static, BUDDY_MAX_ORDER> {
    let mut buddy =
        BuddyFrameAllocator::new(managed(frames).start(), frames, storage).expect("buddy storage");
    buddy
        .add_range(managed(frames))
        .expect("frames inside the window");
    buddy
}

/// `kalloc_buddy::BuddyFrameAllocator`, used through `&mut self`.
pub struct KallocBuddy(Owned<BuddyFrameAllocator<'static, BUDDY_MAX_ORDER>, [FrameMeta]>);

impl FrameAllocBench for KallocBuddy {
    const NAME: &'static str = "kalloc-buddy";
    const OURS: bool = true;

    fn new(frames: usize) -> Self {
        Self(Owned::new_mut(buddy_storage(frames), |meta| {
            new_buddy(frames, meta)
        }))
    }

    #[inline]
    fn allocate(&mut self, count: usize, align: usize) -> Option<usize> {
        self.0.allocate(count, align).ok().map(start_of)
    }

    #[inline]
    fn free(&mut self, start: usize, count: usize, _align: usize) {
        let freed = self.0.deallocate(run(start, count));
        debug_assert!(freed.is_ok(), "{freed:?}");
    }
}

/// The per-CPU buddy front measured: [`BENCH_CPUS`] caches.
pub type PerCpuBuddyFront = PerCpuBuddy<'static, BenchCpu, BENCH_CPUS, BUDDY_MAX_ORDER>;

/// `kalloc_buddy::PerCpuBuddy`: per-CPU caches of single frames over the
/// locked buddy allocator, used through `&self`.
pub struct KallocPerCpuBuddy(Owned<PerCpuBuddyFront, [FrameMeta]>);

impl KallocPerCpuBuddy {
    /// The front, for sharing between threads.
    pub fn shared(&self) -> &PerCpuBuddyFront {
        &self.0
    }
}

impl FrameAllocBench for KallocPerCpuBuddy {
    const NAME: &'static str = "kalloc-buddy-pcp";
    const OURS: bool = true;

    fn new(frames: usize) -> Self {
        Self(Owned::new_mut(buddy_storage(frames), |meta| {
            PerCpuBuddy::new(new_buddy(frames, meta), BenchCpu)
        }))
    }

    #[inline]
    fn allocate(&mut self, count: usize, align: usize) -> Option<usize> {
        (&*self.0).allocate(count, align).ok().map(start_of)
    }

    #[inline]
    fn free(&mut self, start: usize, count: usize, _align: usize) {
        let freed = (&*self.0).deallocate(run(start, count));
        debug_assert!(freed.is_ok(), "{freed:?}");
    }
}
