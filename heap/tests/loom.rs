//! loom models of the per-CPU heap fronts: two CPUs allocating and freeing
//! small blocks (through their magazines and the shared slab refill path)
//! and mid-size blocks (through the locked backend), on a fixed region; and
//! the pinned front, whose magazines take no lock, freeing each other's
//! blocks.
#![cfg(loom)]

use core::alloc::Layout;
use core::cell::Cell;

use kalloc_api::{CpuId, PinnedCpu};
use kalloc_heap::{NoPages, PerCpuHeap, PinnedPerCpuHeap};
use loom::sync::Arc;
use loom::thread;

loom::thread_local! {
    static CPU: Cell<usize> = Cell::new(0);
}

/// The CPU index each model thread sets for itself.
#[derive(Clone, Copy)]
struct ModelCpu;

impl CpuId for ModelCpu {
    fn current_cpu(&self) -> usize {
        CPU.with(Cell::get)
    }
}

const REGION_BYTES: usize = 64 * 1024;

/// A region for a model's heap: 4 KiB-aligned, freed on drop (loom reruns
/// the model many times). Declared after the heap in a model, so it outlives it.
struct Region(*mut u8);

impl Region {
    const LAYOUT: Layout = match Layout::from_size_align(REGION_BYTES, 4096) {
        Ok(layout) => layout,
        Err(_) => panic!("region layout"),
    };

    fn new() -> Self {
        // SAFETY: non-zero size.
        let start = unsafe { std::alloc::alloc(Self::LAYOUT) };
        assert!(!start.is_null());
        Self(start)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the heap on it is gone.
        unsafe { std::alloc::dealloc(self.0, Self::LAYOUT) };
    }
}

/// The per-CPU heap over its region.
struct Model {
    heap: PerCpuHeap<NoPages, ModelCpu, 2>,
    _region: Region,
}

// SAFETY: the region is owned by the model and reached only through the heap.
unsafe impl Send for Model {}
// SAFETY: as above.
unsafe impl Sync for Model {}

impl Model {
    fn new() -> Self {
        let region = Region::new();
        let heap = PerCpuHeap::new(ModelCpu).unwrap();
        // SAFETY: the region lives as long as the heap (a later field).
        unsafe { heap.init_with_region(region.0, REGION_BYTES) }.unwrap();
        Self {
            heap,
            _region: region,
        }
    }
}

/// Runs `f` under loom with room on the stack for a whole heap.
fn model(f: fn()) {
    model_with_branches(f, loom::model::Builder::new().max_branches);
}

/// As [`model`], allowing `max_branches` atomic operations per execution:
/// a shrink or stats pass over the pinned front reads every class's
/// per-CPU counters.
fn model_with_branches(f: fn(), max_branches: usize) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = max_branches;
    builder.check(move || {
        thread::Builder::new()
            .stack_size(1 << 22)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    });
}

fn churn(model: &Model, cpu: usize, layout: Layout) {
    CPU.with(|c| c.set(cpu));
    let block = model.heap.allocate(layout).unwrap();
    // SAFETY: the block is ours and `layout.size()` bytes long.
    unsafe { block.as_ptr().write_bytes(cpu as u8, layout.size()) };
    // SAFETY: as above.
    assert_eq!(unsafe { *block.as_ptr() }, cpu as u8);
    // SAFETY: live, freed once.
    unsafe { model.heap.deallocate(block, layout) }.unwrap();
}

#[test]
fn two_cpus_share_small_classes_without_losing_blocks() {
    model(|| {
        let model = Arc::new(Model::new());
        let layout = Layout::from_size_align(48, 8).unwrap();
        let other = {
            let model = model.clone();
            thread::spawn(move || churn(&model, 1, layout))
        };
        churn(&model, 0, layout);
        other.join().unwrap();
        model.heap.shrink();
        assert_eq!(model.heap.stats().total.bytes_in_use, 0);
    });
}

#[test]
fn small_and_mid_requests_interleave_on_two_cpus() {
    model(|| {
        let model = Arc::new(Model::new());
        let other = {
            let model = model.clone();
            thread::spawn(move || churn(&model, 1, Layout::from_size_align(3000, 16).unwrap()))
        };
        churn(&model, 0, Layout::from_size_align(16, 16).unwrap());
        other.join().unwrap();
        model.heap.shrink();
        let stats = model.heap.stats();
        assert_eq!(stats.total.bytes_in_use, 0);
        assert_eq!(stats.mid.bytes_in_use, 0);
    });
}

/// The pinned heap over its region.
struct PinnedModel {
    heap: PinnedPerCpuHeap<NoPages, 2>,
    _region: Region,
}

// SAFETY: as for `Model`.
unsafe impl Send for PinnedModel {}
// SAFETY: as above.
unsafe impl Sync for PinnedModel {}

impl PinnedModel {
    fn new() -> Self {
        let region = Region::new();
        let heap = PinnedPerCpuHeap::new().unwrap();
        // SAFETY: the region lives as long as the heap (a later field).
        unsafe { heap.init_with_region(region.0, REGION_BYTES) }.unwrap();
        Self {
            heap,
            _region: region,
        }
    }
}

/// A token for CPU `index`: each model thread takes one index of its own.
fn pinned(index: usize) -> PinnedCpu {
    // SAFETY: no two threads of a model use the same index at once.
    unsafe { PinnedCpu::new(index) }
}

#[test]
fn pinned_cpus_free_each_others_blocks_without_losing_any() {
    model_with_branches(
        || {
            let model = Arc::new(PinnedModel::new());
            let small = Layout::from_size_align(48, 8).unwrap();
            let mid = Layout::from_size_align(3000, 16).unwrap();
            // Blocks of CPU 0, each freed by CPU 1 while CPU 0 works on.
            let zero = pinned(0);
            let handed = [small, mid].map(|layout| {
                let block = model.heap.allocate(&zero, layout).unwrap();
                // SAFETY: the block is ours and this long.
                unsafe { block.as_ptr().write_bytes(0xa5, layout.size()) };
                (block.as_ptr() as usize, layout)
            });
            let other = {
                let model = model.clone();
                thread::spawn(move || {
                    let one = pinned(1);
                    for (addr, layout) in handed {
                        let block = core::ptr::NonNull::new(addr as *mut u8).unwrap();
                        // SAFETY: written by CPU 0 before the spawn.
                        assert_eq!(unsafe { *block.as_ptr() }, 0xa5);
                        // SAFETY: live, handed over, freed once.
                        unsafe { model.heap.deallocate(&one, block, layout) }.unwrap();
                    }
                })
            };
            // Meanwhile CPU 0 meets CPU 1 at the backend's lock and reads the
            // counters CPU 1 publishes.
            let block = model.heap.allocate(&zero, mid).unwrap();
            // SAFETY: the block is ours and this long.
            unsafe { block.as_ptr().write_bytes(0x5a, mid.size()) };
            assert!(model.heap.stats().mid.bytes_in_use >= mid.size());
            // SAFETY: live, freed once.
            unsafe { model.heap.deallocate(&zero, block, mid) }.unwrap();
            other.join().unwrap();
            model.heap.shrink(&pinned(0));
            model.heap.shrink(&pinned(1));
            let stats = model.heap.stats();
            assert_eq!(stats.total.bytes_in_use, 0);
            assert_eq!(stats.classes.iter().map(|c| c.bytes_held).sum::<usize>(), 0);
        },
        20_000,
    );
}
