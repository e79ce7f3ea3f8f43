//! `kalloc-bump`'s boot allocator against the model: allocations and
//! reservations over a memory map, the hand-over checked frame by frame.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::BOOT_MEMORY.fuzz(&ops));
