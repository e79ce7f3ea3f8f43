extern crate std;

use std::vec;
use std::vec::Vec;

use allocator_api2::alloc::Allocator;

use super::*;

/// Runs `test` on an arena over a fresh `len`-byte heap buffer, 8-aligned
/// (miri, unlike most `malloc`s, really does place byte buffers at odd addresses).
fn with_arena(len: usize, test: impl FnOnce(&mut BumpArena)) {
    let mut buffer = vec![0u64; len.div_ceil(8)];
    let mut arena = BumpArena::new();
    // SAFETY: the buffer (at least `len` bytes) outlives the arena and is only
    // used through it.
    unsafe { arena.init(buffer.as_mut_ptr().cast::<u8>(), len) }.unwrap();
    test(&mut arena);
    drop(buffer);
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// Fills `block` with `byte`, through the pointer the arena gave, so miri
/// checks the block is really ours.
fn fill(block: NonNull<u8>, size: usize, byte: u8) {
    // SAFETY: the tests call this only on live blocks of at least `size` bytes.
    unsafe { ptr::write_bytes(block.as_ptr(), byte, size) };
}

fn holds(block: NonNull<u8>, size: usize, byte: u8) -> bool {
    // SAFETY: as `fill`.
    let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr(), size) };
    bytes.iter().all(|&b| b == byte)
}

#[test]
fn allocations_are_aligned_and_disjoint() {
    with_arena(4096, |arena| {
        let mut blocks = Vec::new();
        for (i, align) in [1, 2, 8, 64, 256, 4, 512, 16].into_iter().enumerate() {
            let size = 3 + i * 5;
            let block = arena.try_allocate(layout(size, align)).unwrap();
            assert_eq!(block.as_ptr().addr() % align, 0);
            fill(block, size, i as u8);
            blocks.push((block, size, i as u8));
        }
        for &(block, size, byte) in &blocks {
            assert!(holds(block, size, byte), "a later block overwrote this one");
        }
    });
}

#[test]
fn used_and_remaining_count_padding() {
    with_arena(256, |arena| {
        arena.try_allocate(layout(1, 1)).unwrap();
        let aligned = arena.try_allocate(layout(8, 8)).unwrap();
        let base = arena.base.load(Ordering::Relaxed).addr();
        let end = aligned.as_ptr().addr() - base + 8;
        assert_eq!(arena.used(), end);
        assert_eq!(arena.remaining(), 256 - end);
        assert_eq!(arena.capacity(), 256);
    });
}

#[test]
fn zero_size_requests_use_no_memory() {
    with_arena(64, |arena| {
        let block = arena.try_allocate(layout(0, 128)).unwrap();
        assert_eq!(block.as_ptr().addr() % 128, 0);
        assert_eq!(arena.used(), 0);
        arena.deallocate(block, layout(0, 128));
        assert_eq!(arena.used(), 0);
    });
}

#[test]
fn uninitialised_arena_fails_without_panicking() {
    let arena = BumpArena::new();
    assert_eq!(
        arena.try_allocate(layout(8, 8)),
        Err(AllocError::Uninitialized)
    );
    // SAFETY: a non-zero layout; null is the expected answer.
    assert!(unsafe { arena.alloc(layout(8, 8)) }.is_null());
    assert_eq!(
        (arena.used(), arena.remaining(), arena.capacity()),
        (0, 0, 0)
    );
    assert!(!arena.is_initialized());
    arena.deallocate(NonNull::dangling(), layout(1, 1));
}

#[test]
fn exhaustion_returns_null_and_nothing_is_lost() {
    with_arena(128, |arena| {
        let first = arena.try_allocate(layout(100, 1)).unwrap();
        let used = arena.used();
        assert_eq!(
            arena.try_allocate(layout(29, 1)),
            Err(AllocError::OutOfMemory)
        );
        // SAFETY: a non-zero layout; null is the expected answer.
        assert!(unsafe { arena.alloc(layout(29, 1)) }.is_null());
        assert_eq!(arena.used(), used);
        let last = arena.try_allocate(layout(28, 1)).unwrap();
        assert_eq!(last.as_ptr().addr(), first.as_ptr().addr() + 100);
        assert_eq!(arena.remaining(), 0);
    });
}

#[test]
fn huge_alignment_is_out_of_memory_not_overflow() {
    with_arena(128, |arena| {
        for align in [1 << 20, 1 << 40, 1 << 62] {
            let result = arena.try_allocate(layout(8, align));
            assert_eq!(result, Err(AllocError::OutOfMemory), "align {align:#x}");
        }
        assert_eq!(arena.used(), 0);
        assert!(arena.try_allocate(layout(128, 1)).is_ok());
    });
}

#[test]
fn oversized_request_fails_without_overflow() {
    with_arena(128, |arena| {
        let result = arena.try_allocate(layout(isize::MAX as usize, 1));
        assert_eq!(result, Err(AllocError::OutOfMemory));
        let result = arena.try_allocate(layout(isize::MAX as usize - 63, 64));
        assert_eq!(result, Err(AllocError::OutOfMemory));
        assert_eq!(arena.used(), 0);
    });
}

#[test]
fn freeing_the_last_block_gives_its_bytes_back() {
    with_arena(256, |arena| {
        let first = arena.try_allocate(layout(16, 8)).unwrap();
        let used = arena.used();
        let second = arena.try_allocate(layout(32, 8)).unwrap();
        arena.deallocate(second, layout(32, 8));
        assert_eq!(arena.used(), used);
        let again = arena.try_allocate(layout(32, 8)).unwrap();
        assert_eq!(again, second);
        // `first` is no longer last: freeing it keeps its bytes taken.
        arena.deallocate(first, layout(16, 8));
        assert_eq!(arena.used(), used + 32);
    });
}

#[test]
fn double_free_and_foreign_pointers_are_ignored() {
    with_arena(256, |arena| {
        let kept = arena.try_allocate(layout(16, 8)).unwrap();
        let last = arena.try_allocate(layout(16, 8)).unwrap();
        arena.deallocate(last, layout(16, 8));
        let used = arena.used();
        arena.deallocate(last, layout(16, 8));
        assert_eq!(arena.used(), used, "a second free of the same block");
        let mut outside = 0u64;
        arena.deallocate(NonNull::from(&mut outside).cast(), layout(8, 8));
        arena.deallocate(NonNull::dangling(), layout(usize::MAX / 2, 1));
        assert_eq!(arena.used(), used);
        fill(kept, 16, 0xaa);
        assert!(holds(kept, 16, 0xaa));
    });
}

#[test]
fn realloc_grows_the_last_block_in_place_and_moves_others() {
    with_arena(512, |arena| {
        let old = layout(16, 8);
        // SAFETY: non-zero layouts; blocks are used within their sizes.
        unsafe {
            let a = arena.alloc(old);
            ptr::write_bytes(a, 1, 16);
            let grown = arena.realloc(a, old, 64);
            assert_eq!(grown, a, "the last block grows where it is");
            assert_eq!(
                arena.used(),
                64 + a.addr() - arena.base.load(Ordering::Relaxed).addr()
            );
            let b = arena.alloc(old);
            let moved = arena.realloc(grown, layout(64, 8), 128);
            assert_ne!(moved, grown);
            assert!(holds(NonNull::new(moved).unwrap(), 16, 1));
            ptr::write_bytes(b, 2, 16);
            assert!(holds(NonNull::new(moved).unwrap(), 16, 1));
            let shrunk = arena.realloc(moved, layout(128, 8), 8);
            assert_eq!(shrunk, moved);
            assert_eq!(
                arena.used(),
                moved.addr() + 8 - arena.base.load(Ordering::Relaxed).addr()
            );
            assert!(arena.realloc(shrunk, layout(8, 8), 4096).is_null());
            assert!(
                holds(NonNull::new(shrunk).unwrap(), 8, 1),
                "failed realloc keeps the block"
            );
        }
    });
}

#[test]
fn reset_frees_everything() {
    with_arena(64, |arena| {
        arena.try_allocate(layout(64, 1)).unwrap();
        assert_eq!(arena.remaining(), 0);
        arena.reset();
        assert_eq!((arena.used(), arena.remaining()), (0, 64));
        arena.try_allocate(layout(64, 1)).unwrap();
    });
}

#[test]
fn init_is_refused_for_bad_regions_and_second_calls() {
    let arena = BumpArena::new();
    let mut buffer = [0u8; 16];
    // SAFETY: every call here is refused before the region is used.
    unsafe {
        assert_eq!(arena.init(ptr::null_mut(), 16), Err(InitError::NullStart));
        let near_end = ptr::without_provenance_mut(usize::MAX - 4);
        assert_eq!(arena.init(near_end, 16), Err(InitError::Overflow));
        assert_eq!(
            arena.init(buffer.as_mut_ptr(), isize::MAX as usize + 1),
            Err(InitError::Overflow)
        );
    }
    assert!(!arena.is_initialized());
    // SAFETY: `buffer` outlives `arena` and is only used through it.
    unsafe { arena.init(buffer.as_mut_ptr(), 16) }.unwrap();
    // SAFETY: refused before the region is touched.
    let again = unsafe { arena.init(buffer.as_mut_ptr(), 16) };
    assert_eq!(again, Err(InitError::AlreadyInitialized));
    assert_eq!(arena.capacity(), 16);
}

#[test]
fn static_arena_over_static_memory_works() {
    static MEMORY: ArenaMemory<256> = ArenaMemory::new();
    // SAFETY: `MEMORY` is used by this arena only.
    static ARENA: BumpArena = unsafe { BumpArena::from_memory(&MEMORY) };
    let block = ARENA
        .try_allocate(layout(256, ARENA_MEMORY_ALIGN_BYTES))
        .unwrap();
    fill(block, 256, 7);
    assert!(holds(block, 256, 7));
    assert_eq!(ARENA.remaining(), 0);
    // SAFETY: refused before the region is touched.
    let init = unsafe { ARENA.init(NonNull::dangling().as_ptr(), 1) };
    assert_eq!(init, Err(InitError::AlreadyInitialized));
}

#[test]
fn allocator_api_vec_grows_in_place() {
    with_arena(1024, |arena| {
        let arena = &*arena;
        let mut v = allocator_api2::vec::Vec::new_in(arena);
        for i in 0..200u32 {
            v.push(i);
        }
        assert_eq!(
            arena.used(),
            v.capacity() * 4,
            "every growth happened in place"
        );
        assert!(v.iter().copied().eq(0..200));
        v.shrink_to_fit();
        assert_eq!(arena.used(), 800);
        drop(v);
        assert_eq!(arena.used(), 0);
        let mut failed = allocator_api2::vec::Vec::<u8, _>::new_in(arena);
        assert!(failed.try_reserve(2048).is_err());
        assert_eq!(arena.used(), 0);
    });
}

#[test]
fn allocator_api_grow_to_stricter_alignment_moves() {
    with_arena(1024, |arena| {
        let block = Allocator::allocate(&*arena, layout(3, 1))
            .unwrap()
            .cast::<u8>();
        fill(block, 3, 9);
        let wide = layout(64, 256);
        // SAFETY: `block` is live with layout (3, 1); the new layout is larger.
        let grown = unsafe { Allocator::grow(&*arena, block, layout(3, 1), wide) }.unwrap();
        let grown = grown.cast::<u8>();
        assert_eq!(grown.as_ptr().addr() % 256, 0);
        assert!(holds(grown, 3, 9));
        // SAFETY: `grown` is live with layout `wide`; the new one is smaller.
        let shrunk = unsafe { Allocator::shrink(&*arena, grown, wide, layout(1, 1)) }.unwrap();
        assert_eq!(shrunk.cast::<u8>(), grown);
    });
}

/// A tiny deterministic generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

#[test]
fn random_operations_match_a_stack_model() {
    const ARENA_BYTES: usize = 4096;
    let steps = if cfg!(miri) { 300 } else { 20_000 };
    with_arena(ARENA_BYTES, |arena| {
        let base = arena.base.load(Ordering::Relaxed).addr();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        // Live blocks in allocation order, with the byte each was filled with,
        // and where the model expects the cursor.
        let mut live: Vec<(NonNull<u8>, Layout, u8)> = Vec::new();
        let mut cursor = 0usize;
        for step in 0..steps {
            match rng.below(10) {
                0..=5 => {
                    let size = 1 + rng.below(200) as usize;
                    let align = 1 << rng.below(8);
                    let request = layout(size, align);
                    let expected = (base + cursor).next_multiple_of(align) - base;
                    match arena.try_allocate(request) {
                        Ok(block) => {
                            assert_eq!(block.as_ptr().addr() - base, expected);
                            assert!(expected + size <= ARENA_BYTES);
                            cursor = expected + size;
                            let byte = step as u8;
                            fill(block, size, byte);
                            live.push((block, request, byte));
                        }
                        Err(error) => {
                            assert_eq!(error, AllocError::OutOfMemory);
                            assert!(expected + size > ARENA_BYTES, "refused a block that fits");
                        }
                    }
                }
                6..=8 => {
                    if let Some((block, request, byte)) = live.pop() {
                        assert!(holds(block, request.size(), byte));
                        arena.deallocate(block, request);
                        let start = block.as_ptr().addr() - base;
                        if start + request.size() == cursor {
                            cursor = start;
                        }
                    }
                }
                _ => {
                    if live.len() >= 2 {
                        let index = rng.below(live.len() as u64 - 1) as usize;
                        let (block, request, _) = live.remove(index);
                        arena.deallocate(block, request);
                    }
                }
            }
            assert_eq!(arena.used(), cursor, "step {step}");
            if live.is_empty() && rng.below(50) == 0 {
                arena.reset();
                cursor = 0;
            }
        }
        for (block, request, byte) in live {
            assert!(
                holds(block, request.size(), byte),
                "a block was overwritten"
            );
        }
    });
}

#[test]
fn threads_allocating_at_once_get_disjoint_blocks() {
    const THREADS: usize = 4;
    let per_thread = if cfg!(miri) { 20 } else { 500 };
    let len = THREADS * per_thread * 64;
    with_arena(len, |arena| {
        let arena = &*arena;
        let mut blocks: Vec<(usize, usize)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    scope.spawn(move || {
                        let mut mine = Vec::new();
                        for i in 0..per_thread {
                            let size = 1 + (i * 7 + t) % 48;
                            let block = arena.try_allocate(layout(size, 16)).unwrap();
                            fill(block, size, t as u8);
                            mine.push((block.as_ptr().addr(), size));
                        }
                        mine
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        blocks.sort_unstable();
        for pair in blocks.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "blocks overlap");
        }
        assert!(blocks.iter().all(|&(addr, _)| addr % 16 == 0));
    });
}
