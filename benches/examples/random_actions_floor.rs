//! How much of a random-actions figure is the heap's own work.
//!
//! Every heap's time per operation in random actions includes work that no
//! heap can avoid: the loop reading the operation stream and the slot table,
//! the call, and the bytes a reallocation copies. This example plays the
//! heaps family's random-actions sequence (default seed, up to 10,000 live
//! blocks, sizes from 8 bytes to 64 KiB), with the heaps taking turns batch
//! by batch as in `kalloc-bench`, on rlsf, talc, `kalloc-heap`,
//! `kalloc-heap-pinned` and on a *floor*: a reference that keeps no
//! metadata at all. The floor hands out blocks by bumping a pointer through
//! the same 64 MiB arena (starting over at its end, so blocks overlap: it is
//! a timing reference, not a heap), frees nothing, keeps a shrinking block
//! in place and moves and copies a growing one.
//!
//! It prints each heap's median nanoseconds per operation and the same less
//! the floor's: an estimate of the time the heap itself adds. The floor
//! copies more than a heap that grows blocks in place, and into memory it
//! walks in order, so the estimate is rough; it is there to read the
//! ratios in the report by (a ratio of whole times is closer to 1 than the
//! ratio of the heaps' own work).
//!
//! ```sh
//! cargo run --release -p kalloc-benches --example random_actions_floor
//! ```

use std::alloc::Layout;
use std::ptr::NonNull;

use kalloc_benches::arena::Arena;
use kalloc_benches::heap::{
    HEAP_ARENA_BYTES, HeapBench, KallocHeap, KallocPinnedHeap, MAX_LIVE_BLOCKS, RlsfPeer,
    STEADY_CHUNKS, SteadyActions, TalcPeer,
};
use kalloc_benches::measure::{Budget, measure_in_turns};
use kalloc_benches::rng::DEFAULT_SEED;
use kalloc_benches::sequence::OpSequence;
use kalloc_benches::suite::TimedCase;

/// Operations per timed batch, as in the heaps family.
const BATCH_OPS: usize = 100_000;

/// Block granule of the floor, as a TLSF's.
const FLOOR_GRANULE: usize = 16;

/// The no-metadata reference described in the module docs.
struct Floor {
    arena: Arena,
    next: usize,
}

impl HeapBench for Floor {
    const NAME: &'static str = "floor";
    const OURS: bool = false;

    fn new(arena_bytes: usize) -> Self {
        Self {
            arena: Arena::new(arena_bytes, 1 << 16),
            next: 0,
        }
    }

    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let size = layout.size().next_multiple_of(FLOOR_GRANULE);
        if size > self.arena.len() {
            return None;
        }
        if self.next + size > self.arena.len() {
            self.next = 0;
        }
        // SAFETY: `next + size` is within the arena.
        let block = unsafe { self.arena.start().add(self.next) };
        self.next += size;
        Some(block)
    }

    unsafe fn free(&mut self, _block: NonNull<u8>, _layout: Layout) {}

    unsafe fn realloc(
        &mut self,
        block: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        if new_size <= layout.size() {
            return Some(block);
        }
        let new = self.alloc(Layout::from_size_align(new_size, layout.align()).ok()?)?;
        // SAFETY: both ranges lie in the arena; they may overlap once the
        // bump pointer has wrapped, hence `copy`.
        unsafe { std::ptr::copy(block.as_ptr(), new.as_ptr(), layout.size()) };
        Some(new)
    }

    fn arena_start(&self) -> Option<usize> {
        None
    }
}

fn start<H: HeapBench + 'static>(sequence: &OpSequence) -> (&'static str, Box<dyn TimedCase>) {
    let case = SteadyActions::new(H::new(HEAP_ARENA_BYTES), sequence.clone(), BATCH_OPS);
    (H::NAME, Box::new(case))
}

fn main() {
    let sequence =
        OpSequence::random_actions(DEFAULT_SEED, BATCH_OPS * STEADY_CHUNKS, MAX_LIVE_BLOCKS);
    let mut cases = vec![
        start::<Floor>(&sequence),
        start::<RlsfPeer>(&sequence),
        start::<TalcPeer>(&sequence),
        start::<KallocHeap>(&sequence),
        start::<KallocPinnedHeap>(&sequence),
    ];
    let budget = Budget {
        min_batches: 30,
        ..Budget::DEFAULT
    };
    let samples = measure_in_turns(&budget, &mut cases, |(_, case)| case.batch());
    let floor = samples[0].median_ns;
    println!("random actions, median ns per operation (heap's own = less the floor's)");
    println!("{:20} {:>8} {:>12}", "heap", "ns/op", "heap's own");
    for ((name, case), sample) in cases.iter_mut().zip(&samples) {
        case.finish();
        let own = sample.median_ns - floor;
        println!("{name:20} {:8.1} {own:12.1}", sample.median_ns);
    }
}
