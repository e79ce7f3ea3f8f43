//! `PerCpuHeap`: small size classes on per-CPU slab magazines, so CPUs
//! allocating and freeing small blocks do not serialise on one lock; mid-size
//! and large requests share one locked backend.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use kalloc_api::sync::{AtomicUsize, Mutex, Ordering};
use kalloc_api::{AllocError, CpuId, FreeError, PAGE_SIZE, PageSource, Stats};
use kalloc_slab::{PerCpuCache, SlabConfig};

use crate::backend::{Backend, InitError};
use crate::heap::OomHandler;
use crate::pages::LockedBackendPages;
use crate::provenance;
use crate::size_class::{SMALL_CLASS_COUNT, class_align, class_bytes, small_class};
use crate::stats::{ClassStats, HeapStats};

/// Slab pages for one class through the locked backend, counted per class.
struct ClassPages<'a, P> {
    backend: LockedBackendPages<'a, P>,
    pages: &'a AtomicUsize,
}

// SAFETY: forwards to `LockedBackendPages`, which keeps the promise.
unsafe impl<P: PageSource> PageSource for ClassPages<'_, P> {
    fn allocate_pages(&self, count: usize, align_pages: usize) -> Result<NonNull<u8>, AllocError> {
        let pages = self.backend.allocate_pages(count, align_pages)?;
        self.pages.fetch_add(count, Ordering::Relaxed);
        Ok(pages)
    }

    unsafe fn deallocate_pages(&self, pages: NonNull<u8>, count: usize) -> Result<(), FreeError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.backend.deallocate_pages(pages, count) }?;
        self.pages.fetch_sub(count, Ordering::Relaxed);
        Ok(())
    }
}

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
    classes: [PerCpuCache<C, CPUS>; SMALL_CLASS_COUNT],
    class_pages: [AtomicUsize; SMALL_CLASS_COUNT],
    backend: Mutex<Backend<P>>,
    oom: Mutex<Option<OomHandler>>,
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
                classes,
                class_pages: [const { AtomicUsize::new(0) }; SMALL_CLASS_COUNT],
                backend: Mutex::new(backend),
                oom: Mutex::new(None),
            }),
            Err(error) => {
                // Nothing was allocated yet; a const fn cannot run the drop.
                core::mem::forget(backend);
                Err(error)
            }
        }
    }

    #[cfg(not(loom))]
    const fn caches(cpu: C) -> Result<[PerCpuCache<C, CPUS>; SMALL_CLASS_COUNT], AllocError> {
        Ok(
            per_cpu_caches!(cpu; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27),
        )
    }

    /// A heap with no memory yet, asking `cpu` which CPU runs each caller.
    ///
    /// # Errors
    /// What [`PerCpuCache::new`](kalloc_slab::PerCpuCache::new) reports.
    #[cfg(loom)]
    pub fn new(cpu: C) -> Result<Self, AllocError> {
        let classes = (|| {
            Ok::<_, AllocError>(
                per_cpu_caches!(cpu; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27),
            )
        })()?;
        Ok(Self {
            classes,
            class_pages: core::array::from_fn(|_| AtomicUsize::new(0)),
            backend: Mutex::new(Backend::new()),
            oom: Mutex::new(None),
        })
    }
}

impl<P: PageSource, C: CpuId, const CPUS: usize> PerCpuHeap<P, C, CPUS> {
    /// Takes `pages` as the source of all memory (see [`Heap::init`](crate::Heap::init)).
    ///
    /// # Errors
    /// [`InitError::AlreadyInitialized`] when it already has memory.
    pub fn init(&self, pages: P) -> Result<(), InitError> {
        self.backend.lock().init(pages)
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
        unsafe { self.backend.lock().add_region(start, len) }
    }

    /// Sets the out-of-memory handler, called with no lock held.
    pub fn set_oom_handler(&self, handler: Option<OomHandler>) {
        *self.oom.lock() = handler;
    }

    #[inline]
    fn pages(&self, class: usize) -> ClassPages<'_, P> {
        ClassPages {
            backend: LockedBackendPages(&self.backend),
            pages: &self.class_pages[class],
        }
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
        match self.try_allocate(layout) {
            Ok(ptr) => Ok(ptr),
            Err(error) => self.allocate_after_failure(layout, error),
        }
    }

    #[inline]
    fn try_allocate(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        match small_class(layout.size(), layout.align()) {
            Some(class) => self.classes[class].allocate(&self.pages(class)),
            None => self.backend.lock().allocate(layout),
        }
    }

    #[cold]
    fn allocate_after_failure(
        &self,
        layout: Layout,
        error: AllocError,
    ) -> Result<NonNull<u8>, AllocError> {
        if error != AllocError::OutOfMemory {
            return Err(error);
        }
        if self.shrink() > 0 {
            if let Ok(ptr) = self.try_allocate(layout) {
                return Ok(ptr);
            }
        }
        let handler = *self.oom.lock();
        if handler.is_some_and(|handler| handler(&layout)) {
            if let Ok(ptr) = self.try_allocate(layout) {
                return Ok(ptr);
            }
        }
        if small_class(layout.size(), layout.align()).is_none() {
            self.backend.lock().record_failure(layout);
        }
        Err(error)
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
        let ptr = provenance::reclaim(ptr);
        if ptr.as_ptr() as usize & (layout.align() - 1) != 0 {
            return Err(FreeError::Misaligned);
        }
        match small_class(layout.size(), layout.align()) {
            // SAFETY: the caller's promise; this layout's blocks come from this class.
            Some(class) => unsafe { self.classes[class].deallocate(ptr, &self.pages(class)) },
            // SAFETY: the caller's promise; non-small layouts went to the backend.
            None => unsafe { self.backend.lock().deallocate(ptr, layout) },
        }
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
        let ptr = provenance::reclaim(ptr);
        let new_layout =
            Layout::from_size_align(new_size, layout.align()).map_err(|_| AllocError::Overflow)?;
        let old_class = small_class(layout.size(), layout.align());
        let new_class = small_class(new_size, layout.align());
        if old_class.is_some() && old_class == new_class {
            return Ok(ptr);
        }
        if old_class.is_none() && new_class.is_none() {
            // SAFETY: the caller's promise; both layouts are non-small.
            let in_place = unsafe { self.backend.lock().resize_in_place(ptr, layout, new_size) };
            if in_place {
                return Ok(ptr);
            }
        }
        let new = self.allocate(new_layout)?;
        // SAFETY: both blocks are live, distinct, and at least this long.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), layout.size().min(new_size));
        }
        // SAFETY: the caller's promise; the contents now live in `new`.
        let freed = unsafe { self.deallocate(ptr, layout) };
        debug_assert!(freed.is_ok(), "reallocated block was not ours");
        Ok(new)
    }

    /// Flushes every magazine, gives back empty slabs and the kept empty page
    /// run; returns the bytes given back.
    pub fn shrink(&self) -> usize {
        let mut pages_freed = 0;
        for (class, cache) in self.classes.iter().enumerate() {
            let before = self.class_pages[class].load(Ordering::Relaxed);
            cache.shrink(&self.pages(class));
            let after = self.class_pages[class].load(Ordering::Relaxed);
            pages_freed += before.saturating_sub(after);
        }
        pages_freed * PAGE_SIZE + self.backend.lock().shrink()
    }

    /// Gives back the empty slabs of every class that no allocation needed
    /// since the previous reap, as [`Heap::reap`](crate::Heap::reap);
    /// returns the bytes given back.
    pub fn reap(&self) -> usize {
        let mut pages_freed = 0;
        for (class, cache) in self.classes.iter().enumerate() {
            let before = self.class_pages[class].load(Ordering::Relaxed);
            cache.reap(&self.pages(class));
            let after = self.class_pages[class].load(Ordering::Relaxed);
            pages_freed += before.saturating_sub(after);
        }
        pages_freed * PAGE_SIZE
    }

    /// A snapshot of the heap's usage. Small-class figures come from the
    /// caches: objects sitting in per-CPU magazines count as in use until
    /// [`shrink`](Self::shrink) flushes them, and the small path keeps no
    /// allocation counts or peak (so its fast path touches no shared counter).
    pub fn stats(&self) -> HeapStats {
        let backend = self.backend.lock().stats();
        let mut classes = [ClassStats::default(); SMALL_CLASS_COUNT];
        let mut small = Stats::ZERO;
        for (class, stats) in classes.iter_mut().enumerate() {
            let cache = self.classes[class].stats();
            *stats = ClassStats {
                object_bytes: class_bytes(class),
                objects_in_use: cache.objects_in_use,
                peak_objects_in_use: cache.objects_in_use,
                bytes_held: self.class_pages[class].load(Ordering::Relaxed) * PAGE_SIZE,
            };
            small.bytes_in_use += stats.objects_in_use * stats.object_bytes;
            small.bytes_held += stats.bytes_held;
        }
        small.peak_bytes_in_use = small.bytes_in_use;
        crate::stats::assemble(small, backend, classes)
    }
}

crate::allocator_api::impl_global_alloc!(PerCpuHeap<P, C, CPUS>, [P: PageSource, C: CpuId, const CPUS: usize]);
crate::allocator_api::impl_allocator!(PerCpuHeap<P, C, CPUS>, [P: PageSource, C: CpuId, const CPUS: usize]);
