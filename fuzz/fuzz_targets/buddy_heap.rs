//! `kalloc-buddy`'s byte heap through its checked API, contents written and verified.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::BUDDY_HEAP.fuzz(&ops));
