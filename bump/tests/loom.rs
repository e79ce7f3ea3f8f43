//! loom models of `BumpArena`: concurrent allocation, freeing the last block
//! while another thread allocates, and allocation racing `init`.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p
//! kalloc-bump --release --test loom`.
#![cfg(loom)]

use core::alloc::Layout;
use core::ptr::NonNull;

use kalloc_api::AllocError;
use kalloc_bump::{ArenaMemory, BumpArena};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

const ARENA_BYTES: usize = 256;

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// `(offset, size)` of `block` in `arena`'s region, whose first byte is `base`.
fn span(block: NonNull<u8>, base: usize, size: usize) -> (usize, usize) {
    (block.as_ptr() as usize - base, size)
}

fn disjoint(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0
}

/// The region's first byte, found with a zero-padding one-byte allocation
/// made before any thread starts, and given back at once.
fn base_of(arena: &BumpArena) -> usize {
    let probe = arena.try_allocate(layout(1, 1)).unwrap();
    arena.deallocate(probe, layout(1, 1));
    probe.as_ptr() as usize
}

#[test]
fn concurrent_allocations_are_disjoint_and_aligned() {
    // Iterations run one after another, so each arena in turn owns the memory.
    static MEMORY: ArenaMemory<ARENA_BYTES> = ArenaMemory::new();
    loom::model(|| {
        // SAFETY: only this model's arenas use `MEMORY`, one iteration at a time.
        let arena = Arc::new(unsafe { BumpArena::from_memory(&MEMORY) });
        let base = base_of(&arena);
        let requests = [[(3, 1), (8, 8)], [(5, 4), (16, 16)], [(1, 1), (7, 2)]];
        let workers: Vec<_> = requests
            .into_iter()
            .map(|mine| {
                let arena = Arc::clone(&arena);
                thread::spawn(move || {
                    mine.map(|(size, align)| {
                        let block = arena.try_allocate(layout(size, align)).unwrap();
                        assert_eq!(block.as_ptr() as usize % align, 0, "misaligned");
                        span(block, base, size)
                    })
                })
            })
            .collect();
        let spans: Vec<_> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        for (i, a) in spans.iter().enumerate() {
            assert!(a.0 + a.1 <= ARENA_BYTES);
            for b in &spans[i + 1..] {
                assert!(disjoint(*a, *b), "{a:?} overlaps {b:?}");
            }
        }
        let highest_end = spans.iter().map(|s| s.0 + s.1).max().unwrap();
        assert_eq!(arena.used(), highest_end);
    });
}

#[test]
fn freeing_the_last_block_races_a_new_allocation() {
    static MEMORY: ArenaMemory<ARENA_BYTES> = ArenaMemory::new();
    loom::model(|| {
        // SAFETY: only this model's arenas use `MEMORY`, one iteration at a time.
        let arena = Arc::new(unsafe { BumpArena::from_memory(&MEMORY) });
        let base = base_of(&arena);
        let a_done = Arc::new(AtomicBool::new(false));

        let freer = {
            let (arena, a_done) = (Arc::clone(&arena), Arc::clone(&a_done));
            thread::spawn(move || {
                let block = arena.try_allocate(layout(24, 8)).unwrap();
                let a = span(block, base, 24);
                // Set before the free: whoever reuses these bytes synchronised
                // with the free, so must see it.
                a_done.store(true, Ordering::Relaxed);
                arena.deallocate(block, layout(24, 8));
                a
            })
        };
        let block = arena.try_allocate(layout(16, 16)).unwrap();
        let b = span(block, base, 16);
        let reused = a_done.load(Ordering::Relaxed);
        let a = freer.join().unwrap();

        assert_eq!(b.0 % 16, 0);
        if !disjoint(a, b) {
            assert!(reused, "{b:?} handed out while {a:?} was still live");
        }
        // Whatever the order, `b` is the last block standing.
        assert_eq!(arena.used(), b.0 + b.1);
    });
}

#[test]
fn allocation_racing_init_sees_all_or_nothing() {
    static MEMORY: ArenaMemory<ARENA_BYTES> = ArenaMemory::new();
    loom::model(|| {
        let arena = Arc::new(BumpArena::new());
        let start = MEMORY.as_mut_ptr();
        let start_addr = start as usize;
        let start = SendPtr(start);
        let initialiser = {
            let arena = Arc::clone(&arena);
            thread::spawn(move || {
                let start = start;
                // SAFETY: the static outlives the arena, which alone uses it now.
                unsafe { arena.init(start.0, ARENA_BYTES) }.unwrap();
            })
        };
        match arena.try_allocate(layout(32, 8)) {
            Ok(block) => {
                let offset = block.as_ptr() as usize - start_addr;
                assert!(offset + 32 <= ARENA_BYTES);
            }
            Err(error) => assert_eq!(error, AllocError::Uninitialized),
        }
        initialiser.join().unwrap();
        assert_eq!(arena.capacity(), ARENA_BYTES);
    });
}

/// Carries the region pointer into the initialising thread.
struct SendPtr(*mut u8);

// SAFETY: the pointer is only handed to `init`, on one thread.
unsafe impl Send for SendPtr {}
