//! Peer frame allocators: rcore-os `bitmap-allocator` and
//! `buddy_system_allocator::FrameAllocator`.

use std::alloc::{Layout, alloc_zeroed};

use bitmap_allocator::{BitAlloc, BitAlloc1M, BitAlloc16M};

use super::FrameAllocBench;

/// rcore-os `bitmap-allocator`: a cascade of 16-bit summaries, sized for the
/// memory (`BitAlloc1M` up to 4 GiB, `BitAlloc16M` above).
pub struct BitmapAllocatorPeer(Bits);

enum Bits {
    Small(Box<BitAlloc1M>),
    Large(Box<BitAlloc16M>),
}

/// A boxed, empty bitmap, built in place: the large ones are megabytes and
/// would overflow a thread's stack if built there first.
fn empty_bitmap<B: BitAlloc>() -> Box<B> {
    let layout = Layout::new::<B>();
    // SAFETY: bitmaps have a non-zero size.
    let raw = unsafe { alloc_zeroed(layout) }.cast::<B>();
    assert!(!raw.is_null(), "host memory for the bitmap");
    // SAFETY: `BitAlloc::DEFAULT` of the cascade types is all-zero words (no
    // frame free, empty summaries) and they hold nothing but integers, so the
    // zeroed block is a valid, empty bitmap; the layout is the type's own, as
    // `Box` requires.
    unsafe { Box::from_raw(raw) }
}

impl FrameAllocBench for BitmapAllocatorPeer {
    const NAME: &'static str = "bitmap-allocator";
    const OURS: bool = false;

    fn new(frames: usize) -> Self {
        if frames <= BitAlloc1M::CAP {
            let mut bits = empty_bitmap::<BitAlloc1M>();
            bits.insert(0..frames);
            Self(Bits::Small(bits))
        } else {
            let mut bits = empty_bitmap::<BitAlloc16M>();
            bits.insert(0..frames);
            Self(Bits::Large(bits))
        }
    }

    #[inline]
    fn allocate(&mut self, count: usize, align: usize) -> Option<usize> {
        fn on<B: BitAlloc>(bits: &mut B, count: usize, align: usize) -> Option<usize> {
            if count == 1 && align == 1 {
                bits.alloc()
            } else {
                bits.alloc_contiguous(None, count, align.trailing_zeros() as usize)
            }
        }
        match &mut self.0 {
            Bits::Small(bits) => on(&mut **bits, count, align),
            Bits::Large(bits) => on(&mut **bits, count, align),
        }
    }

    #[inline]
    fn free(&mut self, start: usize, count: usize, _align: usize) {
        fn on<B: BitAlloc>(bits: &mut B, start: usize, count: usize) {
            let freed = if count == 1 {
                bits.dealloc(start)
            } else {
                bits.dealloc_contiguous(start, count)
            };
            debug_assert!(freed, "bitmap-allocator refused a free");
        }
        match &mut self.0 {
            Bits::Small(bits) => on(&mut **bits, start, count),
            Bits::Large(bits) => on(&mut **bits, start, count),
        }
    }
}

/// `buddy_system_allocator::FrameAllocator`: a buddy system on `BTreeSet`
/// free lists (sizes rounded up to powers of two).
pub struct BuddySystemFramePeer(buddy_system_allocator::FrameAllocator<33>);

impl FrameAllocBench for BuddySystemFramePeer {
    const NAME: &'static str = "buddy_system_allocator";
    const OURS: bool = false;

    fn new(frames: usize) -> Self {
        let mut inner = buddy_system_allocator::FrameAllocator::new();
        inner.add_frame(0, frames);
        Self(inner)
    }

    #[inline]
    fn allocate(&mut self, count: usize, align: usize) -> Option<usize> {
        if align <= 1 {
            self.0.alloc(count)
        } else {
            self.0
                .alloc_aligned(Layout::from_size_align(count, align).ok()?)
        }
    }

    #[inline]
    fn free(&mut self, start: usize, count: usize, align: usize) {
        match Layout::from_size_align(count, align) {
            Ok(layout) if align > 1 => self.0.dealloc_aligned(start, layout),
            _ => self.0.dealloc(start, count),
        }
    }
}
