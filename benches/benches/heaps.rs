//! Criterion benches of the heaps: pairs of random small sizes and a short
//! random-actions sequence, the same for every heap, over the same arena.

use std::alloc::Layout;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kalloc_benches::Rng;
use kalloc_benches::heap::{
    BuddySystemHeapPeer, HeapBench, KallocBuddyHeap, KallocHeap, KallocPerCpuHeap, LinkedListPeer,
    PAIR_SIZE_BYTES, RlsfPeer, TalcPeer, play_sequence,
};
use kalloc_benches::host::Host;
use kalloc_benches::sequence::OpSequence;

const ARENA_BYTES: usize = 16 << 20;

fn bench_one<H: HeapBench>(c: &mut Criterion, sequence: &OpSequence) {
    let mut group = c.benchmark_group("heaps");
    let mut heap = H::new(ARENA_BYTES);
    let mut rng = Rng::new(3);
    let (small, large) = PAIR_SIZE_BYTES;
    let layouts: Vec<Layout> = (0..1024)
        .map(|_| Layout::from_size_align(rng.between(small, large), 8).expect("layout"))
        .collect();
    let mut next = 0;
    group.bench_function(BenchmarkId::new("pairs", H::NAME), |b| {
        b.iter(|| {
            let layout = layouts[next % layouts.len()];
            next += 1;
            let block = heap.alloc(layout).expect("block");
            // SAFETY: just allocated with `layout`.
            unsafe { heap.free(black_box(block), layout) };
        })
    });
    group.bench_function(BenchmarkId::new("random-actions-2000", H::NAME), |b| {
        b.iter(|| black_box(play_sequence(&mut heap, sequence)))
    });
    group.finish();
}

fn heaps(c: &mut Criterion) {
    let sequence = OpSequence::random_actions(7, 2_000, 500);
    bench_one::<TalcPeer>(c, &sequence);
    bench_one::<RlsfPeer>(c, &sequence);
    bench_one::<LinkedListPeer>(c, &sequence);
    bench_one::<BuddySystemHeapPeer>(c, &sequence);
    bench_one::<Host<std::alloc::System>>(c, &sequence);
    bench_one::<Host<mimalloc::MiMalloc>>(c, &sequence);
    bench_one::<KallocHeap>(c, &sequence);
    bench_one::<KallocPerCpuHeap>(c, &sequence);
    bench_one::<KallocBuddyHeap>(c, &sequence);
}

criterion_group!(benches, heaps);
criterion_main!(benches);
