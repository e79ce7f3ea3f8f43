//! The harness's own reference frame allocator: proves the fuzz pipeline
//! decodes, runs and checks sequences before any allocator is judged by it.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::REFERENCE.fuzz(&ops));
