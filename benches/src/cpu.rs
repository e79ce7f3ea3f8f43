//! Which "CPU" a benchmark thread is: per-CPU fronts need an index below
//! their CPU count, and the thread-scaling runs give each worker its own.

use std::cell::Cell;

use kalloc_api::{CpuId, PinnedCpu};

/// CPU slots of the per-CPU fronts measured (workers beyond it share slots).
pub const BENCH_CPUS: usize = 16;

thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread CPU `index` (taken modulo [`BENCH_CPUS`]).
pub fn set_current_cpu(index: usize) {
    CPU.with(|cpu| cpu.set(index % BENCH_CPUS));
    WORKER.with(|worker| worker.set(index));
}

/// The calling thread's token for the pinned (lock-free) per-CPU fronts:
/// its index as given to [`set_current_cpu`], not reduced, so workers past
/// [`BENCH_CPUS`] are served through the fronts' shared path instead of
/// sharing a slot.
#[inline]
pub fn pinned_cpu() -> PinnedCpu {
    // SAFETY: the thread runs give each of their concurrently running
    // workers a distinct index, and every other benchmark drives its
    // allocator from one thread (index 0); the token is not `Send`, so it
    // stays on this thread, which runs no signal handler that allocates.
    unsafe { PinnedCpu::new(WORKER.with(Cell::get)) }
}

/// The [`CpuId`] of the per-CPU fronts in benchmarks: the index the thread
/// was given with [`set_current_cpu`] (0 unless set).
#[derive(Clone, Copy, Debug, Default)]
pub struct BenchCpu;

impl CpuId for BenchCpu {
    #[inline]
    fn current_cpu(&self) -> usize {
        CPU.with(Cell::get)
    }
}
