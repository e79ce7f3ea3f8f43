//! Criterion benches of the object caches: alloc/free pairs and batches of
//! 1000 for each object size (`kalloc-bench --family objects` adds churn).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kalloc_benches::host::Host;
use kalloc_benches::object::{
    BATCH_OBJECTS, KallocPerCpuSlab, KallocSlab, OBJECT_SIZES, ObjectCacheBench, SlabmallocPeer,
};

fn bench_one<C: ObjectCacheBench>(c: &mut Criterion) {
    let mut group = c.benchmark_group("objects");
    for size in OBJECT_SIZES {
        let mut cache = C::new(size);
        group.bench_function(BenchmarkId::new(format!("pairs/{size}B"), C::NAME), |b| {
            b.iter(|| {
                let object = cache.alloc().expect("object");
                // SAFETY: just allocated from this cache.
                unsafe { cache.free(black_box(object)) };
            })
        });
        let mut held = Vec::with_capacity(BATCH_OBJECTS);
        group.bench_function(BenchmarkId::new(format!("batch/{size}B"), C::NAME), |b| {
            b.iter(|| {
                held.extend((0..BATCH_OBJECTS).map(|_| cache.alloc().expect("object")));
                for object in held.drain(..) {
                    // SAFETY: allocated just above, freed once.
                    unsafe { cache.free(object) };
                }
            })
        });
    }
    group.finish();
}

fn objects(c: &mut Criterion) {
    bench_one::<SlabmallocPeer>(c);
    bench_one::<Host<std::alloc::System>>(c);
    bench_one::<Host<mimalloc::MiMalloc>>(c);
    bench_one::<KallocSlab>(c);
    bench_one::<KallocPerCpuSlab>(c);
}

criterion_group!(benches, objects);
criterion_main!(benches);
