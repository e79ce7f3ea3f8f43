//! `PerCpuHeap`: small size classes on per-CPU slab magazines, so CPUs
//! allocating and freeing small blocks do not serialise on one lock; mid-size
//! and large requests share one locked backend.

use core::alloc::Layout;
use core::ptr::NonNull;

use kalloc_api::{AllocError, CpuId, FreeError, PageSource};
use kalloc_slab::{PerCpuCache, SlabConfig};

use crate::backend::{Backend, InitError};
use crate::heap::OomHandler;
use crate::shared::SharedHeap;
use crate::size_class::{class_align, class_bytes};
use crate::stats::HeapStats;

/// A heap for several CPUs: each small size class is a
/// [`PerCpuCache`](kalloc_slab::PerCpuCache), whose per-CPU magazines serve
/// most small requests without a shared lock; mid-size and large requests (and
/// slab refills) go to one backend under a lock.
///
/// `C` tells which CPU runs the caller; `CPUS` bounds the CPU indices.
///
/// ```
/// use core::alloc::Layout;
/// use kalloc_heap::{NoPages, PerCpuHeap};
///
/// fn cpu() -> usize { 0 }
/// let heap: PerCpuHeap<NoPages, fn() -> usize, 2> = PerCpuHeap::new(cpu as fn() -> usize).unwrap();
/// let mut arena = vec![0u128; 64 * 1024 / 16];
/// // SAFETY: the arena outlives the heap and nothing else uses it.
/// unsafe { heap.init_with_region(arena.as_mut_ptr().cast(), 64 * 1024) }.unwrap();
/// let layout = Layout::new::<[u32; 5]>();
/// let block = heap.allocate(layout).unwrap();
/// // SAFETY: `block` came from this heap with this layout.
/// unsafe { heap.deallocate(block, layout) }.unwrap();
/// heap.shrink();
/// assert_eq!(heap.stats().total.bytes_in_use, 0);
/// ```
pub struct PerCpuHeap<P: PageSource, C: CpuId, const CPUS: usize> {
    core: SharedHeap<P, PerCpuCache<C, CPUS>>,
}

/// The per-CPU cache of each size class, or the first error.
macro_rules! per_cpu_caches {
    ($cpu:ident; $($class:literal)*) => {
        [$(
            match PerCpuCache::new(SlabConfig::new(class_bytes($class), class_align($class)), $cpu) {
                Ok(cache) => cache,
                Err(error) => return Err(error),
            }
        ),*]
    };
}

impl<P: PageSource, C: CpuId + Copy, const CPUS: usize> PerCpuHeap<P, C, CPUS> {
    /// A heap with no memory yet, asking `cpu` which CPU runs each caller.
    ///
    /// # Errors
    /// What [`PerCpuCache::new`](kalloc_slab::PerCpuCache::new) reports.
    #[cfg(not(loom))]
    pub const fn new(cpu: C) -> Result<Self, AllocError> {
        Self::with_backend(cpu, Backend::new())
    }

    /// A heap taking all its memory from `pages`, ready at compile time (for
    /// a `#[global_allocator]`).
    ///
    /// # Errors
    /// What [`PerCpuCache::new`](kalloc_slab::PerCpuCache::new) reports.
    #[cfg(not(loom))]
    pub const fn with_pages(cpu: C, pages: P) -> Result<Self, AllocError> {
        Self::with_backend(cpu, Backend::with_pages(pages))
    }

    #[cfg(not(loom))]
    const fn with_backend(cpu: C, backend: Backend<P>) -> Result<Self, AllocError> {
        match Self::caches(cpu) {
            Ok(classes) => Ok(Self {
                core: SharedHeap::from_parts(classes, backend),
            }),
            Err(error) => {
                // Nothing was allocated yet; a const fn cannot run the drop.
                core::mem::forget(backend);
                Err(error)
            }
        }
    }

    #[cfg(not(loom))]
    const fn caches(
        cpu: C,
    ) -> Result<[PerCpuCache<C, CPUS>; crate::size_class::SMALL_CLASS_COUNT], AllocError> {
        Ok(per_cpu_caches!(cpu; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23))
    }

    /// A heap with no memory yet, asking `cpu` which CPU runs each caller.
    ///
    /// # Errors
    /// What [`PerCpuCache::new`](kalloc_slab::PerCpuCache::new) reports.
    #[cfg(loom)]
    pub fn new(cpu: C) -> Result<Self, AllocError> {
        let classes = (|| {
            Ok::<_, AllocError>(
                per_cpu_caches!(cpu; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23),
            )
        })()?;
        Ok(Self {
            core: SharedHeap::from_parts(classes, Backend::new()),
        })
    }
}

impl<P: PageSource, C: CpuId, const CPUS: usize> PerCpuHeap<P, C, CPUS> {
    /// Takes `pages` as the source of all memory (see [`Heap::init`](crate::Heap::init)).
    ///
    /// # Errors
    /// [`InitError::AlreadyInitialized`] when it already has memory.
    pub fn init(&self, pages: P) -> Result<(), InitError> {
        self.core.init(pages)
    }

    /// Adds a fixed region (see [`Heap::init_with_region`](crate::Heap::init_with_region)).
    ///
    /// # Errors
    /// [`InitError::RegionTooSmall`] for a null or tiny region.
    ///
    /// # Safety
    /// The region is writable memory used by nothing else for as long as the
    /// heap lives.
    pub unsafe fn init_with_region(&self, start: *mut u8, len: usize) -> Result<(), InitError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.core.init_with_region(start, len) }
    }

    /// Sets the out-of-memory handler, called with no lock held.
    pub fn set_oom_handler(&self, handler: Option<OomHandler>) {
        self.core.set_oom_handler(handler);
    }

    /// Allocates `layout.size()` bytes aligned to `layout.align()` (a zero
    /// size is served as one byte). On failure the heap flushes its magazines
    /// and gives back empty slabs, then asks the out-of-memory handler,
    /// retrying after each.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`] (or the page source's error), or
    /// [`AllocError::Uninitialized`] before `init`.
    #[inline]
    pub fn allocate(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        self.core.allocate((), layout)
    }

    /// Frees a block.
    ///
    /// # Errors
    /// As [`Heap::deallocate`](crate::Heap::deallocate).
    ///
    /// # Safety
    /// `ptr` was returned by this heap for `layout` (or, after a reallocation,
    /// for `layout`'s alignment and size) and is no longer used.
    #[inline]
    pub unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) -> Result<(), FreeError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.core.deallocate((), ptr, layout) }
    }

    /// Resizes a block, in place where the size class or page run stays the
    /// same or a mid-size block can grow into a free neighbour.
    ///
    /// # Errors
    /// As [`allocate`](Self::allocate), and [`AllocError::Overflow`] when
    /// `new_size` at this alignment is not a valid layout. The old block is
    /// untouched on error.
    ///
    /// # Safety
    /// As [`deallocate`](Self::deallocate).
    pub unsafe fn reallocate(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.core.reallocate((), ptr, layout, new_size) }
    }

    /// Flushes every magazine, gives back empty slabs and the kept empty page
    /// run; returns the bytes given back.
    pub fn shrink(&self) -> usize {
        self.core.shrink(())
    }

    /// Gives back the empty slabs of every class that no allocation needed
    /// since the previous reap, as [`Heap::reap`](crate::Heap::reap);
    /// returns the bytes given back.
    pub fn reap(&self) -> usize {
        self.core.reap()
    }

    /// A snapshot of the heap's usage. Small-class figures come from the
    /// caches: objects sitting in per-CPU magazines count as cached, not in
    /// use; the small peak is that of objects out of the slabs (in use or
    /// cached), counted when magazines refill, an upper bound of the true
    /// peak; and the small path keeps no allocation counts (so its fast path
    /// touches no shared counter).
    pub fn stats(&self) -> HeapStats {
        self.core.stats()
    }
}

crate::allocator_api::impl_global_alloc!(PerCpuHeap<P, C, CPUS>, [P: PageSource, C: CpuId, const CPUS: usize]);
crate::allocator_api::impl_allocator!(PerCpuHeap<P, C, CPUS>, [P: PageSource, C: CpuId, const CPUS: usize]);
