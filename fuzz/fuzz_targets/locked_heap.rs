//! `kalloc-heap`'s locked heap through `GlobalAlloc`, with realloc, every page back
//! at the end.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::LOCKED_HEAP.fuzz(&ops));
