//! Peer heaps: talc, rlsf, linked_list_allocator, buddy_system_allocator's
//! heap, and the host allocators.

use std::alloc::Layout;
use std::ptr::NonNull;

use super::{HeapBench, realloc_by_copy};
use crate::arena::Arena;
use crate::host::{Host, HostAllocator};

/// Alignment of every arena: more than any block asks for.
const ARENA_ALIGN: usize = 1 << 16;

/// `talc` 5 (`Talc` with the `Manual` source over one claimed arena).
pub struct TalcPeer {
    talc: talc::base::Talc<talc::source::Manual, talc::DefaultBinning>,
    arena: Arena,
}

// SAFETY: the allocator's pointers all lead into `arena`, owned by this value.
unsafe impl Send for TalcPeer {}

impl HeapBench for TalcPeer {
    const NAME: &'static str = "talc";
    const OURS: bool = false;

    fn new(arena_bytes: usize) -> Self {
        let arena = Arena::new(arena_bytes, ARENA_ALIGN);
        let mut talc = talc::base::Talc::new(talc::source::Manual);
        // SAFETY: the arena is writable, unused, and lives as long as `talc`
        // (same value); `Manual` allows claiming.
        unsafe { talc.claim(arena.start().as_ptr(), arena.len()) }.expect("talc claims the arena");
        Self { talc, arena }
    }

    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: workloads never ask for zero bytes.
        unsafe { self.talc.allocate(layout) }
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's promise.
        unsafe { self.talc.deallocate(block.as_ptr(), layout) };
    }

    unsafe fn realloc(
        &mut self,
        block: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's promise; `new_size` is non-zero.
        if unsafe {
            self.talc
                .try_realloc_in_place(block.as_ptr(), layout, new_size)
        } {
            return Some(block);
        }
        // SAFETY: the caller's promise.
        unsafe { realloc_by_copy(self, block, layout, new_size) }
    }

    fn arena_start(&self) -> Option<usize> {
        Some(self.arena.start().as_ptr() as usize)
    }
}

/// The rlsf configuration measured: 32-byte granularity, blocks up to 8 GiB,
/// 32 second-level classes per power of two.
type Tlsf = rlsf::Tlsf<'static, u32, u32, 28, 32>;

/// `rlsf` (TLSF) over one arena.
pub struct RlsfPeer {
    tlsf: Tlsf,
    arena: Arena,
}

// SAFETY: as for `TalcPeer`.
unsafe impl Send for RlsfPeer {}

impl HeapBench for RlsfPeer {
    const NAME: &'static str = "rlsf";
    const OURS: bool = false;

    fn new(arena_bytes: usize) -> Self {
        let arena = Arena::new(arena_bytes, ARENA_ALIGN);
        let mut tlsf = Tlsf::new();
        let block = NonNull::slice_from_raw_parts(arena.start(), arena.len());
        // SAFETY: the arena is writable, unused, and outlives `tlsf` (same value,
        // never used after the allocator).
        unsafe { tlsf.insert_free_block_ptr(block) }.expect("rlsf takes the arena");
        Self { tlsf, arena }
    }

    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.tlsf.allocate(layout)
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's promise.
        unsafe { self.tlsf.deallocate(block, layout.align()) };
    }

    unsafe fn realloc(
        &mut self,
        block: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        let new_layout = Layout::from_size_align(new_size, layout.align()).ok()?;
        // SAFETY: the caller's promise; the alignment is unchanged.
        unsafe { self.tlsf.reallocate(block, new_layout) }
    }

    fn arena_start(&self) -> Option<usize> {
        Some(self.arena.start().as_ptr() as usize)
    }
}

/// `linked_list_allocator::Heap`: a first-fit free list.
pub struct LinkedListPeer {
    heap: linked_list_allocator::Heap,
    arena: Arena,
}

// SAFETY: as for `TalcPeer`.
unsafe impl Send for LinkedListPeer {}

impl HeapBench for LinkedListPeer {
    const NAME: &'static str = "linked_list_allocator";
    const OURS: bool = false;

    fn new(arena_bytes: usize) -> Self {
        let arena = Arena::new(arena_bytes, ARENA_ALIGN);
        let mut heap = linked_list_allocator::Heap::empty();
        // SAFETY: the arena is writable, unused, and outlives the heap.
        unsafe { heap.init(arena.start().as_ptr(), arena.len()) };
        Self { heap, arena }
    }

    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.heap.allocate_first_fit(layout).ok()
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's promise.
        unsafe { self.heap.deallocate(block, layout) };
    }

    unsafe fn realloc(
        &mut self,
        block: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's promise.
        unsafe { realloc_by_copy(self, block, layout, new_size) }
    }

    fn arena_start(&self) -> Option<usize> {
        Some(self.arena.start().as_ptr() as usize)
    }
}

/// `buddy_system_allocator::Heap` with blocks up to 2^31 bytes.
pub struct BuddySystemHeapPeer {
    heap: buddy_system_allocator::Heap<32>,
    arena: Arena,
}

// SAFETY: as for `TalcPeer`.
unsafe impl Send for BuddySystemHeapPeer {}

impl HeapBench for BuddySystemHeapPeer {
    const NAME: &'static str = "buddy_system_allocator";
    const OURS: bool = false;

    fn new(arena_bytes: usize) -> Self {
        let arena = Arena::new(arena_bytes, ARENA_ALIGN);
        let mut heap = buddy_system_allocator::Heap::new();
        // SAFETY: the arena is writable, unused, and outlives the heap.
        unsafe { heap.init(arena.start().as_ptr() as usize, arena.len()) };
        Self { heap, arena }
    }

    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.heap.alloc(layout).ok()
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's promise.
        unsafe { self.heap.dealloc(block, layout) };
    }

    unsafe fn realloc(
        &mut self,
        block: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's promise.
        unsafe { realloc_by_copy(self, block, layout, new_size) }
    }

    fn arena_start(&self) -> Option<usize> {
        Some(self.arena.start().as_ptr() as usize)
    }
}

impl<G: HostAllocator> HeapBench for Host<G> {
    const NAME: &'static str = G::NAME;
    const OURS: bool = false;
    const USES_ARENA: bool = false;

    fn new(_arena_bytes: usize) -> Self {
        Host::new(1)
    }

    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: workloads never ask for zero bytes.
        NonNull::new(unsafe { self.allocator.alloc(layout) })
    }

    #[inline]
    unsafe fn free(&mut self, block: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's promise.
        unsafe { self.allocator.dealloc(block.as_ptr(), layout) };
    }

    unsafe fn realloc(
        &mut self,
        block: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's promise; `new_size` is non-zero.
        NonNull::new(unsafe { self.allocator.realloc(block.as_ptr(), layout, new_size) })
    }

    fn arena_start(&self) -> Option<usize> {
        None
    }
}
