//! `kalloc-heap`'s heap through its checked API, contents written and verified,
//! every page back at the end.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::HEAP.fuzz(&ops));
