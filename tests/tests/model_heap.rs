//! `kalloc-heap` against the reference model: sizes from 1 byte to 1 MiB at
//! alignments up to 4 KiB, contents written and verified through every
//! reallocation, and every page back in the page source at the end.

use kalloc_tests::check;
use kalloc_tests::families::{HEAP, LOCKED_HEAP, PER_CPU_HEAP, PINNED_HEAP, REGION_HEAP};

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
