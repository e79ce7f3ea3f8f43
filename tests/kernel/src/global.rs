//! The `#[global_allocator]`: an early bump arena in `.bss` until the frame
//! allocators are up, then `kalloc-heap`'s per-hart heap, which takes its
//! pages from the locked bitmap. Blocks from the early arena may be freed at
//! any time; the address tells which allocator a block came from.

use core::alloc::{GlobalAlloc, Layout};

use kalloc_api::sync::{AtomicBool, Ordering};
use kalloc_bump::{ArenaMemory, BumpArena};
use kalloc_heap::{HeapStats, PerCpuHeap};

use crate::entry::{self, MAX_HARTS};
use crate::stack::{Hart, Pages};

/// Bytes of the early heap: enough for what runs before the frame allocators.
const EARLY_HEAP_BYTES: usize = 64 << 10;

static EARLY_MEMORY: ArenaMemory<EARLY_HEAP_BYTES> = ArenaMemory::new();

/// The main heap: small size classes on per-hart slab magazines, the rest
/// under one lock.
type MainHeap = PerCpuHeap<Pages, Hart, MAX_HARTS>;

/// The main heap before it has pages; a `static` needs it at compile time.
const fn empty_main_heap() -> MainHeap {
    match MainHeap::new(entry::hart_id as Hart) {
        Ok(heap) => heap,
        Err(_) => panic!("the heap's size classes are invalid"),
    }
}

/// Forwards to the early arena or the main heap.
pub struct KernelAllocator {
    early: BumpArena,
    main: MainHeap,
    main_ready: AtomicBool,
}

#[global_allocator]
static ALLOCATOR: KernelAllocator = KernelAllocator {
    // SAFETY: EARLY_MEMORY is private to this module and used by no other arena.
    early: unsafe { BumpArena::from_memory(&EARLY_MEMORY) },
    main: empty_main_heap(),
    main_ready: AtomicBool::new(false),
};

impl KernelAllocator {
    fn is_early(ptr: *mut u8) -> bool {
        let start = core::ptr::addr_of!(EARLY_MEMORY) as usize;
        (start..start + EARLY_HEAP_BYTES).contains(&(ptr as usize))
    }
}

// SAFETY: each block comes from exactly one of two sound allocators and goes
// back to the one that owns its address.
unsafe impl GlobalAlloc for KernelAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.main_ready.load(Ordering::Acquire) {
            // SAFETY: the caller's layout promise is passed on.
            unsafe { self.main.alloc(layout) }
        } else {
            // SAFETY: as above.
            unsafe { self.early.alloc(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Self::is_early(ptr) {
            // SAFETY: the block lies in the arena, so the arena handed it out.
            unsafe { self.early.dealloc(ptr, layout) }
        } else {
            // SAFETY: the block is not the arena's, so the main heap handed it out.
            unsafe { self.main.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !Self::is_early(ptr) {
            // SAFETY: the main heap's block; the caller's promises are passed on.
            return unsafe { self.main.realloc(ptr, layout, new_size) };
        }
        // An early block moves to whichever allocator is current.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: `new_size` is non-zero by the caller's promise.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: the old block is ours and no longer used.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

/// Gives the main heap its page source and routes new allocations to it.
pub fn switch_to_main(pages: Pages) {
    ALLOCATOR
        .main
        .init(pages)
        .unwrap_or_else(|error| panic!("main heap: {error:?}"));
    ALLOCATOR.main_ready.store(true, Ordering::Release);
}

/// Bytes the early arena handed out.
pub fn early_used() -> usize {
    ALLOCATOR.early.used()
}

/// The main heap's statistics.
pub fn stats() -> HeapStats {
    ALLOCATOR.main.stats()
}

/// Gives the main heap's empty slabs and page runs back to the bitmap;
/// returns the bytes given back.
pub fn shrink() -> usize {
    ALLOCATOR.main.shrink()
}
