//! `kalloc-heap` against the reference model: sizes from 1 byte to 1 MiB at
//! alignments up to 4 KiB, contents written and verified through every
//! reallocation, and every page back in the page source at the end.

use kalloc_tests::families::{HEAP, LOCKED_HEAP, PER_CPU_HEAP, PINNED_HEAP, REGION_HEAP};
use kalloc_tests::{Op, check};

#[test]
fn heap_matches_the_model_and_returns_every_page() {
    let total = check(&HEAP.plan(60, 1..=1600), HEAP.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(total.reallocations > 1_000, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
    assert!(total.hostile_checked > 100, "{total:?}");
}

#[test]
fn region_heap_matches_the_model_and_ends_as_one_free_block() {
    let total = check(&REGION_HEAP.plan(60, 1..=1600), REGION_HEAP.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(total.reallocations > 1_000, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
}

#[test]
fn locked_heap_reallocates_without_losing_contents() {
    let total = check(&LOCKED_HEAP.plan(60, 1..=1600), LOCKED_HEAP.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(total.reallocations > 1_000, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
}

#[test]
fn per_cpu_heap_matches_the_model_across_cpus() {
    let total = check(&PER_CPU_HEAP.plan(60, 1..=1600), PER_CPU_HEAP.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(total.reallocations > 1_000, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
}

#[test]
fn pinned_heap_matches_the_model_across_cpus() {
    let total = check(&PINNED_HEAP.plan(60, 1..=1600), PINNED_HEAP.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(total.reallocations > 1_000, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
}

/// Fills the heap's page source with large and mid-size blocks and the last
/// pages with one small class's slabs, then asks for zero bytes: served as
/// one byte of another class, the request needs a page like any other, so
/// out of memory is a right answer (a fuzzer found the model insisting on
/// success).
fn exhausted_then_zero_size() -> Vec<Op> {
    let allocate = |size, count| vec![Op::Allocate { size, align: 8 }; count];
    [
        allocate(300_000, 16),
        allocate(100_000, 4),
        allocate(512, 200),
        vec![Op::AllocateZero { align: 1 }],
    ]
    .concat()
}

#[test]
fn zero_size_request_may_find_memory_exhausted() {
    let ops = exhausted_then_zero_size();
    for family in [HEAP, REGION_HEAP, LOCKED_HEAP, PER_CPU_HEAP, PINNED_HEAP] {
        let summary = (family.run)(&ops).unwrap_or_else(|d| panic!("{}: {d}", family.name));
        assert!(summary.out_of_memory > 0, "{}: {summary:?}", family.name);
    }
}
