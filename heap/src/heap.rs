//! `Heap`: the single-owner heap, `&mut self` throughout.

use core::alloc::Layout;
use core::ptr::NonNull;

use kalloc_api::{AllocError, FreeError, PAGE_SIZE, PageSource, Stats};
use kalloc_slab::{SlabCache, SlabConfig};

use crate::backend::{Backend, InitError};
use crate::pages::{BackendPages, NoPages};
use crate::provenance;
use crate::recycle::{RECYCLE_CAPACITY, RECYCLE_FLUSH, RECYCLING, RecycleStack};
use crate::size_class::{SMALL_CLASS_COUNT, class_align, class_bytes, small_class};
use crate::stats::{ClassStats, HeapStats};

/// Called when an allocation fails even after the heap gave back its empty
/// slabs: return `true` if memory was reclaimed (the allocation is retried
/// once), `false` to fail it.
///
/// The handler runs on the allocating CPU. Under [`Heap`] it must not touch
/// this heap (it is mutably borrowed); the shared fronts
/// ([`LockedHeap`](crate::LockedHeap), [`PerCpuHeap`](crate::PerCpuHeap)) call
/// it with no lock held, so it may free memory into them.
pub type OomHandler = fn(&Layout) -> bool;

/// The slab cache of one size class, built at compile time.
const fn class_cache(class: usize) -> SlabCache {
    match SlabCache::new(SlabConfig::new(class_bytes(class), class_align(class))) {
        Ok(cache) => cache,
        Err(_) => panic!("every small size class is a valid slab configuration"),
    }
}

macro_rules! class_caches {
    ($($class:literal)*) => { [$(class_cache($class)),*] };
}

/// Counters of one size class kept beside its cache.
#[derive(Clone, Copy)]
struct ClassCounters {
    in_use: usize,
    peak: usize,
    pages: usize,
}

/// A heap owned by one user: small requests go to per-class slab caches,
/// mid-size ones to a two-level segregated fit, large ones to whole pages.
///
/// `Heap` is the algorithm with `&mut self` methods. Share it with
/// [`LockedHeap`](crate::LockedHeap) (one lock) or use
/// [`PerCpuHeap`](crate::PerCpuHeap) (per-CPU small classes).
///
/// ```
/// use core::alloc::Layout;
/// use kalloc_heap::Heap;
///
/// #[repr(align(4096))]
/// struct Arena([u8; 64 * 1024]);
/// let mut arena = Arena([0; 64 * 1024]);
/// let mut heap: Heap = Heap::new();
/// // SAFETY: the arena outlives the heap and nothing else uses it.
/// unsafe { heap.init_with_region(arena.0.as_mut_ptr(), arena.0.len()) }.unwrap();
/// let layout = Layout::from_size_align(100, 8).unwrap();
/// let block = heap.allocate(layout).unwrap();
/// // SAFETY: `block` came from this heap with this layout.
/// unsafe { heap.deallocate(block, layout) }.unwrap();
/// assert_eq!(heap.stats().total.bytes_in_use, 0);
/// ```
pub struct Heap<P: PageSource = NoPages> {
    classes: [SlabCache; SMALL_CLASS_COUNT],
    /// Freed blocks of each class waiting for the next request of the class.
    recycled: [RecycleStack; SMALL_CLASS_COUNT],
    counters: [ClassCounters; SMALL_CLASS_COUNT],
    small: Stats,
    backend: Backend<P>,
    oom: Option<OomHandler>,
}

impl<P: PageSource> Default for Heap<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: PageSource> Heap<P> {
    /// A heap with no memory yet; give it some with [`init`](Self::init) or
    /// [`init_with_region`](Self::init_with_region).
    pub const fn new() -> Self {
        Self::with_backend(Backend::new())
    }

    const fn with_backend(backend: Backend<P>) -> Self {
        Self {
            classes: class_caches!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23),
            recycled: [const { RecycleStack::EMPTY }; SMALL_CLASS_COUNT],
            counters: [ClassCounters {
                in_use: 0,
                peak: 0,
                pages: 0,
            }; SMALL_CLASS_COUNT],
            small: Stats::ZERO,
            backend,
            oom: None,
        }
    }

    /// A heap that takes all its memory from `pages`, ready at compile time
    /// (for a `static` that must serve allocations before any code runs).
    pub const fn with_pages(pages: P) -> Self {
        Self::with_backend(Backend::with_pages(pages))
    }

    /// Takes `pages` as the source of all the heap's memory.
    ///
    /// # Errors
    /// [`InitError::AlreadyInitialized`] when the heap already has a page
    /// source or regions.
    pub fn init(&mut self, pages: P) -> Result<(), InitError> {
        self.backend.init(pages)
    }

    /// Gives the heap the fixed region `start..start + len` (for kernels with
    /// no frame allocator yet). May be called again to add regions; after
    /// [`init`](Self::init) a region serves mid-size requests only.
    ///
    /// Slabs and large blocks are cut from the regions with the alignment they
    /// need, so nothing is rounded to pages. The heap's bookkeeping lives in
    /// the `Heap` value and in 16-byte block headers inside the region.
    ///
    /// # Errors
    /// [`InitError::RegionTooSmall`] for a null or tiny region.
    ///
    /// # Safety
    /// The region is writable memory used by nothing else for as long as the
    /// heap lives.
    pub unsafe fn init_with_region(&mut self, start: *mut u8, len: usize) -> Result<(), InitError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.backend.add_region(start, len) }
    }

    /// Sets the handler called when an allocation fails (see [`OomHandler`]).
    pub fn set_oom_handler(&mut self, handler: Option<OomHandler>) {
        self.oom = handler;
    }

    /// The current out-of-memory handler.
    pub fn oom_handler(&self) -> Option<OomHandler> {
        self.oom
    }

    /// Allocates `layout.size()` bytes aligned to `layout.align()`; a zero
    /// size is served as one byte. On failure the heap gives back its empty
    /// slabs, then asks the out-of-memory handler, retrying after each.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`] (or the page source's error), or
    /// [`AllocError::Uninitialized`] before `init`.
    #[inline]
    pub fn allocate(&mut self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        if let Some(ptr) = self.allocate_recycled(layout) {
            return Ok(ptr);
        }
        self.allocate_slow(layout)
    }

    /// A recycled block of the layout's class, with no call on the way, so
    /// that [`allocate`](Self::allocate) inlines as this and one call in
    /// tail position, and needs no stack frame.
    #[inline(always)]
    fn allocate_recycled(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        if !RECYCLING {
            return None;
        }
        let class = small_class(layout.size(), layout.align())?;
        let ptr = self.recycled[class].pop()?;
        self.count_allocation(class, layout.size());
        Some(ptr)
    }

    /// Slab refills, mid-size and large requests, and failures.
    #[inline(never)]
    fn allocate_slow(&mut self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        match self.try_allocate(layout) {
            Ok(ptr) => Ok(ptr),
            Err(error) => self.allocate_after_failure(layout, error),
        }
    }

    #[cold]
    fn allocate_after_failure(
        &mut self,
        layout: Layout,
        error: AllocError,
    ) -> Result<NonNull<u8>, AllocError> {
        match self.allocate_without_handler_after(layout, error) {
            Err(AllocError::OutOfMemory) if self.oom.is_some_and(|handler| handler(&layout)) => {
                self.allocate_without_handler(layout)
            }
            other => other,
        }
    }

    /// [`allocate`](Self::allocate) without calling the out-of-memory
    /// handler (the shared fronts call it themselves, outside their locks).
    ///
    /// # Errors
    /// As [`allocate`](Self::allocate).
    pub fn allocate_without_handler(&mut self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        match self.try_allocate(layout) {
            Ok(ptr) => Ok(ptr),
            Err(error) => self.allocate_without_handler_after(layout, error),
        }
    }

    #[cold]
    fn allocate_without_handler_after(
        &mut self,
        layout: Layout,
        error: AllocError,
    ) -> Result<NonNull<u8>, AllocError> {
        if error == AllocError::OutOfMemory && self.shrink() > 0 {
            if let Ok(ptr) = self.try_allocate(layout) {
                return Ok(ptr);
            }
        }
        if small_class(layout.size(), layout.align()).is_some() {
            self.small.record_failure();
        } else {
            self.backend.record_failure(layout);
        }
        Err(error)
    }

    #[inline]
    fn try_allocate(&mut self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        let Some(class) = small_class(layout.size(), layout.align()) else {
            return self.backend.allocate(layout);
        };
        if RECYCLING {
            if let Some(ptr) = self.recycled[class].pop() {
                self.count_allocation(class, layout.size());
                return Ok(ptr);
            }
        }
        let pages = BackendPages::new(&mut self.backend);
        let result = self.classes[class].allocate(&pages);
        let counters = &mut self.counters[class];
        counters.pages = counters.pages.wrapping_add_signed(pages.net_pages());
        let ptr = result?;
        debug_assert_eq!(ptr.as_ptr() as usize % class_align(class), 0);
        self.count_allocation(class, layout.size());
        Ok(ptr)
    }

    #[inline]
    fn count_allocation(&mut self, class: usize, bytes: usize) {
        let counters = &mut self.counters[class];
        counters.in_use += 1;
        counters.peak = counters.peak.max(counters.in_use);
        self.small.record_allocation(bytes);
    }

    /// Keeps small block `ptr` of `class` for the next request of the class.
    ///
    /// # Safety
    /// As [`deallocate`](Self::deallocate).
    #[inline]
    unsafe fn recycle(&mut self, class: usize, ptr: NonNull<u8>) -> Result<(), FreeError> {
        // Only blocks of this class's slabs may ever be handed out again.
        // SAFETY: the caller's promise: `ptr` came from this class's slabs.
        unsafe { self.classes[class].check_object(ptr) }?;
        if self.recycled[class].is_top(ptr) {
            return Err(FreeError::DoubleFree);
        }
        if let Err(ptr) = self.recycled[class].push(ptr) {
            let _pages_given_back = self.flush_recycled(class, RECYCLE_FLUSH);
            let pushed = self.recycled[class].push(ptr);
            debug_assert!(pushed.is_ok(), "a flushed stack has room");
        }
        Ok(())
    }

    /// Gives the `count` coldest recycled blocks of `class` back to its
    /// slabs; returns the pages the slabs gave back meanwhile.
    fn flush_recycled(&mut self, class: usize, count: usize) -> usize {
        let pages = BackendPages::new(&mut self.backend);
        for block in self.recycled[class].take_oldest(count) {
            // SAFETY: the block was checked to be a slot of this class's slabs
            // when it was recycled, and nobody uses it since it was freed.
            // The slab refuses only a block it already has (one freed twice,
            // not in a row, so recycled twice): dropping that copy is right.
            let _refused_copy = unsafe { self.classes[class].deallocate(block, &pages) };
        }
        let counters = &mut self.counters[class];
        counters.pages = counters.pages.wrapping_add_signed(pages.net_pages());
        pages.net_pages().unsigned_abs()
    }

    /// Frees a block.
    ///
    /// # Errors
    /// [`FreeError::Misaligned`] when `ptr` is not aligned as `layout` says;
    /// a double free of a small or mid-size block is reported as
    /// [`FreeError::DoubleFree`] where the metadata can tell. Nothing changes
    /// on error.
    ///
    /// # Safety
    /// `ptr` was returned by this heap for `layout` (or, after a reallocation,
    /// for `layout`'s alignment and size) and is no longer used.
    #[inline]
    pub unsafe fn deallocate(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), FreeError> {
        let ptr = provenance::reclaim(ptr);
        // SAFETY: the caller's promise, passed on.
        if unsafe { self.deallocate_recycling(ptr, layout) } {
            return Ok(());
        }
        // SAFETY: as above; the fast path changed nothing.
        unsafe { self.deallocate_slow(ptr, layout) }
    }

    /// Pushes a small block on its class's recycle stack, with no call on
    /// the way; `false` (and nothing changed) when the block is misaligned,
    /// not small, not a slot of its class's slabs, on top of the stack
    /// already, or the stack is full: the slow path sorts those out.
    ///
    /// # Safety
    /// As [`deallocate`](Self::deallocate), with `ptr` reclaimed.
    #[inline(always)]
    unsafe fn deallocate_recycling(&mut self, ptr: NonNull<u8>, layout: Layout) -> bool {
        if !RECYCLING || ptr.as_ptr() as usize & (layout.align() - 1) != 0 {
            return false;
        }
        let Some(class) = small_class(layout.size(), layout.align()) else {
            return false;
        };
        // Only blocks of this class's slabs may ever be handed out again.
        // SAFETY: the caller's promise: `ptr` came from this class's slabs.
        let owned = unsafe { self.classes[class].check_object(ptr) }.is_ok();
        if !owned || self.recycled[class].is_top(ptr) || self.recycled[class].push(ptr).is_err() {
            return false;
        }
        self.counters[class].in_use -= 1;
        self.small.record_deallocation(layout.size());
        true
    }

    /// Misaligned or foreign pointers, double frees, full recycle stacks,
    /// and mid-size and large frees.
    ///
    /// # Safety
    /// As [`deallocate_recycling`](Self::deallocate_recycling).
    #[inline(never)]
    unsafe fn deallocate_slow(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
    ) -> Result<(), FreeError> {
        if ptr.as_ptr() as usize & (layout.align() - 1) != 0 {
            return Err(FreeError::Misaligned);
        }
        let Some(class) = small_class(layout.size(), layout.align()) else {
            // SAFETY: the caller's promise; non-small layouts went to the backend.
            return unsafe { self.backend.deallocate(ptr, layout) };
        };
        if RECYCLING {
            // SAFETY: the caller's promise, passed on.
            unsafe { self.recycle(class, ptr) }?;
            self.counters[class].in_use -= 1;
            self.small.record_deallocation(layout.size());
            return Ok(());
        }
        let pages = BackendPages::new(&mut self.backend);
        // SAFETY: the caller's promise; this layout's blocks come from this class.
        let result = unsafe { self.classes[class].deallocate(ptr, &pages) };
        let counters = &mut self.counters[class];
        counters.pages = counters.pages.wrapping_add_signed(pages.net_pages());
        result?;
        counters.in_use -= 1;
        self.small.record_deallocation(layout.size());
        Ok(())
    }

    /// Resizes a block to `new_size` bytes, keeping its alignment and its
    /// contents up to the smaller size. Stays in place when the new size has
    /// the same size class or page run, or a mid-size block can grow into a
    /// free neighbour; otherwise allocates, copies and frees.
    ///
    /// # Errors
    /// As [`allocate`](Self::allocate), and [`AllocError::Overflow`] when
    /// `new_size` at this alignment is not a valid layout. The old block is
    /// untouched on error.
    ///
    /// # Safety
    /// As [`deallocate`](Self::deallocate).
    pub unsafe fn reallocate(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        // SAFETY: the caller's promise, passed on.
        match unsafe { self.reallocate_without_handler(ptr, layout, new_size) } {
            Err(AllocError::OutOfMemory) if self.oom.is_some_and(|handler| handler(&layout)) => {
                // SAFETY: as above; the failed attempt left the block untouched.
                unsafe { self.reallocate_without_handler(ptr, layout, new_size) }
            }
            other => other,
        }
    }

    /// [`reallocate`](Self::reallocate) without calling the out-of-memory handler.
    ///
    /// # Errors
    /// As [`reallocate`](Self::reallocate).
    ///
    /// # Safety
    /// As [`deallocate`](Self::deallocate).
    pub unsafe fn reallocate_without_handler(
        &mut self,
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
            self.small.bytes_in_use = self.small.bytes_in_use - layout.size() + new_size;
            self.small.peak_bytes_in_use =
                self.small.peak_bytes_in_use.max(self.small.bytes_in_use);
            return Ok(ptr);
        }
        if old_class.is_none() && new_class.is_none() {
            // SAFETY: the caller's promise; both layouts are non-small.
            if unsafe { self.backend.resize_in_place(ptr, layout, new_size) } {
                return Ok(ptr);
            }
        }
        let new = self.allocate_without_handler(new_layout)?;
        // SAFETY: both blocks are live, distinct, and at least this long.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), layout.size().min(new_size));
        }
        // SAFETY: the caller's promise; the contents now live in `new`.
        let freed = unsafe { self.deallocate(ptr, layout) };
        debug_assert!(freed.is_ok(), "reallocated block was not ours");
        Ok(new)
    }

    /// Gives back every empty slab and the kept empty page run; returns the
    /// bytes given back.
    pub fn shrink(&mut self) -> usize {
        let mut pages_freed = 0;
        for class in 0..SMALL_CLASS_COUNT {
            pages_freed += self.flush_recycled(class, RECYCLE_CAPACITY);
        }
        for (cache, counters) in self.classes.iter_mut().zip(self.counters.iter_mut()) {
            let pages = BackendPages::new(&mut self.backend);
            cache.shrink(0, &pages);
            counters.pages = counters.pages.wrapping_add_signed(pages.net_pages());
            pages_freed += pages.net_pages().unsigned_abs();
        }
        pages_freed * PAGE_SIZE + self.backend.shrink()
    }

    /// Gives back the empty slabs of every class that no allocation needed
    /// since the previous reap (see `kalloc_slab::SlabCache::reap`); returns
    /// the bytes given back. Kernels call this from a periodic timer; the
    /// kept slabs spare a returning burst the page source and slab set-up.
    pub fn reap(&mut self) -> usize {
        let mut pages_freed = 0;
        for (cache, counters) in self.classes.iter_mut().zip(self.counters.iter_mut()) {
            let pages = BackendPages::new(&mut self.backend);
            cache.reap(&pages);
            counters.pages = counters.pages.wrapping_add_signed(pages.net_pages());
            pages_freed += pages.net_pages().unsigned_abs();
        }
        pages_freed * PAGE_SIZE
    }

    /// A snapshot of the heap's usage.
    pub fn stats(&self) -> HeapStats {
        let backend = self.backend.stats();
        let mut classes = [ClassStats::default(); SMALL_CLASS_COUNT];
        let mut small = self.small;
        small.bytes_held = 0;
        for (class, (stats, counters)) in classes.iter_mut().zip(&self.counters).enumerate() {
            *stats = ClassStats {
                object_bytes: class_bytes(class),
                objects_in_use: counters.in_use,
                peak_objects_in_use: counters.peak,
                bytes_held: counters.pages * PAGE_SIZE,
            };
            small.bytes_held += stats.bytes_held;
        }
        crate::stats::assemble(small, backend, classes)
    }

    #[cfg(test)]
    pub(crate) fn check(&self) {
        self.backend.check();
    }
}

#[cfg(test)]
mod tests;
