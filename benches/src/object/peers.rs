//! Peer object caches: `slabmalloc` and the host allocators.

use std::alloc::Layout;
use std::ptr::NonNull;

use slabmalloc::{AllocationError, ObjectPage, SCAllocator};

use super::ObjectCacheBench;
use crate::arena::{Arena, HOST_PAGE_BYTES};
use crate::host::{Host, HostAllocator, OBJECT_ALIGN};

/// Pages handed to slabmalloc are carved from host chunks of this size.
const CHUNK_BYTES: usize = 4 << 20;

/// `slabmalloc::SCAllocator` (one size class of slabmalloc's zone allocator),
/// refilled with 4 KiB pages from host chunks when it runs out.
pub struct SlabmallocPeer {
    // Declared before `chunks`: it links the pages and must go first.
    cache: SCAllocator<'static, ObjectPage<'static>>,
    layout: Layout,
    chunks: Vec<Arena>,
    pages_used_in_last: usize,
}

// SAFETY: the cache and every page it links live in `chunks`, owned by this
// value alone; moving it to another thread moves all of them.
unsafe impl Send for SlabmallocPeer {}

impl SlabmallocPeer {
    #[cold]
    fn refill(&mut self) {
        let pages_per_chunk = CHUNK_BYTES / HOST_PAGE_BYTES;
        if self.chunks.is_empty() || self.pages_used_in_last == pages_per_chunk {
            self.chunks.push(Arena::new(CHUNK_BYTES, HOST_PAGE_BYTES));
            self.pages_used_in_last = 0;
        }
        let chunk = self.chunks.last().expect("a chunk was just ensured");
        // SAFETY: the page index is below the chunk's page count.
        let page = unsafe {
            chunk
                .start()
                .as_ptr()
                .add(self.pages_used_in_last * HOST_PAGE_BYTES)
        };
        self.pages_used_in_last += 1;
        // SAFETY: `page` is a zeroed, 4 KiB-aligned, 4 KiB block of a chunk that
        // outlives the cache (field order), handed out once; `ObjectPage` is
        // exactly one such page of plain integers and pointers, for which zero
        // is a valid value, and `refill` requires an unused page.
        unsafe { self.cache.refill(&mut *page.cast::<ObjectPage<'static>>()) };
    }
}

impl ObjectCacheBench for SlabmallocPeer {
    const NAME: &'static str = "slabmalloc";
    const OURS: bool = false;

    fn new(object_size: usize) -> Self {
        Self {
            cache: SCAllocator::new(object_size),
            layout: Layout::from_size_align(object_size, OBJECT_ALIGN).expect("object layout"),
            chunks: Vec::new(),
            pages_used_in_last: 0,
        }
    }

    #[inline]
    fn alloc(&mut self) -> Option<NonNull<u8>> {
        match self.cache.allocate(self.layout) {
            Ok(object) => Some(object),
            Err(AllocationError::OutOfMemory) => {
                self.refill();
                self.cache.allocate(self.layout).ok()
            }
            Err(AllocationError::InvalidLayout) => None,
        }
    }

    #[inline]
    unsafe fn free(&mut self, object: NonNull<u8>) {
        let freed = self.cache.deallocate(object, self.layout);
        debug_assert!(freed.is_ok());
    }
}

impl<G: HostAllocator> ObjectCacheBench for Host<G> {
    const NAME: &'static str = G::NAME;
    const OURS: bool = false;

    fn new(object_size: usize) -> Self {
        Host::new(object_size)
    }

    #[inline]
    fn alloc(&mut self) -> Option<NonNull<u8>> {
        // SAFETY: the object layout has a non-zero size.
        NonNull::new(unsafe { self.allocator.alloc(self.object) })
    }

    #[inline]
    unsafe fn free(&mut self, object: NonNull<u8>) {
        // SAFETY: the caller promises `object` came from `alloc` with this layout.
        unsafe { self.allocator.dealloc(object.as_ptr(), self.object) };
    }
}
