//! `kalloc-bump`'s bump arena through `GlobalAlloc` and `try_allocate`, every
//! address predicted, contents written and verified.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::BUMP_ARENA.fuzz(&ops));
