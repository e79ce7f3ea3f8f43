//! Test helpers shared by the heaps' unit tests.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use kalloc_api::{AllocError, FreeError, PageSource};

use crate::SystemPages;

/// System pages, counting how many are out.
#[derive(Default)]
pub(crate) struct CountedPages(pub(crate) AtomicUsize);

// SAFETY: forwards to `SystemPages`.
unsafe impl PageSource for CountedPages {
    fn allocate_pages(&self, count: usize, align_pages: usize) -> Result<NonNull<u8>, AllocError> {
        let pages = SystemPages.allocate_pages(count, align_pages)?;
        self.0.fetch_add(count, Ordering::Relaxed);
        Ok(pages)
    }
    unsafe fn deallocate_pages(&self, pages: NonNull<u8>, count: usize) -> Result<(), FreeError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { SystemPages.deallocate_pages(pages, count) }?;
        self.0.fetch_sub(count, Ordering::Relaxed);
        Ok(())
    }
}
