//! `kalloc-slab`'s per-CPU magazine front, objects freed on other CPUs, every page
//! back at the end.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::PER_CPU_SLAB.fuzz(&ops));
