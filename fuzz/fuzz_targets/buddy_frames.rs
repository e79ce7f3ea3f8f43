//! `kalloc-buddy`'s frame allocator against the model, invariants checked every step.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::BUDDY_FRAMES.fuzz(&ops));
