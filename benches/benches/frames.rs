//! Criterion benches of the frame allocators: single-frame pairs and a
//! random mix at 50% fill over 64 MiB of frames (the full-size runs are
//! `kalloc-bench --family frames`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kalloc_benches::Rng;
use kalloc_benches::frame::{
    BitmapAllocatorPeer, BuddySystemFramePeer, FrameAllocBench, KallocAtomicBitmap, KallocBitmap,
    KallocBuddy, KallocPerCpuBuddy,
};

const FRAMES: usize = 16_384;

fn half_full<A: FrameAllocBench>() -> (A, Vec<usize>) {
    let mut allocator = A::new(FRAMES);
    let mut live: Vec<usize> = std::iter::from_fn(|| allocator.allocate(1, 1))
        .take(FRAMES)
        .collect();
    Rng::new(1).shuffle(&mut live);
    for frame in live.drain(FRAMES / 2..) {
        allocator.free(frame, 1, 1);
    }
    (allocator, live)
}

fn bench_one<A: FrameAllocBench>(c: &mut Criterion) {
    let mut group = c.benchmark_group("frames");
    let (mut allocator, mut live) = half_full::<A>();
    group.bench_function(BenchmarkId::new("single-pairs", A::NAME), |b| {
        b.iter(|| {
            let frame = allocator.allocate(1, 1).expect("a free frame");
            allocator.free(black_box(frame), 1, 1);
        })
    });
    let mut rng = Rng::new(2);
    group.bench_function(BenchmarkId::new("mix-50", A::NAME), |b| {
        b.iter(|| {
            // One free of a random victim and one allocation: the fill stays put.
            let frame = live.swap_remove(rng.below(live.len()));
            allocator.free(frame, 1, 1);
            live.push(allocator.allocate(1, 1).expect("a free frame"));
        })
    });
    group.finish();
}

fn frames(c: &mut Criterion) {
    bench_one::<BitmapAllocatorPeer>(c);
    bench_one::<BuddySystemFramePeer>(c);
    bench_one::<KallocBitmap>(c);
    bench_one::<KallocAtomicBitmap>(c);
    bench_one::<KallocBuddy>(c);
    bench_one::<KallocPerCpuBuddy>(c);
}

criterion_group!(benches, frames);
criterion_main!(benches);
