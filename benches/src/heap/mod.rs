//! Heaps: the [`HeapBench`] trait, the workloads of the heap issue, and the
//! heaps measured on them. Every heap gets an arena of the same size and the
//! same seeded operation sequence.

mod ours;
mod peers;

use std::alloc::Layout;
use std::hint::black_box;
use std::ptr::NonNull;

pub use ours::{
    BUDDY_HEAP_ORDERS, KallocBuddyHeap, KallocHeap, KallocLockedHeap, KallocPerCpuHeap,
    KallocPinnedHeap, PerCpuHeapFront, PinnedHeapFront,
};
pub use peers::{BuddySystemHeapPeer, LinkedListPeer, RlsfPeer, TalcPeer};

use crate::host::Host;
use crate::measure::{Batch, Sample, measure};
use crate::rng::Rng;
use crate::sequence::{HeapOp, OpSequence, action_size};
use crate::suite::{
    Case, Config, Entry, Family, Metric, Sink, TimedCase, WorkloadInfo, run_family,
};

/// Arena of the pairs and random-actions workloads, in bytes.
pub const HEAP_ARENA_BYTES: usize = 64 << 20;
/// Arena of the heap-efficiency workload, in bytes.
pub const EFFICIENCY_ARENA_BYTES: usize = 16 << 20;
/// Live blocks at most in random actions.
pub const MAX_LIVE_BLOCKS: usize = 10_000;
/// Sizes of the pairs workload, in bytes.
pub const PAIR_SIZE_BYTES: (usize, usize) = (8, 256);

/// A heap as the benchmarks drive it.
pub trait HeapBench {
    /// Name in the tables.
    const NAME: &'static str;
    /// Whether it is one of kalloc's.
    const OURS: bool;
    /// Whether it allocates from the arena it is given (the host allocators
    /// do not, so arena-bound measurements such as efficiency skip them).
    const USES_ARENA: bool = true;
    /// A heap over an arena of `arena_bytes` bytes, all free.
    fn new(arena_bytes: usize) -> Self;
    /// A block for `layout` (non-zero size).
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>>;
    /// Frees a block.
    ///
    /// # Safety
    /// `block` came from this heap with `layout` and is not freed yet.
    unsafe fn free(&mut self, block: NonNull<u8>, layout: Layout);
    /// Resizes a block to `new_size` bytes (same alignment), keeping its
    /// contents; on failure the old block stays valid.
    ///
    /// # Safety
    /// As [`free`](Self::free); `new_size` is non-zero.
    unsafe fn realloc(
        &mut self,
        block: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>>;
    /// First byte of the arena, for the footprint a trace reaches (`None` for host heaps).
    fn arena_start(&self) -> Option<usize>;
}

/// [`HeapBench::alloc`] behind a call the timed loop cannot inline: a
/// `#[global_allocator]` is reached through the `__rust_alloc` shim, and
/// the C heaps through a library call, so every heap pays one call per
/// operation and none has its fast path folded into the benchmark loop.
#[inline(never)]
pub fn alloc_call<H: HeapBench>(heap: &mut H, layout: Layout) -> Option<NonNull<u8>> {
    heap.alloc(layout)
}

/// [`HeapBench::free`] behind a call, as [`alloc_call`].
///
/// # Safety
/// As [`HeapBench::free`].
#[inline(never)]
pub unsafe fn free_call<H: HeapBench>(heap: &mut H, block: NonNull<u8>, layout: Layout) {
    // SAFETY: the caller's promise.
    unsafe { heap.free(block, layout) }
}

/// [`HeapBench::realloc`] behind a call, as [`alloc_call`].
///
/// # Safety
/// As [`HeapBench::realloc`].
#[inline(never)]
pub unsafe fn realloc_call<H: HeapBench>(
    heap: &mut H,
    block: NonNull<u8>,
    layout: Layout,
    new_size: usize,
) -> Option<NonNull<u8>> {
    // SAFETY: the caller's promise.
    unsafe { heap.realloc(block, layout, new_size) }
}

/// Reallocation by allocate, copy and free, for heaps without their own.
///
/// # Safety
/// As [`HeapBench::realloc`].
pub(crate) unsafe fn realloc_by_copy<H: HeapBench + ?Sized>(
    heap: &mut H,
    block: NonNull<u8>,
    layout: Layout,
    new_size: usize,
) -> Option<NonNull<u8>> {
    let new_layout = Layout::from_size_align(new_size, layout.align()).ok()?;
    let new = heap.alloc(new_layout)?;
    // SAFETY: both blocks are live, distinct, and at least this long.
    unsafe {
        std::ptr::copy_nonoverlapping(block.as_ptr(), new.as_ptr(), layout.size().min(new_size))
    };
    // SAFETY: the caller's promise about `block`.
    unsafe { heap.free(block, layout) };
    Some(new)
}

/// A heap workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapWorkload {
    /// Allocate a block of a random small size and free it at once.
    Pairs,
    /// Random allocations, frees and reallocations, up to [`MAX_LIVE_BLOCKS`] live.
    RandomActions,
    /// Share of the arena live at the first failure when filling with random sizes.
    Efficiency,
}

/// The heap workloads.
pub fn workloads() -> Vec<(WorkloadInfo, HeapWorkload)> {
    let (small, large) = PAIR_SIZE_BYTES;
    let info = |name: &str, about: String| WorkloadInfo {
        family: Family::Heaps,
        name: name.into(),
        about,
        default: true,
    };
    vec![
        (
            info(
                "pairs",
                format!("allocate {small}..={large} B and free at once; op = one pair"),
            ),
            HeapWorkload::Pairs,
        ),
        (
            info(
                "random-actions",
                format!(
                    "alloc 50% / free 30% / realloc 20%, 8 B..64 KiB, up to {MAX_LIVE_BLOCKS} live; op = one action"
                ),
            ),
            HeapWorkload::RandomActions,
        ),
        (
            info(
                "efficiency",
                format!(
                    "% of a {} MiB arena live at the first failure (70% alloc / 30% free, 8 B..64 KiB)",
                    EFFICIENCY_ARENA_BYTES >> 20
                ),
            ),
            HeapWorkload::Efficiency,
        ),
    ]
}

const fn entry<H: HeapBench + 'static>() -> Entry<HeapWorkload> {
    Entry {
        name: H::NAME,
        ours: H::OURS,
        start: start_case::<H>,
    }
}

/// Every heap measured, peers first.
const ENTRIES: &[Entry<HeapWorkload>] = &[
    entry::<TalcPeer>(),
    entry::<RlsfPeer>(),
    entry::<LinkedListPeer>(),
    entry::<BuddySystemHeapPeer>(),
    entry::<Host<std::alloc::System>>(),
    entry::<Host<mimalloc::MiMalloc>>(),
    entry::<KallocHeap>(),
    entry::<KallocPerCpuHeap>(),
    entry::<KallocPinnedHeap>(),
    entry::<KallocBuddyHeap>(),
];

/// Runs the selected heap workloads on every heap, the heaps of a timed
/// workload taking turns batch by batch.
pub fn run(config: &Config, sink: &mut Sink<'_>) {
    run_family(config, &workloads(), ENTRIES, |_| 1, sink);
}

/// Starts one workload on heap `H`: pairs and random actions ready to be
/// timed, efficiency measured at once, or `None` where the workload does not
/// apply (efficiency of a host heap).
pub fn start_case<H: HeapBench + 'static>(
    config: &Config,
    workload: &HeapWorkload,
) -> Option<Case> {
    let arena = config
        .scale
        .pick(HEAP_ARENA_BYTES, HEAP_ARENA_BYTES, 4 << 20);
    let ops = config.scale.pick(100_000, 25_000, 1_000);
    match workload {
        HeapWorkload::Pairs => {
            let mut rng = Rng::new(config.seed);
            let (small, large) = PAIR_SIZE_BYTES;
            let layouts: Vec<Layout> = (0..ops)
                .map(|_| {
                    Layout::from_size_align(rng.between(small, large), 8).expect("small layout")
                })
                .collect();
            Some(Case::Timed(Box::new(Pairs {
                heap: H::new(arena),
                layouts,
                failures: 0,
            })))
        }
        HeapWorkload::RandomActions => {
            let max_live = config.scale.pick(MAX_LIVE_BLOCKS, MAX_LIVE_BLOCKS, 50);
            let sequence = OpSequence::random_actions(config.seed, ops * STEADY_CHUNKS, max_live);
            Some(Case::Timed(Box::new(SteadyActions::new(
                H::new(arena),
                sequence,
                ops,
            ))))
        }
        HeapWorkload::Efficiency => {
            if !H::USES_ARENA {
                return None;
            }
            let arena = config
                .scale
                .pick(EFFICIENCY_ARENA_BYTES, EFFICIENCY_ARENA_BYTES, 1 << 20);
            let share = efficiency(&mut H::new(arena), arena, config.seed);
            Some(Case::Measured(Metric::Percent(share * 100.0), 0))
        }
    }
}

/// Alloc/free pairs over a fixed list of layouts; a batch is the whole list.
struct Pairs<H> {
    heap: H,
    layouts: Vec<Layout>,
    failures: u64,
}

impl<H: HeapBench> TimedCase for Pairs<H> {
    fn batch(&mut self) -> Batch {
        Batch::time(|| {
            for &layout in &self.layouts {
                match alloc_call(&mut self.heap, layout) {
                    // SAFETY: just allocated with `layout`.
                    Some(block) => unsafe { free_call(&mut self.heap, black_box(block), layout) },
                    None => self.failures += 1,
                }
            }
            self.layouts.len() as u64
        })
    }

    fn finish(&mut self) -> u64 {
        self.failures
    }
}

/// Where each slot's block is, while a sequence plays.
pub(crate) type SlotTable = Vec<Option<(NonNull<u8>, Layout)>>;

/// Plays `ops` on `heap`, touching the first byte of every block;
/// returns the failed allocations and reallocations. `on_block` sees every
/// block handed out (address and size).
pub(crate) fn play<H: HeapBench>(
    heap: &mut H,
    ops: &[HeapOp],
    table: &mut SlotTable,
    mut on_block: impl FnMut(&SlotTable, NonNull<u8>, usize),
) -> u64 {
    let mut failures = 0;
    for op in ops {
        match *op {
            HeapOp::Alloc { slot, layout } => match alloc_call(heap, layout) {
                Some(block) => {
                    // SAFETY: the block is live and at least one byte long.
                    unsafe { block.as_ptr().write(slot as u8) };
                    on_block(table, block, layout.size());
                    table[slot as usize] = Some((block, layout));
                }
                None => failures += 1,
            },
            HeapOp::Free { slot } => {
                if let Some((block, layout)) = table[slot as usize].take() {
                    // SAFETY: the table holds live blocks with their layouts.
                    unsafe { free_call(heap, block, layout) };
                }
            }
            HeapOp::Realloc { slot, size } => {
                if let Some((block, layout)) = table[slot as usize] {
                    // SAFETY: as above; sizes in sequences are non-zero.
                    match unsafe { realloc_call(heap, block, layout, size) } {
                        Some(new) => {
                            on_block(table, new, size);
                            let new_layout = Layout::from_size_align(size, layout.align())
                                .expect("realloc layout");
                            table[slot as usize] = Some((new, new_layout));
                        }
                        None => failures += 1,
                    }
                }
            }
        }
    }
    failures
}

/// Frees every block still in `table`.
pub(crate) fn free_all<H: HeapBench>(heap: &mut H, table: &mut SlotTable) {
    for entry in table.iter_mut() {
        if let Some((block, layout)) = entry.take() {
            // SAFETY: the table holds live blocks with their layouts.
            unsafe { heap.free(block, layout) };
        }
    }
}

/// Plays `sequence` on `heap` from empty and frees what is left; returns the
/// failed allocations (for drivers such as criterion that time it themselves).
pub fn play_sequence<H: HeapBench>(heap: &mut H, sequence: &OpSequence) -> u64 {
    let mut table: SlotTable = vec![None; sequence.slots];
    let failures = play(heap, &sequence.ops, &mut table, |_, _, _| {});
    free_all(heap, &mut table);
    failures
}

/// Chunks of the random-actions stream; the first (filling the heap from
/// empty) is the warm-up, the others run at the live-block cap.
pub const STEADY_CHUNKS: usize = 10;

/// A sequence played chunk by chunk, the heap's state running on from one
/// batch to the next (as in a long-lived program). The first chunk fills
/// the heap untimed; after the last the heap is emptied (untimed) and the
/// stream starts over: emptying is kept rare because some peers take
/// quadratic time to free thousands of blocks.
pub struct SteadyActions<H> {
    heap: H,
    sequence: OpSequence,
    chunk: usize,
    next: usize,
    table: SlotTable,
    failures: u64,
}

impl<H: HeapBench> SteadyActions<H> {
    /// Fills `heap` with the first `chunk` operations of `sequence`, ready
    /// to time the next chunk.
    pub fn new(mut heap: H, sequence: OpSequence, chunk: usize) -> Self {
        let chunk = chunk.max(1);
        let mut table: SlotTable = vec![None; sequence.slots];
        let fill = sequence.ops.chunks(chunk).next().unwrap_or_default();
        let failures = play(&mut heap, fill, &mut table, |_, _, _| {});
        let chunks = sequence.ops.len().div_ceil(chunk).max(1);
        Self {
            heap,
            chunk,
            next: 1 % chunks,
            table,
            failures,
            sequence,
        }
    }
}

impl<H: HeapBench> TimedCase for SteadyActions<H> {
    fn batch(&mut self) -> Batch {
        let Self {
            heap,
            sequence,
            chunk,
            next,
            table,
            failures,
        } = self;
        let chunks = sequence.ops.len().div_ceil(*chunk).max(1);
        let chunk_ops = |index: usize| sequence.ops.chunks(*chunk).nth(index).unwrap_or_default();
        if *next == 0 {
            free_all(heap, table);
            *failures += play(heap, chunk_ops(0), table, |_, _, _| {});
            *next = 1 % chunks;
        }
        let part = chunk_ops(*next);
        *next = (*next + 1) % chunks;
        Batch::time(|| {
            *failures += play(heap, part, table, |_, _, _| {});
            part.len() as u64
        })
    }

    fn finish(&mut self) -> u64 {
        free_all(&mut self.heap, &mut self.table);
        self.failures
    }
}

/// Times whole plays of `sequence` from an empty heap; the final frees are untimed.
pub fn replay_timed<H: HeapBench>(
    heap: &mut H,
    sequence: &OpSequence,
    config: &Config,
) -> (Sample, u64) {
    let mut table: SlotTable = vec![None; sequence.slots];
    let mut failures = 0;
    let sample = measure(&config.budget, || {
        let batch = Batch::time(|| {
            failures += play(heap, &sequence.ops, &mut table, |_, _, _| {});
            sequence.ops.len() as u64
        });
        free_all(heap, &mut table);
        batch
    });
    (sample, failures)
}

/// Fills the heap with random sizes (70% allocations, 30% frees of random
/// victims) until the first allocation fails; returns the share of the
/// arena then live.
pub fn efficiency<H: HeapBench>(heap: &mut H, arena_bytes: usize, seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let mut live: Vec<(NonNull<u8>, Layout)> = Vec::new();
    let mut live_bytes = 0usize;
    loop {
        if live.is_empty() || rng.percent(70) {
            let layout = Layout::from_size_align(action_size(&mut rng), 8).expect("small layout");
            match heap.alloc(layout) {
                Some(block) => {
                    live.push((block, layout));
                    live_bytes += layout.size();
                }
                None => break,
            }
        } else {
            let (block, layout) = live.swap_remove(rng.below(live.len()));
            live_bytes -= layout.size();
            // SAFETY: a live block with its layout, freed once.
            unsafe { heap.free(block, layout) };
        }
    }
    for (block, layout) in live {
        // SAFETY: as above.
        unsafe { heap.free(block, layout) };
    }
    live_bytes as f64 / arena_bytes as f64
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const ARENA_BYTES: usize = 8 << 20;

    /// Plays random actions, checking every block: aligned, inside the arena,
    /// disjoint from the others, contents kept across reallocation.
    fn blocks_are_valid_and_disjoint<H: HeapBench>() {
        let mut heap = H::new(ARENA_BYTES);
        let sequence = OpSequence::random_actions(21, 3_000, 200);
        let mut table: Vec<Option<(NonNull<u8>, Layout)>> = vec![None; sequence.slots];
        let mut live: BTreeMap<usize, usize> = BTreeMap::new();
        let base = heap.arena_start();
        let check_insert = |live: &mut BTreeMap<usize, usize>, block: NonNull<u8>, size: usize| {
            let start = block.as_ptr() as usize;
            assert_eq!(start % 8, 0, "{}: misaligned", H::NAME);
            if let Some(base) = base {
                assert!(
                    start >= base && start + size <= base + ARENA_BYTES,
                    "{}: outside the arena",
                    H::NAME
                );
            }
            if let Some((&before, &len)) = live.range(..start + size).next_back() {
                assert!(before + len <= start, "{}: overlap", H::NAME);
            }
            live.insert(start, size);
        };
        let fill = |block: NonNull<u8>, size: usize, slot: u32| {
            // SAFETY: the block is live and `size` bytes long.
            unsafe { block.as_ptr().write_bytes(slot as u8, size) };
        };
        for op in &sequence.ops {
            match *op {
                HeapOp::Alloc { slot, layout } => {
                    let block = heap.alloc(layout).expect("block");
                    check_insert(&mut live, block, layout.size());
                    fill(block, layout.size(), slot);
                    table[slot as usize] = Some((block, layout));
                }
                HeapOp::Free { slot } => {
                    let (block, layout) = table[slot as usize].take().expect("live slot");
                    live.remove(&(block.as_ptr() as usize));
                    // SAFETY: the contents were written above; freed once.
                    unsafe {
                        assert!(
                            std::slice::from_raw_parts(block.as_ptr(), layout.size())
                                .iter()
                                .all(|b| *b == slot as u8)
                        );
                        heap.free(block, layout);
                    }
                }
                HeapOp::Realloc { slot, size } => {
                    let (block, layout) = table[slot as usize].expect("live slot");
                    live.remove(&(block.as_ptr() as usize));
                    // SAFETY: a live block with its layout.
                    let new = unsafe { heap.realloc(block, layout, size) }.expect("realloc");
                    let kept = layout.size().min(size);
                    // SAFETY: the new block holds at least `kept` bytes.
                    let prefix = unsafe { std::slice::from_raw_parts(new.as_ptr(), kept) };
                    assert!(
                        prefix.iter().all(|b| *b == slot as u8),
                        "{}: realloc lost contents",
                        H::NAME
                    );
                    check_insert(&mut live, new, size);
                    fill(new, size, slot);
                    table[slot as usize] = Some((
                        new,
                        Layout::from_size_align(size, layout.align()).expect("layout"),
                    ));
                }
            }
        }
        free_all(&mut heap, &mut table);
    }

    /// Runs `body` on a thread with a large stack: unoptimised builds put
    /// the per-CPU heap (hundreds of KiB) on the stack more than once while
    /// constructing it.
    fn with_big_stack(body: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(body)
            .expect("test thread")
            .join()
            .expect("test body");
    }

    #[test]
    fn every_heap_hands_out_valid_disjoint_blocks() {
        with_big_stack(every_heap_hands_out_valid_disjoint_blocks_body);
    }

    fn every_heap_hands_out_valid_disjoint_blocks_body() {
        blocks_are_valid_and_disjoint::<TalcPeer>();
        blocks_are_valid_and_disjoint::<RlsfPeer>();
        blocks_are_valid_and_disjoint::<LinkedListPeer>();
        blocks_are_valid_and_disjoint::<BuddySystemHeapPeer>();
        blocks_are_valid_and_disjoint::<Host<std::alloc::System>>();
        blocks_are_valid_and_disjoint::<Host<mimalloc::MiMalloc>>();
        blocks_are_valid_and_disjoint::<KallocHeap>();
        blocks_are_valid_and_disjoint::<KallocPerCpuHeap>();
        blocks_are_valid_and_disjoint::<KallocPinnedHeap>();
        blocks_are_valid_and_disjoint::<KallocBuddyHeap>();
    }

    #[test]
    fn efficiency_is_deterministic_and_a_share() {
        let first = efficiency(&mut TalcPeer::new(1 << 20), 1 << 20, 5);
        let again = efficiency(&mut TalcPeer::new(1 << 20), 1 << 20, 5);
        assert_eq!(first, again);
        assert!(first > 0.0 && first <= 1.0);
    }

    #[test]
    fn every_heap_workload_runs_at_smoke_scale() {
        with_big_stack(every_heap_workload_runs_at_smoke_scale_body);
    }

    fn every_heap_workload_runs_at_smoke_scale_body() {
        let config = Config::smoke();
        for (info, workload) in workloads() {
            for entry in ENTRIES {
                if let Some(case) = (entry.start)(&config, &workload) {
                    let (metric, failures) = case.measure_alone(&config.budget);
                    assert!(metric.value() > 0.0, "{} on {}", entry.name, info.name);
                    assert!(
                        workload == HeapWorkload::Efficiency || failures == 0,
                        "{} on {}",
                        entry.name,
                        info.name
                    );
                }
            }
        }
    }
}
