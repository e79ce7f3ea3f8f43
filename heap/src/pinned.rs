//! `PinnedPerCpuHeap`: the per-CPU heap with no lock on the small fast path,
//! for kernels that call it with preemption off.

use core::alloc::Layout;
use core::ptr::NonNull;

use kalloc_api::{AllocError, FreeError, PageSource, PinnedCpu};
use kalloc_slab::{PinnedPerCpuCache, SlabConfig};

use crate::backend::{Backend, InitError};
use crate::heap::OomHandler;
use crate::shared::SharedHeap;
use crate::size_class::{class_align, class_bytes};
use crate::stats::HeapStats;

/// A heap for several CPUs whose small size classes are
/// [`PinnedPerCpuCache`](kalloc_slab::PinnedPerCpuCache)s: a small request
/// from a CPU's magazines takes no lock and no atomic read-modify-write.
/// Every call names its CPU with a [`PinnedCpu`] token, which the kernel
/// makes with preemption off; mid-size and large requests (and slab
/// refills) go to one backend under a lock, as in
/// [`PerCpuHeap`](crate::PerCpuHeap).
///
/// No CPU reaches into another's magazines, so [`shrink`](Self::shrink)
/// flushes the calling CPU's only; run it on each CPU to give back
/// everything. The out-of-memory path shrinks the failing CPU's caches
/// before it gives up.
///
/// A kernel's `#[global_allocator]` wraps it, pinning around each call:
///
/// ```
/// use core::alloc::{GlobalAlloc, Layout};
/// use kalloc_api::PinnedCpu;
/// use kalloc_heap::{NoPages, PinnedPerCpuHeap};
///
/// # fn preempt_disable() {}
/// # fn preempt_enable() {}
/// # fn this_cpu() -> usize { 0 }
/// struct KernelHeap(PinnedPerCpuHeap<NoPages, 4>);
///
/// impl KernelHeap {
///     fn pinned<R>(&self, f: impl FnOnce(&PinnedCpu) -> R) -> R {
///         preempt_disable();
///         // SAFETY: preemption is off until the token is dropped, and no
///         // interrupt handler of this kernel allocates.
///         let result = f(&unsafe { PinnedCpu::new(this_cpu()) });
///         preempt_enable();
///         result
///     }
/// }
///
/// // SAFETY: blocks come from the heap and go back to it with their layout.
/// unsafe impl GlobalAlloc for KernelHeap {
///     unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
///         self.pinned(|cpu| self.0.allocate(cpu, layout))
///             .map_or(core::ptr::null_mut(), |block| block.as_ptr())
///     }
///     unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
///         // SAFETY: `GlobalAlloc`'s contract: `ptr` is a live block with `layout`.
///         self.pinned(|cpu| unsafe {
///             let _ = self.0.deallocate(cpu, core::ptr::NonNull::new_unchecked(ptr), layout);
///         });
///     }
/// }
///
/// static HEAP: KernelHeap = KernelHeap(match PinnedPerCpuHeap::new() {
///     Ok(heap) => heap,
///     Err(_) => panic!("the size classes are valid"),
/// });
/// let mut arena = vec![0u128; 64 * 1024 / 16];
/// // SAFETY: the arena outlives every use of the heap below, and nothing else uses it.
/// unsafe { HEAP.0.init_with_region(arena.as_mut_ptr().cast(), 64 * 1024) }.unwrap();
/// let layout = Layout::new::<[u64; 3]>();
/// // SAFETY: a non-zero layout; the block is freed once, with it.
/// unsafe {
///     let block = HEAP.alloc(layout);
///     assert!(!block.is_null());
///     HEAP.dealloc(block, layout);
/// }
/// ```
pub struct PinnedPerCpuHeap<P: PageSource, const CPUS: usize> {
    core: SharedHeap<P, PinnedPerCpuCache<CPUS>>,
}

/// The pinned cache of each size class, or the first error.
macro_rules! pinned_caches {
    ($($class:literal)*) => {
        [$(
            match PinnedPerCpuCache::new(SlabConfig::new(class_bytes($class), class_align($class))) {
                Ok(cache) => cache,
                Err(error) => return Err(error),
            }
        ),*]
    };
}

impl<P: PageSource, const CPUS: usize> PinnedPerCpuHeap<P, CPUS> {
    /// A heap with no memory yet.
    ///
    /// # Errors
    /// What [`PinnedPerCpuCache::new`](kalloc_slab::PinnedPerCpuCache::new) reports.
    #[cfg(not(loom))]
    pub const fn new() -> Result<Self, AllocError> {
        Self::with_backend(Backend::new())
    }

    /// A heap taking all its memory from `pages`, ready at compile time.
    ///
    /// # Errors
    /// What [`PinnedPerCpuCache::new`](kalloc_slab::PinnedPerCpuCache::new) reports.
    #[cfg(not(loom))]
    pub const fn with_pages(pages: P) -> Result<Self, AllocError> {
        Self::with_backend(Backend::with_pages(pages))
    }

    #[cfg(not(loom))]
    const fn with_backend(backend: Backend<P>) -> Result<Self, AllocError> {
        match Self::caches() {
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
    const fn caches()
    -> Result<[PinnedPerCpuCache<CPUS>; crate::size_class::SMALL_CLASS_COUNT], AllocError> {
        Ok(pinned_caches!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23))
    }

    /// A heap with no memory yet.
    ///
    /// # Errors
    /// What [`PinnedPerCpuCache::new`](kalloc_slab::PinnedPerCpuCache::new) reports.
    #[cfg(loom)]
    pub fn new() -> Result<Self, AllocError> {
        let classes = (|| {
            Ok::<_, AllocError>(pinned_caches!(
                0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23
            ))
        })()?;
        Ok(Self {
            core: SharedHeap::from_parts(classes, Backend::new()),
        })
    }

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

    /// Allocates `layout.size()` bytes aligned to `layout.align()` on `cpu`
    /// (a zero size is served as one byte). On failure the heap flushes
    /// `cpu`'s magazines and gives back empty slabs, then asks the
    /// out-of-memory handler, retrying after each.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`] (or the page source's error), or
    /// [`AllocError::Uninitialized`] before `init`.
    #[inline]
    pub fn allocate(&self, cpu: &PinnedCpu, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        self.core.allocate(cpu, layout)
    }

    /// Frees a block into `cpu`'s magazines (any CPU may free any block).
    ///
    /// # Errors
    /// As [`Heap::deallocate`](crate::Heap::deallocate).
    ///
    /// # Safety
    /// `ptr` was returned by this heap for `layout` (or, after a reallocation,
    /// for `layout`'s alignment and size) and is no longer used.
    #[inline]
    pub unsafe fn deallocate(
        &self,
        cpu: &PinnedCpu,
        ptr: NonNull<u8>,
        layout: Layout,
    ) -> Result<(), FreeError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.core.deallocate(cpu, ptr, layout) }
    }

    /// Resizes a block, as [`PerCpuHeap::reallocate`](crate::PerCpuHeap::reallocate).
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
        cpu: &PinnedCpu,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.core.reallocate(cpu, ptr, layout, new_size) }
    }

    /// Flushes `cpu`'s magazines and the depots, gives back empty slabs and
    /// the kept empty page run; returns the bytes given back.
    pub fn shrink(&self, cpu: &PinnedCpu) -> usize {
        self.core.shrink(cpu)
    }

    /// Gives back the empty slabs of every class that no allocation needed
    /// since the previous reap, as [`Heap::reap`](crate::Heap::reap);
    /// returns the bytes given back.
    pub fn reap(&self) -> usize {
        self.core.reap()
    }

    /// A snapshot of the heap's usage, as
    /// [`PerCpuHeap::stats`](crate::PerCpuHeap::stats); exact when no call
    /// is in flight (see `PinnedPerCpuCache::stats`).
    pub fn stats(&self) -> HeapStats {
        self.core.stats()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
