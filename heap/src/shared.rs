//! The core the shared per-CPU heaps are built on: small size classes on
//! per-CPU slab magazines, mid-size and large requests under one lock.
//!
//! [`PerCpuHeap`](crate::PerCpuHeap) and
//! [`PinnedPerCpuHeap`](crate::PinnedPerCpuHeap) differ only in the class
//! caches and in what names the CPU of a call: nothing for the first (its
//! caches ask their `CpuId`), a [`PinnedCpu`] token for the second.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use kalloc_api::sync::Mutex;
use kalloc_api::{
    AllocError, CpuId, FreeError, PAGE_SIZE, PackedAllocation, PageSource, PinnedCpu, Stats,
};
use kalloc_slab::{CacheStats, PerCpuCache, PinnedPerCpuCache};

use crate::backend::{Backend, InitError};
use crate::heap::OomHandler;
use crate::pages::LockedBackend;
use crate::provenance;
use crate::size_class::{SMALL_CLASS_COUNT, class_bytes, small_class};
use crate::stats::{ClassStats, HeapStats};

/// A per-CPU object cache one small class sits on, and what names the CPU
/// of a call to it.
pub(crate) trait ClassCache: Sync {
    /// What a call passes to name its CPU.
    type Cpu<'a>: Copy;

    /// An object from the CPU's loaded magazine, with no call on the way;
    /// `None` sends the caller to [`allocate`](Self::allocate).
    fn allocate_fast(&self, cpu: Self::Cpu<'_>) -> Option<NonNull<u8>>;

    /// Pushes `ptr` on the CPU's loaded magazine, with no call on the way;
    /// `false` (nothing changed) sends the caller to
    /// [`deallocate`](Self::deallocate).
    ///
    /// # Safety
    /// As `SlabCache::deallocate`.
    unsafe fn deallocate_fast(&self, cpu: Self::Cpu<'_>, ptr: NonNull<u8>) -> bool;

    fn allocate<P: PageSource>(
        &self,
        cpu: Self::Cpu<'_>,
        pages: &LockedBackend<P>,
    ) -> Result<NonNull<u8>, AllocError>;

    /// # Safety
    /// As `SlabCache::deallocate`.
    unsafe fn deallocate<P: PageSource>(
        &self,
        cpu: Self::Cpu<'_>,
        ptr: NonNull<u8>,
        pages: &LockedBackend<P>,
    ) -> Result<(), FreeError>;

    /// Returns the cached objects this call can reach and every empty slab.
    fn shrink<P: PageSource>(&self, cpu: Self::Cpu<'_>, pages: &LockedBackend<P>);

    fn reap<P: PageSource>(&self, pages: &LockedBackend<P>);

    fn stats(&self) -> CacheStats;
}

impl<C: CpuId, const CPUS: usize> ClassCache for PerCpuCache<C, CPUS> {
    type Cpu<'a> = ();

    #[inline]
    fn allocate_fast(&self, (): ()) -> Option<NonNull<u8>> {
        PerCpuCache::allocate_fast(self)
    }

    #[inline]
    unsafe fn deallocate_fast(&self, (): (), ptr: NonNull<u8>) -> bool {
        // SAFETY: the caller's promise, passed on.
        unsafe { PerCpuCache::deallocate_fast(self, ptr) }
    }

    #[inline]
    fn allocate<P: PageSource>(
        &self,
        (): (),
        pages: &LockedBackend<P>,
    ) -> Result<NonNull<u8>, AllocError> {
        PerCpuCache::allocate(self, pages)
    }

    #[inline]
    unsafe fn deallocate<P: PageSource>(
        &self,
        (): (),
        ptr: NonNull<u8>,
        pages: &LockedBackend<P>,
    ) -> Result<(), FreeError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { PerCpuCache::deallocate(self, ptr, pages) }
    }

    fn shrink<P: PageSource>(&self, (): (), pages: &LockedBackend<P>) {
        PerCpuCache::shrink(self, pages);
    }

    fn reap<P: PageSource>(&self, pages: &LockedBackend<P>) {
        PerCpuCache::reap(self, pages);
    }

    fn stats(&self) -> CacheStats {
        PerCpuCache::stats(self)
    }
}

impl<const CPUS: usize> ClassCache for PinnedPerCpuCache<CPUS> {
    type Cpu<'a> = &'a PinnedCpu;

    #[inline(always)]
    fn allocate_fast(&self, cpu: &PinnedCpu) -> Option<NonNull<u8>> {
        PinnedPerCpuCache::allocate_fast(self, cpu)
    }

    #[inline(always)]
    unsafe fn deallocate_fast(&self, cpu: &PinnedCpu, ptr: NonNull<u8>) -> bool {
        // SAFETY: the caller's promise, passed on.
        unsafe { PinnedPerCpuCache::deallocate_fast(self, cpu, ptr) }
    }

    #[inline]
    fn allocate<P: PageSource>(
        &self,
        cpu: &PinnedCpu,
        pages: &LockedBackend<P>,
    ) -> Result<NonNull<u8>, AllocError> {
        PinnedPerCpuCache::allocate(self, cpu, pages)
    }

    #[inline]
    unsafe fn deallocate<P: PageSource>(
        &self,
        cpu: &PinnedCpu,
        ptr: NonNull<u8>,
        pages: &LockedBackend<P>,
    ) -> Result<(), FreeError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { PinnedPerCpuCache::deallocate(self, cpu, ptr, pages) }
    }

    fn shrink<P: PageSource>(&self, cpu: &PinnedCpu, pages: &LockedBackend<P>) {
        self.flush_cpu(cpu, pages);
        PinnedPerCpuCache::shrink(self, pages);
    }

    fn reap<P: PageSource>(&self, pages: &LockedBackend<P>) {
        PinnedPerCpuCache::reap(self, pages);
    }

    fn stats(&self) -> CacheStats {
        PinnedPerCpuCache::stats(self)
    }
}

/// Small classes on per-CPU caches `K`, the rest on one locked backend.
pub(crate) struct SharedHeap<P: PageSource, K> {
    classes: [K; SMALL_CLASS_COUNT],
    /// Also the page source of every class's slabs.
    backend: LockedBackend<P>,
    oom: Mutex<Option<OomHandler>>,
}

impl<P: PageSource, K> SharedHeap<P, K> {
    #[cfg(not(loom))]
    pub(crate) const fn from_parts(classes: [K; SMALL_CLASS_COUNT], backend: Backend<P>) -> Self {
        Self {
            classes,
            backend: LockedBackend::new(backend),
            oom: Mutex::new(None),
        }
    }

    #[cfg(loom)]
    pub(crate) fn from_parts(classes: [K; SMALL_CLASS_COUNT], backend: Backend<P>) -> Self {
        Self {
            classes,
            backend: LockedBackend::new(backend),
            oom: Mutex::new(None),
        }
    }
}

impl<P: PageSource, K: ClassCache> SharedHeap<P, K> {
    pub(crate) fn init(&self, pages: P) -> Result<(), InitError> {
        self.backend.lock().init(pages)
    }

    /// # Safety
    /// As [`Heap::init_with_region`](crate::Heap::init_with_region).
    pub(crate) unsafe fn init_with_region(
        &self,
        start: *mut u8,
        len: usize,
    ) -> Result<(), InitError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.backend.lock().add_region(start, len) }
    }

    pub(crate) fn set_oom_handler(&self, handler: Option<OomHandler>) {
        *self.oom.lock() = handler;
    }

    /// The magazine pop inline, everything else behind one out-of-line
    /// call in tail position: the fast path then needs no stack frame.
    #[inline]
    pub(crate) fn allocate(
        &self,
        cpu: K::Cpu<'_>,
        layout: Layout,
    ) -> Result<NonNull<u8>, AllocError> {
        if let Some(class) = small_class(layout.size(), layout.align()) {
            if let Some(ptr) = self.classes[class].allocate_fast(cpu) {
                return Ok(ptr);
            }
        }
        self.allocate_slow(cpu, layout)
    }

    /// Refills, mid-size and large requests, and failures.
    #[inline(never)]
    fn allocate_slow(&self, cpu: K::Cpu<'_>, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        match self.try_allocate(cpu, layout) {
            Ok(ptr) => Ok(ptr),
            Err(error) => self.allocate_after_failure(cpu, layout, error),
        }
    }

    #[inline]
    fn try_allocate(&self, cpu: K::Cpu<'_>, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        match small_class(layout.size(), layout.align()) {
            Some(class) => self.classes[class].allocate(cpu, &self.backend),
            None => self.allocate_in_backend(layout).into_result(),
        }
    }

    /// Mid-size and large allocations, out of line. The slow path that calls
    /// this is out of line already, but folding the backend into it made
    /// the small fast path measurably slower (code placement around the
    /// inlined pop), so the call level stays.
    #[inline(never)]
    fn allocate_in_backend(&self, layout: Layout) -> PackedAllocation {
        PackedAllocation::from(self.backend.lock().allocate(layout))
    }

    /// Mid-size and large frees, out of line as [`Self::allocate_in_backend`].
    ///
    /// # Safety
    /// As [`Backend::deallocate`].
    #[inline(never)]
    unsafe fn deallocate_in_backend(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
    ) -> Result<(), FreeError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.backend.lock().deallocate(ptr, layout) }
    }

    #[cold]
    fn allocate_after_failure(
        &self,
        cpu: K::Cpu<'_>,
        layout: Layout,
        error: AllocError,
    ) -> Result<NonNull<u8>, AllocError> {
        if error != AllocError::OutOfMemory {
            return Err(error);
        }
        if self.shrink(cpu) > 0 {
            if let Ok(ptr) = self.try_allocate(cpu, layout) {
                return Ok(ptr);
            }
        }
        let handler = *self.oom.lock();
        if handler.is_some_and(|handler| handler(&layout)) {
            if let Ok(ptr) = self.try_allocate(cpu, layout) {
                return Ok(ptr);
            }
        }
        if small_class(layout.size(), layout.align()).is_none() {
            self.backend.lock().record_failure(layout);
        }
        Err(error)
    }

    /// The magazine push inline, everything else behind one out-of-line
    /// call in tail position, as in [`allocate`](Self::allocate).
    ///
    /// # Safety
    /// As [`PerCpuHeap::deallocate`](crate::PerCpuHeap::deallocate).
    #[inline]
    pub(crate) unsafe fn deallocate(
        &self,
        cpu: K::Cpu<'_>,
        ptr: NonNull<u8>,
        layout: Layout,
    ) -> Result<(), FreeError> {
        let ptr = provenance::reclaim(ptr);
        if ptr.as_ptr() as usize & (layout.align() - 1) == 0 {
            if let Some(class) = small_class(layout.size(), layout.align()) {
                // SAFETY: the caller's promise; this layout's blocks come from this class.
                if unsafe { self.classes[class].deallocate_fast(cpu, ptr) } {
                    return Ok(());
                }
            }
        }
        // SAFETY: the caller's promise, passed on.
        unsafe { self.deallocate_slow(cpu, ptr, layout) }
    }

    /// Misaligned pointers, spills, mid-size and large frees.
    ///
    /// # Safety
    /// As [`deallocate`](Self::deallocate).
    #[inline(never)]
    unsafe fn deallocate_slow(
        &self,
        cpu: K::Cpu<'_>,
        ptr: NonNull<u8>,
        layout: Layout,
    ) -> Result<(), FreeError> {
        if ptr.as_ptr() as usize & (layout.align() - 1) != 0 {
            return Err(FreeError::Misaligned);
        }
        match small_class(layout.size(), layout.align()) {
            // SAFETY: the caller's promise; this layout's blocks come from this class.
            Some(class) => unsafe { self.classes[class].deallocate(cpu, ptr, &self.backend) },
            // SAFETY: the caller's promise; non-small layouts went to the backend.
            None => unsafe { self.deallocate_in_backend(ptr, layout) },
        }
    }

    /// # Safety
    /// As [`PerCpuHeap::reallocate`](crate::PerCpuHeap::reallocate).
    pub(crate) unsafe fn reallocate(
        &self,
        cpu: K::Cpu<'_>,
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
        let new = self.allocate(cpu, new_layout)?;
        // SAFETY: both blocks are live, distinct, and at least this long.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), layout.size().min(new_size));
        }
        // SAFETY: the caller's promise; the contents now live in `new`.
        let freed = unsafe { self.deallocate(cpu, ptr, layout) };
        debug_assert!(freed.is_ok(), "reallocated block was not ours");
        Ok(new)
    }

    /// Runs `release` on every class, returning the bytes of slab pages it gave back.
    fn release_classes(&self, release: impl Fn(&K, &LockedBackend<P>)) -> usize {
        let mut pages_freed = 0;
        for cache in &self.classes {
            let before = cache.stats().pages_held;
            release(cache, &self.backend);
            pages_freed += before.saturating_sub(cache.stats().pages_held);
        }
        pages_freed * PAGE_SIZE
    }

    pub(crate) fn shrink(&self, cpu: K::Cpu<'_>) -> usize {
        self.release_classes(|cache, pages| cache.shrink(cpu, pages)) + self.backend.lock().shrink()
    }

    pub(crate) fn reap(&self) -> usize {
        self.release_classes(|cache, pages| cache.reap(pages))
    }

    pub(crate) fn stats(&self) -> HeapStats {
        let backend = self.backend.lock().stats();
        let mut classes = [ClassStats::default(); SMALL_CLASS_COUNT];
        let mut small = Stats::ZERO;
        for (class, stats) in classes.iter_mut().enumerate() {
            let cache = self.classes[class].stats();
            *stats = ClassStats {
                object_bytes: class_bytes(class),
                objects_in_use: cache.objects_in_use,
                peak_objects_in_use: cache.peak_objects_out,
                bytes_held: cache.pages_held * PAGE_SIZE,
            };
            small.bytes_in_use += stats.objects_in_use * stats.object_bytes;
            small.peak_bytes_in_use += stats.peak_objects_in_use * stats.object_bytes;
            small.bytes_held += stats.bytes_held;
        }
        crate::stats::assemble(small, backend, classes)
    }
}
