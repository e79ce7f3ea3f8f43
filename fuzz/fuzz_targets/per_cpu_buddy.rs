//! `kalloc-buddy`'s per-CPU front: single frames freed across CPUs, caches drained on shrink.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::PER_CPU_BUDDY.fuzz(&ops));
