extern crate std;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use std::boxed::Box;
use std::vec::Vec;

use kalloc_api::{AllocError, FreeError};

use super::{BuddyHeap, MIN_BLOCK_BYTES};
use crate::LockedBuddyHeap;

const ARENA_BYTES: usize = 1 << 16;

#[repr(C, align(65536))]
struct Arena([u8; ARENA_BYTES]);

/// A heap-allocated, 64 KiB-aligned arena, freed when dropped. The pointer is
/// taken once so every block derives from it.
struct Memory(*mut Arena);

impl Memory {
    fn new() -> Self {
        let boxed: Box<Arena> = unsafe {
            // SAFETY: all-zero bytes are a valid `Arena`.
            Box::new_zeroed().assume_init()
        };
        Self(Box::into_raw(boxed))
    }
    fn start(&self) -> *mut u8 {
        self.0.cast()
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: from `Box::into_raw`, dropped once.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn heap_over(memory: &Memory, offset: usize, len: usize) -> BuddyHeap<32> {
    let mut heap = BuddyHeap::<32>::new();
    // SAFETY: the range lies in `memory`, which outlives the heap in every test.
    let added = unsafe { heap.add_region(memory.start().wrapping_add(offset), len) };
    assert_eq!(added, heap.total_bytes());
    heap
}

#[test]
fn aligned_region_is_one_block_and_merges_back() {
    let memory = Memory::new();
    let mut heap = heap_over(&memory, 0, ARENA_BYTES);
    assert_eq!(heap.free_blocks_per_order()[16], 1);
    let blocks: Vec<NonNull<u8>> = (0..16)
        .map(|_| heap.allocate(layout(4096, 8)).unwrap())
        .collect();
    assert_eq!(heap.free_bytes(), 0);
    assert_eq!(heap.allocate(layout(8, 8)), Err(AllocError::OutOfMemory));
    for block in blocks {
        // SAFETY: from this heap with this layout.
        unsafe { heap.deallocate(block, layout(4096, 8)) }.unwrap();
    }
    assert_eq!(heap.free_blocks_per_order()[16], 1);
    assert_eq!(heap.free_bytes(), ARENA_BYTES);
}

#[test]
fn unaligned_region_is_trimmed_and_split() {
    let memory = Memory::new();
    let heap = heap_over(&memory, 3, 1000);
    // 3..1003 trimmed to 8..1000: 8, 16..32, 32..64, ..., 512..1000 in pieces.
    assert_eq!(heap.total_bytes(), 1000 - 8);
    let counts = heap.free_blocks_per_order();
    let bytes: usize = counts.iter().enumerate().map(|(order, n)| n << order).sum();
    assert_eq!(bytes, heap.free_bytes());
}

#[test]
fn allocations_keep_their_alignment() {
    let memory = Memory::new();
    let mut heap = heap_over(&memory, 8, ARENA_BYTES - 8);
    for align in [1, 8, 64, 256, 4096] {
        let block = heap.allocate(layout(24, align)).unwrap();
        assert_eq!(block.as_ptr() as usize % align, 0);
        assert_eq!(
            block.as_ptr() as usize % 32,
            0,
            "rounded to 32 bytes, aligned to them"
        );
    }
}

#[test]
fn zero_size_and_overflowing_layouts_are_rejected() {
    let memory = Memory::new();
    let mut heap = heap_over(&memory, 0, ARENA_BYTES);
    assert_eq!(heap.allocate(layout(0, 1)), Err(AllocError::ZeroSize));
    assert_eq!(
        heap.allocate(layout(isize::MAX as usize, 1)),
        Err(AllocError::OutOfMemory)
    );
    assert_eq!(
        heap.allocate(layout(1 << 17, 1)),
        Err(AllocError::OutOfMemory)
    );
    let huge_align = layout(1, 1 << 40);
    assert_eq!(heap.allocate(huge_align), Err(AllocError::OutOfMemory));
    assert_eq!(heap.free_bytes(), ARENA_BYTES);
    assert_eq!(heap.stats().failed_allocations, 4);
    assert_eq!(
        BuddyHeap::<32>::new().allocate(layout(8, 8)),
        Err(AllocError::Uninitialized)
    );
}

#[test]
fn largest_layouts_round_without_overflow() {
    let mut heap = BuddyHeap::<64>::new();
    let beyond = layout((isize::MAX as usize / 2) + 2, 1);
    assert_eq!(heap.allocate(beyond), Err(AllocError::Uninitialized));
    let memory = Memory::new();
    // SAFETY: `memory` outlives the heap.
    unsafe { heap.add_region(memory.start(), ARENA_BYTES) };
    assert_eq!(heap.allocate(beyond), Err(AllocError::OutOfMemory));
    let wide = Layout::from_size_align(usize::MAX / 2 + 1, 1).err();
    assert!(
        wide.is_some(),
        "Layout itself refuses sizes above isize::MAX"
    );
}

#[test]
fn double_free_is_reported() {
    let memory = Memory::new();
    let mut heap = heap_over(&memory, 0, ARENA_BYTES);
    let keep = heap.allocate(layout(64, 8)).unwrap();
    let block = heap.allocate(layout(64, 8)).unwrap();
    // SAFETY: from this heap with this layout.
    unsafe { heap.deallocate(block, layout(64, 8)) }.unwrap();
    // SAFETY: testing the double-free check; the block is on its list.
    let twice = unsafe { heap.deallocate(block, layout(64, 8)) };
    assert_eq!(twice, Err(FreeError::DoubleFree));
    assert_eq!(heap.free_bytes(), ARENA_BYTES - 64);
    // SAFETY: a zero-size layout is refused before the block is touched.
    let zero = unsafe { heap.deallocate(keep, layout(0, 8)) };
    assert_eq!(zero, Err(FreeError::SizeMismatch));
    // SAFETY: from this heap with this layout.
    unsafe { heap.deallocate(keep, layout(64, 8)) }.unwrap();
    assert_eq!(heap.free_bytes(), ARENA_BYTES);
}

#[test]
fn regions_can_be_added_later() {
    let memory = Memory::new();
    let mut heap = heap_over(&memory, 0, ARENA_BYTES / 2);
    assert_eq!(
        heap.allocate(layout(ARENA_BYTES / 2 + 1, 8)),
        Err(AllocError::OutOfMemory)
    );
    // SAFETY: the second half of `memory`, not added before.
    let added = unsafe {
        heap.add_region(
            memory.start().wrapping_add(ARENA_BYTES / 2),
            ARENA_BYTES / 2,
        )
    };
    assert_eq!(added, ARENA_BYTES / 2);
    // The halves merged into one block.
    let all = heap.allocate(layout(ARENA_BYTES, 8)).unwrap();
    assert_eq!(all.as_ptr(), memory.start());
    // SAFETY: from this heap with this layout.
    unsafe { heap.deallocate(all, layout(ARENA_BYTES, 8)) }.unwrap();
}

/// Random allocations and frees against a model of live blocks; every block is
/// filled with a tag byte and checked on free, so overlaps show up (and miri
/// checks every access stays in the block's provenance).
#[test]
fn random_operations_match_the_model() {
    let steps = if cfg!(miri) { 400 } else { 20_000 };
    let memory = Memory::new();
    let mut heap = heap_over(&memory, 40, ARENA_BYTES - 100);
    let total = heap.total_bytes();
    let mut live: Vec<(NonNull<u8>, Layout, u8)> = Vec::new();
    let mut rng = crate::frame_buddy::tests::Rng::new(0xbadd_cafe);
    let (mut allocated, mut freed) = (0, 0);
    for step in 0..steps {
        if live.is_empty() || rng.below(100) < 55 {
            let limit = if rng.below(8) == 0 { 4000 } else { 200 };
            let size = 1 + rng.below(limit) as usize;
            let align = 1 << rng.below(8);
            let layout = layout(size, align);
            match heap.allocate(layout) {
                Ok(block) => {
                    assert_eq!(block.as_ptr() as usize % align, 0);
                    let start = block.as_ptr() as usize;
                    assert!(start >= memory.start() as usize + 40);
                    assert!(start + size <= memory.start() as usize + ARENA_BYTES - 60);
                    for (other, other_layout, _) in &live {
                        let o = other.as_ptr() as usize;
                        assert!(
                            start + size <= o || o + other_layout.size() <= start,
                            "step {step}: overlap"
                        );
                    }
                    let fill = step as u8;
                    // SAFETY: the block is `size` bytes we now own.
                    unsafe { block.as_ptr().write_bytes(fill, size) };
                    live.push((block, layout, fill));
                    allocated += 1;
                }
                Err(AllocError::OutOfMemory) => {}
                Err(other) => panic!("step {step}: {other:?}"),
            }
        } else {
            let (block, layout, fill) = live.swap_remove(rng.below(live.len() as u64) as usize);
            // SAFETY: the block is live and `layout.size()` bytes long.
            let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr(), layout.size()) };
            assert!(
                bytes.iter().all(|&b| b == fill),
                "step {step}: block overwritten"
            );
            // SAFETY: from this heap with this layout, no longer used.
            unsafe { heap.deallocate(block, layout) }.unwrap();
            freed += 1;
        }
        let in_use: usize = live.iter().map(|(_, l, _)| l.size()).sum();
        assert_eq!(heap.stats().bytes_in_use, in_use);
        assert!(heap.free_bytes() + in_use <= total);
    }
    assert!(allocated > steps / 4 && freed > steps / 8);
    for (block, layout, _) in live {
        // SAFETY: from this heap with this layout.
        unsafe { heap.deallocate(block, layout) }.unwrap();
    }
    assert_eq!(heap.free_bytes(), total);
}

#[test]
fn locked_heap_serves_global_alloc_and_returns_null_when_empty() {
    let memory = Memory::new();
    let heap = LockedBuddyHeap::<32>::new();
    // SAFETY: a valid non-zero layout; the heap has no memory yet.
    assert!(unsafe { heap.alloc(layout(8, 8)) }.is_null());
    // SAFETY: `memory` outlives the heap.
    unsafe { heap.add_region(memory.start(), ARENA_BYTES) };
    let layout = layout(100, 8);
    // SAFETY: a valid non-zero layout.
    let block = unsafe { heap.alloc(layout) };
    assert!(!block.is_null());
    // SAFETY: `block` came from `alloc` with `layout`; grown in place or moved.
    let grown = unsafe { heap.realloc(block, layout, 1000) };
    assert!(!grown.is_null());
    // SAFETY: a request larger than the arena.
    assert!(unsafe { heap.alloc(self::layout(2 * ARENA_BYTES, 8)) }.is_null());
    // SAFETY: `grown` came from `realloc` with this size.
    unsafe { heap.dealloc(grown, self::layout(1000, 8)) };
    assert_eq!(heap.lock().free_bytes(), ARENA_BYTES);
}

#[test]
fn min_block_holds_a_link() {
    assert!(MIN_BLOCK_BYTES >= core::mem::size_of::<*mut u8>());
}
