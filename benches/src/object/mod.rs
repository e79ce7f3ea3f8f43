//! Object caches: the [`ObjectCacheBench`] trait, the workloads of the slab
//! issue, and the caches measured on them.

mod ours;
mod peers;

use std::hint::black_box;
use std::ptr::NonNull;

pub use ours::{KallocPerCpuSlab, KallocPinnedSlab, KallocSlab, PerCpuSlabFront, PinnedSlabFront};
pub use peers::SlabmallocPeer;

use crate::host::Host;
use crate::measure::{Batch, Sample, measure};
use crate::rng::{Rng, pick};
use crate::suite::{Case, Config, Entry, Family, Metric, Sink, WorkloadInfo, run_family};

/// Object sizes measured, in bytes.
pub const OBJECT_SIZES: [usize; 4] = [32, 64, 256, 1024];
/// Objects allocated before they are all freed, in the batch workload.
pub const BATCH_OBJECTS: usize = 1000;
/// Objects live on average in the churn workload.
pub const CHURN_LIVE: usize = 10_000;

/// An object cache as the benchmarks drive it: objects of one size.
pub trait ObjectCacheBench {
    /// Name in the tables.
    const NAME: &'static str;
    /// Whether it is one of kalloc's.
    const OURS: bool;
    /// A cache of objects of `object_size` bytes (8-byte aligned).
    fn new(object_size: usize) -> Self;
    /// One object.
    fn alloc(&mut self) -> Option<NonNull<u8>>;
    /// Frees an object.
    ///
    /// # Safety
    /// `object` came from [`alloc`](Self::alloc) on this cache and is not freed yet.
    unsafe fn free(&mut self, object: NonNull<u8>);
}

/// An object-cache workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectWorkload {
    /// Allocate one object and free it at once.
    Pairs {
        /// Object size in bytes.
        size: usize,
    },
    /// Allocate [`BATCH_OBJECTS`] objects, then free them in the same order.
    Batch {
        /// Object size in bytes.
        size: usize,
    },
    /// Random allocations and frees of random victims around [`CHURN_LIVE`] live objects.
    Churn {
        /// Object size in bytes.
        size: usize,
    },
}

impl ObjectWorkload {
    fn size(&self) -> usize {
        match *self {
            Self::Pairs { size } | Self::Batch { size } | Self::Churn { size } => size,
        }
    }

    fn info(&self) -> WorkloadInfo {
        let (kind, about) = match self {
            Self::Pairs { .. } => (
                "pairs",
                "allocate one object and free it at once; op = one pair".to_string(),
            ),
            Self::Batch { .. } => (
                "batch",
                format!(
                    "allocate {BATCH_OBJECTS} objects, then free them in order; op = one alloc or free"
                ),
            ),
            Self::Churn { .. } => (
                "churn",
                format!(
                    "random alloc/free of random victims, about {CHURN_LIVE} live; op = one alloc or free"
                ),
            ),
        };
        WorkloadInfo {
            family: Family::Objects,
            name: format!("{kind}/{}B", self.size()),
            about,
            default: true,
        }
    }
}

/// The object workloads.
pub fn workloads() -> Vec<(WorkloadInfo, ObjectWorkload)> {
    let mut list = Vec::new();
    for size in OBJECT_SIZES {
        for w in [
            ObjectWorkload::Pairs { size },
            ObjectWorkload::Batch { size },
            ObjectWorkload::Churn { size },
        ] {
            list.push((w.info(), w));
        }
    }
    list
}

const fn entry<C: ObjectCacheBench>() -> Entry<ObjectWorkload> {
    Entry {
        name: C::NAME,
        ours: C::OURS,
        start: |config, workload| run_case::<C>(config, workload).map(Case::measured),
    }
}

/// Every object cache measured, peers first.
const ENTRIES: &[Entry<ObjectWorkload>] = &[
    entry::<SlabmallocPeer>(),
    entry::<Host<std::alloc::System>>(),
    entry::<Host<mimalloc::MiMalloc>>(),
    entry::<KallocSlab>(),
    entry::<KallocPerCpuSlab>(),
    entry::<KallocPinnedSlab>(),
];

/// Runs the selected object workloads on every cache.
pub fn run(config: &Config, sink: &mut Sink<'_>) {
    run_family(config, &workloads(), ENTRIES, |_| 1, sink);
}

/// Runs one workload on cache `C`; returns the measurement and failed allocations.
pub fn run_case<C: ObjectCacheBench>(
    config: &Config,
    workload: &ObjectWorkload,
) -> Option<(Metric, u64)> {
    let mut cache = C::new(workload.size());
    let ops = config.scale.pick(200_000, 50_000, 2_000);
    let mut rng = Rng::new(config.seed);
    let (sample, failures) = match workload {
        ObjectWorkload::Pairs { .. } => pairs(&mut cache, ops, config),
        ObjectWorkload::Batch { .. } => batches(&mut cache, ops, config),
        ObjectWorkload::Churn { .. } => {
            let live = config.scale.pick(CHURN_LIVE, CHURN_LIVE, 200);
            churn(&mut cache, live, ops, config, &mut rng)
        }
    };
    Some((Metric::Time(sample), failures))
}

fn pairs<C: ObjectCacheBench>(cache: &mut C, ops: usize, config: &Config) -> (Sample, u64) {
    let mut failures = 0;
    let sample = measure(&config.budget, || {
        Batch::time(|| {
            for _ in 0..ops {
                match cache.alloc() {
                    // SAFETY: just allocated from this cache.
                    Some(object) => unsafe { cache.free(black_box(object)) },
                    None => failures += 1,
                }
            }
            ops as u64
        })
    });
    (sample, failures)
}

fn batches<C: ObjectCacheBench>(cache: &mut C, ops: usize, config: &Config) -> (Sample, u64) {
    let rounds = (ops / (2 * BATCH_OBJECTS)).max(1);
    let mut held = Vec::with_capacity(BATCH_OBJECTS);
    let mut failures = 0;
    let sample = measure(&config.budget, || {
        Batch::time(|| {
            for _ in 0..rounds {
                for _ in 0..BATCH_OBJECTS {
                    match cache.alloc() {
                        Some(object) => held.push(object),
                        None => failures += 1,
                    }
                }
                for object in held.drain(..) {
                    // SAFETY: allocated in this round and freed once.
                    unsafe { cache.free(object) };
                }
            }
            (rounds * 2 * BATCH_OBJECTS) as u64
        })
    });
    (sample, failures)
}

fn churn<C: ObjectCacheBench>(
    cache: &mut C,
    live: usize,
    ops: usize,
    config: &Config,
    rng: &mut Rng,
) -> (Sample, u64) {
    let mut held: Vec<NonNull<u8>> = std::iter::from_fn(|| cache.alloc()).take(live).collect();
    let mut steps: Vec<(bool, u64)> = (0..ops).map(|i| (i % 2 == 0, rng.next_u64())).collect();
    rng.shuffle(&mut steps);
    let mut failures = 0;
    let sample = measure(&config.budget, || {
        Batch::time(|| {
            for &(alloc, word) in &steps {
                if alloc || held.is_empty() {
                    match cache.alloc() {
                        Some(object) => held.push(object),
                        None => failures += 1,
                    }
                } else {
                    let object = held.swap_remove(pick(word, held.len()));
                    // SAFETY: each held object is freed once, then forgotten.
                    unsafe { cache.free(object) };
                }
            }
            steps.len() as u64
        })
    });
    for object in held {
        // SAFETY: as above.
        unsafe { cache.free(object) };
    }
    (sample, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Objects are aligned, disjoint, and keep what was written into them.
    fn objects_are_valid_and_disjoint<C: ObjectCacheBench>() {
        for size in OBJECT_SIZES {
            let mut cache = C::new(size);
            let objects: Vec<NonNull<u8>> =
                (0..2_000).map(|_| cache.alloc().expect("object")).collect();
            for (i, object) in objects.iter().enumerate() {
                assert_eq!(object.as_ptr() as usize % 8, 0, "{} misaligned", C::NAME);
                // SAFETY: each object is live and `size` bytes long.
                unsafe { object.as_ptr().write_bytes(i as u8, size) };
            }
            let mut sorted: Vec<usize> = objects.iter().map(|o| o.as_ptr() as usize).collect();
            sorted.sort_unstable();
            assert!(
                sorted.windows(2).all(|w| w[1] - w[0] >= size),
                "{}: objects of {size} B overlap",
                C::NAME
            );
            for (i, object) in objects.into_iter().enumerate() {
                // SAFETY: as above; read back, then freed once.
                unsafe {
                    assert!(
                        std::slice::from_raw_parts(object.as_ptr(), size)
                            .iter()
                            .all(|b| *b == i as u8)
                    );
                    cache.free(object);
                }
            }
        }
    }

    #[test]
    fn every_object_cache_hands_out_valid_disjoint_objects() {
        objects_are_valid_and_disjoint::<SlabmallocPeer>();
        objects_are_valid_and_disjoint::<Host<std::alloc::System>>();
        objects_are_valid_and_disjoint::<Host<mimalloc::MiMalloc>>();
        objects_are_valid_and_disjoint::<KallocSlab>();
        objects_are_valid_and_disjoint::<KallocPerCpuSlab>();
    }

    #[test]
    fn every_object_workload_runs_without_failures_at_smoke_scale() {
        let config = Config::smoke();
        for (info, workload) in workloads() {
            for entry in ENTRIES {
                let (metric, failures) = (entry.start)(&config, &workload)
                    .expect("objects always apply")
                    .measure_alone(&config.budget);
                assert!(
                    metric.value() > 0.0 && failures == 0,
                    "{} on {}",
                    entry.name,
                    info.name
                );
            }
        }
    }
}
