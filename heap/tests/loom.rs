//! loom models of the per-CPU heap front: two CPUs allocating and freeing
//! small blocks (through their magazines and the shared slab refill path)
//! and mid-size blocks (through the locked backend), on a fixed region.
#![cfg(loom)]

use core::alloc::Layout;
use core::cell::Cell;

use kalloc_api::CpuId;
use kalloc_heap::{NoPages, PerCpuHeap};
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

/// A heap over a leaked, 4 KiB-aligned region (loom reruns the model many times;
/// the region is freed with the heap's `Arc` through `Drop` below).
struct Model {
    heap: PerCpuHeap<NoPages, ModelCpu, 2>,
    region: *mut u8,
}

// SAFETY: the region is owned by the model and reached only through the heap.
unsafe impl Send for Model {}
// SAFETY: as above.
unsafe impl Sync for Model {}

impl Model {
    fn new() -> Self {
        let layout = Layout::from_size_align(REGION_BYTES, 4096).unwrap();
        // SAFETY: non-zero size.
        let region = unsafe { std::alloc::alloc(layout) };
        assert!(!region.is_null());
        let heap = PerCpuHeap::new(ModelCpu).unwrap();
        // SAFETY: the region lives until `Drop`, after the heap's last use.
        unsafe { heap.init_with_region(region, REGION_BYTES) }.unwrap();
        Self { heap, region }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(REGION_BYTES, 4096).unwrap();
        // SAFETY: allocated in `new` with this layout; no block is live.
        unsafe { std::alloc::dealloc(self.region, layout) };
    }
}

/// Runs `f` under loom with room on the stack for a whole heap.
fn model(f: fn()) {
    loom::model(move || {
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
