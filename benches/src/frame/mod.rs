//! Frame allocators: the [`FrameAllocBench`] trait, the workloads of the
//! bitmap and buddy issues, and the allocators measured on them.

mod ours;
mod peers;

use std::hint::black_box;

pub use ours::{KallocAtomicBitmap, KallocBitmap, KallocBuddy, KallocPerCpuBuddy};
pub use peers::{BitmapAllocatorPeer, BuddySystemFramePeer};

use crate::measure::{Batch, measure};
use crate::rng::{Rng, pick};
use crate::suite::{Case, Config, Entry, Family, Metric, Scale, Sink, WorkloadInfo, run_family};

/// Frames in 1 GiB of 4 KiB frames.
pub const FRAMES_1GIB: usize = 262_144;
/// Frames in 16 GiB of 4 KiB frames.
pub const FRAMES_16GIB: usize = 4_194_304;
/// Largest order of the order mixes and aligned runs (2^9 frames = 2 MiB).
pub const MAX_MIX_ORDER: u32 = 9;

/// A frame allocator as the benchmarks drive it: frame numbers in, frame
/// numbers out, over frames `0..frames`, all free at the start.
pub trait FrameAllocBench {
    /// Name in the tables.
    const NAME: &'static str;
    /// Whether it is one of kalloc's.
    const OURS: bool;
    /// An allocator managing `frames` frames, all free.
    fn new(frames: usize) -> Self;
    /// `count` contiguous frames whose first number is a multiple of `align`.
    fn allocate(&mut self, count: usize, align: usize) -> Option<usize>;
    /// Frees a run from [`allocate`](Self::allocate) with the same `count` and `align`.
    fn free(&mut self, start: usize, count: usize, align: usize);
}

/// A frame workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameWorkload {
    /// Allocate every frame one at a time, then free them in random order.
    AllocAllFreeRandom {
        /// Frames managed.
        frames: usize,
    },
    /// Random single-frame allocations and frees at a steady fill.
    Mix {
        /// Frames managed.
        frames: usize,
        /// Share of the frames in use, in percent.
        fill_percent: u32,
    },
    /// One frame allocated and freed at once, at 50% fill.
    SinglePairs {
        /// Frames managed.
        frames: usize,
    },
    /// Runs of 2^k frames (k in 0..=9) at 50% fill, aligned to their size
    /// when `aligned`, else anywhere.
    Runs {
        /// Frames managed.
        frames: usize,
        /// Whether each run is aligned to its size.
        aligned: bool,
    },
}

fn memory_name(frames: usize) -> String {
    match frames {
        FRAMES_1GIB => "1GiB".into(),
        FRAMES_16GIB => "16GiB".into(),
        _ => format!("{}MiB", frames / 256),
    }
}

impl FrameWorkload {
    fn info(&self, default: bool) -> WorkloadInfo {
        let (name, about) = match *self {
            Self::AllocAllFreeRandom { frames } => (
                format!("alloc-all-free-random/{}", memory_name(frames)),
                "allocate every frame singly, then free all in random order; op = one alloc or free".to_string(),
            ),
            Self::Mix { frames, fill_percent } => (
                format!("mix-{fill_percent}/{}", memory_name(frames)),
                format!("random single-frame alloc/free, fill held at {fill_percent}%; op = one alloc or free"),
            ),
            Self::SinglePairs { frames } => (
                format!("single-pairs/{}", memory_name(frames)),
                "allocate one frame and free it at once, at 50% fill; op = one pair".to_string(),
            ),
            Self::Runs { frames, aligned } => (
                format!("{}/{}", if aligned { "aligned-runs" } else { "order-mix" }, memory_name(frames)),
                format!(
                    "random runs of 2^0..2^{MAX_MIX_ORDER} frames{}, 50% fill; op = one alloc or free",
                    if aligned { " aligned to their size" } else { ", any alignment" }
                ),
            ),
        };
        WorkloadInfo {
            family: Family::Frames,
            name,
            about,
            default,
        }
    }

    fn frames(&self) -> usize {
        match *self {
            Self::AllocAllFreeRandom { frames }
            | Self::Mix { frames, .. }
            | Self::SinglePairs { frames }
            | Self::Runs { frames, .. } => frames,
        }
    }
}

/// The frame workloads at `scale`, with whether each is in the default suite.
pub fn workloads(scale: Scale) -> Vec<(WorkloadInfo, FrameWorkload)> {
    let gib = scale.pick(FRAMES_1GIB, FRAMES_1GIB, 4096);
    let big = scale.pick(FRAMES_16GIB, FRAMES_16GIB, 16_384);
    let big_default = scale != Scale::Quick;
    let list = [
        (FrameWorkload::AllocAllFreeRandom { frames: gib }, true),
        (
            FrameWorkload::AllocAllFreeRandom { frames: big },
            big_default,
        ),
        (
            FrameWorkload::Mix {
                frames: gib,
                fill_percent: 10,
            },
            true,
        ),
        (
            FrameWorkload::Mix {
                frames: gib,
                fill_percent: 50,
            },
            true,
        ),
        (
            FrameWorkload::Mix {
                frames: gib,
                fill_percent: 95,
            },
            true,
        ),
        (
            FrameWorkload::Mix {
                frames: big,
                fill_percent: 50,
            },
            false,
        ),
        (
            FrameWorkload::Mix {
                frames: big,
                fill_percent: 95,
            },
            false,
        ),
        (FrameWorkload::SinglePairs { frames: gib }, true),
        (
            FrameWorkload::Runs {
                frames: gib,
                aligned: true,
            },
            true,
        ),
        (
            FrameWorkload::Runs {
                frames: gib,
                aligned: false,
            },
            true,
        ),
        (
            FrameWorkload::Runs {
                frames: big,
                aligned: true,
            },
            false,
        ),
    ];
    list.into_iter()
        .map(|(w, default)| (w.info(default), w))
        .collect()
}

const fn entry<A: FrameAllocBench>() -> Entry<FrameWorkload> {
    Entry {
        name: A::NAME,
        ours: A::OURS,
        start: |config, workload| run_case::<A>(config, workload).map(Case::measured),
    }
}

/// Every frame allocator measured, peers first.
const ENTRIES: &[Entry<FrameWorkload>] = &[
    entry::<BitmapAllocatorPeer>(),
    entry::<BuddySystemFramePeer>(),
    entry::<KallocBitmap>(),
    entry::<KallocAtomicBitmap>(),
    entry::<KallocBuddy>(),
    entry::<KallocPerCpuBuddy>(),
];

/// Runs the selected frame workloads on every frame allocator.
pub fn run(config: &Config, sink: &mut Sink<'_>) {
    run_family(config, &workloads(config.scale), ENTRIES, |_| 1, sink);
}

/// Runs one workload on allocator `A`; returns the measurement and the
/// number of allocations that failed.
pub fn run_case<A: FrameAllocBench>(
    config: &Config,
    workload: &FrameWorkload,
) -> Option<(Metric, u64)> {
    let mut allocator = A::new(workload.frames());
    let mut rng = Rng::new(config.seed);
    let ops = config.scale.pick(200_000, 50_000, 2_000);
    let (sample, failures) = match *workload {
        FrameWorkload::AllocAllFreeRandom { frames } => {
            alloc_all_free_random(&mut allocator, frames, config, &mut rng)
        }
        FrameWorkload::Mix {
            frames,
            fill_percent,
        } => {
            let live = fill_singles(&mut allocator, frames, fill_percent, &mut rng);
            mix(&mut allocator, live, ops, config, &mut rng)
        }
        FrameWorkload::SinglePairs { frames } => {
            fill_singles(&mut allocator, frames, 50, &mut rng);
            single_pairs(&mut allocator, ops, config)
        }
        FrameWorkload::Runs { frames, aligned } => {
            runs(&mut allocator, frames, aligned, ops, config, &mut rng)
        }
    };
    Some((Metric::Time(sample), failures))
}

fn alloc_all_free_random<A: FrameAllocBench>(
    allocator: &mut A,
    frames: usize,
    config: &Config,
    rng: &mut Rng,
) -> (crate::measure::Sample, u64) {
    let mut order: Vec<usize> = (0..frames).collect();
    rng.shuffle(&mut order);
    let mut got = Vec::with_capacity(frames);
    let mut failures = 0;
    let sample = measure(&config.budget, || {
        got.clear();
        let batch = Batch::time(|| {
            while got.len() < frames {
                match allocator.allocate(1, 1) {
                    Some(frame) => got.push(frame),
                    None => break,
                }
            }
            for &index in &order {
                if let Some(&frame) = got.get(index) {
                    allocator.free(frame, 1, 1);
                }
            }
            (got.len() * 2) as u64
        });
        failures += (frames - got.len()) as u64;
        batch
    });
    (sample, failures)
}

/// Allocates every frame singly, then frees a random `100 - fill_percent`
/// percent of them; returns the frames still allocated.
fn fill_singles<A: FrameAllocBench>(
    allocator: &mut A,
    frames: usize,
    fill_percent: u32,
    rng: &mut Rng,
) -> Vec<usize> {
    let mut live: Vec<usize> = std::iter::from_fn(|| allocator.allocate(1, 1))
        .take(frames)
        .collect();
    rng.shuffle(&mut live);
    let keep = frames * fill_percent as usize / 100;
    for frame in live.drain(keep.min(live.len())..) {
        allocator.free(frame, 1, 1);
    }
    live
}

/// A balanced sequence of `ops` steps: `true` allocates, `false` frees; as
/// many of each, so every batch ends at the fill it started from.
fn balanced_steps(ops: usize, rng: &mut Rng) -> Vec<(bool, u64)> {
    let mut steps: Vec<(bool, u64)> = (0..ops).map(|i| (i % 2 == 0, rng.next_u64())).collect();
    rng.shuffle(&mut steps);
    steps
}

fn mix<A: FrameAllocBench>(
    allocator: &mut A,
    mut live: Vec<usize>,
    ops: usize,
    config: &Config,
    rng: &mut Rng,
) -> (crate::measure::Sample, u64) {
    let steps = balanced_steps(ops, rng);
    let mut failures = 0;
    let sample = measure(&config.budget, || {
        Batch::time(|| {
            for (index, &(alloc, word)) in steps.iter().enumerate() {
                // The list of live frames outgrows the caches at high fill
                // (2 MiB at 95% of 1 GiB): fetch the next victim's entry now,
                // so the harness's own misses do not pass for the allocator's.
                if let Some(&(false, next)) = steps.get(index + 1) {
                    prefetch(live.as_ptr().wrapping_add(pick(next, live.len())));
                }
                if alloc || live.is_empty() {
                    match allocator.allocate(1, 1) {
                        Some(frame) => live.push(frame),
                        None => failures += 1,
                    }
                } else {
                    let frame = live.swap_remove(pick(word, live.len()));
                    allocator.free(frame, 1, 1);
                }
            }
            steps.len() as u64
        })
    });
    (sample, failures)
}

/// A hint to bring `ptr`'s cache line in; any address is allowed.
#[inline]
fn prefetch<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint and never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(ptr.cast(), core::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

fn single_pairs<A: FrameAllocBench>(
    allocator: &mut A,
    ops: usize,
    config: &Config,
) -> (crate::measure::Sample, u64) {
    let mut failures = 0;
    let sample = measure(&config.budget, || {
        Batch::time(|| {
            for _ in 0..ops {
                match allocator.allocate(1, 1) {
                    Some(frame) => allocator.free(black_box(frame), 1, 1),
                    None => failures += 1,
                }
            }
            ops as u64
        })
    });
    (sample, failures)
}

fn runs<A: FrameAllocBench>(
    allocator: &mut A,
    frames: usize,
    aligned: bool,
    ops: usize,
    config: &Config,
    rng: &mut Rng,
) -> (crate::measure::Sample, u64) {
    let order_of = |word: u64| (word >> 40) as u32 % (MAX_MIX_ORDER + 1);
    let align_of = |count: usize| if aligned { count } else { 1 };
    // Fill to half with runs of random orders, as a running system would be.
    let mut live: Vec<(usize, usize)> = Vec::new();
    let mut used = 0;
    let mut failures = 0;
    while used < frames / 2 {
        let count = 1usize << order_of(rng.next_u64());
        match allocator.allocate(count, align_of(count)) {
            Some(start) => {
                live.push((start, count));
                used += count;
            }
            None => break,
        }
    }
    let steps = balanced_steps(ops, rng);
    let sample = measure(&config.budget, || {
        Batch::time(|| {
            for &(alloc, word) in &steps {
                if alloc || live.is_empty() {
                    let count = 1usize << order_of(word);
                    match allocator.allocate(count, align_of(count)) {
                        Some(start) => live.push((start, count)),
                        None => failures += 1,
                    }
                } else {
                    let (start, count) = live.swap_remove(pick(word, live.len()));
                    allocator.free(start, count, align_of(count));
                }
            }
            steps.len() as u64
        })
    });
    (sample, failures)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const FRAMES: usize = 4096;

    /// Random aligned runs: every run is aligned, inside the managed frames,
    /// disjoint from every live run; after all frees every frame comes back.
    fn runs_are_valid_and_disjoint<A: FrameAllocBench>(first_frame: usize) {
        let mut allocator = A::new(FRAMES);
        let mut rng = Rng::new(11);
        let mut live: BTreeMap<usize, usize> = BTreeMap::new();
        for _ in 0..3_000 {
            if live.is_empty() || rng.percent(55) {
                let count = 1usize << rng.below(6);
                let Some(start) = allocator.allocate(count, count) else {
                    continue;
                };
                assert_eq!(start % count, 0, "{}: run not aligned", A::NAME);
                assert!(
                    start >= first_frame && start + count <= first_frame + FRAMES,
                    "{}: outside",
                    A::NAME
                );
                if let Some((&before, &len)) = live.range(..start + count).next_back() {
                    assert!(before + len <= start, "{}: overlap at {start}", A::NAME);
                }
                live.insert(start, count);
            } else {
                let victim = *live.keys().nth(rng.below(live.len())).expect("non-empty");
                let count = live.remove(&victim).expect("live");
                allocator.free(victim, count, count);
            }
        }
        for (start, count) in std::mem::take(&mut live) {
            allocator.free(start, count, count);
        }
        let all: Vec<usize> = std::iter::from_fn(|| allocator.allocate(1, 1))
            .take(FRAMES + 1)
            .collect();
        assert_eq!(all.len(), FRAMES, "{}: frames lost", A::NAME);
    }

    #[test]
    fn every_frame_allocator_hands_out_valid_disjoint_runs() {
        runs_are_valid_and_disjoint::<BitmapAllocatorPeer>(0);
        runs_are_valid_and_disjoint::<BuddySystemFramePeer>(0);
        let base = ours::BASE_FRAME as usize;
        runs_are_valid_and_disjoint::<KallocBitmap>(base);
        runs_are_valid_and_disjoint::<KallocAtomicBitmap>(base);
        runs_are_valid_and_disjoint::<KallocBuddy>(base);
        runs_are_valid_and_disjoint::<KallocPerCpuBuddy>(base);
    }

    #[test]
    fn every_frame_workload_runs_without_failures_at_smoke_scale() {
        let config = Config::smoke();
        for (info, workload) in workloads(config.scale) {
            for entry in ENTRIES {
                let (metric, failures) = (entry.start)(&config, &workload)
                    .expect("frames always apply")
                    .measure_alone(&config.budget);
                assert!(metric.value() > 0.0, "{} on {}", entry.name, info.name);
                let runs = matches!(workload, FrameWorkload::Runs { .. });
                assert!(
                    runs || failures == 0,
                    "{} failed {failures} times on {}",
                    entry.name,
                    info.name
                );
            }
        }
    }
}
