//! `LockedHeap`: a [`Heap`] behind one lock, usable as `#[global_allocator]`
//! and as an allocator-api2 `Allocator`.

use core::alloc::Layout;
use core::ptr::NonNull;

use kalloc_api::sync::{Mutex, MutexGuard};
use kalloc_api::{AllocError, FreeError, PageSource};

use crate::backend::InitError;
use crate::heap::{Heap, OomHandler};
use crate::pages::NoPages;
use crate::stats::HeapStats;

/// A [`Heap`] shared by every CPU through one spin lock.
///
/// ```
/// use core::alloc::{GlobalAlloc, Layout};
/// use kalloc_heap::LockedHeap;
///
/// static HEAP: LockedHeap = LockedHeap::new();
///
/// #[repr(align(4096))]
/// struct Arena([u8; 64 * 1024]);
/// static mut ARENA: Arena = Arena([0; 64 * 1024]);
///
/// // SAFETY: the arena is used by nothing but the heap, for ever.
/// unsafe { HEAP.init_with_region(&raw mut ARENA.0 as *mut u8, 64 * 1024) }.unwrap();
/// let layout = Layout::new::<[u64; 4]>();
/// // SAFETY: the layout has a non-zero size.
/// let block = unsafe { HEAP.alloc(layout) };
/// assert!(!block.is_null());
/// // SAFETY: `block` came from `HEAP` with this layout.
/// unsafe { HEAP.dealloc(block, layout) };
/// ```
pub struct LockedHeap<P: PageSource = NoPages> {
    heap: Mutex<Heap<P>>,
}

impl<P: PageSource> Default for LockedHeap<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: PageSource> LockedHeap<P> {
    /// A locked heap with no memory yet.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            heap: Mutex::new(Heap::new()),
        }
    }

    /// A locked heap with no memory yet.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            heap: Mutex::new(Heap::new()),
        }
    }

    /// A locked heap taking all its memory from `pages`, ready at compile
    /// time: what a `#[global_allocator]` over a page source needs.
    #[cfg(not(loom))]
    pub const fn with_pages(pages: P) -> Self {
        Self {
            heap: Mutex::new(Heap::with_pages(pages)),
        }
    }

    /// Takes `pages` as the source of all memory (see [`Heap::init`]).
    ///
    /// # Errors
    /// [`InitError::AlreadyInitialized`] when it already has memory.
    pub fn init(&self, pages: P) -> Result<(), InitError> {
        self.heap.lock().init(pages)
    }

    /// Adds a fixed region (see [`Heap::init_with_region`]).
    ///
    /// # Errors
    /// [`InitError::RegionTooSmall`] for a null or tiny region.
    ///
    /// # Safety
    /// As [`Heap::init_with_region`].
    pub unsafe fn init_with_region(&self, start: *mut u8, len: usize) -> Result<(), InitError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.heap.lock().init_with_region(start, len) }
    }

    /// Takes the lock, for several operations in a row.
    pub fn lock(&self) -> MutexGuard<'_, Heap<P>> {
        self.heap.lock()
    }

    /// Sets the out-of-memory handler, called with no lock held.
    pub fn set_oom_handler(&self, handler: Option<OomHandler>) {
        self.heap.lock().set_oom_handler(handler);
    }

    /// Gives back empty slabs and page runs; returns the bytes given back.
    pub fn shrink(&self) -> usize {
        self.heap.lock().shrink()
    }

    /// Gives back slabs unused since the previous reap, as
    /// [`Heap::reap`](crate::Heap::reap); returns the bytes given back.
    pub fn reap(&self) -> usize {
        self.heap.lock().reap()
    }

    /// A snapshot of the heap's usage.
    pub fn stats(&self) -> HeapStats {
        self.heap.lock().stats()
    }

    /// Allocates like [`Heap::allocate`], calling the out-of-memory handler
    /// with the lock released.
    ///
    /// # Errors
    /// As [`Heap::allocate`].
    #[inline]
    pub fn allocate(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        let (result, handler) = {
            let mut heap = self.heap.lock();
            (heap.allocate_without_handler(layout), heap.oom_handler())
        };
        match result {
            Err(AllocError::OutOfMemory) => retry_after_handler(&self.heap, layout, handler),
            other => other,
        }
    }
}

impl<P: PageSource> LockedHeap<P> {
    /// Frees a block (see [`Heap::deallocate`]).
    ///
    /// # Errors
    /// As [`Heap::deallocate`].
    ///
    /// # Safety
    /// As [`Heap::deallocate`].
    #[inline]
    pub unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) -> Result<(), FreeError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.heap.lock().deallocate(ptr, layout) }
    }

    /// Resizes a block (see [`Heap::reallocate`]), calling the out-of-memory
    /// handler with the lock released.
    ///
    /// # Errors
    /// As [`Heap::reallocate`].
    ///
    /// # Safety
    /// As [`Heap::reallocate`].
    pub unsafe fn reallocate(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        let (result, handler) = {
            let mut heap = self.heap.lock();
            // SAFETY: the caller's promise, passed on.
            (
                unsafe { heap.reallocate_without_handler(ptr, layout, new_size) },
                heap.oom_handler(),
            )
        };
        match (result, handler) {
            (Err(AllocError::OutOfMemory), Some(handler)) if handler(&layout) => {
                // SAFETY: the failed attempt left the block untouched.
                unsafe {
                    self.heap
                        .lock()
                        .reallocate_without_handler(ptr, layout, new_size)
                }
            }
            (result, _) => result,
        }
    }
}

/// Calls `handler` with no lock held and retries once if it reclaimed memory.
#[cold]
pub(crate) fn retry_after_handler<P: PageSource>(
    heap: &Mutex<Heap<P>>,
    layout: Layout,
    handler: Option<OomHandler>,
) -> Result<NonNull<u8>, AllocError> {
    match handler {
        Some(handler) if handler(&layout) => heap.lock().allocate_without_handler(layout),
        _ => Err(AllocError::OutOfMemory),
    }
}

crate::allocator_api::impl_global_alloc!(LockedHeap<P>, [P: PageSource]);
crate::allocator_api::impl_allocator!(LockedHeap<P>, [P: PageSource]);
