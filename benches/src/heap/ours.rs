//! kalloc's heaps, behind [`HeapBench`], each over the same arena as the peers.

use std::alloc::Layout;
use std::ptr::NonNull;

use kalloc_api::PinnedCpu;
use kalloc_buddy::BuddyHeap;
use kalloc_heap::{Heap, LockedHeap, NoPages, PerCpuHeap, PinnedPerCpuHeap};

use super::HeapBench;
use crate::arena::Arena;
use crate::cpu::{BENCH_CPUS, BenchCpu, pinned_cpu};

/// Alignment of every arena (as the peers').
const ARENA_ALIGN: usize = 1 << 16;

/// `kalloc_heap::Heap` (the `&mut self` core) over one fixed region.
pub struct KallocHeap {
    heap: Heap<NoPages>,
    arena: Arena,
}

// SAFETY: the heap's pointers all lead into `arena`, owned by this value.
unsafe impl Send for KallocHeap {}

impl HeapBench for KallocHeap {
    const NAME: &'static str = "kalloc-heap";
    const OURS: bool = true;

    fn new(arena_bytes: usize) -> Self {
        let arena = Arena::new(arena_bytes, ARENA_ALIGN);
        let mut heap = Heap::new();
        // SAFETY: the arena is writable, unused, and lives as long as the heap.
        unsafe { heap.init_with_region(arena.start().as_ptr(), arena.len()) }
            .expect("heap takes the arena");
        Self { heap, arena }
    }

    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.heap.allocate(layout).ok()
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's promise.
        let freed = unsafe { self.heap.deallocate(block, layout) };
        debug_assert!(freed.is_ok(), "{freed:?}");
    }

    unsafe fn realloc(
        &mut self,
        block: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's promise.
        unsafe { self.heap.reallocate(block, layout, new_size) }.ok()
    }

    fn arena_start(&self) -> Option<usize> {
        Some(self.arena.start().as_ptr() as usize)
    }
}

/// The per-CPU heap measured: [`BENCH_CPUS`] CPUs.
pub type PerCpuHeapFront = PerCpuHeap<NoPages, BenchCpu, BENCH_CPUS>;

/// `kalloc_heap::PerCpuHeap`: per-CPU magazines in front of the size classes,
/// used through `&self`.
pub struct KallocPerCpuHeap {
    // Boxed: with its per-CPU magazines the front is hundreds of KiB.
    heap: Box<PerCpuHeapFront>,
    arena: Arena,
}

impl KallocPerCpuHeap {
    /// The heap, for sharing between threads.
    pub fn shared(&self) -> &PerCpuHeapFront {
        &self.heap
    }
}

impl HeapBench for KallocPerCpuHeap {
    const NAME: &'static str = "kalloc-heap-pcp";
    const OURS: bool = true;

    fn new(arena_bytes: usize) -> Self {
        let arena = Arena::new(arena_bytes, ARENA_ALIGN);
        let heap = Box::new(PerCpuHeap::new(BenchCpu).expect("per-CPU heap"));
        // SAFETY: the arena is writable, unused, and lives as long as the heap.
        unsafe { heap.init_with_region(arena.start().as_ptr(), arena.len()) }
            .expect("heap takes the arena");
        Self { heap, arena }
    }

    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.heap.allocate(layout).ok()
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's promise.
        let freed = unsafe { self.heap.deallocate(block, layout) };
        debug_assert!(freed.is_ok(), "{freed:?}");
    }

    unsafe fn realloc(
        &mut self,
        block: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's promise.
        unsafe { self.heap.reallocate(block, layout, new_size) }.ok()
    }

    fn arena_start(&self) -> Option<usize> {
        Some(self.arena.start().as_ptr() as usize)
    }
}

/// The pinned per-CPU heap measured: [`BENCH_CPUS`] CPUs.
pub type PinnedHeapFront = PinnedPerCpuHeap<NoPages, BENCH_CPUS>;

/// `kalloc_heap::PinnedPerCpuHeap`: per-CPU magazines used without a lock,
/// driven as a kernel with preemption off drives them: a [`PinnedCpu`]
/// token of the thread's own index, held for the whole run.
pub struct KallocPinnedHeap {
    // Boxed: with its per-CPU magazines the front is hundreds of KiB.
    heap: Box<PinnedHeapFront>,
    cpu: PinnedCpu,
    arena: Arena,
}

impl KallocPinnedHeap {
    /// The heap, for threads that bring tokens of their own.
    pub fn shared(&self) -> &PinnedHeapFront {
        &self.heap
    }
}

// SAFETY: through `&self` only `shared` is reachable, and its users bring
// tokens of their own; the value's token is used by `&mut self` methods
// alone, on the thread that made it (the value is not `Send`).
unsafe impl Sync for KallocPinnedHeap {}

impl HeapBench for KallocPinnedHeap {
    const NAME: &'static str = "kalloc-heap-pinned";
    const OURS: bool = true;

    fn new(arena_bytes: usize) -> Self {
        let arena = Arena::new(arena_bytes, ARENA_ALIGN);
        let heap = Box::new(PinnedPerCpuHeap::new().expect("pinned heap"));
        // SAFETY: the arena is writable, unused, and lives as long as the heap.
        unsafe { heap.init_with_region(arena.start().as_ptr(), arena.len()) }
            .expect("heap takes the arena");
        Self {
            heap,
            cpu: pinned_cpu(),
            arena,
        }
    }

    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.heap.allocate(&self.cpu, layout).ok()
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's promise.
        let freed = unsafe { self.heap.deallocate(&self.cpu, block, layout) };
        debug_assert!(freed.is_ok(), "{freed:?}");
    }

    unsafe fn realloc(
        &mut self,
        block: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's promise.
        unsafe { self.heap.reallocate(&self.cpu, block, layout, new_size) }.ok()
    }

    fn arena_start(&self) -> Option<usize> {
        Some(self.arena.start().as_ptr() as usize)
    }
}

/// `kalloc_heap::LockedHeap`: the core behind one lock, used through `&self`.
pub struct KallocLockedHeap {
    heap: LockedHeap<NoPages>,
    arena: Arena,
}

impl KallocLockedHeap {
    /// A locked heap over a fresh arena of `arena_bytes` bytes.
    pub fn new(arena_bytes: usize) -> Self {
        let arena = Arena::new(arena_bytes, ARENA_ALIGN);
        let heap = LockedHeap::new();
        // SAFETY: the arena is writable, unused, and lives as long as the heap.
        unsafe { heap.init_with_region(arena.start().as_ptr(), arena.len()) }
            .expect("heap takes the arena");
        Self { heap, arena }
    }

    /// The heap, for sharing between threads.
    pub fn shared(&self) -> &LockedHeap<NoPages> {
        &self.heap
    }

    /// First byte of the arena.
    pub fn arena_start(&self) -> usize {
        self.arena.start().as_ptr() as usize
    }
}

/// Size classes of the buddy heap: blocks up to 2^31 bytes, as the peer's.
pub const BUDDY_HEAP_ORDERS: usize = 32;

/// `kalloc_buddy::BuddyHeap`: a byte-granular buddy heap over one region.
pub struct KallocBuddyHeap {
    heap: BuddyHeap<BUDDY_HEAP_ORDERS>,
    arena: Arena,
}

impl HeapBench for KallocBuddyHeap {
    const NAME: &'static str = "kalloc-buddy-heap";
    const OURS: bool = true;

    fn new(arena_bytes: usize) -> Self {
        let arena = Arena::new(arena_bytes, ARENA_ALIGN);
        let mut heap = BuddyHeap::new();
        // SAFETY: the arena is writable, unused, and lives as long as the heap.
        unsafe { heap.add_region(arena.start().as_ptr(), arena.len()) };
        Self { heap, arena }
    }

    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.heap.allocate(layout).ok()
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's promise.
        let freed = unsafe { self.heap.deallocate(block, layout) };
        debug_assert!(freed.is_ok(), "{freed:?}");
    }

    unsafe fn realloc(
        &mut self,
        block: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's promise.
        unsafe { super::realloc_by_copy(self, block, layout, new_size) }
    }

    fn arena_start(&self) -> Option<usize> {
        Some(self.arena.start().as_ptr() as usize)
    }
}
