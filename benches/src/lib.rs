//! Side-by-side benchmarks of the kalloc allocators against the crates people
//! use today: the workloads, the adapters that put every allocator of a family
//! behind one trait, and the timing and reporting they share. The
//! `kalloc-bench` binary and the criterion benches are thin drivers over it.
//!
//! - [`frame`]: [`FrameAllocBench`](frame::FrameAllocBench), frame workloads,
//!   `bitmap-allocator` and `buddy_system_allocator` beside kalloc's bitmap and buddy.
//! - [`object`]: [`ObjectCacheBench`](object::ObjectCacheBench), object-cache
//!   workloads, `slabmalloc`, `System` and `mimalloc` beside kalloc's slab caches.
//! - [`heap`]: [`HeapBench`](heap::HeapBench), heap workloads (pairs, random
//!   actions, efficiency), `talc`, `rlsf`, `linked_list_allocator`,
//!   `buddy_system_allocator`, `System` and `mimalloc` beside kalloc's heaps.
//! - [`threads`]: [`ConcurrentBench`](threads::ConcurrentBench), alloc/free
//!   pairs from N threads on one shared allocator of each family.
//! - [`trace`]: the trace format, the valgrind converter and replay on every heap.
//! - [`suite`]: families, workloads, [`Config`] and results;
//!   [`measure`]: warm-up, batches and medians.
//!
//! Every workload draws its operation sequence from a seeded [`Rng`], so each
//! allocator of a family sees the same sequence; timing is the median of many
//! batches after a warm-up ([`measure`](measure::measure)), the heaps of a
//! workload taking turns batch by batch
//! ([`measure_in_turns`](measure::measure_in_turns)) and each heap
//! operation one call the loop cannot inline ([`heap::alloc_call`]).
//!
//! # Example
//!
//! ```
//! use kalloc_benches::suite::{Config, Event, Family};
//!
//! let mut config = Config::smoke();
//! config.families = vec![Family::Frames];
//! config.workloads = vec!["single-pairs".into()];
//! let mut results = Vec::new();
//! kalloc_benches::run(&config, &mut |event| {
//!     if let Event::Done(result) = event {
//!         results.push(result);
//!     }
//! });
//! assert!(results.iter().any(|r| r.allocator == "bitmap-allocator"));
//! ```

pub mod arena;
pub mod cpu;
pub mod frame;
pub mod heap;
pub mod host;
pub mod measure;
pub mod object;
pub mod owned;
pub mod rng;
pub mod sequence;
pub mod suite;
pub mod threads;
pub mod trace;

pub use rng::Rng;

use suite::{Config, Family, Sink, WorkloadInfo};

/// Every workload of every family at the configured scale.
pub fn list(config: &Config) -> Vec<WorkloadInfo> {
    let mut all: Vec<WorkloadInfo> = Vec::new();
    all.extend(
        frame::workloads(config.scale)
            .into_iter()
            .map(|(info, _)| info),
    );
    all.extend(object::workloads().into_iter().map(|(info, _)| info));
    all.extend(heap::workloads().into_iter().map(|(info, _)| info));
    all.extend(threads::workloads(config).into_iter().map(|(info, _)| info));
    all
}

/// Runs the selected workloads of the selected families, reporting each case to `sink`.
pub fn run(config: &Config, sink: &mut Sink<'_>) {
    for family in Family::ALL {
        if !config.families.is_empty() && !config.families.contains(&family) {
            continue;
        }
        match family {
            Family::Frames => frame::run(config, sink),
            Family::Objects => object::run(config, sink),
            Family::Heaps => heap::run(config, sink),
            Family::Threads => threads::run(config, sink),
        }
    }
}
