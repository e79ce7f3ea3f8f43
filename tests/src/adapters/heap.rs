//! `kalloc-heap`: the kernel heap through its checked API, behind one lock
//! through `GlobalAlloc`, and with per-CPU small classes, over the checking
//! [`HostPages`] source; and the heap over one fixed region, as a kernel
//! without a frame allocator uses it.

use std::alloc::Layout;
use std::ptr::NonNull;

use kalloc_api::sync::{AtomicUsize, Ordering};
use kalloc_api::{AllocError, FreeError, PAGE_SIZE, PageSource};
use kalloc_heap::{Heap, HeapStats, LockedHeap, NoPages, PerCpuHeap};

use crate::adapter::{Expect, ModelAllocator, Rules};
use crate::adapters::{GlobalAdapter, HeapHooks};
use crate::driver::{Divergence, Summary, run};
use crate::host::{HostArena, HostPages};
use crate::model::{Block, Model, Span};
use crate::op::Op;

/// Pages of the page source: 4 MiB, so megabyte requests exhaust it.
pub(super) const SOURCE_PAGES: usize = 1024;
/// Alignment of the page source's arena, in pages.
pub(super) const SOURCE_ALIGN_PAGES: usize = 64;
/// CPUs of the per-CPU heap; the CPU id moves on at every call.
pub(super) const CPUS: usize = 3;

fn layout(size: u64, align: u64) -> Result<Layout, AllocError> {
    let size = usize::try_from(size).map_err(|_| AllocError::Overflow)?;
    let align = usize::try_from(align).map_err(|_| AllocError::BadAlignment)?;
    Layout::from_size_align(size, align).map_err(|_| AllocError::Overflow)
}

/// No peak below the figure it is the peak of.
fn check_peaks(stats: &HeapStats) -> Result<(), String> {
    let paths = [
        ("total", &stats.total),
        ("small", &stats.small),
        ("mid", &stats.mid),
        ("large", &stats.large),
    ];
    for (name, path) in paths {
        if path.peak_bytes_in_use < path.bytes_in_use {
            return Err(format!("{name} peak below bytes in use: {path:?}"));
        }
    }
    for (class, figures) in stats.classes.iter().enumerate() {
        if figures.peak_objects_in_use < figures.objects_in_use {
            return Err(format!(
                "class {class} peak below objects in use: {figures:?}"
            ));
        }
    }
    Ok(())
}

/// Checks the heap's figures against the page source: every page it took
/// is still out, and nothing was given back wrongly.
fn check_pages(stats: &HeapStats, pages: &HostPages) -> Result<(), String> {
    check_peaks(stats)?;
    let out = pages.outstanding_pages() * PAGE_SIZE;
    if stats.total.bytes_held != out {
        return Err(format!(
            "the heap says it holds {:#x} bytes; the page source has {out:#x} out",
            stats.total.bytes_held
        ));
    }
    if let Some(misuse) = pages.misuse().first() {
        return Err(format!("page source misused: {misuse}"));
    }
    Ok(())
}

/// The leak check: after every block was freed and the heap shrunk, every
/// page is back in the source.
fn check_all_back(stats: &HeapStats, pages: &HostPages) -> Result<(), String> {
    if stats.total.bytes_in_use != 0 {
        return Err(format!(
            "{} bytes still in use after every block was freed",
            stats.total.bytes_in_use
        ));
    }
    pages.check_all_returned()
}

/// A heap front with a checked API (`allocate`, `deallocate`,
/// `reallocate` returning errors), driven from one thread.
pub(super) trait CheckedHeap {
    /// Whether its bytes in use are the requested bytes of the live blocks.
    const EXACT_USAGE: bool;
    fn allocate(&mut self, layout: Layout) -> Result<NonNull<u8>, AllocError>;
    /// # Safety
    /// `ptr` is a live block of this heap with `layout`.
    unsafe fn deallocate(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), FreeError>;
    /// # Safety
    /// As for [`deallocate`](Self::deallocate).
    unsafe fn reallocate(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, AllocError>;
    /// Gives back everything cached, on every CPU.
    fn shrink(&mut self);
    fn stats(&self) -> HeapStats;
}

impl<P: PageSource> CheckedHeap for Heap<P> {
    const EXACT_USAGE: bool = true;

    fn allocate(&mut self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        Heap::allocate(self, layout)
    }

    unsafe fn deallocate(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), FreeError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { Heap::deallocate(self, ptr, layout) }
    }

    unsafe fn reallocate(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { Heap::reallocate(self, ptr, layout, new_size) }
    }

    fn shrink(&mut self) {
        Heap::shrink(self);
    }

    fn stats(&self) -> HeapStats {
        Heap::stats(self)
    }
}

/// Where a driven heap's memory comes from, and what must hold of it
/// along the way and at the end.
pub(super) trait HeapMemory {
    /// The address ranges the heap may hand out.
    fn owned(&self) -> Vec<Span>;
    /// Checked after every step.
    fn check(&self, stats: &HeapStats) -> Result<(), String>;
    /// Checked after every block was freed and the heap shrunk.
    fn finish(&self, stats: &HeapStats) -> Result<(), String>;
}

/// All memory from the checking page source.
pub(super) struct SourceMemory<'p>(pub(super) &'p HostPages);

impl HeapMemory for SourceMemory<'_> {
    fn owned(&self) -> Vec<Span> {
        self.0.held_spans()
    }

    fn check(&self, stats: &HeapStats) -> Result<(), String> {
        check_pages(stats, self.0)
    }

    fn finish(&self, stats: &HeapStats) -> Result<(), String> {
        check_all_back(stats, self.0)
    }
}

/// One fixed region, where slabs, mid-size and large blocks all share the
/// region's TLSF.
struct RegionMemory {
    region: Span,
    /// Free bytes and largest free block of the fresh heap.
    fresh: (usize, usize),
}

impl HeapMemory for RegionMemory {
    fn owned(&self) -> Vec<Span> {
        vec![self.region]
    }

    fn check(&self, stats: &HeapStats) -> Result<(), String> {
        check_peaks(stats)
    }

    fn finish(&self, stats: &HeapStats) -> Result<(), String> {
        if stats.total.bytes_in_use != 0 {
            return Err(format!(
                "{} bytes still in use after every block was freed",
                stats.total.bytes_in_use
            ));
        }
        let now = (stats.mid_free_bytes, stats.mid_largest_free_bytes);
        if now != self.fresh {
            return Err(format!(
                "after every free and a shrink the region has (free, largest) = {now:?}, \
                 fresh it had {:?}",
                self.fresh
            ));
        }
        Ok(())
    }
}

/// Drives a heap front through its checked API.
pub(super) struct HeapAdapter<H, M> {
    pub(super) heap: H,
    pub(super) memory: M,
}

impl<H: CheckedHeap, M: HeapMemory> ModelAllocator for HeapAdapter<H, M> {
    fn rules(&self) -> Rules {
        Rules {
            // A zero size is served as one byte.
            zero_size: Expect::Succeed,
            ..Rules::UNCHECKED_HEAP
        }
    }

    fn owned(&self) -> Vec<Span> {
        self.memory.owned()
    }

    fn allocate(&mut self, size: u64, align: u64) -> Result<Block, AllocError> {
        let ptr = self.heap.allocate(layout(size, align)?)?;
        Ok(Block::host(ptr, size))
    }

    fn free(&mut self, block: &Block, size: u64, align: u64) -> Result<(), FreeError> {
        let layout = layout(size, align).map_err(|_| FreeError::SizeMismatch)?;
        let ptr = block.ptr.ok_or(FreeError::NotOwned)?;
        // SAFETY: the rules skip every hostile free, so `ptr` is a live
        // block of this heap allocated (or last resized) with `layout`.
        unsafe { self.heap.deallocate(ptr, layout) }
    }

    fn realloc(
        &mut self,
        block: &Block,
        size: u64,
        align: u64,
        new_size: u64,
    ) -> Result<Block, AllocError> {
        let old = layout(size, align)?;
        let new_size = usize::try_from(new_size).map_err(|_| AllocError::Overflow)?;
        let ptr = block.ptr.ok_or(AllocError::OutOfMemory)?;
        // SAFETY: `ptr` is a live block of this heap allocated with `old`.
        let moved = unsafe { self.heap.reallocate(ptr, old, new_size) }?;
        Ok(Block::host(moved, new_size as u64))
    }

    fn shrink(&mut self) {
        self.heap.shrink();
    }

    fn charge(&self, _block: &Block, requested: u64, _align: u64) -> u64 {
        requested
    }

    fn used_bytes(&self) -> Option<u64> {
        H::EXACT_USAGE.then(|| self.heap.stats().total.bytes_in_use as u64)
    }

    fn check(&self, _model: &Model) -> Result<(), String> {
        self.memory.check(&self.heap.stats())
    }

    fn finish(&mut self, _model: &Model) -> Result<(), String> {
        self.memory.finish(&self.heap.stats())
    }
}

/// Runs `ops` on a [`Heap`] taking all its memory from a 4 MiB checking page
/// source, through its checked API; contents are written and verified, and
/// after every block is freed and the heap shrunk, every page must be back.
pub fn run_heap(ops: &[Op]) -> Result<Summary, Divergence> {
    let pages = HostPages::new(SOURCE_PAGES, SOURCE_ALIGN_PAGES);
    let mut adapter = HeapAdapter {
        heap: Heap::with_pages(&pages),
        memory: SourceMemory(&pages),
    };
    run(&mut adapter, ops)
}

/// Bytes of the region heap's arena: 4 MiB, so megabyte requests exhaust it.
const REGION_BYTES: usize = SOURCE_PAGES * PAGE_SIZE;
/// Where the region starts in its arena: mid-page, as a kernel's `.bss`
/// heap may.
const REGION_OFFSET: usize = 0x808;

/// Runs `ops` on a [`Heap`] over one 4 MiB region, through its checked API;
/// contents are written and verified, and after every block is freed and
/// the heap shrunk the region must be one free block again.
pub fn run_region_heap(ops: &[Op]) -> Result<Summary, Divergence> {
    let arena = HostArena::new(REGION_BYTES, SOURCE_ALIGN_PAGES * PAGE_SIZE);
    let start = arena.at(REGION_OFFSET);
    let len = REGION_BYTES - REGION_OFFSET;
    let mut heap: Heap<NoPages> = Heap::new();
    // SAFETY: the arena outlives the heap and nothing else uses it.
    unsafe { heap.init_with_region(start.as_ptr(), len) }.expect("the region fits");
    let stats = heap.stats();
    let region = (
        start.as_ptr() as u64,
        (start.as_ptr() as usize + len) as u64,
    );
    let mut adapter = HeapAdapter {
        heap,
        memory: RegionMemory {
            region,
            fresh: (stats.mid_free_bytes, stats.mid_largest_free_bytes),
        },
    };
    // The heap in `adapter` is dropped before `arena`, declared earlier.
    run(&mut adapter, ops)
}

/// Hooks for a shared heap `G` over `pages`: usage from its statistics
/// (`None` where small objects cached per CPU count as in use), pages
/// checked after every step, everything back at the end.
fn hooks<'p, G: 'p>(
    pages: &'p HostPages,
    stats: fn(&G) -> HeapStats,
    shrink: fn(&G),
    exact_usage: bool,
) -> HeapHooks<'p, G> {
    HeapHooks {
        owned: Box::new(move |_| pages.held_spans()),
        used_bytes: exact_usage
            .then(|| Box::new(move |heap: &G| stats(heap).total.bytes_in_use as u64) as _),
        charge: Box::new(|requested, _| requested),
        shrink: Some(Box::new(shrink)),
        check: Some(Box::new(move |heap, _| check_pages(&stats(heap), pages))),
        finish: Some(Box::new(move |heap| check_all_back(&stats(heap), pages))),
    }
}

/// Runs `ops` on a [`LockedHeap`] through `GlobalAlloc` (realloc included).
pub fn run_locked_heap(ops: &[Op]) -> Result<Summary, Divergence> {
    let pages = HostPages::new(SOURCE_PAGES, SOURCE_ALIGN_PAGES);
    let heap = LockedHeap::with_pages(&pages);
    let hooks = hooks(
        &pages,
        LockedHeap::stats,
        |heap| {
            heap.shrink();
        },
        true,
    );
    run(&mut GlobalAdapter::new(heap, hooks), ops)
}

/// Runs `ops` on a [`PerCpuHeap`] through `GlobalAlloc`, its CPU id moving
/// on at every call, so small objects are freed into other CPUs' magazines.
pub fn run_per_cpu_heap(ops: &[Op]) -> Result<Summary, Divergence> {
    let pages = HostPages::new(SOURCE_PAGES, SOURCE_ALIGN_PAGES);
    let next = AtomicUsize::new(0);
    let next = &next;
    let cpu = move || next.fetch_add(1, Ordering::Relaxed) % CPUS;
    let heap: PerCpuHeap<_, _, CPUS> =
        PerCpuHeap::with_pages(cpu, &pages).expect("the size classes are valid");
    let hooks = hooks(
        &pages,
        PerCpuHeap::stats,
        |heap| {
            heap.shrink();
        },
        false,
    );
    run(&mut GlobalAdapter::new(heap, hooks), ops)
}
