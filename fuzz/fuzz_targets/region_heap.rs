//! `kalloc-heap`'s heap over one fixed region through its checked API:
//! slabs, mid-size and large blocks cut from the region, contents written and
//! verified, the region one free block again at the end.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::REGION_HEAP.fuzz(&ops));
