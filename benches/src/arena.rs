//! Host memory handed to the allocators under test.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

/// Bytes in one host page, the alignment every arena gets at least.
pub const HOST_PAGE_BYTES: usize = 4096;

/// A zeroed, aligned block of host memory, freed on drop.
///
/// Every heap in a comparison gets an arena of the same size; frame-level
/// peers that keep their own bookkeeping never touch one.
#[derive(Debug)]
pub struct Arena {
    start: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the arena owns its block exclusively; moving or sharing the handle
// only moves a pointer, and writes through it are the caller's to coordinate.
unsafe impl Send for Arena {}
// SAFETY: as above: `&Arena` gives out only the address, never references.
unsafe impl Sync for Arena {}

impl Arena {
    /// A zeroed arena of `bytes` bytes aligned to `align` (at least a host page).
    ///
    /// # Panics
    /// When `bytes` is zero, the layout is invalid or the host is out of memory:
    /// a benchmark cannot go on without its arena.
    pub fn new(bytes: usize, align: usize) -> Self {
        let layout = Layout::from_size_align(bytes, align.max(HOST_PAGE_BYTES))
            .expect("arena size and alignment form a layout");
        assert!(bytes > 0, "an arena has at least one byte");
        // SAFETY: the layout has a non-zero size (checked above).
        let start = unsafe { alloc_zeroed(layout) };
        let start = NonNull::new(start).expect("host memory for the arena");
        Self { start, layout }
    }

    /// The first byte.
    pub fn start(&self) -> NonNull<u8> {
        self.start
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Always `false`: arenas have at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `[ptr, ptr + size)` lies inside the arena.
    pub fn contains(&self, ptr: *const u8, size: usize) -> bool {
        let base = self.start.as_ptr() as usize;
        let addr = ptr as usize;
        addr >= base
            && addr
                .checked_add(size)
                .is_some_and(|end| end <= base + self.len())
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: `start` came from `alloc_zeroed` with exactly this layout.
        unsafe { dealloc(self.start.as_ptr(), self.layout) };
    }
}
