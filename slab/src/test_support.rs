//! Helpers shared by the unit tests: a page source that remembers which runs
//! it handed out, and a seeded generator.

use core::ptr::NonNull;
use std::sync::Mutex;
use std::vec::Vec;

use kalloc_api::{AllocError, FreeError, PAGE_SIZE, PageSource};

use crate::host::HostPages;

/// [`HostPages`] that also records every run out, and gives back on drop
/// whatever a test leaves (quarantined slabs are never given back).
pub(crate) struct TrackingPages {
    inner: HostPages,
    runs: Mutex<Vec<(NonNull<u8>, usize)>>,
}

// SAFETY: the recorded pointers are only used under the mutex, to give runs back.
unsafe impl Send for TrackingPages {}
// SAFETY: as above.
unsafe impl Sync for TrackingPages {}

impl Drop for TrackingPages {
    fn drop(&mut self) {
        for (pages, bytes) in self.runs.get_mut().unwrap().drain(..) {
            // SAFETY: the run came from `inner` and its cache is gone with the test.
            let _ = unsafe { self.inner.deallocate_pages(pages, bytes / PAGE_SIZE) };
        }
    }
}

impl TrackingPages {
    pub(crate) fn new() -> Self {
        Self::with_limit(usize::MAX)
    }

    pub(crate) fn with_limit(pages: usize) -> Self {
        Self {
            inner: HostPages::with_limit(pages),
            runs: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn pages_out(&self) -> usize {
        self.inner.pages_out()
    }

    /// Whether `[addr, addr + len)` lies inside one run currently out.
    pub(crate) fn owns(&self, addr: usize, len: usize) -> bool {
        self.runs.lock().unwrap().iter().any(|&(start, bytes)| {
            let start = start.addr().get();
            addr >= start && addr + len <= start + bytes
        })
    }
}

// SAFETY: forwards to `HostPages`, which keeps the promise.
unsafe impl PageSource for TrackingPages {
    fn allocate_pages(&self, count: usize, align_pages: usize) -> Result<NonNull<u8>, AllocError> {
        let pages = self.inner.allocate_pages(count, align_pages)?;
        self.runs.lock().unwrap().push((pages, count * PAGE_SIZE));
        Ok(pages)
    }

    unsafe fn deallocate_pages(&self, pages: NonNull<u8>, count: usize) -> Result<(), FreeError> {
        let mut runs = self.runs.lock().unwrap();
        let index = runs
            .iter()
            .position(|&run| run == (pages, count * PAGE_SIZE))
            .ok_or(FreeError::NotOwned)?;
        runs.swap_remove(index);
        // SAFETY: (caller) the run came from `inner` with this count.
        unsafe { self.inner.deallocate_pages(pages, count) }
    }
}

/// xorshift64, seeded: reproducible random operations.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}
