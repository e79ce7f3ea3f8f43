//! `kalloc-bitmap-frame`'s lock-free bitmap through `&self`, the CPU id rotating,
//! quiescent invariants checked every step.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::ATOMIC_BITMAP_FRAMES.fuzz(&ops));
