//! Page sources the heap brings along: none at all (for heaps that live on
//! fixed regions), the host's allocator (tests and benchmarks), and the
//! adapters that let slab caches take pages through the heap's backend.

use core::cell::{Cell, RefCell};
use core::ptr::NonNull;

use kalloc_api::sync::{Mutex, MutexGuard};
use kalloc_api::{AllocError, FreeError, PageSource};

use crate::backend::Backend;

/// A page source with no pages: the type parameter of a heap that only ever
/// gets fixed regions ([`Heap::init_with_region`](crate::Heap::init_with_region)).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPages;

// SAFETY: it never hands out a page.
unsafe impl PageSource for NoPages {
    fn allocate_pages(
        &self,
        _count: usize,
        _align_pages: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        Err(AllocError::OutOfMemory)
    }

    unsafe fn deallocate_pages(&self, _pages: NonNull<u8>, _count: usize) -> Result<(), FreeError> {
        Err(FreeError::NotOwned)
    }
}

/// Pages from the host's `std::alloc::System`, for tests and benchmarks.
///
/// Each run is allocated with the alignment of the next power of two of its
/// page count, so that giving it back needs only the count; a request aligned
/// more than that is refused with [`AllocError::BadAlignment`] (the heap never
/// makes one: it rounds such counts up to the alignment).
#[cfg(any(test, feature = "std"))]
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemPages;

#[cfg(any(test, feature = "std"))]
impl SystemPages {
    fn layout(count: usize) -> Result<core::alloc::Layout, AllocError> {
        use kalloc_api::PAGE_SIZE;
        let bytes = count.checked_mul(PAGE_SIZE).ok_or(AllocError::Overflow)?;
        let align = count
            .checked_next_power_of_two()
            .and_then(|pages| pages.checked_mul(PAGE_SIZE))
            .ok_or(AllocError::Overflow)?;
        core::alloc::Layout::from_size_align(bytes, align).map_err(|_| AllocError::Overflow)
    }
}

// SAFETY: `System` returns memory that is ours until deallocated with the same
// layout, which `layout(count)` rebuilds; its alignment covers `align_pages`.
#[cfg(any(test, feature = "std"))]
unsafe impl PageSource for SystemPages {
    fn allocate_pages(&self, count: usize, align_pages: usize) -> Result<NonNull<u8>, AllocError> {
        use std::alloc::GlobalAlloc;
        if count == 0 {
            return Err(AllocError::ZeroSize);
        }
        if !align_pages.is_power_of_two() || align_pages > count.next_power_of_two() {
            return Err(AllocError::BadAlignment);
        }
        let layout = Self::layout(count)?;
        // SAFETY: `layout` has a non-zero size.
        NonNull::new(unsafe { std::alloc::System.alloc(layout) }).ok_or(AllocError::OutOfMemory)
    }

    unsafe fn deallocate_pages(&self, pages: NonNull<u8>, count: usize) -> Result<(), FreeError> {
        use std::alloc::GlobalAlloc;
        let layout = Self::layout(count).map_err(|_| FreeError::SizeMismatch)?;
        // SAFETY: the caller promises `pages` came from `allocate_pages(count, _)`,
        // which used this same layout.
        unsafe { std::alloc::System.dealloc(pages.as_ptr(), layout) };
        Ok(())
    }
}

/// Slab pages through a backend borrowed for one call, counting the net
/// pages taken so the heap can charge them to a size class.
pub(crate) struct BackendPages<'a, P> {
    backend: RefCell<&'a mut Backend<P>>,
    net_pages: Cell<isize>,
}

impl<'a, P: PageSource> BackendPages<'a, P> {
    #[inline]
    pub(crate) fn new(backend: &'a mut Backend<P>) -> Self {
        Self {
            backend: RefCell::new(backend),
            net_pages: Cell::new(0),
        }
    }

    /// Pages taken minus pages given back through this adapter.
    #[inline]
    pub(crate) fn net_pages(&self) -> isize {
        self.net_pages.get()
    }
}

// SAFETY: forwards to the backend, whose pages keep the source's promise (or
// are carved from regions the backend owns exclusively).
unsafe impl<P: PageSource> PageSource for BackendPages<'_, P> {
    fn allocate_pages(&self, count: usize, align_pages: usize) -> Result<NonNull<u8>, AllocError> {
        let mut backend = self
            .backend
            .try_borrow_mut()
            .map_err(|_| AllocError::OutOfMemory)?;
        let pages = backend.allocate_pages(count, align_pages)?;
        self.net_pages.set(self.net_pages.get() + count as isize);
        Ok(pages)
    }

    unsafe fn deallocate_pages(&self, pages: NonNull<u8>, count: usize) -> Result<(), FreeError> {
        let mut backend = self
            .backend
            .try_borrow_mut()
            .map_err(|_| FreeError::NotOwned)?;
        // SAFETY: the caller's promise, passed on.
        unsafe { backend.deallocate_pages(pages, count) }?;
        self.net_pages.set(self.net_pages.get() - count as isize);
        Ok(())
    }
}

/// The backend behind its lock, as the page source of per-CPU slab caches
/// that take pages from any CPU. The lock is held for one page operation
/// only.
///
/// The caches get a reference to this field of the heap itself, not to an
/// adapter built per call, so their fast paths need no stack frame to hold
/// one.
pub(crate) struct LockedBackend<P>(Mutex<Backend<P>>);

impl<P> LockedBackend<P> {
    #[cfg(not(loom))]
    pub(crate) const fn new(backend: Backend<P>) -> Self {
        Self(Mutex::new(backend))
    }

    #[cfg(loom)]
    pub(crate) fn new(backend: Backend<P>) -> Self {
        Self(Mutex::new(backend))
    }

    /// Locks the backend.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, Backend<P>> {
        self.0.lock()
    }
}

// SAFETY: as for `BackendPages`; the mutex makes each call exclusive.
unsafe impl<P: PageSource> PageSource for LockedBackend<P> {
    fn allocate_pages(&self, count: usize, align_pages: usize) -> Result<NonNull<u8>, AllocError> {
        self.lock().allocate_pages(count, align_pages)
    }

    unsafe fn deallocate_pages(&self, pages: NonNull<u8>, count: usize) -> Result<(), FreeError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.lock().deallocate_pages(pages, count) }
    }
}
