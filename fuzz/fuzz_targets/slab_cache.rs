//! `kalloc-slab`'s slab cache with and without hardening: double, foreign and
//! misaligned frees refused, every page back at the end.
#![no_main]

use kalloc_tests::RawOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<RawOp>| kalloc_tests::families::SLAB_CACHE.fuzz(&ops));
