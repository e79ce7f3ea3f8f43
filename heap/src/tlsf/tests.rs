extern crate std;

use super::*;
use std::alloc::{Layout, alloc, dealloc};
use std::vec::Vec;

/// An owned, 4 KiB-aligned test arena that frees itself.
struct Arena {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Arena {
    fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: `len` is non-zero in every test.
        let ptr = NonNull::new(unsafe { alloc(layout) }).unwrap();
        Self { ptr, layout }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

fn with_chunk(len: usize) -> (Arena, Tlsf) {
    let arena = Arena::new(len);
    let mut tlsf = Tlsf::new();
    // SAFETY: the arena outlives the allocator in every test (declared first,
    // dropped last) and is used by nothing else.
    unsafe { tlsf.add_chunk(arena.ptr, len, false) };
    (arena, tlsf)
}

#[test]
fn freeing_everything_coalesces_back_to_one_block() {
    let (_arena, mut tlsf) = with_chunk(64 * 1024);
    let initial = tlsf.free_bytes();
    let blocks: Vec<_> = (0..20)
        .map(|i| tlsf.allocate(100 + i * 37, 8).unwrap())
        .collect();
    tlsf.check();
    // Free in an order that merges with the next, the previous and both.
    for index in [1, 0, 3, 2, 5, 7, 6, 4] {
        // SAFETY: each block was allocated above and is freed once.
        assert!(unsafe { tlsf.deallocate(blocks[index]) }.unwrap().is_none());
        tlsf.check();
    }
    for block in &blocks[8..] {
        // SAFETY: as above.
        unsafe { tlsf.deallocate(*block) }.unwrap();
    }
    assert_eq!(tlsf.check(), initial);
    assert_eq!(tlsf.largest_free_payload(), initial - HEADER_BYTES);
}

#[test]
fn double_free_is_reported_and_changes_nothing() {
    let (_arena, mut tlsf) = with_chunk(8192);
    let a = tlsf.allocate(64, 8).unwrap();
    let _b = tlsf.allocate(64, 8).unwrap();
    // SAFETY: `a` is live.
    unsafe { tlsf.deallocate(a) }.unwrap();
    let free = tlsf.free_bytes();
    // SAFETY: `a` was ours; its header still reads free, so this is refused.
    let refused = unsafe { tlsf.deallocate(a) };
    assert_eq!(refused.unwrap_err(), TlsfFreeError::DoubleFree);
    assert_eq!(tlsf.check(), free);
}

#[test]
fn double_free_of_a_block_merged_into_its_free_neighbour_is_reported() {
    let (_arena, mut tlsf) = with_chunk(8192);
    let a = tlsf.allocate(64, 8).unwrap();
    let b = tlsf.allocate(64, 8).unwrap();
    let _c = tlsf.allocate(64, 8).unwrap();
    // SAFETY: both live; `b` merges into the free `a` before it, so the
    // free block's header is `a`'s, not `b`'s.
    unsafe {
        tlsf.deallocate(a).unwrap();
        tlsf.deallocate(b).unwrap();
    }
    let free = tlsf.free_bytes();
    // SAFETY: `b` was ours and its memory has not been handed out again.
    let refused = unsafe { tlsf.deallocate(b) };
    assert_eq!(refused.unwrap_err(), TlsfFreeError::DoubleFree);
    assert_eq!(tlsf.check(), free);
}

#[test]
fn aligned_allocations_are_aligned_and_gaps_stay_free() {
    let (_arena, mut tlsf) = with_chunk(256 * 1024);
    let initial = tlsf.free_bytes();
    let mut live = Vec::new();
    for shift in 5..=13 {
        let align = 1usize << shift;
        let ptr = tlsf.allocate(24, 16).unwrap();
        let aligned = tlsf.allocate(align / 2 + 1, align).unwrap();
        assert_eq!(aligned.as_ptr() as usize % align, 0, "align {align}");
        live.push(ptr);
        live.push(aligned);
        tlsf.check();
    }
    for ptr in live {
        // SAFETY: each pointer is live and freed once.
        unsafe { tlsf.deallocate(ptr) }.unwrap();
    }
    assert_eq!(tlsf.check(), initial);
}

#[test]
fn exhaustion_returns_none_and_loses_nothing() {
    let (_arena, mut tlsf) = with_chunk(16 * 1024);
    let initial = tlsf.free_bytes();
    let mut live = Vec::new();
    while let Some(ptr) = tlsf.allocate(1000, 8) {
        live.push(ptr);
    }
    assert_eq!(live.len(), 16 * 1024 / 1024 - 1);
    assert!(tlsf.allocate(usize::MAX, 8).is_none());
    assert!(tlsf.allocate(MAX_BLOCK_BYTES, 4096).is_none());
    for ptr in live {
        // SAFETY: live and freed once.
        unsafe { tlsf.deallocate(ptr) }.unwrap();
    }
    assert_eq!(tlsf.check(), initial);
}

#[test]
fn exact_fit_is_found_when_good_fit_rounding_misses_it() {
    let (_arena, mut tlsf) = with_chunk(64 * 1024);
    // Leave exactly one free block of 3000 payload bytes between used blocks.
    let a = tlsf.allocate(3000, 8).unwrap();
    let _fence = tlsf.allocate(16, 8).unwrap();
    let _rest = tlsf.allocate(tlsf.largest_free_payload(), 8).unwrap();
    // SAFETY: `a` is live.
    unsafe { tlsf.deallocate(a) }.unwrap();
    // 2990 rounds up past the list holding the 3000-byte block.
    assert_eq!(tlsf.allocate(2990, 8), Some(a));
    tlsf.check();
}

#[test]
fn resize_in_place_grows_into_a_free_neighbour_and_shrinks() {
    let (_arena, mut tlsf) = with_chunk(64 * 1024);
    let a = tlsf.allocate(1000, 8).unwrap();
    let b = tlsf.allocate(1000, 8).unwrap();
    let _c = tlsf.allocate(1000, 8).unwrap();
    // SAFETY: `a` is live throughout.
    unsafe {
        assert!(!tlsf.resize_in_place(a, 1500), "b is in the way");
        tlsf.deallocate(b).unwrap();
        assert!(tlsf.resize_in_place(a, 1500));
        assert!(Tlsf::usable_size(a) >= 1500);
        assert!(tlsf.resize_in_place(a, 1900));
        assert!(!tlsf.resize_in_place(a, 2100));
        assert!(tlsf.resize_in_place(a, 100));
        assert!(Tlsf::usable_size(a) < 200);
    }
    tlsf.check();
}

#[test]
fn a_wholly_free_releasable_chunk_is_kept_once_then_given_back() {
    let first = Arena::new(8192);
    let second = Arena::new(8192);
    let mut tlsf = Tlsf::new();
    // SAFETY: both arenas outlive the allocator and are used by nothing else.
    unsafe {
        tlsf.add_chunk(first.ptr, 8192, true);
        tlsf.add_chunk(second.ptr, 8192, true);
    }
    assert_eq!(tlsf.held_bytes(), 2 * 8192);
    let a = tlsf.allocate(6000, 8).unwrap();
    let b = tlsf.allocate(6000, 8).unwrap();
    // SAFETY: live, freed once each.
    let released = unsafe { [tlsf.deallocate(a).unwrap(), tlsf.deallocate(b).unwrap()] };
    assert!(released[0].is_none(), "the first empty chunk is kept");
    let chunk = released[1].as_ref().expect("the second is given back");
    assert_eq!(chunk.len, 8192);
    assert_eq!(tlsf.chunks(), 1);
    let spare = tlsf.release_spare().unwrap();
    assert_ne!(spare.start, chunk.start);
    assert_eq!(
        (tlsf.chunks(), tlsf.held_bytes(), tlsf.free_bytes()),
        (0, 0, 0)
    );
    assert!(tlsf.release_spare().is_none());
    assert!(tlsf.allocate(8, 8).is_none());
}

#[test]
fn random_operations_match_a_model_of_live_ranges() {
    let len = 1 << 20;
    let (arena, mut tlsf) = with_chunk(len);
    let base = arena.ptr.as_ptr() as usize;
    let total = tlsf.free_bytes();
    let mut live: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let steps = if cfg!(miri) { 300 } else { 20_000 };
    for step in 0..steps {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        if live.is_empty() || state % 3 != 0 {
            let max_size = if cfg!(miri) { 2_000 } else { 20_000 };
            let size = (state >> 8) as usize % max_size + 1;
            let align = 1 << ((state >> 40) % 13);
            let Some(ptr) = tlsf.allocate(size, align) else {
                continue;
            };
            let addr = ptr.as_ptr() as usize;
            assert_eq!(addr % align, 0);
            assert!(addr >= base && addr + size <= base + len);
            for (other, other_size, _) in &live {
                let o = other.as_ptr() as usize;
                assert!(addr + size <= o || o + other_size <= addr, "overlap");
            }
            // SAFETY: the block is ours and `size` bytes long.
            unsafe { ptr.as_ptr().write_bytes(step as u8, size) };
            live.push((ptr, size, step as u8));
        } else {
            let (ptr, size, fill) = live.swap_remove((state >> 20) as usize % live.len());
            // SAFETY: the block is live and was filled with `fill`.
            unsafe {
                let bytes = core::slice::from_raw_parts(ptr.as_ptr(), size);
                assert!(bytes.iter().all(|b| *b == fill));
                tlsf.deallocate(ptr).unwrap();
            }
        }
        if step % 64 == 0 {
            let used: usize = live
                .iter()
                // SAFETY: every pointer in `live` is a live allocation.
                .map(|(ptr, _, _)| unsafe { Tlsf::usable_size(*ptr) } + HEADER_BYTES)
                .sum();
            assert_eq!(tlsf.check() + used, total);
        }
    }
    for (ptr, _, _) in live {
        // SAFETY: live, freed once.
        unsafe { tlsf.deallocate(ptr) }.unwrap();
    }
    assert_eq!(tlsf.check(), total);
}

#[test]
fn a_request_takes_a_close_hole_before_splitting_the_large_free_block() {
    let (_arena, mut tlsf) = with_chunk(256 * 1024);
    // A 5000-byte hole between two used blocks, the rest one large free block.
    let before = tlsf.allocate(1000, 8).unwrap();
    let hole = tlsf.allocate(5000, 8).unwrap();
    let after = tlsf.allocate(1000, 8).unwrap();
    // SAFETY: `hole` was allocated above and is freed once.
    unsafe { tlsf.deallocate(hole) }.unwrap();
    let largest = tlsf.largest_free_payload();
    // 4900 bytes share the hole's list; good fit alone would round up to the
    // next list and cut the large block instead.
    let taken = tlsf.allocate(4900, 8).unwrap();
    assert_eq!(taken, hole);
    assert_eq!(tlsf.largest_free_payload(), largest);
    tlsf.check();
    for block in [before, taken, after] {
        // SAFETY: each block is live and freed once.
        unsafe { tlsf.deallocate(block) }.unwrap();
    }
    tlsf.check();
}
