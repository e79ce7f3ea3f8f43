//! `kalloc-heap`'s pinned per-CPU heap through its own API, one thread
//! playing every CPU in turn, every page back at the end.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::PINNED_HEAP.fuzz(&ops));
