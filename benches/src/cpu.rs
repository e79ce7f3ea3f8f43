//! Which "CPU" a benchmark thread is: per-CPU fronts need an index below
//! their CPU count, and the thread-scaling runs give each worker its own.

use std::cell::Cell;

use kalloc_api::CpuId;

/// CPU slots of the per-CPU fronts measured (workers beyond it share slots).
pub const BENCH_CPUS: usize = 16;

thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread CPU `index` (taken modulo [`BENCH_CPUS`]).
pub fn set_current_cpu(index: usize) {
    CPU.with(|cpu| cpu.set(index % BENCH_CPUS));
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
