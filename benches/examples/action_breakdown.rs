//! Where a heap's time goes in random actions: the mean time of each kind of
//! operation (allocate, free, reallocate) by size band, timed one call at a
//! time.
//!
//! Plays the random-actions sequence of the heaps family (default seed, up
//! to 10,000 live blocks, sizes from 8 bytes to 64 KiB) on one heap, times
//! every call after the first tenth (the fill from empty) and prints, per
//! kind and band, the mean nanoseconds per call and that kind's share of the
//! mean time per operation. The bands are small (up to 512 B), mid (up to
//! 8 KiB) and large; `r-sm` is a reallocation from a small to a mid size.
//!
//! ```sh
//! cargo run --release -p kalloc-benches --example action_breakdown -- kalloc-heap 1000000
//! cargo run --release -p kalloc-benches --example action_breakdown -- rlsf 1000000
//! ```
//!
//! The timer's own cost (a few nanoseconds per call) is in every figure, so
//! compare heaps with each other rather than read the figures as absolute.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::time::Instant;

use kalloc_benches::heap::{
    HEAP_ARENA_BYTES, HeapBench, KallocHeap, KallocPinnedHeap, MAX_LIVE_BLOCKS, RlsfPeer, TalcPeer,
    alloc_call, free_call, realloc_call,
};
use kalloc_benches::rng::DEFAULT_SEED;
use kalloc_benches::sequence::{HeapOp, OpSequence};

const BANDS: [&str; 3] = ["s", "m", "l"];

fn band(size: usize) -> usize {
    match size {
        0..=512 => 0,
        513..=8192 => 1,
        _ => 2,
    }
}

/// Ticks of a cheap cycle counter, where there is one.
#[inline(always)]
fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `rdtsc` only reads the time-stamp counter.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Time and count per kind: allocations and frees by band, then
/// reallocations by old band and new band.
#[derive(Default)]
struct Tally {
    ticks: [u64; 15],
    calls: [u64; 15],
}

impl Tally {
    fn name(kind: usize) -> String {
        match kind {
            0..3 => format!("a-{}", BANDS[kind]),
            3..6 => format!("f-{}", BANDS[kind - 3]),
            _ => format!("r-{}{}", BANDS[(kind - 6) / 3], BANDS[(kind - 6) % 3]),
        }
    }
}

fn run<H: HeapBench>(sequence: &OpSequence) {
    let mut heap = H::new(HEAP_ARENA_BYTES);
    let mut table: Vec<Option<(NonNull<u8>, Layout)>> = vec![None; sequence.slots];
    let warm_up = sequence.ops.len() / 10;
    let mut tally = Tally::default();
    let (start, start_ticks) = (Instant::now(), ticks());
    for (index, op) in sequence.ops.iter().enumerate() {
        let before = ticks();
        let kind = match *op {
            HeapOp::Alloc { slot, layout } => {
                let block = alloc_call(&mut heap, layout).expect("the arena holds the sequence");
                // SAFETY: the block is live and at least one byte long.
                unsafe { block.as_ptr().write(slot as u8) };
                table[slot as usize] = Some((block, layout));
                band(layout.size())
            }
            HeapOp::Free { slot } => {
                let (block, layout) = table[slot as usize].take().expect("a live slot");
                // SAFETY: the table holds live blocks with their layouts.
                unsafe { free_call(&mut heap, block, layout) };
                3 + band(layout.size())
            }
            HeapOp::Realloc { slot, size } => {
                let (block, layout) = table[slot as usize].expect("a live slot");
                // SAFETY: as above; sizes in sequences are non-zero.
                let moved =
                    unsafe { realloc_call(&mut heap, block, layout, size) }.expect("room to move");
                let new_layout = Layout::from_size_align(size, layout.align()).expect("layout");
                table[slot as usize] = Some((moved, new_layout));
                6 + band(layout.size()) * 3 + band(size)
            }
        };
        if index >= warm_up {
            tally.ticks[kind] += ticks() - before;
            tally.calls[kind] += 1;
        }
    }
    let ticks_per_ns = (ticks() - start_ticks) as f64 / start.elapsed().as_nanos() as f64;
    let ops = (sequence.ops.len() - warm_up) as f64;
    let total: u64 = tally.ticks.iter().sum();
    println!(
        "{}: {:.1} ns per operation; per kind, mean ns per call (share of the mean per operation):",
        H::NAME,
        total as f64 / ticks_per_ns / ops
    );
    for kind in 0..tally.ticks.len() {
        let ns = tally.ticks[kind] as f64 / ticks_per_ns;
        println!(
            "  {:5} {:7.0} ({:4.1})",
            Tally::name(kind),
            ns / tally.calls[kind].max(1) as f64,
            ns / ops
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "kalloc-heap".into());
    let ops = args
        .next()
        .map_or(1_000_000, |n| n.parse().expect("a count"));
    let sequence = OpSequence::random_actions(DEFAULT_SEED, ops, MAX_LIVE_BLOCKS);
    match name.as_str() {
        KallocHeap::NAME => run::<KallocHeap>(&sequence),
        KallocPinnedHeap::NAME => run::<KallocPinnedHeap>(&sequence),
        RlsfPeer::NAME => run::<RlsfPeer>(&sequence),
        TalcPeer::NAME => run::<TalcPeer>(&sequence),
        other => panic!("unknown heap {other}: kalloc-heap, kalloc-heap-pinned, rlsf or talc"),
    }
}
