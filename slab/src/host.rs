//! `HostPages`: a [`PageSource`] over `std::alloc`, for tests, fuzzing and
//! benchmarks on a host. Never used in a kernel.

extern crate std;

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::alloc::{Layout, alloc, dealloc};

use kalloc_api::{AllocError, FreeError, PAGE_SIZE, PageSource};

/// Pages from the host allocator, counted so tests can check every page came
/// back, with an optional limit to provoke exhaustion.
///
/// Each run of `count` pages is aligned to `max(align_pages,
/// count.next_power_of_two())` pages, so `deallocate_pages` can rebuild the
/// layout from `count` alone; an `align_pages` above that is refused with
/// [`AllocError::BadAlignment`].
///
/// ```
/// use kalloc_api::PageSource;
/// use kalloc_slab::HostPages;
///
/// let pages = HostPages::with_limit(2);
/// let two = pages.allocate_pages(2, 2).unwrap();
/// assert!(pages.allocate_pages(1, 1).is_err());
/// // SAFETY: `two` came from `pages` with count 2.
/// unsafe { pages.deallocate_pages(two, 2) }.unwrap();
/// assert_eq!(pages.pages_out(), 0);
/// ```
#[derive(Debug)]
pub struct HostPages {
    out: AtomicUsize,
    limit: usize,
    allocations: AtomicUsize,
}

impl HostPages {
    /// A source with no limit.
    pub const fn new() -> Self {
        Self::with_limit(usize::MAX)
    }

    /// A source that refuses to have more than `limit_pages` pages out.
    pub const fn with_limit(limit_pages: usize) -> Self {
        Self {
            out: AtomicUsize::new(0),
            limit: limit_pages,
            allocations: AtomicUsize::new(0),
        }
    }

    /// Pages handed out and not yet given back.
    pub fn pages_out(&self) -> usize {
        self.out.load(Ordering::Acquire)
    }

    /// Successful `allocate_pages` calls so far.
    pub fn allocations(&self) -> usize {
        self.allocations.load(Ordering::Relaxed)
    }

    fn layout(count: usize, align_pages: usize) -> Result<Layout, AllocError> {
        if count == 0 {
            return Err(AllocError::ZeroSize);
        }
        let natural = count
            .checked_next_power_of_two()
            .ok_or(AllocError::Overflow)?;
        if !align_pages.is_power_of_two() || align_pages > natural {
            return Err(AllocError::BadAlignment);
        }
        let size = count.checked_mul(PAGE_SIZE).ok_or(AllocError::Overflow)?;
        let align = natural.checked_mul(PAGE_SIZE).ok_or(AllocError::Overflow)?;
        Layout::from_size_align(size, align).map_err(|_| AllocError::Overflow)
    }
}

impl Default for HostPages {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every run comes from `std::alloc` with the size and alignment
// promised, is owned by the caller until given back, and is freed with the
// same layout (rebuilt from `count`).
unsafe impl PageSource for HostPages {
    fn allocate_pages(&self, count: usize, align_pages: usize) -> Result<NonNull<u8>, AllocError> {
        let layout = Self::layout(count, align_pages)?;
        let reserved = self
            .out
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |out| {
                out.checked_add(count).filter(|total| *total <= self.limit)
            });
        if reserved.is_err() {
            return Err(AllocError::OutOfMemory);
        }
        // SAFETY: the layout has a non-zero size.
        match NonNull::new(unsafe { alloc(layout) }) {
            Some(pages) => {
                self.allocations.fetch_add(1, Ordering::Relaxed);
                Ok(pages)
            }
            None => {
                self.out.fetch_sub(count, Ordering::AcqRel);
                Err(AllocError::OutOfMemory)
            }
        }
    }

    unsafe fn deallocate_pages(&self, pages: NonNull<u8>, count: usize) -> Result<(), FreeError> {
        let layout = Self::layout(count, 1).map_err(|_| FreeError::SizeMismatch)?;
        if pages.addr().get() % layout.align() != 0 {
            return Err(FreeError::Misaligned);
        }
        // SAFETY: (caller) the run came from `allocate_pages` with `count`,
        // hence with this layout, and is no longer used.
        unsafe { dealloc(pages.as_ptr(), layout) };
        self.out.fetch_sub(count, Ordering::AcqRel);
        Ok(())
    }
}
