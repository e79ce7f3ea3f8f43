//! The standard interfaces of the shared heaps: `GlobalAlloc`, so they can be
//! the `#[global_allocator]`, and allocator-api2's `Allocator`, so they can
//! back `allocator_api2::vec::Vec::new_in(&HEAP)` and the other collections.
//!
//! Zero-size requests get a dangling, aligned pointer and never reach the
//! heap; resizes keep the block in place where the heap can.

use core::alloc::Layout;
use core::ptr::NonNull;

/// A dangling pointer aligned for `layout`, for zero-size blocks.
#[inline]
pub(crate) fn dangling(layout: Layout) -> NonNull<u8> {
    // SAFETY: an alignment is never zero.
    unsafe { NonNull::new_unchecked(core::ptr::without_provenance_mut(layout.align())) }
}

/// Implements `allocator_api2::alloc::Allocator` for a heap type with inherent
/// `allocate`, `deallocate` and `reallocate` methods taking `&self`.
macro_rules! impl_allocator {
    ($ty:ty, [$($generics:tt)*]) => {
        // SAFETY: non-zero-size blocks come from the heap, live until
        // deallocated and keep their contents across resizes; zero-size
        // blocks are dangling and never dereferenced or freed.
        unsafe impl<$($generics)*> allocator_api2::alloc::Allocator for $ty {
            #[inline]
            fn allocate(
                &self,
                layout: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, allocator_api2::alloc::AllocError> {
                if layout.size() == 0 {
                    let ptr = $crate::allocator_api::dangling(layout);
                    return Ok(core::ptr::NonNull::slice_from_raw_parts(ptr, 0));
                }
                match <$ty>::allocate(self, layout) {
                    Ok(ptr) => Ok(core::ptr::NonNull::slice_from_raw_parts(ptr, layout.size())),
                    Err(_) => Err(allocator_api2::alloc::AllocError),
                }
            }

            #[inline]
            unsafe fn deallocate(&self, ptr: core::ptr::NonNull<u8>, layout: core::alloc::Layout) {
                if layout.size() != 0 {
                    // SAFETY: `Allocator`'s contract: `ptr` is a live block of
                    // this heap with `layout`.
                    let _ = unsafe { <$ty>::deallocate(self, ptr, layout) };
                }
            }

            unsafe fn grow(
                &self,
                ptr: core::ptr::NonNull<u8>,
                old: core::alloc::Layout,
                new: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, allocator_api2::alloc::AllocError> {
                // SAFETY: `Allocator`'s contract: `ptr` is live with `old`,
                // and `new` is at least as large.
                unsafe { $crate::allocator_api::resize(self, ptr, old, new, Self::reallocate) }
            }

            unsafe fn shrink(
                &self,
                ptr: core::ptr::NonNull<u8>,
                old: core::alloc::Layout,
                new: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, allocator_api2::alloc::AllocError> {
                // SAFETY: as for `grow`, with `new` at most as large.
                unsafe { $crate::allocator_api::resize(self, ptr, old, new, Self::reallocate) }
            }
        }
    };
}

pub(crate) use impl_allocator;

/// Implements `GlobalAlloc` for a heap type with inherent `allocate`,
/// `deallocate` and `reallocate` methods taking `&self`: null on failure,
/// never a panic.
macro_rules! impl_global_alloc {
    ($ty:ty, [$($generics:tt)*]) => {
        // SAFETY: blocks come from the heap, which hands each out once until
        // freed; failures return null and nothing panics.
        unsafe impl<$($generics)*> core::alloc::GlobalAlloc for $ty {
            #[inline]
            unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
                <$ty>::allocate(self, layout)
                    .map_or(core::ptr::null_mut(), core::ptr::NonNull::as_ptr)
            }

            #[inline]
            unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
                if let Some(ptr) = core::ptr::NonNull::new(ptr) {
                    // SAFETY: `GlobalAlloc`'s contract: `ptr` came from this heap with `layout`.
                    let _ = unsafe { <$ty>::deallocate(self, ptr, layout) };
                }
            }

            unsafe fn realloc(
                &self,
                ptr: *mut u8,
                layout: core::alloc::Layout,
                new_size: usize,
            ) -> *mut u8 {
                let Some(ptr) = core::ptr::NonNull::new(ptr) else {
                    return core::ptr::null_mut();
                };
                // SAFETY: `GlobalAlloc`'s contract: `ptr` is live with `layout`.
                let result = unsafe { <$ty>::reallocate(self, ptr, layout, new_size) };
                result.map_or(core::ptr::null_mut(), core::ptr::NonNull::as_ptr)
            }
        }
    };
}

pub(crate) use impl_global_alloc;

/// A heap's own `reallocate`, as `resize` calls it.
pub(crate) type ReallocFn<A> =
    unsafe fn(&A, NonNull<u8>, Layout, usize) -> Result<NonNull<u8>, kalloc_api::AllocError>;

/// Moves or resizes a block for `grow`/`shrink`: in place through `realloc`
/// when the alignment is unchanged, otherwise by allocate, copy, free.
///
/// # Safety
/// `ptr` is a live block of `heap` with `old` (dangling when `old` is
/// zero-size), and `realloc` is the heap's own `reallocate`.
pub(crate) unsafe fn resize<A: allocator_api2::alloc::Allocator>(
    heap: &A,
    ptr: NonNull<u8>,
    old: Layout,
    new: Layout,
    realloc: ReallocFn<A>,
) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
    if old.size() != 0 && new.size() != 0 && old.align() == new.align() {
        // SAFETY: the caller's promise: `ptr` is live with `old`.
        let moved = unsafe { realloc(heap, ptr, old, new.size()) }
            .map_err(|_| allocator_api2::alloc::AllocError)?;
        return Ok(NonNull::slice_from_raw_parts(moved, new.size()));
    }
    let fresh = heap.allocate(new)?;
    // SAFETY: both blocks are live and distinct (or zero bytes are copied).
    unsafe {
        core::ptr::copy_nonoverlapping(
            ptr.as_ptr(),
            fresh.cast::<u8>().as_ptr(),
            old.size().min(new.size()),
        );
        heap.deallocate(ptr, old);
    }
    Ok(fresh)
}
