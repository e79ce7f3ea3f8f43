//! `kalloc-buddy`'s locked heap through `GlobalAlloc`, reallocation included.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::LOCKED_BUDDY_HEAP.fuzz(&ops));
