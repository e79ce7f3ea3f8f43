//! `kalloc-bitmap-frame`'s bitmap allocator against the model, reservations through
//! `mark_used`, invariants checked every step.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::BITMAP_FRAMES.fuzz(&ops));
