//! `kalloc-heap`'s per-CPU heap through `GlobalAlloc`, small objects freed on other CPUs.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::PER_CPU_HEAP.fuzz(&ops));
