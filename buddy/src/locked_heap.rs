//! `LockedBuddyHeap`: a [`BuddyHeap`] behind the sync shim's lock, usable as
//! the `#[global_allocator]`.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use kalloc_api::sync::{Mutex, MutexGuard};

use crate::heap::BuddyHeap;

/// A [`BuddyHeap`] shared through a spin lock, implementing [`GlobalAlloc`]:
/// failed allocations return null, bad frees are ignored, nothing panics.
///
/// ```
/// use core::alloc::{GlobalAlloc, Layout};
/// use kalloc_buddy::LockedBuddyHeap;
///
/// static HEAP: LockedBuddyHeap<32> = LockedBuddyHeap::new();
///
/// #[repr(align(4096))]
/// struct Arena([u8; 8192]);
/// static mut ARENA: Arena = Arena([0; 8192]);
///
/// // SAFETY: the static arena is handed to the heap once and used only through it.
/// unsafe { HEAP.add_region(core::ptr::addr_of_mut!(ARENA).cast(), 8192) };
/// let layout = Layout::new::<[u64; 4]>();
/// // SAFETY: a non-zero layout; the block is freed with the same layout.
/// unsafe {
///     let block = HEAP.alloc(layout);
///     assert!(!block.is_null());
///     HEAP.dealloc(block, layout);
/// }
/// ```
pub struct LockedBuddyHeap<const ORDERS: usize> {
    inner: Mutex<BuddyHeap<ORDERS>>,
}

impl<const ORDERS: usize> LockedBuddyHeap<ORDERS> {
    /// An empty heap, usable in a `static`.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            inner: Mutex::new(BuddyHeap::new()),
        }
    }

    /// An empty heap.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(BuddyHeap::new()),
        }
    }

    /// Adds memory; see [`BuddyHeap::add_region`].
    ///
    /// # Safety
    /// As [`BuddyHeap::add_region`].
    pub unsafe fn add_region(&self, start: *mut u8, len: usize) -> usize {
        // SAFETY: the caller's promise is passed on unchanged.
        unsafe { self.inner.lock().add_region(start, len) }
    }

    /// Locks the heap, for statistics or direct use.
    pub fn lock(&self) -> MutexGuard<'_, BuddyHeap<ORDERS>> {
        self.inner.lock()
    }
}

impl<const ORDERS: usize> Default for LockedBuddyHeap<ORDERS> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: blocks come from `BuddyHeap::allocate`, which hands out each byte to
// one owner at a time, aligned as the layout asks; failures return null.
unsafe impl<const ORDERS: usize> GlobalAlloc for LockedBuddyHeap<ORDERS> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.inner
            .lock()
            .allocate(layout)
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(block) = NonNull::new(ptr) {
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` on this
            // heap with `layout`. A detected error leaves the heap unchanged and
            // has nobody to be reported to.
            let _ = unsafe { self.inner.lock().deallocate(block, layout) };
        }
    }
}
