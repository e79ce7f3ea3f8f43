//! Thread scaling: N threads doing alloc/free pairs on one shared allocator.
//! Peers sit behind a `spin::Mutex` (as in a kernel without per-CPU fronts),
//! kalloc's allocators use their concurrent fronts, and the host allocators
//! are called directly (their per-thread caches are the bar to reach).

use std::alloc::Layout;
use std::hint::black_box;
use std::sync::Barrier;
use std::time::Instant;

use kalloc_api::{FrameAllocator, Locked};

use crate::cpu::{pinned_cpu, set_current_cpu};
use crate::frame::{
    self, BitmapAllocatorPeer, BuddySystemFramePeer, FrameAllocBench, KallocAtomicBitmap,
    KallocBitmap, KallocBuddy, KallocPerCpuBuddy,
};
use crate::heap::{
    self, BuddySystemHeapPeer, HeapBench, KallocLockedHeap, KallocPerCpuHeap, KallocPinnedHeap,
    LinkedListPeer, RlsfPeer, TalcPeer,
};
use crate::host::HostAllocator;
use crate::measure::{Batch, measure};
use crate::object::{KallocPerCpuSlab, ObjectCacheBench, PinnedSlabFront, SlabmallocPeer};
use crate::rng::Rng;
use crate::suite::{Case, Config, Entry, Family, Metric, Sink, WorkloadInfo, run_family};

/// Object size of the object-pairs workload, in bytes.
pub const THREAD_OBJECT_BYTES: usize = 64;

/// An allocator shared by threads, doing one alloc/free pair per call.
pub trait ConcurrentBench: Sync {
    /// Name in the tables.
    const NAME: &'static str;
    /// Whether it is one of kalloc's.
    const OURS: bool;
    /// A fresh shared allocator.
    fn new() -> Self;
    /// Allocates and frees one block; `word` is a random value (heaps pick a size from it).
    fn pair(&self, word: u64) -> bool;
}

/// Which family a thread-scaling workload exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairKind {
    /// Single frames from a 1 GiB frame allocator.
    Frames,
    /// 64-byte objects from an object cache.
    Objects,
    /// Random small sizes from a heap.
    Heaps,
}

/// A thread-scaling workload: a kind of pair at a thread count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadWorkload {
    /// What is allocated.
    pub kind: PairKind,
    /// Threads running at once.
    pub threads: usize,
}

/// The thread workloads for the configured thread counts.
pub fn workloads(config: &Config) -> Vec<(WorkloadInfo, ThreadWorkload)> {
    let mut list = Vec::new();
    for kind in [PairKind::Frames, PairKind::Objects, PairKind::Heaps] {
        for &threads in &config.threads {
            let (name, about) = match kind {
                PairKind::Frames => ("frame-pairs", "one 4 KiB frame allocated and freed"),
                PairKind::Objects => ("object-pairs", "one 64 B object allocated and freed"),
                PairKind::Heaps => ("heap-pairs", "one 8..=256 B block allocated and freed"),
            };
            let info = WorkloadInfo {
                family: Family::Threads,
                name: format!("{name}/{threads}t"),
                about: format!(
                    "{threads} threads, each: {about}; op = one pair, ns = wall time / all pairs"
                ),
                default: true,
            };
            list.push((info, ThreadWorkload { kind, threads }));
        }
    }
    list
}

/// Runs the selected thread workloads.
pub fn run(config: &Config, sink: &mut Sink<'_>) {
    let list = workloads(config);
    let pick = |kind| {
        list.iter()
            .filter(|(_, w)| w.kind == kind)
            .cloned()
            .collect::<Vec<_>>()
    };
    run_family(
        config,
        &pick(PairKind::Frames),
        FRAME_ENTRIES,
        |w| w.threads,
        sink,
    );
    run_family(
        config,
        &pick(PairKind::Objects),
        OBJECT_ENTRIES,
        |w| w.threads,
        sink,
    );
    run_family(
        config,
        &pick(PairKind::Heaps),
        HEAP_ENTRIES,
        |w| w.threads,
        sink,
    );
}

const fn entry<B: ConcurrentBench>() -> Entry<ThreadWorkload> {
    Entry {
        name: B::NAME,
        ours: B::OURS,
        start: |config, workload| run_case::<B>(config, workload).map(Case::measured),
    }
}

const FRAME_ENTRIES: &[Entry<ThreadWorkload>] = &[
    entry::<SpinFrames<BitmapAllocatorPeer>>(),
    entry::<SpinFrames<BuddySystemFramePeer>>(),
    entry::<LockedKalloc<KallocBitmap>>(),
    entry::<LockedKalloc<KallocBuddy>>(),
    entry::<KallocAtomicBitmap>(),
    entry::<KallocPerCpuBuddy>(),
];

const OBJECT_ENTRIES: &[Entry<ThreadWorkload>] = &[
    entry::<SpinObjects<SlabmallocPeer>>(),
    entry::<SharedHost<std::alloc::System, true>>(),
    entry::<SharedHost<mimalloc::MiMalloc, true>>(),
    entry::<KallocPerCpuSlab>(),
    entry::<SharedPinnedSlab>(),
];

const HEAP_ENTRIES: &[Entry<ThreadWorkload>] = &[
    entry::<SpinHeap<TalcPeer>>(),
    entry::<SpinHeap<RlsfPeer>>(),
    entry::<SpinHeap<LinkedListPeer>>(),
    entry::<SpinHeap<BuddySystemHeapPeer>>(),
    entry::<SharedHost<std::alloc::System, false>>(),
    entry::<SharedHost<mimalloc::MiMalloc, false>>(),
    entry::<KallocLockedHeap>(),
    entry::<KallocPerCpuHeap>(),
    entry::<KallocPinnedHeap>(),
];

/// Runs `threads` threads doing pairs on one `B`; ns per op is wall time over all pairs.
pub fn run_case<B: ConcurrentBench>(
    config: &Config,
    workload: &ThreadWorkload,
) -> Option<(Metric, u64)> {
    let shared = B::new();
    let pairs = config.scale.pick(100_000, 25_000, 500);
    let threads = workload.threads.max(1);
    let failures = std::sync::atomic::AtomicU64::new(0);
    let sample = measure(&config.budget, || {
        // Each worker times itself: a coordinating thread taking the clock
        // could be descheduled on a small machine while the workers already
        // run, and under-count. The batch spans the first start to the last end.
        let barrier = Barrier::new(threads);
        let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (shared, barrier, failures) = (&shared, &barrier, &failures);
                    scope.spawn(move || {
                        set_current_cpu(t);
                        let mut rng = Rng::new(config.seed ^ t as u64);
                        barrier.wait();
                        let start = Instant::now();
                        let failed = (0..pairs).filter(|_| !shared.pair(rng.next_u64())).count();
                        let end = Instant::now();
                        failures.fetch_add(failed as u64, std::sync::atomic::Ordering::Relaxed);
                        (start, end)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().expect("benchmark thread panicked"))
                .collect()
        });
        let first_start = spans
            .iter()
            .map(|(start, _)| *start)
            .min()
            .expect("a worker");
        let last_end = spans.iter().map(|(_, end)| *end).max().expect("a worker");
        Batch {
            elapsed: last_end - first_start,
            ops: (threads * pairs) as u64,
        }
    });
    Some((Metric::Time(sample), failures.into_inner()))
}

/// A peer frame allocator behind a `spin::Mutex`.
pub struct SpinFrames<A>(spin::Mutex<A>);

impl<A: FrameAllocBench + Send> ConcurrentBench for SpinFrames<A> {
    const NAME: &'static str = A::NAME;
    const OURS: bool = A::OURS;
    fn new() -> Self {
        Self(spin::Mutex::new(A::new(frame::FRAMES_1GIB)))
    }
    #[inline]
    fn pair(&self, _: u64) -> bool {
        let frame = self.0.lock().allocate(1, 1);
        frame
            .map(|f| self.0.lock().free(black_box(f), 1, 1))
            .is_some()
    }
}

/// One of kalloc's `&mut self` frame allocators shared as `kalloc_api::Locked`,
/// the front a kernel gets without writing any of its own.
pub struct LockedKalloc<A>(Locked<A>);

/// Table names of the locked kalloc frame allocators.
pub trait LockedName {
    /// Name in the tables.
    const LOCKED_NAME: &'static str;
}

impl LockedName for KallocBitmap {
    const LOCKED_NAME: &'static str = "kalloc-bitmap (Locked)";
}

impl LockedName for KallocBuddy {
    const LOCKED_NAME: &'static str = "kalloc-buddy (Locked)";
}

impl<A: FrameAllocBench + LockedName + Send> ConcurrentBench for LockedKalloc<A> {
    const NAME: &'static str = A::LOCKED_NAME;
    const OURS: bool = true;
    fn new() -> Self {
        Self(Locked::new(A::new(frame::FRAMES_1GIB)))
    }
    #[inline]
    fn pair(&self, _: u64) -> bool {
        let frame = self.0.lock().allocate(1, 1);
        frame
            .map(|f| self.0.lock().free(black_box(f), 1, 1))
            .is_some()
    }
}

impl ConcurrentBench for KallocAtomicBitmap {
    const NAME: &'static str = <Self as FrameAllocBench>::NAME;
    const OURS: bool = true;
    fn new() -> Self {
        <Self as FrameAllocBench>::new(frame::FRAMES_1GIB)
    }
    #[inline]
    fn pair(&self, _: u64) -> bool {
        let mut frames = self.shared();
        frames
            .allocate_frame()
            .map(|f| frames.deallocate_frame(black_box(f)))
            .is_ok()
    }
}

impl ConcurrentBench for KallocPerCpuBuddy {
    const NAME: &'static str = <Self as FrameAllocBench>::NAME;
    const OURS: bool = true;
    fn new() -> Self {
        <Self as FrameAllocBench>::new(frame::FRAMES_1GIB)
    }
    #[inline]
    fn pair(&self, _: u64) -> bool {
        let frames = self.shared();
        frames
            .allocate_frame()
            .map(|f| frames.deallocate_frame(black_box(f)))
            .is_ok()
    }
}

/// A peer object cache behind a `spin::Mutex`.
pub struct SpinObjects<C>(spin::Mutex<C>);

impl<C: ObjectCacheBench + Send> ConcurrentBench for SpinObjects<C> {
    const NAME: &'static str = C::NAME;
    const OURS: bool = C::OURS;
    fn new() -> Self {
        Self(spin::Mutex::new(C::new(THREAD_OBJECT_BYTES)))
    }
    #[inline]
    fn pair(&self, _: u64) -> bool {
        let object = self.0.lock().alloc();
        // SAFETY: just allocated from this cache.
        object
            .map(|o| unsafe { self.0.lock().free(black_box(o)) })
            .is_some()
    }
}

/// A peer heap behind a `spin::Mutex`.
pub struct SpinHeap<H>(spin::Mutex<H>);

fn pair_layout(word: u64) -> Layout {
    let (small, large) = heap::PAIR_SIZE_BYTES;
    let size = small + (word as usize % (large - small + 1));
    Layout::from_size_align(size, 8).expect("small layout")
}

impl<H: HeapBench + Send> ConcurrentBench for SpinHeap<H> {
    const NAME: &'static str = H::NAME;
    const OURS: bool = H::OURS;
    fn new() -> Self {
        Self(spin::Mutex::new(H::new(heap::HEAP_ARENA_BYTES)))
    }
    #[inline]
    fn pair(&self, word: u64) -> bool {
        let layout = pair_layout(word);
        let block = self.0.lock().alloc(layout);
        // SAFETY: just allocated with `layout`.
        block
            .map(|b| unsafe { self.0.lock().free(black_box(b), layout) })
            .is_some()
    }
}

/// A host allocator called directly from every thread: 64-byte objects when
/// `OBJECTS`, random small sizes otherwise.
pub struct SharedHost<G, const OBJECTS: bool>(G);

impl<G: HostAllocator, const OBJECTS: bool> ConcurrentBench for SharedHost<G, OBJECTS> {
    const NAME: &'static str = G::NAME;
    const OURS: bool = false;
    fn new() -> Self {
        Self(G::INSTANCE)
    }
    #[inline]
    fn pair(&self, word: u64) -> bool {
        let layout = if OBJECTS {
            Layout::from_size_align(THREAD_OBJECT_BYTES, 8).expect("object layout")
        } else {
            pair_layout(word)
        };
        // SAFETY: the layout has a non-zero size.
        let block = unsafe { self.0.alloc(layout) };
        if block.is_null() {
            return false;
        }
        // SAFETY: just allocated with `layout`.
        unsafe { self.0.dealloc(black_box(block), layout) };
        true
    }
}

impl ConcurrentBench for KallocPerCpuSlab {
    const NAME: &'static str = <Self as ObjectCacheBench>::NAME;
    const OURS: bool = true;
    fn new() -> Self {
        <Self as ObjectCacheBench>::new(THREAD_OBJECT_BYTES)
    }
    #[inline]
    fn pair(&self, _: u64) -> bool {
        // SAFETY: just allocated from this cache.
        self.alloc_shared()
            .map(|o| unsafe { self.free_shared(black_box(o)) })
            .is_some()
    }
}

/// `kalloc_slab::PinnedPerCpuCache` shared by the workers, each pinned to
/// its own CPU slot (see [`pinned_cpu`]).
pub struct SharedPinnedSlab {
    cache: PinnedSlabFront,
    pages: kalloc_slab::HostPages,
}

impl ConcurrentBench for SharedPinnedSlab {
    const NAME: &'static str = "kalloc-slab-pinned";
    const OURS: bool = true;
    fn new() -> Self {
        let config = kalloc_slab::SlabConfig::new(THREAD_OBJECT_BYTES, crate::host::OBJECT_ALIGN);
        Self {
            cache: PinnedSlabFront::new(config).expect("slab configuration"),
            pages: kalloc_slab::HostPages::new(),
        }
    }
    #[inline]
    fn pair(&self, _: u64) -> bool {
        let cpu = pinned_cpu();
        let Ok(object) = self.cache.allocate(&cpu, &self.pages) else {
            return false;
        };
        // SAFETY: just allocated from this cache, freed once.
        let freed = unsafe { self.cache.deallocate(&cpu, black_box(object), &self.pages) };
        freed.is_ok()
    }
}

impl Drop for SharedPinnedSlab {
    fn drop(&mut self) {
        for index in 0..crate::cpu::BENCH_CPUS {
            // SAFETY: `&mut self`: the workers are gone, this thread is the
            // only user of every slot.
            let cpu = unsafe { kalloc_api::PinnedCpu::new(index) };
            self.cache.flush_cpu(&cpu, &self.pages);
        }
        self.cache.shrink(&self.pages);
    }
}

impl ConcurrentBench for KallocPerCpuHeap {
    const NAME: &'static str = <Self as HeapBench>::NAME;
    const OURS: bool = true;
    fn new() -> Self {
        <Self as HeapBench>::new(heap::HEAP_ARENA_BYTES)
    }
    #[inline]
    fn pair(&self, word: u64) -> bool {
        let layout = pair_layout(word);
        let heap = self.shared();
        // SAFETY: just allocated with `layout`.
        heap.allocate(layout)
            .map(|b| unsafe { heap.deallocate(black_box(b), layout) })
            .is_ok()
    }
}

impl ConcurrentBench for KallocPinnedHeap {
    const NAME: &'static str = <Self as HeapBench>::NAME;
    const OURS: bool = true;
    fn new() -> Self {
        <Self as HeapBench>::new(heap::HEAP_ARENA_BYTES)
    }
    #[inline]
    fn pair(&self, word: u64) -> bool {
        let layout = pair_layout(word);
        let heap = self.shared();
        let cpu = pinned_cpu();
        // SAFETY: just allocated with `layout`.
        heap.allocate(&cpu, layout)
            .map(|b| unsafe { heap.deallocate(&cpu, black_box(b), layout) })
            .is_ok()
    }
}

impl ConcurrentBench for KallocLockedHeap {
    const NAME: &'static str = "kalloc-heap (LockedHeap)";
    const OURS: bool = true;
    fn new() -> Self {
        KallocLockedHeap::new(heap::HEAP_ARENA_BYTES)
    }
    #[inline]
    fn pair(&self, word: u64) -> bool {
        let layout = pair_layout(word);
        let heap = self.shared();
        // SAFETY: just allocated with `layout`.
        heap.allocate(layout)
            .map(|b| unsafe { heap.deallocate(black_box(b), layout) })
            .is_ok()
    }
}
